//! The `shelf` commands. This is the binary's edge: `anyhow` errors, printing, processes.

mod account;
mod admin;
mod app_password;
mod backup;
mod category;
mod events;
mod history;
mod import;
mod mount;
mod pin;
mod share;
mod up;

use clap::{Parser, Subcommand};
use history::human;
use std::path::PathBuf;

/// Shelf: your own storage server, mounted as an ordinary folder on every device.
///
/// A newcomer runs `shelf up`: it starts a local server, creates your account and mounts
/// ~/Shelf. To use an existing server: `shelf login HOST:PORT --user NAME --device NAME`,
/// then `shelf mount DIR`. `umount DIR` (or `shelf umount DIR`) disconnects.
#[derive(Parser)]
#[command(name = "shelf", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Log in to a server and remember it (address, pinned certificate, session token).
    /// The password comes from SHELF_PASSWORD, else it is prompted for.
    Login {
        /// HOST:PORT of the server.
        server: String,
        #[arg(long)]
        user: String,
        /// A name for this device (letters, digits, . _ -).
        #[arg(long)]
        device: String,
        /// The server certificate's SHA-256 fingerprint, as `shelf-server init` printed it.
        #[arg(long, conflicts_with = "accept_fingerprint")]
        fingerprint: Option<String>,
        /// Trust whatever certificate the server presents now, and pin it.
        #[arg(long)]
        accept_fingerprint: bool,
        /// Trust a certificate signed by this CA (PEM) for the server's host name, instead
        /// of pinning one fingerprint (for servers with a certificate from your own CA).
        #[arg(long, conflicts_with_all = ["fingerprint", "accept_fingerprint"])]
        ca_file: Option<PathBuf>,
    },
    /// Mount your store at DIR. Returns once the mount is ready; keeps serving in the
    /// background unless --foreground. The mount goes away if the client dies.
    Mount {
        dir: PathBuf,
        /// FUSE options, comma separated: ro, allow_other, fsname=NAME, …
        #[arg(short = 'o')]
        options: Vec<String>,
        /// Stay in the foreground (logs to stderr).
        #[arg(long)]
        foreground: bool,
        /// Cache folder (default: see `shelf status`).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Size limit of the downloaded-chunk cache, in MiB.
        #[arg(long, default_value_t = 2048)]
        cache_size_mib: u64,
    },
    /// Upload pending changes, then unmount DIR.
    Umount {
        dir: PathBuf,
        /// Unmount at once; pending uploads stay journaled for the next mount.
        #[arg(long)]
        force: bool,
    },
    /// Show the server, the account, mounts and pending uploads.
    Status,
    /// List the devices signed in to your account, or sign one out for good
    /// (`shelf devices revoke NAME`: its next request is refused; a lost laptop).
    Devices {
        #[command(subcommand)]
        action: Option<DevicesAction>,
    },
    /// Passwords for WebDAV clients and other programs that send a password with every
    /// request, so your own is never stored in them: `add NAME` prints a new one once,
    /// `list`, `revoke NAME`.
    AppPassword {
        #[command(subcommand)]
        action: AppPasswordAction,
    },
    /// Share a file or folder with another user: they see it under shared/YOU/ in their
    /// mount, read-only unless --write. Sharing again changes the access.
    Share {
        path: PathBuf,
        #[arg(long)]
        with: String,
        #[arg(long)]
        write: bool,
    },
    /// End a share: yours with one user (--with) or everyone; or, on something shared
    /// with you (shared/OWNER/NAME), your own access.
    Unshare {
        path: PathBuf,
        #[arg(long)]
        with: Option<String>,
    },
    /// What you share and what is shared with you.
    Shares,
    /// Manage accounts (admins only): users, add, del, role, passwd, quota, audit.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Set up and run Shelf on this machine: a local server, your account, and ~/Shelf.
    Up {
        /// Where to mount (default ~/Shelf).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Unmount ~/Shelf (or --dir) and stop the local server `shelf up` started.
    Down {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// List the versions of a file (also of a deleted one): number, time, size, device.
    /// PATH is a path in a mounted store, or in the store itself (files/work/a.txt).
    /// Inside a mount the same versions are files: DIR/.versions/NAME.v01, .v02, …
    Versions { path: PathBuf },
    /// The account's changes from every device, one line each: time, what (created,
    /// changed, attributes, deleted, moved), path, device. --follow keeps printing.
    Events {
        #[arg(long, short)]
        follow: bool,
        /// How many past changes to print first.
        #[arg(long, default_value_t = 20)]
        last: usize,
    },
    /// Keep files (or every file of a folder, also ones added later) fully downloaded in
    /// the cache, for offline use; they are never evicted. PATH is inside a mount.
    Pin {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Undo `shelf pin`: the files become ordinary cache entries again.
    Unpin {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Copy every file under SRC into the store, sorted by content into photos/, videos/
    /// and files/, under personal/, work/ or projects/ (--into; a sub-category like
    /// work/WebProject works too), keeping SRC's folders as sub-categories, and mtimes and
    /// modes. A name already taken by other content gets a suffix: nothing is overwritten.
    /// Running it again sends only what is new or changed (also: an interrupted import
    /// continues where it stopped).
    Import {
        /// The local folder to copy.
        src: PathBuf,
        /// personal, work or projects, or a sub-category below one (work/WebProject).
        #[arg(long)]
        into: String,
        /// Print where every file would go, and totals, without sending anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// The category folders: `add PATH` (photos/work/WebProject, or work/WebProject for
    /// all three kinds), `list` (the tree with file counts, sizes and flat names).
    Category {
        #[command(subcommand)]
        command: CategoryCommand,
    },
    /// Scheduled backups of local folders (default: the first Sunday of each month at
    /// 03:00): add, list, run, remove, daemon, install-timer.
    Backup {
        #[command(subcommand)]
        command: backup::BackupCommand,
    },
    /// Make version N of a file its newest version (recreating it if it was deleted).
    /// Same as `cp DIR/.versions/NAME.vNN DIR/NAME` in a mount. The restore is a version too.
    Restore {
        path: PathBuf,
        /// The version number, as `shelf versions` shows it (2 for v02).
        #[arg(long)]
        version: u64,
    },
}

#[derive(Subcommand)]
enum CategoryCommand {
    /// Create a category folder (and its parents).
    Add { path: String },
    /// Show the category tree: files and bytes under each, and its flat name.
    List,
}

#[derive(Subcommand)]
enum AppPasswordAction {
    /// Make one (its name says where it is used, e.g. phone); prints the secret once.
    Add { name: String },
    /// The account's app passwords (names and dates; secrets are never shown again).
    List,
    /// End one: programs using it are refused from their next request.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum DevicesAction {
    /// Sign a device out: every session it holds ends now.
    Revoke { device: String },
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let foreground_mount = matches!(
        cli.command,
        Command::Mount {
            foreground: true,
            ..
        }
    );
    init_logging(foreground_mount);
    match cli.command {
        Command::Login {
            server,
            user,
            device,
            fingerprint,
            accept_fingerprint,
            ca_file,
        } => {
            let login = account::login(
                &server,
                &user,
                &device,
                fingerprint,
                accept_fingerprint,
                None,
                ca_file.as_deref(),
            )?;
            println!(
                "logged in to {} as {} (device {}); certificate {}",
                login.server, login.user, login.device, login.fingerprint
            );
            Ok(())
        }
        Command::Mount {
            dir,
            options,
            foreground,
            cache,
            cache_size_mib,
        } => mount::mount(mount::MountArgs {
            dir,
            options,
            foreground,
            cache,
            cache_bytes: cache_size_mib << 20,
        }),
        Command::Umount { dir, force } => mount::umount(&dir, force),
        Command::Status => account::status(),
        Command::Admin { command } => admin::admin(command),
        Command::Share { path, with, write } => share::share(&path, &with, write),
        Command::Unshare { path, with } => share::unshare(&path, with.as_deref()),
        Command::Shares => share::list(),
        Command::Devices { action } => match action {
            None => account::devices(),
            Some(DevicesAction::Revoke { device }) => account::revoke(&device),
        },
        Command::AppPassword { action } => match action {
            AppPasswordAction::Add { name } => app_password::add(&name),
            AppPasswordAction::List => app_password::list(),
            AppPasswordAction::Revoke { name } => app_password::revoke(&name),
        },
        Command::Up { dir } => up::up(dir),
        Command::Down { dir } => up::down(dir),
        Command::Versions { path } => history::versions(&path),
        Command::Events { follow, last } => events::events(follow, last),
        Command::Pin { paths } => pin::pin(&paths, true),
        Command::Unpin { paths } => pin::pin(&paths, false),
        Command::Restore { path, version } => history::restore(&path, version),
        Command::Import { src, into, dry_run } => import::import(&src, &into, dry_run),
        Command::Category { command } => match command {
            CategoryCommand::Add { path } => category::add(&path),
            CategoryCommand::List => category::list(),
        },
        Command::Backup { command } => backup::backup(command),
    }
}

fn init_logging(to_stderr: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHELF_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if to_stderr { "info" } else { "warn" })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

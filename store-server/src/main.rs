//! `shelf-server` command line: parse arguments, then call the library. Nothing else lives here.

use anyhow::Context;
use clap::{Parser, Subcommand};
use shelf_protocol::Role;
use shelf_server::control::{self, AdminCommand};
use shelf_server::datadir::DataDir;
use shelf_server::store::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// The Shelf store server: keeps every user's files, versions and accounts.
///
/// Admin commands (user, audit, prune, scrub, retention, conflicts) work whether or not
/// the server runs: a running server carries them out itself, reached over the control
/// socket DATA/control.sock (only root and the data folder's owner may use it).
///
/// Typical first run:
///   shelf-server init --data /srv/shelf
///   SHELF_PASSWORD=... shelf-server user add alice --role user --data /srv/shelf
///   shelf-server run --data /srv/shelf --listen 0.0.0.0:7443
#[derive(Parser)]
#[command(name = "shelf-server", version, verbatim_doc_comment)]
struct Cli {
    /// The master key file that wraps every account's data key (default: DATA/master.key).
    /// Keep it on another disk than the data to make a stolen data disk useless alone.
    #[arg(long, global = true, env = "SHELF_MASTER_KEY")]
    master_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data folder: TLS certificate and keys. Prints the certificate fingerprint
    /// that clients pin at `shelf login`.
    Init {
        /// The data folder to create.
        #[arg(long)]
        data: PathBuf,
        /// Extra host names for the certificate (the fingerprint is what clients check).
        #[arg(long = "hostname")]
        hostnames: Vec<String>,
        /// Make it the data folder of one more server of the store this data folder
        /// serves (same certificate, master key, PostgreSQL and bucket; the store must
        /// keep its metadata on PostgreSQL and its chunks in a bucket).
        #[arg(long, value_name = "EXISTING_DATA", conflicts_with = "hostnames")]
        join: Option<PathBuf>,
    },
    /// Serve in the foreground until SIGINT or SIGTERM.
    Run {
        #[arg(long)]
        data: PathBuf,
        /// Address to listen on, e.g. 127.0.0.1:7443 (port 0 picks a free port; the
        /// chosen address is printed).
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: String,
        /// Also serve the web app (HTTPS, same certificate and accounts) on this address,
        /// e.g. 127.0.0.1:8443 (port 0 picks a free port; the URL is printed).
        #[arg(long)]
        web: Option<String>,
        /// Serve Prometheus metrics (plain HTTP, GET /metrics) on this address; it is an
        /// admin address: bind it to loopback or a network only admins reach.
        #[arg(long)]
        metrics: Option<String>,
    },
    /// Re-wrap every account's data key under a new master key and replace the key file
    /// (the stored data is not rewritten; a running server does it and keeps serving).
    /// Safe to interrupt and run again.
    RotateMasterKey {
        #[arg(long)]
        data: PathBuf,
    },
    /// Re-read every stored chunk, check it against its BLAKE3 id and its authentication
    /// tag, and report (and raise an integrity alert for) any that fail. Exits with status
    /// 1 when a chunk failed.
    Scrub {
        #[arg(long)]
        data: PathBuf,
    },
    /// Print the newest entries of the audit log (logins, failures, locks, account and role
    /// changes, deletions, revoked devices, alerts).
    Audit {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 50)]
        last: usize,
    },
    /// Copy the store's metadata (accounts, files, versions, shares, feed, chunk index,
    /// wrapped keys) between sled in the data folder and a PostgreSQL database, record for
    /// record, checked by a digest of every record. Stop the server first. Chunk bodies
    /// stay where they are (pack files or the bucket).
    ///
    ///   shelf-server migrate --data /srv/shelf --to postgres --url 'host=db user=shelf dbname=shelf'
    ///   shelf-server migrate --data /srv/shelf --to sled
    ///
    /// To PostgreSQL: the database must be empty; DATA/postgres.json then names it (the
    /// server uses it from its next start) and the sled folder is kept as DATA/db.migrated.
    /// To sled: DATA/db must not exist or be empty; DATA/postgres.json is set aside.
    #[command(verbatim_doc_comment)]
    Migrate {
        #[arg(long)]
        data: PathBuf,
        /// The engine to copy to.
        #[arg(long, value_enum)]
        to: Engine,
        /// The PostgreSQL connection string (libpq style or postgresql://…); by default
        /// the one DATA/postgres.json names.
        #[arg(long, env = "SHELF_POSTGRES_URL", hide_env_values = true)]
        url: Option<String>,
    },
    /// Print the certificate fingerprint of a data folder.
    Fingerprint {
        #[arg(long)]
        data: PathBuf,
    },
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Apply the retention policies now and collect chunks nothing refers to (the running
    /// server does this every hour, or every SHELF_PRUNE_INTERVAL_SECS).
    Prune {
        #[arg(long)]
        data: PathBuf,
        /// Prune as if it were this time (Unix seconds) instead of now.
        #[arg(long)]
        now: Option<i64>,
    },
    /// Show or change how a user's conflicting edits are resolved. Default: keep both (the
    /// later commit becomes "NAME (conflicted copy DATE from DEVICE).EXT").
    Conflicts {
        name: String,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, conflicts_with = "last_writer_wins")]
        keep_both: bool,
        /// The later commit becomes the newest version; the other stays in the history.
        #[arg(long)]
        last_writer_wins: bool,
    },
    /// Show or change a user's retention policy. Default: every version for 30 days, then
    /// one a day for 90 days, then one a week; deleted files for 30 days. The newest
    /// version of a file is always kept.
    Retention {
        name: String,
        #[arg(long)]
        data: PathBuf,
        /// Keep every version forever.
        #[arg(long, conflicts_with_all = ["all_days", "daily_days"])]
        keep_all: bool,
        /// Keep every version younger than this many days.
        #[arg(long)]
        all_days: Option<u32>,
        /// Then one a day for this many more days (then one a week).
        #[arg(long)]
        daily_days: Option<u32>,
        /// Keep deleted files restorable this many days (0: forever).
        #[arg(long)]
        deleted_days: Option<u32>,
    },
}

/// Where a store's metadata lives.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Engine {
    Sled,
    Postgres,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add an account. The password comes from SHELF_PASSWORD, else it is prompted for.
    Add {
        name: String,
        #[arg(long, default_value = "user")]
        role: Role,
        #[arg(long)]
        data: PathBuf,
    },
    /// List accounts with their role, stored bytes and quota.
    List {
        #[arg(long)]
        data: PathBuf,
    },
    /// Delete an account and everything it stored (its data key is destroyed).
    Del {
        name: String,
        #[arg(long)]
        data: PathBuf,
    },
    /// Set a new password (from SHELF_PASSWORD, else prompted); every device of the account
    /// must log in again.
    Passwd {
        name: String,
        #[arg(long)]
        data: PathBuf,
    },
    /// Change an account's role (the last admin stays one).
    Role {
        name: String,
        role: Role,
        #[arg(long)]
        data: PathBuf,
    },
    /// Set the most an account may store (after dedup, history included), or none.
    Quota {
        name: String,
        /// Quota in GiB (may be fractional, e.g. 0.5).
        #[arg(long, conflicts_with = "none")]
        gib: Option<f64>,
        #[arg(long)]
        none: bool,
        #[arg(long)]
        data: PathBuf,
    },
}

fn password_from_env_or_prompt(prompt: &str) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("SHELF_PASSWORD") {
        return Ok(p);
    }
    let p = rpassword::prompt_password(prompt).context("reading the password")?;
    let again = rpassword::prompt_password("Repeat: ").context("reading the password")?;
    if p != again {
        anyhow::bail!("the passwords differ");
    }
    Ok(p)
}

/// Runs an admin command: by the server running on `data` (over its control socket) if
/// one is, else here on the data folder. Prints what it printed; a failure is one line.
fn admin(
    data: &std::path::Path,
    master_key: &Option<PathBuf>,
    cmd: AdminCommand,
) -> anyhow::Result<()> {
    let outcome = match control::send(data, &cmd) {
        Ok(Some(o)) => o,
        Ok(None) => {
            let (dir, store) = open_initialised(data, master_key)?;
            control::execute(&store, &dir, cmd, "shelf-server")
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => anyhow::bail!(
            "only root and the owner of {} may administer its server ({}: permission denied)",
            data.display(),
            data.join(control::SOCKET).display()
        ),
        Err(e) => anyhow::bail!(
            "the server running on {} did not answer on {}: {e}",
            data.display(),
            data.join(control::SOCKET).display()
        ),
    };
    if outcome.failed {
        anyhow::bail!("{}", outcome.text);
    }
    print!("{}", outcome.text);
    if outcome.status != 0 {
        std::process::exit(outcome.status);
    }
    Ok(())
}

/// `shelf-server migrate`: copies the metadata, then points the data folder at the copy.
fn migrate(data: &std::path::Path, to: Engine, url: Option<String>) -> anyhow::Result<()> {
    use shelf_server::kv::pg::{PgConfig, PgKv};
    use shelf_server::kv::Db;
    use shelf_server::store::{open_sled, postgres_config};
    let dir = DataDir::new(data);
    if !dir.is_initialised() {
        anyhow::bail!("{} is not a Shelf data folder", data.display());
    }
    if control::send(data, &AdminCommand::Ping)
        .ok()
        .flatten()
        .is_some()
    {
        anyhow::bail!(
            "a server is running on {}: stop it first (the copy must not miss its changes)",
            data.display()
        );
    }
    let config = match url {
        Some(url) => Some(PgConfig { url }),
        None => postgres_config(&dir)?,
    };
    let pg = || -> anyhow::Result<Db> {
        let config = config.as_ref().context(
            "which PostgreSQL database? Give --url (or SHELF_POSTGRES_URL, or DATA/postgres.json)",
        )?;
        Ok(Db::Pg(PgKv::connect(config).with_context(|| {
            format!("cannot connect to PostgreSQL ({config:?})")
        })?))
    };
    let (from, into) = match to {
        Engine::Postgres => {
            if dir.postgres().exists() {
                anyhow::bail!(
                    "{} already names a PostgreSQL database: the store is on PostgreSQL",
                    dir.postgres().display()
                );
            }
            (open_sled(&dir)?, pg()?)
        }
        Engine::Sled => (pg()?, open_sled(&dir)?),
    };
    let total = shelf_server::migrate::count(&from)?;
    let bar =
        indicatif::ProgressBar::new(total).with_style(indicatif::ProgressStyle::with_template(
            "copying {bar:40} {pos}/{len} records ({per_sec}, {eta} left)",
        )?);
    let digest = shelf_server::migrate::copy(&from, &into, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    drop((from, into));
    println!("copied {digest}");
    println!("both databases hold the same records");
    match to {
        Engine::Postgres => {
            let text = serde_json::to_vec_pretty(&serde_json::json!({
                "url": config.map(|c| c.url).unwrap_or_default()
            }))?;
            shelf_server::datadir::write_private(&dir.postgres(), &text)?;
            let kept = data.join("db.migrated");
            std::fs::rename(dir.db(), &kept).with_context(|| {
                format!("setting the sled database aside as {}", kept.display())
            })?;
            println!(
                "{} names the database; the server uses it from its next start",
                dir.postgres().display()
            );
            println!(
                "the sled database is kept as {} (delete it once you are content)",
                kept.display()
            );
        }
        Engine::Sled => {
            if dir.postgres().exists() {
                let kept = data.join("postgres.json.migrated");
                std::fs::rename(dir.postgres(), &kept)?;
                println!(
                    "{} set aside as {}",
                    dir.postgres().display(),
                    kept.display()
                );
            }
            if std::env::var_os("SHELF_POSTGRES_URL").is_some() {
                println!("note: while SHELF_POSTGRES_URL is set, the server still uses PostgreSQL");
            }
            println!("the server uses {} from its next start", dir.db().display());
        }
    }
    Ok(())
}

fn open_initialised(
    data: &std::path::Path,
    master_key: &Option<PathBuf>,
) -> anyhow::Result<(DataDir, Store)> {
    let dir = DataDir::new(data).with_master_key(master_key.clone());
    if !dir.is_initialised() {
        anyhow::bail!(
            "{} is not a Shelf data folder; create it with `shelf-server init --data {}`",
            data.display(),
            data.display()
        );
    }
    let store = Store::open(&dir)?;
    Ok((dir, store))
}

fn main() -> std::process::ExitCode {
    // Errors are one plain line (with their causes), never a backtrace.
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shelf-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHELF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Init {
            data,
            hostnames,
            join,
        } => {
            let dir = DataDir::new(&data).with_master_key(cli.master_key.clone());
            let fp = match join {
                Some(existing) => dir.join(&DataDir::new(existing))?,
                None => dir.init(&hostnames)?,
            };
            println!("initialised {}", data.display());
            println!("fingerprint {fp}");
        }
        Command::Audit { data, last } => {
            admin(&data, &cli.master_key, AdminCommand::Audit { last })?;
        }
        Command::RotateMasterKey { data } => {
            admin(&data, &cli.master_key, AdminCommand::RotateMasterKey)?;
        }
        Command::Scrub { data } => {
            admin(&data, &cli.master_key, AdminCommand::Scrub)?;
        }
        Command::Migrate { data, to, url } => migrate(&data, to, url)?,
        Command::Fingerprint { data } => {
            println!(
                "{}",
                shelf_server::tls::fingerprint_of_file(&DataDir::new(&data).cert())?
            );
        }
        Command::User { command } => match command {
            UserCommand::Add { name, role, data } => {
                let password = password_from_env_or_prompt(&format!("Password for {name}: "))?;
                let cmd = AdminCommand::UserAdd {
                    name,
                    role,
                    password,
                };
                admin(&data, &cli.master_key, cmd)?;
            }
            UserCommand::List { data } => admin(&data, &cli.master_key, AdminCommand::UserList)?,
            UserCommand::Del { name, data } => {
                admin(&data, &cli.master_key, AdminCommand::UserDel { name })?
            }
            UserCommand::Passwd { name, data } => {
                let password = password_from_env_or_prompt(&format!("New password for {name}: "))?;
                admin(
                    &data,
                    &cli.master_key,
                    AdminCommand::UserPasswd { name, password },
                )?;
            }
            UserCommand::Role { name, role, data } => admin(
                &data,
                &cli.master_key,
                AdminCommand::UserRole { name, role },
            )?,
            UserCommand::Quota {
                name,
                gib,
                none,
                data,
            } => {
                let bytes = match (none, gib) {
                    (true, _) => Some(None),
                    (false, Some(g)) if g.is_nan() || g < 0.0 => {
                        anyhow::bail!("--gib must be a positive number")
                    }
                    (false, Some(g)) => Some(Some((g * (1u64 << 30) as f64) as u64)),
                    (false, None) => None,
                };
                admin(
                    &data,
                    &cli.master_key,
                    AdminCommand::UserQuota { name, bytes },
                )?;
            }
        },
        Command::Prune { data, now } => admin(&data, &cli.master_key, AdminCommand::Prune { now })?,
        Command::Retention {
            name,
            data,
            keep_all,
            all_days,
            daily_days,
            deleted_days,
        } => {
            let cmd = AdminCommand::Retention {
                name,
                keep_all,
                all_days,
                daily_days,
                deleted_days,
            };
            admin(&data, &cli.master_key, cmd)?;
        }
        Command::Conflicts {
            name,
            data,
            keep_both,
            last_writer_wins,
        } => {
            use shelf_server::store::conflicts::ConflictPolicy;
            let set = match (keep_both, last_writer_wins) {
                (_, true) => Some(ConflictPolicy::LastWriterWins),
                (true, false) => Some(ConflictPolicy::KeepBoth),
                (false, false) => None,
            };
            admin(
                &data,
                &cli.master_key,
                AdminCommand::Conflicts { name, set },
            )?;
        }
        Command::Run {
            data,
            listen,
            web,
            metrics,
        } => {
            let (dir, mut store) = open_initialised(&data, &cli.master_key)?;
            if let Some(secs) = std::env::var("SHELF_LOCKOUT_SECS")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                store.lockout_secs = secs;
            }
            let tls = shelf_server::tls::server_config(&dir.cert(), &dir.key())?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                let addr = listener.local_addr()?;
                // Admin commands reach this server from the moment it says it listens.
                let control = control::bind(&dir).with_context(|| {
                    format!(
                        "cannot make the control socket {}",
                        data.join(control::SOCKET).display()
                    )
                })?;
                let web_listener = match &web {
                    Some(w) => Some(
                        tokio::net::TcpListener::bind(w)
                            .await
                            .with_context(|| format!("cannot listen on {w} for the web app"))?,
                    ),
                    None => None,
                };
                let metrics_listener = match &metrics {
                    Some(m) => Some(
                        tokio::net::TcpListener::bind(m)
                            .await
                            .with_context(|| format!("cannot listen on {m} for metrics"))?,
                    ),
                    None => None,
                };
                println!("shelf-server listening on {addr}");
                if let Some(l) = &web_listener {
                    println!("web app on https://{}/", l.local_addr()?);
                }
                if let Some(l) = &metrics_listener {
                    println!("metrics on http://{}/metrics", l.local_addr()?);
                }
                println!(
                    "fingerprint {}",
                    shelf_server::tls::fingerprint_of_file(&dir.cert())?
                );
                use std::io::Write;
                std::io::stdout().flush()?;
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    let mut term =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                            .expect("installing a SIGTERM handler");
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    let _ = tx.send(true);
                });
                let store = Arc::new(store);
                // Other servers on the same PostgreSQL: their feed entries and cache changes.
                store.hear_other_servers()?;
                let control = tokio::spawn(control::serve(control, store.clone(), rx.clone()));
                let web = web_listener.map(|l| {
                    tokio::spawn(shelf_server::web::serve(
                        l,
                        tls.clone(),
                        store.clone(),
                        rx.clone(),
                    ))
                });
                let metrics = metrics_listener.map(|l| {
                    tokio::spawn(shelf_server::metrics::serve(l, store.clone(), rx.clone()))
                });
                shelf_server::server::serve(listener, tls, store, rx).await?;
                if let Some(m) = metrics {
                    let _ = m.await;
                }
                let _ = control.await;
                if let Some(w) = web {
                    if let Ok(Err(e)) = w.await {
                        tracing::warn!(error = %e, "the web app stopped with an error");
                    }
                }
                anyhow::Ok(())
            })?;
        }
    }
    Ok(())
}

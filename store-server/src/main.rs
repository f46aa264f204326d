//! `shelf-server` command line: parse arguments, then call the library. Nothing else lives here.

use anyhow::Context;
use clap::{Parser, Subcommand};
use shelf_protocol::Role;
use shelf_server::datadir::DataDir;
use shelf_server::store::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// The Shelf store server: keeps every user's files, versions and accounts.
///
/// Typical first run:
///   shelf-server init --data /srv/shelf
///   SHELF_PASSWORD=... shelf-server user add alice --role user --data /srv/shelf
///   shelf-server run --data /srv/shelf --listen 0.0.0.0:7443
#[derive(Parser)]
#[command(name = "shelf-server", version, verbatim_doc_comment)]
struct Cli {
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
    },
    /// Serve in the foreground until SIGINT or SIGTERM.
    Run {
        #[arg(long)]
        data: PathBuf,
        /// Address to listen on, e.g. 127.0.0.1:7443 (port 0 picks a free port; the
        /// chosen address is printed).
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: String,
    },
    /// Print the certificate fingerprint of a data folder.
    Fingerprint {
        #[arg(long)]
        data: PathBuf,
    },
    /// Manage accounts (while the server is stopped).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
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
    /// List accounts.
    List {
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

fn open_initialised(data: &std::path::Path) -> anyhow::Result<(DataDir, Store)> {
    let dir = DataDir::new(data);
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

fn main() -> anyhow::Result<()> {
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
        Command::Init { data, hostnames } => {
            let fp = DataDir::new(&data).init(&hostnames)?;
            println!("initialised {}", data.display());
            println!("fingerprint {fp}");
        }
        Command::Fingerprint { data } => {
            println!(
                "{}",
                shelf_server::tls::fingerprint_of_file(&DataDir::new(&data).cert())?
            );
        }
        Command::User { command } => match command {
            UserCommand::Add { name, role, data } => {
                let (_, store) = open_initialised(&data)?;
                let password = password_from_env_or_prompt(&format!("Password for {name}: "))?;
                store
                    .add_user(&name, &password, role)
                    .map_err(|e| anyhow::anyhow!("cannot add {name}: {}", e.to_wire()))?;
                println!("added {name} ({role})");
            }
            UserCommand::List { data } => {
                let (_, store) = open_initialised(&data)?;
                for a in store.list_users()? {
                    println!("{}\t{}", a.name, a.role);
                }
            }
        },
        Command::Run { data, listen } => {
            let (dir, store) = open_initialised(&data)?;
            let tls = shelf_server::tls::server_config(&dir.cert(), &dir.key())?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                let addr = listener.local_addr()?;
                println!("shelf-server listening on {addr}");
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
                shelf_server::server::serve(listener, tls, Arc::new(store), rx).await?;
                anyhow::Ok(())
            })?;
        }
    }
    Ok(())
}

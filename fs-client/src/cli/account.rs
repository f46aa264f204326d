//! `shelf login` and `shelf status`.

use anyhow::{bail, Context};
use shelf::config::{self, Login};
use shelf::remote::{Endpoint, Remote, RemoteError};
use shelf::sync::LockOrRecover;
use shelf_protocol::Request;
use std::io::IsTerminal;

pub fn password(prompt: &str) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("SHELF_PASSWORD") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password: set SHELF_PASSWORD or run in a terminal");
    }
    rpassword::prompt_password(prompt).context("reading the password")
}

/// Connects without a pin to learn the server's fingerprint.
fn probe_fingerprint(server: &str) -> anyhow::Result<String> {
    let remote = Remote::new(
        Endpoint {
            addr: server.to_string(),
            fingerprint: None,
            ca: None,
        },
        None,
    )?;
    remote.connect()?;
    let fp = remote.seen_fingerprint.lock_or_recover().clone();
    fp.context("the server presented no certificate")
}

/// Logs in and saves the login record. `password` overrides SHELF_PASSWORD / the prompt.
pub fn login(
    server: &str,
    user: &str,
    device: &str,
    fingerprint: Option<String>,
    accept: bool,
    password_given: Option<String>,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<Login> {
    // With a CA, the certificate is checked against it (a copy kept with the login).
    let ca = match ca_file {
        Some(f) => {
            let dir = config::config_dir();
            std::fs::create_dir_all(&dir)?;
            let copy = dir.join("ca.pem");
            std::fs::copy(f, &copy)
                .with_context(|| format!("cannot read the CA file {}", f.display()))?;
            Some(copy)
        }
        None => None,
    };
    let pinned = match (fingerprint, &ca) {
        (_, Some(_)) => String::new(),
        (Some(fp), None) => shelf::remote::tls::normalise_fingerprint(&fp),
        (None, None) => {
            let fp = probe_fingerprint(server)?;
            if !accept {
                eprintln!("The server at {server} presents the certificate\n  {fp}");
                if !std::io::stdin().is_terminal() {
                    bail!("refusing an unverified certificate: pass --fingerprint {fp} (check it with `shelf-server fingerprint` on the server) or --accept-fingerprint");
                }
                eprint!("Trust it and pin it? [y/N] ");
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    bail!("not trusted; nothing saved");
                }
            }
            fp
        }
    };
    let password = match password_given {
        Some(p) => p,
        None => password(&format!("Password for {user}@{server}: "))?,
    };
    let remote = Remote::new(
        Endpoint {
            addr: server.to_string(),
            fingerprint: Some(pinned.clone()),
            ca: ca.clone(),
        },
        None,
    )?;
    let session = remote
        .session(Request::Login {
            user: user.to_string(),
            password,
            device: device.to_string(),
        })
        .map_err(|e| match e {
            RemoteError::Server(w) => anyhow::anyhow!("login refused: {}", w.message),
            other => anyhow::anyhow!("{other}"),
        })?;
    let token = session.token;
    let fingerprint = match &ca {
        // What the CA vouched for, for `shelf status`.
        Some(_) => remote
            .seen_fingerprint
            .lock_or_recover()
            .clone()
            .unwrap_or_default(),
        None => pinned,
    };
    let login = Login {
        server: server.to_string(),
        fingerprint,
        user: user.to_string(),
        device: device.to_string(),
        token,
        ca,
    };
    login.save()?;
    Ok(login)
}

/// Opens a logged-in connection from the saved login record, once this device's running
/// mount (if any) has sent the server every change made in it so far: the mount's
/// namespace changes are write-back, and a command about a path just made there must find
/// it.
pub fn connect(login: &Login) -> anyhow::Result<(Remote, shelf_protocol::Attr)> {
    super::mount::settle_running_mount(login);
    let remote = Remote::new(
        Endpoint {
            addr: login.server.clone(),
            fingerprint: Some(login.fingerprint.clone()),
            ca: login.ca.clone(),
        },
        None,
    )?;
    let session = remote
        .session(Request::Resume {
            token: login.token.clone(),
        })
        .map_err(|e| match e {
            RemoteError::Server(w) => anyhow::anyhow!("{}", w.message),
            other => anyhow::anyhow!("{other}"),
        })?;
    let root = session.root;
    remote.set_token(Some(login.token.clone()));
    Ok((remote, root))
}

pub fn server_error(e: RemoteError) -> anyhow::Error {
    match e {
        RemoteError::Server(w) => anyhow::anyhow!("{}", w.message),
        other => anyhow::anyhow!("{other}"),
    }
}

/// `shelf devices`: one line per signed-in device.
pub fn devices() -> anyhow::Result<()> {
    let login = Login::load()?;
    let (remote, _) = connect(&login)?;
    let list = remote.list_devices().map_err(server_error)?;
    println!(
        "{:<24}  {:<20}  {:<20}  SESSIONS",
        "DEVICE", "SIGNED IN", "EXPIRES"
    );
    for d in list {
        println!(
            "{:<24}  {:<20}  {:<20}  {}{}",
            d.device,
            super::history::utc(d.created.secs),
            super::history::utc(d.expires.secs),
            d.sessions,
            if d.current { "  (this device)" } else { "" }
        );
    }
    Ok(())
}

/// `shelf devices revoke NAME`.
pub fn revoke(device: &str) -> anyhow::Result<()> {
    let login = Login::load()?;
    let (remote, _) = connect(&login)?;
    remote
        .call(Request::RevokeDevice {
            device: device.to_string(),
        })
        .map_err(|e| match e {
            RemoteError::Server(w) if w.code == shelf_protocol::ErrorCode::NotFound => {
                anyhow::anyhow!("no device {device} is signed in to {}", login.user)
            }
            other => server_error(other),
        })?;
    println!("signed out {device}: its next request is refused; it must log in again");
    Ok(())
}

/// Failed attempts in a row after which `shelf status` raises an alert.
use shelf::cache::ALERT_AFTER;

pub fn status() -> anyhow::Result<()> {
    let login = Login::load()?;
    println!(
        "server:   {} (certificate {})",
        login.server, login.fingerprint
    );
    println!("account:  {} on device {}", login.user, login.device);
    match connect(&login) {
        Ok((remote, _)) => {
            let s = remote.status()?;
            println!(
                "store:    online, {} files in {} folders, server {}",
                s.files, s.dirs, s.server_version
            );
            println!(
                "space:    {} in current files, {} stored after dedup, of which {} held only by {} old version(s)",
                super::human(s.logical_bytes),
                super::human(s.stored_bytes),
                super::human(s.history_bytes),
                s.old_versions
            );
            println!(
                "bytes:    {} current, {} stored, {} history",
                s.logical_bytes, s.stored_bytes, s.history_bytes
            );
            if let Some(q) = s.quota {
                println!(
                    "quota:    {} of {} used ({}%)",
                    super::human(s.stored_bytes),
                    super::human(q),
                    s.stored_bytes.saturating_mul(100) / q.max(1)
                );
            }
            for a in &s.alerts {
                println!("alert:    {} {}: {}", a.at.secs, a.what, a.detail);
            }
        }
        Err(e) => {
            let cache = super::mount::account_cache(&login, None);
            let n = shelf::cache::pending_uploads(&cache) + shelf::cache::pending_changes(&cache);
            println!("store:    offline, {n} changes pending ({e})");
        }
    }
    let cache = super::mount::account_cache(&login, None);
    println!("cache:    {}", cache.display());
    let mounts = super::mount::shelf_mounts();
    if mounts.is_empty() {
        println!("mounts:   none");
    }
    for m in &mounts {
        println!("mounted:  {m}");
    }
    if !mounts.is_empty() {
        if let Some((sent, received)) = shelf::cache::traffic(&cache) {
            println!(
                "traffic:  {} sent, {} received by the mount ({sent} / {received} bytes)",
                super::human(sent),
                super::human(received)
            );
        }
        match shelf::cache::io_mode(&cache).as_deref() {
            Some("local") => {
                println!("file I/O: local (the kernel reads and writes local copies directly)")
            }
            Some(_) => println!("file I/O: relayed (every read and write goes through shelf)"),
            None => {}
        }
    }
    let pins = shelf::core::pins::Pins::load(&cache.join("pins"));
    if pins.any() {
        println!(
            "pinned:   {} file(s), {} folder(s) kept fully cached",
            pins.files().len(),
            pins.folders().len()
        );
    }
    let failing: Vec<_> = shelf::cache::upload_failures(&cache)
        .into_iter()
        .filter(|f| f.count >= ALERT_AFTER)
        .collect();
    if let Some(last) = failing.iter().max_by_key(|f| f.since) {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().saturating_sub(last.since))
            .unwrap_or(0);
        println!(
            "ALERT:    {} file(s) keep failing to upload (for {since} s): {}; they stay journaled and are retried",
            failing.len(),
            last.error
        );
    }
    let kept = std::fs::read_dir(cache.join(shelf::core::refused::KEPT_DIR))
        .map(|d| d.count())
        .unwrap_or(0);
    if kept > 0 {
        println!(
            "kept:     {kept} file(s) the server refused are kept on this device in {} (see `shelf events`)",
            cache.join(shelf::core::refused::KEPT_DIR).display()
        );
    }
    println!(
        "pending:  {} file(s) waiting for upload, {} change(s) to names waiting for the server",
        shelf::cache::pending_uploads(&cache),
        shelf::cache::pending_changes(&cache)
    );
    let _ = config::config_dir();
    Ok(())
}

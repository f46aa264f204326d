//! `shelf app-password add|list|revoke`: passwords for programs that send a user name and
//! password with every request (WebDAV clients: Finder, Explorer, davfs2, rclone, phones),
//! so the account's own password is never stored in one. Each is named, shown once, and
//! revoked on its own.

use super::account::{connect, server_error};
use anyhow::Context;
use shelf::config::Login;
use shelf_protocol::{Request, Response};

/// `shelf app-password add NAME`: prints the new secret once.
pub fn add(name: &str) -> anyhow::Result<()> {
    let login = Login::load()?;
    let (remote, _) = connect(&login)?;
    let answer = remote
        .call(Request::AddAppPassword {
            name: name.to_string(),
        })
        .map_err(server_error)
        .with_context(|| format!("cannot make the app password {name}"))?;
    let Response::AppPassword { secret, .. } = answer else {
        anyhow::bail!("the server answered something else");
    };
    println!("{secret}");
    eprintln!(
        "app password {name} for {}: use it with the user name {} in the program; it is shown only now",
        login.user, login.user
    );
    Ok(())
}

/// `shelf app-password list`.
pub fn list() -> anyhow::Result<()> {
    let login = Login::load()?;
    let (remote, _) = connect(&login)?;
    let Response::AppPasswords(list) = remote
        .call(Request::ListAppPasswords)
        .map_err(server_error)?
    else {
        anyhow::bail!("the server answered something else");
    };
    println!("{:<24}  MADE", "NAME");
    for p in list {
        println!("{:<24}  {}", p.name, super::history::utc(p.created.secs));
    }
    Ok(())
}

/// `shelf app-password revoke NAME`.
pub fn revoke(name: &str) -> anyhow::Result<()> {
    let login = Login::load()?;
    let (remote, _) = connect(&login)?;
    remote
        .call(Request::RevokeAppPassword {
            name: name.to_string(),
        })
        .map_err(|e| match e {
            shelf::remote::RemoteError::Server(w)
                if w.code == shelf_protocol::ErrorCode::NotFound =>
            {
                anyhow::anyhow!("{} has no app password named {name}", login.user)
            }
            other => server_error(other),
        })?;
    println!("app password {name} ended: programs using it are refused from now on");
    Ok(())
}

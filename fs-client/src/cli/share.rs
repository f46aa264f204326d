//! `shelf share`, `shelf unshare`, `shelf shares`: giving other users access to a file or
//! folder of yours (they see it under `shared/YOU/` in their mount), ending it, listing.
//! PATH is in a mount or in the store (`files/work/Project`).

use super::account;
use super::history::{locate, remote_error};
use shelf::config::Login;
use shelf::remote::Remote;
use shelf_protocol::{NodeId, Request};
use std::path::Path;

/// The node PATH names.
fn node_of(remote: &Remote, root: NodeId, path: &Path) -> anyhow::Result<NodeId> {
    let (dir, name) = locate(remote, root, path)?;
    let a = remote
        .lookup(dir, &name)
        .map_err(|e| remote_error(e).context(format!("{}", path.display())))?;
    Ok(a.node)
}

pub fn share(path: &Path, with: &str, write: bool) -> anyhow::Result<()> {
    let login = Login::load()?;
    let (remote, root) = account::connect(&login)?;
    let node = node_of(&remote, root.node, path)?;
    remote
        .call(Request::Share {
            node,
            with: with.to_string(),
            write,
        })
        .map_err(|e| match e {
            shelf::remote::RemoteError::Server(w)
                if w.code == shelf_protocol::ErrorCode::InvalidArgument =>
            {
                anyhow::anyhow!(
                    "cannot share {} with {with}: no such user, yourself, or your whole store",
                    path.display()
                )
            }
            shelf::remote::RemoteError::Server(w)
                if w.code == shelf_protocol::ErrorCode::PermissionDenied =>
            {
                anyhow::anyhow!(
                    "{} is shared with you: only its owner can share it",
                    path.display()
                )
            }
            other => remote_error(other),
        })?;
    println!(
        "shared {} with {with} ({}); they see it under shared/{}/",
        path.display(),
        if write { "read-write" } else { "read-only" },
        login.user
    );
    Ok(())
}

pub fn unshare(path: &Path, with: Option<&str>) -> anyhow::Result<()> {
    let login = Login::load()?;
    let (remote, root) = account::connect(&login)?;
    let node = node_of(&remote, root.node, path)?;
    remote
        .call(Request::Unshare {
            node,
            with: with.map(str::to_string),
        })
        .map_err(|e| match e {
            shelf::remote::RemoteError::Server(w)
                if w.code == shelf_protocol::ErrorCode::NotFound =>
            {
                anyhow::anyhow!(
                    "{} is not shared{}",
                    path.display(),
                    with.map_or(String::new(), |w| format!(" with {w}"))
                )
            }
            shelf::remote::RemoteError::Server(w)
                if w.code == shelf_protocol::ErrorCode::PermissionDenied =>
            {
                anyhow::anyhow!("only the owner can end someone else's access")
            }
            other => remote_error(other),
        })?;
    println!("unshared {}", path.display());
    Ok(())
}

pub fn list() -> anyhow::Result<()> {
    let login = Login::load()?;
    let (remote, _) = account::connect(&login)?;
    let all = remote.list_shares().map_err(remote_error)?;
    for s in all {
        let access = if s.write { "read-write" } else { "read-only" };
        if s.owner == login.user {
            println!("{}  shared with {}  ({access})", s.path, s.recipient);
        } else {
            println!("{}  from {}  ({access})", s.path, s.owner);
        }
    }
    Ok(())
}

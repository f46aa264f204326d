//! Administration: every `shelf-server` admin command as one [`AdminCommand`], carried out
//! by [`execute`] on an open [`Store`] — in the `shelf-server` process itself when the
//! server is stopped, or, while `shelf-server run` holds the database, by the running
//! server on behalf of the command line over the control socket `DATA/control.sock`.
//!
//! The socket is made with mode 0600 in the data folder, and each connection's peer
//! credentials are checked: only root and the data folder's owner may use it (they could
//! read the database anyway). One request per connection: a length-prefixed postcard
//! [`AdminCommand`] in, a length-prefixed [`Outcome`] out.

use crate::datadir::DataDir;
use crate::store::conflicts::ConflictPolicy;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use shelf_protocol::{Role, Timestamp};
use std::path::Path;

/// The socket's file name in a data folder.
pub const SOCKET: &str = "control.sock";
/// The largest request or answer accepted on the socket.
const MAX_FRAME: usize = 16 << 20;

/// One administrative action. Passwords travel over the owner-only local socket and are
/// never logged.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum AdminCommand {
    UserAdd {
        name: String,
        role: Role,
        password: String,
    },
    UserList,
    UserDel {
        name: String,
    },
    UserPasswd {
        name: String,
        password: String,
    },
    UserRole {
        name: String,
        role: Role,
    },
    /// `Some(None)` removes the quota; `None` only shows it.
    UserQuota {
        name: String,
        bytes: Option<Option<u64>>,
    },
    Audit {
        last: usize,
    },
    Prune {
        now: Option<i64>,
    },
    Scrub,
    Retention {
        name: String,
        keep_all: bool,
        all_days: Option<u32>,
        daily_days: Option<u32>,
        deleted_days: Option<u32>,
    },
    Conflicts {
        name: String,
        set: Option<ConflictPolicy>,
    },
    RotateMasterKey,
    /// Is a server there? (It answers with its metadata engine.)
    Ping,
}

/// What a command printed and how it ended.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub text: String,
    /// The process exit status the command line should end with (scrub: 1 on damage).
    pub status: i32,
    /// Set when the command failed: `text` is then the one-line reason.
    pub failed: bool,
}

impl Outcome {
    fn ok(text: String) -> Outcome {
        Outcome {
            text,
            status: 0,
            failed: false,
        }
    }

    fn failed(reason: String) -> Outcome {
        Outcome {
            text: reason,
            status: 1,
            failed: true,
        }
    }
}

/// A store refusal about account `name` as a plain message.
fn refusal(name: &str, e: crate::StoreError) -> String {
    match e.code() {
        shelf_protocol::ErrorCode::NotFound => format!("no user {name}"),
        shelf_protocol::ErrorCode::InvalidArgument => {
            format!("refused: {name} is the last admin (make another admin first)")
        }
        _ => format!("{name}: {}", e.to_wire().message),
    }
}

fn account_id(store: &Store, name: &str) -> Result<u64, String> {
    store
        .account(name)
        .map_err(|e| e.to_string())?
        .map(|a| a.id)
        .ok_or_else(|| format!("no user {name}"))
}

/// Carries out `cmd` on `store` in the data folder `dir` (as the administrator `by`, for
/// the audit log).
pub fn execute(store: &Store, dir: &DataDir, cmd: AdminCommand, by: &str) -> Outcome {
    match run(store, dir, cmd, by) {
        Ok(o) => o,
        Err(reason) => Outcome::failed(reason),
    }
}

fn run(store: &Store, dir: &DataDir, cmd: AdminCommand, by: &str) -> Result<Outcome, String> {
    let fail = |e: crate::StoreError| e.to_string();
    let text = match cmd {
        AdminCommand::Ping => format!("running, metadata on {}\n", store.db.engine()),
        AdminCommand::UserAdd {
            name,
            role,
            password,
        } => {
            store
                .add_user(&name, &password, role)
                .map_err(|e| format!("cannot add {name}: {}", e.to_wire()))?;
            if let Some(a) = store.account(&name).map_err(fail)? {
                store.audit(
                    a.id,
                    crate::store::audit::AuditKind::UserAdded,
                    &name,
                    by,
                    &role.to_string(),
                );
            }
            format!("added {name} ({role})\n")
        }
        AdminCommand::UserList => {
            let mut out = String::new();
            for a in store.list_users().map_err(fail)? {
                let quota = store
                    .quota(a.id)
                    .map_err(fail)?
                    .map_or("no quota".to_string(), |q| format!("quota {q} bytes"));
                out += &format!(
                    "{}\t{}\t{} bytes stored\t{quota}\n",
                    a.name,
                    a.role,
                    store.chunks.stored_bytes(a.id).map_err(fail)?
                );
            }
            out
        }
        AdminCommand::UserDel { name } => {
            store
                .delete_user(&name, by)
                .map_err(|e| refusal(&name, e))?;
            format!("deleted {name} and everything it stored\n")
        }
        AdminCommand::UserPasswd { name, password } => {
            store
                .set_password(&name, &password, by)
                .map_err(|e| refusal(&name, e))?;
            format!("changed the password of {name}; its devices must log in again\n")
        }
        AdminCommand::UserRole { name, role } => {
            store
                .set_role(&name, role, by)
                .map_err(|e| refusal(&name, e))?;
            format!("{name} is now {role}\n")
        }
        AdminCommand::UserQuota { name, bytes } => {
            let id = account_id(store, &name)?;
            if let Some(q) = bytes {
                store.set_quota(id, q).map_err(fail)?;
                store.sync().map_err(fail)?;
            }
            match store.quota(id).map_err(fail)? {
                Some(q) => format!("{name}: quota {q} bytes\n"),
                None => format!("{name}: no quota\n"),
            }
        }
        AdminCommand::Audit { last } => {
            let mut out = String::new();
            for e in store.audit_log(None, last).map_err(fail)? {
                out += &format!(
                    "{}\t{}\t{}\t{}\t{}\n",
                    e.at.secs, e.kind, e.user, e.from, e.detail
                );
            }
            out
        }
        AdminCommand::Prune { now } => {
            let now = now
                .map(|secs| Timestamp { secs, nanos: 0 })
                .unwrap_or_else(|| store.now());
            let r = store.prune(now).map_err(fail)?;
            store.sync().map_err(fail)?;
            format!(
                "removed {} old version(s) and {} expired deleted file(s); freed {} chunk(s), {} bytes ({} bytes on disk)\n",
                r.versions_removed, r.files_expired, r.chunks_freed, r.bytes_freed, r.disk_freed
            )
        }
        AdminCommand::Scrub => {
            let r = store.scrub().map_err(fail)?;
            store.sync().map_err(fail)?;
            let mut out = format!(
                "checked {} chunk(s), {} bytes: {} failed\n",
                r.checked,
                r.bytes,
                r.failed.len()
            );
            for f in &r.failed {
                out += &format!("FAILED {f}\n");
            }
            let status = i32::from(!r.failed.is_empty());
            return Ok(Outcome {
                text: out,
                status,
                failed: false,
            });
        }
        AdminCommand::Retention {
            name,
            keep_all,
            all_days,
            daily_days,
            deleted_days,
        } => {
            let id = account_id(store, &name)?;
            let mut p = store.policy(id).map_err(fail)?;
            let change =
                keep_all || all_days.is_some() || daily_days.is_some() || deleted_days.is_some();
            if keep_all {
                p.keep_all = true;
            }
            if all_days.is_some() || daily_days.is_some() {
                p.keep_all = false;
            }
            if let Some(d) = all_days {
                p.all_days = d;
            }
            if let Some(d) = daily_days {
                p.daily_days = d;
            }
            if let Some(d) = deleted_days {
                p.deleted_days = d;
            }
            if change {
                store.set_policy(id, p).map_err(fail)?;
                store.sync().map_err(fail)?;
            }
            format!("{name}: {p}\n")
        }
        AdminCommand::Conflicts { name, set } => {
            let id = account_id(store, &name)?;
            if let Some(p) = set {
                store.set_conflict_policy(id, p).map_err(fail)?;
                store.sync().map_err(fail)?;
            }
            let p = match store.conflict_policy(id).map_err(fail)? {
                ConflictPolicy::KeepBoth => "keep both (conflicted copies)",
                ConflictPolicy::LastWriterWins => {
                    "last writer wins (the other version stays in the history)"
                }
            };
            format!("{name}: conflicts: {p}\n")
        }
        AdminCommand::RotateMasterKey => {
            let r = dir
                .rotate_master_key_with(Some(&store.keys))
                .map_err(|e| format!("{e:#}"))?;
            format!(
                "re-wrapped {} data key(s): master key {} replaced by {} in {}\n",
                r.rewrapped,
                r.old_id,
                r.new_id,
                dir.master_key().display()
            )
        }
    };
    Ok(Outcome::ok(text))
}

fn frame<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    let body = postcard::to_stdvec(value).map_err(std::io::Error::other)?;
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    Ok(out)
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// Sends `cmd` to the server running on `data`. `Ok(None)`: no server answers there.
pub fn send(data: &Path, cmd: &AdminCommand) -> std::io::Result<Option<Outcome>> {
    use std::io::{Read, Write};
    let mut s = match std::os::unix::net::UnixStream::connect(data.join(SOCKET)) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    // A refused caller's request may not be read: the answer waits in the socket anyway.
    let sent = s.write_all(&frame(cmd)?);
    let mut len = [0u8; 4];
    if let Err(e) = s.read_exact(&mut len) {
        return Err(sent.err().unwrap_or(e));
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(bad("oversized answer on the control socket"));
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body)?;
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(|_| bad("malformed answer on the control socket"))
}

/// Whether a peer with `uid` may administer a data folder owned by `owner`.
fn allowed(uid: u32, owner: u32) -> bool {
    uid == 0 || uid == owner
}

/// The bound control socket of a data folder.
pub struct Control {
    listener: tokio::net::UnixListener,
    dir: DataDir,
    path: std::path::PathBuf,
    /// The data folder's owner.
    owner: u32,
}

/// Binds the control socket of the data folder `data` (replacing a stale one left by a
/// killed server), so that admin commands reach this server from now on. Needs a tokio
/// runtime.
pub fn bind(dir: &DataDir) -> std::io::Result<Control> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let path = dir.root.join(SOCKET);
    let owner = std::fs::metadata(&dir.root)?.uid();
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // Created under a umask that leaves it to its owner, then made explicit.
    let listener = {
        // SAFETY: umask only changes this process's file-creation mask; restored below.
        let old = unsafe { libc::umask(0o177) };
        let l = tokio::net::UnixListener::bind(&path);
        unsafe { libc::umask(old) };
        l?
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(Control {
        listener,
        dir: dir.clone(),
        path,
        owner,
    })
}

/// Answers admin commands on `control` until `shutdown`, then removes the socket file.
pub async fn serve(
    control: Control,
    store: std::sync::Arc<Store>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let Control {
        listener,
        dir,
        path,
        owner,
    } = control;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let Ok((conn, _)) = accepted else { continue };
        let (store, dir) = (store.clone(), dir.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(conn, store, dir, owner).await {
                tracing::warn!(error = %e, "control socket request failed");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn answer(
    mut conn: tokio::net::UnixStream,
    store: std::sync::Arc<Store>,
    dir: DataDir,
    owner: u32,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let peer = conn.peer_cred()?;
    if !allowed(peer.uid(), owner) {
        tracing::warn!(
            uid = peer.uid(),
            "control socket: refused a user who does not own the data folder"
        );
        let out = Outcome::failed("only the data folder's owner may administer this server".into());
        conn.write_all(&frame(&out)?).await?;
        return Ok(());
    }
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(bad("oversized request"));
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await?;
    let out = match postcard::from_bytes::<AdminCommand>(&body) {
        Ok(cmd) => {
            tracing::info!(
                command = command_name(&cmd),
                uid = peer.uid(),
                "admin command on the control socket"
            );
            tokio::task::spawn_blocking(move || execute(&store, &dir, cmd, "shelf-server"))
                .await
                .unwrap_or_else(|e| Outcome::failed(format!("the command failed: {e}")))
        }
        Err(_) => Outcome::failed("malformed request".into()),
    };
    conn.write_all(&frame(&out)?).await?;
    Ok(())
}

/// The command's name for logs (never its arguments: they may hold a password).
fn command_name(cmd: &AdminCommand) -> &'static str {
    match cmd {
        AdminCommand::UserAdd { .. } => "user add",
        AdminCommand::UserList => "user list",
        AdminCommand::UserDel { .. } => "user del",
        AdminCommand::UserPasswd { .. } => "user passwd",
        AdminCommand::UserRole { .. } => "user role",
        AdminCommand::UserQuota { .. } => "user quota",
        AdminCommand::Audit { .. } => "audit",
        AdminCommand::Prune { .. } => "prune",
        AdminCommand::Scrub => "scrub",
        AdminCommand::Retention { .. } => "retention",
        AdminCommand::Conflicts { .. } => "conflicts",
        AdminCommand::RotateMasterKey => "rotate-master-key",
        AdminCommand::Ping => "ping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_and_the_owner_may_administer() {
        assert!(allowed(0, 1000));
        assert!(allowed(1000, 1000));
        assert!(!allowed(1001, 1000));
    }

    #[test]
    fn commands_round_trip_and_names_hide_passwords() {
        let cmd = AdminCommand::UserPasswd {
            name: "a".into(),
            password: "secret".into(),
        };
        let f = frame(&cmd).expect("frame");
        let back: AdminCommand = postcard::from_bytes(&f[4..]).expect("decode");
        assert!(
            matches!(back, AdminCommand::UserPasswd { ref password, .. } if password == "secret")
        );
        assert!(!command_name(&cmd).contains("secret"));
    }
}

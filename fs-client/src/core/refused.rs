//! Content the server will never take where it was written: the upload was refused for a
//! reason that retrying cannot heal (the file became read-only — a viewer's account, a
//! share made read-only — the share was revoked or the owner deleted the file, or the
//! account is over its quota). Such content is not retried forever and never dropped:
//!
//! * where the account can still write, it becomes a new file in the account's own
//!   `files/` folder, named after the original with the reason, device and date, and is
//!   uploaded from there;
//! * otherwise (a viewer, a full quota) the staging file moves to `CACHE/kept/`, on this
//!   device.
//!
//! Either way `shelf events` says where it went and `shelf status` counts what is kept
//! locally; the upload queue moves on.

use super::files::{FileState, Staging};
use super::pending::NewNode;
use super::{FsCore, FsError};
use crate::cache::journal::Record;
use crate::remote::RemoteError;
use crate::sync::LockOrRecover;
use shelf_protocol::{ErrorCode, NodeId, NodeKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The folder of a cache that holds refused content kept on this device.
pub const KEPT_DIR: &str = "kept";

/// Why the server refuses, if retrying cannot change its answer.
pub(crate) fn permanent_refusal(e: &FsError) -> Option<ErrorCode> {
    let FsError::Remote(RemoteError::Server(s)) = e else {
        return None;
    };
    match s.code {
        code @ (ErrorCode::ReadOnly
        | ErrorCode::NotFound
        | ErrorCode::PermissionDenied
        | ErrorCode::QuotaExceeded) => Some(code),
        _ => None,
    }
}

fn reason(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::ReadOnly => "read-only",
        ErrorCode::NotFound => "no longer shared or deleted",
        ErrorCode::QuotaExceeded => "over quota",
        _ => "not allowed",
    }
}

impl FsCore {
    /// The server refused `node`'s upload with `code`, for good: keeps the content (see the
    /// module docs) and takes the file out of the upload queue and the journal.
    pub(crate) fn keep_refused(&self, node: NodeId, code: ErrorCode) {
        let st = self.file_state(node);
        let mut inner = st.lock();
        if inner.open_handles > 0 {
            // Still open: its last close queues it again, and it is kept then.
            return;
        }
        let Some(staging) = inner.staging.take() else {
            return; // removed here meanwhile: nothing left to keep
        };
        drop(inner);
        self.refused.note(node, code);
        let path = self.known_path(node);
        let original = path.rsplit('/').next().unwrap_or("file").to_string();
        let name = shelf_protocol::names::refused_name(
            &original,
            reason(code),
            shelf_protocol::Timestamp::now(),
            &self.opts.device,
        );
        if let Err(e) = self.journal.remove(node) {
            tracing::warn!(node, error = %e, "could not remove a journal record");
        }
        self.forget_clean_copy(node);
        let own = match code {
            ErrorCode::QuotaExceeded => None,
            _ => self.keep_in_own_files(&staging, &name).ok(),
        };
        match own {
            Some(copy) => {
                tracing::warn!(node, copy = %copy, "upload refused ({}); kept in your own files", reason(code));
                crate::cache::append_event(
                    &self.cache.root,
                    "kept",
                    &path,
                    &format!("upload refused ({}): kept as {copy}", reason(code)),
                );
            }
            None => {
                let dir = self.cache.root.join(KEPT_DIR);
                let to = dir.join(&name);
                let moved = std::fs::create_dir_all(&dir)
                    .and_then(|()| std::fs::rename(&staging.path, &to));
                match moved {
                    Ok(()) => {
                        tracing::warn!(node, kept = %to.display(), "upload refused ({}); kept on this device", reason(code));
                        crate::cache::append_event(
                            &self.cache.root,
                            "kept",
                            &path,
                            &format!(
                                "upload refused ({}): kept on this device as {}",
                                reason(code),
                                to.display()
                            ),
                        );
                    }
                    Err(e) => {
                        // The staging file stays where it is; say so rather than lose it.
                        tracing::error!(node, error = %e, staging = %staging.path.display(), "upload refused and the content could not be moved; it stays in the staging folder");
                        crate::cache::append_event(
                            &self.cache.root,
                            "kept",
                            &path,
                            &format!(
                                "upload refused ({}): content left at {}",
                                reason(code),
                                staging.path.display()
                            ),
                        );
                    }
                }
            }
        }
    }

    /// Makes `name` in the account's own `files/` folder with `staging`'s content (the
    /// staging file becomes the new file's, journaled and queued). Returns its path.
    fn keep_in_own_files(&self, staging: &Staging, name: &str) -> Result<String, FsError> {
        let files = self.lookup(super::ROOT_INO, std::ffi::OsStr::new("files"))?;
        let folder = self.node_of(files.ino);
        self.check_node_writable(folder)?;
        let attr = self.make(folder, name, NewNode::of(NodeKind::File, 0o644))?;
        let new_path = self.cache.staging().join(attr.node.to_string());
        std::fs::rename(&staging.path, &new_path)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&new_path)?;
        let size = file.metadata()?.len();
        let mut copy = Staging::new(new_path, file, 0, size, staging.mtime);
        copy.gen = 1;
        copy.journaled_gen = 1;
        self.journal
            .write(&Record::new(attr.node, 0, staging.mtime, size))?;
        copy.close_fd();
        let st: Arc<FileState> = self.file_state(attr.node);
        st.lock().staging = Some(copy);
        self.queue.push(attr.node);
        Ok(format!("files/{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_that_cannot_heal_are_permanent() {
        let refused = |code: ErrorCode| FsError::Remote(RemoteError::Server(code.into()));
        assert_eq!(
            permanent_refusal(&refused(ErrorCode::ReadOnly)),
            Some(ErrorCode::ReadOnly)
        );
        assert_eq!(
            permanent_refusal(&refused(ErrorCode::QuotaExceeded)),
            Some(ErrorCode::QuotaExceeded)
        );
        assert_eq!(permanent_refusal(&refused(ErrorCode::NoSpace)), None);
        assert_eq!(permanent_refusal(&refused(ErrorCode::SessionExpired)), None);
        assert_eq!(
            permanent_refusal(&FsError::Remote(RemoteError::Timeout(
                std::time::Duration::from_secs(1)
            ))),
            None
        );
    }
}

/// Files whose content the server refused for good (kept elsewhere), until an fsync of
/// the file reports it or a later version of it is committed.
#[derive(Default)]
pub struct Refusals(Mutex<HashMap<NodeId, ErrorCode>>);

impl Refusals {
    fn note(&self, node: NodeId, code: ErrorCode) {
        self.0.lock_or_recover().insert(node, code);
    }

    /// The refusal of `node` not reported yet, now reported.
    pub(crate) fn take(&self, node: NodeId) -> Option<ErrorCode> {
        self.0.lock_or_recover().remove(&node)
    }
}

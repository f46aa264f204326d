//! flock and fcntl locks: each lock is a lease on the server (see the server's
//! `store::locks`), so processes on different devices exclude each other too. The core
//! remembers which (file, owner) pairs hold leases, so a close costs a round trip only when
//! it releases one, and renews them while they are held.

use super::{FsCore, FsError};
use crate::sync::LockOrRecover;
use shelf_protocol::{LockKind, NodeId, Request};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

/// How often held leases are renewed (the server's lease lasts 30 s by default).
pub const RENEW_EVERY: Duration = Duration::from_secs(10);

fn kind_of(typ: i32) -> Result<LockKind, FsError> {
    match typ {
        libc::F_RDLCK => Ok(LockKind::Read),
        libc::F_WRLCK => Ok(LockKind::Write),
        libc::F_UNLCK => Ok(LockKind::Unlock),
        _ => Err(FsError::Invalid),
    }
}

impl FsCore {
    /// setlk: takes or drops a lock through handle `fh`; with `wait`, retries until the
    /// other holder lets go.
    #[allow(clippy::too_many_arguments)]
    pub fn setlk(
        &self,
        ino: u64,
        fh: u64,
        owner: u64,
        typ: i32,
        start: u64,
        end: u64,
        wait: bool,
    ) -> Result<(), FsError> {
        self.refuse_virtual(&[ino])?;
        let node = self.node_of(ino);
        let kind = kind_of(typ)?;
        self.settle_node(node)?;
        loop {
            let r = self.remote.call(Request::Lock {
                node,
                owner,
                kind,
                start,
                end,
            });
            match r {
                Ok(_) => break,
                Err(e) if wait && e.code() == Some(shelf_protocol::ErrorCode::WouldBlock) => {
                    crate::blocking::about_to_block();
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if kind != LockKind::Unlock {
            self.held_locks.hold(node, owner);
            self.handles.note_lock_owner(fh, owner);
        } else if start == 0 && end >= i64::MAX as u64 {
            // Other ranges of the same owner may remain; forget only on a full unlock.
            self.held_locks.release(node, owner);
        }
        Ok(())
    }

    /// getlk: the conflicting lock, as (type, start, end), or F_UNLCK when there is none.
    pub fn getlk(
        &self,
        ino: u64,
        owner: u64,
        typ: i32,
        start: u64,
        end: u64,
    ) -> Result<(i32, u64, u64), FsError> {
        self.refuse_virtual(&[ino])?;
        self.settle_node(self.node_of(ino))?;
        let holder = self.remote.test_lock(Request::TestLock {
            node: self.node_of(ino),
            owner,
            kind: kind_of(typ)?,
            start,
            end,
        })?;
        Ok(match holder {
            Some((LockKind::Write, s, e)) => (libc::F_WRLCK, s, e),
            Some((_, s, e)) => (libc::F_RDLCK, s, e),
            None => (libc::F_UNLCK, start, end),
        })
    }

    /// A close by `owner`: its locks on the file go (POSIX on any close, flock on the last).
    pub fn release_locks(&self, ino: u64, owner: u64) {
        self.release_node_locks(self.node_of(ino), owner);
    }

    pub(crate) fn release_node_locks(&self, node: NodeId, owner: u64) {
        if self.held_locks.release(node, owner) {
            let _ = self.remote.call(Request::Lock {
                node,
                owner,
                kind: LockKind::Unlock,
                start: 0,
                end: u64::MAX,
            });
        }
    }

    /// Keeps held leases alive.
    pub(crate) fn renew_locks(&self) {
        if self.held_locks.any() {
            if let Err(e) = self.remote.call(Request::RenewLocks) {
                tracing::warn!(error = %e, "could not renew lock leases");
            }
        }
    }
}

/// The (file, lock owner) pairs that hold a lease on the server: released on close, renewed
/// while held.
#[derive(Default)]
pub struct HeldLocks(Mutex<HashSet<(NodeId, u64)>>);

impl HeldLocks {
    fn hold(&self, node: NodeId, owner: u64) {
        self.0.lock_or_recover().insert((node, owner));
    }

    /// Forgets the pair; whether it held a lease.
    fn release(&self, node: NodeId, owner: u64) -> bool {
        self.0.lock_or_recover().remove(&(node, owner))
    }

    fn any(&self) -> bool {
        !self.0.lock_or_recover().is_empty()
    }
}

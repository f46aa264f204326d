//! Locks across devices: flock and fcntl locks on a mount are leases held here, so two
//! devices (or two processes anywhere) cannot hold conflicting locks on one file.
//!
//! A lease belongs to a holder: the session (one per device's mount) and the kernel's
//! lock owner within it. Leases live in memory only (a restarted server has none) and
//! expire [`lease_period`] after they were taken or last renewed, so a dead device's locks
//! go away by themselves; a live client renews its leases well before that.

use super::{Ctx, Store};
use crate::error::Result;
use shelf_protocol::sync::LockOrRecover;
use shelf_protocol::{ErrorCode, LockKind, NodeId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a lease lasts without renewal (`SHELF_LEASE_SECS`, default 30 s).
pub fn lease_period() -> Duration {
    std::env::var("SHELF_LEASE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(30))
}

#[derive(Clone, Debug)]
struct Lease {
    /// (session, lock owner)
    holder: (u64, u64),
    write: bool,
    start: u64,
    end: u64,
    expires: Instant,
}

impl Lease {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }
}

/// One lock request: who (session and the kernel's lock owner), on what, which bytes.
#[derive(Clone, Copy, Debug)]
pub struct LockSpec {
    pub session: u64,
    pub node: NodeId,
    pub owner: u64,
    pub kind: LockKind,
    pub start: u64,
    pub end: u64,
}

/// Every lease, by file.
#[derive(Default)]
pub struct Locks {
    by_node: Mutex<HashMap<NodeId, Vec<Lease>>>,
}

impl Store {
    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Vec<Lease>>> {
        self.locks.by_node.lock_or_recover()
    }

    /// Takes or drops a lease on bytes `start..=end` of `node` for `owner` of `session`.
    pub fn lock(&self, ctx: &Ctx, spec: LockSpec) -> Result<()> {
        self.lock_for(ctx, spec, lease_period())
    }

    /// [`Store::lock`] with a lease lasting `period` (a WebDAV lock's own timeout; its
    /// holder refreshes it by locking again, never by [`Store::renew_locks`]).
    pub fn lock_for(&self, ctx: &Ctx, spec: LockSpec, period: Duration) -> Result<()> {
        let LockSpec {
            session,
            node,
            owner,
            kind,
            start,
            end,
        } = spec;
        // Locking changes nothing stored: any role that may see the file may lock it.
        self.getattr(ctx, node)?;
        let holder = (session, owner);
        let now = Instant::now();
        let mut all = self.leases();
        let leases = all.entry(node).or_default();
        leases.retain(|l| l.expires > now);
        match kind {
            LockKind::Unlock => leases.retain(|l| !(l.holder == holder && l.overlaps(start, end))),
            LockKind::Read | LockKind::Write => {
                let write = kind == LockKind::Write;
                let blocked = leases
                    .iter()
                    .any(|l| l.holder != holder && l.overlaps(start, end) && (write || l.write));
                if blocked {
                    return Err(ErrorCode::WouldBlock.into());
                }
                leases.retain(|l| !(l.holder == holder && l.overlaps(start, end)));
                leases.push(Lease {
                    holder,
                    write,
                    start,
                    end,
                    expires: now.checked_add(period).unwrap_or(now + lease_period()),
                });
            }
        }
        if leases.is_empty() {
            all.remove(&node);
        }
        Ok(())
    }

    /// The lease that would conflict with this one, if any (F_GETLK).
    pub fn test_lock(&self, ctx: &Ctx, spec: LockSpec) -> Result<Option<(LockKind, u64, u64)>> {
        let LockSpec {
            session,
            node,
            owner,
            kind,
            start,
            end,
        } = spec;
        self.getattr(ctx, node)?;
        let now = Instant::now();
        let write = kind == LockKind::Write;
        Ok(self.leases().get(&node).and_then(|leases| {
            leases
                .iter()
                .find(|l| {
                    l.expires > now
                        && l.holder != (session, owner)
                        && l.overlaps(start, end)
                        && (write || l.write)
                })
                .map(|l| {
                    let k = if l.write {
                        LockKind::Write
                    } else {
                        LockKind::Read
                    };
                    (k, l.start, l.end)
                })
        }))
    }

    /// Extends every lease of `session`.
    pub fn renew_locks(&self, session: u64) {
        let until = Instant::now() + lease_period();
        for leases in self.leases().values_mut() {
            for l in leases.iter_mut().filter(|l| l.holder.0 == session) {
                l.expires = until;
            }
        }
    }
}

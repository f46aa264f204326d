//! Locks across devices: flock and fcntl locks on a mount are leases held here, so two
//! devices (or two processes anywhere) cannot hold conflicting locks on one file.
//!
//! A lease belongs to a holder: the session (one per device's mount) and the kernel's
//! lock owner within it. Leases are records in the database (tree `leases`, node → its
//! leases; `lease_holders`, session ‖ node, to renew a session's leases), changed in
//! transactions, so every server of a store sees the same ones and they outlive a
//! restart. A lease expires [`lease_period`] after it was taken or last renewed, so a dead
//! device's locks go away by themselves; a live client renews its leases well before that.

use super::namespace::{abort, tx, TxResult};
use super::{Ctx, Store};
use crate::error::{Result, StoreError};
use crate::kv::{IVec, TxTree};
use serde::{Deserialize, Serialize};
use shelf_protocol::{ErrorCode, LockKind, NodeId};
use std::time::Duration;

/// How long a lease lasts without renewal (`SHELF_LEASE_SECS`, default 30 s).
pub fn lease_period() -> Duration {
    std::env::var("SHELF_LEASE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(30))
}

/// One lease, as stored.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Lease {
    format: u8,
    /// (session, lock owner)
    holder: (u64, u64),
    write: bool,
    start: u64,
    end: u64,
    /// Wall-clock milliseconds (every server of a store reads the same clock, within
    /// the period's slack).
    expires_ms: i64,
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// `session ‖ node`: the index of the files a session holds leases on.
fn holder_key(session: u64, node: NodeId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&session.to_be_bytes());
    k[8..].copy_from_slice(&node.to_be_bytes());
    k
}

fn read_leases(bytes: Option<IVec>) -> Result<Vec<Lease>> {
    let Some(bytes) = bytes else {
        return Ok(Vec::new());
    };
    let leases: Vec<Lease> = super::decode(&bytes)?;
    for l in &leases {
        super::check_format(l.format, "lease")?;
    }
    Ok(leases)
}

/// Stores `leases` of `node` and keeps `session`'s index entry true.
fn write_leases(
    (leases_tree, holders): (&TxTree, &TxTree),
    node: NodeId,
    session: u64,
    leases: &[Lease],
) -> TxResult<()> {
    let key = super::node_key(node);
    if leases.is_empty() {
        leases_tree.remove(key)?;
    } else {
        leases_tree.insert(key, tx(postcard::to_stdvec(leases).map_err(Into::into))?)?;
    }
    if leases.iter().any(|l| l.holder.0 == session) {
        holders.insert(holder_key(session, node), &[][..])?;
    } else {
        holders.remove(holder_key(session, node))?;
    }
    Ok(())
}

impl Store {
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
        let now = now_ms();
        let trees = [&self.leases, &self.lease_holders];
        self.db
            .transaction(trees, |[leases_tree, holders]| {
                let mut leases = tx(read_leases(leases_tree.get(super::node_key(node))?))?;
                leases.retain(|l| l.expires_ms > now);
                match kind {
                    LockKind::Unlock => {
                        leases.retain(|l| !(l.holder == holder && l.overlaps(start, end)))
                    }
                    LockKind::Read | LockKind::Write => {
                        let write = kind == LockKind::Write;
                        let blocked = leases.iter().any(|l| {
                            l.holder != holder && l.overlaps(start, end) && (write || l.write)
                        });
                        if blocked {
                            return abort(ErrorCode::WouldBlock);
                        }
                        leases.retain(|l| !(l.holder == holder && l.overlaps(start, end)));
                        leases.push(Lease {
                            format: super::FORMAT,
                            holder,
                            write,
                            start,
                            end,
                            expires_ms: now.saturating_add(ms(period)),
                        });
                    }
                }
                write_leases((leases_tree, holders), node, session, &leases)
            })
            .map_err(super::namespace::tx_error)
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
        let now = now_ms();
        let write = kind == LockKind::Write;
        let leases = read_leases(self.leases.get(super::node_key(node))?)?;
        Ok(leases
            .iter()
            .find(|l| {
                l.expires_ms > now
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
            }))
    }

    /// Extends every lease of `session`.
    pub fn renew_locks(&self, session: u64) {
        if let Err(e) = self.try_renew_locks(session) {
            tracing::warn!(error = %e, "renewing lock leases failed");
        }
    }

    fn try_renew_locks(&self, session: u64) -> Result<()> {
        let now = now_ms();
        let until = now.saturating_add(ms(lease_period()));
        let nodes: Vec<NodeId> = self
            .lease_holders
            .scan_prefix(session.to_be_bytes())
            .keys()
            .map(|k| {
                let k = k?;
                k.get(8..16)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| StoreError::Corrupt("lease holder key".into()))
            })
            .collect::<Result<_>>()?;
        for node in nodes {
            let trees = [&self.leases, &self.lease_holders];
            self.db
                .transaction(trees, |[leases_tree, holders]| {
                    let mut leases = tx(read_leases(leases_tree.get(super::node_key(node))?))?;
                    leases.retain(|l| l.expires_ms > now);
                    for l in leases.iter_mut().filter(|l| l.holder.0 == session) {
                        l.expires_ms = l.expires_ms.max(until);
                    }
                    write_leases((leases_tree, holders), node, session, &leases)
                })
                .map_err(super::namespace::tx_error)?;
        }
        Ok(())
    }
}

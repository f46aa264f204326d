//! The change feed: an ordered, per-account record of namespace and content changes, kept in
//! the `feed` tree (account ‖ seq → sealed [`Change`]) and pushed live to every subscribed
//! connection of the account.
//!
//! Positions (`seq`) come from sled's id generator: increasing across the server, so each
//! account's feed is ordered. The feed keeps the newest [`KEEP`] changes per account; a
//! device asking for changes after a dropped position is told to revalidate (`trimmed`).
//! A change is recorded right after the transaction that made it.

use super::{Ctx, Store};
use crate::error::Result;
use shelf_protocol::sync::LockOrRecover;
use shelf_protocol::{Change, ChangeKind, NodeId};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Changes kept per account.
pub const KEEP: u64 = 10_000;
/// Live changes buffered per subscriber before it is told to resync.
const LIVE_BUFFER: usize = 4096;

/// Live subscribers, per account.
#[derive(Default)]
pub struct Subscribers {
    by_account: Mutex<HashMap<u64, broadcast::Sender<Change>>>,
}

fn feed_key(account: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&account.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Key of an account's low-water mark: changes at or below it may have been dropped.
fn mark_key(account: u64) -> [u8; 16] {
    feed_key(account, 0)
}

impl Store {
    /// Records a change made by `ctx` and pushes it to the account's subscribers. A failure
    /// to record is logged, not returned: the change itself is already committed.
    pub(crate) fn publish(
        &self,
        ctx: &Ctx,
        kind: ChangeKind,
        node: NodeId,
        parent: NodeId,
        name: &str,
    ) {
        // Once committed (a batch's changes wait for the batch), stamped as made.
        let (ctx, name, at) = (ctx.clone(), name.to_string(), self.now());
        self.after_commit(move |store| {
            store.at_time(at, || {
                if let Err(e) = store.publish_inner(&ctx, kind, node, parent, &name) {
                    tracing::warn!(error = %e, "could not record a change in the feed");
                }
            })
        });
    }

    fn publish_inner(
        &self,
        ctx: &Ctx,
        kind: ChangeKind,
        node: NodeId,
        parent: NodeId,
        name: &str,
    ) -> Result<()> {
        // The change belongs to the owner of what changed (a share recipient may have made
        // it), and goes to everyone a share covering it was given to.
        let owner_of = |id: NodeId| -> Option<u64> {
            self.nodes
                .get(super::node_key(id))
                .ok()
                .flatten()
                .and_then(|v| super::sealed::node_owner(&v).ok())
        };
        let owner = owner_of(parent)
            .filter(|_| parent != 0)
            .or_else(|| owner_of(node))
            .unwrap_or(ctx.account);
        let path = if name.is_empty() {
            self.path_of(owner, node)
        } else {
            let dir = self.path_of(owner, parent);
            if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            }
        };
        // Device names are per account: a change made from another account names it.
        let device_for = |account: u64| {
            if account == ctx.account {
                ctx.device.clone()
            } else {
                format!("{}:{}", ctx.user, ctx.device)
            }
        };
        let change = Change {
            seq: self.db.generate_id()? + 1,
            kind,
            node,
            parent,
            name: name.to_string(),
            device: device_for(owner),
            path: path.clone(),
            at: self.now(),
        };
        self.record_change(owner, change.clone())?;

        let mut shares = self.covering_shares(node)?;
        if parent != 0 {
            shares.extend(self.covering_shares(parent)?);
        }
        let mut told = Vec::new();
        for s in shares {
            if told.contains(&s.recipient) {
                continue;
            }
            told.push(s.recipient);
            // Below `shared/OWNER/` the share's own name starts the path.
            let root = self.path_of(owner, s.node);
            let above = root.rsplit_once('/').map_or("", |(a, _)| a);
            let rel = path
                .strip_prefix(above)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(&path);
            let owner_name = self
                .list_users()?
                .into_iter()
                .find(|a| a.id == owner)
                .map_or_else(String::new, |a| a.name);
            let shared = Change {
                seq: self.db.generate_id()? + 1,
                device: device_for(s.recipient),
                path: format!("shared/{owner_name}/{rel}"),
                ..change.clone()
            };
            self.record_change(s.recipient, shared)?;
        }
        Ok(())
    }

    /// Appends a change to an account's feed and pushes it to its live subscribers.
    pub(crate) fn record_change(&self, account: u64, change: Change) -> Result<()> {
        let seq = change.seq;
        let key = feed_key(account, seq);
        let sealed = self.seal_rec(account, b"feed", &key, &change)?;
        self.feed.insert(key, sealed)?;
        if seq.is_multiple_of(1000) {
            self.trim_feed(account)?;
        }
        if let Some(tx) = self.subscribers.by_account.lock_or_recover().get(&account) {
            let _ = tx.send(change);
        }
        Ok(())
    }

    /// Drops all but the newest [`KEEP`] changes of an account.
    fn trim_feed(&self, account: u64) -> Result<()> {
        let prefix = account.to_be_bytes();
        let count = self.feed.scan_prefix(prefix).count() as u64;
        if count <= KEEP + 1 {
            return Ok(());
        }
        let mut dropped = 0;
        let mut mark = 0;
        for item in self.feed.scan_prefix(prefix) {
            let (k, _) = item?;
            let seq = u64::from_be_bytes(k[8..16].try_into().unwrap_or([0; 8]));
            if seq == 0 {
                continue;
            }
            if dropped + KEEP + 1 >= count {
                break;
            }
            self.feed.remove(&k)?;
            mark = seq;
            dropped += 1;
        }
        self.feed.insert(mark_key(account), &mark.to_be_bytes())?;
        Ok(())
    }

    /// Subscribes to an account's live changes.
    pub fn subscribe(&self, account: u64) -> broadcast::Receiver<Change> {
        let mut subs = self.subscribers.by_account.lock_or_recover();
        subs.entry(account)
            .or_insert_with(|| broadcast::channel(LIVE_BUFFER).0)
            .subscribe()
    }

    /// The account's changes after `after`, oldest first, whether some were already
    /// dropped, and the newest position.
    pub fn changes_since(
        &self,
        account: u64,
        after: Option<u64>,
    ) -> Result<(Vec<Change>, bool, u64)> {
        let mark = match self.feed.get(mark_key(account))? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        };
        let mut head = mark;
        let mut out = Vec::new();
        let from = after.unwrap_or(u64::MAX);
        for item in self
            .feed
            .range(feed_key(account, 1)..=feed_key(account, u64::MAX))
        {
            let (k, v) = item?;
            let seq = u64::from_be_bytes(k[8..16].try_into().unwrap_or([0; 8]));
            head = head.max(seq);
            if seq > from {
                out.push(self.open_rec(account, b"feed", &k, &v)?);
            }
        }
        let trimmed = after.is_some_and(|a| a < mark);
        Ok((out, trimmed, head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelf_protocol::Role;

    #[test]
    fn the_feed_keeps_the_newest_changes_and_says_when_older_ones_are_gone() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let chunks = std::sync::Arc::new(
            crate::chunkstore::PackStore::open(tmp.path().join("packs"), &db).unwrap(),
        );
        let store = Store::with_chunk_store(db, chunks).unwrap();
        store.add_user("fe", "pw", Role::User).unwrap();
        let (_, ctx) = store.login("fe", "pw", "d").unwrap();
        let mut live = store.subscribe(ctx.account);
        let (_, _, start) = store.changes_since(ctx.account, None).unwrap();
        for i in 0..(KEEP + 2_100) {
            store.publish(&ctx, ChangeKind::Attr, i, 0, "");
        }
        let (all, trimmed, head) = store.changes_since(ctx.account, Some(start)).unwrap();
        assert!(trimmed, "the oldest changes were dropped");
        assert!(all.len() as u64 >= KEEP && all.len() as u64 <= KEEP + 1_001);
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
        assert_eq!(all.last().unwrap().seq, head);
        let (recent, trimmed, _) = store.changes_since(ctx.account, Some(head - 3)).unwrap();
        assert!(!trimmed);
        assert_eq!(recent.len(), 3);
        // A live subscriber that did not keep up learns that it lagged (the connection
        // then tells the client to resync).
        assert!(matches!(
            live.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}

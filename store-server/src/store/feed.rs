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

/// How far past [`KEEP`] a feed grows before its oldest changes are dropped, in one go.
const TRIM_SLACK: u64 = 1_000;

/// Live subscribers, per account, and how many changes each account's feed holds.
#[derive(Default)]
pub struct Subscribers {
    by_account: Mutex<HashMap<u64, broadcast::Sender<Change>>>,
    /// Changes in each account's feed, counted once per server run and then kept up to
    /// date (a count of the tree on every trim cost a scan of 10,000 records).
    lengths: Mutex<HashMap<u64, u64>>,
    /// One trim at a time.
    trimming: Mutex<()>,
}

fn feed_key(account: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&account.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The position a feed key files its change at.
fn seq_of(key: &[u8]) -> u64 {
    key.get(8..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
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
        if self.feed_grew(account)? > KEEP + TRIM_SLACK {
            self.trim_feed(account)?;
        }
        if let Some(tx) = self.subscribers.by_account.lock_or_recover().get(&account) {
            let _ = tx.send(change);
        }
        Ok(())
    }

    /// Counts one more change in the account's feed; returns how many it holds.
    fn feed_grew(&self, account: u64) -> Result<u64> {
        if let Some(n) = self.subscribers.lengths.lock_or_recover().get_mut(&account) {
            *n += 1;
            return Ok(*n);
        }
        // First change this run: count what is there (this one included).
        let counted = self.account_feed(account).count() as u64;
        let mut lengths = self.subscribers.lengths.lock_or_recover();
        Ok(*lengths.entry(account).or_insert(counted))
    }

    /// The account's changes (not its low-water mark), oldest first.
    fn account_feed(&self, account: u64) -> sled::Iter {
        self.feed
            .range(feed_key(account, 1)..=feed_key(account, u64::MAX))
    }

    /// Drops all but the newest [`KEEP`] changes of an account, in one write.
    fn trim_feed(&self, account: u64) -> Result<()> {
        let _one = self.subscribers.trimming.lock_or_recover();
        let len = self
            .subscribers
            .lengths
            .lock_or_recover()
            .get(&account)
            .copied()
            .unwrap_or(0);
        if len <= KEEP + TRIM_SLACK {
            return Ok(()); // another thread trimmed it meanwhile
        }
        let mut batch = sled::Batch::default();
        let mut mark = None;
        let mut dropped = 0;
        for item in self.account_feed(account).take((len - KEEP) as usize) {
            let (k, _) = item?;
            mark = Some(seq_of(&k));
            batch.remove(k);
            dropped += 1;
        }
        let Some(mark) = mark else { return Ok(()) };
        batch.insert(&mark_key(account), &mark.to_be_bytes());
        self.feed.apply_batch(batch)?;
        if let Some(n) = self.subscribers.lengths.lock_or_recover().get_mut(&account) {
            *n = n.saturating_sub(dropped);
        }
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
        let head = match self.account_feed(account).next_back() {
            Some(item) => seq_of(&item?.0).max(mark),
            None => mark,
        };
        let mut out = Vec::new();
        if let Some(after) = after {
            // Only what comes after the device's position is read.
            for item in self.feed.range(
                feed_key(account, after.saturating_add(1).max(1))..=feed_key(account, u64::MAX),
            ) {
                let (k, v) = item?;
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

    /// An in-memory store with one account, signed in.
    fn store_with_user() -> (Store, crate::store::Ctx, tempfile::TempDir) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let chunks = std::sync::Arc::new(
            crate::chunkstore::PackStore::open(tmp.path().join("packs"), &db).unwrap(),
        );
        let store = Store::with_chunk_store(db, chunks).unwrap();
        store.add_user("fe", "pw", Role::User).unwrap();
        let (_, ctx) = store.login("fe", "pw", "d").unwrap();
        (store, ctx, tmp)
    }

    #[test]
    fn the_feed_keeps_the_newest_changes_and_says_when_older_ones_are_gone() {
        let (store, ctx, _tmp) = store_with_user();
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

    #[test]
    fn paths_in_the_feed_follow_a_renamed_folder() {
        use crate::store::namespace::NewNode;
        use shelf_protocol::{NodeKind, RenameMode};
        let (store, ctx, _tmp) = store_with_user();
        let files = store.lookup(&ctx, ctx.root, "files").unwrap().node;
        let new = |kind| NewNode {
            kind,
            mode: 0o755,
            target: None,
            exclusive: false,
            rdev: 0,
            id: None,
        };
        let (_, _, start) = store.changes_since(ctx.account, None).unwrap();
        let a = store
            .create_node(&ctx, files, "a", new(NodeKind::Dir))
            .unwrap()
            .node;
        store
            .create_node(&ctx, a, "one.txt", new(NodeKind::File))
            .unwrap();
        store
            .rename(&ctx, (files, "a"), (files, "b"), RenameMode::Replace, None)
            .unwrap();
        store
            .create_node(&ctx, a, "two.txt", new(NodeKind::File))
            .unwrap();
        let (changes, _, _) = store.changes_since(ctx.account, Some(start)).unwrap();
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            ["files/a", "files/a/one.txt", "files/b", "files/b/two.txt"],
            "a folder's new name shows in the paths of what is made in it after the rename"
        );
    }
}

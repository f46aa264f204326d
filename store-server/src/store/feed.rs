//! The change feed: an ordered, per-account record of namespace and content changes, kept in
//! the `feed` tree and pushed live to every subscribed connection of the account.
//!
//! An entry holds the changes one transaction made for one account (a device's batch of
//! hundreds of creates is one entry, one sled insert, not hundreds): key account ‖ seq of
//! its last change ‖ how many it holds (4 bytes), value the sealed [`FeedEntry`]. Entries
//! of one change written before bundling have a 16-byte key and a sealed [`Change`].
//!
//! Positions (`seq`) count up per account, in the order entries commit: an entry is
//! written in one transaction with the account's head (`feed_heads`: account → last
//! position), so on a store shared by several servers two entries never get one position
//! and a reader never sees a position before an earlier one is written. The feed keeps
//! the newest [`KEEP`] changes per account (give or take an entry); a device asking for
//! changes after a dropped position is told to revalidate (`trimmed`). Changes are recorded
//! right after the transaction that made them.
//!
//! Live pushing: each server remembers, per account with subscribers here, the last
//! position it pushed, and pushes every position once, in order — its own entries as it
//! writes them, other servers' when the database tells it they were written
//! ([`Store::heard_feed`], from [`super::cluster`]), reading what it missed from the feed.

use super::{Ctx, Store};
use crate::error::Result;
use shelf_protocol::sync::LockOrRecover;
use shelf_protocol::{Change, ChangeKind, NodeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Changes kept per account.
pub const KEEP: u64 = 10_000;
/// Live changes buffered per subscriber before it is told to resync.
const LIVE_BUFFER: usize = 4096;

/// How far past [`KEEP`] a feed grows before its oldest changes are dropped, in one go.
const TRIM_SLACK: u64 = 1_000;

thread_local! {
    /// Changes recorded while this thread runs a transaction's committed work
    /// ([`Store::bundling_feed`]), with their accounts, in order.
    static BUNDLE: RefCell<Option<Vec<(u64, Change)>>> = const { RefCell::new(None) };
}

/// What a feed entry holds: one transaction's changes for one account, oldest first.
#[derive(serde::Serialize, serde::Deserialize)]
struct FeedEntry {
    format: u8,
    changes: Vec<Change>,
}

/// An account's live subscribers on this server.
struct Live {
    tx: broadcast::Sender<Change>,
    /// The last position pushed to them.
    pushed: u64,
}

/// Live subscribers, per account, and how many changes each account's feed holds.
#[derive(Default)]
pub struct Subscribers {
    by_account: Mutex<HashMap<u64, Live>>,
    /// Accounts whose head record exists (their first entry this run read no fallback).
    headed: Mutex<std::collections::HashSet<u64>>,
    /// Changes in each account's feed, counted once per server run and then kept up to
    /// date (a count of the tree on every trim cost a scan of 10,000 records).
    lengths: Mutex<HashMap<u64, u64>>,
    /// One trim at a time.
    trimming: Mutex<()>,
    /// Held while an account's positions are drawn and its entry written and pushed (one
    /// of these per group of accounts: other accounts' entries go on meanwhile).
    writing: [Mutex<()>; 16],
}

impl Subscribers {
    /// Feeds held open now (a mount online holds one; so does a page's live events).
    pub fn online(&self) -> usize {
        self.by_account
            .lock_or_recover()
            .values()
            .map(|live| live.tx.receiver_count())
            .sum()
    }
}

fn feed_key(account: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&account.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The key of an entry of `count` changes, the last at `last`.
fn entry_key(account: u64, last: u64, count: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&feed_key(account, last));
    k[16..].copy_from_slice(&count.to_be_bytes());
    k
}

/// The position of the last change a feed key files.
fn seq_of(key: &[u8]) -> u64 {
    key.get(8..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// How many changes the entry under `key` holds (an entry from before bundling: one).
fn count_of(key: &[u8]) -> u64 {
    key.get(16..20)
        .and_then(|b| b.try_into().ok())
        .map_or(1, |b| u64::from(u32::from_be_bytes(b)))
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
            seq: 0,
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
                device: device_for(s.recipient),
                path: format!("shared/{owner_name}/{rel}"),
                ..change.clone()
            };
            self.record_change(s.recipient, shared)?;
        }
        Ok(())
    }

    /// Runs `f` — the work a transaction does once committed — recording the changes it
    /// makes as one feed entry per account when it ends (one sled insert for a whole batch).
    pub(crate) fn bundling_feed(&self, f: impl FnOnce()) {
        if BUNDLE.with(|b| b.borrow().is_some()) {
            return f(); // the outer call writes them
        }
        BUNDLE.with(|b| *b.borrow_mut() = Some(Vec::new()));
        /// Stops collecting however `f` ends.
        struct Collecting;
        impl Drop for Collecting {
            fn drop(&mut self) {
                BUNDLE.with(|b| b.borrow_mut().take());
            }
        }
        let collecting = Collecting;
        f();
        let changes = BUNDLE.with(|b| b.borrow_mut().take()).unwrap_or_default();
        drop(collecting);
        let mut accounts: Vec<(u64, Vec<Change>)> = Vec::new();
        for (account, change) in changes {
            match accounts.iter_mut().find(|(a, _)| *a == account) {
                Some((_, list)) => list.push(change),
                None => accounts.push((account, vec![change])),
            }
        }
        for (account, list) in accounts {
            if let Err(e) = self.write_feed_entry(account, list) {
                tracing::warn!(error = %e, "could not record changes in the feed");
            }
        }
    }

    /// Appends a change to an account's feed and pushes it to its live subscribers (its
    /// position is drawn then; the `seq` given is ignored). Inside [`Store::bundling_feed`]
    /// it joins that call's entry.
    pub(crate) fn record_change(&self, account: u64, change: Change) -> Result<()> {
        let bundled = BUNDLE.with(|b| match b.borrow_mut().as_mut() {
            Some(list) => {
                list.push((account, change.clone()));
                true
            }
            None => false,
        });
        if bundled {
            return Ok(());
        }
        self.write_feed_entry(account, vec![change])
    }

    /// Writes `changes` as one entry of the account's feed, at the next positions, tells
    /// the other servers of the store, and pushes them to this server's subscribers.
    fn write_feed_entry(&self, account: u64, changes: Vec<Change>) -> Result<()> {
        let Ok(count) = u32::try_from(changes.len()) else {
            return Err(crate::store::StoreError::Corrupt(
                "feed entry too large".into(),
            ));
        };
        if count == 0 {
            return Ok(());
        }
        // Moves and removals change places other servers may have cached.
        let renames = changes
            .iter()
            .any(|c| matches!(c.kind, ChangeKind::Moved { .. } | ChangeKind::Removed));
        let _order = self.subscribers.writing[(account % 16) as usize].lock_or_recover();
        // The account's head before any was recorded: the newest position in its feed.
        let fallback = if self.subscribers.headed.lock_or_recover().contains(&account) {
            0
        } else {
            self.changes_since(account, None)?.2
        };
        let written = self
            .db
            .transaction([&self.feed, &self.feed_heads], |[feed, heads]| {
                let head = match heads.get(account.to_be_bytes())? {
                    Some(v) => u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])),
                    None => fallback,
                };
                let mut numbered = changes.clone();
                for (i, c) in numbered.iter_mut().enumerate() {
                    c.seq = head + 1 + i as u64;
                }
                let last = head + u64::from(count);
                let key = entry_key(account, last, count);
                let entry = FeedEntry {
                    format: super::FORMAT,
                    changes: numbered,
                };
                let sealed = self
                    .seal_rec(account, b"feed", &key, &entry)
                    .map_err(crate::kv::ConflictableTransactionError::Abort)?;
                feed.insert(key, sealed)?;
                heads.insert(account.to_be_bytes(), last.to_be_bytes().to_vec())?;
                feed.notify(
                    super::cluster::FEED,
                    &super::cluster::feed_notice(account, last, renames, self.server_id),
                );
                Ok(entry.changes)
            });
        let written = match written {
            Ok(w) => w,
            Err(crate::kv::TransactionError::Abort(e)) => return Err(e),
            Err(crate::kv::TransactionError::Storage(e)) => return Err(e.into()),
        };
        self.subscribers.headed.lock_or_recover().insert(account);
        let last = written.last().map_or(0, |c| c.seq);
        self.push_live(account, last, Some(written))?;
        drop(_order);
        if self.feed_grew(account, u64::from(count))? > KEEP + TRIM_SLACK {
            self.trim_feed(account)?;
        }
        Ok(())
    }

    /// Pushes the account's changes up to position `upto` to its subscribers on this
    /// server, each once and in order: `fresh` (an entry just written here) when it follows
    /// what they were last pushed, else what they missed, read from the feed.
    fn push_live(&self, account: u64, upto: u64, fresh: Option<Vec<Change>>) -> Result<()> {
        let mut subs = self.subscribers.by_account.lock_or_recover();
        let Some(live) = subs.get_mut(&account) else {
            return Ok(());
        };
        if live.tx.receiver_count() == 0 {
            subs.remove(&account);
            return Ok(());
        }
        if live.pushed >= upto {
            return Ok(());
        }
        let follows = fresh
            .as_ref()
            .and_then(|f| f.first())
            .is_some_and(|c| c.seq == live.pushed + 1);
        let changes = match fresh {
            Some(f) if follows => f,
            _ => {
                let (missed, trimmed, _) = self.changes_since(account, Some(live.pushed))?;
                if trimmed {
                    let _ = live.tx.send(Change::resync(live.pushed));
                }
                missed
            }
        };
        for c in changes {
            if c.seq > live.pushed {
                live.pushed = c.seq;
                let _ = live.tx.send(c);
            }
        }
        Ok(())
    }

    /// Another server wrote the account's feed up to `upto`: pushes what this server's
    /// subscribers have not had.
    pub(crate) fn heard_feed(&self, account: u64, upto: u64) {
        if let Err(e) = self.push_live(account, upto, None) {
            tracing::warn!(account, error = %e, "cannot read changes another server made");
        }
    }

    /// The accounts with subscribers on this server.
    pub(crate) fn subscribed_accounts(&self) -> Vec<u64> {
        self.subscribers
            .by_account
            .lock_or_recover()
            .keys()
            .copied()
            .collect()
    }

    /// The changes of the entry filed under `key`, oldest first.
    fn open_entry(&self, account: u64, key: &[u8], value: &[u8]) -> Result<Vec<Change>> {
        if key.len() == 16 {
            return Ok(vec![self.open_rec(account, b"feed", key, value)?]);
        }
        let entry: FeedEntry = self.open_rec(account, b"feed", key, value)?;
        super::check_format(entry.format, "feed")?;
        Ok(entry.changes)
    }

    /// Counts `more` changes in the account's feed; returns how many it holds.
    fn feed_grew(&self, account: u64, more: u64) -> Result<u64> {
        if let Some(n) = self.subscribers.lengths.lock_or_recover().get_mut(&account) {
            *n += more;
            return Ok(*n);
        }
        // First change this run: count what is there (these included), from the keys.
        let mut counted = 0;
        for item in self.account_feed(account) {
            counted += count_of(&item?.0);
        }
        let mut lengths = self.subscribers.lengths.lock_or_recover();
        Ok(*lengths.entry(account).or_insert(counted))
    }

    /// The account's feed entries (not its low-water mark), oldest first.
    fn account_feed(&self, account: u64) -> crate::kv::Iter {
        self.feed
            .range(feed_key(account, 1)..=feed_key(account, u64::MAX))
    }

    /// Drops the oldest entries of an account while more than [`KEEP`] changes remain, in
    /// one write.
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
        let mut batch = crate::kv::Batch::default();
        let mut mark = None;
        let mut dropped = 0;
        for item in self.account_feed(account) {
            let (k, _) = item?;
            let n = count_of(&k);
            if len.saturating_sub(dropped + n) < KEEP {
                break;
            }
            mark = Some(seq_of(&k));
            batch.remove(k);
            dropped += n;
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
    /// Changes written before this call reach the subscriber through
    /// [`Store::changes_since`], which it reads next (the connection skips repeats).
    pub fn subscribe(&self, account: u64) -> broadcast::Receiver<Change> {
        let mut subs = self.subscribers.by_account.lock_or_recover();
        if let Some(live) = subs.get(&account) {
            return live.tx.subscribe();
        }
        // Pushing starts after the newest change now in the feed.
        let pushed = match self.changes_since(account, None) {
            Ok((_, _, head)) => head,
            Err(e) => {
                tracing::warn!(account, error = %e, "cannot read the feed's head");
                0
            }
        };
        let (tx, rx) = broadcast::channel(LIVE_BUFFER);
        subs.insert(account, Live { tx, pushed });
        rx
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
            // Only entries ending after the device's position are read.
            for item in self.feed.range(
                feed_key(account, after.saturating_add(1).max(1))..=feed_key(account, u64::MAX),
            ) {
                let (k, v) = item?;
                let changes = self.open_entry(account, &k, &v)?;
                out.extend(changes.into_iter().filter(|c| c.seq > after));
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
        let db = crate::kv::Db::temporary().unwrap();
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
    fn a_transactions_changes_are_one_entry_read_from_any_position_in_it() {
        let (store, ctx, _tmp) = store_with_user();
        let mut live = store.subscribe(ctx.account);
        let (_, _, start) = store.changes_since(ctx.account, None).unwrap();
        let entries = |store: &Store| store.account_feed(ctx.account).count();
        let before = entries(&store);
        // An entry written before bundling (one change under a 16-byte key) stays readable.
        let old_seq = store.changes_since(ctx.account, None).unwrap().2 + 1;
        let old = Change {
            seq: old_seq,
            kind: ChangeKind::Attr,
            node: 7,
            parent: 0,
            name: String::new(),
            device: "d".into(),
            path: "old".into(),
            at: store.now(),
        };
        let key = feed_key(ctx.account, old_seq);
        let sealed = store.seal_rec(ctx.account, b"feed", &key, &old).unwrap();
        store.feed.insert(key, sealed).unwrap();
        store
            .feed_heads
            .insert(ctx.account.to_be_bytes(), old_seq.to_be_bytes().to_vec())
            .unwrap();
        store.bundling_feed(|| {
            for node in 100..110 {
                store.publish(&ctx, ChangeKind::Attr, node, 0, "");
            }
        });
        assert_eq!(entries(&store), before + 2, "ten changes, one entry");
        let (all, trimmed, head) = store.changes_since(ctx.account, Some(start)).unwrap();
        assert!(!trimmed);
        let nodes: Vec<u64> = all.iter().map(|c| c.node).collect();
        assert_eq!(nodes, [7, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109]);
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
        assert_eq!(all.last().unwrap().seq, head);
        // From the middle of the entry: only what comes after.
        let (rest, _, _) = store.changes_since(ctx.account, Some(all[4].seq)).unwrap();
        assert_eq!(rest, all[5..].to_vec());
        // Live subscribers get each change once, with its position, in order (the entry
        // written behind the feed's back too, read from the feed as a gap).
        let pushed: Vec<u64> = (0..11).map(|_| live.try_recv().unwrap().seq).collect();
        assert_eq!(pushed, all.iter().map(|c| c.seq).collect::<Vec<_>>());
        assert!(live.try_recv().is_err());
    }

    #[test]
    fn trimming_counts_changes_not_entries() {
        let (store, ctx, _tmp) = store_with_user();
        let (_, _, start) = store.changes_since(ctx.account, None).unwrap();
        for round in 0..120u64 {
            store.bundling_feed(|| {
                for i in 0..100 {
                    store.publish(&ctx, ChangeKind::Attr, round * 100 + i, 0, "");
                }
            });
        }
        let (all, trimmed, _) = store.changes_since(ctx.account, Some(start)).unwrap();
        assert!(trimmed, "the oldest entries were dropped");
        assert!(
            all.len() as u64 >= KEEP && all.len() as u64 <= KEEP + TRIM_SLACK + 100,
            "{} changes kept",
            all.len()
        );
        assert_eq!(all.last().unwrap().node, 11_999);
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

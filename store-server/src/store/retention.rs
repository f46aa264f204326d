//! Retention: which old versions are kept, pruning the rest, and collecting the chunks that
//! nothing refers to any more.
//!
//! The policy is per account (`retention` tree; default [`Retention::default`]): every version
//! younger than `all_days` is kept; older ones, the newest of each UTC day until
//! `all_days + daily_days`, then the newest of each week. The newest version of a file is
//! never dropped. A deleted file stays restorable for `deleted_days` (0: forever), then its
//! whole history goes. Buckets are taken along a name's history ([`super::history`]), so an
//! editor that saves by rename (a new node each time) is pruned like any other file.
//!
//! Crash safety: pruning removes version records one by one; the collector then drops index
//! entries of chunks no version names (under the store's GC lock, so no commit can pick a
//! chunk it is removing), and [`ChunkStore::compact`] rewrites mostly-dead packs and deletes
//! them only after the moved records and the index are durable. A crash anywhere leaves at
//! worst garbage that the next run collects, never a version without its chunks.
//!
//! [`ChunkStore::compact`]: crate::chunkstore::ChunkStore::compact

use super::{check_format, decode, node_key, version_key, NodeRec, Store, VersionRec, FORMAT};
use crate::error::{Result, StoreError};
use serde::{Deserialize, Serialize};
use shelf_protocol::{ChunkId, NodeId, NodeKind, Timestamp};
use std::collections::{HashMap, HashSet};

const DAY: i64 = 86_400;

/// An account's retention policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub format: u8,
    /// Keep every version forever (deleted files still expire after `deleted_days`).
    pub keep_all: bool,
    /// Every version younger than this many days is kept.
    pub all_days: u32,
    /// Then the newest of each day for this many more days; after that the newest of each
    /// week.
    pub daily_days: u32,
    /// Deleted files stay restorable this many days (0: forever).
    pub deleted_days: u32,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            format: FORMAT,
            keep_all: false,
            all_days: 30,
            daily_days: 90,
            deleted_days: 30,
        }
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.keep_all {
            write!(f, "keep every version")?;
        } else {
            write!(
                f,
                "keep every version for {} days, then one a day for {} days, then one a week",
                self.all_days, self.daily_days
            )?;
        }
        match self.deleted_days {
            0 => write!(f, "; deleted files forever"),
            n => write!(f, "; deleted files for {n} days"),
        }
    }
}

/// Which versions of one history the policy keeps. `created` holds each version's commit
/// time (seconds), oldest first; the newest is always kept.
pub fn keep(created: &[i64], now: i64, p: &Retention) -> Vec<bool> {
    let mut out = vec![false; created.len()];
    let mut buckets = HashSet::new();
    for (i, &t) in created.iter().enumerate().rev() {
        let age = now - t;
        let young = p.keep_all || age < i64::from(p.all_days) * DAY;
        let day = t.div_euclid(DAY);
        let bucket = if age < i64::from(p.all_days + p.daily_days) * DAY {
            (0, day)
        } else {
            // Weeks from Monday (day 0, 1970-01-01, was a Thursday).
            (1, (day + 3).div_euclid(7))
        };
        // The newest version of a bucket stands for it (the file's newest is always kept).
        let first_of_bucket = young || buckets.insert(bucket);
        out[i] = i + 1 == created.len() || first_of_bucket;
    }
    out
}

/// What a pruning and collection run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub versions_removed: u64,
    pub files_expired: u64,
    pub chunks_freed: u64,
    pub bytes_freed: u64,
    /// Bytes of pack files deleted or shrunk.
    pub disk_freed: u64,
}

/// One version of a history, for pruning.
struct Item {
    node: NodeId,
    version: u64,
    created: i64,
}

impl Store {
    /// An account's policy (the default unless one was set).
    pub fn policy(&self, account: u64) -> Result<Retention> {
        match self.retention.get(account.to_be_bytes())? {
            Some(b) => {
                let p: Retention = decode(&b)?;
                check_format(p.format, "retention")?;
                Ok(p)
            }
            None => Ok(Retention::default()),
        }
    }

    pub fn set_policy(&self, account: u64, p: Retention) -> Result<()> {
        self.retention
            .insert(account.to_be_bytes(), postcard::to_stdvec(&p)?)?;
        Ok(())
    }

    fn node_rec(&self, id: NodeId) -> Result<Option<NodeRec>> {
        match self.nodes.get(node_key(id))? {
            Some(b) => Ok(Some(self.open_node(id, &b)?)),
            None => Ok(None),
        }
    }

    /// The versions along `node`'s history (no authorisation: maintenance only).
    fn chain(&self, node: NodeId) -> Result<(Vec<Item>, Vec<NodeId>)> {
        let (steps, nodes) = self.walk_history(node, None)?;
        let items = steps
            .into_iter()
            .map(|s| Item {
                node: s.node,
                version: s.version,
                created: s.rec.created.secs,
            })
            .collect();
        Ok((items, nodes))
    }

    /// Applies every account's policy at time `now` to every history, then collects the
    /// chunks nothing refers to. One server of a shared store at a time: refused while
    /// another one prunes.
    pub fn prune(&self, now: Timestamp) -> Result<PruneReport> {
        let _alone = self.job_lock("prune")?;
        let started = std::time::Instant::now();
        let report = self.prune_all(now)?;
        if let Ok(disk) = self.chunks.disk() {
            crate::metrics::global()
                .garbage_bytes
                .set(disk.bytes.saturating_sub(disk.live_bytes) as i64);
        }
        self.record_job(
            super::health::Job::Prune,
            now,
            started.elapsed(),
            format!(
                "{} versions removed, {} deleted files expired, {} chunks ({} bytes) freed",
                report.versions_removed,
                report.files_expired,
                report.chunks_freed,
                report.bytes_freed
            ),
        );
        Ok(report)
    }

    fn prune_all(&self, now: Timestamp) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let mut policies: HashMap<u64, Retention> = HashMap::new();
        let mut policy_of = |store: &Store, account: u64| -> Result<Retention> {
            if let Some(p) = policies.get(&account) {
                return Ok(*p);
            }
            let p = store.policy(account)?;
            policies.insert(account, p);
            Ok(p)
        };

        // Live files.
        let mut starts = Vec::new();
        for item in self.dirents.iter() {
            let (_, v) = item?;
            starts.push(super::sealed::dirent_child(&v)?);
        }
        for id in starts {
            let Some(rec) = self.node_rec(id)? else {
                continue;
            };
            if rec.kind != NodeKind::File {
                continue;
            }
            let p = policy_of(self, rec.owner)?;
            let (items, _) = self.chain(id)?;
            report.versions_removed += self.prune_items(&items, now.secs, &p)?;
        }

        // Deleted files: expired ones go with their whole history.
        let mut graves = Vec::new();
        for item in self.graves.iter() {
            let (k, v) = item?;
            let g = self.open_grave(&k, &v)?;
            graves.push((k, g));
        }
        for (key, g) in graves {
            let Some(rec) = self.node_rec(g.node)? else {
                self.graves.remove(&key)?;
                continue;
            };
            let p = policy_of(self, rec.owner)?;
            let (items, nodes) = self.chain(g.node)?;
            let expired =
                p.deleted_days > 0 && now.secs - g.deleted.secs >= i64::from(p.deleted_days) * DAY;
            if !expired {
                report.versions_removed += self.prune_items(&items, now.secs, &p)?;
                continue;
            }
            for i in &items {
                self.versions.remove(version_key(i.node, i.version))?;
            }
            report.versions_removed += items.len() as u64;
            report.files_expired += 1;
            self.graves.remove(&key)?;
            for n in nodes {
                // Only nodes no name holds any more (a chain ends in deleted nodes).
                if self.node_rec(n)?.is_some_and(|r| r.deleted.is_some()) {
                    self.nodes.remove(node_key(n))?;
                    self.lineage.remove(node_key(n))?;
                }
            }
        }

        let (chunks, bytes, disk) = self.collect_garbage()?;
        report.chunks_freed = chunks;
        report.bytes_freed = bytes;
        report.disk_freed = disk;
        Ok(report)
    }

    fn prune_items(&self, items: &[Item], now: i64, p: &Retention) -> Result<u64> {
        let created: Vec<i64> = items.iter().map(|i| i.created).collect();
        let mut removed = 0;
        for (i, kept) in items.iter().zip(keep(&created, now, p)) {
            if !kept {
                self.versions.remove(version_key(i.node, i.version))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Drops every chunk no version refers to, then compacts the packs. Returns (chunks,
    /// their bytes, bytes freed on disk).
    pub fn collect_garbage(&self) -> Result<(u64, u64, u64)> {
        let _alone = self
            .gc_lock
            .write()
            .map_err(|_| StoreError::Corrupt("the GC lock was poisoned".into()))?;
        // And no commit on another server of the store either.
        let _others = self.pause_other_servers()?;
        let mut referenced: HashMap<u64, HashSet<ChunkId>> = HashMap::new();
        let mut owners: HashMap<NodeId, u64> = HashMap::new();
        for item in self.nodes.iter() {
            let (k, v) = item?;
            let id = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("node key".into()))?;
            let rec = self.open_node(id, &v)?;
            referenced.entry(rec.owner).or_default();
            if rec.kind == NodeKind::File {
                owners.insert(id, rec.owner);
            }
        }
        for item in self.versions.iter() {
            let (k, v) = item?;
            let Ok(node) = <[u8; 8]>::try_from(&k[..8]).map(u64::from_be_bytes) else {
                continue;
            };
            let Some(owner) = owners.get(&node) else {
                continue;
            };
            let rec: VersionRec = decode(&v)?;
            referenced
                .entry(*owner)
                .or_default()
                .extend(rec.chunks.iter().map(|c| c.id));
        }
        let (mut chunks, mut bytes) = (0u64, 0u64);
        for (account, live) in &referenced {
            for (id, _) in self.chunks.ids(*account)? {
                if !live.contains(&id) {
                    if let Some(len) = self.chunks.remove(*account, &id)? {
                        chunks += 1;
                        bytes += u64::from(len);
                    }
                }
            }
        }
        let disk = if chunks > 0 {
            self.chunks.compact()?
        } else {
            0
        };
        if chunks > 0 {
            tracing::info!(chunks, bytes, disk, "collected unreferenced chunks");
        }
        Ok((chunks, bytes, disk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(d: f64) -> i64 {
        (d * DAY as f64) as i64
    }

    #[test]
    fn keeps_what_the_default_policy_says() {
        let p = Retention::default();
        let now = days(1000.0);
        // Ages in days, oldest first.
        let ages = [
            400.0, 399.5, 390.0, // weekly zone: 400 and 399.5 share a week
            100.2, 100.1, 99.0, // daily zone: 100.2 and 100.1 share a day
            29.9, 29.8, 1.0, 0.0, // all kept
        ];
        let created: Vec<i64> = ages.iter().map(|a| now - days(*a)).collect();
        let kept = keep(&created, now, &p);
        assert_eq!(
            kept,
            [false, true, true, false, true, true, true, true, true, true]
        );
    }

    #[test]
    fn the_newest_is_always_kept_and_keep_all_keeps_everything() {
        let p = Retention::default();
        let now = days(1000.0);
        let created = [now - days(500.0), now - days(499.9)];
        assert_eq!(keep(&created, now, &p), [false, true]);
        let all = Retention {
            keep_all: true,
            ..p
        };
        assert_eq!(keep(&created, now, &all), [true, true]);
    }
}

//! File history: which versions a name in a directory shows, across the nodes that held it.
//!
//! Versions belong to nodes (`versions` tree, numbered 1, 2, … per node). A name keeps one
//! history across replacements, as users expect of "report.txt": when a file is renamed
//! over another (how editors save), or created where a deleted file was, the new node
//! *inherits* the old one's history: `lineage[new] = (old, base)`, and the new node's
//! version `v` is shown as number `base + v`, after the old node's numbers. Numbers are
//! therefore never reused, and stay the same when older versions are pruned.
//!
//! A file that loses its last name keeps its record (marked deleted) and is *buried* under
//! that name in the `graves` tree (one grave per name; a newer grave inherits an older
//! one), so its versions stay listed in `.versions/` and restorable.

use super::namespace::{encode, tx, tx_decode, NewNode, TxResult};
use super::sealed::{dirent_child, node_owner};
use super::{check_format, decode, node_key, Ctx, NodeRec, Store, VersionRec, FORMAT};
use crate::authz::{authorize, Action};
use crate::error::{Result, StoreError};
use crate::kv::TxTree;
use serde::{Deserialize, Serialize};
use shelf_protocol::{Attr, ChunkRef, ErrorCode, NodeId, NodeKind, Timestamp, VersionInfo};
use std::collections::BTreeSet;

/// Entries one `ListVersions` answer may carry (well inside the frame limit).
pub const MAX_LISTED_VERSIONS: usize = 20_000;
/// Nodes followed along one history (a guard against a damaged chain).
const MAX_CHAIN: usize = 100_000;

/// `lineage` tree: node → the node whose history it continues.
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub struct LineageRec {
    pub format: u8,
    pub from: NodeId,
    /// The highest number of `from`'s history when it was inherited.
    pub base: u64,
}

/// `graves` tree: (directory, name token) → the deleted file last known by that name
/// (stored as owner ‖ sealed record).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct GraveRec {
    pub format: u8,
    /// The name (the key holds only its token).
    pub name: String,
    pub node: NodeId,
    pub deleted: Timestamp,
    /// The device that deleted it: its own late uploads do not bring the file back.
    pub device: String,
}

/// The trees a namespace transaction needs for history bookkeeping.
pub(crate) struct HistoryTx<'a> {
    pub store: &'a Store,
    /// The account owning the folders involved: its key seals names and graves.
    pub owner: u64,
    pub nodes: &'a TxTree,
    pub lineage: &'a TxTree,
    pub graves: &'a TxTree,
    /// `names` tree: node → its parent and name (the last one, for deleted files).
    pub names: &'a TxTree,
    /// The device making the change.
    pub device: &'a str,
}

impl HistoryTx<'_> {
    fn lineage_of(&self, node: NodeId) -> TxResult<Option<LineageRec>> {
        match self.lineage.get(node_key(node))? {
            Some(b) => Ok(Some(tx_decode(&b)?)),
            None => Ok(None),
        }
    }

    /// The highest number in `node`'s history.
    fn top(&self, node: NodeId) -> TxResult<u64> {
        let base = self.lineage_of(node)?.map_or(0, |l| l.base);
        let version = match self.nodes.get(node_key(node))? {
            Some(b) => tx(self.store.open_node(node, &b))?.version,
            None => 0,
        };
        Ok(base + version)
    }

    /// Whether a file has anything to keep: versions of its own or inherited ones.
    pub fn has_history(&self, node: NodeId, rec: &NodeRec) -> TxResult<bool> {
        Ok(rec.kind == NodeKind::File && (rec.version > 0 || self.lineage_of(node)?.is_some()))
    }

    /// `heir` continues `from`'s history, unless it has one of its own already.
    pub fn inherit(&self, heir: NodeId, from: NodeId) -> TxResult<bool> {
        if heir == from || self.lineage_of(heir)?.is_some() {
            return Ok(false);
        }
        let rec = LineageRec {
            format: FORMAT,
            from,
            base: self.top(from)?,
        };
        self.lineage.insert(node_key(heir), encode(&rec)?)?;
        Ok(true)
    }

    /// A file now holds `name` in `parent`: it continues the history of the deleted file
    /// buried there, if it has none of its own.
    pub fn take_grave(&self, parent: NodeId, name: &str, node: NodeId) -> TxResult<()> {
        let key = tx(self.store.dirent_key(self.owner, parent, name))?;
        let Some(g) = self.graves.get(&key)? else {
            return Ok(());
        };
        let grave = tx(self.store.open_grave(&key, &g))?;
        if self.inherit(node, grave.node)? {
            self.graves.remove(key)?;
        }
        Ok(())
    }

    /// A file with history lost its last name: bury it there (taking over an older grave).
    pub fn bury(&self, parent: NodeId, name: &str, node: NodeId, now: Timestamp) -> TxResult<()> {
        let key = tx(self.store.dirent_key(self.owner, parent, name))?;
        if let Some(g) = self.graves.get(&key)? {
            let older = tx(self.store.open_grave(&key, &g))?;
            self.inherit(node, older.node)?;
        }
        let grave = GraveRec {
            format: FORMAT,
            name: name.to_string(),
            node,
            deleted: now,
            device: self.device.to_string(),
        };
        let mut value = self.owner.to_be_bytes().to_vec();
        value.extend(tx(self.store.seal_rec(self.owner, b"grave", &key, &grave))?);
        self.graves.insert(key, value)?;
        Ok(())
    }

    /// Forgets the lineage and name of a node that is removed for good (no history).
    pub fn forget(&self, node: NodeId) -> TxResult<()> {
        super::places::note_changed(node);
        self.lineage.remove(node_key(node))?;
        self.names.remove(node_key(node))?;
        Ok(())
    }

    /// Records where a node now lives.
    pub fn set_name(&self, node: NodeId, parent: NodeId, name: &str) -> TxResult<()> {
        super::places::note_changed(node);
        self.names.insert(
            node_key(node),
            tx(self.store.name_value(self.owner, node, parent, name))?,
        )?;
        Ok(())
    }
}

/// One version along a history.
pub(crate) struct Step {
    pub number: u64,
    pub node: NodeId,
    pub version: u64,
    pub rec: VersionRec,
}

impl Store {
    /// A `graves` value: the owner, then the sealed [`GraveRec`].
    pub(crate) fn open_grave(&self, key: &[u8], value: &[u8]) -> Result<GraveRec> {
        let owner = node_owner(value)?;
        let g: GraveRec = self.open_rec(owner, b"grave", key, &value[8..])?;
        check_format(g.format, "grave")?;
        Ok(g)
    }

    /// A node's record for history purposes: deleted files too, after the account check.
    fn history_node(&self, ctx: &Ctx, id: NodeId) -> Result<NodeRec> {
        let Some(bytes) = self.nodes.get(node_key(id))? else {
            return Err(ErrorCode::NotFound.into());
        };
        let rec = self.open_node(id, &bytes)?;
        check_format(rec.format, "node")?;
        authorize(ctx, Action::Read, Some(self.target(ctx, id, &rec)))?;
        Ok(rec)
    }

    /// Every version in `node`'s history, oldest number first.
    fn history(&self, ctx: &Ctx, node: NodeId) -> Result<Vec<Step>> {
        self.walk_history(node, Some(ctx)).map(|(steps, _)| steps)
    }

    /// Every version along `node`'s history, oldest number first, and the nodes visited.
    /// With `ctx`, each node passes the account check; a predecessor that retention
    /// removed ends the walk (the history starts after it).
    pub(crate) fn walk_history(
        &self,
        node: NodeId,
        ctx: Option<&Ctx>,
    ) -> Result<(Vec<Step>, Vec<NodeId>)> {
        let mut steps = Vec::new();
        let mut cur = Some(node);
        let mut seen = BTreeSet::new();
        let mut visited = Vec::new();
        while let Some(id) = cur {
            if !seen.insert(id) || seen.len() > MAX_CHAIN {
                return Err(StoreError::Corrupt(format!("history of node {node} loops")));
            }
            if let Some(ctx) = ctx {
                match self.history_node(ctx, id) {
                    Ok(_) => {}
                    Err(StoreError::Refused(ErrorCode::NotFound)) if id != node => break,
                    Err(e) => return Err(e),
                }
            }
            visited.push(id);
            let lineage: Option<LineageRec> = match self.lineage.get(node_key(id))? {
                Some(b) => Some(decode(&b)?),
                None => None,
            };
            let base = lineage.map_or(0, |l| l.base);
            for item in self.versions.scan_prefix(node_key(id)) {
                let (k, v) = item?;
                let version = super::version_of_key(&k)?;
                let rec: VersionRec = decode(&v)?;
                check_format(rec.format, "version")?;
                steps.push(Step {
                    number: base + version,
                    node: id,
                    version,
                    rec,
                });
            }
            cur = lineage.map(|l| l.from);
        }
        steps.sort_by_key(|s| s.number);
        Ok((steps, visited))
    }

    /// The history of every file in `dir`, live and deleted, by name then number.
    pub fn list_versions(&self, ctx: &Ctx, dir: NodeId) -> Result<Vec<VersionInfo>> {
        let d = self.history_node(ctx, dir)?;
        if d.kind != NodeKind::Dir || d.deleted.is_some() {
            return Err(ErrorCode::NotDir.into());
        }
        let mut out = Vec::new();
        let mut push = |name: &str, steps: Vec<Step>, deleted: bool| -> Result<()> {
            for s in steps {
                if out.len() >= MAX_LISTED_VERSIONS {
                    return Err(ErrorCode::TooLarge.into());
                }
                out.push(VersionInfo {
                    name: name.to_string(),
                    number: s.number,
                    node: s.node,
                    version: s.version,
                    size: s.rec.size,
                    mtime: s.rec.mtime,
                    created: s.rec.created,
                    device: s.rec.device,
                    deleted,
                });
            }
            Ok(())
        };
        let mut live = BTreeSet::new();
        for item in self.dirents.scan_prefix(dir.to_be_bytes()) {
            let (k, v) = item?;
            let name = self.dirent_name(d.owner, &k, &v)?;
            let id = dirent_child(&v)?;
            let rec = self.history_node(ctx, id)?;
            if rec.kind == NodeKind::File {
                push(&name, self.history(ctx, id)?, false)?;
            }
            live.insert(name);
        }
        for item in self.graves.scan_prefix(dir.to_be_bytes()) {
            let (k, v) = item?;
            let grave = self.open_grave(&k, &v)?;
            if live.contains(&grave.name) {
                // Shadowed by a live file that has a history of its own.
                continue;
            }
            push(&grave.name, self.history(ctx, grave.node)?, true)?;
        }
        out.sort_by(|a, b| (&a.name, a.number).cmp(&(&b.name, b.number)));
        Ok(out)
    }

    /// One version's size and chunk list (deleted files included).
    pub fn version_manifest(
        &self,
        ctx: &Ctx,
        node: NodeId,
        version: u64,
    ) -> Result<(u64, Vec<ChunkRef>)> {
        let rec = self.history_node(ctx, node)?;
        if rec.kind != NodeKind::File {
            return Err(ErrorCode::IsDir.into());
        }
        let Some(bytes) = self.versions.get(super::version_key(node, version))? else {
            return Err(ErrorCode::NotFound.into());
        };
        let v: VersionRec = decode(&bytes)?;
        check_format(v.format, "version")?;
        Ok((v.size, v.chunks))
    }

    /// Makes version `number` of `name`'s history in `dir` the newest version of the file,
    /// recreating the file if it was deleted. The restore is itself a new version.
    pub fn restore(&self, ctx: &Ctx, dir: NodeId, name: &str, number: u64) -> Result<Attr> {
        authorize(ctx, Action::Write, None)?;
        let found = self
            .list_versions(ctx, dir)?
            .into_iter()
            .find(|v| v.name == name && v.number == number)
            .ok_or(ErrorCode::NotFound)?;
        let (_, chunks) = self.version_manifest(ctx, found.node, found.version)?;
        let target = if found.deleted {
            self.create_node(
                ctx,
                dir,
                name,
                NewNode {
                    kind: NodeKind::File,
                    mode: 0o644,
                    target: None,
                    exclusive: true,
                    rdev: 0,
                    id: None,
                },
            )?
        } else {
            self.lookup(ctx, dir, name)?
        };
        if target.kind != NodeKind::File {
            return Err(ErrorCode::IsDir.into());
        }
        self.commit(ctx, target.node, target.version, chunks, self.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkstore::PackStore;
    use shelf_protocol::{ChunkId, RenameMode, Role};
    use std::sync::Arc;

    struct Fixture {
        store: Store,
        ctx: Ctx,
        dir: NodeId,
        _tmp: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        fixture_with_clock(Arc::new(Timestamp::now))
    }

    fn fixture_with_clock(clock: crate::store::Clock) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::temporary().unwrap();
        let chunks = Arc::new(PackStore::open(tmp.path().join("packs"), &db).unwrap());
        let mut store = Store::with_chunk_store(db, chunks).unwrap();
        store.clock = clock;
        store.add_user("ann", "pw", Role::User).unwrap();
        let (_, ctx) = store.login("ann", "pw", "laptop").unwrap();
        let dir = store.lookup(&ctx, ctx.root, "files").unwrap().node;
        Fixture {
            store,
            ctx,
            dir,
            _tmp: tmp,
        }
    }

    impl Fixture {
        fn file(&self, name: &str) -> Attr {
            self.store
                .create_node(
                    &self.ctx,
                    self.dir,
                    name,
                    NewNode {
                        kind: NodeKind::File,
                        mode: 0o644,
                        target: None,
                        exclusive: false,
                        rdev: 0,
                        id: None,
                    },
                )
                .unwrap()
        }

        /// Commits `text` as the next version of `name` (creating it if needed).
        fn write(&self, name: &str, text: &str) {
            let a = self.file(name);
            let id = ChunkId(*blake3::hash(text.as_bytes()).as_bytes());
            self.store
                .chunks
                .put(self.ctx.account, &id, text.as_bytes())
                .unwrap();
            let r = ChunkRef {
                id,
                len: text.len() as u32,
            };
            self.store
                .commit(&self.ctx, a.node, a.version, vec![r], Timestamp::now())
                .unwrap();
        }

        fn content(&self, v: &VersionInfo) -> String {
            let (_, chunks) = self
                .store
                .version_manifest(&self.ctx, v.node, v.version)
                .unwrap();
            chunks
                .iter()
                .map(|c| {
                    String::from_utf8(self.store.chunks.get(self.ctx.account, &c.id).unwrap())
                        .unwrap()
                })
                .collect()
        }

        /// (number, content, deleted) of every version of `name`.
        fn history(&self, name: &str) -> Vec<(u64, String, bool)> {
            self.store
                .list_versions(&self.ctx, self.dir)
                .unwrap()
                .iter()
                .filter(|v| v.name == name)
                .map(|v| (v.number, self.content(v), v.deleted))
                .collect()
        }

        fn names(&self) -> BTreeSet<String> {
            self.store
                .list_versions(&self.ctx, self.dir)
                .unwrap()
                .into_iter()
                .map(|v| v.name)
                .collect()
        }
    }

    fn h(items: &[(u64, &str, bool)]) -> Vec<(u64, String, bool)> {
        items
            .iter()
            .map(|&(n, t, d)| (n, t.to_string(), d))
            .collect()
    }

    #[test]
    fn a_name_keeps_one_history_across_saves_deletes_and_restores() {
        let f = fixture();
        f.write("a.txt", "one");
        f.write("a.txt", "two");
        assert_eq!(
            f.history("a.txt"),
            h(&[(1, "one", false), (2, "two", false)])
        );

        // An editor's save: write a temporary file, rename it over the original.
        f.write(".a.txt.swp", "three");
        f.store
            .rename(
                &f.ctx,
                (f.dir, ".a.txt.swp"),
                (f.dir, "a.txt"),
                RenameMode::Replace,
                None,
            )
            .unwrap();
        assert_eq!(
            f.history("a.txt"),
            h(&[(1, "one", false), (2, "two", false), (3, "three", false)])
        );
        assert!(!f.names().contains(".a.txt.swp"));

        // Deleted: the history stays, marked deleted.
        f.store.remove(&f.ctx, f.dir, "a.txt", false).unwrap();
        assert_eq!(
            f.history("a.txt"),
            h(&[(1, "one", true), (2, "two", true), (3, "three", true)])
        );

        // A new file under the same name continues the numbering.
        f.write("a.txt", "four");
        assert_eq!(
            f.history("a.txt"),
            h(&[
                (1, "one", false),
                (2, "two", false),
                (3, "three", false),
                (4, "four", false)
            ])
        );

        // Restoring is itself a new version.
        let attr = f.store.restore(&f.ctx, f.dir, "a.txt", 1).unwrap();
        assert_eq!(attr.size, 3);
        assert_eq!(
            f.history("a.txt").last().unwrap(),
            &(5, "one".into(), false)
        );

        // Restoring a deleted file recreates it.
        f.store.remove(&f.ctx, f.dir, "a.txt", false).unwrap();
        f.store.restore(&f.ctx, f.dir, "a.txt", 2).unwrap();
        let a = f.store.lookup(&f.ctx, f.dir, "a.txt").unwrap();
        assert_eq!(a.size, 3);
        assert_eq!(f.history("a.txt").len(), 6);
        assert_eq!(f.history("a.txt")[5], (6, "two".into(), false));
    }

    #[test]
    fn history_survives_an_empty_file_taking_the_name_and_renames() {
        let f = fixture();
        f.write("b", "x1");
        f.store.remove(&f.ctx, f.dir, "b", false).unwrap();
        // Created and removed again before it ever had content: the history is not lost.
        f.file("b");
        f.store.remove(&f.ctx, f.dir, "b", false).unwrap();
        assert_eq!(f.history("b"), h(&[(1, "x1", true)]));

        // Renaming a file carries its history to the new name.
        f.write("c", "c1");
        f.write("c", "c2");
        f.store
            .rename(
                &f.ctx,
                (f.dir, "c"),
                (f.dir, "d"),
                RenameMode::Replace,
                None,
            )
            .unwrap();
        assert!(f.history("c").is_empty());
        assert_eq!(f.history("d"), h(&[(1, "c1", false), (2, "c2", false)]));

        // Unknown numbers and names are "not found".
        assert!(matches!(
            f.store.restore(&f.ctx, f.dir, "d", 9),
            Err(StoreError::Refused(ErrorCode::NotFound))
        ));
        assert!(matches!(
            f.store.restore(&f.ctx, f.dir, "nothing", 1),
            Err(StoreError::Refused(ErrorCode::NotFound))
        ));
    }

    #[test]
    fn status_counts_the_space_only_old_versions_hold() {
        let f = fixture();
        f.write("a", "first text");
        f.write("a", "second");
        let s = f.store.status(&f.ctx).unwrap();
        assert_eq!((s.files, s.logical_bytes), (1, 6));
        assert_eq!((s.old_versions, s.history_bytes), (1, 10));
        assert_eq!(s.stored_bytes, 16);
        // The same bytes as a current file elsewhere: dedup, no longer history-only.
        f.write("b", "first text");
        let s = f.store.status(&f.ctx).unwrap();
        assert_eq!(
            (s.old_versions, s.history_bytes, s.stored_bytes),
            (1, 0, 16)
        );
        // A deleted file's versions are all history.
        f.store.remove(&f.ctx, f.dir, "a", false).unwrap();
        let s = f.store.status(&f.ctx).unwrap();
        assert_eq!((s.files, s.old_versions, s.history_bytes), (1, 2, 6));
    }

    /// Retention with an injected clock keeps exactly what the default policy says, and the
    /// collector frees exactly the chunks nothing refers to any more.
    #[test]
    fn pruning_keeps_what_the_policy_says_and_frees_exactly_the_unreferenced_chunks() {
        use std::sync::atomic::{AtomicI64, Ordering};
        const DAY: i64 = 86_400;
        let t = Arc::new(AtomicI64::new(1_000 * DAY));
        let clock = t.clone();
        let f = fixture_with_clock(Arc::new(move || Timestamp {
            secs: clock.load(Ordering::SeqCst),
            nanos: 0,
        }));
        let at = |day: f64| t.store(1_000 * DAY + (day * DAY as f64) as i64, Ordering::SeqCst);
        // a: v1 and v2 on day 0, v3 on day 1, v4 on day 40, v5 on day 200.
        for (day, text) in [(0.0, "a-v1"), (0.5, "a-v2"), (1.0, "a-v3"), (40.0, "a-v4")] {
            at(day);
            f.write("a", text);
        }
        at(200.0);
        f.write("a", "a-v5");
        // b shares a-v1's bytes, so that chunk stays referenced.
        f.write("b", "a-v1");
        // c: deleted on day 150 (expires after 30 days); d: deleted on day 190 (kept).
        at(100.0);
        f.write("c", "c-only");
        f.write("d", "d-only");
        at(150.0);
        f.store.remove(&f.ctx, f.dir, "c", false).unwrap();
        at(190.0);
        f.store.remove(&f.ctx, f.dir, "d", false).unwrap();
        let stored = f.store.status(&f.ctx).unwrap().stored_bytes;

        at(200.1);
        let report = f.store.prune(f.store.now()).unwrap();
        // Ages 200.1, 199.6, 199.1 share a week (v1, v2 go; v3 is that week's newest);
        // v4 (160 days) stands for its week; v5 is the newest.
        let numbers: Vec<u64> = f.history("a").iter().map(|h| h.0).collect();
        assert_eq!(numbers, [3, 4, 5]);
        assert_eq!(f.history("c"), h(&[]));
        assert_eq!(f.history("d"), h(&[(1, "d-only", true)]));
        assert_eq!(report.versions_removed, 3);
        assert_eq!(report.files_expired, 1);
        // Freed: a-v2 and c-only; a-v1 is still b's content.
        assert_eq!(report.chunks_freed, 2);
        assert_eq!(report.bytes_freed, ("a-v2".len() + "c-only".len()) as u64);
        let status = f.store.status(&f.ctx).unwrap();
        assert_eq!(status.stored_bytes, stored - report.bytes_freed);
        assert_eq!(
            f.content(&f.store.list_versions(&f.ctx, f.dir).unwrap()[0]),
            "a-v3"
        );
        // A second run finds nothing more to do.
        let again = f.store.prune(f.store.now()).unwrap();
        assert_eq!(again, crate::store::retention::PruneReport::default());
        // keep-all keeps the rest even far in the future; deleted d expires.
        let mut p = f.store.policy(f.ctx.account).unwrap();
        p.keep_all = true;
        f.store.set_policy(f.ctx.account, p).unwrap();
        at(2_000.0);
        let late = f.store.prune(f.store.now()).unwrap();
        assert_eq!((late.versions_removed, late.files_expired), (1, 1));
        let numbers: Vec<u64> = f.history("a").iter().map(|h| h.0).collect();
        assert_eq!(numbers, [3, 4, 5]);
    }

    #[test]
    fn conflicting_commits_keep_both_or_the_last_writer_and_deletes_keep_the_edit() {
        use crate::store::conflicts::{Committed, ConflictPolicy};
        let f = fixture();
        f.write("doc.txt", "base");
        let put = |text: &str| {
            let id = ChunkId(*blake3::hash(text.as_bytes()).as_bytes());
            f.store
                .chunks
                .put(f.ctx.account, &id, text.as_bytes())
                .unwrap();
            vec![ChunkRef {
                id,
                len: text.len() as u32,
            }]
        };
        let doc = f.store.lookup(&f.ctx, f.dir, "doc.txt").unwrap();
        let (_, phone) = f.store.login("ann", "pw", "phone").unwrap();
        f.store
            .commit(&phone, doc.node, 1, put("theirs"), Timestamp::now())
            .unwrap();
        // Replaying the version that is already there (a crash before the client noted
        // its commit) changes nothing.
        let r = f
            .store
            .commit_resolving(&f.ctx, doc.node, 1, put("theirs"), Timestamp::now())
            .unwrap();
        assert!(
            matches!(r, Committed::Done(ref a) if a.version == 2),
            "{r:?}"
        );
        // A commit still based on version 1, by another device than version 2's: kept both.
        let r = f
            .store
            .commit_resolving(&f.ctx, doc.node, 1, put("mine"), Timestamp::now())
            .unwrap();
        let Committed::Elsewhere { name, .. } = r else {
            panic!("expected a conflicted copy, got {r:?}");
        };
        assert!(
            name.starts_with("doc (conflicted copy ") && name.ends_with(" from laptop).txt"),
            "{name}"
        );
        assert_eq!(f.history("doc.txt").last().unwrap().1, "theirs");
        assert_eq!(f.history(&name), h(&[(1, "mine", false)]));

        // Last writer wins: the stale commit becomes the newest version.
        f.store
            .set_conflict_policy(f.ctx.account, ConflictPolicy::LastWriterWins)
            .unwrap();
        let r = f
            .store
            .commit_resolving(&f.ctx, doc.node, 1, put("mine again"), Timestamp::now())
            .unwrap();
        assert!(matches!(r, Committed::Done(_)), "{r:?}");
        let texts: Vec<String> = f.history("doc.txt").into_iter().map(|h| h.1).collect();
        assert_eq!(texts, ["base", "theirs", "mine again"]);

        // A stale base against this device's own newer version is no conflict.
        f.write("own.txt", "v1");
        let own = f.store.lookup(&f.ctx, f.dir, "own.txt").unwrap();
        f.write("own.txt", "v2");
        let r = f
            .store
            .commit_resolving(&f.ctx, own.node, 1, put("v3"), Timestamp::now())
            .unwrap();
        assert!(
            matches!(r, Committed::Done(ref a) if a.version == 3),
            "{r:?}"
        );
        // A device's own late upload of a file it deleted does not bring it back: it goes
        // into the deleted file's history, under no name (a file written through a
        // descriptor still open at the unlink)...
        f.write("mine.txt", "one");
        let mine = f.store.lookup(&f.ctx, f.dir, "mine.txt").unwrap();
        f.store.remove(&f.ctx, f.dir, "mine.txt", false).unwrap();
        let late = f
            .store
            .commit_resolving(&f.ctx, mine.node, 1, put("late"), Timestamp::now())
            .unwrap();
        assert!(
            matches!(late, Committed::Done(ref a) if a.version == 2),
            "{late:?}"
        );
        assert!(matches!(
            f.store.lookup(&f.ctx, f.dir, "mine.txt"),
            Err(StoreError::Refused(ErrorCode::NotFound))
        ));
        assert_eq!(
            f.history("mine.txt").last().unwrap(),
            &(2, "late".into(), true)
        );
        // ...but an edit of a file another device deleted does.
        f.store.remove(&phone, f.dir, "doc.txt", false).unwrap();
        let r = f
            .store
            .commit_resolving(&f.ctx, doc.node, 3, put("edited"), Timestamp::now())
            .unwrap();
        let Committed::Elsewhere { name, .. } = r else {
            panic!("expected the file back, got {r:?}");
        };
        assert_eq!(name, "doc.txt");
        assert_eq!(
            f.history("doc.txt").last().unwrap(),
            &(4, "edited".into(), false)
        );
    }

    #[test]
    fn another_account_sees_no_history() {
        let f = fixture();
        f.write("secret", "s1");
        f.store.add_user("bob", "pw", Role::User).unwrap();
        let (_, bob) = f.store.login("bob", "pw", "phone").unwrap();
        assert!(matches!(
            f.store.list_versions(&bob, f.dir),
            Err(StoreError::Refused(ErrorCode::NotFound))
        ));
        let v = &f.store.list_versions(&f.ctx, f.dir).unwrap()[0];
        assert!(matches!(
            f.store.version_manifest(&bob, v.node, v.version),
            Err(StoreError::Refused(ErrorCode::NotFound))
        ));
        assert!(f.store.restore(&bob, f.dir, "secret", 1).is_err());
    }
}

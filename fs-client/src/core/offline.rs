//! Offline reading: when the server cannot be reached, what this mount has already seen
//! stays usable — names it looked up or listed, the last attributes it got, local copies
//! and cached chunks — instead of every call failing with EIO. Files never read here stay
//! unreadable until the server is back (EIO); changes to files with a local copy are kept
//! and uploaded after the reconnect.

use super::{FsCore, FsError};
use crate::sync::LockOrRecover;
use shelf_protocol::{Attr, NodeId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

/// The names this mount has seen, per directory: owns its lock.
#[derive(Default)]
pub struct SeenNames {
    inner: Mutex<Names>,
}

#[derive(Default)]
struct Names {
    by_dir: HashMap<NodeId, BTreeMap<String, NodeId>>,
    /// Where each node was last seen: its folder and name there (for paths).
    up: HashMap<NodeId, (NodeId, String)>,
    /// Directories whose every name is known here (listed, or made empty here).
    listed: HashSet<NodeId>,
    /// How many times each directory's known names changed (other than by a listing): a
    /// listing read while this moved may miss the change.
    changes: HashMap<NodeId, u64>,
}

impl Names {
    fn changed(&mut self, dir: NodeId) {
        *self.changes.entry(dir).or_default() += 1;
    }
}

/// Whether an error means "the server cannot be reached" (rather than a refusal).
pub fn is_offline(e: &FsError) -> bool {
    matches!(e, FsError::Remote(r) if r.is_transient())
}

impl SeenNames {
    fn lock(&self) -> MutexGuard<'_, Names> {
        self.inner.lock_or_recover()
    }

    pub(crate) fn remember(&self, dir: NodeId, name: &str, node: NodeId) {
        let mut seen = self.lock();
        let before = seen
            .by_dir
            .entry(dir)
            .or_default()
            .insert(name.to_string(), node);
        if before != Some(node) {
            seen.changed(dir);
        }
        seen.up.insert(node, (dir, name.to_string()));
    }

    pub(crate) fn forget(&self, dir: NodeId, name: &str) {
        let mut seen = self.lock();
        if let Some(node) = seen.by_dir.get_mut(&dir).and_then(|d| d.remove(name)) {
            seen.changed(dir);
            if seen
                .up
                .get(&node)
                .is_some_and(|(d, n)| *d == dir && n == name)
            {
                seen.up.remove(&node);
            }
        }
    }

    /// A rename made here, in the names this mount knows: the node under `name` (or `node`,
    /// if given) now has `new_name`, and for an exchange the other way round too. A name
    /// whose node is not known here leaves its new folder not completely known.
    pub(crate) fn rename(
        &self,
        (parent, name): (NodeId, &str),
        (new_parent, new_name): (NodeId, &str),
        node: Option<NodeId>,
        exchange: bool,
    ) {
        let mut seen = self.lock();
        let seen = &mut *seen;
        seen.changed(parent);
        seen.changed(new_parent);
        let from = seen
            .by_dir
            .get_mut(&parent)
            .and_then(|d| d.remove(name))
            .or(node);
        let to = seen
            .by_dir
            .get_mut(&new_parent)
            .and_then(|d| d.remove(new_name));
        let mut place = |dir: NodeId, name: &str, node: Option<NodeId>| match node {
            Some(n) => {
                seen.by_dir
                    .entry(dir)
                    .or_default()
                    .insert(name.to_string(), n);
                seen.up.insert(n, (dir, name.to_string()));
            }
            None => {
                seen.listed.remove(&dir);
            }
        };
        place(new_parent, new_name, from);
        match exchange {
            true => place(parent, name, to),
            false => {
                if let Some(t) = to.filter(|t| Some(*t) != from) {
                    if seen
                        .up
                        .get(&t)
                        .is_some_and(|(d, n)| *d == new_parent && n == new_name)
                    {
                        seen.up.remove(&t);
                    }
                }
            }
        }
    }

    /// A full listing just read from the server replaces what was known of the directory.
    pub(crate) fn remember_listing(&self, dir: NodeId, entries: BTreeMap<String, NodeId>) {
        let mut seen = self.lock();
        for (name, node) in &entries {
            seen.up.insert(*node, (dir, name.clone()));
        }
        seen.by_dir.insert(dir, entries);
        seen.listed.insert(dir);
    }

    /// Forgets which folders are completely known (after a resync: changes were missed).
    pub(crate) fn unlist_all(&self) {
        self.lock().listed.clear();
    }

    /// How many times the names known in `dir` changed other than by a listing (see
    /// [`SeenNames::remember_listing`]).
    pub(crate) fn changes(&self, dir: NodeId) -> u64 {
        self.lock().changes.get(&dir).copied().unwrap_or(0)
    }

    /// Names of `dir` were forgotten while it may hold them: it is listed again when needed.
    pub(crate) fn unlist(&self, dir: NodeId) {
        self.lock().listed.remove(&dir);
    }

    /// Whether every name in `dir` is known here (so emptiness can be judged locally).
    pub(crate) fn listing_known(&self, dir: NodeId) -> bool {
        self.lock().listed.contains(&dir)
    }

    /// A path for messages: the names this mount has seen, from the top of the store down to
    /// `node` (`#NODE` where a name is not known here).
    pub(crate) fn path(&self, root: NodeId, node: NodeId) -> String {
        let seen = self.lock();
        let mut parts = Vec::new();
        let mut cur = node;
        for _ in 0..64 {
            if cur == root {
                break;
            }
            // Where the node was last seen, if that name still names it.
            let up =
                seen.up.get(&cur).cloned().filter(|(dir, name)| {
                    seen.by_dir.get(dir).and_then(|d| d.get(name)) == Some(&cur)
                });
            match up {
                Some((dir, name)) => {
                    parts.push(name);
                    cur = dir;
                }
                None => {
                    parts.push(format!("#{cur}"));
                    break;
                }
            }
        }
        parts.reverse();
        parts.join("/")
    }

    /// The node this mount last saw under `name` in `dir`.
    pub(crate) fn entry(&self, dir: NodeId, name: &str) -> Option<NodeId> {
        self.lock().by_dir.get(&dir)?.get(name).copied()
    }

    /// Whether this mount last saw `node` under a name other than `name` in `dir`.
    pub(crate) fn named_elsewhere(&self, node: NodeId, dir: NodeId, name: &str) -> bool {
        self.lock()
            .up
            .get(&node)
            .is_some_and(|(d, n)| !(*d == dir && n == name))
    }

    /// The names this mount has seen in `dir`.
    pub(crate) fn names(&self, dir: NodeId) -> Vec<String> {
        self.lock()
            .by_dir
            .get(&dir)
            .map(|names| names.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every (directory, name) this mount has seen.
    pub(crate) fn entries(&self) -> Vec<(NodeId, String)> {
        let seen = self.lock();
        seen.by_dir
            .iter()
            .flat_map(|(dir, names)| names.keys().map(|n| (*dir, n.clone())))
            .collect()
    }

    /// The names this mount has seen in `dir`.
    pub(crate) fn dir(&self, dir: NodeId) -> Option<BTreeMap<String, NodeId>> {
        self.lock().by_dir.get(&dir).cloned()
    }

    /// `f` of the names of a folder whose every name is known here (None if not), under
    /// this map's lock (callers take the attribute cache's lock inside: always last).
    pub(crate) fn with_listed<R>(
        &self,
        dir: NodeId,
        f: impl FnOnce(Option<&BTreeMap<String, NodeId>>) -> R,
    ) -> Option<R> {
        let seen = self.lock();
        if !seen.listed.contains(&dir) {
            return None;
        }
        Some(f(seen.by_dir.get(&dir)))
    }
}

impl FsCore {
    /// A path for messages: the names this mount has seen, from the top of the store down to
    /// `node` (`#NODE` where a name is not known here).
    pub(crate) fn seen_path(&self, node: NodeId) -> String {
        self.seen.path(self.root, node)
    }

    /// Records one of this device's own events for `shelf events`.
    /// [`FsCore::seen_path`], or where the journal says the file was when it was closed
    /// (after a restart, before this mount has seen the name again).
    pub(crate) fn known_path(&self, node: NodeId) -> String {
        let seen = self.seen_path(node);
        match seen.starts_with('#') {
            true => self.journal.path(node).unwrap_or(seen),
            false => seen,
        }
    }

    pub(crate) fn note_event(&self, what: &str, node: NodeId, detail: &str) {
        let path = self.known_path(node);
        crate::cache::append_event(&self.cache.root, what, &path, detail);
    }

    /// The last attributes received for `node`, however old.
    pub(crate) fn stale_attr(&self, node: NodeId) -> Option<Attr> {
        self.attrs.last(node)
    }

    pub(crate) fn offline_lookup(&self, dir: NodeId, name: &str) -> Option<Attr> {
        let node = self.seen.entry(dir, name)?;
        self.stale_attr(node)
    }

    /// What this mount knows of a directory's entries (names with their last attributes).
    /// A listing of `dir` from what this mount knows, without a round trip: while the change
    /// feed is followed, a folder listed here whose names and attributes are all still
    /// trusted (another device's change drops them, and a resync all). Not a shared view:
    /// changes there do not reach this account's feed.
    pub(crate) fn known_listing(&self, dir: NodeId) -> Option<Vec<(String, Attr)>> {
        let ttl = self.kernel_ttl();
        if ttl != super::FOLLOWED_TTL || self.cached_attr(dir).is_none_or(|d| d.read_only) {
            return None;
        }
        // Names, then attributes (the attribute cache's lock is always taken last).
        self.seen
            .with_listed(dir, |names| match names {
                None => Some(Vec::new()),
                Some(names) => self
                    .attrs
                    .fresh_all(names.iter().map(|(name, node)| (name, *node)), ttl),
            })
            .flatten()
    }

    pub(crate) fn offline_listing(&self, dir: NodeId) -> Option<Vec<(String, Attr)>> {
        let names = self.seen.dir(dir)?;
        Some(
            names
                .into_iter()
                .filter_map(|(name, node)| self.stale_attr(node).map(|a| (name, a)))
                .collect(),
        )
    }
}

//! Where nodes are, in memory: a bounded cache of the `names` tree (node → parent and name)
//! in front of [`Store::place_of`](super::Store::place_of), and the nodes known to be
//! roots. Every change in the feed carries its path, a walk from the node to the root: with
//! this cache, a folder's walk costs no database reads once seen (it cost a third of the
//! server's time spent on a device's batch of creates).
//!
//! A name written in a transaction ([`note_changed`], called by `HistoryTx::set_name` and
//! `forget`) is dropped from the cache once the transaction is over, committed or not
//! ([`Places::settle`]); a place read from the database while such a drop happened is not
//! kept (the generation check). So the cache never answers with a place older than what
//! the database held when the last transaction that changed it finished.

use lru::LruCache;
use shelf_protocol::sync::LockOrRecover;
use shelf_protocol::NodeId;
use std::cell::RefCell;
use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// Places kept (about 100 bytes each).
const CAPACITY: usize = 65_536;

thread_local! {
    /// Nodes whose name this thread's current transaction wrote.
    static CHANGED: RefCell<Vec<NodeId>> = const { RefCell::new(Vec::new()) };
}

/// Notes that the current transaction of this thread wrote `node`'s name.
pub(crate) fn note_changed(node: NodeId) {
    CHANGED.with(|c| c.borrow_mut().push(node));
}

/// The cache. One lock: a hit is a hash lookup.
pub struct Places {
    inner: Mutex<Inner>,
}

struct Inner {
    /// Bumped by every drop: a read that started before it is not kept.
    generation: u64,
    places: LruCache<NodeId, (NodeId, Arc<str>)>,
    /// Nodes that are their own parent (account roots); a root stays one.
    roots: HashSet<NodeId>,
}

impl Default for Places {
    fn default() -> Self {
        Places {
            inner: Mutex::new(Inner {
                generation: 0,
                places: LruCache::new(NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN)),
                roots: HashSet::new(),
            }),
        }
    }
}

impl Places {
    /// The cached place of `node`.
    pub fn get(&self, node: NodeId) -> Option<(NodeId, Arc<str>)> {
        self.inner.lock_or_recover().places.get(&node).cloned()
    }

    /// The generation to hand back to [`Places::put`] for a read that starts now.
    pub fn generation(&self) -> u64 {
        self.inner.lock_or_recover().generation
    }

    /// Keeps a place read from the database, unless a drop happened since `generation`.
    pub fn put(&self, generation: u64, node: NodeId, parent: NodeId, name: Arc<str>) {
        let mut inner = self.inner.lock_or_recover();
        if inner.generation == generation {
            inner.places.put(node, (parent, name));
        }
    }

    pub fn is_root(&self, node: NodeId) -> bool {
        self.inner.lock_or_recover().roots.contains(&node)
    }

    pub fn root_seen(&self, node: NodeId) {
        self.inner.lock_or_recover().roots.insert(node);
    }

    /// Drops the places this thread's transaction wrote: call once it is over.
    pub fn settle(&self) {
        let changed = CHANGED.with(|c| std::mem::take(&mut *c.borrow_mut()));
        if changed.is_empty() {
            return;
        }
        let mut inner = self.inner.lock_or_recover();
        inner.generation += 1;
        for node in changed {
            inner.places.pop(&node);
        }
    }

    /// Drops everything (an account deleted, or another server moved or removed names).
    pub fn clear(&self) {
        let mut inner = self.inner.lock_or_recover();
        inner.generation += 1;
        inner.places.clear();
        inner.roots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_read_while_a_name_changed_is_not_kept() {
        let places = Places::default();
        let before = places.generation();
        note_changed(7);
        places.settle();
        places.put(before, 7, 1, "old".into());
        assert!(places.get(7).is_none(), "read before the change ended");
        let now = places.generation();
        places.put(now, 7, 1, "new".into());
        assert_eq!(
            places.get(7).map(|(_, n)| n.to_string()),
            Some("new".into())
        );
        note_changed(7);
        places.settle();
        assert!(places.get(7).is_none(), "dropped by the next change");
    }
}

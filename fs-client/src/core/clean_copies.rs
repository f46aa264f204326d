//! The clean local copies: committed staging files kept to read from, counted against a
//! byte budget (the chunk cache's) and given up least recently used first. This part only
//! keeps the order and the count; the core decides whether a copy may go (no open handle,
//! not pinned, not dirty) and removes it.

use crate::sync::LockOrRecover;
use lru::LruCache;
use shelf_protocol::NodeId;
use std::sync::Mutex;

pub struct CleanCopies {
    budget: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Each copy's size, least recently used first.
    lru: LruCache<NodeId, u64>,
    bytes: u64,
}

impl CleanCopies {
    pub fn new(budget: u64) -> CleanCopies {
        CleanCopies {
            budget,
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    /// Counts `node`'s copy of `size` bytes as the most recently used; returns the copies
    /// beyond the budget, least recently used first, no longer counted.
    pub fn add(&self, node: NodeId, size: u64) -> Vec<NodeId> {
        let mut c = self.inner.lock_or_recover();
        if let Some(old) = c.lru.put(node, size) {
            c.bytes -= old;
        }
        c.bytes += size;
        let mut over = Vec::new();
        while c.bytes > self.budget {
            let Some((victim, len)) = c.lru.pop_lru() else {
                break;
            };
            c.bytes -= len;
            over.push(victim);
        }
        over
    }

    /// Stops counting a copy that was dropped.
    pub fn forget(&self, node: NodeId) {
        let mut c = self.inner.lock_or_recover();
        if let Some(len) = c.lru.pop(&node) {
            c.bytes -= len;
        }
    }

    /// Marks a copy as recently used.
    pub fn touch(&self, node: NodeId) {
        self.inner.lock_or_recover().lru.get(&node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_copies_go_first_once_over_budget() {
        let c = CleanCopies::new(100);
        assert!(c.add(1, 40).is_empty());
        assert!(c.add(2, 40).is_empty());
        c.touch(1);
        assert_eq!(c.add(3, 40), vec![2], "2 was used least recently");
        c.forget(1);
        assert!(c.add(4, 50).is_empty(), "1 no longer counts");
    }
}

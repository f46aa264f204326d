//! The attribute cache: the last attributes received for each node, when they came, and
//! the rule that orders answers that overtake each other.
//!
//! Answers overtake each other: a getattr the server answered just before this device's
//! commit (or chmod) can arrive after the commit's own answer. Taken as it came, it would
//! make a just-written file look empty once its local copy turned clean. The server's
//! content `version` only grows and every change sets `ctime`, so (version, ctime) orders a
//! node's states; the newest is kept ([`newer`]).
//!
//! An entry may be expired (`None` time): kept for offline use and for ordering only. How
//! long a fresh entry may be trusted is the core's call (it depends on whether the change
//! feed is followed): [`AttrCache::fresh`] takes it as an argument.

use super::TTL;
use crate::sync::LockOrRecover;
use shelf_protocol::{Attr, NodeId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct AttrCache {
    /// node → (attributes, when received; `None`: expired).
    map: Mutex<HashMap<NodeId, (Attr, Option<Instant>)>>,
}

/// Whether `cached` (remembered at `at`) is a later state of its node than `answer`: a
/// higher content version (versions only grow), or, within the cache TTL, the same version
/// with a later ctime (a chmod's answer against an older getattr's). Past the TTL the
/// server's word on metadata wins, so a server clock that stepped back cannot pin old
/// attributes.
fn newer(cached: &Attr, at: Option<Instant>, answer: &Attr) -> bool {
    cached.version > answer.version
        || (cached.version == answer.version
            && cached.ctime > answer.ctime
            && at.is_some_and(|at| at.elapsed() < TTL))
}

impl AttrCache {
    /// Keeps an answer received at `at` (`None`: expired at once), unless a newer state of
    /// the node is known; returns what is kept.
    pub fn put(&self, attr: Attr, at_time: Option<Instant>) -> Attr {
        let mut a = self.map.lock_or_recover();
        match a.get(&attr.node) {
            Some((cached, at)) if newer(cached, *at, &attr) => cached.clone(),
            // A newer version whose answer left the server before a change of owner or mode
            // this client already knows (an upload's commit, answered after the queued
            // `chown` behind it was applied and cached): its content, the known metadata.
            Some((cached, at))
                if at.is_some_and(|at| at.elapsed() < TTL) && cached.ctime > attr.ctime =>
            {
                let mut merged = attr.clone();
                merged.mode = cached.mode;
                merged.uid = cached.uid;
                merged.gid = cached.gid;
                merged.ctime = cached.ctime;
                a.insert(attr.node, (merged.clone(), at_time));
                merged
            }
            _ => {
                a.insert(attr.node, (attr.clone(), at_time));
                attr
            }
        }
    }

    /// Keeps `attr` as it is, fresh, whatever is cached (the state the server now holds).
    pub fn replace(&self, attr: Attr) {
        self.map
            .lock_or_recover()
            .insert(attr.node, (attr, Some(Instant::now())));
    }

    /// `attr`, or the newer state of its node already known; caches nothing.
    pub fn newest(&self, attr: &Attr) -> Attr {
        match self.map.lock_or_recover().get(&attr.node) {
            Some((cached, at)) if newer(cached, *at, attr) => cached.clone(),
            _ => attr.clone(),
        }
    }

    /// Expires `node`'s entry: kept for offline use, no longer trusted.
    pub fn expire(&self, node: NodeId) {
        if let Some((_, at)) = self.map.lock_or_recover().get_mut(&node) {
            *at = None;
        }
    }

    /// The attributes of `node` if received less than `ttl` ago.
    pub fn fresh(&self, node: NodeId, ttl: Duration) -> Option<Attr> {
        let a = self.map.lock_or_recover();
        let (attr, at) = a.get(&node)?;
        at.is_some_and(|at| at.elapsed() < ttl)
            .then(|| attr.clone())
    }

    /// Each named node's attributes if all were received less than `ttl` ago (one lock
    /// for a whole listing).
    pub fn fresh_all<'a>(
        &self,
        named: impl Iterator<Item = (&'a String, NodeId)>,
        ttl: Duration,
    ) -> Option<Vec<(String, Attr)>> {
        let a = self.map.lock_or_recover();
        named
            .map(|(name, node)| {
                let (attr, at) = a.get(&node)?;
                at.is_some_and(|at| at.elapsed() < ttl)
                    .then(|| (name.clone(), attr.clone()))
            })
            .collect()
    }

    /// The last attributes received for `node`, however old.
    pub fn last(&self, node: NodeId) -> Option<Attr> {
        self.map
            .lock_or_recover()
            .get(&node)
            .map(|(a, _)| a.clone())
    }

    /// Every node with an entry.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.map.lock_or_recover().keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelf_protocol::{NodeKind, Timestamp};

    fn attr(version: u64, ctime: i64, mode: u32) -> Attr {
        let t = |secs| Timestamp { secs, nanos: 0 };
        Attr {
            node: 9,
            kind: NodeKind::File,
            mode,
            size: version * 10,
            mtime: t(ctime),
            ctime: t(ctime),
            atime: t(ctime),
            nlink: 1,
            version,
            rdev: 0,
            uid: None,
            gid: None,
            read_only: false,
        }
    }

    #[test]
    fn an_older_answer_arriving_late_does_not_replace_a_newer_state() {
        let c = AttrCache::default();
        c.put(attr(2, 20, 0o644), Some(Instant::now()));
        // A getattr answered before the commit, arriving after it.
        let kept = c.put(attr(1, 10, 0o644), Some(Instant::now()));
        assert_eq!(kept.version, 2);
        // The commit's answer, sent before a chmod this client already knows.
        c.put(attr(2, 30, 0o600), Some(Instant::now()));
        let kept = c.put(attr(3, 25, 0o644), Some(Instant::now()));
        assert_eq!(
            (kept.version, kept.mode),
            (3, 0o600),
            "new content, known mode"
        );
        c.expire(9);
        assert!(c.fresh(9, Duration::from_secs(60)).is_none());
        assert_eq!(
            c.last(9).map(|a| a.version),
            Some(3),
            "kept for offline use"
        );
    }
}

//! Coherence: changes the server pushes (other devices' creates, writes, renames, deletes)
//! drop what this client and the kernel cached about the nodes involved, so `ls`, `stat`
//! and `cat` show them at once instead of after the cache TTL.
//!
//! The core does not know fuser: the adapter gives it a [`KernelCache`] that turns
//! invalidations into FUSE notifications. Changes made by this device are skipped (its
//! caches already agree); a `Resync` (the feed was trimmed, or this client fell behind)
//! drops every cached attribute.

use super::{FsCore, FsError};
use shelf_protocol::{Change, ChangeKind, NodeId};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// When a change is applied again after it arrived (see `events_loop`).
const REAPPLY: [std::time::Duration; 2] = [
    std::time::Duration::from_millis(30),
    std::time::Duration::from_millis(250),
];

/// What coherence keeps: whether the feed is followed, how many pushed changes were
/// applied (the epoch), and the kernel's caches once the adapter hands them over.
#[derive(Default)]
pub struct Coherence {
    following: AtomicBool,
    epoch: AtomicU64,
    kernel: OnceLock<Box<dyn KernelCache>>,
}

impl Coherence {
    /// Pushed changes applied so far.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A pushed change is being applied: answers obtained before may predate it.
    pub fn advance(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether the feed is followed and the kernel's caches can be told what changed:
    /// then the kernel may keep what it is given for long.
    pub fn keeps_kernel_true(&self) -> bool {
        self.following.load(Ordering::Acquire) && self.kernel.get().is_some()
    }

    fn kernel(&self) -> Option<&dyn KernelCache> {
        self.kernel.get().map(|k| &**k)
    }
}

/// The kernel's caches, as the core sees them.
pub trait KernelCache: Send + Sync {
    /// Drops the kernel's attributes of `ino`, and its cached pages when `data`.
    fn inval_inode(&self, ino: u64, data: bool);
    /// Drops the kernel's entry (or negative entry) `name` in directory `parent`.
    fn inval_entry(&self, parent: u64, name: &str);
}

impl FsCore {
    /// Lets the core tell the kernel what changed.
    pub fn set_kernel_cache(&self, k: Box<dyn KernelCache>) {
        let _ = self.coherence.kernel.set(k);
    }

    /// Drops the kernel's entries for every name this mount has seen in folder `dir`, so
    /// that the kernel asks (and the mount checks) again before it walks through them: for
    /// a folder that some caller may no longer search. Not from a request on `dir` before
    /// it is answered (the kernel holds the folder's lock meanwhile).
    pub fn forget_kernel_entries(&self, dir: u64) {
        let Some(k) = self.coherence.kernel() else {
            return;
        };
        for name in self.seen.names(self.node_of(dir)) {
            k.inval_entry(dir, &name);
        }
    }

    /// Subscribes to the account's changes and applies them on a thread of their own.
    /// `device` is this mount's device name: its own changes are not applied again.
    pub fn start_events(self: &Arc<Self>, device: String) -> Result<(), FsError> {
        let rx = self.remote.subscribe()?;
        self.coherence.following.store(true, Ordering::Release);
        // A weak reference: the thread must not keep a stopped core (and its cache lock)
        // alive.
        let core = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("shelf-events".into())
            .spawn(move || Self::events_loop(&core, rx, &device))?;
        Ok(())
    }

    /// Applies each change at once, and again a little later: an answer the server gave
    /// just before the change, still on its way to the kernel when the change arrived,
    /// would otherwise be cached for the full TTL (the kernel cannot drop what it has not
    /// received yet: a new inode, say).
    fn events_loop(
        core: &std::sync::Weak<FsCore>,
        rx: std::sync::mpsc::Receiver<Change>,
        device: &str,
    ) {
        use std::collections::VecDeque;
        use std::sync::mpsc::RecvTimeoutError;
        use std::time::{Duration, Instant};
        let mut again: VecDeque<(Instant, Change)> = VecDeque::new();
        loop {
            let wait = again
                .front()
                .map(|(at, _)| at.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(1));
            let received = rx.recv_timeout(wait);
            let Some(this) = core.upgrade() else {
                return;
            };
            if this.queue.is_stopping() {
                return;
            }
            match received {
                Ok(change) => {
                    this.apply_change(&change, device, true);
                    if change.device != device || change.kind == ChangeKind::Conflicted {
                        for delay in REAPPLY {
                            again.push_back((Instant::now() + delay, change.clone()));
                        }
                        again.make_contiguous().sort_by_key(|(at, _)| *at);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while again.front().is_some_and(|(at, _)| *at <= Instant::now()) {
                if let Some((_, c)) = again.pop_front() {
                    this.apply_change(&c, device, false);
                }
            }
        }
    }

    pub(crate) fn kernel_inode(&self, node: NodeId, data: bool) {
        if let Some(k) = self.coherence.kernel() {
            k.inval_inode(self.ino_of(node), data);
        }
    }

    pub(crate) fn kernel_entry(&self, parent: NodeId, name: &str) {
        if let (Some(k), false) = (self.coherence.kernel(), name.is_empty()) {
            k.inval_entry(self.ino_of(parent), name);
        }
    }

    /// Drops what is cached about a change's nodes, here and in the kernel. The `first` time
    /// a change is applied it also updates the names this mount knows (for offline use);
    /// applied again later, it only drops caches (a later change may have moved on).
    pub fn apply_change(&self, c: &Change, me: &str, first: bool) {
        tracing::debug!(seq = c.seq, kind = ?c.kind, node = c.node, parent = c.parent, name = %c.name, device = %c.device, "change");
        if matches!(c.kind, ChangeKind::Alert(_)) {
            return; // for people (`shelf events`), not for caches
        }
        // This device's own changes are already in its caches; a conflict is news to it.
        let own = c.device == me && c.kind != ChangeKind::Conflicted;
        if c.kind == ChangeKind::Resync || !own {
            // Before anything is dropped: answers in flight now may predate the change.
            self.coherence.advance();
        }
        if c.kind == ChangeKind::Resync {
            self.note_pushed_anywhere();
            // Expired, not dropped: the old attributes stay for offline use.
            let known = self.attrs.nodes();
            for n in &known {
                self.forget_attr(*n);
            }
            self.virtuals.forget_listings();
            self.seen.unlist_all();
            for n in known {
                self.kernel_inode(n, false);
            }
            // The kernel keeps names for the long TTL (see `FsCore::kernel_ttl`).
            for (dir, name) in self.seen.entries() {
                self.kernel_entry(dir, &name);
            }
            return;
        }
        if own {
            return;
        }
        if first {
            let from = match &c.kind {
                ChangeKind::Moved { from_parent, .. } => *from_parent,
                _ => 0,
            };
            self.note_pushed(&[c.node, c.parent, from]);
        }
        self.forget_attr(c.node);
        if c.parent != 0 {
            self.forget_attr(c.parent);
            self.virtuals.forget_listing(c.parent);
            self.kernel_inode(c.parent, false);
        }
        match &c.kind {
            ChangeKind::Content => {
                self.drop_stale_copy(c.node, c.at);
                self.kernel_inode(c.node, true);
            }
            ChangeKind::Attr => self.kernel_inode(c.node, false),
            ChangeKind::Created | ChangeKind::Conflicted => {
                if first {
                    self.seen.remember(c.parent, &c.name, c.node);
                }
                self.kernel_entry(c.parent, &c.name)
            }
            ChangeKind::Removed => {
                if first {
                    self.seen.forget(c.parent, &c.name);
                }
                self.kernel_entry(c.parent, &c.name);
                self.kernel_inode(c.node, true);
            }
            ChangeKind::Moved {
                from_parent,
                from_name,
            } => {
                self.forget_attr(*from_parent);
                if first {
                    self.seen.forget(*from_parent, from_name);
                    self.seen.remember(c.parent, &c.name, c.node);
                }
                self.virtuals.forget_listing(*from_parent);
                self.kernel_inode(*from_parent, false);
                self.kernel_entry(*from_parent, from_name);
                self.kernel_entry(c.parent, &c.name);
                self.kernel_inode(c.node, false);
            }
            ChangeKind::Resync | ChangeKind::Alert(_) => {}
        }
    }

    /// Drops what the kernel and this client hold of a node's attributes and content.
    pub(crate) fn invalidate_node(&self, node: NodeId) {
        self.coherence.advance();
        self.forget_attr(node);
        self.kernel_inode(node, true);
    }

    /// Another device committed a new version at `at`: a clean local copy of the old one
    /// goes (open handles keep theirs until they close). A copy of a later state this
    /// device already knows stays: changes are applied again a little later, and by then
    /// this device may have committed a newer version of its own.
    fn drop_stale_copy(&self, node: NodeId, at: shelf_protocol::Timestamp) {
        if self.stale_attr(node).is_some_and(|a| a.ctime > at) {
            return;
        }
        let Some(st) = self.files.get(node) else {
            return;
        };
        let mut inner = st.lock();
        let clean = inner.staging.as_ref().is_some_and(|s| !s.dirty());
        if clean && inner.open_handles == 0 {
            if let Some(s) = inner.staging.take() {
                s.discard(&self.staging_files);
            }
            drop(inner);
            self.forget_clean_copy(node);
        }
    }
}

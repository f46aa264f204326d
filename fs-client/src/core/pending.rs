//! The write-back namespace: every change (create, mkdir, rename, unlink, chmod, …) is
//! applied in the mount, journaled ([`crate::cache::oplog`]) and answered at once; one sender
//! thread streams the journal to the server in order, many changes per round trip.
//!
//! * A change is judged against this mount's view first (the kernel looks a name up before
//!   it creates, removes or renames it). One the mount cannot judge alone (a move between
//!   folders, which may cross into a share; removing a folder never listed here) goes to the
//!   server itself once every change before it is there; while the server cannot be
//!   reached it is queued on what this mount has seen, like any other.
//! * The [`Overlay`] holds what the queued changes did to names and attributes. Lookups,
//!   listings and getattr consult it before the server, so the mount shows its own changes
//!   while they wait, online or not.
//! * Every node a client creates gets an id the client picked ([`CLIENT_NODE_IDS`]): content
//!   written to a new file is uploaded to that node once its create is sent, and a replay
//!   whose answer was lost finds its node instead of making a second one.
//! * The sender sends up to [`BATCH`] changes as one `Batch`; the first one the server
//!   refuses goes alone by the replay rules, and the sender retries with backoff while the
//!   server is unreachable. Conflicts lose nothing: a create whose name was taken meanwhile
//!   gets a conflicted-copy name (a folder is merged into the folder of that name), one whose
//!   folder was deleted goes to the top of the store; a delete of a file another device
//!   changed since, or a rename of a name that now holds another file, is not applied.
//!   Uploads and fsync wait for the changes made before them.

use super::{FsCore, FsError};
use crate::cache::oplog::{NsOp, OpLog, Queued};
use crate::remote::RemoteError;
use crate::sync::LockOrRecover;
use shelf_protocol::names::conflict_name;
use shelf_protocol::{
    Attr, ErrorCode, Expect, NodeId, NodeKind, RenameMode, Request, Stamped, Timestamp,
    CLIENT_NODE_IDS,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Names tried for one create or rename before the change is given up.
const MAX_NAME_TRIES: u32 = 8;
/// How long a change the mount cannot judge alone waits for the changes before it to reach
/// the server before it is queued instead.
const SETTLE: Duration = Duration::from_secs(30);
/// Changes per batch the sender sends.
const BATCH: usize = 256;
/// How long the sender waits for more changes before it sends a batch that is not full.
const LINGER: Duration = Duration::from_millis(20);

/// What queued changes did, laid over the server's view.
#[derive(Default)]
pub struct Overlay {
    /// Per directory: name → node it now names, or `None` where a name was removed.
    names: HashMap<NodeId, BTreeMap<String, Option<NodeId>>>,
    /// Attributes of nodes made or changed by queued changes.
    attrs: HashMap<NodeId, Attr>,
    /// Targets of symlinks made offline.
    targets: HashMap<NodeId, String>,
    /// Nodes made by queued changes (the server does not know them yet).
    created: HashSet<NodeId>,
}

impl Overlay {
    fn is_empty(&self) -> bool {
        self.names.is_empty() && self.attrs.is_empty()
    }

    /// Lays one change over the view; `base` is the node's attributes before a SetAttr.
    fn apply(&mut self, op: &NsOp, at: Timestamp, base: Option<Attr>) {
        match op {
            NsOp::Make {
                parent,
                name,
                id,
                kind,
                mode,
                rdev,
                target,
                at,
                ..
            } => {
                let attr = Attr {
                    node: *id,
                    kind: *kind,
                    mode: match kind {
                        NodeKind::Symlink => 0o777,
                        _ => mode & 0o7777,
                    },
                    size: target.as_ref().map(|t| t.len() as u64).unwrap_or(0),
                    mtime: *at,
                    ctime: *at,
                    atime: *at,
                    nlink: if *kind == NodeKind::Dir { 2 } else { 1 },
                    version: 0,
                    rdev: *rdev,
                    uid: None,
                    gid: None,
                    read_only: false,
                };
                self.names
                    .entry(*parent)
                    .or_default()
                    .insert(name.clone(), Some(*id));
                self.attrs.insert(*id, attr);
                if let Some(t) = target {
                    self.targets.insert(*id, t.clone());
                }
                self.created.insert(*id);
            }
            NsOp::Remove { parent, name, .. } => {
                self.names
                    .entry(*parent)
                    .or_default()
                    .insert(name.clone(), None);
            }
            NsOp::Rename {
                parent,
                name,
                new_parent,
                new_name,
                expect,
                ..
            } => {
                self.names
                    .entry(*parent)
                    .or_default()
                    .insert(name.clone(), None);
                self.names
                    .entry(*new_parent)
                    .or_default()
                    .insert(new_name.clone(), *expect);
            }
            NsOp::SetAttr {
                node,
                mode,
                uid,
                gid,
                atime,
                mtime,
            } => {
                let Some(mut a) = self.attrs.get(node).cloned().or(base) else {
                    return;
                };
                if let Some(m) = mode {
                    a.mode = m & 0o7777;
                }
                if uid.is_some() {
                    a.uid = *uid;
                }
                if gid.is_some() {
                    a.gid = *gid;
                }
                if let Some(t) = atime {
                    a.atime = *t;
                }
                if let Some(t) = mtime {
                    a.mtime = *t;
                }
                a.ctime = at;
                self.attrs.insert(*node, a);
            }
        }
    }

    /// `Some(answer)` when the overlay decides what `name` in `dir` is.
    fn entry(&self, dir: NodeId, name: &str) -> Option<Option<NodeId>> {
        match self.names.get(&dir).and_then(|d| d.get(name)) {
            Some(e) => Some(*e),
            // A folder made offline holds only what the overlay says.
            None if self.created.contains(&dir) => Some(None),
            None => None,
        }
    }
}

/// The queue of namespace changes and its overlay.
pub struct Pending {
    log: OpLog,
    overlay: Mutex<Overlay>,
    /// Wakes the sender: a change was queued, someone waits for the queue, or stopping.
    work: Condvar,
    /// Wakes those waiting for changes to reach the server: some did, or stopping. (Apart
    /// from `work`, so that each change queued in a burst wakes the sender alone, not every
    /// upload waiting for its file's create.)
    progress: Condvar,
    /// Whether the overlay holds anything (read without the lock on every lookup).
    active: AtomicBool,
    /// Another device changed a node the overlay shows (a folder holding a queued change,
    /// say): what the overlay showed of it is not the server's state at the drain.
    pushed_into: AtomicBool,
    /// A replay ended differently than the change was made locally (a conflicted name, a
    /// merged folder, a change not applied): cached names are dropped when the queue drains.
    diverged: AtomicBool,
    /// Folders made offline that turned out to exist on the server: local id → server id.
    aliases: Mutex<HashMap<NodeId, NodeId>>,
    stopping: AtomicBool,
    /// Whether the sender thread runs.
    pub(crate) sender_started: AtomicBool,
    /// The sender's last try found the server unreachable.
    unreachable: AtomicBool,
    /// The sender's tries so far (each batch sent or failed), so that a waiter can tell a
    /// try made after it began from the stale outcome of an earlier one.
    tries: AtomicU64,
    /// Someone waits for the queue (fsync): retry now instead of after the backoff.
    kicked: AtomicBool,
    /// The sender waits for more changes ([`FsCore::linger`]): a change does not wake it
    /// unless the batch is full.
    lingering: AtomicBool,
}

/// How a namespace change was made.
pub(crate) enum Applied {
    /// The server answered.
    Sent(Sent),
    /// Applied locally and queued; the attributes of a made or changed node.
    Queued(Option<Attr>),
}

/// What the server answered a change sent to it directly.
pub(crate) enum Sent {
    /// A made or changed node's attributes (creates, setattr).
    Attr(Attr),
    /// The node that lost its last name, if any (unlink, rmdir, rename).
    Removed(Option<NodeId>),
}

impl Sent {
    /// The answer a change of this kind gets from the server, sent now.
    fn send(remote: &crate::remote::Remote, op: &NsOp) -> Result<Sent, RemoteError> {
        Sent::send_as(remote, op, false)
    }

    /// The same, for a change sent again (`replay`: see [`request`]).
    fn send_as(
        remote: &crate::remote::Remote,
        op: &NsOp,
        replay: bool,
    ) -> Result<Sent, RemoteError> {
        let req = request(op, replay);
        match op {
            NsOp::Make { .. } => remote.ask_attr("create", req).map(Sent::Attr),
            NsOp::SetAttr { .. } => remote.ask_attr("setattr", req).map(Sent::Attr),
            NsOp::Remove { .. } => remote.ask_removed("remove", req).map(Sent::Removed),
            NsOp::Rename { .. } => remote.ask_removed("rename", req).map(Sent::Removed),
        }
    }
}

/// What a create makes.
pub(crate) struct NewNode {
    pub kind: NodeKind,
    pub mode: u32,
    pub rdev: u32,
    pub target: Option<String>,
    /// O_EXCL: fail on an existing name (always, except for plain file creates).
    pub exclusive: bool,
}

impl NewNode {
    pub fn of(kind: NodeKind, mode: u32) -> NewNode {
        NewNode {
            kind,
            mode,
            rdev: 0,
            target: None,
            exclusive: true,
        }
    }
}

/// A fresh node id for a create (random in [`CLIENT_NODE_IDS`]).
pub fn new_node_id() -> NodeId {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        // No entropy source: time and a counter still make ids unique on this device.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        b = (t ^ N.fetch_add(1, Ordering::Relaxed).rotate_left(40)).to_le_bytes();
    }
    let span = CLIENT_NODE_IDS.end - CLIENT_NODE_IDS.start;
    CLIENT_NODE_IDS.start + u64::from_le_bytes(b) % span
}

fn refused(code: ErrorCode) -> FsError {
    FsError::Remote(RemoteError::Server(code.into()))
}

fn offline(what: &str) -> FsError {
    FsError::Remote(RemoteError::Disconnected(format!(
        "the server is unreachable and {what} cannot be done offline"
    )))
}

/// The request for a change; a replayed create is always exclusive (its node must be new).
fn request(op: &NsOp, replay: bool) -> Request {
    match op.clone() {
        NsOp::Make {
            parent,
            name,
            id,
            kind,
            mode,
            rdev,
            target,
            exclusive,
            ..
        } => match kind {
            NodeKind::Dir => Request::Mkdir {
                parent,
                name,
                mode,
                id: Some(id),
            },
            NodeKind::File => Request::Create {
                parent,
                name,
                mode,
                exclusive: exclusive || replay,
                id: Some(id),
            },
            NodeKind::Symlink => Request::Symlink {
                parent,
                name,
                target: target.unwrap_or_default(),
                id: Some(id),
            },
            kind => Request::Mknod {
                parent,
                name,
                kind,
                mode,
                rdev,
                id: Some(id),
            },
        },
        NsOp::Remove {
            parent,
            name,
            dir: false,
            expect,
        } => Request::Unlink {
            parent,
            name,
            expect,
        },
        NsOp::Remove {
            parent,
            name,
            dir: true,
            expect,
        } => Request::Rmdir {
            parent,
            name,
            expect,
        },
        NsOp::Rename {
            parent,
            name,
            new_parent,
            new_name,
            mode,
            expect,
        } => Request::Rename {
            parent,
            name,
            new_parent,
            new_name,
            mode,
            expect,
        },
        NsOp::SetAttr {
            node,
            mode,
            uid,
            gid,
            atime,
            mtime,
        } => Request::SetAttr {
            node,
            mode,
            uid,
            gid,
            atime,
            mtime,
        },
    }
}

/// One request doing `first` then `second`, when both change attributes of the same node
/// (each field as `second` leaves it).
fn merge_setattr(first: &Request, second: &Request) -> Option<Request> {
    match (first, second) {
        (
            Request::SetAttr {
                node,
                mode,
                uid,
                gid,
                atime,
                mtime,
            },
            Request::SetAttr {
                node: node2,
                mode: mode2,
                uid: uid2,
                gid: gid2,
                atime: atime2,
                mtime: mtime2,
            },
        ) if node == node2 => Some(Request::SetAttr {
            node: *node,
            mode: mode2.or(*mode),
            uid: uid2.or(*uid),
            gid: gid2.or(*gid),
            atime: atime2.or(*atime),
            mtime: mtime2.or(*mtime),
        }),
        _ => None,
    }
}

impl Pending {
    /// Opens the queue in the journal folder `dir`; changes left by a killed client are laid
    /// over the view again and replayed.
    pub fn open(dir: std::path::PathBuf) -> std::io::Result<Pending> {
        let log = OpLog::open(dir)?;
        let mut overlay = Overlay::default();
        for q in log.front_n(usize::MAX) {
            overlay.apply(&q.op, q.at, None);
        }
        if !log.is_empty() {
            tracing::info!(
                changes = log.len(),
                "namespace changes made offline will be replayed"
            );
        }
        Ok(Pending {
            active: AtomicBool::new(!overlay.is_empty()),
            pushed_into: AtomicBool::new(false),
            log,
            overlay: Mutex::new(overlay),
            work: Condvar::new(),
            progress: Condvar::new(),
            diverged: AtomicBool::new(false),
            aliases: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            unreachable: AtomicBool::new(false),
            tries: AtomicU64::new(0),
            sender_started: AtomicBool::new(false),
            kicked: AtomicBool::new(false),
            lingering: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Overlay> {
        self.overlay.lock_or_recover()
    }

    /// Changes waiting for the server.
    pub fn len(&self) -> usize {
        self.log.len()
    }

    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// Waits until no change is waiting, up to `timeout` (`None`: until stopped). Returns
    /// whether the queue is empty.
    pub fn wait_drained(&self, timeout: Option<Duration>) -> bool {
        self.wait_sent(u64::MAX, timeout)
    }

    /// The position the next change gets: [`Pending::wait_sent`] with it waits for every
    /// change made so far.
    pub fn next_seq(&self) -> u64 {
        self.log.next_seq()
    }

    /// Whether every change numbered below `before` is on the server.
    fn sent(&self, before: u64) -> bool {
        match self.log.front() {
            Some((seq, _)) => seq >= before,
            // Drained, and the overlay handed over to the caches (see `finish_if_drained`):
            // what a waiter reads next is the server's state, not the overlay's.
            None => !self.active.load(Ordering::Acquire),
        }
    }

    /// Waits until every change numbered below `before` is on the server, up to `timeout`
    /// (`None`: until stopped). Returns whether they are.
    pub fn wait_sent(&self, before: u64, timeout: Option<Duration>) -> bool {
        self.wait_sent_until(before, timeout, false)
    }

    /// [`Pending::wait_sent`], giving up once a try the sender makes after this call began
    /// finds the server unreachable (the sender is told to try at once, so an offline
    /// mount answers within one connection attempt, and a stale failure from before, a
    /// timeout under load say, does not fail the caller).
    pub fn wait_sent_reachable(&self, before: u64, timeout: Duration) -> bool {
        self.wait_sent_until(before, Some(timeout), true)
    }

    fn wait_sent_until(&self, before: u64, timeout: Option<Duration>, reachable: bool) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut g = self.lock();
        // Tries that ended before now (read under the lock the sender counts them in).
        let tried = self.tries.load(Ordering::Acquire);
        if timeout.is_some() && !self.sent(before) {
            // A caller in a hurry (fsync): the sender tries again at once.
            self.kicked.store(true, Ordering::Release);
            self.work.notify_all();
        }
        loop {
            if self.sent(before) {
                return true;
            }
            if self.stopping.load(Ordering::Acquire) {
                return false;
            }
            if reachable
                && self.unreachable.load(Ordering::Acquire)
                && self.tries.load(Ordering::Acquire) != tried
            {
                return false;
            }
            let wait = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    d - now
                }
                None => Duration::from_secs(1),
            };
            crate::blocking::about_to_block();
            g = self
                .progress
                .wait_timeout(g, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The sender's try ended: `reached` tells whether the server answered.
    fn tried(&self, reached: bool) {
        self.unreachable.store(!reached, Ordering::Release);
        let _g = self.lock();
        self.tries.fetch_add(1, Ordering::AcqRel);
        self.progress.notify_all();
    }

    /// The sender's pause: up to `length`, or until it stops, someone waits for the queue
    /// (the kick is taken), or `enough`.
    fn pause(&self, length: Duration, enough: impl Fn() -> bool) {
        let until = Instant::now() + length;
        let mut g = self.lock();
        while !self.stopping.load(Ordering::Acquire)
            && !self.kicked.swap(false, Ordering::AcqRel)
            && !enough()
        {
            let now = Instant::now();
            if now >= until {
                break;
            }
            g = self
                .work
                .wait_timeout(g, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _g = self.lock();
        self.work.notify_all();
        self.progress.notify_all();
    }

    /// The server's id of a node (a folder made offline may have been merged).
    pub fn alias(&self, node: NodeId) -> NodeId {
        if node < CLIENT_NODE_IDS.start {
            return node;
        }
        self.aliases
            .lock_or_recover()
            .get(&node)
            .copied()
            .unwrap_or(node)
    }
}

impl FsCore {
    /// Makes a namespace change. Write-back: applied here, journaled and answered at once;
    /// the sender ([`FsCore::replay_loop`]) streams it to the server in order, many per
    /// round trip. A change this mount cannot judge alone (see [`FsCore::judged_here`]) goes
    /// to the server itself once every change before it is there, or, while the server
    /// cannot be reached, is queued on what this mount has seen.
    pub(crate) fn ns_change(&self, op: NsOp) -> Result<Applied, FsError> {
        match self.queue_change(op.clone(), true) {
            Ok(Some(attr)) => return Ok(Applied::Queued(attr)),
            // Not to be judged here: to the server, below.
            Ok(None) => {}
            // The journal cannot take it (a full cache disk): straight to the server then,
            // so that deleting files to make room works.
            Err(FsError::Io(e)) => {
                tracing::warn!(error = %e, "cannot journal a change; sending it directly")
            }
            Err(e) => return Err(e),
        }
        if !self.pending.unreachable.load(Ordering::Acquire)
            && self.pending.wait_sent(u64::MAX, Some(SETTLE))
        {
            match Sent::send(&self.remote, &op) {
                Ok(r) => return Ok(Applied::Sent(r)),
                Err(e) if e.is_transient() => {
                    tracing::info!(error = %e, "the server is unreachable: changes are kept here and sent when it is back");
                }
                Err(e) => return Err(e.into()),
            }
        }
        match self.queue_change(op, false)? {
            Some(attr) => Ok(Applied::Queued(attr)),
            None => Err(FsError::Unexpected("queueing a change")),
        }
    }

    /// Waits until every change made so far is on the server, for a call that needs the
    /// server to know them (a hard link, an extended attribute, a lock). `Err` while it
    /// cannot be reached.
    pub(crate) fn settle(&self) -> Result<(), FsError> {
        match self.pending.wait_sent_reachable(u64::MAX, SETTLE) {
            true => Ok(()),
            false => Err(offline("this")),
        }
    }

    /// Whether every change made so far reaches the server within `timeout`; `false` at
    /// once while the sender finds the server unreachable.
    pub(crate) fn settle_within(&self, timeout: Duration) -> bool {
        self.pending
            .wait_sent_reachable(self.pending.next_seq(), timeout)
    }

    /// [`FsCore::settle`] when `node` was made here and its create may not have reached
    /// the server yet.
    pub(crate) fn settle_node(&self, node: NodeId) -> Result<(), FsError> {
        match self.overlay_created(node) {
            true => self.settle(),
            false => Ok(()),
        }
    }

    /// Another device changed `nodes` (applied from the change feed): if the overlay shows
    /// any of them, the drain trusts nothing it showed.
    pub(crate) fn note_pushed(&self, nodes: &[NodeId]) {
        if !self.pending.active.load(Ordering::Acquire) {
            return;
        }
        let ov = self.pending.lock();
        if nodes
            .iter()
            .any(|n| ov.attrs.contains_key(n) || ov.names.contains_key(n))
        {
            self.pending.pushed_into.store(true, Ordering::Release);
        }
    }

    /// The feed was trimmed or fell behind (a resync): anything may have changed.
    pub(crate) fn note_pushed_anywhere(&self) {
        if self.pending.active.load(Ordering::Acquire) {
            self.pending.pushed_into.store(true, Ordering::Release);
        }
    }

    /// Whether the server will accept `op` as this mount applies it, as far as anyone can
    /// tell before asking: the names it touches are known here (the kernel looks a name up
    /// before it creates, removes or renames it), a folder it removes or replaces was
    /// listed here, and a rename stays in one folder (a move may cross into a share, which
    /// only the server can tell). Other devices' changes meanwhile are conflicts, settled
    /// as for changes made offline.
    fn judged_here(&self, ov: &Overlay, op: &NsOp) -> bool {
        let emptiness_known = |dir: NodeId| {
            ov.created.contains(&dir)
                || self.seen.listing_known(dir)
                || self
                    .view_attr(ov, dir)
                    .is_some_and(|a| a.kind != NodeKind::Dir)
        };
        match op {
            NsOp::Make { .. } => true,
            NsOp::Remove {
                parent, name, dir, ..
            } => match self.view_entry(ov, *parent, name) {
                None => false,
                Some(node) => !*dir || emptiness_known(node),
            },
            NsOp::Rename {
                parent,
                name,
                new_parent,
                new_name,
                mode,
                ..
            } => {
                *mode != RenameMode::Exchange
                    && parent == new_parent
                    && self.view_entry(ov, *parent, name).is_some()
                    && self
                        .view_entry(ov, *new_parent, new_name)
                        .is_none_or(emptiness_known)
            }
            NsOp::SetAttr { node, .. } => self.view_attr(ov, *node).is_some(),
        }
    }

    /// The node `name` in `dir` names in this mount's view, as far as it is known.
    fn view_entry(&self, ov: &Overlay, dir: NodeId, name: &str) -> Option<NodeId> {
        match ov.entry(dir, name) {
            Some(e) => e,
            None => self.seen.entry(dir, name),
        }
    }

    fn view_attr(&self, ov: &Overlay, node: NodeId) -> Option<Attr> {
        ov.attrs
            .get(&node)
            .cloned()
            .or_else(|| self.stale_attr(node))
    }

    /// Whether a directory is known to hold entries in this mount's view.
    fn view_nonempty(&self, ov: &Overlay, dir: NodeId) -> bool {
        let added = ov.names.get(&dir);
        if added.is_some_and(|d| d.values().any(Option::is_some)) {
            return true;
        }
        self.seen.dir(dir).is_some_and(|names| {
            names
                .keys()
                .any(|n| added.is_none_or(|d| d.get(n) != Some(&None)))
        })
    }

    /// Checks a change against this mount's view, journals it and lays it over the view.
    /// The folders a queued change touches get its time as mtime and ctime (and a folder
    /// made or removed in them changes their link count) in the overlay, so their
    /// attributes stay answerable here instead of being asked of a server that does not
    /// have the change yet.
    fn touch_folders(&self, ov: &mut Overlay, op: &NsOp, now: Timestamp) {
        let is_dir = |n: &Option<NodeId>| {
            n.and_then(|n| self.view_attr(ov, n))
                .is_some_and(|a| a.kind == NodeKind::Dir)
        };
        let touched: Vec<(NodeId, i64)> = match op {
            NsOp::Make { parent, kind, .. } => {
                vec![(*parent, i64::from(*kind == NodeKind::Dir))]
            }
            NsOp::Remove { parent, dir, .. } => vec![(*parent, -i64::from(*dir))],
            NsOp::Rename {
                parent,
                new_parent,
                expect,
                ..
            } if parent != new_parent => {
                let d = i64::from(is_dir(expect));
                vec![(*parent, -d), (*new_parent, d)]
            }
            NsOp::Rename { parent, .. } => vec![(*parent, 0)],
            NsOp::SetAttr { .. } => Vec::new(),
        };
        // A rename is a status change of the moved node too.
        if let NsOp::Rename {
            expect: Some(node), ..
        } = op
        {
            if let Some(mut a) = self.view_attr(ov, *node) {
                a.ctime = now;
                ov.attrs.insert(*node, a);
            }
        }
        for (dir, links) in touched {
            match ov.attrs.get(&dir).cloned().or_else(|| self.stale_attr(dir)) {
                Some(mut a) => {
                    a.mtime = now;
                    a.ctime = now;
                    a.nlink = (i64::from(a.nlink) + links).max(2) as u32;
                    ov.attrs.insert(dir, a);
                }
                None => self.forget_attr(dir),
            }
        }
    }

    /// `Ok(None)` when `judge` asks whether this mount can judge the change alone and it
    /// cannot ([`FsCore::judged_here`]; nothing is queued then); else the attributes of a
    /// made or changed node.
    fn queue_change(&self, mut op: NsOp, judge: bool) -> Result<Option<Option<Attr>>, FsError> {
        let mut ov = self.pending.lock();
        if judge && !self.judged_here(&ov, &op) {
            return Ok(None);
        }
        let mut base = None;
        let mut gone = None;
        match &mut op {
            NsOp::Make { parent, name, .. } => {
                if self.view_entry(&ov, *parent, name).is_some() {
                    return Err(refused(ErrorCode::Exists));
                }
            }
            NsOp::Remove {
                parent,
                name,
                dir,
                expect,
            } => {
                let node = self
                    .view_entry(&ov, *parent, name)
                    .ok_or(FsError::NotFound)?;
                let attr = self.view_attr(&ov, node);
                if let Some(a) = &attr {
                    match (*dir, a.kind == NodeKind::Dir) {
                        (true, false) => return Err(refused(ErrorCode::NotDir)),
                        (false, true) => return Err(refused(ErrorCode::IsDir)),
                        (true, true) if self.view_nonempty(&ov, node) => {
                            return Err(refused(ErrorCode::NotEmpty))
                        }
                        _ => {}
                    }
                }
                *expect = Some(Expect {
                    node,
                    version: attr.filter(|a| a.kind == NodeKind::File).map(|a| a.version),
                });
                gone = Some(node);
            }
            NsOp::Rename {
                parent,
                name,
                new_parent,
                new_name,
                mode,
                expect,
            } => {
                if *mode == RenameMode::Exchange {
                    return Err(offline("an exchanging rename"));
                }
                let node = self
                    .view_entry(&ov, *parent, name)
                    .ok_or(FsError::NotFound)?;
                if (*parent, name.as_str()) == (*new_parent, new_name.as_str()) {
                    return Ok(Some(None));
                }
                if let Some(target) = self.view_entry(&ov, *new_parent, new_name) {
                    if *mode == RenameMode::NoReplace {
                        return Err(refused(ErrorCode::Exists));
                    }
                    if target == node {
                        return Ok(Some(None));
                    }
                    let is_dir = |n| {
                        self.view_attr(&ov, n)
                            .map(|a| a.kind == NodeKind::Dir)
                            .unwrap_or(false)
                    };
                    match (is_dir(node), is_dir(target)) {
                        (true, false) => return Err(refused(ErrorCode::NotDir)),
                        (false, true) => return Err(refused(ErrorCode::IsDir)),
                        (true, true) if self.view_nonempty(&ov, target) => {
                            return Err(refused(ErrorCode::NotEmpty))
                        }
                        _ => {}
                    }
                    gone = Some(target);
                }
                *expect = Some(node);
            }
            NsOp::SetAttr { node, .. } => {
                base = Some(
                    self.view_attr(&ov, *node)
                        .ok_or_else(|| offline("changing a file never seen here"))?,
                );
            }
        }
        // One time for the change everywhere: the overlay shows it, and the server stamps
        // the change with it (see `shelf_protocol::Stamped`), so nothing shifts when the
        // change lands.
        let at = match &op {
            NsOp::Make { at, .. } => *at,
            _ => Timestamp::now(),
        };
        self.pending.log.push(op.clone(), at)?;
        ov.apply(&op, at, base);
        self.touch_folders(&mut ov, &op, at);
        // A file's other names (or its open descriptors) see one link less, and a status
        // change, as the server will.
        let removed_at = match &op {
            NsOp::Remove { parent, name, .. } => Some((*parent, name.as_str())),
            NsOp::Rename {
                new_parent,
                new_name,
                ..
            } => Some((*new_parent, new_name.as_str())),
            _ => None,
        };
        let unlinked = gone.and_then(|node| {
            let mut a = self
                .view_attr(&ov, node)
                .filter(|a| a.kind != NodeKind::Dir)?;
            a.nlink = a.nlink.saturating_sub(1);
            // A file this mount knows by another name keeps a link, whatever an older count
            // says (a commit's answer that left the server before a link was made). Told
            // "no links", the kernel refuses to link the file again (ENOENT, without asking):
            // git clone then copied every object after the first.
            if a.nlink == 0
                && removed_at.is_some_and(|(d, n)| self.seen.named_elsewhere(node, d, n))
            {
                a.nlink = 1;
            }
            a.ctime = at;
            ov.attrs.insert(node, a.clone());
            Some(a)
        });
        self.pending.active.store(true, Ordering::Release);
        let attr = match &op {
            NsOp::Make { id, .. } => ov.attrs.get(id).cloned(),
            NsOp::SetAttr { node, .. } => ov.attrs.get(node).cloned(),
            _ => None,
        };
        if !self.pending.lingering.load(Ordering::Acquire) || self.pending.log.len() >= BATCH {
            self.pending.work.notify_all();
        }
        drop(ov);
        self.background.note_unsynced();
        // The rest of the mount's caches follow the change too.
        match &op {
            NsOp::Make {
                parent,
                name,
                id,
                kind,
                ..
            } => {
                self.seen.remember(*parent, name, *id);
                if *kind == NodeKind::Dir {
                    self.seen.remember_listing(*id, BTreeMap::new());
                }
            }
            NsOp::Remove { parent, name, .. } => {
                self.seen.forget(*parent, name);
            }
            NsOp::Rename {
                parent,
                name,
                new_parent,
                new_name,
                expect,
                mode,
            } => self.seen.rename(
                (*parent, name),
                (*new_parent, new_name),
                *expect,
                *mode == RenameMode::Exchange,
            ),
            NsOp::SetAttr { .. } => {}
        }
        if let Some(node) = gone {
            // A hard-linked file keeps its content for its other names.
            match &unlinked {
                Some(a) if a.nlink > 0 => {}
                Some(_) => self.drop_local(node),
                None => {
                    if self.stale_attr(node).is_none_or(|a| a.nlink <= 1) {
                        self.drop_local(node);
                    }
                    self.forget_attr(node);
                }
            }
        }
        Ok(Some(attr))
    }

    /// `Some(answer)` when queued changes decide what `name` in `dir` is.
    pub(crate) fn overlay_entry(&self, dir: NodeId, name: &str) -> Option<Option<NodeId>> {
        if !self.pending.active.load(Ordering::Acquire) {
            return None;
        }
        self.pending.lock().entry(dir, name)
    }

    /// Attributes set by queued changes.
    pub(crate) fn overlay_attr(&self, node: NodeId) -> Option<Attr> {
        if !self.pending.active.load(Ordering::Acquire) {
            return None;
        }
        self.pending.lock().attrs.get(&node).cloned()
    }

    pub(crate) fn overlay_target(&self, node: NodeId) -> Option<String> {
        if !self.pending.active.load(Ordering::Acquire) {
            return None;
        }
        self.pending.lock().targets.get(&node).cloned()
    }

    /// Whether `dir` was made by a queued change (the server does not know it yet).
    pub(crate) fn overlay_created(&self, node: NodeId) -> bool {
        self.pending.active.load(Ordering::Acquire) && self.pending.lock().created.contains(&node)
    }

    /// Lays queued changes over a directory listing: `(name, node)` pairs to drop or add.
    pub(crate) fn overlay_listing(&self, dir: NodeId) -> Option<BTreeMap<String, Option<NodeId>>> {
        if !self.pending.active.load(Ordering::Acquire) {
            return None;
        }
        self.pending.lock().names.get(&dir).cloned()
    }

    /// Waits (up to `timeout`; `None`: until stopped) until no namespace change is queued.
    pub(crate) fn wait_changes_sent(&self, timeout: Option<Duration>) -> bool {
        self.pending.wait_drained(timeout)
    }

    /// Sends queued changes in order, up to [`BATCH`] per round trip, with backoff while
    /// the server cannot be reached.
    pub(crate) fn replay_loop(&self) {
        let mut backoff = shelf_protocol::sync::Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        loop {
            {
                let mut g = self.pending.lock();
                while self.pending.log.is_empty() && !self.pending.stopping.load(Ordering::Acquire)
                {
                    g = self.pending.work.wait(g).unwrap_or_else(|p| p.into_inner());
                }
            }
            if self.pending.stopping.load(Ordering::Acquire) {
                return;
            }
            self.linger();
            // Small files closed meanwhile go with the batch (their creates are in it or
            // sent): taken before the batch, so that every create before them is in it.
            let queued = self.queue.peek(super::fold::FOLD_MAX);
            let ops = self.pending.log.front_n(BATCH);
            if ops.is_empty() {
                continue;
            }
            let folds = self.fold_uploads(&ops, &queued, ops.len() < BATCH);
            let (done, result) = self.send_batch(&ops, folds);
            if !done.is_empty() {
                if let Err(e) = self.pending.log.done_many(&done) {
                    // Done in memory all the same; a restarted client would send them again,
                    // which is harmless (replays are idempotent).
                    tracing::warn!(error = %e, "cannot record sent changes in the journal");
                }
                self.background.note_unsynced();
                self.finish_if_drained();
                {
                    let _g = self.pending.lock();
                    self.pending.progress.notify_all();
                }
            }
            self.pending
                .tried(!matches!(&result, Err(e) if e.is_transient()));
            match result {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    let wait = backoff.next_wait();
                    tracing::info!(error = %e, waiting = self.pending.len(), retry_in = ?wait, "namespace changes wait for the server");
                    // New changes do not cut the wait short; stopping and a waiting fsync do.
                    self.pending.pause(wait, || false);
                }
            }
        }
    }

    /// Waits a moment for more changes before a batch goes (a burst then goes as a few
    /// large batches, each one server transaction and flush), unless the batch is full or
    /// someone waits for it (fsync, a change that needs the server's answer).
    fn linger(&self) {
        self.pending.lingering.store(true, Ordering::Release);
        self.pending
            .pause(LINGER, || self.pending.log.len() >= BATCH);
        self.pending.lingering.store(false, Ordering::Release);
    }

    /// Sends `ops` (the oldest queued) as one batch, with the commits of `folds` after
    /// them. The first change the server refuses, and everything after it, is left to
    /// [`FsCore::replay_one`], which settles conflicts; a fold the batch did not make, to the
    /// uploaders. Returns the changes done, and `Err` when the rest should be tried again
    /// later.
    fn send_batch(
        &self,
        ops: &[Queued],
        folds: Vec<super::fold::Folded>,
    ) -> (Vec<u64>, Result<(), RemoteError>) {
        let mut done = Vec::new();
        // Attribute changes of one node in a row (tar's chown, chmod and utimens of each
        // file) go as one request; `groups[i]` is how many queued changes request i carries.
        let mut reqs: Vec<Stamped> = Vec::with_capacity(ops.len());
        let mut groups: Vec<usize> = Vec::with_capacity(ops.len());
        for q in ops {
            let req = request(&self.aliased(&q.op), true);
            if let (Some(last), Some(n)) = (reqs.last_mut(), groups.last_mut()) {
                if let Some(merged) = merge_setattr(&last.req, &req) {
                    *last = Stamped {
                        at: q.at,
                        req: merged,
                    };
                    *n += 1;
                    continue;
                }
            }
            reqs.push(Stamped { at: q.at, req });
            groups.push(1);
        }
        let changes = reqs.len();
        reqs.extend(folds.iter().map(|f| Stamped {
            at: Timestamp::now(),
            req: f.request(),
        }));
        let answers = self.remote.batch(reqs);
        for (i, f) in folds.into_iter().enumerate() {
            let made = answers.as_ref().ok().and_then(|a| a.attr(changes + i));
            self.fold_done(f, made);
        }
        let answers = match answers {
            Ok(a) => a,
            Err(e) => return (done, Err(e)),
        };
        let mut at = 0;
        for (i, n) in groups.iter().enumerate() {
            if !answers.made(i) {
                break;
            }
            for q in &ops[at..at + n] {
                // A rename that replaced a file: its local copy goes.
                if let (NsOp::Rename { .. }, Some(Some(replaced))) = (&q.op, answers.removed(i)) {
                    self.drop_local(replaced);
                }
                done.push(q.seq);
            }
            at += n;
        }
        // The change the server refused goes alone, by the rules for replays: a name taken
        // meanwhile, a folder deleted, an answer lost (the rest of its group follows with
        // the next batch).
        let Some(q) = ops.get(done.len()) else {
            return (done, Ok(()));
        };
        if (0..changes.min(answers.len())).all(|i| answers.made(i)) {
            // Not tried (the server stopped early): sent again with the next batch.
            return (done, Ok(()));
        }
        match self.replay_one(&q.op) {
            Ok(()) => {
                done.push(q.seq);
                (done, Ok(()))
            }
            Err(e) => (done, Err(e)),
        }
    }

    /// `op` with every node id the server knows by another (merged folders made offline).
    fn aliased(&self, op: &NsOp) -> NsOp {
        let a = |n: NodeId| self.pending.alias(n);
        let mut op = op.clone();
        match &mut op {
            NsOp::Make { parent, .. } => *parent = a(*parent),
            NsOp::Remove { parent, expect, .. } => {
                *parent = a(*parent);
                if let Some(e) = expect {
                    e.node = a(e.node);
                }
            }
            NsOp::Rename {
                parent,
                new_parent,
                expect,
                ..
            } => {
                *parent = a(*parent);
                *new_parent = a(*new_parent);
                *expect = expect.map(a);
            }
            NsOp::SetAttr { node, .. } => *node = a(*node),
        }
        op
    }

    /// Once the queue is empty the server's view is the truth again and the overlay goes.
    /// When a replay ended differently than the change was made here (a conflicted name, a
    /// merged folder, a change not applied), the kernel forgets every entry and attribute it
    /// answered from; otherwise the server holds what the overlay showed.
    fn finish_if_drained(&self) {
        let overlay = {
            let mut g = self.pending.lock();
            if !self.pending.log.is_empty() {
                return;
            }
            self.pending.active.store(false, Ordering::Release);
            self.pending.progress.notify_all();
            std::mem::take(&mut *g)
        };
        // What the overlay showed is what the server now holds (the same changes, stamped
        // with the same times): it stays cached, so a change judged against it a moment ago
        // still finds the node and a stat asks nothing. Unless a replay ended differently.
        // Another device's change while the overlay was showing may have touched a folder it
        // shows (a new name beside ours): then nothing of it is trusted.
        let pushed = self.pending.pushed_into.swap(false, Ordering::AcqRel);
        let diverged = self.pending.diverged.swap(false, Ordering::AcqRel) || pushed;
        for attr in overlay.attrs.values() {
            match diverged {
                false => self.remember_sent(attr.clone()),
                true => {
                    self.remember_expired(attr.clone());
                }
            }
        }
        if !diverged {
            return;
        }
        tracing::info!(
            pushed,
            "changes made here ended differently on the server, or another device changed \
             things meanwhile: cached names are checked again"
        );
        self.coherence.advance();
        for (dir, names) in &overlay.names {
            let dir = self.pending.alias(*dir);
            self.forget_attr(dir);
            self.virtuals.forget_listing(dir);
            self.kernel_inode(dir, false);
            // Its names are not all known any more.
            self.seen.unlist(dir);
            for name in names.keys() {
                self.seen.forget(dir, name);
                self.kernel_entry(dir, name);
            }
        }
        for node in overlay.attrs.keys() {
            self.kernel_inode(*node, false);
        }
    }

    /// Sends one queued change. `Err` only when it should be tried again later; a refusal
    /// ends its replay (what it would have changed stays as it is: nothing is lost).
    fn replay_one(&self, op: &NsOp) -> Result<(), RemoteError> {
        let a = |n: NodeId| self.pending.alias(n);
        match op {
            NsOp::Make { .. } => self.replay_make(op),
            NsOp::Remove {
                parent,
                name,
                dir,
                expect,
            } => {
                let op = NsOp::Remove {
                    parent: a(*parent),
                    name: name.clone(),
                    dir: *dir,
                    expect: expect.map(|e| Expect {
                        node: a(e.node),
                        version: e.version,
                    }),
                };
                match Sent::send_as(&self.remote, &op, true) {
                    Ok(_) => Ok(()),
                    Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(()),
                    Err(e) => self.not_applied(e, "delete", name),
                }
            }
            NsOp::Rename {
                parent,
                name,
                new_parent,
                new_name,
                mode,
                expect,
            } => {
                let (parent, new_parent, expect) = (a(*parent), a(*new_parent), expect.map(a));
                let mut target = new_name.clone();
                for attempt in 0..MAX_NAME_TRIES {
                    let op = NsOp::Rename {
                        parent,
                        name: name.clone(),
                        new_parent,
                        new_name: target.clone(),
                        mode: *mode,
                        expect,
                    };
                    match Sent::send_as(&self.remote, &op, true) {
                        Ok(sent) => {
                            if let Sent::Removed(Some(replaced)) = sent {
                                self.drop_local(replaced);
                            }
                            if attempt > 0 {
                                self.note_renamed(name, &target);
                            }
                            return Ok(());
                        }
                        Err(e) if e.code() == Some(ErrorCode::Exists) => {
                            target = self.conflicted(new_name, attempt);
                        }
                        Err(e) if e.code() == Some(ErrorCode::NotFound) => {
                            // Applied before, with the answer lost? Then the node is there.
                            return match self.remote.lookup(new_parent, &target) {
                                Ok(found) if Some(found.node) == expect => Ok(()),
                                Err(t) if t.is_transient() => Err(t),
                                _ => self.not_applied(e, "rename", name),
                            };
                        }
                        Err(e) => return self.not_applied(e, "rename", name),
                    }
                }
                self.not_applied(
                    RemoteError::Server(ErrorCode::Exists.into()),
                    "rename",
                    name,
                )
            }
            NsOp::SetAttr {
                node,
                mode,
                uid,
                gid,
                atime,
                mtime,
            } => {
                let op = NsOp::SetAttr {
                    node: a(*node),
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                    atime: *atime,
                    mtime: *mtime,
                };
                match Sent::send_as(&self.remote, &op, true) {
                    Ok(_) => Ok(()),
                    Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(()),
                    Err(e) => self.not_applied(e, "attribute change", "a file"),
                }
            }
        }
    }

    /// Replays a create: under its own name, else (taken meanwhile) a conflicted-copy name,
    /// or merged into the existing folder; at the top of the store if its folder is gone.
    fn replay_make(&self, op: &NsOp) -> Result<(), RemoteError> {
        let NsOp::Make {
            parent,
            name,
            id,
            kind,
            ..
        } = op
        else {
            return Ok(());
        };
        let mut parent = self.pending.alias(*parent);
        let mut target = name.clone();
        for attempt in 0..MAX_NAME_TRIES {
            let mut attempt_op = op.clone();
            if let NsOp::Make {
                parent: p, name: n, ..
            } = &mut attempt_op
            {
                *p = parent;
                *n = target.clone();
            }
            match Sent::send_as(&self.remote, &attempt_op, true) {
                Ok(Sent::Attr(a)) if a.node == *id => {
                    if target != *name {
                        self.note_renamed(name, &target);
                    }
                    return Ok(());
                }
                Ok(_) => {
                    return Err(RemoteError::Protocol(
                        "a create answered another node".into(),
                    ))
                }
                Err(e) if e.code() == Some(ErrorCode::Exists) => {
                    if *kind == NodeKind::Dir {
                        match self.remote.lookup(parent, &target) {
                            Ok(found) if found.kind == NodeKind::Dir => {
                                tracing::info!(folder = %target, "a folder made offline exists on the server too: merged");
                                {
                                    let mut al = self.pending.aliases.lock_or_recover();
                                    al.insert(*id, found.node);
                                }
                                self.pending.diverged.store(true, Ordering::Release);
                                return Ok(());
                            }
                            Err(t) if t.is_transient() => return Err(t),
                            _ => {}
                        }
                    }
                    target = self.conflicted(name, attempt);
                }
                Err(e) if e.code() == Some(ErrorCode::NotFound) && parent != self.root => {
                    tracing::warn!(name = %name, "the folder of a file made offline was deleted on another device; keeping it at the top of the store");
                    parent = self.root;
                    target = self.conflicted(name, attempt);
                }
                Err(e) => return self.not_applied(e, "create", name),
            }
        }
        self.not_applied(
            RemoteError::Server(ErrorCode::Exists.into()),
            "create",
            name,
        )
    }

    fn conflicted(&self, name: &str, attempt: u32) -> String {
        let device = match attempt {
            0 => self.opts.device.clone(),
            n => format!("{} {}", self.opts.device, n + 1),
        };
        conflict_name(name, Timestamp::now(), &device)
    }

    fn note_renamed(&self, name: &str, now: &str) {
        tracing::warn!(name = %name, kept_as = %now, "the name was taken on another device meanwhile: the change made offline was kept under another name");
        self.pending.diverged.store(true, Ordering::Release);
    }

    /// A queued change the server refused. Space and server failures are retried (the change
    /// may still carry data); anything else is given up, leaving the server's state as it is.
    fn not_applied(&self, e: RemoteError, what: &str, name: &str) -> Result<(), RemoteError> {
        let retry = e.is_transient()
            || matches!(
                e.code(),
                Some(
                    ErrorCode::NoSpace
                        | ErrorCode::QuotaExceeded
                        | ErrorCode::Internal
                        | ErrorCode::SessionExpired
                        | ErrorCode::AuthRequired
                )
            );
        if retry {
            return Err(e);
        }
        tracing::warn!(name = %name, error = %e, "a {what} made offline was not applied: another device changed the same file or folder meanwhile");
        crate::cache::append_event(
            &self.cache.root,
            "failed",
            name,
            &format!("{what} made offline not applied ({e}): changed on another device meanwhile"),
        );
        self.pending.diverged.store(true, Ordering::Release);
        Ok(())
    }
}

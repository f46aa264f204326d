//! The filesystem core: every filesystem operation as a plain method returning
//! `Result<_, FsError>`, independent of fuser and of the kernel, so tests drive it without a
//! mount. The fuser adapter (`crate::fuse`) only translates.
//!
//! * Inode numbers are server node ids, except the account's root, which is inode 1.
//! * Namespace changes (mkdir, create, rename, unlink, …) are write-back: applied here,
//!   journaled and streamed to the server in order by one sender ([`pending`]).
//! * File content is write-back ([`files`]): writes land in a local staging file, `close`
//!   records the file in the journal, and the uploader ([`upload`]) commits it later.
//! * Reads of files without local content fetch only the chunks they touch and keep them in
//!   the chunk cache.

pub mod aligned;
pub mod attr_cache;
pub mod background;
mod clean_copies;
pub mod coherence;
mod error;
pub mod files;
mod fold;
mod handles;
pub mod locks;
pub mod offline;
pub mod pending;
pub mod permission;
pub mod pins;
pub mod prefetch;
pub mod refused;
pub mod upload;
mod upload_failures;
pub mod versions;
pub mod write_behind;

pub use error::FsError;

use crate::cache::chunks::ChunkCache;
use crate::cache::journal::Journal;
use crate::cache::oplog::NsOp;
use crate::cache::CacheDir;
use crate::remote::Remote;
use shelf_protocol::category::CATEGORY_XATTR;
use shelf_protocol::names::{validate_name, VERSIONS_DIR};
use shelf_protocol::{Attr, NodeId, NodeKind, RenameMode, Request, Timestamp, XattrMode};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The inode number the kernel uses for the root.
pub const ROOT_INO: u64 = 1;
/// How long the core (and, without the change feed, the kernel) may trust attributes and
/// names without asking again.
pub const TTL: Duration = Duration::from_secs(1);
/// How long the kernel may keep names and attributes while the mount follows the server's
/// change feed, which tells it of every other change as it happens (see
/// [`FsCore::kernel_ttl`]).
pub const FOLLOWED_TTL: Duration = Duration::from_secs(60);
/// Entries per directory page requested from the server.
const DIR_PAGE: u32 = 1024;

/// Attributes as the kernel wants them, without fuser types.
#[derive(Clone, Debug, PartialEq)]
pub struct Stat {
    pub ino: u64,
    pub kind: NodeKind,
    pub perm: u16,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
}

/// What a setattr changes (`None`: leave as is).
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
    /// The caller's group when the caller is not root (`None`: root). An unprivileged
    /// size change clears set-ID bits, as a write does on Linux.
    pub unprivileged: Option<u32>,
}

/// One entry of an open directory.
#[derive(Clone, Debug)]
pub struct DirItem {
    pub name: String,
    pub stat: Stat,
}

/// Filesystem figures for statfs.
#[derive(Clone, Debug)]
pub struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub bsize: u32,
}

/// Mount-time choices.
#[derive(Clone, Debug)]
pub struct CoreOptions {
    pub uid: u32,
    pub gid: u32,
    pub read_only: bool,
    /// Bytes of downloaded chunks kept on disk.
    pub chunk_cache_bytes: u64,
    /// Offer local I/O on staging files (kernel passthrough) to the adapter.
    pub passthrough: bool,
    /// This device's name (in conflicted-copy names of changes made offline).
    pub device: String,
}

pub struct FsCore {
    pub(crate) remote: Arc<Remote>,
    root: NodeId,
    opts: CoreOptions,
    pub(crate) cache: CacheDir,
    /// Staging files made from stock and deleted in the background.
    pub(crate) staging_files: crate::cache::staging_files::StagingFiles,
    pub(crate) chunks: ChunkCache,
    pub(crate) journal: Journal,
    /// Local state of files with staging content or open handles, one lock each.
    pub(crate) files: files::FileStates,
    /// Recently seen server attributes ([`attr_cache`]).
    pub(crate) attrs: attr_cache::AttrCache,
    /// Open file and directory handles.
    pub(crate) handles: handles::Handles,
    /// (version, size) of each file when it was last opened, to decide keep_cache.
    opened: files::LastOpened,
    pub(crate) manifests: files::Manifests,
    /// What the background threads share ([`background`]).
    pub(crate) background: background::Background,
    pub(crate) queue: upload::Queue,
    /// Clean local copies (staging files already committed), least recently used first,
    /// with their sizes; evicted beyond the cache budget.
    pub(crate) clean: clean_copies::CleanCopies,
    /// The virtual `.versions/` folders and their entries.
    pub(crate) virtuals: versions::Virtuals,
    /// Pinned files and folders (kept fully cached).
    pub(crate) pins: pins::Pins,
    /// The change feed's state and the kernel's caches ([`coherence`]).
    pub(crate) coherence: coherence::Coherence,
    /// Read-ahead under way.
    pub(crate) prefetch: prefetch::Prefetch,
    /// Large files being written, whose chunks go out before they are closed.
    pub(crate) write_behind: write_behind::WriteBehind,
    /// Names seen per directory, for offline lookups and listings.
    pub(crate) seen: offline::SeenNames,
    /// Background uploads that keep failing ([`upload_failures`]).
    pub(crate) failures: upload_failures::UploadFailures,
    /// (file, lock owner) pairs that hold a lease on the server.
    pub(crate) held_locks: locks::HeldLocks,
    /// Whether opens may be given local I/O (cleared when the kernel refuses it).
    pub(crate) passthrough: AtomicBool,
    /// Namespace changes waiting for the server, and what they did to the view.
    pub(crate) pending: pending::Pending,
    /// Files whose content the server refused for good and that were kept elsewhere
    /// ([`refused`]), until an fsync reports it.
    pub(crate) refused: refused::Refusals,
}

fn name_str(name: &std::ffi::OsStr) -> Result<&str, FsError> {
    name.to_str().ok_or(FsError::Invalid)
}

fn check_name(name: &std::ffi::OsStr) -> Result<&str, FsError> {
    let s = name_str(name)?;
    validate_name(s)
        .map_err(|code| FsError::Remote(crate::remote::RemoteError::Server(code.into())))?;
    Ok(s)
}

impl FsCore {
    /// A core over a logged-in `remote` whose session root is `root`.
    pub fn new(
        remote: Arc<Remote>,
        root: Attr,
        cache: CacheDir,
        opts: CoreOptions,
    ) -> Result<Arc<FsCore>, FsError> {
        let chunks = ChunkCache::open(cache.chunks(), opts.chunk_cache_bytes)?;
        let journal = Journal::open(cache.journal())?;
        let pending = pending::Pending::open(cache.journal())?;
        let staging_files =
            crate::cache::staging_files::StagingFiles::open(&cache.root.join("spare"))?;
        let budget = opts.chunk_cache_bytes;
        let core = Arc::new(FsCore {
            staging_files,
            pending,
            refused: refused::Refusals::default(),
            passthrough: AtomicBool::new(opts.passthrough),
            virtuals: versions::Virtuals::default(),
            pins: pins::Pins::load(&cache.root.join("pins")),
            coherence: coherence::Coherence::default(),
            held_locks: locks::HeldLocks::default(),
            failures: upload_failures::UploadFailures::default(),
            seen: offline::SeenNames::default(),
            prefetch: prefetch::Prefetch::default(),
            write_behind: Default::default(),
            remote,
            root: root.node,
            opts,
            chunks,
            journal,
            cache,
            files: files::FileStates::default(),
            attrs: attr_cache::AttrCache::default(),
            handles: handles::Handles::default(),
            opened: files::LastOpened::default(),
            manifests: files::Manifests::default(),
            background: background::Background::default(),
            queue: upload::Queue::default(),
            clean: clean_copies::CleanCopies::new(budget),
        });
        core.remember(root);
        core.replay_journal()?;
        Ok(core)
    }

    pub fn read_only(&self) -> bool {
        self.opts.read_only
    }

    /// How long the kernel may keep the names and attributes it is given. While the change
    /// feed is followed, every other device's change drops them at once (and a feed that
    /// cannot resume drops them all), and this mount's own changes go through the kernel:
    /// they may be kept long, as on a local disk, and a warm `ls -lR` or `rm -r` asks
    /// nothing. Without the feed: [`TTL`].
    pub fn kernel_ttl(&self) -> Duration {
        match self.coherence.keeps_kernel_true() {
            true => FOLLOWED_TTL,
            false => TTL,
        }
    }

    pub(crate) fn node_of(&self, ino: u64) -> NodeId {
        if ino == ROOT_INO {
            self.root
        } else {
            self.pending.alias(ino)
        }
    }

    pub(crate) fn ino_of(&self, node: NodeId) -> u64 {
        if node == self.root {
            ROOT_INO
        } else {
            node
        }
    }

    fn check_writable(&self) -> Result<(), FsError> {
        if self.opts.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Refuses at the call, before anything is staged or queued, a change of a node the
    /// server says this session may not change (a viewer's, a read-only share's); for a
    /// create, rename or remove `node` is the folder.
    pub(crate) fn check_node_writable(&self, node: NodeId) -> Result<(), FsError> {
        self.check_writable()?;
        match self.server_attr(node)?.read_only {
            true => Err(FsError::ReadOnly),
            false => Ok(()),
        }
    }

    /// Caches a server answer, unless the cache already holds a newer state of the node
    /// (answers overtake each other: see [`attr_cache`]); returns what is kept.
    pub(crate) fn remember(&self, attr: Attr) -> Attr {
        self.attrs.put(attr, Some(Instant::now()))
    }

    /// Keeps an answer that may predate a pushed change (see [`FsCore::epoch`]) for
    /// offline use only: expired at once, so the next getattr asks the server again. (Not
    /// keeping it at all lost the attributes of names looked up while changes arrived,
    /// and a device that went offline then could not find them.)
    pub(crate) fn remember_expired(&self, attr: Attr) -> Attr {
        self.attrs.put(attr, None)
    }

    /// Caches the attributes this mount showed for a change the server has now applied as
    /// made (see `FsCore::finish_if_drained`): its metadata (owner, mode, times set) is the
    /// server's now, whatever an answer received meanwhile said (an upload's commit, answered
    /// before a queued `chown` reached the server, carries the old owner); its content is
    /// the newest committed.
    pub(crate) fn remember_sent(&self, attr: Attr) {
        self.attrs.replace(self.with_committed_content(attr));
    }

    /// `attr`, or the newer state of its node this client already knows (see
    /// [`FsCore::remember`]); caches nothing.
    pub(crate) fn newest(&self, attr: &Attr) -> Attr {
        self.attrs.newest(attr)
    }

    /// Makes the next getattr of `node` ask the server. The old attributes stay for offline
    /// use (see [`offline`]).
    pub(crate) fn forget_attr(&self, node: NodeId) {
        self.attrs.expire(node);
    }

    /// The cached attributes of `node` while they may be trusted: for [`TTL`], or while
    /// the change feed is followed (which drops those another device changes) as long as
    /// the kernel keeps them ([`FsCore::kernel_ttl`]).
    pub(crate) fn cached_attr(&self, node: NodeId) -> Option<Attr> {
        self.attrs.fresh(node, self.kernel_ttl())
    }

    /// How many pushed changes were applied so far. An answer obtained while this moved may
    /// predate the change: it is used once but not cached (here, or by the kernel: the
    /// adapter then replies with a zero TTL).
    pub fn epoch(&self) -> u64 {
        self.coherence.epoch()
    }

    fn call_attr(&self, what: &'static str, req: Request) -> Result<Attr, FsError> {
        let epoch = self.epoch();
        let a = self.remote.ask_attr(what, req)?;
        Ok(if self.epoch() == epoch {
            self.remember(a)
        } else {
            self.remember_expired(a)
        })
    }

    /// Drops local state of the node that lost its last name in a removing answer.
    fn removed(&self, answer: pending::Sent) {
        if let pending::Sent::Removed(Some(node)) = answer {
            self.drop_local(node);
            self.forget_attr(node);
        }
    }

    /// unlink / rmdir of `name` in `parent`.
    fn remove(&self, parent: NodeId, name: &str, dir: bool) -> Result<(), FsError> {
        self.check_node_writable(parent)?;
        if !dir {
            self.keep_open_content(parent, name)?;
        }
        // A hard-linked file keeps its other names, with one link less.
        let named = self.seen.entry(parent, name);
        let op = NsOp::Remove {
            parent,
            name: name.to_string(),
            dir,
            expect: None,
        };
        if let pending::Applied::Sent(r) = self.ns_change(op)? {
            self.removed(r);
            self.forget_attr(parent);
        }
        self.seen.forget(parent, name);
        if let Some(node) = named {
            self.forget_attr(node);
        }
        Ok(())
    }

    /// A file about to lose a name while descriptors are open on it: its content is made
    /// local first, so they keep reading it once the server has no name for it.
    fn keep_open_content(&self, parent: NodeId, name: &str) -> Result<(), FsError> {
        let node = match self.overlay_entry(parent, name) {
            Some(queued) => queued,
            None => self.seen.entry(parent, name),
        };
        let Some(node) = node else { return Ok(()) };
        let Some(st) = self.files.get(node) else {
            return Ok(());
        };
        let mut inner = st.lock();
        if inner.open_handles > 0 {
            self.ensure_staging(node, &mut inner, u64::MAX)?;
        }
        Ok(())
    }

    /// Creates a node (mkdir, create, symlink, mknod) under a fresh client-chosen id.
    pub(crate) fn make(
        &self,
        parent: NodeId,
        name: &str,
        new: pending::NewNode,
    ) -> Result<Attr, FsError> {
        let epoch = self.epoch();
        let op = NsOp::Make {
            parent,
            name: name.to_string(),
            id: pending::new_node_id(),
            kind: new.kind,
            mode: new.mode,
            rdev: new.rdev,
            target: new.target,
            exclusive: new.exclusive,
            at: Timestamp::now(),
        };
        let attr = match self.ns_change(op)? {
            pending::Applied::Sent(pending::Sent::Attr(a)) => {
                self.forget_attr(parent);
                if self.epoch() == epoch {
                    self.remember(a)
                } else {
                    self.remember_expired(a)
                }
            }
            pending::Applied::Queued(Some(a)) => a,
            _ => return Err(FsError::Unexpected("create")),
        };
        self.seen.remember(parent, name, attr.node);
        Ok(attr)
    }

    fn call_ok(&self, what: &'static str, req: Request) -> Result<(), FsError> {
        Ok(self.remote.ask_ok(what, req)?)
    }

    /// The server's attributes of a node (from the short-lived cache when fresh).
    pub(crate) fn server_attr(&self, node: NodeId) -> Result<Attr, FsError> {
        if let Some(a) = self.overlay_attr(node) {
            return Ok(self.with_committed_content(a));
        }
        if let Some(a) = self.unlinked_attr(node) {
            return Ok(a);
        }
        if let Some(a) = self.cached_attr(node) {
            return Ok(a);
        }
        match self.call_attr("getattr", Request::GetAttr { node }) {
            Err(e) if offline::is_offline(&e) => self.stale_attr(node).ok_or(e),
            other => other,
        }
    }

    /// A queued change's attributes of `node`, with the content (version, size, times) of
    /// a commit the server answered since: uploads do not wait for changes queued after
    /// they started, and the overlay keeps the node's state from before them.
    fn with_committed_content(&self, mut a: Attr) -> Attr {
        let newest = self.newest(&a);
        if newest.version > a.version {
            a.version = newest.version;
            a.size = newest.size;
            a.mtime = newest.mtime;
            a.ctime = a.ctime.max(newest.ctime);
        }
        a
    }

    /// The last attributes of an open file that has no name any more (nlink 0).
    fn unlinked_attr(&self, node: NodeId) -> Option<Attr> {
        let st = self.files.get(node)?;
        if !st.is_unlinked() {
            return None;
        }
        let mut a = self.stale_attr(node)?;
        a.nlink = 0;
        Some(a)
    }

    /// Kernel attributes: the server's, with local unsent content (size, mtime) laid over.
    pub(crate) fn stat_of(&self, attr: &Attr) -> Stat {
        // The local state first: an upload marks its file clean only after it remembered
        // the committed attributes, so content that is no longer dirty here is found in
        // the attribute cache by `newest` below (never an older answer's size).
        let overlay = self.local_overlay(attr.node);
        let attr = &self.newest(attr);
        let (mut size, mut mtime, mut ctime) = (attr.size, attr.mtime, attr.ctime);
        if let Some((s, m)) = overlay {
            size = s;
            mtime = m;
            // A local content change is a status change too.
            ctime = ctime.max(m);
        }
        Stat {
            ino: self.ino_of(attr.node),
            kind: attr.kind,
            perm: (attr.mode & 0o7777) as u16,
            size,
            blocks: size.div_ceil(512),
            atime: attr.atime.to_system(),
            mtime: mtime.to_system(),
            ctime: ctime.to_system(),
            nlink: attr.nlink,
            uid: attr.uid.unwrap_or(self.opts.uid),
            gid: attr.gid.unwrap_or(self.opts.gid),
            rdev: attr.rdev,
        }
    }

    pub fn lookup(&self, parent: u64, name: &std::ffi::OsStr) -> Result<Stat, FsError> {
        let name = name_str(name)?;
        if versions::is_virtual(parent) {
            return self.versions_lookup(parent, name);
        }
        if name == VERSIONS_DIR {
            return self.versions_dir(parent);
        }
        match validate_name(name) {
            Ok(()) => {}
            Err(shelf_protocol::ErrorCode::NameTooLong) => {
                return Err(FsError::Remote(crate::remote::RemoteError::Server(
                    shelf_protocol::ErrorCode::NameTooLong.into(),
                )))
            }
            // A name the store can never hold simply does not exist.
            Err(_) => return Err(FsError::NotFound),
        }
        let dir = self.node_of(parent);
        if let Some(queued) = self.overlay_entry(dir, name) {
            let node = queued.ok_or(FsError::NotFound)?;
            return Ok(self.stat_of(&self.server_attr(node)?));
        }
        // A name listed or looked up here, with attributes still trusted (while the change
        // feed is followed, another device's change drops them): no round trip. Likewise a
        // name absent from a folder whose every name is known here (not a shared view,
        // which changes without telling this account's feed).
        match self.seen.entry(dir, name) {
            Some(node) => {
                if let Some(attr) = self.cached_attr(node) {
                    return Ok(self.stat_of(&attr));
                }
            }
            None if self.kernel_ttl() == FOLLOWED_TTL
                && self.seen.listing_known(dir)
                && self.cached_attr(dir).is_some_and(|d| !d.read_only) =>
            {
                return Err(FsError::NotFound);
            }
            None => {}
        }
        let found = self.call_attr(
            "lookup",
            Request::Lookup {
                parent: dir,
                name: name.to_string(),
            },
        );
        let attr = match found {
            Ok(a) => {
                self.seen.remember(dir, name, a.node);
                a
            }
            Err(e) if offline::is_offline(&e) => match self.seen.entry(dir, name) {
                // Offline, a name this mount never saw is absent as far as it can tell (so
                // it can be created; a clash at replay becomes a conflicted copy).
                None => return Err(FsError::NotFound),
                Some(_) => self.offline_lookup(dir, name).ok_or(e)?,
            },
            Err(e) => {
                if e.errno() == libc::ENOENT {
                    self.seen.forget(dir, name);
                }
                return Err(e);
            }
        };
        Ok(self.stat_of(&attr))
    }

    pub fn getattr(&self, ino: u64) -> Result<Stat, FsError> {
        if versions::is_virtual(ino) {
            return self.versions_getattr(ino);
        }
        let attr = self.server_attr(self.node_of(ino))?;
        Ok(self.stat_of(&attr))
    }

    /// Changes mode, size or times. A size change is a content change: it goes through the
    /// staging file like a write.
    pub fn setattr(&self, ino: u64, change: SetAttr) -> Result<Stat, FsError> {
        let SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            unprivileged,
        } = change;
        self.check_writable()?;
        self.refuse_virtual(&[ino])?;
        let node = self.node_of(ino);
        self.check_node_writable(node)?;
        if let Some(size) = size {
            self.truncate(node, size)?;
        }
        let drops_set_ids =
            uid.is_some() || gid.is_some() || (unprivileged.is_some() && size.is_some());
        let mode = match mode {
            None if drops_set_ids => self.mode_without_set_ids(ino, unprivileged)?,
            mode => mode,
        };
        if mode.is_some() || uid.is_some() || gid.is_some() || atime.is_some() || mtime.is_some() {
            if let Some(t) = mtime {
                self.set_local_mtime(node, t)?;
            }
            let epoch = self.epoch();
            let op = NsOp::SetAttr {
                node,
                mode,
                uid,
                gid,
                atime,
                mtime,
            };
            match self.ns_change(op)? {
                pending::Applied::Sent(pending::Sent::Attr(a)) => {
                    if self.epoch() == epoch {
                        self.remember(a);
                    } else {
                        self.remember_expired(a);
                    }
                }
                pending::Applied::Sent(_) => return Err(FsError::Unexpected("setattr")),
                pending::Applied::Queued(_) => {}
            }
        }
        self.getattr(ino)
    }

    /// The mode a chown, or a write or truncation by someone other than root, leaves a
    /// file with, when it differs: as on Linux, its set-user-ID bit goes, and its
    /// set-group-ID bit when the group may execute it or when the caller (not root, in
    /// group `unprivileged`) is not in the file's group. Supplementary groups are not
    /// known here: only the caller's own group counts. The kernel leaves this to the
    /// mount (FUSE_HANDLE_KILLPRIV_V2) and so spares a round trip per chown.
    fn mode_without_set_ids(
        &self,
        ino: u64,
        unprivileged: Option<u32>,
    ) -> Result<Option<u32>, FsError> {
        let s = self.getattr(ino)?;
        if s.kind == NodeKind::Dir {
            return Ok(None);
        }
        let perm = u32::from(s.perm);
        let mut kept = perm & !libc::S_ISUID;
        if perm & libc::S_IXGRP != 0 || unprivileged.is_some_and(|g| g != s.gid) {
            kept &= !libc::S_ISGID;
        }
        Ok((kept != perm).then_some(kept))
    }

    /// Clears a file's set-ID bits before someone other than root (in group `gid`) writes
    /// to it: writes through the kernel's passthrough never reach the mount, so this
    /// happens when the file is opened for writing.
    pub fn drop_set_ids(&self, ino: u64, gid: u32) -> Result<(), FsError> {
        if let Some(mode) = self.mode_without_set_ids(ino, Some(gid))? {
            self.setattr(
                ino,
                SetAttr {
                    mode: Some(mode),
                    ..SetAttr::default()
                },
            )?;
        }
        Ok(())
    }

    pub fn mkdir(&self, parent: u64, name: &std::ffi::OsStr, mode: u32) -> Result<Stat, FsError> {
        self.check_writable()?;
        self.refuse_virtual(&[parent])?;
        let name = check_name(name)?;
        let parent = self.node_of(parent);
        self.check_node_writable(parent)?;
        let attr = self.make(parent, name, pending::NewNode::of(NodeKind::Dir, mode))?;
        Ok(self.stat_of(&attr))
    }

    /// Gives a node just created by another user (allow_other) to its creator, as a local
    /// filesystem does; the mounting user's own nodes need no extra round trip.
    pub fn own_by(&self, stat: Stat, uid: u32, gid: u32) -> Result<Stat, FsError> {
        if stat.uid == uid && stat.gid == gid {
            return Ok(stat);
        }
        self.setattr(
            stat.ino,
            SetAttr {
                uid: Some(uid),
                gid: Some(gid),
                // Not a chown: the creator's set-ID bits stay.
                mode: Some(u32::from(stat.perm)),
                ..SetAttr::default()
            },
        )
    }

    /// mknod(2): a regular file (S_IFREG), FIFO, socket or device node.
    pub fn mknod(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        rdev: u32,
    ) -> Result<Stat, FsError> {
        self.check_writable()?;
        self.refuse_virtual(&[parent])?;
        let name = check_name(name)?;
        let parent = self.node_of(parent);
        self.check_node_writable(parent)?;
        let perm = mode & 0o7777;
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => NodeKind::File,
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFSOCK => NodeKind::Socket,
            libc::S_IFCHR => NodeKind::CharDevice,
            libc::S_IFBLK => NodeKind::BlockDevice,
            _ => return Err(FsError::Invalid),
        };
        let new = pending::NewNode {
            rdev: if kind == NodeKind::File { 0 } else { rdev },
            ..pending::NewNode::of(kind, perm)
        };
        let attr = self.make(parent, name, new)?;
        Ok(self.stat_of(&attr))
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        target: &std::path::Path,
    ) -> Result<Stat, FsError> {
        self.check_writable()?;
        self.refuse_virtual(&[parent])?;
        let name = check_name(name)?;
        let target = target.to_str().ok_or(FsError::Invalid)?;
        shelf_protocol::names::validate_symlink_target(target)
            .map_err(|code| FsError::Remote(crate::remote::RemoteError::Server(code.into())))?;
        let parent = self.node_of(parent);
        self.check_node_writable(parent)?;
        let new = pending::NewNode {
            target: Some(target.to_string()),
            ..pending::NewNode::of(NodeKind::Symlink, 0o777)
        };
        let attr = self.make(parent, name, new)?;
        Ok(self.stat_of(&attr))
    }

    /// link(2): a second name for a file, inside the account's own files (EXDEV across a
    /// share). Needs the server (EIO while it is unreachable; not queued).
    pub fn link(
        &self,
        ino: u64,
        new_parent: u64,
        new_name: &std::ffi::OsStr,
    ) -> Result<Stat, FsError> {
        self.check_writable()?;
        self.refuse_virtual(&[ino, new_parent])?;
        let new_name = check_name(new_name)?;
        let (node, dir) = (self.node_of(ino), self.node_of(new_parent));
        self.check_node_writable(dir)?;
        self.check_node_writable(node)?;
        // The server makes the link: the changes before it (the file's create, say) first.
        if let Err(e) = self.settle() {
            tracing::warn!(node, error = %e, "link refused: the changes before it are not on the server");
            return Err(FsError::Io(std::io::Error::from_raw_os_error(libc::EIO)));
        }
        let attr = self
            .call_attr(
                "link",
                Request::Link {
                    node,
                    new_parent: dir,
                    new_name: new_name.to_string(),
                },
            )
            .inspect_err(|e| tracing::warn!(node, error = %e, "link failed"))?;
        self.seen.remember(dir, new_name, node);
        self.forget_attr(dir);
        Ok(self.stat_of(&attr))
    }

    pub fn readlink(&self, ino: u64) -> Result<String, FsError> {
        if versions::is_virtual(ino) {
            return Err(FsError::Invalid);
        }
        if let Some(t) = self.overlay_target(self.node_of(ino)) {
            return Ok(t);
        }
        Ok(self.remote.read_link(self.node_of(ino))?)
    }

    pub fn unlink(&self, parent: u64, name: &std::ffi::OsStr) -> Result<(), FsError> {
        self.check_writable()?;
        self.refuse_virtual(&[parent])?;
        let name = name_str(name)?;
        self.remove(self.node_of(parent), name, false)
    }

    pub fn rmdir(&self, parent: u64, name: &std::ffi::OsStr) -> Result<(), FsError> {
        self.check_writable()?;
        self.refuse_virtual(&[parent])?;
        let name = name_str(name)?;
        self.remove(self.node_of(parent), name, true)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        new_parent: u64,
        new_name: &std::ffi::OsStr,
        mode: RenameMode,
    ) -> Result<(), FsError> {
        self.check_writable()?;
        self.refuse_virtual(&[parent, new_parent])?;
        if Self::is_versions_name(name) {
            return Err(FsError::ReadOnly);
        }
        let name = name_str(name)?;
        let new_name = check_name(new_name)?;
        let (parent, new_parent) = (self.node_of(parent), self.node_of(new_parent));
        self.check_node_writable(parent)?;
        self.check_node_writable(new_parent)?;
        if mode == RenameMode::Replace {
            // A file replaced while open keeps working for its descriptors.
            self.keep_open_content(new_parent, new_name)?;
        }
        // The nodes whose ctime the rename changes (both, for an exchange).
        let moved = [
            self.seen.entry(parent, name),
            self.seen.entry(new_parent, new_name),
        ];
        let op = NsOp::Rename {
            parent,
            name: name.to_string(),
            new_parent,
            new_name: new_name.to_string(),
            mode,
            expect: None,
        };
        // (Queued, the change already updated the names this mount knows.)
        if let pending::Applied::Sent(r) = self.ns_change(op)? {
            self.removed(r);
            self.seen.rename(
                (parent, name),
                (new_parent, new_name),
                None,
                mode == RenameMode::Exchange,
            );
            self.forget_attr(parent);
            self.forget_attr(new_parent);
        }
        for node in moved.into_iter().flatten() {
            self.forget_attr(node);
        }
        Ok(())
    }

    /// Lists a directory into a handle; [`FsCore::readdir`] then pages through it.
    pub fn opendir(&self, ino: u64) -> Result<u64, FsError> {
        if versions::is_virtual(ino) {
            let epoch = self.epoch();
            let items = self.versions_opendir(ino)?;
            return Ok(self.handles.open_dir(items, epoch));
        }
        let dir = self.node_of(ino);
        let me = self.server_attr(dir)?;
        if me.kind != NodeKind::Dir {
            return Err(FsError::Remote(crate::remote::RemoteError::Server(
                shelf_protocol::ErrorCode::NotDir.into(),
            )));
        }
        let mut items = vec![
            DirItem {
                name: ".".into(),
                stat: self.stat_of(&me),
            },
            DirItem {
                name: "..".into(),
                stat: self.stat_of(&me),
            },
        ];
        let mut after = None;
        let epoch = self.epoch();
        let mut names = std::collections::BTreeMap::new();
        // A folder made offline is not on the server yet: the overlay is all of it.
        let listed_here = self.overlay_created(dir);
        // A folder known here in full, while the feed keeps it true: no round trip (a
        // warm `ls -lR` then costs what it costs on a local disk).
        let known = match listed_here {
            true => None,
            false => self.known_listing(dir),
        };
        // What the server's listing cannot show yet, and whether anything changed the names
        // known here while it was read (see below).
        let names_before = self.seen.changes(dir);
        let queued = self.overlay_listing(dir);
        if let Some(known) = &known {
            for (name, attr) in known {
                items.push(DirItem {
                    name: name.clone(),
                    stat: self.stat_of(attr),
                });
            }
        }
        loop {
            if listed_here || known.is_some() {
                break;
            }
            let page = match self.remote.read_dir(dir, after.clone(), DIR_PAGE) {
                Ok(p) => p,
                Err(e) if e.is_transient() => {
                    // Offline: what this mount has seen of the folder.
                    let known = self.offline_listing(dir).ok_or_else(|| {
                        FsError::Remote(crate::remote::RemoteError::Disconnected(
                            "the server is unreachable and this folder was not listed before"
                                .into(),
                        ))
                    })?;
                    items.truncate(2);
                    for (name, attr) in known {
                        items.push(DirItem {
                            name,
                            stat: self.stat_of(&attr),
                        });
                    }
                    names.clear();
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            let crate::remote::calls::DirPage { entries, more } = page;
            after = entries.last().map(|e| e.name.clone());
            let fresh = self.epoch() == epoch;
            for e in entries {
                let stat = self.stat_of(&e.attr);
                names.insert(e.name.clone(), e.attr.node);
                if fresh {
                    self.remember(e.attr);
                } else {
                    self.remember_expired(e.attr);
                }
                items.push(DirItem { name: e.name, stat });
            }
            if !more || after.is_none() {
                // The server's names with this mount's queued changes laid over them are
                // every name, unless another device's change arrived or this mount changed
                // the folder's names while the listing was read: then what is known stays
                // (a name merged from the listing could be one just removed here) and the
                // folder is listed again before anything trusts it as complete.
                let mut names = std::mem::take(&mut names);
                for (name, node) in queued.iter().flatten() {
                    match node {
                        Some(n) => names.insert(name.clone(), *n),
                        None => names.remove(name),
                    };
                }
                match self.epoch() == epoch && self.seen.changes(dir) == names_before {
                    true => self.seen.remember_listing(dir, names),
                    false => self.seen.unlist(dir),
                }
                break;
            }
        }
        self.merge_overlay(dir, &mut items);
        Ok(self.handles.open_dir(items, epoch))
    }

    /// Lays queued changes of `dir` over a listing (after `.` and `..`).
    fn merge_overlay(&self, dir: NodeId, items: &mut Vec<DirItem>) {
        let Some(changes) = self.overlay_listing(dir) else {
            return;
        };
        items.retain(|i| i.name == "." || i.name == ".." || !changes.contains_key(&i.name));
        for (name, node) in changes {
            let Some(node) = node else { continue };
            if let Ok(attr) = self.server_attr(node) {
                items.push(DirItem {
                    name,
                    stat: self.stat_of(&attr),
                });
            }
        }
    }

    /// Whether an open listing's attributes may be cached by the kernel: no pushed change
    /// arrived since it was read.
    pub fn listing_fresh(&self, fh: u64) -> bool {
        let at = self.handles.dir(fh).map(|(_, e)| e);
        at == Some(self.epoch())
    }

    /// Entries of an open directory from position `offset` on; each entry's position + 1 is
    /// the offset the kernel passes to continue after it.
    pub fn readdir(&self, fh: u64, offset: u64) -> Result<Vec<(u64, DirItem)>, FsError> {
        let (items, _) = self.handles.dir(fh).ok_or(FsError::BadHandle)?;
        Ok(items
            .iter()
            .enumerate()
            .skip(offset as usize)
            .map(|(i, item)| (i as u64 + 1, item.clone()))
            .collect())
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.close_dir(fh);
    }

    pub fn statfs(&self) -> Result<FsStats, FsError> {
        let crate::remote::calls::Space {
            used_bytes,
            free_bytes,
            files,
        } = self.remote.stat_fs()?;
        let bsize = 4096u64;
        let bfree = free_bytes / bsize;
        Ok(FsStats {
            blocks: used_bytes.div_ceil(bsize) + bfree,
            bfree,
            bavail: bfree,
            files,
            bsize: bsize as u32,
        })
    }

    pub fn setxattr(
        &self,
        ino: u64,
        name: &std::ffi::OsStr,
        value: &[u8],
        mode: XattrMode,
    ) -> Result<(), FsError> {
        let name = name_str(name)?;
        if name == pins::PIN_XATTR {
            return self.pin(self.node_of(ino));
        }
        if name == pins::SYNC_XATTR {
            return match self.settle_within(Duration::from_secs(10)) {
                true => Ok(()),
                false => Err(FsError::Io(std::io::Error::from_raw_os_error(libc::EAGAIN))),
            };
        }
        if name == CATEGORY_XATTR {
            // Derived from the folder a file is in: copies that carry it along (`cp -a`,
            // `rsync -X`, `tar --xattrs`) set it, and that changes nothing.
            return Ok(());
        }
        self.check_writable()?;
        self.refuse_virtual(&[ino])?;
        self.check_node_writable(self.node_of(ino))?;
        if !name.starts_with("user.") || name.starts_with(pins::RESERVED_XATTR_PREFIX) {
            return Err(FsError::Unsupported);
        }
        self.settle()?;
        self.call_ok(
            "setxattr",
            Request::SetXattr {
                node: self.node_of(ino),
                name: name.to_string(),
                value: value.to_vec(),
                mode,
            },
        )
    }

    pub fn getxattr(&self, ino: u64, name: &std::ffi::OsStr) -> Result<Vec<u8>, FsError> {
        let name = name_str(name)?;
        if name.starts_with("system.posix_acl_") {
            // No ACL: the kernel asks for them in its permission checks, where "not
            // supported" would be an error.
            return Err(FsError::NoAttribute);
        }
        if !name.starts_with("user.") {
            // security.* and trusted.* are never stored (setxattr refuses them): answered
            // locally as "not supported", like NFS without labels. That answer, not
            // ENODATA, lets `ls -l` mark the whole mount unsupported after the first file
            // instead of asking for `security.selinux` once per file.
            return Err(FsError::Unsupported);
        }
        if versions::is_virtual(ino) {
            return Err(FsError::NoAttribute);
        }
        if name.starts_with(pins::RESERVED_XATTR_PREFIX) && name != CATEGORY_XATTR {
            return match name == pins::PIN_XATTR && self.is_pinned(self.node_of(ino)) {
                true => Ok(b"1".to_vec()),
                false => Err(FsError::NoAttribute),
            };
        }
        self.settle_node(self.node_of(ino))?;
        Ok(self.remote.get_xattr(self.node_of(ino), name)?)
    }

    pub fn listxattr(&self, ino: u64) -> Result<Vec<String>, FsError> {
        if versions::is_virtual(ino) {
            return Ok(Vec::new());
        }
        self.settle_node(self.node_of(ino))?;
        Ok(self.remote.list_xattr(self.node_of(ino))?)
    }

    pub fn removexattr(&self, ino: u64, name: &std::ffi::OsStr) -> Result<(), FsError> {
        let name = name_str(name)?;
        if name == pins::PIN_XATTR {
            return self.unpin(self.node_of(ino));
        }
        if name == CATEGORY_XATTR {
            return Ok(()); // derived, see setxattr
        }
        self.check_writable()?;
        self.refuse_virtual(&[ino])?;
        self.check_node_writable(self.node_of(ino))?;
        if !name.starts_with("user.") {
            return Err(FsError::Unsupported);
        }
        self.settle()?;
        self.call_ok(
            "removexattr",
            Request::RemoveXattr {
                node: self.node_of(ino),
                name: name.to_string(),
            },
        )
    }

    /// Whether the kernel may keep its cached pages of `node` on this open: yes when the file
    /// is unchanged since the last open on this client.
    pub(crate) fn keep_cache(&self, node: NodeId, version: u64, size: u64) -> bool {
        self.opened.same_as_last(node, version, size)
    }
}

//! The fuser adapter. Deliberately thin: each callback converts fuser's types, calls the one
//! matching [`FsCore`] method and replies or maps the error with [`FsError::errno`]. All
//! behaviour lives in the core so that it can be tested without a mount.
//!
//! The one thing it owns is the kernel's side of local I/O: when the core opens a file in
//! local mode it hands over the staging file, which is registered with the kernel as a
//! passthrough backing file (one registration per inode, shared by all its open handles,
//! dropped with the last one).

use crate::blocking::Relay;
use crate::core::permission::{Access, Caller};
use crate::core::{FsCore, FsError, SetAttr, Stat};
use crate::sync::LockOrRecover;
use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use shelf_protocol::{NodeKind, RenameMode, Timestamp, XattrMode};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub struct ShelfFs {
    core: Arc<FsCore>,
    backings: Mutex<Backings>,
    /// Keeps one of the session's threads in the kernel's queue ([`crate::blocking`]).
    relay: Arc<Relay>,
    /// The kernel leaves permission checks to the mount (no `default_permissions`; see
    /// [`crate::core::permission`]).
    checks: bool,
}

/// Staging files registered with the kernel for passthrough, per inode while it has open
/// local-mode handles.
#[derive(Default)]
struct Backings {
    by_ino: HashMap<u64, (BackingId, u32)>,
    ino_of_fh: HashMap<u64, u64>,
}

impl ShelfFs {
    /// The adapter for a session of `threads` threads; `checks`: the mount has no
    /// `default_permissions`, and the adapter checks permissions itself.
    pub fn new(core: Arc<FsCore>, threads: usize, checks: bool) -> ShelfFs {
        ShelfFs {
            core,
            backings: Mutex::new(Backings::default()),
            relay: Relay::new(threads),
            checks,
        }
    }

    /// `Ok` when the kernel checks permissions itself or the caller may `want` on `ino`.
    fn check(&self, req: &Request, ino: INodeNo, want: Access) -> Result<(), FsError> {
        match self.checks {
            true => self.core.permit(&caller(req), ino.0, want),
            false => Ok(()),
        }
    }

    /// [`ShelfFs::check`] on a folder, which root may always search and change (no
    /// attribute lookup on the hot path of root's creates and lookups).
    fn check_dir(&self, req: &Request, dir: INodeNo, want: Access) -> Result<(), FsError> {
        match req.uid() {
            0 => Ok(()),
            _ => self.check(req, dir, want),
        }
    }

    /// [`ShelfFs::check`] for removing (or renaming away) `name` from `dir`.
    fn check_removal(&self, req: &Request, dir: INodeNo, name: &OsStr) -> Result<(), FsError> {
        match self.checks {
            true => self.core.permit_removal(&caller(req), dir.0, name),
            false => Ok(()),
        }
    }

    /// A rename's checks: both entries' folders, the sticky rule for the entry and one it
    /// replaces, and a folder moved to another parent must be writable itself (its `..`).
    fn check_rename(
        &self,
        req: &Request,
        (parent, name): (INodeNo, &OsStr),
        (newparent, newname): (INodeNo, &OsStr),
    ) -> Result<(), FsError> {
        if !self.checks || req.uid() == 0 {
            return Ok(());
        }
        self.check_removal(req, parent, name)?;
        match self.core.lookup(newparent.0, newname) {
            Ok(_) => self.check_removal(req, newparent, newname)?,
            Err(_) => self.check_dir(req, newparent, Access::CHANGE_ENTRIES)?,
        }
        if parent != newparent {
            let moved = self.core.lookup(parent.0, name)?;
            if moved.kind == NodeKind::Dir {
                self.check(req, INodeNo(moved.ino), Access::WRITE)?;
            }
        }
        Ok(())
    }

    /// Whether everyone may search folder `dir` (names the kernel keeps in it are then
    /// nobody's secret).
    fn searchable(&self, dir: INodeNo) -> bool {
        self.core
            .getattr(dir.0)
            .is_ok_and(|s| s.perm & 0o111 == 0o111)
    }

    fn backings(&self) -> std::sync::MutexGuard<'_, Backings> {
        self.backings.lock_or_recover()
    }

    /// Registers (or reuses) the backing file of a local-mode handle and replies with it;
    /// if the kernel refuses, the handle is relayed instead.
    fn reply_local(&self, ino: u64, fh: u64, file: &File, reply: impl LocalReply) {
        let mut b = self.backings();
        let entry = match b.by_ino.entry(ino) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => match reply.register(file) {
                Ok(id) => e.insert((id, 0)),
                Err(err) => {
                    tracing::warn!(error = %err, "the kernel refused local I/O (FUSE passthrough needs CAP_SYS_ADMIN); reads and writes go through shelf from now on");
                    drop(b);
                    self.core.local_io_failed(fh);
                    reply.relayed();
                    return;
                }
            },
        };
        entry.1 += 1;
        reply.passthrough(&entry.0);
        b.ino_of_fh.insert(fh, ino);
    }

    /// A handle closed: its inode's backing registration goes with the last handle.
    fn release_local(&self, fh: u64) {
        let mut b = self.backings();
        let Some(ino) = b.ino_of_fh.remove(&fh) else {
            return;
        };
        let last = match b.by_ino.get_mut(&ino) {
            Some((_, count)) => {
                *count -= 1;
                *count == 0
            }
            None => false,
        };
        if last {
            b.by_ino.remove(&ino);
        }
    }
}

fn errno(e: &FsError) -> Errno {
    tracing::debug!(error = %e, "operation failed");
    Errno::from_i32(e.errno())
}

fn kind(k: NodeKind) -> FileType {
    match k {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
    }
}

fn attr(s: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(s.ino),
        size: s.size,
        blocks: s.blocks,
        atime: s.atime,
        mtime: s.mtime,
        ctime: s.ctime,
        crtime: s.ctime,
        kind: kind(s.kind),
        perm: s.perm,
        nlink: s.nlink,
        uid: s.uid,
        gid: s.gid,
        rdev: s.rdev,
        blksize: 1 << 16,
        flags: 0,
    }
}

/// The attributes of a negative directory entry: inode 0 means "does not exist".
fn negative_entry() -> FileAttr {
    let epoch = SystemTime::UNIX_EPOCH;
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: epoch,
        mtime: epoch,
        ctime: epoch,
        crtime: epoch,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn time(t: TimeOrNow) -> Timestamp {
    match t {
        TimeOrNow::Now => Timestamp::now(),
        TimeOrNow::SpecificTime(t) => Timestamp::from_system(t),
    }
}

/// The kernel's caches through FUSE notifications (for [`FsCore::apply_change`]).
pub struct Notifications(pub fuser::Notifier);

impl crate::core::coherence::KernelCache for Notifications {
    fn inval_inode(&self, ino: u64, data: bool) {
        // Offset -1: attributes only; 0 with length 0: attributes and every cached page.
        let offset = if data { 0 } else { -1 };
        let _ = self.0.inval_inode(INodeNo(ino), offset, 0);
    }

    fn inval_entry(&self, parent: u64, name: &str) {
        let _ = self.0.inval_entry(INodeNo(parent), OsStr::new(name));
    }
}

/// An open or create reply that can hand the kernel a backing file.
trait LocalReply {
    fn register(&self, file: &File) -> std::io::Result<BackingId>;
    fn passthrough(self, id: &BackingId);
    fn relayed(self);
}

struct OpenReply(ReplyOpen, FileHandle, FopenFlags);

impl LocalReply for OpenReply {
    fn register(&self, file: &File) -> std::io::Result<BackingId> {
        self.0.open_backing(file)
    }
    fn passthrough(self, id: &BackingId) {
        self.0.opened_passthrough(self.1, self.2, id);
    }
    fn relayed(self) {
        self.0.opened(self.1, self.2);
    }
}

/// A create's reply: the new file's attributes, handle and how long the kernel may keep them.
struct CreateReply(ReplyCreate, FileAttr, FileHandle, Duration);

impl LocalReply for CreateReply {
    fn register(&self, file: &File) -> std::io::Result<BackingId> {
        self.0.open_backing(file)
    }
    fn passthrough(self, id: &BackingId) {
        self.0
            .created_passthrough(&self.3, &self.1, GEN, self.2, FopenFlags::empty(), id);
    }
    fn relayed(self) {
        self.0
            .created(&self.3, &self.1, GEN, self.2, FopenFlags::empty());
    }
}

fn open_flags(keep_cache: bool) -> FopenFlags {
    if keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

const GEN: Generation = Generation(0);

/// How far ahead the kernel reads a file in one go (also each READ's largest size).
pub const READAHEAD_BYTES: u32 = 1 << 20;

/// Raises the kernel's read-ahead window for the mount at `dir` to [`READAHEAD_BYTES`].
/// The kernel gives a FUSE mount the block-device default (128 KiB) whatever the mount
/// asks for in INIT, so a sequential read of a file not on this device came as 128 KiB
/// READs, eight times the requests (and round trips through the mount) of 1 MiB ones.
/// The window is a sysfs setting of the mount's device: only root may change it; others
/// keep the default (a failure is returned for the caller to log). `dir` must be canonical
/// (resolving it now would ask the mount, which is not serving yet).
pub fn widen_readahead(dir: &Path) -> std::io::Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let device = mountinfo
        .lines()
        .rev()
        .find_map(|line| {
            let mut fields = line.split(' ');
            let device = fields.nth(2)?;
            let point = fields.nth(1)?;
            (Path::new(&unescape_mountinfo(point)) == dir).then(|| device.to_string())
        })
        .ok_or_else(|| std::io::Error::other("mount not found in /proc/self/mountinfo"))?;
    std::fs::write(
        format!("/sys/class/bdi/{device}/read_ahead_kb"),
        (READAHEAD_BYTES / 1024).to_string(),
    )
}

/// A path as /proc/self/mountinfo writes it (space, tab, newline and backslash as `\ooo`).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Filesystem for ShelfFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(READAHEAD_BYTES);
        let _ = config.set_max_background(64);
        // One at a time: a kernel that lacks one still gets the others.
        // No READDIRPLUS: each one makes the kernel forget the listed inodes' cached ACLs,
        // so `ls -l` (which asks for them on every file) would cost a round trip per file
        // and listing; the core answers lookups after a listing from its own cache instead.
        for flag in [
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_POSIX_LOCKS,
            InitFlags::FUSE_FLOCK_LOCKS,
            // The mount clears set-user-ID and set-group-ID on chown itself (the core's
            // setattr), so the kernel does not fetch the attributes first: one round trip
            // less per chown (tar, cp -a, rsync chown every file).
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
        ] {
            if config.add_capabilities(flag).is_err() {
                tracing::info!(?flag, "the kernel does not offer this FUSE capability");
            }
        }
        // With default_permissions only (the kernel turns it on with ACLs): the kernel then
        // caches each inode's (absent) ACLs, and `ls -l`, which asks for them on every file,
        // costs one round trip per inode instead of one per call.
        if !self.checks && config.add_capabilities(InitFlags::FUSE_POSIX_ACL).is_err() {
            tracing::info!("the kernel does not offer FUSE_POSIX_ACL");
        }
        if self.core.local_io_enabled() {
            // Depth 2: the cache folder may itself be on a stacked filesystem (overlayfs).
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(2).is_ok();
            if !ok {
                tracing::info!(
                    "this kernel has no FUSE passthrough; reads and writes go through shelf"
                );
                self.core.disable_local_io();
            }
        }
        self.core.record_io_mode();
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _serving = self.relay.serve();
        if let Err(e) = self.check_dir(req, parent, Access::EXEC) {
            return reply.error(errno(&e));
        }
        let epoch = self.core.epoch();
        let result = self.core.lookup(parent.0, name);
        // A change pushed meanwhile may make this answer old: the kernel must not keep it.
        // Nor may it keep names in a folder that not everyone may search, when the mount
        // checks permissions itself: the kernel would give them to the next caller unasked.
        let fresh = self.core.epoch() == epoch && (!self.checks || self.searchable(parent));
        let ttl = if fresh {
            self.core.kernel_ttl()
        } else {
            Duration::ZERO
        };
        match result {
            Ok(s) => reply.entry(&ttl, &attr(&s), GEN),
            // A negative entry (inode 0) lets the kernel cache "no such file" for the TTL,
            // so tools probing for missing files (git, shells, imports) stay local.
            Err(e) if e.errno() == libc::ENOENT && fresh => {
                reply.entry(&self.core.kernel_ttl(), &negative_entry(), GEN)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let _serving = self.relay.serve();
        // Only sent without default_permissions (chdir and access(2)).
        match self.check(req, ino, Access::from_mask(mask.bits())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _serving = self.relay.serve();
        let epoch = self.core.epoch();
        let result = self.core.getattr(ino.0);
        let ttl = if self.core.epoch() == epoch {
            self.core.kernel_ttl()
        } else {
            Duration::ZERO
        };
        match result {
            Ok(s) => reply.attr(&ttl, &attr(&s)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _serving = self.relay.serve();
        let times_now = matches!(
            (&atime, &mtime),
            (Some(TimeOrNow::Now) | None, Some(TimeOrNow::Now) | None)
        );
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
            unprivileged: (req.uid() != 0).then(|| req.gid()),
        };
        // Who may chown, chmod, truncate and set times: the kernel's check with
        // default_permissions, else this one.
        let change = match self.checks {
            true => self
                .core
                .permit_setattr(&caller(req), ino.0, change, fh.is_some(), times_now),
            false => Ok(change),
        };
        match change.and_then(|c| self.core.setattr(ino.0, c)) {
            Ok(s) => {
                reply.attr(&self.core.kernel_ttl(), &attr(&s));
                // A folder someone may no longer search: the kernel, which checks nothing
                // here, must not walk through the names it keeps (see `lookup`).
                if self.checks
                    && mode.is_some()
                    && s.kind == NodeKind::Dir
                    && s.perm & 0o111 != 0o111
                {
                    self.core.forget_kernel_entries(ino.0);
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _serving = self.relay.serve();
        match self.core.readlink(ino.0) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _serving = self.relay.serve();
        match self
            .check_dir(req, parent, Access::CHANGE_ENTRIES)
            .and_then(|()| self.core.mkdir(parent.0, name, mode & !umask))
            .and_then(|s| self.core.own_by(s, req.uid(), req.gid()))
        {
            Ok(s) => reply.entry(&self.core.kernel_ttl(), &attr(&s), GEN),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _serving = self.relay.serve();
        let mode = (mode & libc::S_IFMT) | (mode & 0o7777 & !umask);
        match self
            .check_dir(req, parent, Access::CHANGE_ENTRIES)
            .and_then(|()| self.core.mknod(parent.0, name, mode, rdev))
            .and_then(|s| self.core.own_by(s, req.uid(), req.gid()))
        {
            Ok(s) => reply.entry(&self.core.kernel_ttl(), &attr(&s), GEN),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _serving = self.relay.serve();
        match self
            .check_removal(req, parent, name)
            .and_then(|()| self.core.unlink(parent.0, name))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _serving = self.relay.serve();
        match self
            .check_removal(req, parent, name)
            .and_then(|()| self.core.rmdir(parent.0, name))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _serving = self.relay.serve();
        match self
            .check_dir(req, parent, Access::CHANGE_ENTRIES)
            .and_then(|()| self.core.symlink(parent.0, link_name, target))
            .and_then(|s| self.core.own_by(s, req.uid(), req.gid()))
        {
            Ok(s) => reply.entry(&self.core.kernel_ttl(), &attr(&s), GEN),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _serving = self.relay.serve();
        match self
            .check_dir(req, newparent, Access::CHANGE_ENTRIES)
            .and_then(|()| self.core.link(ino.0, newparent.0, newname))
        {
            Ok(s) => reply.entry(&self.core.kernel_ttl(), &attr(&s), GEN),
            Err(e) => {
                // (git clone copies every object after the first link that fails.)
                tracing::warn!(ino = ino.0, error = %e, "link refused");
                reply.error(errno(&e))
            }
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _serving = self.relay.serve();
        let mode = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else if flags.is_empty() {
            RenameMode::Replace
        } else {
            reply.error(Errno::EINVAL);
            return;
        };
        if let Err(e) = self.check_rename(req, (parent, name), (newparent, newname)) {
            return reply.error(errno(&e));
        }
        match self.core.rename(parent.0, name, newparent.0, newname, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _serving = self.relay.serve();
        if let Err(e) = self.check(req, ino, Access::of_open(flags.0)) {
            return reply.error(errno(&e));
        }
        if req.uid() != 0 && flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            if let Err(e) = self.core.drop_set_ids(ino.0, req.gid()) {
                return reply.error(errno(&e));
            }
        }
        let o = match self.core.open(ino.0, flags.0) {
            Ok(o) => o,
            Err(e) => return reply.error(errno(&e)),
        };
        let fh = FileHandle(o.fh);
        let mut flags = open_flags(o.keep_cache);
        if o.no_flush {
            flags |= FopenFlags::FOPEN_NOFLUSH;
        }
        match &o.local {
            None => reply.opened(fh, flags),
            Some(file) => self.reply_local(ino.0, o.fh, file, OpenReply(reply, fh, flags)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _serving = self.relay.serve();
        match self.core.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _serving = self.relay.serve();
        match self.core.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _serving = self.relay.serve();
        self.core.release_locks(ino.0, lock_owner.0);
        match self.core.flush(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _serving = self.relay.serve();
        if let Some(owner) = lock_owner {
            self.core.release_locks(ino.0, owner.0);
        }
        // The kernel's hold on the local file goes first: once the core counts no open
        // handle, it may give the file up.
        self.release_local(fh.0);
        let released = self.core.release(fh.0);
        match released {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _serving = self.relay.serve();
        match self.core.fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let _serving = self.relay.serve();
        match self.core.getlk(ino.0, lock_owner.0, typ, start, end) {
            Ok((typ, start, end)) => reply.locked(start, end, typ, pid),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let _serving = self.relay.serve();
        match self
            .core
            .setlk(ino.0, fh.0, lock_owner.0, typ, start, end, sleep)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _serving = self.relay.serve();
        match self
            .check(req, ino, Access::READ)
            .and_then(|()| self.core.opendir(ino.0))
        {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _serving = self.relay.serve();
        match self.core.readdir(fh.0, offset) {
            Ok(items) => {
                for (next, item) in items {
                    if reply.add(
                        INodeNo(item.stat.ino),
                        next,
                        kind(item.stat.kind),
                        &item.name,
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _serving = self.relay.serve();
        let ttl = if self.core.listing_fresh(fh.0) {
            self.core.kernel_ttl()
        } else {
            Duration::ZERO
        };
        match self.core.readdir(fh.0, offset) {
            Ok(items) => {
                for (next, item) in items {
                    let a = attr(&item.stat);
                    if reply.add(INodeNo(item.stat.ino), next, &item.name, &ttl, &a, GEN) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _serving = self.relay.serve();
        self.core.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _serving = self.relay.serve();
        match self.core.fsyncdir() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _serving = self.relay.serve();
        match self.core.statfs() {
            Ok(s) => reply.statfs(
                s.blocks,
                s.bfree,
                s.bavail,
                s.files,
                u64::MAX / 2,
                s.bsize,
                255,
                s.bsize,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _serving = self.relay.serve();
        let mode = if flags & libc::XATTR_CREATE != 0 {
            XattrMode::Create
        } else if flags & libc::XATTR_REPLACE != 0 {
            XattrMode::Replace
        } else {
            XattrMode::Set
        };
        match self
            .check(req, ino, Access::WRITE)
            .and_then(|()| self.core.setxattr(ino.0, name, value, mode))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _serving = self.relay.serve();
        let acl = name.as_encoded_bytes().starts_with(b"system.posix_acl_");
        if acl && self.checks {
            // The kernel does no ACLs on this mount (FUSE_POSIX_ACL would turn
            // default_permissions on): "not supported" lets `ls -l` stop asking after the
            // first file, where "no such attribute" cost a round trip per file.
            return reply.error(Errno::EOPNOTSUPP);
        }
        let readable = match acl || !name.as_encoded_bytes().starts_with(b"user.") {
            true => Ok(()),
            false => self.check(req, ino, Access::READ),
        };
        match readable.and_then(|()| self.core.getxattr(ino.0, name)) {
            Ok(v) => reply_xattr(reply, size, &v),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _serving = self.relay.serve();
        match self.core.listxattr(ino.0) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(n.as_bytes());
                    buf.push(0);
                }
                reply_xattr(reply, size, &buf)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _serving = self.relay.serve();
        match self
            .check(req, ino, Access::WRITE)
            .and_then(|()| self.core.removexattr(ino.0, name))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _serving = self.relay.serve();
        let created = self
            .check_dir(req, parent, Access::CHANGE_ENTRIES)
            .and_then(|()| self.core.create(parent.0, name, mode & !umask, flags))
            .and_then(|(s, o)| match self.core.own_by(s, req.uid(), req.gid()) {
                Ok(s) => Ok((s, o)),
                Err(e) => {
                    let _ = self.core.release(o.fh);
                    Err(e)
                }
            });
        match created {
            Ok((s, o)) => match &o.local {
                None => reply.created(
                    &self.core.kernel_ttl(),
                    &attr(&s),
                    GEN,
                    FileHandle(o.fh),
                    open_flags(o.keep_cache),
                ),
                Some(file) => self.reply_local(
                    s.ino,
                    o.fh,
                    file,
                    CreateReply(reply, attr(&s), FileHandle(o.fh), self.core.kernel_ttl()),
                ),
            },
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// getxattr/listxattr protocol: size 0 asks for the length; too small a buffer is ERANGE.
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

/// Who sent a request.
fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

#[cfg(test)]
mod tests {
    use super::unescape_mountinfo;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo("/mnt/my\\040files"), "/mnt/my files");
        assert_eq!(unescape_mountinfo("/a\\134b\\011c"), "/a\\b\tc");
        assert_eq!(unescape_mountinfo("/plain/path"), "/plain/path");
        assert_eq!(unescape_mountinfo("/odd\\09"), "/odd\\09");
    }
}

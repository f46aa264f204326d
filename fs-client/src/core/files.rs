//! File content: write-back staging, reads, and what close and fsync promise.
//!
//! A file gets a staging file (`CACHE/staging/<node>`) at its first write or truncate; from
//! then on reads and writes go to it at local-disk speed. `flush` (every `close`) records the
//! file in the journal, so a killed client uploads it at the next mount; the last `release`
//! queues the upload. `fsync` uploads at once and returns when the server has committed and
//! flushed the version. After an upload the staging file stays as a clean local copy.
//!
//! Files without a staging file are read from the server chunk by chunk: only the chunks a
//! read touches (plus a few ahead when reading sequentially) are fetched, verified against
//! their BLAKE3 ids and kept in the chunk cache.
//!
//! Local I/O (kernel passthrough): an open of a file with a local copy, and every open for
//! writing, can hand the staging file to the kernel, which then reads and writes it
//! directly, without a round trip through this process. Such writes are not seen one by
//! one: a [`Stamp`] (size, mtime, ctime of the staging file) taken when the content was last
//! accounted for tells at flush, release, getattr and upload whether it changed since. The
//! kernel wants every open of an inode in one mode, so a file is either in local mode (all
//! handles share the staging file) or in relayed mode (reads and writes come through
//! [`FsCore::read`] and [`FsCore::write`]) until its last handle closes.

use super::aligned::{AlignedBuf, ReadData};
use super::{FsCore, FsError, Stat};
use crate::cache::journal::Record;
use crate::sync::LockOrRecover;
use shelf_protocol::{ChunkId, ChunkRef, NodeId, NodeKind, Timestamp};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long fsync keeps retrying when the connection to the server fails.
/// (`SHELF_FSYNC_PATIENCE_SECS` overrides the 60 s, for tests.)
fn fsync_patience() -> std::time::Duration {
    let secs = std::env::var("SHELF_FSYNC_PATIENCE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    std::time::Duration::from_secs(secs)
}
/// Chunks fetched ahead of a sequential reader (in the background).
const READ_AHEAD_CHUNKS: usize = 64;
/// Files up to this size come with their content when their chunk list is asked for.
const SMALL_READ: u64 = 256 << 10;
/// How stale a closed file's attributes may be when a shared mapping may still write it
/// (see [`Staging::refresh_for_stat`]).
const LAZY_REFRESH: Duration = Duration::from_secs(1);
/// Chunks per download request (several requests run in parallel).
pub(crate) const READ_BATCH_CHUNKS: usize = 16;

/// An open file.
pub struct Handle {
    pub node: NodeId,
    pub writable: bool,
    /// Where the last read ended, to detect sequential reading.
    pub last_end: u64,
    /// An old version (a file in `.versions/`) instead of the current content.
    pub version: Option<u64>,
    /// Owners of POSIX locks taken through this read-only handle: the kernel does not tell
    /// the core when it is closed ([`Opened::no_flush`]), so they go when it is released.
    pub lock_owners: Vec<u64>,
}

/// A version's chunk list with the offset where each chunk starts.
pub struct Manifest {
    /// The file (or, for an old version, the node of its history) the chunks belong to.
    pub node: NodeId,
    pub version: u64,
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
    pub offsets: Vec<u64>,
}

impl Manifest {
    pub fn new(node: NodeId, version: u64, chunks: Vec<ChunkRef>) -> Manifest {
        let mut offsets = Vec::with_capacity(chunks.len());
        let mut at = 0u64;
        for c in &chunks {
            offsets.push(at);
            at += u64::from(c.len);
        }
        Manifest {
            node,
            version,
            size: at,
            chunks,
            offsets,
        }
    }

    /// Index of the chunk holding byte `offset`.
    fn chunk_at(&self, offset: u64) -> usize {
        match self.offsets.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        }
    }
}

/// The manifests of recently read or committed versions, a few hundred files at most.
pub struct Manifests(Mutex<lru::LruCache<NodeId, Arc<Manifest>>>);

impl Default for Manifests {
    fn default() -> Manifests {
        Manifests(Mutex::new(lru::LruCache::new(
            std::num::NonZeroUsize::new(256).expect("nonzero"),
        )))
    }
}

impl Manifests {
    /// The manifest of `node` at `version`, if it is at hand.
    pub fn of_version(&self, node: NodeId, version: u64) -> Option<Arc<Manifest>> {
        self.0
            .lock_or_recover()
            .get(&node)
            .filter(|m| m.version == version)
            .cloned()
    }

    pub fn put(&self, m: Arc<Manifest>) {
        self.0.lock_or_recover().put(m.node, m);
    }
}

/// The state of every file this mount is working on (staging, handles, upload claim), one
/// lock per file: the map's own lock is held only to find, add or sweep.
///
/// States with nothing in them are swept out as the map grows (a mount that has touched
/// millions of files does not keep a state for each): a state goes only when no one else
/// holds it — checked under the map's lock, so no one can take it meanwhile — and it holds
/// nothing (no local copy, handle, write, upload or pending kernel-cache drop).
#[derive(Default)]
pub struct FileStates(Mutex<StatesMap>);

#[derive(Default)]
struct StatesMap {
    states: HashMap<NodeId, Arc<FileState>>,
    /// How many states the last sweep kept.
    kept: usize,
}

/// The map is swept when it holds more than this many states, and twice as many as the
/// last sweep kept.
const SWEEP_FROM: usize = 4096;

impl FileStates {
    /// The state of `node`, if this mount is working on it.
    pub fn get(&self, node: NodeId) -> Option<Arc<FileState>> {
        self.0.lock_or_recover().states.get(&node).cloned()
    }

    /// The state of `node`, made empty if there was none.
    pub fn get_or_add(&self, node: NodeId) -> Arc<FileState> {
        let mut map = self.0.lock_or_recover();
        if !map.states.contains_key(&node) && map.states.len() >= SWEEP_FROM.max(2 * map.kept) {
            map.states
                .retain(|_, st| Arc::strong_count(st) > 1 || !st.is_idle());
            map.kept = map.states.len();
        }
        map.states.entry(node).or_default().clone()
    }

    /// How many states are kept (for tests).
    pub fn len(&self) -> usize {
        self.0.lock_or_recover().states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// (version, size) of each file when this client last opened it: the kernel keeps its
/// cached pages of an open only when they are unchanged since. The most recent
/// [`LAST_OPENED`] files are remembered (a file forgotten only loses that one keep).
pub struct LastOpened(Mutex<lru::LruCache<NodeId, (u64, u64)>>);

const LAST_OPENED: usize = 65_536;

impl Default for LastOpened {
    fn default() -> LastOpened {
        LastOpened(Mutex::new(lru::LruCache::new(
            std::num::NonZeroUsize::new(LAST_OPENED).expect("nonzero"),
        )))
    }
}

impl LastOpened {
    /// Records an open of `node` at (`version`, `size`); whether it is what was last opened.
    pub fn same_as_last(&self, node: NodeId, version: u64, size: u64) -> bool {
        let mut o = self.0.lock_or_recover();
        o.put(node, (version, size)) == Some((version, size))
    }

    /// The kernel's pages of `node` cannot be trusted at its next open.
    pub fn forget(&self, node: NodeId) {
        self.0.lock_or_recover().pop(&node);
    }
}

/// Size and change times of a staging file: when they differ from the recorded stamp, the
/// kernel wrote to it directly (local I/O) and the content counts as changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub fn of(file: &File) -> std::io::Result<Stamp> {
        Ok(Stamp::from_metadata(&file.metadata()?))
    }

    fn from_metadata(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    fn mtime(&self) -> Timestamp {
        Timestamp {
            secs: self.mtime.0,
            nanos: self.mtime.1.clamp(0, 999_999_999) as u32,
        }
    }
}

/// Local content of one file.
pub struct Staging {
    pub path: PathBuf,
    /// The open staging file while something uses it; closed when the file has no open
    /// handle and no upload (a clone of 10,000 files must not hold 10,000 descriptors).
    file: Option<Arc<File>>,
    /// Every descriptor handed out, while alive: the file is reused for another's content
    /// only once all are gone (see `cache::staging_files`).
    holders: Vec<std::sync::Weak<File>>,
    /// Whether the kernel was given the file for local I/O (a process may map it then).
    for_kernel: bool,
    /// Whether the kernel was given it for writing: only then can the file change behind
    /// this process (by write(2) on a handle, or a shared mapping, which outlives it).
    kernel_writable: bool,
    /// When [`Staging::refresh`] last looked at the file.
    refreshed: Option<Instant>,
    /// Server version this content started from.
    pub base_version: u64,
    pub size: u64,
    pub mtime: Timestamp,
    /// Bumped by every change of the content.
    pub gen: u64,
    /// The generation last committed on the server (equal to `gen` when clean).
    pub committed_gen: u64,
    /// The generation last recorded in the journal.
    pub journaled_gen: u64,
    /// The staging file as last accounted for (see [`Staging::refresh`]).
    pub stamp: Stamp,
}

impl Staging {
    /// Local content at `path`, open as `file`, from server version `base_version`.
    pub fn new(
        path: PathBuf,
        file: File,
        base_version: u64,
        size: u64,
        mtime: Timestamp,
    ) -> Staging {
        let stamp = Stamp::of(&file).unwrap_or_default();
        let file = Arc::new(file);
        Staging {
            path,
            holders: vec![Arc::downgrade(&file)],
            for_kernel: false,
            kernel_writable: false,
            refreshed: None,
            file: Some(file),
            base_version,
            size,
            mtime,
            gen: 0,
            committed_gen: 0,
            journaled_gen: 0,
            stamp,
        }
    }

    /// The staging file, opened again if its descriptor was closed.
    pub fn file(&mut self) -> std::io::Result<Arc<File>> {
        if let Some(f) = &self.file {
            return Ok(f.clone());
        }
        let f = Arc::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)?,
        );
        self.file = Some(f.clone());
        self.holders.retain(|h| h.strong_count() > 0);
        self.holders.push(Arc::downgrade(&f));
        Ok(f)
    }

    /// Gives the file up: it is deleted (or, once nothing holds it, reused) in the
    /// background. Descriptors handed out keep reading the content they had.
    pub fn discard(self, files: &crate::cache::staging_files::StagingFiles) {
        let Staging {
            path,
            holders,
            for_kernel,
            ..
        } = self;
        files.remove(path, holders, for_kernel);
    }

    /// [`Staging::refresh`] for attribute answers (getattr, listings), which come by the
    /// thousand (`ls -l`, `find`): skipped when only this process writes the file (its own
    /// writes are counted as they happen), done every time while a handle has the kernel
    /// write it (write(2) then stat must agree), and otherwise at most every
    /// [`LAZY_REFRESH`]: then only a shared mapping left after close can write, and POSIX
    /// lets a mapping's mtime lag until `msync`/`munmap` (its size cannot change). Once no
    /// one has the file open for writing any more, no mapping can appear without a new
    /// handle (which comes through this process), so after one last look it is only this
    /// process that writes it again.
    pub fn refresh_for_stat(&mut self, kernel_writing: bool) {
        let due = match self.refreshed {
            _ if !self.kernel_writable => false,
            _ if kernel_writing => true,
            None => true,
            Some(at) => at.elapsed() >= LAZY_REFRESH,
        };
        if !due {
            return;
        }
        // Asked before the last look, so no write can fall between the two.
        let settled = !kernel_writing
            && self.file.is_none()
            && crate::cache::leases::nobody_writes(&self.path);
        self.refresh();
        if settled {
            self.kernel_writable = false;
        }
    }

    /// The file, for the kernel to do I/O on directly (FUSE passthrough), for writing too
    /// when `writable`.
    pub fn kernel_file(&mut self, writable: bool) -> std::io::Result<Arc<File>> {
        self.for_kernel = true;
        self.kernel_writable |= writable;
        self.file()
    }

    /// Closes this client's descriptor (handed-out clones stay open until dropped).
    pub fn close_fd(&mut self) {
        self.file = None;
    }

    fn stamp_now(&self) -> std::io::Result<Stamp> {
        match &self.file {
            Some(f) => Stamp::of(f),
            None => Ok(Stamp::from_metadata(&std::fs::metadata(&self.path)?)),
        }
    }

    pub fn dirty(&self) -> bool {
        self.gen != self.committed_gen
    }

    /// Accounts for changes the kernel made to the staging file directly: a new stamp is a
    /// new generation, with the file's own size and mtime.
    pub fn refresh(&mut self) {
        self.refreshed = Some(Instant::now());
        let Ok(now) = self.stamp_now() else {
            return;
        };
        if now != self.stamp {
            self.stamp = now;
            self.size = now.size;
            self.mtime = now.mtime();
            self.gen += 1;
        }
    }
}

/// How the kernel does I/O on a file's open handles (one mode per file at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IoMode {
    /// No handle open.
    #[default]
    Closed,
    /// Reads and writes come to this process.
    Relayed,
    /// The kernel reads and writes the staging file directly.
    Local,
}

#[derive(Default)]
pub struct FileInner {
    pub staging: Option<Staging>,
    /// Open handles of any kind; local content is never dropped while one is open.
    pub open_handles: u32,
    pub mode: IoMode,
    /// Set by a local-mode open: the kernel's own page cache of the file (from relayed
    /// reads) may be older than the staging file, so the next relayed open must drop it.
    pub kernel_pages_stale: bool,
    pub open_writers: u32,
    /// Writes in progress (the uploader only takes a snapshot when none are).
    pub writing: u32,
    pub uploading: bool,
}

/// Per-file state with its own lock, so one file's download never blocks another file.
#[derive(Default)]
pub struct FileState {
    pub inner: Mutex<FileInner>,
    pub changed: Condvar,
    /// Its last name was removed while handles were open: they keep working on the
    /// staging file until the last one closes (the content is then uploaded under no name).
    /// Outside `inner`, so attribute lookups made under the file's lock can read it.
    pub unlinked: std::sync::atomic::AtomicBool,
}

impl FileState {
    /// Holds nothing a fresh state would not: no local copy, handle, write, upload claim,
    /// name removed under open handles, nor a kernel cache to drop at the next open. (A
    /// state whose lock is taken is not idle.)
    fn is_idle(&self) -> bool {
        if self.is_unlinked() {
            return false;
        }
        let Ok(inner) = self.inner.try_lock() else {
            return false;
        };
        inner.staging.is_none()
            && inner.open_handles == 0
            && inner.open_writers == 0
            && inner.writing == 0
            && !inner.uploading
            && !inner.kernel_pages_stale
            && inner.mode == IoMode::Closed
    }

    pub fn is_unlinked(&self) -> bool {
        self.unlinked.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn set_unlinked(&self, v: bool) {
        self.unlinked.store(v, std::sync::atomic::Ordering::Release);
    }
}

impl FileState {
    pub fn lock(&self) -> MutexGuard<'_, FileInner> {
        self.inner.lock_or_recover()
    }
}

impl FileInner {
    /// Closes the staging file's descriptor when nothing uses it (no open handle, no
    /// upload); it is opened again on demand.
    pub fn close_idle_fd(&mut self) {
        if self.open_handles == 0 && !self.uploading {
            if let Some(s) = self.staging.as_mut() {
                s.close_fd();
            }
        }
    }
}

/// What `open` answers.
pub struct Opened {
    pub fh: u64,
    pub keep_cache: bool,
    /// In local mode: the staging file, for the kernel to read and write directly.
    pub local: Option<Arc<File>>,
    /// A close of this handle has nothing for the core to do (it cannot write, so there is
    /// nothing to journal): the kernel may skip the FLUSH round trip that every close(2)
    /// otherwise waits for. POSIX locks taken through it go at release instead.
    pub no_flush: bool,
}

impl FsCore {
    pub(crate) fn file_state(&self, node: NodeId) -> Arc<FileState> {
        self.files.get_or_add(node)
    }

    pub(crate) fn existing_file_state(&self, node: NodeId) -> Option<Arc<FileState>> {
        self.files.get(node)
    }

    /// Size and mtime of unsent local content, if any.
    pub(crate) fn local_overlay(&self, node: NodeId) -> Option<(u64, Timestamp)> {
        let st = self.existing_file_state(node)?;
        let mut inner = st.lock();
        let kernel_writing = inner.open_writers > 0 && inner.mode == IoMode::Local;
        let s = inner.staging.as_mut()?;
        s.refresh_for_stat(kernel_writing);
        s.dirty().then_some((s.size, s.mtime))
    }

    pub fn open(&self, ino: u64, flags: i32) -> Result<Opened, FsError> {
        if super::versions::is_virtual(ino) {
            return self.versions_open(ino, flags);
        }
        let node = self.node_of(ino);
        let acc = flags & libc::O_ACCMODE;
        let writable = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        if writable {
            self.check_writable()?;
        }
        let attr = self.server_attr(node)?;
        // O_TRUNC needs write access even on a read-only descriptor (as open(2) checks).
        if (writable || flags & libc::O_TRUNC != 0) && attr.read_only {
            return Err(FsError::ReadOnly);
        }
        if attr.kind == NodeKind::Dir && writable {
            return Err(FsError::Remote(crate::remote::RemoteError::Server(
                shelf_protocol::ErrorCode::IsDir.into(),
            )));
        }
        let st = self.file_state(node);
        let mut inner = st.lock();
        let local = self.open_mode_locked(node, &attr, &mut inner, writable, flags)?;
        inner.open_handles += 1;
        if writable {
            inner.open_writers += 1;
            self.write_behind.watch(node);
        }
        let mut keep_cache = false;
        if local.is_none() {
            inner.mode = IoMode::Relayed;
            let stale = std::mem::take(&mut inner.kernel_pages_stale);
            drop(inner);
            let stat = self.stat_of(&attr);
            keep_cache = self.keep_cache(node, attr.version, stat.size) && !stale;
        } else {
            inner.mode = IoMode::Local;
            inner.kernel_pages_stale = true;
        }
        let fh = self.handles.open_file(Handle {
            node,
            writable,
            last_end: 0,
            version: None,
            lock_owners: Vec::new(),
        });
        Ok(Opened {
            fh,
            keep_cache,
            local,
            no_flush: !writable,
        })
    }

    /// Picks local or relayed I/O for a new handle, preparing the staging file for local
    /// I/O, and applies O_TRUNC. Returns the staging file in local mode.
    fn open_mode_locked(
        &self,
        node: NodeId,
        attr: &shelf_protocol::Attr,
        inner: &mut FileInner,
        writable: bool,
        flags: i32,
    ) -> Result<Option<Arc<File>>, FsError> {
        if inner.open_handles == 0 {
            inner.mode = IoMode::Closed;
            // Close-to-open consistency: a clean copy of an older version is dropped when
            // the file is opened again after another device committed.
            let stale = inner.staging.as_mut().is_some_and(|s| {
                s.refresh();
                !s.dirty() && attr.version > s.base_version
            });
            if stale {
                if let Some(s) = inner.staging.take() {
                    s.discard(&self.staging_files);
                }
                self.forget_clean_copy(node);
            }
        }
        let local_ok = attr.kind == NodeKind::File
            && self.passthrough.load(std::sync::atomic::Ordering::Relaxed)
            && match inner.mode {
                IoMode::Closed => writable || inner.staging.is_some(),
                IoMode::Local => true,
                IoMode::Relayed => false,
            };
        let truncate = writable && flags & libc::O_TRUNC != 0;
        if truncate {
            self.resize_locked(node, inner, 0)?;
        } else if local_ok {
            self.ensure_staging(node, inner, u64::MAX)?;
        }
        if !local_ok {
            return Ok(None);
        }
        if let Some(s) = inner.staging.as_ref() {
            if !s.dirty() {
                self.touch_clean_copy(node);
            }
        }
        inner
            .staging
            .as_mut()
            .map(|s| s.kernel_file(writable))
            .transpose()
            .map_err(FsError::from)
    }

    pub fn local_io_enabled(&self) -> bool {
        self.passthrough.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn disable_local_io(&self) {
        self.passthrough
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.record_io_mode();
    }

    /// Writes the current I/O mode into the cache folder for `shelf status`.
    pub fn record_io_mode(&self) {
        let mode = if self.local_io_enabled() {
            "local"
        } else {
            "relayed"
        };
        crate::cache::set_io_mode(&self.cache.root, mode);
    }

    /// The kernel could not take the staging file of a just-opened handle for local I/O
    /// (no passthrough support, or no permission): the handle, and from now on every new
    /// one, is relayed.
    pub fn local_io_failed(&self, fh: u64) {
        self.disable_local_io();
        let Ok((node, _, _)) = self.handle(fh) else {
            return;
        };
        let st = self.file_state(node);
        let mut inner = st.lock();
        if inner.mode == IoMode::Local && inner.open_handles == 1 {
            inner.mode = IoMode::Relayed;
            inner.kernel_pages_stale = false;
            self.opened.forget(node);
        }
    }

    /// Creates (or, without O_EXCL, opens) a file and opens it.
    pub fn create(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(Stat, Opened), FsError> {
        self.check_writable()?;
        self.refuse_virtual(&[parent])?;
        let name = super::check_name(name)?;
        let parent_node = self.node_of(parent);
        self.check_node_writable(parent_node)?;
        let exclusive = flags & libc::O_EXCL != 0;
        let new = super::pending::NewNode {
            exclusive,
            ..super::pending::NewNode::of(NodeKind::File, mode & 0o7777)
        };
        let made = self.make(parent_node, name, new);
        let attr = match made {
            Ok(a) => a,
            // Queued offline over an existing name: O_CREAT without O_EXCL opens it.
            Err(e) if !exclusive && e.errno() == libc::EEXIST => {
                let stat = self.lookup(parent, std::ffi::OsStr::new(name))?;
                self.server_attr(self.node_of(stat.ino))?
            }
            Err(e) => return Err(e),
        };
        let opened = self.open(self.ino_of_node(attr.node), flags)?;
        let attr = self.server_attr(attr.node)?;
        Ok((self.stat_of(&attr), opened))
    }

    fn ino_of_node(&self, node: NodeId) -> u64 {
        self.stat_of_ino(node)
    }

    fn stat_of_ino(&self, node: NodeId) -> u64 {
        if node == self.node_of(super::ROOT_INO) {
            super::ROOT_INO
        } else {
            node
        }
    }

    fn handle(&self, fh: u64) -> Result<(NodeId, bool, u64), FsError> {
        self.handles.file(fh).ok_or(FsError::BadHandle)
    }

    /// Makes sure `node` has a staging file, filling it with the current content unless the
    /// caller is about to cut it to `keep` bytes (only the first `keep` bytes are fetched).
    pub(crate) fn ensure_staging(
        &self,
        node: NodeId,
        inner: &mut FileInner,
        keep: u64,
    ) -> Result<(), FsError> {
        if inner.staging.is_some() {
            return Ok(());
        }
        let attr = self.server_attr(node)?;
        let path = self.cache.staging().join(node.to_string());
        let file = self.staging_files.create(&path)?;
        let manifest = if attr.version > 0 && keep > 0 {
            Some(self.manifest(node)?)
        } else {
            None
        };
        let mut base_version = attr.version;
        let mut size = 0;
        if let Some(m) = manifest {
            base_version = m.version;
            let mut idx = 0;
            while idx < m.chunks.len() && m.offsets[idx] < keep {
                let end = (idx + 64).min(m.chunks.len());
                let bodies = self.fetch_chunks(node, &m.chunks[idx..end])?;
                for (i, body) in bodies.iter().enumerate() {
                    // Runs of zeros stay holes (set_len below): sparse files stay sparse.
                    if body.iter().any(|&b| b != 0) {
                        file.write_all_at(body, m.offsets[idx + i])?;
                    }
                }
                idx = end;
            }
            size = m.size;
            file.set_len(size)?;
        }
        inner.staging = Some(Staging::new(path, file, base_version, size, attr.mtime));
        Ok(())
    }

    fn resize_locked(&self, node: NodeId, inner: &mut FileInner, size: u64) -> Result<(), FsError> {
        self.ensure_staging(node, inner, size)?;
        let s = inner.staging.as_mut().ok_or(FsError::Invalid)?;
        s.refresh();
        s.file()?.set_len(size)?;
        s.size = size;
        s.gen += 1;
        s.mtime = Timestamp::now();
        Ok(())
    }

    /// truncate(2) / ftruncate(2): a content change like a write. When no handle is open for
    /// writing it counts as closed at once (journaled and queued).
    pub(crate) fn truncate(&self, node: NodeId, size: u64) -> Result<(), FsError> {
        let st = self.file_state(node);
        let mut inner = st.lock();
        self.resize_locked(node, &mut inner, size)?;
        if inner.open_writers == 0 {
            self.journal_locked(node, &mut inner)?;
            inner.close_idle_fd();
            drop(inner);
            self.queue.push(node);
        }
        Ok(())
    }

    pub(crate) fn set_local_mtime(&self, node: NodeId, t: Timestamp) -> Result<(), FsError> {
        let Some(st) = self.existing_file_state(node) else {
            return Ok(());
        };
        let mut inner = st.lock();
        let mut rejournal = false;
        if let Some(s) = inner.staging.as_mut() {
            // Content written directly by the kernel counts first; then the staging file
            // takes the new mtime too, so its stamp keeps telling content changes apart.
            s.refresh();
            s.mtime = t;
            let times = std::fs::FileTimes::new().set_modified(t.to_system());
            if let Ok(f) = s.file() {
                if f.set_times(times).is_ok() {
                    if let Ok(stamp) = Stamp::of(&f) {
                        s.stamp = stamp;
                    }
                }
            }
            rejournal = s.dirty() && s.journaled_gen == s.gen;
        }
        if rejournal {
            if let Some(s) = inner.staging.as_mut() {
                s.journaled_gen = 0;
            }
            self.journal_locked(node, &mut inner)?;
        }
        inner.close_idle_fd();
        Ok(())
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, FsError> {
        let (node, writable, _) = self.handle(fh)?;
        if !writable {
            return Err(FsError::BadHandle);
        }
        let st = self.file_state(node);
        let file = {
            let mut inner = st.lock();
            self.ensure_staging(node, &mut inner, u64::MAX)?;
            let file = inner.staging.as_mut().map(Staging::file).transpose()?;
            inner.writing += 1;
            file
        };
        let result = match &file {
            Some(f) => f.write_all_at(data, offset),
            None => Err(std::io::Error::from_raw_os_error(libc::EIO)),
        };
        let mut inner = st.lock();
        inner.writing -= 1;
        if let Some(s) = inner.staging.as_mut() {
            s.gen += 1;
            if result.is_ok() {
                s.size = s.size.max(offset + data.len() as u64);
                s.mtime = Timestamp::now();
            }
        }
        drop(inner);
        st.changed.notify_all();
        result?;
        Ok(data.len() as u32)
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<ReadData, FsError> {
        let (node, _, last_end) = self.handle(fh)?;
        let sequential = offset == last_end;
        let old_version = self.handles.read_to(fh, offset + u64::from(size));
        if let Some(version) = old_version {
            let m = self.version_manifest(node, version)?;
            return self
                .read_manifest(&m, offset, size, sequential)
                .map(ReadData::Owned);
        }
        // Local content first.
        if let Some(st) = self.existing_file_state(node) {
            let mut inner = st.lock();
            let stale = match inner.staging.as_ref() {
                Some(s) if !s.dirty() => self
                    .cached_attr(node)
                    .is_some_and(|a| a.version > s.base_version),
                _ => false,
            };
            if stale && inner.open_writers == 0 && inner.open_handles <= 1 {
                // Another device committed a newer version: drop the old local copy.
                if let Some(s) = inner.staging.take() {
                    s.discard(&self.staging_files);
                }
            }
            if let Some(s) = inner.staging.as_mut() {
                let file = s.file()?;
                let len = s.size.saturating_sub(offset).min(u64::from(size)) as usize;
                let clean = !s.dirty();
                drop(inner);
                if clean {
                    self.touch_clean_copy(node);
                }
                let mut buf = AlignedBuf::zeroed(len);
                let mut got = 0;
                while got < len {
                    let n = file.read_at(&mut buf[got..], offset + got as u64)?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                buf.truncate(got);
                return Ok(ReadData::Aligned(buf));
            }
        }
        self.read_remote(node, offset, size, sequential)
            .map(ReadData::Owned)
    }

    pub(crate) fn manifest(&self, node: NodeId) -> Result<Arc<Manifest>, FsError> {
        self.manifest_with(node, true)
    }

    /// [`FsCore::manifest`]; `bodies`: whether a small file's content may come along.
    pub(crate) fn manifest_with(
        &self,
        node: NodeId,
        bodies: bool,
    ) -> Result<Arc<Manifest>, FsError> {
        let attr = self.server_attr(node)?;
        if let Some(found) = self.manifests.of_version(node, attr.version) {
            return Ok(found);
        }
        // A small file comes with its bodies (one round trip: a cold `cat` of many small
        // files on a new device waits for one answer per file, not two).
        let (version, chunks) = match bodies && attr.size <= SMALL_READ {
            true => {
                let small = self.remote.get_small_file(node, SMALL_READ as u32)?;
                for (r, body) in small.chunks.iter().zip(small.bodies) {
                    if body.id != r.id || crate::chunker::chunk_id(&body.data) != r.id {
                        tracing::error!(chunk = %r.id, "downloaded chunk failed verification");
                        return Err(FsError::Io(std::io::Error::from_raw_os_error(libc::EIO)));
                    }
                    self.chunks.put(&r.id, Arc::new(body.data));
                }
                (small.version, small.chunks)
            }
            false => {
                let answer = self.remote.get_manifest(node)?;
                (answer.version, answer.chunks)
            }
        };
        let m = Arc::new(Manifest::new(node, version, chunks));
        self.manifests.put(m.clone());
        Ok(m)
    }

    fn read_remote(
        &self,
        node: NodeId,
        offset: u64,
        size: u32,
        sequential: bool,
    ) -> Result<Vec<u8>, FsError> {
        let m = self.manifest(node)?;
        self.read_manifest(&m, offset, size, sequential)
    }

    /// Reads a range of a version from the chunk cache or the server.
    fn read_manifest(
        &self,
        m: &Manifest,
        offset: u64,
        size: u32,
        sequential: bool,
    ) -> Result<Vec<u8>, FsError> {
        if offset >= m.size || size == 0 {
            return Ok(Vec::new());
        }
        let end = (offset + u64::from(size)).min(m.size);
        let first = m.chunk_at(offset);
        let last = m.chunk_at(end - 1);
        if sequential {
            // The next chunks come in the background while this read is answered.
            let ahead_end = (last + 1 + READ_AHEAD_CHUNKS).min(m.chunks.len());
            self.prefetch_chunks(m.node, &m.chunks[last + 1..ahead_end]);
        }
        let bodies = self.fetch_chunks(m.node, &m.chunks[first..=last])?;
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (i, body) in bodies.iter().enumerate().take(last - first + 1) {
            let start = m.offsets[first + i];
            let from = offset.saturating_sub(start) as usize;
            let to = ((end - start) as usize).min(body.len());
            if from < to {
                out.extend_from_slice(&body[from..to]);
            }
        }
        Ok(out)
    }

    /// Bodies of `refs`, from the cache, from read-ahead under way, or fetched.
    pub(crate) fn fetch_chunks(
        &self,
        node: NodeId,
        refs: &[ChunkRef],
    ) -> Result<Vec<Arc<Vec<u8>>>, FsError> {
        let missing: Vec<ChunkId> = refs
            .iter()
            .filter(|r| !self.chunks.contains(&r.id))
            .map(|r| r.id)
            .collect();
        if !missing.is_empty() {
            self.wait_for_prefetch(&missing);
        }
        self.fetch_now(node, refs)
    }

    /// Bodies of `refs`, from the cache or fetched in parallel and verified.
    pub(crate) fn fetch_now(
        &self,
        node: NodeId,
        refs: &[ChunkRef],
    ) -> Result<Vec<Arc<Vec<u8>>>, FsError> {
        let mut out: Vec<Option<Arc<Vec<u8>>>> =
            refs.iter().map(|r| self.chunks.get(&r.id)).collect();
        let missing: Vec<usize> = (0..refs.len()).filter(|&i| out[i].is_none()).collect();
        // Several requests of a few chunks each, all in flight at once.
        let tickets: Vec<(&[usize], crate::remote::calls::ChunksTicket)> = missing
            .chunks(READ_BATCH_CHUNKS)
            .map(|group| {
                let ids = group.iter().map(|&i| refs[i].id).collect();
                (group, self.remote.submit_get_chunks(node, ids))
            })
            .collect();
        for (group, t) in tickets {
            let refs_of: Vec<ChunkRef> = group.iter().map(|&i| refs[i]).collect();
            for (&i, body) in group.iter().zip(self.file_fetched(&refs_of, t)?) {
                out[i] = Some(body);
            }
        }
        // Every missing body was asked for, and each answer holds as many as asked.
        Ok(out.into_iter().flatten().collect())
    }

    /// Waits for the answer to a download of `refs`, checks each body against its id and
    /// files it in the chunk cache.
    pub(crate) fn file_fetched(
        &self,
        refs: &[ChunkRef],
        ticket: crate::remote::calls::ChunksTicket,
    ) -> Result<Vec<Arc<Vec<u8>>>, FsError> {
        let bodies = ticket.wait()?;
        let mut out = Vec::with_capacity(refs.len());
        for (r, body) in refs.iter().zip(bodies) {
            if body.id != r.id || crate::chunker::chunk_id(&body.data) != r.id {
                tracing::error!(chunk = %r.id, "downloaded chunk failed verification");
                return Err(FsError::Io(std::io::Error::from_raw_os_error(libc::EIO)));
            }
            let body = Arc::new(body.data);
            self.chunks.put(&r.id, body.clone());
            out.push(body);
        }
        Ok(out)
    }

    /// Records a dirty file in the journal (once per generation).
    pub(crate) fn journal_locked(
        &self,
        node: NodeId,
        inner: &mut FileInner,
    ) -> Result<(), FsError> {
        let Some(s) = inner.staging.as_mut() else {
            return Ok(());
        };
        s.refresh();
        if !s.dirty() || s.journaled_gen == s.gen {
            return Ok(());
        }
        self.journal
            .write(&Record::new(node, s.base_version, s.mtime, s.size))?;
        s.journaled_gen = s.gen;
        if self.journal.path(node).is_none() {
            let path = self.seen_path(node);
            if !path.starts_with('#') {
                self.journal.set_path(node, &path)?;
            }
        }
        self.background.note_unsynced();
        Ok(())
    }

    /// Every close(2): what was written is recorded in the journal before close returns.
    pub fn flush(&self, fh: u64) -> Result<(), FsError> {
        let (node, writable, _) = self.handle(fh)?;
        if !writable {
            return Ok(());
        }
        let st = self.file_state(node);
        let mut inner = st.lock();
        self.journal_locked(node, &mut inner)
    }

    /// The last reference to an open file went away: queue its upload.
    pub fn release(&self, fh: u64) -> Result<(), FsError> {
        let handle = self.handles.close_file(fh).ok_or(FsError::BadHandle)?;
        for &owner in &handle.lock_owners {
            self.release_node_locks(handle.node, owner);
        }
        if handle.version.is_some() {
            return Ok(());
        }
        let st = self.file_state(handle.node);
        let mut inner = st.lock();
        inner.open_handles = inner.open_handles.saturating_sub(1);
        if inner.open_handles == 0 {
            inner.mode = IoMode::Closed;
        }
        if inner.open_handles == 0 && st.is_unlinked() {
            // The last descriptor of a file without a name: its content goes up under no
            // name (into the deleted file's history) and then the local copy goes.
            inner.open_writers = 0;
            if let Some(s) = inner.staging.as_mut() {
                s.refresh();
            }
            let dirty = inner.staging.as_ref().is_some_and(Staging::dirty);
            let journaled = match dirty {
                true => self.journal_locked(handle.node, &mut inner),
                false => Ok(()),
            };
            inner.close_idle_fd();
            drop(inner);
            match dirty {
                true => self.queue.push(handle.node),
                false => self.drop_local(handle.node),
            }
            return journaled;
        }
        if !handle.writable {
            inner.close_idle_fd();
            return Ok(());
        }
        inner.open_writers = inner.open_writers.saturating_sub(1);
        if let Some(s) = inner.staging.as_mut() {
            s.refresh();
        }
        let dirty = inner.staging.as_ref().is_some_and(Staging::dirty);
        // mmap writers may never flush; journal here too. Queue the upload even if the
        // journal cannot be written (cache disk full): the data is still in staging.
        let journaled = if dirty {
            self.journal_locked(handle.node, &mut inner)
        } else {
            Ok(())
        };
        let queue = dirty && inner.open_writers == 0;
        inner.close_idle_fd();
        drop(inner);
        if queue {
            self.queue.push(handle.node);
        }
        journaled
    }

    /// fsync(2): returns once the current content is committed on the server and flushed there.
    pub fn fsync(&self, fh: u64) -> Result<(), FsError> {
        let (node, _, _) = self.handle(fh)?;
        // Every namespace change made before it first (the file's create among them).
        self.fsyncdir()?;
        let old_version = self.handles.version(fh);
        if old_version.is_some() {
            return Ok(());
        }
        // A dropped or stalled connection is retried (the remote reconnects) for a while
        // before fsync gives up with EIO; the content stays journaled either way.
        let deadline = Instant::now() + fsync_patience();
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            match self.upload(node, true) {
                Err(FsError::Remote(e)) if e.is_transient() && Instant::now() < deadline => {
                    tracing::info!(node, error = %e, "fsync: the server did not answer; retrying");
                    crate::blocking::about_to_block();
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                }
                // The background uploader may have met a lasting refusal first (and kept the
                // content elsewhere): fsync still reports it.
                Ok(()) => {
                    let refused = self.refused.take(node);
                    return match refused {
                        Some(code) => Err(FsError::Remote(crate::remote::RemoteError::Server(
                            code.into(),
                        ))),
                        None => Ok(()),
                    };
                }
                other => return other,
            }
        }
    }

    /// fsync(2) of a directory: returns once every namespace change made before it is
    /// committed on the server and flushed there (EIO after the fsync patience).
    pub fn fsyncdir(&self) -> Result<(), FsError> {
        match self
            .pending
            .wait_sent(self.pending.next_seq(), Some(fsync_patience()))
        {
            true => Ok(()),
            false => Err(FsError::Remote(crate::remote::RemoteError::Disconnected(
                "namespace changes are still waiting for the server".into(),
            ))),
        }
    }

    /// Restores the state of files whose close returned before the client was killed.
    pub(crate) fn replay_journal(&self) -> Result<(), FsError> {
        let records = self.journal.records();
        let mut keep = std::collections::HashSet::new();
        for rec in &records {
            let path = self.cache.staging().join(rec.node.to_string());
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(node = rec.node, error = %e, "journaled file has no staging copy; it cannot be uploaded");
                    self.journal.remove(rec.node)?;
                    continue;
                }
            };
            let size = file.metadata()?.len();
            let mut staging = Staging::new(path, file, rec.base_version, size, rec.mtime);
            // Dirty and journaled; the uploader opens it again when its turn comes.
            staging.gen = 1;
            staging.journaled_gen = 1;
            staging.close_fd();
            self.file_state(rec.node).lock().staging = Some(staging);
            keep.insert(rec.node.to_string());
            self.queue.push(rec.node);
        }
        // Staging files without a record were never closed (or are clean copies): drop them.
        for entry in std::fs::read_dir(self.cache.staging())? {
            let entry = entry?;
            if !keep.contains(&*entry.file_name().to_string_lossy()) {
                self.staging_files.remove(entry.path(), Vec::new(), true);
            }
        }
        if !records.is_empty() {
            tracing::info!(files = records.len(), "replaying uploads from the journal");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_file_states_are_swept_and_busy_or_held_ones_kept() {
        let states = FileStates::default();
        let held = states.get_or_add(1);
        states.get_or_add(2).lock().open_handles = 1;
        states.get_or_add(3).lock().kernel_pages_stale = true;
        states.get_or_add(4).set_unlinked(true);
        for node in 10..(10 + SWEEP_FROM as u64) {
            states.get_or_add(node);
        }
        assert!(states.len() < 10, "{} states kept", states.len());
        // The state someone holds is still the map's: a change made through it is seen.
        held.lock().open_writers = 1;
        assert_eq!(states.get(1).map(|s| s.lock().open_writers), Some(1));
        assert_eq!(states.get(2).map(|s| s.lock().open_handles), Some(1));
        assert!(states.get(3).is_some_and(|s| s.lock().kernel_pages_stale));
        assert!(states.get(4).is_some_and(|s| s.is_unlinked()));
    }

    #[test]
    fn last_opened_remembers_the_latest_files() {
        let opened = LastOpened::default();
        assert!(!opened.same_as_last(1, 3, 10));
        assert!(opened.same_as_last(1, 3, 10));
        for node in 2..(2 + LAST_OPENED as u64) {
            opened.same_as_last(node, 1, 1);
        }
        assert!(!opened.same_as_last(1, 3, 10), "the oldest was forgotten");
    }
}

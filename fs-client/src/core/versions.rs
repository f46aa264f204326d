//! The virtual, read-only `.versions/` folder of every directory.
//!
//! `DIR/.versions` is reachable by name but never listed by its parent's readdir, so `cp
//! -r`, `rsync -a`, `find` and file managers do not walk history (like ZFS's `.zfs`). It
//! holds `NAME.v01`, `NAME.v02`, … for every file of `DIR` with history, deleted files
//! included (the server's [`Request::ListVersions`]); reading one fetches that version's
//! chunks. Anything that would change it is EROFS.
//!
//! Virtual entries get inode numbers from [`VIRTUAL_BASE`] up, far above the server's node
//! ids, handed out once per directory or (node, version) and kept for the mount's life.

use super::files::{Handle, Manifest, Opened};
use super::{DirItem, FsCore, FsError, Stat};
use crate::sync::LockOrRecover;
use shelf_protocol::names::VERSIONS_DIR;
use shelf_protocol::{NodeId, NodeKind, VersionInfo};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Inode numbers at and above this are virtual entries.
pub const VIRTUAL_BASE: u64 = 1 << 62;
/// How long a directory's history listing is reused (the kernel's attribute TTL).
const LISTING_TTL: Duration = Duration::from_secs(1);

#[derive(Clone)]
enum Virtual {
    /// `.versions` of a directory.
    Dir(NodeId),
    /// One version in it.
    File(VersionInfo),
}

/// Virtual inodes, recent listings and version manifests: owns its lock.
#[derive(Default)]
pub struct Virtuals {
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_ino: HashMap<u64, Virtual>,
    dir_ino: HashMap<NodeId, u64>,
    file_ino: HashMap<(NodeId, u64), u64>,
    next: u64,
    listings: HashMap<NodeId, (Instant, Arc<Vec<VersionInfo>>)>,
    manifests: HashMap<(NodeId, u64), Arc<Manifest>>,
}

impl Table {
    fn alloc(&mut self, v: Virtual) -> u64 {
        let ino = VIRTUAL_BASE + self.next;
        self.next += 1;
        self.by_ino.insert(ino, v);
        ino
    }

    fn dir(&mut self, dir: NodeId) -> u64 {
        if let Some(&ino) = self.dir_ino.get(&dir) {
            return ino;
        }
        let ino = self.alloc(Virtual::Dir(dir));
        self.dir_ino.insert(dir, ino);
        ino
    }

    fn file(&mut self, info: &VersionInfo) -> u64 {
        let key = (info.node, info.version);
        if let Some(&ino) = self.file_ino.get(&key) {
            // The same version may show under a newer name; keep what was listed last.
            self.by_ino.insert(ino, Virtual::File(info.clone()));
            return ino;
        }
        let ino = self.alloc(Virtual::File(info.clone()));
        self.file_ino.insert(key, ino);
        ino
    }
}

impl Virtuals {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.inner.lock_or_recover()
    }

    fn get(&self, ino: u64) -> Option<Virtual> {
        self.lock().by_ino.get(&ino).cloned()
    }

    /// The inode of `dir`'s `.versions` folder.
    fn dir_ino(&self, dir: NodeId) -> u64 {
        self.lock().dir(dir)
    }

    /// The inodes of these versions, in order.
    fn file_inos<'a>(&self, infos: impl IntoIterator<Item = &'a VersionInfo>) -> Vec<u64> {
        let mut t = self.lock();
        infos.into_iter().map(|i| t.file(i)).collect()
    }

    /// `dir`'s history listing if read less than [`LISTING_TTL`] ago.
    fn fresh_listing(&self, dir: NodeId) -> Option<Arc<Vec<VersionInfo>>> {
        let t = self.lock();
        let (at, l) = t.listings.get(&dir)?;
        (at.elapsed() < LISTING_TTL).then(|| l.clone())
    }

    fn put_listing(&self, dir: NodeId, list: Arc<Vec<VersionInfo>>) {
        self.lock().listings.insert(dir, (Instant::now(), list));
    }

    /// Drops a directory's cached history listing.
    pub(crate) fn forget_listing(&self, dir: NodeId) {
        self.lock().listings.remove(&dir);
    }

    /// Drops every cached history listing.
    pub(crate) fn forget_listings(&self) {
        self.lock().listings.clear();
    }

    fn manifest(&self, node: NodeId, version: u64) -> Option<Arc<Manifest>> {
        self.lock().manifests.get(&(node, version)).cloned()
    }

    fn put_manifest(&self, m: Arc<Manifest>, node: NodeId, version: u64) {
        let mut t = self.lock();
        if t.manifests.len() > 256 {
            t.manifests.clear();
        }
        t.manifests.insert((node, version), m);
    }
}

/// `NAME.vNN` ([`shelf_protocol::names::version_name`]).
pub fn version_name(info: &VersionInfo) -> String {
    shelf_protocol::names::version_name(&info.name, info.number)
}

pub fn is_virtual(ino: u64) -> bool {
    ino >= VIRTUAL_BASE
}

impl FsCore {
    fn virtual_of(&self, ino: u64) -> Result<Virtual, FsError> {
        self.virtuals.get(ino).ok_or(FsError::NotFound)
    }

    /// Fails with EROFS if any of these inodes is a virtual entry.
    pub(crate) fn refuse_virtual(&self, inos: &[u64]) -> Result<(), FsError> {
        if inos.iter().any(|&i| is_virtual(i)) {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    /// The history of a directory's files, from the server or a listing under a second old.
    fn listing(&self, dir: NodeId) -> Result<Arc<Vec<VersionInfo>>, FsError> {
        if let Some(l) = self.virtuals.fresh_listing(dir) {
            return Ok(l);
        }
        self.settle_node(dir)?;
        let list = Arc::new(self.remote.list_versions(dir)?);
        self.virtuals.put_listing(dir, list.clone());
        Ok(list)
    }

    /// `lookup(DIR, ".versions")`.
    pub(crate) fn versions_dir(&self, parent: u64) -> Result<Stat, FsError> {
        let dir = self.node_of(parent);
        let attr = self.server_attr(dir)?;
        if attr.kind != NodeKind::Dir {
            return Err(FsError::NotFound);
        }
        let ino = self.virtuals.dir_ino(dir);
        let mut stat = self.stat_of(&attr);
        stat.ino = ino;
        stat.perm = 0o555;
        stat.nlink = 2;
        stat.size = 0;
        stat.blocks = 0;
        Ok(stat)
    }

    fn version_stat(&self, ino: u64, info: &VersionInfo) -> Stat {
        Stat {
            ino,
            kind: NodeKind::File,
            perm: 0o444,
            size: info.size,
            blocks: info.size.div_ceil(512),
            atime: info.mtime.to_system(),
            mtime: info.mtime.to_system(),
            ctime: info.created.to_system(),
            nlink: 1,
            uid: self.opts.uid,
            gid: self.opts.gid,
            rdev: 0,
        }
    }

    /// `lookup` inside a `.versions` folder.
    pub(crate) fn versions_lookup(&self, parent: u64, name: &str) -> Result<Stat, FsError> {
        let Virtual::Dir(dir) = self.virtual_of(parent)? else {
            return Err(FsError::NotFound);
        };
        let list = self.listing(dir)?;
        let info = list
            .iter()
            .find(|i| version_name(i) == name)
            .ok_or(FsError::NotFound)?;
        let ino = self.virtuals.file_inos([info])[0];
        Ok(self.version_stat(ino, info))
    }

    /// `getattr` of a virtual entry.
    pub(crate) fn versions_getattr(&self, ino: u64) -> Result<Stat, FsError> {
        match self.virtual_of(ino)? {
            Virtual::Dir(dir) => {
                let parent = if dir == self.node_of(super::ROOT_INO) {
                    super::ROOT_INO
                } else {
                    dir
                };
                let mut stat = self.versions_dir(parent)?;
                stat.ino = ino;
                Ok(stat)
            }
            Virtual::File(info) => Ok(self.version_stat(ino, &info)),
        }
    }

    /// `opendir` of a `.versions` folder: the listing, sorted by name and number.
    pub(crate) fn versions_opendir(&self, ino: u64) -> Result<Vec<DirItem>, FsError> {
        let Virtual::Dir(dir) = self.virtual_of(ino)? else {
            return Err(FsError::Remote(crate::remote::RemoteError::Server(
                shelf_protocol::ErrorCode::NotDir.into(),
            )));
        };
        let me = self.versions_getattr(ino)?;
        let mut items = vec![
            DirItem {
                name: ".".into(),
                stat: me.clone(),
            },
            DirItem {
                name: "..".into(),
                stat: me,
            },
        ];
        let list = self.listing(dir)?;
        let inos = self.virtuals.file_inos(list.iter());
        for (info, ino) in list.iter().zip(inos) {
            items.push(DirItem {
                name: version_name(info),
                stat: self.version_stat(ino, info),
            });
        }
        Ok(items)
    }

    /// `open` of a version: read-only, content never changes (the kernel may keep its pages).
    pub(crate) fn versions_open(&self, ino: u64, flags: i32) -> Result<Opened, FsError> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(FsError::ReadOnly);
        }
        let info = match self.virtual_of(ino)? {
            Virtual::File(info) => info,
            Virtual::Dir(_) => return Err(FsError::Invalid),
        };
        let fh = self.handles.open_file(Handle {
            node: info.node,
            writable: false,
            last_end: 0,
            version: Some(info.version),
            lock_owners: Vec::new(),
        });
        Ok(Opened {
            fh,
            keep_cache: true,
            local: None,
            no_flush: true,
        })
    }

    /// The chunk list of one version (immutable, so cached without expiry).
    pub(crate) fn version_manifest(
        &self,
        node: NodeId,
        version: u64,
    ) -> Result<Arc<Manifest>, FsError> {
        if let Some(m) = self.virtuals.manifest(node, version) {
            return Ok(m);
        }
        let chunks = self.remote.get_version(node, version)?.chunks;
        let m = Arc::new(Manifest::new(node, version, chunks));
        self.virtuals.put_manifest(m.clone(), node, version);
        Ok(m)
    }

    /// Whether `name` is the reserved name of the virtual folder.
    pub(crate) fn is_versions_name(name: &std::ffi::OsStr) -> bool {
        name.to_str() == Some(VERSIONS_DIR)
    }
}

//! The sled database: one tree per kind of record, every record versioned (`format` field)
//! and checked on read.
//!
//! | tree        | key                         | value        |
//! |-------------|-----------------------------|--------------|
//! | `accounts`  | user name                   | [`AccountRec`] |
//! | `sessions`  | BLAKE3(token)               | [`SessionRec`] |
//! | `nodes`     | node id (BE)                | [`NodeRec`]    |
//! | `dirents`   | parent id (BE) ‖ name       | child id (BE)  |
//! | `versions`  | node id (BE) ‖ version (BE) | [`VersionRec`] |
//! | `lineage`   | node id (BE)                | [`history::LineageRec`]: whose history it continues |
//! | `graves`    | parent id (BE) ‖ name       | [`history::GraveRec`]: the deleted file last named so |
//! | `names`     | node id (BE)                | parent id (BE) ‖ name: where the node is (or was last) |
//! | `retention` | account id (BE)             | [`retention::Retention`] (absent: the default) |
//! | `prefs`     | account id (BE) ‖ key       | per-account preferences ([`conflicts::ConflictPolicy`]) |
//! | `feed`      | account id (BE) ‖ seq (BE)  | [`shelf_protocol::Change`] ([`feed`]) |
//!
//! Chunk bodies and their index belong to the [`ChunkStore`]. Every namespace change is one
//! sled transaction over the trees it touches ([`namespace`]).

pub mod accounts;
pub mod conflicts;
pub mod feed;
pub mod history;
pub mod locks;
pub mod namespace;
pub mod retention;

/// A source of the current time.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

use crate::chunkstore::{ChunkStore, PackStore};
use crate::datadir::DataDir;
use crate::error::{Result, StoreError};
use serde::{Deserialize, Serialize};
use shelf_protocol::{Attr, ChunkRef, NodeId, NodeKind, Role, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Format tag of every record written by this version.
pub const FORMAT: u8 = 1;

/// Node ids below this are never handed out (inode 1 is the client's root alias).
const FIRST_NODE_ID: u64 = 1 << 8;

/// An authenticated session, as the handler passes it to the store.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub account: u64,
    pub user: String,
    pub role: Role,
    pub device: String,
    pub root: NodeId,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct AccountRec {
    pub format: u8,
    pub id: u64,
    pub name: String,
    pub role: Role,
    /// argon2id PHC string.
    pub pw_hash: String,
    pub root: NodeId,
    pub created: Timestamp,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SessionRec {
    pub format: u8,
    pub user: String,
    pub device: String,
    pub created: Timestamp,
    pub expires: Timestamp,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NodeRec {
    pub format: u8,
    /// Owning account; the authorisation check compares it with the session's account.
    pub owner: u64,
    /// Directory holding this node (the root names itself).
    pub parent: NodeId,
    pub kind: NodeKind,
    pub mode: u32,
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub atime: Timestamp,
    pub nlink: u32,
    /// Current version of a file (0 = none yet).
    pub version: u64,
    /// Number of directory entries (directories only), so rmdir can check emptiness inside
    /// its transaction.
    pub entries: u64,
    pub target: Option<String>,
    /// Device number of a device node.
    pub rdev: u32,
    /// Owner set by chown (None: the mounting user).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Set when the last name of the node was removed; versions stay for restoring.
    pub deleted: Option<Timestamp>,
}

impl NodeRec {
    pub fn attr(&self, id: NodeId) -> Attr {
        Attr {
            node: id,
            kind: self.kind,
            mode: self.mode,
            size: self.size,
            mtime: self.mtime,
            ctime: self.ctime,
            atime: self.atime,
            nlink: self.nlink,
            version: self.version,
            rdev: self.rdev,
            uid: self.uid,
            gid: self.gid,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct VersionRec {
    pub format: u8,
    pub size: u64,
    pub mtime: Timestamp,
    pub created: Timestamp,
    pub device: String,
    /// The version this one was based on.
    pub base: u64,
    pub chunks: Vec<ChunkRef>,
}

pub struct Store {
    pub db: sled::Db,
    pub accounts: sled::Tree,
    pub sessions: sled::Tree,
    pub nodes: sled::Tree,
    pub dirents: sled::Tree,
    pub versions: sled::Tree,
    pub lineage: sled::Tree,
    pub graves: sled::Tree,
    /// node → parent ‖ name: where a node lives (or last lived), for paths in events.
    pub names: sled::Tree,
    pub chunks: Arc<dyn ChunkStore>,
    /// Per-account retention policies ([`retention::Retention`]).
    pub retention: sled::Tree,
    /// Per-account preferences (the conflict policy).
    pub prefs: sled::Tree,
    /// The change feed ([`feed`]) and its live subscribers.
    pub feed: sled::Tree,
    pub subscribers: feed::Subscribers,
    /// Lock leases (in memory).
    pub locks: locks::Locks,
    /// What time it is: commits and deletions are stamped with it, pruning measures ages
    /// by it. Tests set their own.
    pub clock: Clock,
    /// Commits and chunk uploads hold it shared; the garbage collector holds it alone, so
    /// a chunk is never collected between a commit's check and its write.
    pub gc_lock: std::sync::RwLock<()>,
    /// The data folder, for free-space figures (None for an in-memory store).
    pub data_root: Option<std::path::PathBuf>,
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    let v: T = postcard::from_bytes(bytes)?;
    Ok(v)
}

pub(crate) fn check_format(format: u8, what: &str) -> Result<()> {
    if format != FORMAT {
        return Err(StoreError::Corrupt(format!(
            "{what} record has format {format}, this server reads {FORMAT}"
        )));
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database and pack store of a data folder.
    pub fn open(dir: &DataDir) -> Result<Store> {
        let db = sled::Config::new()
            .path(dir.db())
            // The server's own flusher syncs packs first, then sled (see `ChunkStore`).
            .flush_every_ms(None)
            .cache_capacity(256 << 20)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    StoreError::Io(std::io::Error::other(format!(
                        "the database in {} is in use by a running shelf-server; stop it first",
                        dir.root.display()
                    )))
                }
                other => other.into(),
            })?;
        let chunks: Arc<dyn ChunkStore> = Arc::new(PackStore::open(dir.packs(), &db)?);
        let mut store = Store::with_chunk_store(db, chunks)?;
        store.data_root = Some(dir.root.clone());
        Ok(store)
    }

    pub fn with_chunk_store(db: sled::Db, chunks: Arc<dyn ChunkStore>) -> Result<Store> {
        Ok(Store {
            accounts: db.open_tree("accounts")?,
            sessions: db.open_tree("sessions")?,
            nodes: db.open_tree("nodes")?,
            dirents: db.open_tree("dirents")?,
            versions: db.open_tree("versions")?,
            lineage: db.open_tree("lineage")?,
            graves: db.open_tree("graves")?,
            names: db.open_tree("names")?,
            retention: db.open_tree("retention")?,
            feed: db.open_tree("feed")?,
            prefs: db.open_tree("prefs")?,
            subscribers: feed::Subscribers::default(),
            locks: locks::Locks::default(),
            clock: Arc::new(Timestamp::now),
            gc_lock: std::sync::RwLock::new(()),
            chunks,
            db,
            data_root: None,
        })
    }

    /// The path of a node below its account's root (`files/work/a.txt`), from the `names`
    /// tree; parts that are not known show as `#NODE`.
    pub fn path_of(&self, node: NodeId) -> String {
        let mut parts = Vec::new();
        let mut cur = node;
        for _ in 0..256 {
            match self.names.get(node_key(cur)) {
                Ok(Some(v)) if v.len() >= 8 => {
                    let parent = u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8]));
                    parts.push(String::from_utf8_lossy(&v[8..]).into_owned());
                    if parent == cur {
                        break;
                    }
                    cur = parent;
                }
                // The root (and nodes made before names were recorded).
                _ => {
                    if self.is_root(cur) {
                        break;
                    }
                    parts.push(format!("#{cur}"));
                    break;
                }
            }
        }
        parts.reverse();
        parts.join("/")
    }

    fn is_root(&self, node: NodeId) -> bool {
        match self.nodes.get(node_key(node)) {
            Ok(Some(b)) => decode::<NodeRec>(&b).is_ok_and(|r| r.parent == node),
            _ => false,
        }
    }

    /// The current time by the store's clock.
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// A fresh node id, never reused.
    pub fn new_node_id(&self) -> Result<NodeId> {
        Ok(self.db.generate_id()? + FIRST_NODE_ID)
    }

    /// Makes everything committed so far durable: chunk bodies first, then the database.
    pub fn sync(&self) -> Result<()> {
        self.chunks.sync()?;
        self.db.flush()?;
        Ok(())
    }
}

pub(crate) fn node_key(id: NodeId) -> [u8; 8] {
    id.to_be_bytes()
}

pub(crate) fn dirent_key(parent: NodeId, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&parent.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

/// The version number of a `versions` key.
pub(crate) fn version_of_key(key: &[u8]) -> Result<u64> {
    key.get(8..16)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("version key".into()))
}

pub(crate) fn version_key(node: NodeId, version: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&node.to_be_bytes());
    k[8..].copy_from_slice(&version.to_be_bytes());
    k
}

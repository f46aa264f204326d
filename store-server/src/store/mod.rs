//! The sled database: one tree per kind of record, every record versioned (`format` field)
//! and checked on read.
//!
//! | tree        | key                         | value        |
//! |-------------|-----------------------------|--------------|
//! | `accounts`  | user name                   | [`AccountRec`] |
//! | `sessions`  | BLAKE3(token)               | [`SessionRec`] |
//! | `nodes`     | node id (BE)                | owner ‖ sealed [`NodeRec`] |
//! | `dirents`   | parent id (BE) ‖ name token | child id (BE) ‖ sealed name |
//! | `versions`  | node id (BE) ‖ version (BE) | [`VersionRec`] |
//! | `lineage`   | node id (BE)                | [`history::LineageRec`]: whose history it continues |
//! | `graves`    | parent id (BE) ‖ name token | sealed [`history::GraveRec`]: the deleted file last named so |
//! | `names`     | node id (BE)                | parent id (BE) ‖ sealed name: where the node is (or was last) |
//! | `retention` | account id (BE)             | [`retention::Retention`] (absent: the default) |
//! | `prefs`     | account id (BE) ‖ key       | per-account preferences ([`conflicts::ConflictPolicy`], [`quota`]) |
//! | `feed`      | account id (BE) ‖ seq (BE)  | sealed [`shelf_protocol::Change`] ([`feed`]) |
//! | `feed_heads` | account id (BE)            | the last position of the account's feed |
//! | `keys`      | account id (BE)             | the account's data key, wrapped ([`crate::crypto`]) |
//! | `audit`     | seq (BE)                    | account ‖ sealed [`audit::AuditRec`] (append-only) |
//! | `logins`    | user name                   | [`guard::LoginState`]: failures in a row, locked until |
//! | `shares`    | node ‖ recipient            | [`shares::ShareRec`] |
//! | `shares_in` | recipient ‖ node            | owner (index of what is shared with an account) |
//! | `leases`    | node id (BE)                | the file's lock leases ([`locks`]) |
//! | `lease_holders` | session ‖ node id (BE)  | (empty: which files a session holds leases on) |
//!
//! Everything that could reveal content or names is sealed with the account's data key
//! ([`sealed`]); names are found by keyed-hash tokens.
//!
//! Chunk bodies and their index belong to the [`ChunkStore`]. Every namespace change is one
//! sled transaction over the trees it touches ([`namespace`]).

pub mod accounts;
pub mod admin;
pub mod app_passwords;
pub mod audit;
pub mod batch_tx;
pub mod categories;
pub mod cluster;
pub mod conflicts;
pub mod feed;
pub mod group_commit;
pub mod guard;
pub mod health;
pub mod history;
pub mod links;
pub mod locks;
pub mod namespace;
pub mod places;
pub mod public_links;
pub mod quota;
pub mod retention;
pub mod scrub;
pub mod sealed;
pub mod shares;
pub mod thumbnails;

/// A source of the current time.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

use crate::chunkstore::{ChunkStore, PackStore};
use crate::crypto::{Keyring, MasterKey};
use crate::datadir::DataDir;
use crate::error::{Result, StoreError};
use crate::sealed_chunks::SealedChunks;
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
    /// Set for a public link's visitor ([`public_links`]): what the link allows.
    pub link: Option<shelf_protocol::LinkAccess>,
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
            read_only: false,
        }
    }

    /// [`NodeRec::attr`] as a session that may not change the node sees it.
    pub fn read_only_attr(&self, id: NodeId) -> Attr {
        let mut a = self.attr(id);
        a.read_only = true;
        a.mode &= !0o222;
        a
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
    pub db: crate::kv::Db,
    pub accounts: crate::kv::Tree,
    pub sessions: crate::kv::Tree,
    pub nodes: crate::kv::Tree,
    pub dirents: crate::kv::Tree,
    pub versions: crate::kv::Tree,
    pub lineage: crate::kv::Tree,
    pub graves: crate::kv::Tree,
    /// node → parent ‖ name: where a node lives (or last lived), for paths in events.
    pub names: crate::kv::Tree,
    /// Chunk bodies, sealed on the way in and opened on the way out.
    pub chunks: Arc<dyn ChunkStore>,
    /// Every account's data key (encryption at rest).
    pub keys: Arc<Keyring>,
    /// Per-account retention policies ([`retention::Retention`]).
    pub retention: crate::kv::Tree,
    /// Per-account preferences (the conflict policy).
    pub prefs: crate::kv::Tree,
    /// The change feed ([`feed`]) and its live subscribers.
    pub feed: crate::kv::Tree,
    /// Each account's last feed position.
    pub feed_heads: crate::kv::Tree,
    /// This server's random name among the servers of a shared store ([`cluster`]).
    pub server_id: u64,
    /// The audit log ([`audit`]).
    pub audit: crate::kv::Tree,
    /// Chunk ids of file histories, for share recipients' chunk requests.
    #[allow(clippy::type_complexity)]
    pub history_chunks: std::sync::Mutex<
        std::collections::HashMap<
            (NodeId, u64, bool),
            Arc<std::collections::HashSet<shelf_protocol::ChunkId>>,
        >,
    >,
    /// Grants by node, in memory ([`shares`]).
    #[allow(clippy::type_complexity)]
    pub share_index:
        std::sync::RwLock<std::collections::HashMap<NodeId, Vec<(u64, crate::authz::Access)>>>,
    /// Shares ([`shares`]) and their index by recipient.
    pub shares: crate::kv::Tree,
    pub shares_in: crate::kv::Tree,
    /// Public links ([`public_links`]) and their index by token.
    pub public_links: crate::kv::Tree,
    pub public_link_tokens: crate::kv::Tree,
    /// Photo thumbnails for the web app ([`thumbnails`]).
    pub thumbs: crate::kv::Tree,
    /// App passwords ([`app_passwords`]) by the hash of their secret, and by name.
    pub app_passwords: crate::kv::Tree,
    pub app_password_names: crate::kv::Tree,
    /// Failed logins per account (user name → [`guard::LoginState`]).
    pub logins: crate::kv::Tree,
    /// Failed logins per network address (in memory).
    pub addr_guard: guard::AddressGuard,
    /// How long a lock after failed logins lasts (seconds).
    pub lockout_secs: i64,
    /// When each device last reported failing uploads (a sync alert a minute at most).
    pub sync_alerts: std::sync::Mutex<std::collections::HashMap<(u64, String), i64>>,
    /// Accounts told they reached their quota (one alert each).
    pub quota_alerted: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// Chunks already reported as failing verification (one alert each).
    pub failed_chunks: std::sync::Mutex<std::collections::HashSet<(u64, [u8; 32])>>,
    pub subscribers: feed::Subscribers,
    /// Where nodes are, cached ([`places`]).
    pub places: places::Places,
    /// Lock leases ([`locks`]) by file, and by session.
    pub leases: crate::kv::Tree,
    pub lease_holders: crate::kv::Tree,
    /// What time it is: commits and deletions are stamped with it, pruning measures ages
    /// by it. Tests set their own.
    pub clock: Clock,
    /// Commits and chunk uploads hold it shared; the garbage collector holds it alone, so
    /// a chunk is never collected between a commit's check and its write.
    pub gc_lock: std::sync::RwLock<()>,
    /// This server's shared hold on the store-wide garbage-collection gate ([`cluster`]).
    gc_gate: std::sync::Mutex<Option<crate::kv::JobLock>>,
    /// The data folder, for free-space figures (None for an in-memory store).
    pub data_root: Option<std::path::PathBuf>,
    /// Concurrent changes share one flush ([`Store::sync`]).
    flushes: group_commit::GroupCommit,
    /// Concurrent commits on a shared store share one upload of the pack being filled
    /// ([`Store::share_chunks`]).
    chunk_shares: group_commit::GroupCommit,
    /// When this store was opened (the server's uptime).
    pub started: std::time::Instant,
    /// Counts changes that may end sessions or change what they may do (revocations,
    /// logouts, passwords, roles, deleted accounts) made by this server: a connection's
    /// checked session stands until it changes or a second passes ([`Store::session_epoch`]).
    session_epoch: std::sync::atomic::AtomicU64,
}

thread_local! {
    /// The device's time of the change being applied on this thread ([`Store::at_time`]).
    static REQUEST_TIME: std::cell::Cell<Option<Timestamp>> = const { std::cell::Cell::new(None) };
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
        let db = open_db(dir)?;
        // Chunk bodies in a bucket when the data folder or the environment names one,
        // else in local pack files.
        let s3 = match crate::object_packs::S3Config::from_file(&dir.object_store())? {
            Some(c) => Some(c),
            None => crate::object_packs::S3Config::from_env(),
        };
        let chunks: Arc<dyn ChunkStore> = match s3 {
            Some(config) => {
                tracing::info!(?config, "chunk bodies in object storage");
                Arc::new(crate::object_packs::ObjectPackStore::open(&config, &db)?)
            }
            None => Arc::new(PackStore::open(dir.packs(), &db)?),
        };
        let mut store = Store::with_parts(db, chunks, dir.master_keys()?)?;
        store.data_root = Some(dir.root.clone());
        Ok(store)
    }

    /// A store over `db` and a chunk store, with a fresh random master key (tests).
    /// The database's size on disk and the chunk bytes stored for all accounts (for the
    /// metrics; 0 for what cannot be read).
    pub fn sizes(&self) -> (u64, u64) {
        let db = self.db.size_on_disk().unwrap_or(0);
        let stored = self
            .list_users()
            .map(|users| {
                users
                    .iter()
                    .map(|a| self.chunks.stored_bytes(a.id).unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        (db, stored)
    }

    pub fn with_chunk_store(db: crate::kv::Db, chunks: Arc<dyn ChunkStore>) -> Result<Store> {
        Store::with_parts(db, chunks, vec![MasterKey::generate()?.0])
    }

    /// A store over `db`, whose chunk bodies `chunks` keeps sealed, with data keys wrapped
    /// by `masters[0]` (any of `masters` may unwrap existing ones).
    pub fn with_parts(
        db: crate::kv::Db,
        chunks: Arc<dyn ChunkStore>,
        masters: Vec<MasterKey>,
    ) -> Result<Store> {
        let keys = Arc::new(Keyring::new(&db, masters)?);
        // Every data key in memory from the start: transactions must not read other trees.
        keys.check_all()?;
        let chunks: Arc<dyn ChunkStore> = Arc::new(SealedChunks::new(chunks, keys.clone()));
        let store = Store {
            keys,
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
            feed_heads: db.open_tree("feed_heads")?,
            server_id: {
                let mut id = [0u8; 8];
                crate::crypto::random(&mut id)?;
                u64::from_le_bytes(id)
            },
            audit: db.open_tree("audit")?,
            failed_chunks: Default::default(),
            quota_alerted: Default::default(),
            sync_alerts: Default::default(),
            logins: db.open_tree("logins")?,
            shares: db.open_tree("shares")?,
            history_chunks: Default::default(),
            share_index: Default::default(),
            shares_in: db.open_tree("shares_in")?,
            public_links: db.open_tree("public_links")?,
            public_link_tokens: db.open_tree("public_link_tokens")?,
            thumbs: db.open_tree("thumbs")?,
            app_passwords: db.open_tree("app_passwords")?,
            app_password_names: db.open_tree("app_password_names")?,
            addr_guard: Default::default(),
            lockout_secs: guard::LOCKOUT_SECS,
            prefs: db.open_tree("prefs")?,
            subscribers: feed::Subscribers::default(),
            places: places::Places::default(),
            leases: db.open_tree("leases")?,
            lease_holders: db.open_tree("lease_holders")?,
            clock: Arc::new(Timestamp::now),
            gc_lock: std::sync::RwLock::new(()),
            gc_gate: Default::default(),
            chunks,
            db,
            data_root: None,
            flushes: Default::default(),
            chunk_shares: Default::default(),
            started: std::time::Instant::now(),
            session_epoch: Default::default(),
        };
        store.reload_grants()?;
        Ok(store)
    }

    /// The path of a node below its account's root (`files/work/a.txt`), from the `names`
    /// tree; parts that are not known show as `#NODE`.
    pub fn path_of(&self, owner: u64, node: NodeId) -> String {
        let mut parts: Vec<Arc<str>> = Vec::new();
        let mut cur = node;
        for _ in 0..256 {
            if self.places.is_root(cur) {
                break;
            }
            match self.place(owner, cur) {
                Ok(Some((parent, name))) => {
                    parts.push(name);
                    if parent == cur {
                        break;
                    }
                    cur = parent;
                }
                // The root (and nodes made before names were recorded).
                _ => {
                    if self.is_root(cur) {
                        self.places.root_seen(cur);
                        break;
                    }
                    parts.push(format!("#{cur}").into());
                    break;
                }
            }
        }
        parts.reverse();
        parts.join("/")
    }

    fn is_root(&self, node: NodeId) -> bool {
        match self.nodes.get(node_key(node)) {
            Ok(Some(b)) => self.open_node(node, &b).is_ok_and(|r| r.parent == node),
            _ => false,
        }
    }

    /// See the `session_epoch` field: a connection that checked its session at this epoch
    /// less than a second ago need not check again.
    pub fn session_epoch(&self) -> u64 {
        self.session_epoch
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Something that may end sessions or change their rights happened here (the other
    /// servers of a shared store are told too).
    pub(crate) fn sessions_changed(&self) {
        self.sessions_changed_elsewhere();
        self.tell_servers(cluster::CacheChange::Sessions);
    }

    /// Another server changed sessions: connections here check theirs again.
    pub(crate) fn sessions_changed_elsewhere(&self) {
        self.session_epoch
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The current time by the store's clock.
    pub fn now(&self) -> Timestamp {
        let now = (self.clock)();
        match REQUEST_TIME.get() {
            Some(at) if at <= now && now.secs - at.secs <= shelf_protocol::MAX_STAMP_AGE_SECS => at,
            _ => now,
        }
    }

    /// Runs `f` (one change of a batch, on this thread) with the store's clock reading
    /// `at`, the time the device made the change, within the limits [`Store::now`] checks.
    pub fn at_time<T>(&self, at: Timestamp, f: impl FnOnce() -> T) -> T {
        let before = REQUEST_TIME.replace(Some(at));
        let out = f();
        REQUEST_TIME.set(before);
        out
    }

    /// The database-wide lock of job `name` (prune with its collection and compaction,
    /// scrub): refused while another server of the store runs it.
    pub fn job_lock(&self, name: &'static str) -> Result<crate::kv::JobLock> {
        match self.db.try_job_lock(&format!("shelf-job-{name}"))? {
            Some(lock) => Ok(lock),
            None => Err(StoreError::JobElsewhere(name)),
        }
    }

    /// A fresh node id, never reused.
    pub fn new_node_id(&self) -> Result<NodeId> {
        if let Some(drawn) = batch_tx::fresh_id() {
            return drawn;
        }
        Ok(self.db.generate_id()? + FIRST_NODE_ID)
    }

    /// Makes everything committed so far durable: chunk bodies first, then the database.
    /// Concurrent callers share flushes ([`group_commit`]).
    pub fn sync(&self) -> Result<()> {
        let io = |e: StoreError| match e {
            StoreError::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        };
        self.flushes.flush(|| {
            self.chunks.sync().map_err(io)?;
            self.db.flush().map_err(|e| match e {
                crate::kv::KvError::Sled(sled::Error::Io(e)) => e,
                other => std::io::Error::other(other.to_string()),
            })?;
            Ok(())
        })?;
        Ok(())
    }
}

impl Store {
    /// Makes every chunk body stored so far readable by the other servers of the store
    /// ([`ChunkStore::share_written`]); concurrent callers share one upload.
    pub fn share_chunks(&self) -> Result<()> {
        self.chunk_shares.flush(|| {
            self.chunks.share_written().map_err(|e| match e {
                StoreError::Io(e) => e,
                other => std::io::Error::other(other.to_string()),
            })
        })?;
        Ok(())
    }
}

/// Opens the sled database of a data folder (one process at a time).
pub fn open_db(dir: &DataDir) -> Result<crate::kv::Db> {
    if let Some(config) = postgres_config(dir)? {
        tracing::info!(?config, "metadata on PostgreSQL");
        return Ok(crate::kv::Db::Pg(crate::kv::pg::PgKv::connect(&config)?));
    }
    open_sled(dir)
}

/// The PostgreSQL database the data folder (`postgres.json`) or the environment
/// (`SHELF_POSTGRES_URL`) names, if any.
pub fn postgres_config(dir: &DataDir) -> Result<Option<crate::kv::pg::PgConfig>> {
    Ok(match crate::kv::pg::PgConfig::from_file(&dir.postgres())? {
        Some(c) => Some(c),
        None => crate::kv::pg::PgConfig::from_env(),
    })
}

/// Opens the data folder's sled database (one process at a time).
pub fn open_sled(dir: &DataDir) -> Result<crate::kv::Db> {
    let open = || {
        sled::Config::new()
            .path(dir.db())
            // The server's own flusher syncs packs first, then sled (see `ChunkStore`).
            .flush_every_ms(None)
            .cache_capacity(256 << 20)
            .open()
    };
    let held = |r: &sled::Result<sled::Db>| matches!(r, Err(sled::Error::Io(io)) if io.kind() == std::io::ErrorKind::WouldBlock);
    // A handle this process just dropped may hold the lock for a moment longer (sled's
    // own threads let go of it as they finish): wait up to a second before saying so.
    let mut opened = open();
    for _ in 0..20 {
        if !held(&opened) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        opened = open();
    }
    let db = opened
        .map_err(|e| match e {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                StoreError::Io(std::io::Error::other(format!(
                    "the database in {} is in use by another shelf-server that does not answer on its control socket; stop it first",
                    dir.root.display()
                )))
            }
            other => other.into(),
        })?;
    Ok(crate::kv::Db::Sled(db))
}

pub(crate) fn node_key(id: NodeId) -> [u8; 8] {
    id.to_be_bytes()
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

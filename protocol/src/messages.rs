//! Request, response and event types. Every variant has one line saying what it does; the
//! order of variants is part of the wire format (postcard encodes the index), so new variants
//! go at the end and [`crate::PROTOCOL_VERSION`] is bumped on any incompatible change.
//!
//! Byte payloads (chunk bodies, xattr values) are `serde_bytes`: one length and a memcpy,
//! instead of serde's element-by-element sequence (measured: 44% of the server's CPU on
//! uploads before the change).

use crate::chunk::ChunkId;
use crate::error::WireError;
use serde::{Deserialize, Serialize};

/// A server-assigned node id. The client uses it as the FUSE inode number (the account's root
/// is shown as inode 1).
pub type NodeId = u64;

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from_system(std::time::SystemTime::now())
    }

    pub fn from_system(t: std::time::SystemTime) -> Timestamp {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                if d.subsec_nanos() == 0 {
                    Timestamp {
                        secs: -(d.as_secs() as i64),
                        nanos: 0,
                    }
                } else {
                    Timestamp {
                        secs: -(d.as_secs() as i64) - 1,
                        nanos: 1_000_000_000 - d.subsec_nanos(),
                    }
                }
            }
        }
    }

    /// The UTC calendar date and time: [year, month, day, hour, minute, second]
    /// (civil-from-days, proleptic Gregorian).
    pub fn utc(self) -> [i64; 6] {
        let rem = self.secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(self.secs.div_euclid(86_400));
        [y, m.into(), d.into(), rem / 3600, rem % 3600 / 60, rem % 60]
    }

    pub fn to_system(self) -> std::time::SystemTime {
        let nanos = std::time::Duration::from_nanos(u64::from(self.nanos.min(999_999_999)));
        if self.secs >= 0 {
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.secs as u64) + nanos
        } else {
            std::time::UNIX_EPOCH - std::time::Duration::from_secs(self.secs.unsigned_abs()) + nanos
        }
    }
}

/// The (year, month, day) of a day count since 1970-01-01, proleptic Gregorian (Howard
/// Hinnant's civil-from-days).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// What kind of node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    /// Named pipe (mkfifo).
    Fifo,
    /// Unix socket node.
    Socket,
    /// Character device node (`rdev` says which).
    CharDevice,
    /// Block device node (`rdev` says which).
    BlockDevice,
}

/// Account roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Manages accounts; has a store like a user.
    Admin,
    /// Reads and writes their own store.
    User,
    /// Read-only.
    Viewer,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!("unknown role {other:?}: use admin, user or viewer")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Viewer => "viewer",
        })
    }
}

/// The attributes of a node as the server holds them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    pub node: NodeId,
    pub kind: NodeKind,
    /// Permission bits (the low 12 bits of st_mode).
    pub mode: u32,
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub atime: Timestamp,
    /// Number of directory entries naming this node (2 + subdirectories for a directory).
    pub nlink: u32,
    /// Current content version of a file; 0 while it has none.
    pub version: u64,
    /// Device number of a device node.
    pub rdev: u32,
    /// Owner and group set by chown; `None` shows as the mounting user.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// This session may not change the node (a viewer's session, a read-only share, the
    /// synthetic `shared/` folders): every change is refused, and `mode` shows no write
    /// bits.
    pub read_only: bool,
}

/// One entry of a directory listing, with the attributes READDIRPLUS needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub attr: Attr,
}

/// One chunk of a file version, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// A chunk body with its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkBody {
    pub id: ChunkId,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// How a rename treats an existing target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenameMode {
    /// Replace the target (POSIX rename).
    Replace,
    /// Fail with `Exists` if the target exists (RENAME_NOREPLACE).
    NoReplace,
    /// Swap source and target (RENAME_EXCHANGE).
    Exchange,
}

/// setxattr's create/replace rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum XattrMode {
    /// Create or replace.
    Set,
    /// Fail with `Exists` if present (XATTR_CREATE).
    Create,
    /// Fail with `NoAttribute` if absent (XATTR_REPLACE).
    Replace,
}

/// Node ids a client may choose for the nodes it creates (random in this range; the server
/// numbers its own nodes far below it). A create replayed after a lost answer then finds its
/// node instead of making a second one.
pub const CLIENT_NODE_IDS: std::ops::Range<NodeId> = (1 << 61)..(1 << 62);

/// Node ids of the folders `shared/OWNER/` the server shows a share recipient (the base
/// plus the owner's account number). They have no record; nothing can be written in them.
pub const SHARED_OWNER_DIRS: std::ops::Range<NodeId> = (1 << 60)..(1 << 61);

/// What a removal expects to find under the name: the change a device made while it could
/// not reach the server applies only if nobody changed the file since (an edit elsewhere
/// wins over a delete).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expect {
    pub node: NodeId,
    /// The file's content version the device saw (`None`: any).
    pub version: Option<u64>,
}

/// Every request a client can make after the hello.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Password login; answers [`Response::Session`] with a fresh token for this device.
    Login {
        user: String,
        password: String,
        device: String,
    },
    /// Resume a session with a token from an earlier login; answers [`Response::Session`].
    Resume { token: String },
    /// End this session and revoke its token.
    Logout,
    /// Look a name up in a directory; answers [`Response::Attr`].
    Lookup { parent: NodeId, name: String },
    /// Attributes of a node; answers [`Response::Attr`].
    GetAttr { node: NodeId },
    /// Change mode, owner or times (size changes are content changes and go through `Commit`).
    SetAttr {
        node: NodeId,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    },
    /// One page of a directory listing, names after `after` in name order, at most `limit`.
    ReadDir {
        dir: NodeId,
        after: Option<String>,
        limit: u32,
    },
    /// Create a directory; answers its [`Response::Attr`]. Every create may carry a node id
    /// the client chose (see [`CLIENT_NODE_IDS`]), which makes replaying it idempotent.
    Mkdir {
        parent: NodeId,
        name: String,
        mode: u32,
        id: Option<NodeId>,
    },
    /// Create an empty file; answers its [`Response::Attr`]. `exclusive` fails on an existing name.
    Create {
        parent: NodeId,
        name: String,
        mode: u32,
        exclusive: bool,
        id: Option<NodeId>,
    },
    /// Create a symbolic link; answers its [`Response::Attr`].
    Symlink {
        parent: NodeId,
        name: String,
        target: String,
        id: Option<NodeId>,
    },
    /// The target of a symbolic link; answers [`Response::Target`].
    ReadLink { node: NodeId },
    /// Remove a file or symlink entry; answers [`Response::Removed`]. With `expect`, only
    /// if the name still holds what the client saw (else `Conflict`, nothing removed).
    Unlink {
        parent: NodeId,
        name: String,
        expect: Option<Expect>,
    },
    /// Remove an empty directory.
    Rmdir {
        parent: NodeId,
        name: String,
        expect: Option<Expect>,
    },
    /// Move an entry, replacing, refusing or exchanging with an existing target; answers
    /// [`Response::Removed`] with the replaced node. With `expect`, only if `name` still
    /// names that node (else `Conflict`).
    Rename {
        parent: NodeId,
        name: String,
        new_parent: NodeId,
        new_name: String,
        mode: RenameMode,
        expect: Option<NodeId>,
    },
    /// Set a `user.*` extended attribute.
    SetXattr {
        node: NodeId,
        name: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        mode: XattrMode,
    },
    /// One extended attribute's value; answers [`Response::Bytes`].
    GetXattr { node: NodeId, name: String },
    /// Names of a node's extended attributes; answers [`Response::Names`].
    ListXattr { node: NodeId },
    /// Remove an extended attribute.
    RemoveXattr { node: NodeId, name: String },
    /// Space figures for statfs; answers [`Response::StatFs`].
    StatFs,
    /// Which of these chunks the server lacks; answers [`Response::Missing`] (indices).
    /// Chunks are always asked about, sent and fetched for one file (`node`): they belong
    /// to that file's owner (a share recipient reads and writes the owner's chunks), and a
    /// recipient learns only about chunks of that file's history.
    HaveChunks { node: NodeId, ids: Vec<ChunkId> },
    /// Upload chunk bodies (batched: one request per ~1 MiB); the server checks each
    /// against its id.
    PutChunks {
        node: NodeId,
        chunks: Vec<ChunkBody>,
    },
    /// Download chunk bodies; answers [`Response::Chunks`] in the same order.
    GetChunks { node: NodeId, ids: Vec<ChunkId> },
    /// The chunk list of a file's current version; answers [`Response::Manifest`].
    GetManifest { node: NodeId },
    /// Make a new version of a file from uploaded chunks; answers the new [`Response::Attr`].
    /// `inline` carries bodies of chunks the server may lack (small files: one round trip
    /// instead of asking first). `durable` asks the server to flush to disk before
    /// answering (fsync).
    Commit {
        node: NodeId,
        base_version: u64,
        chunks: Vec<ChunkRef>,
        inline: Vec<ChunkBody>,
        mtime: Timestamp,
        durable: bool,
    },
    /// Account and server status; answers [`Response::Status`].
    Status,
    /// Create a special node (FIFO, socket, device); answers its [`Response::Attr`].
    Mknod {
        parent: NodeId,
        name: String,
        kind: NodeKind,
        mode: u32,
        rdev: u32,
        id: Option<NodeId>,
    },
    /// The history of every file of a directory, deleted ones included; answers
    /// [`Response::Versions`].
    ListVersions { dir: NodeId },
    /// The chunk list of one version of a file (also of a deleted file); answers
    /// [`Response::Manifest`].
    GetVersion { node: NodeId, version: u64 },
    /// Make the content of version `number` of `name`'s history the file's newest version,
    /// recreating the file if it was deleted; answers its [`Response::Attr`].
    Restore {
        dir: NodeId,
        name: String,
        number: u64,
    },
    /// Start receiving this account's changes as [`ServerFrame::Event`]s: first every change
    /// after `after` still in the feed, then live ones. Answers [`Response::Subscribed`].
    Subscribe { after: Option<u64> },
    /// Take (or, with `Unlock`, drop) a lease on bytes `start..=end` of a file for lock
    /// holder `owner` of this session (flock and fcntl locks). Fails with `WouldBlock` if
    /// another holder, on any device, has a conflicting one. Leases expire unless renewed.
    Lock {
        node: NodeId,
        owner: u64,
        kind: LockKind,
        start: u64,
        end: u64,
    },
    /// Which lease would conflict with this one (F_GETLK); answers [`Response::LockHolder`].
    TestLock {
        node: NodeId,
        owner: u64,
        kind: LockKind,
        start: u64,
        end: u64,
    },
    /// Keeps every lease of this session alive for another lease period.
    RenewLocks,
    /// The devices signed in to this account ([`Response::Devices`]).
    ListDevices,
    /// Ends every session of one device of this account; its next request is refused.
    RevokeDevice { device: String },
    /// Account management, for admins only.
    Admin(AdminRequest),
    /// Shares a file or folder of one's own with another user (read-only unless `write`);
    /// sharing again changes the access.
    Share {
        node: NodeId,
        with: String,
        write: bool,
    },
    /// Ends a share: the owner names the user (`None`: everyone); a recipient may end only
    /// its own access (`with` = itself or `None`).
    Unshare { node: NodeId, with: Option<String> },
    /// What this account shares and what is shared with it ([`Response::Shares`]).
    ListShares,
    /// A device tells the server that syncing keeps failing (uploads refused again and
    /// again): the server raises a sync alert for the account (with the path) and its
    /// admins (without: they do not see users' file names).
    ReportSyncFailure { path: String, error: String },
    /// Names the program behind this connection when it is not the device's mount (for
    /// example `import`, `backup`): its changes are then published as made by
    /// `DEVICE AGENT`, so the device's own mount applies them like another device's.
    /// [`crate::is_valid_agent`] says which names are accepted.
    SetAgent { agent: String },
    /// link(2): give the file `node` the new name `new_name` in `new_parent` (inside the
    /// account's own tree, outside shared folders); answers [`Response::Attr`] with the
    /// file's attributes (its `nlink` counted up).
    Link {
        node: NodeId,
        new_parent: NodeId,
        new_name: String,
    },
    /// Namespace changes applied in order, stopping at the first that fails; answers
    /// [`Response::Batch`] with one result per change applied or refused (the failed one
    /// last; changes after it were not tried). Everything applied is on disk before the
    /// answer, with one flush for the whole batch. Only the changes [`Request::batchable`]
    /// accepts, at most [`MAX_BATCH`] of them.
    Batch(Vec<Stamped>),
    /// A file's current chunk list, with the chunks' bodies when the file is at most `max`
    /// bytes (and [`MAX_SMALL_FILE`]): a small file read on a device that never had it costs
    /// one round trip, not two. Answers [`Response::SmallFile`].
    GetSmallFile { node: NodeId, max: u32 },
    /// Makes a public link to a file or folder of one's own: anyone holding it may download
    /// (or, for `Upload` on a folder, only add files), without an account, until it expires
    /// or is revoked; with a password, only after giving it. Answers [`Response::Links`] with
    /// the new link (its token is the secret part of the URL).
    CreateLink {
        node: NodeId,
        access: LinkAccess,
        password: Option<String>,
        expires: Option<Timestamp>,
    },
    /// The account's public links ([`Response::Links`]).
    ListLinks,
    /// Ends one of the account's public links: its URL opens nothing from the next request.
    RevokeLink { id: u64 },
    /// Makes an app password named `name` for programs that send a user name and password
    /// with every request (WebDAV clients); answers [`Response::AppPassword`] with its
    /// secret, shown this once.
    AddAppPassword { name: String },
    /// The account's app passwords ([`Response::AppPasswords`]), without their secrets.
    ListAppPasswords,
    /// Ends an app password: programs using it are refused from their next request.
    RevokeAppPassword { name: String },
}

/// One app password, as its owner sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppPasswordInfo {
    pub name: String,
    pub created: Timestamp,
}

/// What a public link lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkAccess {
    /// See and download the file, or the folder and everything below it.
    Download,
    /// Add files to the folder ("file request"): nothing in it can be seen or replaced.
    Upload,
}

/// One public link, as its owner sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    pub id: u64,
    /// The secret part of the link's URL (`/s/TOKEN`).
    pub token: String,
    pub node: NodeId,
    pub kind: NodeKind,
    /// Where it points, below the owner's root.
    pub path: String,
    pub access: LinkAccess,
    /// Whether opening it needs a password.
    pub password: bool,
    pub expires: Option<Timestamp>,
    pub created: Timestamp,
}

/// A change in a [`Request::Batch`] with the time the device made it: the server stamps
/// the change's times with it (when it is at most [`MAX_STAMP_AGE_SECS`] old and not in
/// the server's future), so a folder's mtime on the server is the one the device already
/// showed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    pub at: Timestamp,
    pub req: Request,
}

/// How old a [`Stamped`] time may be and still be used (older: the server's time).
pub const MAX_STAMP_AGE_SECS: i64 = 600;

/// The largest file whose bodies a [`Request::GetSmallFile`] answer carries.
pub const MAX_SMALL_FILE: u32 = 1 << 20;

/// Changes in one [`Request::Batch`].
pub const MAX_BATCH: usize = 1024;

impl Request {
    /// Whether the request may ride in a [`Request::Batch`]: the namespace changes a
    /// device's write-back journal holds, and commits. A batched commit's file must exist
    /// before the batch, and a conflict or deletion refuses it (sent alone, it would be
    /// resolved by keeping both).
    pub fn batchable(&self) -> bool {
        matches!(
            self,
            Request::Mkdir { .. }
                | Request::Create { .. }
                | Request::Symlink { .. }
                | Request::Mknod { .. }
                | Request::Unlink { .. }
                | Request::Rmdir { .. }
                | Request::Rename { .. }
                | Request::SetAttr { .. }
                | Request::SetXattr { .. }
                | Request::RemoveXattr { .. }
                | Request::Commit { .. }
        )
    }
}

/// One share, as its owner or recipient sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareInfo {
    pub node: NodeId,
    pub owner: String,
    pub recipient: String,
    pub write: bool,
    /// Where it is: below the owner's root for the owner, `shared/OWNER/NAME` for the
    /// recipient.
    pub path: String,
}

/// What an admin may do over the protocol (`shelf admin …`). Admins manage accounts and see
/// usage, alerts and the audit log; they do not see other users' files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// [`Response::Users`].
    ListUsers,
    AddUser {
        name: String,
        password: String,
        role: Role,
    },
    DeleteUser {
        name: String,
    },
    SetRole {
        name: String,
        role: Role,
    },
    SetPassword {
        name: String,
        password: String,
    },
    /// `None`: no quota.
    SetQuota {
        name: String,
        bytes: Option<u64>,
    },
    /// The newest `limit` audit entries ([`Response::Audit`]) that match: of the user
    /// `user` when given, of a kind starting with `kind` when given (`login`,
    /// `link-`, `alert-security`…).
    Audit {
        limit: u32,
        user: Option<String>,
        kind: Option<String>,
    },
    /// How the server is doing ([`Response::Health`]).
    Health,
    /// A user's retention policy (see `shelf-server retention`).
    SetRetention {
        name: String,
        policy: RetentionPolicy,
    },
    /// A user's conflict policy: `true` lets the later edit win (its overwritten version
    /// stays in history); `false` keeps both (the default).
    SetConflictPolicy {
        name: String,
        last_writer_wins: bool,
    },
}

/// Which old versions a user's store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Every version, forever (deleted files still expire after `deleted_days`).
    pub keep_all: bool,
    /// Every version younger than this many days.
    pub all_days: u32,
    /// Then the newest of each day for this many more days; then the newest of each week.
    pub daily_days: u32,
    /// Deleted files stay restorable this many days (0: forever).
    pub deleted_days: u32,
}

/// One run of a periodic job (retention, scrub).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRun {
    pub at: Timestamp,
    pub millis: u64,
    /// What it did or found, in a line.
    pub summary: String,
}

/// How the server is doing, for admins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHealth {
    pub version: String,
    pub uptime_secs: u64,
    /// Open connections: devices' protocol connections and browsers'.
    pub connections: u64,
    /// Devices holding their change feed open (mounts online).
    pub devices_online: u64,
    /// The data folder's file system: free and total bytes.
    pub disk_free: u64,
    pub disk_total: u64,
    /// Pack files on disk and their bytes; of those, bytes no chunk uses any more (freed
    /// by the next compaction).
    pub pack_files: u64,
    pub pack_bytes: u64,
    pub garbage_bytes: u64,
    pub database_bytes: u64,
    /// Bytes of every account's current files, and of chunks stored for them: their
    /// ratio is what deduplication (and history) saves or costs.
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub last_prune: Option<JobRun>,
    pub last_scrub: Option<JobRun>,
}

/// An account as an admin sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub role: Role,
    /// Bytes stored after dedup, history included.
    pub stored_bytes: u64,
    pub quota: Option<u64>,
    pub retention: RetentionPolicy,
    pub last_writer_wins: bool,
}

/// One audit log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLine {
    pub at: Timestamp,
    pub what: String,
    pub user: String,
    pub from: String,
    pub detail: String,
}

/// One device signed in to an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub device: String,
    /// When it signed in (its newest session).
    pub created: Timestamp,
    /// When that session expires unless renewed by signing in again.
    pub expires: Timestamp,
    /// Sessions it holds.
    pub sessions: u32,
    /// The device asking.
    pub current: bool,
}

/// A lock request's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    Read,
    Write,
    Unlock,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Done, nothing to return.
    Ok,
    /// A logged-in session: its token, the account and its root directory.
    Session {
        token: String,
        user: String,
        role: Role,
        root: Attr,
    },
    /// A node's attributes.
    Attr(Attr),
    /// A page of directory entries; `more` says whether another page follows.
    DirPage { entries: Vec<DirEntry>, more: bool },
    /// A symlink target.
    Target(String),
    /// Raw bytes (chunk body, xattr value).
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A list of names (xattrs).
    Names(Vec<String>),
    /// Indices into a `HaveChunks` list of the chunks the server lacks.
    Missing(Vec<u32>),
    /// A file version's chunk list.
    Manifest {
        version: u64,
        size: u64,
        chunks: Vec<ChunkRef>,
    },
    /// Space figures for statfs.
    StatFs {
        used_bytes: u64,
        free_bytes: u64,
        files: u64,
    },
    /// Account and server status.
    Status(ServerStatus),
    /// Chunk bodies, in the order asked for.
    Chunks(Vec<ChunkBody>),
    /// A name was removed (unlink, rmdir, rename over a target); carries the node that lost
    /// its last name, so the client can drop local state of it.
    Removed(Option<NodeId>),
    /// The history of a directory's files, by name then number.
    Versions(Vec<VersionInfo>),
    /// A commit's content was kept in another file of the same folder: a conflicted copy
    /// (another device changed the file meanwhile) or the file brought back (another
    /// device deleted it). The file the commit was for is left as the other device made it.
    KeptElsewhere { attr: Attr, name: String },
    /// A conflicting lease (kind, start, end), or none.
    LockHolder(Option<(LockKind, u64, u64)>),
    /// Changes follow as events. `trimmed`: changes after the position asked for were
    /// already dropped from the feed, so everything cached should be checked again.
    /// `head` is the newest position at the time of the answer.
    Subscribed { trimmed: bool, head: u64 },
    /// Devices signed in to the account.
    Devices(Vec<DeviceInfo>),
    /// Every account ([`AdminRequest::ListUsers`]).
    Users(Vec<UserInfo>),
    /// Audit entries, oldest first.
    Audit(Vec<AuditLine>),
    /// Shares of and with the account.
    Shares(Vec<ShareInfo>),
    /// The results of a [`Request::Batch`], in order; only the last may be an error.
    Batch(Vec<Result<Response, WireError>>),
    /// A file version's chunk list, with every chunk's body (in the list's order) when the
    /// file was small enough, else none.
    SmallFile {
        version: u64,
        size: u64,
        chunks: Vec<ChunkRef>,
        bodies: Vec<ChunkBody>,
    },
    /// Public links of the account ([`Request::ListLinks`]), or the one just made.
    Links(Vec<LinkInfo>),
    /// [`AdminRequest::Health`].
    Health(ServerHealth),
    /// A new app password's secret (shown once).
    AppPassword { name: String, secret: String },
    /// The account's app passwords.
    AppPasswords(Vec<AppPasswordInfo>),
}

/// One change in an account's feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Position in the feed: increasing, never reused.
    pub seq: u64,
    pub kind: ChangeKind,
    pub node: NodeId,
    /// The directory the change happened in, and the node's name there ("" when the
    /// change is not about a name).
    pub parent: NodeId,
    pub name: String,
    /// The device that made the change.
    pub device: String,
    /// Where the node is now, below the account's root (`files/work/a.txt`), for people.
    pub path: String,
    /// When the server recorded it.
    pub at: Timestamp,
}

impl Change {
    /// "Changes were missed after `seq`": check everything again.
    pub fn resync(seq: u64) -> Change {
        Change {
            seq,
            kind: ChangeKind::Resync,
            node: 0,
            parent: 0,
            name: String::new(),
            device: String::new(),
            path: String::new(),
            at: Timestamp::default(),
        }
    }
}

/// What a [`Change`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// A new name (create, mkdir, symlink, mknod, a restored file).
    Created,
    /// A new version of a file's content.
    Content,
    /// Mode, owner, times or extended attributes.
    Attr,
    /// A name went away (unlink, rmdir, or the target of a rename).
    Removed,
    /// A rename: `parent`/`name` is the new place.
    Moved {
        from_parent: NodeId,
        from_name: String,
    },
    /// Changes were lost on the way (the client fell behind): check everything again.
    Resync,
    /// A commit conflicted: its content was kept as the new file `parent`/`name` (a
    /// conflicted copy beside the original, or the deleted file brought back).
    Conflicted,
    /// Something the user (or, for admins, the server's keeper) must know about; `path`
    /// holds the message. Not a change of the namespace.
    Alert(AlertClass),
}

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertClass {
    /// Failed logins, a locked account, a revoked device.
    Security,
    /// Stored data failed verification.
    Integrity,
    /// An account ran out of quota.
    Quota,
    /// Changes that could not be synchronised.
    Sync,
}

impl std::fmt::Display for AlertClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AlertClass::Security => "security",
            AlertClass::Integrity => "integrity",
            AlertClass::Quota => "quota",
            AlertClass::Sync => "sync",
        })
    }
}

/// One version in a directory's history (`NAME.vNN` in `.versions/`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The file's name in the directory.
    pub name: String,
    /// The number shown to users: 1, 2, … along the name's history; never reused.
    pub number: u64,
    /// Where the content lives (for [`Request::GetVersion`]).
    pub node: NodeId,
    pub version: u64,
    pub size: u64,
    pub mtime: Timestamp,
    /// When the version was committed, and by which device.
    pub created: Timestamp,
    pub device: String,
    /// The file no longer exists under this name.
    pub deleted: bool,
}

/// What `shelf status` shows about the server side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub server_version: String,
    pub user: String,
    pub role: Role,
    pub files: u64,
    pub dirs: u64,
    /// Sum of the current versions' sizes.
    pub logical_bytes: u64,
    /// Bytes of chunk bodies stored for this account (after dedup).
    pub stored_bytes: u64,
    /// Old versions kept as history: how many, and the stored bytes only they hold (what
    /// pruning them all would free).
    pub old_versions: u64,
    pub history_bytes: u64,
    /// The account's storage quota (bytes stored, as `stored_bytes`), if it has one.
    pub quota: Option<u64>,
    /// The account's newest alerts (security, quota, sync, integrity), oldest first.
    pub alerts: Vec<AuditLine>,
}

/// Frames a client sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// First frame on a connection. Variant 0 forever, so every version can read it.
    Hello {
        magic: [u8; 4],
        version: u32,
        client: String,
    },
    /// A request; the response carries the same id.
    Request { id: u64, body: Request },
}

/// Frames a server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// The hello was accepted. Variant 0 forever.
    Hello { version: u32, server: String },
    /// The hello was refused (wrong magic or version); the server closes after sending it.
    HelloRejected { version: u32, message: String },
    /// The answer to request `id`.
    Response {
        id: u64,
        result: Result<Response, WireError>,
    },
    /// A change of the account, pushed after [`Request::Subscribe`].
    Event(Change),
}

//! WebDAV under `/dav/` (class 1 and 2), for every operating system and phone that cannot
//! run the mount: Windows Explorer, macOS Finder, GNOME Files, davfs2, rclone, phones.
//!
//! The protocol (PROPFIND, PROPPATCH, GET with ranges, PUT, MKCOL, DELETE, COPY, MOVE,
//! LOCK/UNLOCK, `If` headers) is the maintained `dav-server` crate's; what it reads and
//! changes is [`ShelfFs`], a filesystem whose every call is a protocol `Request` run by the
//! handler as the signed-in account — the same authorisation, encryption, versions and
//! change feed as the mount's. A `PUT` streams through the mount's chunker and commits one
//! new version ([`super::upload`]'s path), so it is deduplicated and versioned.
//!
//! Sign-in is HTTP Basic over TLS with an **app password** (`shelf app-password add`),
//! never the account's own: each request signs in again (a hash lookup), and a wrong one
//! counts as a failed login of the account and the address.

use super::dav_locks::{AccountLocks, LeasedLs};
use super::dav_writer::Writer;
use super::history::history;
use super::pages::{components, resolve};
use super::sessions::WebSession;
use super::upload::Upload;
use super::{Peer, Web, WebError};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use base64::Engine;
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavMetaData, DavProp, FsError, FsFuture, FsResult, FsStream,
    GuardedFileSystem, OpenOptions, ReadDirMeta,
};
use futures_util::FutureExt;
use shelf_protocol::names::{version_name, VERSIONS_DIR};
use shelf_protocol::{
    Attr, ChunkRef, ErrorCode, NodeId, NodeKind, RenameMode, Request, Response as Answer,
    VersionInfo, WireError, XattrMode, MAX_CHUNKS_PER_REQUEST,
};
use std::io::SeekFrom;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

/// Where WebDAV is served.
pub const PREFIX: &str = "/dav";
/// Bytes a reader fetches ahead of what it was asked for.
const READ_AHEAD: u64 = 4 << 20;

/// The account a request signed in as.
pub type Creds = Arc<WebSession>;

/// Accounts whose WebDAV locks are kept (the oldest go first; an idle account's locks go
/// with them, and their leases expire by themselves).
const MAX_ACCOUNTS: usize = 1024;

/// The filesystem and each account's WebDAV locks. Paths are relative to the account's
/// root, so each account has its own lock table: one account's `/files/a.txt` is not
/// another's.
pub struct Handlers {
    fs: ShelfFs,
    locks: std::sync::Mutex<std::collections::HashMap<u64, AccountLocks>>,
}

impl Handlers {
    pub fn new(web: Weak<Web>) -> Handlers {
        Handlers {
            fs: ShelfFs::new(web),
            locks: Default::default(),
        }
    }

    /// The WebDAV handler of one request: the account's locks, as `session`.
    fn of(&self, session: &Creds) -> (dav_server::DavHandler<Creds>, LeasedLs) {
        use shelf_protocol::sync::LockOrRecover;
        let account = session.session.ctx().map_or(0, |c| c.account);
        let locks = {
            let mut map = self.locks.lock_or_recover();
            if map.len() >= MAX_ACCOUNTS && !map.contains_key(&account) {
                map.clear();
            }
            map.entry(account).or_default().clone()
        };
        let ls = LeasedLs::new(locks, self.fs.web.clone(), session.clone());
        let handler = dav_server::DavHandler::builder()
            .filesystem(Box::new(self.fs.clone()))
            .locksystem(Box::new(ls.clone()))
            .strip_prefix(PREFIX)
            .read_buf_size(1 << 20)
            .build_handler();
        (handler, ls)
    }
}

/// The store as a WebDAV filesystem, for the signed-in account.
#[derive(Clone)]
pub struct ShelfFs {
    web: Weak<Web>,
}

/// A handler answer as the filesystem error WebDAV reports.
pub(super) fn fs_error(e: &WireError) -> FsError {
    match e.code {
        ErrorCode::NotFound => FsError::NotFound,
        ErrorCode::Exists | ErrorCode::NotEmpty => FsError::Exists,
        ErrorCode::PermissionDenied
        | ErrorCode::ReadOnly
        | ErrorCode::Reserved
        | ErrorCode::InvalidName
        | ErrorCode::NotDir
        | ErrorCode::IsDir => FsError::Forbidden,
        ErrorCode::QuotaExceeded | ErrorCode::NoSpace => FsError::InsufficientStorage,
        ErrorCode::NameTooLong => FsError::PathTooLong,
        ErrorCode::TooLarge => FsError::TooLarge,
        ErrorCode::CrossDevice => FsError::IsRemote,
        _ => FsError::GeneralFailure,
    }
}

fn web_error(e: WebError) -> FsError {
    fs_error(&e.0)
}

/// What a WebDAV path names.
enum Target {
    /// A stored file or folder: its names from the top of the store.
    Stored(Vec<String>),
    /// `DIR/.versions`: the read-only history of the folder DIR, as in the mount.
    Versions(Vec<String>),
    /// `DIR/.versions/NAME.vNN`: one version of a file of DIR.
    Version(Vec<String>, String),
}

fn target_of(path: &DavPath) -> FsResult<Target> {
    let text = std::str::from_utf8(path.as_bytes()).map_err(|_| FsError::Forbidden)?;
    let parts = components(text).map_err(|_| FsError::Forbidden)?;
    match parts.iter().position(|p| p == VERSIONS_DIR) {
        None => Ok(Target::Stored(parts)),
        Some(i) if i + 1 == parts.len() => Ok(Target::Versions(parts[..i].to_vec())),
        Some(i) if i + 2 == parts.len() => {
            Ok(Target::Version(parts[..i].to_vec(), parts[i + 1].clone()))
        }
        Some(_) => Err(FsError::NotFound),
    }
}

/// The names of a stored file or folder: anything in `.versions/` is read-only.
fn parts_of(path: &DavPath) -> FsResult<Vec<String>> {
    match target_of(path)? {
        Target::Stored(parts) => Ok(parts),
        Target::Versions(_) | Target::Version(..) => Err(FsError::Forbidden),
    }
}

/// The names of a stored file or folder, or `None` for `.versions/` and bad paths.
pub fn stored_parts(path: &DavPath) -> Option<Vec<String>> {
    match target_of(path).ok()? {
        Target::Stored(parts) => Some(parts),
        _ => None,
    }
}

/// How a version shows: a read-only file.
fn version_attr(v: &VersionInfo) -> Attr {
    Attr {
        node: v.node,
        kind: NodeKind::File,
        mode: 0o444,
        size: v.size,
        mtime: v.mtime,
        ctime: v.created,
        atime: v.mtime,
        nlink: 1,
        version: v.version,
        rdev: 0,
        uid: None,
        gid: None,
        read_only: true,
    }
}

/// The version called `name` (`NAME.vNN`) in the history of the folder `dir`.
fn find_version(
    web: &Web,
    session: &WebSession,
    dir: &[String],
    name: &str,
) -> FsResult<VersionInfo> {
    let (_, versions) = history(web, session, dir).map_err(web_error)?;
    versions
        .into_iter()
        .find(|v| version_name(&v.name, v.number) == name)
        .ok_or(FsError::NotFound)
}

/// What `target` is: a stored node, a `.versions` folder or a version.
fn attr_of(web: &Web, session: &WebSession, target: &Target) -> FsResult<Attr> {
    match target {
        Target::Stored(parts) => resolve(web, session, parts).map_err(web_error),
        Target::Versions(dir) => {
            let mut attr = resolve(web, session, dir).map_err(web_error)?;
            if attr.kind != NodeKind::Dir {
                return Err(FsError::NotFound);
            }
            attr.read_only = true;
            Ok(attr)
        }
        Target::Version(dir, name) => Ok(version_attr(&find_version(web, session, dir, name)?)),
    }
}

/// The chunk list of what `target` names (a file's current content, or a version's).
fn chunks_of(web: &Web, session: &WebSession, target: &Target) -> FsResult<(Attr, Vec<ChunkRef>)> {
    let attr = attr_of(web, session, target)?;
    if attr.kind != NodeKind::File {
        return Err(FsError::Forbidden);
    }
    let req = match target {
        Target::Version(..) => Request::GetVersion {
            node: attr.node,
            version: attr.version,
        },
        _ => Request::GetManifest { node: attr.node },
    };
    match session.call(&web.store, req).map_err(|e| fs_error(&e))? {
        Answer::Manifest { chunks, .. } => Ok((attr, chunks)),
        _ => Err(FsError::GeneralFailure),
    }
}

impl ShelfFs {
    pub fn new(web: Weak<Web>) -> ShelfFs {
        ShelfFs { web }
    }

    /// Runs store work for `session` on the blocking pool.
    fn run<'a, T: Send + 'static>(
        &self,
        f: impl FnOnce(&Web) -> FsResult<T> + Send + 'static,
    ) -> FsFuture<'a, T> {
        let web = self.web.clone();
        async move {
            let Some(web) = web.upgrade() else {
                return Err(FsError::GeneralFailure);
            };
            tokio::task::spawn_blocking(move || f(&web))
                .await
                .unwrap_or(Err(FsError::GeneralFailure))
        }
        .boxed()
    }
}

/// What WebDAV shows of a node.
#[derive(Clone, Debug)]
struct Meta(Attr);

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.0.size
    }
    fn modified(&self) -> FsResult<SystemTime> {
        let t = self.0.mtime;
        Ok(SystemTime::UNIX_EPOCH
            + Duration::new(u64::try_from(t.secs).unwrap_or(0), t.nanos.min(999_999_999)))
    }
    fn is_dir(&self) -> bool {
        self.0.kind == NodeKind::Dir
    }
    /// Changes with the content: node and version (a folder's with its time).
    fn etag(&self) -> Option<String> {
        let t = self.0.mtime;
        Some(match self.0.kind {
            NodeKind::Dir => format!("{:x}-{:x}.{:x}", self.0.node, t.secs, t.nanos),
            _ => format!("{:x}-{:x}", self.0.node, self.0.version),
        })
    }
}

struct Entry {
    name: String,
    attr: Attr,
}

impl DavDirEntry for Entry {
    fn name(&self) -> Vec<u8> {
        self.name.as_bytes().to_vec()
    }
    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(Meta(self.attr.clone()));
        futures_util::future::ready(Ok(meta)).boxed()
    }
}

/// Every entry of the folder `dir`, a page at a time.
fn list(web: &Web, session: &WebSession, dir: NodeId) -> FsResult<Vec<Entry>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let answer = session
            .call(
                &web.store,
                Request::ReadDir {
                    dir,
                    after,
                    limit: 1024,
                },
            )
            .map_err(|e| fs_error(&e))?;
        let Answer::DirPage { entries, more } = answer else {
            return Err(FsError::GeneralFailure);
        };
        after = entries.last().map(|e| e.name.clone());
        out.extend(entries.into_iter().map(|e| Entry {
            name: e.name,
            attr: e.attr,
        }));
        if !more || after.is_none() {
            return Ok(out);
        }
    }
}

/// An open file: read from its chunk list, or written as one new version.
#[derive(Debug)]
enum Open {
    Read(Reader),
    Write(Writer),
}

/// A file being read: its chunks, where the reader is, and the bytes fetched ahead.
struct Reader {
    web: Weak<Web>,
    session: Creds,
    attr: Attr,
    chunks: Vec<ChunkRef>,
    /// Where each chunk starts.
    starts: Vec<u64>,
    pos: u64,
    /// Bytes fetched: from this offset.
    ahead: (u64, Vec<u8>),
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reader(node {}, at {})", self.attr.node, self.pos)
    }
}

impl Reader {
    /// Fetches the chunks covering `from..from + len` (a request's worth at most).
    fn fetch(&mut self, web: &Web, from: u64, len: u64) -> FsResult<()> {
        let first = self
            .starts
            .partition_point(|s| *s <= from)
            .saturating_sub(1);
        let mut ids = Vec::new();
        let mut end = self.starts.get(first).copied().unwrap_or(0);
        for c in &self.chunks[first..] {
            if ids.len() >= MAX_CHUNKS_PER_REQUEST || end >= from + len {
                break;
            }
            ids.push(c.id);
            end += u64::from(c.len);
        }
        let answer = self
            .session
            .call(
                &web.store,
                Request::GetChunks {
                    node: self.attr.node,
                    ids,
                },
            )
            .map_err(|e| fs_error(&e))?;
        let Answer::Chunks(bodies) = answer else {
            return Err(FsError::GeneralFailure);
        };
        let mut data = Vec::new();
        for b in bodies {
            data.extend_from_slice(&b.data);
        }
        self.ahead = (self.starts.get(first).copied().unwrap_or(0), data);
        Ok(())
    }
}

impl DavFile for Open {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let attr = match self {
            Open::Read(r) => r.attr.clone(),
            Open::Write(w) => w.attr(),
        };
        let meta: Box<dyn DavMetaData> = Box::new(Meta(attr));
        futures_util::future::ready(Ok(meta)).boxed()
    }

    fn write_buf(&mut self, mut buf: Box<dyn bytes::Buf + Send>) -> FsFuture<'_, ()> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        self.write_bytes(bytes)
    }

    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        async move {
            let Open::Write(w) = self else {
                return Err(FsError::Forbidden);
            };
            w.write(buf).await
        }
        .boxed()
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        async move {
            let Open::Read(r) = self else {
                return Err(FsError::Forbidden);
            };
            let Some(web) = r.web.upgrade() else {
                return Err(FsError::GeneralFailure);
            };
            let size = r.attr.size;
            if r.pos >= size || count == 0 {
                return Ok(Bytes::new());
            }
            let want = (count as u64).min(size - r.pos);
            let (start, have) = (r.ahead.0, r.ahead.1.len() as u64);
            if r.pos < start || r.pos >= start + have {
                let pos = r.pos;
                let mut reader = std::mem::replace(
                    r,
                    Reader {
                        web: Weak::new(),
                        session: r.session.clone(),
                        attr: r.attr.clone(),
                        chunks: Vec::new(),
                        starts: Vec::new(),
                        pos,
                        ahead: (0, Vec::new()),
                    },
                );
                let (reader, result) = tokio::task::spawn_blocking(move || {
                    let res = reader.fetch(&web, pos, want.max(READ_AHEAD));
                    (reader, res)
                })
                .await
                .map_err(|_| FsError::GeneralFailure)?;
                *r = reader;
                result?;
            }
            let from = (r.pos - r.ahead.0) as usize;
            let to = (from + want as usize).min(r.ahead.1.len());
            let out = Bytes::copy_from_slice(&r.ahead.1[from..to]);
            r.pos += out.len() as u64;
            Ok(out)
        }
        .boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let result = match self {
            Open::Read(r) => {
                let to = match pos {
                    SeekFrom::Start(n) => Some(n),
                    SeekFrom::Current(d) => r.pos.checked_add_signed(d),
                    SeekFrom::End(d) => r.attr.size.checked_add_signed(d),
                };
                match to {
                    Some(n) => {
                        r.pos = n;
                        Ok(n)
                    }
                    None => Err(FsError::GeneralFailure),
                }
            }
            // Writes go in one stream from the start: a new version, not a patch.
            Open::Write(w) => match pos {
                SeekFrom::Start(n) if n == w.received() => Ok(n),
                _ => Err(FsError::NotImplemented),
            },
        };
        futures_util::future::ready(result).boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        async move {
            match self {
                Open::Write(w) => w.finish().await,
                Open::Read(_) => Ok(()),
            }
        }
        .boxed()
    }
}

impl GuardedFileSystem<Creds> for ShelfFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
        session: &'a Creds,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        let session = session.clone();
        let parts = parts_of(path);
        let web = self.web.clone();
        let target = target_of(path);
        self.run(move |w| {
            if !options.write {
                let (attr, chunks) = chunks_of(w, &session, &target?)?;
                let mut starts = Vec::with_capacity(chunks.len());
                let mut at = 0u64;
                for c in &chunks {
                    starts.push(at);
                    at += u64::from(c.len);
                }
                let file: Box<dyn DavFile> = Box::new(Open::Read(Reader {
                    web,
                    session,
                    attr,
                    chunks,
                    starts,
                    pos: 0,
                    ahead: (0, Vec::new()),
                }));
                return Ok(file);
            }
            let parts = parts?;
            let Some((name, dir)) = parts.split_last() else {
                return Err(FsError::Forbidden);
            };
            let folder = resolve(w, &session, dir).map_err(web_error)?;
            if folder.kind != NodeKind::Dir {
                return Err(FsError::Forbidden);
            }
            if folder.read_only {
                return Err(FsError::Forbidden);
            }
            let existing = session.call(
                &w.store,
                Request::Lookup {
                    parent: folder.node,
                    name: name.clone(),
                },
            );
            let attr = match existing {
                Ok(Answer::Attr(a)) if options.create_new => {
                    let _ = a;
                    return Err(FsError::Exists);
                }
                Ok(Answer::Attr(a)) if a.kind == NodeKind::Dir => return Err(FsError::Forbidden),
                Ok(Answer::Attr(a)) => a,
                Err(e) if e.code == ErrorCode::NotFound && options.create => Attr {
                    node: 0,
                    kind: NodeKind::File,
                    mode: 0o644,
                    size: 0,
                    mtime: shelf_protocol::Timestamp::now(),
                    ctime: shelf_protocol::Timestamp::now(),
                    atime: shelf_protocol::Timestamp::now(),
                    nlink: 1,
                    version: 0,
                    rdev: 0,
                    uid: None,
                    gid: None,
                    read_only: false,
                },
                Err(e) => return Err(fs_error(&e)),
                Ok(_) => return Err(FsError::GeneralFailure),
            };
            if options.append {
                return Err(FsError::NotImplemented);
            }
            let upload = Upload::stream(dir.to_vec(), folder.node, vec![name.clone()]);
            let file: Box<dyn DavFile> =
                Box::new(Open::Write(Writer::new(web, session, upload, attr)));
            Ok(file)
        })
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
        session: &'a Creds,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        let session = session.clone();
        let target = target_of(path);
        self.run(move |w| {
            let entries = match target? {
                Target::Stored(parts) => {
                    let dir = resolve(w, &session, &parts).map_err(web_error)?;
                    if dir.kind != NodeKind::Dir {
                        return Err(FsError::Forbidden);
                    }
                    list(w, &session, dir.node)?
                }
                Target::Versions(dir) => {
                    let (_, versions) = history(w, &session, &dir).map_err(web_error)?;
                    versions
                        .iter()
                        .map(|v| Entry {
                            name: version_name(&v.name, v.number),
                            attr: version_attr(v),
                        })
                        .collect()
                }
                Target::Version(..) => return Err(FsError::Forbidden),
            };
            let stream: FsStream<Box<dyn DavDirEntry>> =
                Box::pin(futures_util::stream::iter(entries.into_iter().map(|e| {
                    let entry: Box<dyn DavDirEntry> = Box::new(e);
                    Ok(entry)
                })));
            Ok(stream)
        })
    }

    fn metadata<'a>(
        &'a self,
        path: &'a DavPath,
        session: &'a Creds,
    ) -> FsFuture<'a, Box<dyn DavMetaData>> {
        let session = session.clone();
        let target = target_of(path);
        self.run(move |w| {
            let attr = attr_of(w, &session, &target?)?;
            let meta: Box<dyn DavMetaData> = Box::new(Meta(attr));
            Ok(meta)
        })
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath, session: &'a Creds) -> FsFuture<'a, ()> {
        let session = session.clone();
        let parts = parts_of(path);
        self.run(move |w| {
            let parts = parts?;
            let (name, dir) = parts.split_last().ok_or(FsError::Forbidden)?;
            let parent = resolve(w, &session, dir).map_err(|_| FsError::NotFound)?;
            session
                .call(
                    &w.store,
                    Request::Mkdir {
                        parent: parent.node,
                        name: name.clone(),
                        mode: 0o755,
                        id: None,
                    },
                )
                .map(|_| ())
                .map_err(|e| fs_error(&e))
        })
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath, session: &'a Creds) -> FsFuture<'a, ()> {
        self.remove(path, session, true)
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath, session: &'a Creds) -> FsFuture<'a, ()> {
        self.remove(path, session, false)
    }

    fn rename<'a>(
        &'a self,
        from: &'a DavPath,
        to: &'a DavPath,
        session: &'a Creds,
    ) -> FsFuture<'a, ()> {
        let session = session.clone();
        let (from, to) = (parts_of(from), parts_of(to));
        self.run(move |w| {
            let (from, to) = (from?, to?);
            let (name, dir) = from.split_last().ok_or(FsError::Forbidden)?;
            let (new_name, new_dir) = to.split_last().ok_or(FsError::Forbidden)?;
            let parent = resolve(w, &session, dir).map_err(web_error)?;
            let new_parent = resolve(w, &session, new_dir).map_err(web_error)?;
            session
                .call(
                    &w.store,
                    Request::Rename {
                        parent: parent.node,
                        name: name.clone(),
                        new_parent: new_parent.node,
                        new_name: new_name.clone(),
                        mode: RenameMode::Replace,
                        expect: None,
                    },
                )
                .map(|_| ())
                .map_err(|e| fs_error(&e))
        })
    }

    /// A copy on the server: the new file names the same chunks (nothing is read or
    /// stored again), as one new version.
    fn copy<'a>(
        &'a self,
        from: &'a DavPath,
        to: &'a DavPath,
        session: &'a Creds,
    ) -> FsFuture<'a, ()> {
        let session = session.clone();
        // A version may be copied out of `.versions/` (how a client restores one).
        let (from, to) = (target_of(from), parts_of(to));
        self.run(move |w| {
            let (from, to) = (from?, to?);
            let (source, chunks) = chunks_of(w, &session, &from)?;
            let target = create_file(w, &session, &to).map_err(|e| fs_error(&e))?;
            // The source's chunks, named in the target's commit: stored already, so the
            // store only checks them (across accounts they would be sent again).
            let have = session
                .call(
                    &w.store,
                    Request::HaveChunks {
                        node: target.node,
                        ids: chunks.iter().map(|c| c.id).collect(),
                    },
                )
                .map_err(|e| fs_error(&e))?;
            if matches!(&have, Answer::Missing(m) if !m.is_empty()) {
                return Err(FsError::NotImplemented);
            }
            session
                .call(
                    &w.store,
                    Request::Commit {
                        node: target.node,
                        base_version: target.version,
                        chunks,
                        inline: Vec::new(),
                        mtime: source.mtime,
                        durable: true,
                    },
                )
                .map(|_| ())
                .map_err(|e| fs_error(&e))
        })
    }

    fn have_props<'a>(
        &'a self,
        _path: &'a DavPath,
        _session: &'a Creds,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(futures_util::future::ready(true))
    }

    /// Dead properties live as extended attributes of the node (`user.dav.…`), so they
    /// move, copy and version with it like any attribute.
    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
        session: &'a Creds,
    ) -> FsFuture<'a, Vec<(StatusCode, DavProp)>> {
        let session = session.clone();
        let parts = parts_of(path);
        self.run(move |w| {
            let node = resolve(w, &session, &parts?).map_err(web_error)?.node;
            let mut out = Vec::new();
            for (set, prop) in patch {
                let name = prop_key(&prop);
                let req = match set {
                    true => Request::SetXattr {
                        node,
                        name,
                        value: postcard::to_stdvec(&StoredProp::of(&prop))
                            .map_err(|_| FsError::GeneralFailure)?,
                        mode: XattrMode::Set,
                    },
                    false => Request::RemoveXattr { node, name },
                };
                let status = match session.call(&w.store, req) {
                    Ok(_) => StatusCode::OK,
                    // Removing what is not there succeeds (RFC 4918 9.2).
                    Err(e) if !set && e.code == ErrorCode::NoAttribute => StatusCode::OK,
                    Err(e)
                        if matches!(e.code, ErrorCode::ReadOnly | ErrorCode::PermissionDenied) =>
                    {
                        StatusCode::FORBIDDEN
                    }
                    Err(e) if e.code == ErrorCode::TooLarge => StatusCode::INSUFFICIENT_STORAGE,
                    Err(e) => return Err(fs_error(&e)),
                };
                out.push((status, DavProp { xml: None, ..prop }));
            }
            Ok(out)
        })
    }

    fn get_props<'a>(
        &'a self,
        path: &'a DavPath,
        do_content: bool,
        session: &'a Creds,
    ) -> FsFuture<'a, Vec<DavProp>> {
        let session = session.clone();
        let target = target_of(path);
        self.run(move |w| {
            let Target::Stored(parts) = target? else {
                return Ok(Vec::new());
            };
            let node = resolve(w, &session, &parts).map_err(web_error)?.node;
            let Answer::Names(names) = session
                .call(&w.store, Request::ListXattr { node })
                .map_err(|e| fs_error(&e))?
            else {
                return Err(FsError::GeneralFailure);
            };
            let mut out = Vec::new();
            for name in names.into_iter().filter(|n| n.starts_with(PROP_PREFIX)) {
                if let Some(p) = stored_prop(w, &session, node, name)? {
                    out.push(p.into_prop(do_content));
                }
            }
            Ok(out)
        })
    }

    fn get_prop<'a>(
        &'a self,
        path: &'a DavPath,
        prop: DavProp,
        session: &'a Creds,
    ) -> FsFuture<'a, Vec<u8>> {
        let session = session.clone();
        let parts = stored_parts(path).ok_or(FsError::NotFound);
        self.run(move |w| {
            let node = resolve(w, &session, &parts?).map_err(web_error)?.node;
            stored_prop(w, &session, node, prop_key(&prop))?
                .and_then(|p| p.xml)
                .ok_or(FsError::NotFound)
        })
    }

    fn get_quota<'a>(&'a self, session: &'a Creds) -> FsFuture<'a, (u64, Option<u64>)> {
        let session = session.clone();
        self.run(move |w| {
            match session
                .call(&w.store, Request::Status)
                .map_err(|e| fs_error(&e))?
            {
                Answer::Status(s) => Ok((s.stored_bytes, s.quota)),
                _ => Err(FsError::GeneralFailure),
            }
        })
    }
}

impl ShelfFs {
    fn remove<'a>(&'a self, path: &'a DavPath, session: &'a Creds, dir: bool) -> FsFuture<'a, ()> {
        let session = session.clone();
        let parts = parts_of(path);
        self.run(move |w| {
            let parts = parts?;
            let (name, folder) = parts.split_last().ok_or(FsError::Forbidden)?;
            let parent = resolve(w, &session, folder).map_err(web_error)?;
            let req = match dir {
                true => Request::Rmdir {
                    parent: parent.node,
                    name: name.clone(),
                    expect: None,
                },
                false => Request::Unlink {
                    parent: parent.node,
                    name: name.clone(),
                    expect: None,
                },
            };
            session
                .call(&w.store, req)
                .map(|_| ())
                .map_err(|e| fs_error(&e))
        })
    }
}

/// The file at `parts`, made empty if nothing is there (as `open` with `O_CREAT`).
pub fn create_file(web: &Web, session: &WebSession, parts: &[String]) -> Result<Attr, WireError> {
    let (name, dir) = parts
        .split_last()
        .ok_or(WireError::from(ErrorCode::InvalidName))?;
    let parent = resolve(web, session, dir).map_err(|e| e.0)?;
    let made = session.call(
        &web.store,
        Request::Create {
            parent: parent.node,
            name: name.clone(),
            mode: 0o644,
            exclusive: false,
            id: None,
        },
    )?;
    match made {
        Answer::Attr(a) => Ok(a),
        _ => Err(ErrorCode::Internal.into()),
    }
}

/// Extended attributes holding dead properties start with this.
const PROP_PREFIX: &str = "user.dav.";

/// A dead property as kept in its attribute.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredProp {
    name: String,
    prefix: Option<String>,
    namespace: Option<String>,
    xml: Option<Vec<u8>>,
}

impl StoredProp {
    fn of(p: &DavProp) -> StoredProp {
        StoredProp {
            name: p.name.clone(),
            prefix: p.prefix.clone(),
            namespace: p.namespace.clone(),
            xml: p.xml.clone(),
        }
    }

    fn into_prop(self, with_value: bool) -> DavProp {
        DavProp {
            name: self.name,
            prefix: self.prefix,
            namespace: self.namespace,
            xml: if with_value { self.xml } else { None },
        }
    }
}

/// The attribute of a dead property: its namespace's hash (namespaces are long URIs)
/// and its name.
fn prop_key(p: &DavProp) -> String {
    let ns = blake3::hash(p.namespace.as_deref().unwrap_or("").as_bytes()).to_hex();
    let mut key = format!("{PROP_PREFIX}{}.{}", &ns[..16], p.name);
    key.truncate(255);
    key
}

/// A dead property of `node`, if it has it.
fn stored_prop(
    web: &Web,
    session: &WebSession,
    node: NodeId,
    name: String,
) -> FsResult<Option<StoredProp>> {
    match session.call(&web.store, Request::GetXattr { node, name }) {
        Ok(Answer::Bytes(b)) => Ok(postcard::from_bytes(&b).ok()),
        Ok(_) => Err(FsError::GeneralFailure),
        Err(e) if matches!(e.code, ErrorCode::NoAttribute | ErrorCode::NotFound) => Ok(None),
        Err(e) => Err(fs_error(&e)),
    }
}

/// `user:secret` of a Basic `Authorization` header.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, secret) = text.split_once(':')?;
    Some((user.to_string(), secret.to_string()))
}

/// Whether a request path has a `.` or `..` segment (also percent-encoded): refused
/// before WebDAV resolves it.
fn climbs(path: &str) -> bool {
    path.to_ascii_lowercase()
        .replace("%2e", ".")
        .split('/')
        .any(|seg| seg == "." || seg == "..")
}

fn challenge(status: StatusCode, message: &'static str) -> Response {
    (
        status,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"Shelf WebDAV (use an app password)\", charset=\"UTF-8\"",
        )],
        message,
    )
        .into_response()
}

/// Every request under `/dav/`: signed in with an app password, then WebDAV.
pub async fn serve(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    req: axum::extract::Request,
) -> Response {
    if climbs(req.uri().path()) {
        return (StatusCode::BAD_REQUEST, "no . or .. in paths").into_response();
    }
    let Some((user, secret)) = basic(req.headers()) else {
        return challenge(
            StatusCode::UNAUTHORIZED,
            "sign in with your user name and an app password (shelf app-password add NAME)",
        );
    };
    let w = web.clone();
    let (u, s) = (user.clone(), secret.clone());
    let signed = tokio::task::spawn_blocking(move || w.store.app_login(&u, &s, Some(peer.0)))
        .await
        .map_err(|_| ErrorCode::Internal);
    let ctx = match signed {
        Ok(Ok(ctx)) => ctx,
        Ok(Err(e)) if e.code() == ErrorCode::Locked => {
            return challenge(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed sign-ins: try again later",
            )
        }
        Ok(Err(_)) => {
            return challenge(StatusCode::UNAUTHORIZED, "wrong user name or app password")
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let session = Arc::new(WebSession::for_app(peer.0, ctx, &secret));
    let (handler, locks) = web.dav.of(&session);
    let lock_of = (req.method().as_str() == "LOCK").then(|| req.uri().clone());
    let answer = handler.handle_guarded(req, user, session).await;
    // A `LOCK` of an unmapped URL: the empty file it names, and its lease.
    if let (Some(uri), StatusCode::CREATED) = (lock_of, answer.status()) {
        let token = answer
            .headers()
            .get("lock-token")
            .and_then(|v| v.to_str().ok())
            .map(|t| t.trim_matches(['<', '>']).to_string());
        let path = DavPath::from_uri(&uri).and_then(|mut p| p.set_prefix(PREFIX).map(|_| p));
        if let (Some(token), Ok(path)) = (token, path) {
            locks.made_by_lock(path, token).await;
        }
    }
    answer.map(Body::new).into_response()
}

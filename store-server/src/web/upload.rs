//! Uploads from the browser, resumable: `POST /api/upload` names the file (folder, path
//! below it, size) and gets an id; `PUT /api/upload/ID?offset=N` sends the next bytes
//! (a wrong offset is answered 409 with the right one, so a browser whose connection
//! dropped asks `GET /api/upload/ID` and goes on from there); `POST
//! /api/upload/ID/finish` makes the file. Bytes go through the mount's chunker as they
//! arrive and each chunk is stored at once (`PutChunks`, sealed at rest like every
//! chunk; nothing of an upload is kept in plain text, and at most a megabyte waits in
//! memory); the finish creates missing folders and commits the chunk list as the file's
//! new version (`Create` + `Commit`), so deduplication, versions, quotas and conflicts are
//! the mount's. Every call is a protocol request run by the handler as the session.

use super::pages::{components, resolve, signed_in};
use super::sessions::WebSession;
use super::{Peer, Web, WebError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use shelf_protocol::chunker::Chunker;
use shelf_protocol::sync::LockOrRecover;
use shelf_protocol::{
    ChunkBody, ChunkRef, ErrorCode, NodeId, NodeKind, Request, Response as Answer, Timestamp,
    MAX_CHUNKS_PER_REQUEST,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most bytes one `PUT` may carry.
pub const MAX_PIECE: usize = 16 << 20;
/// Bytes that wait for the chunker before it cuts (per upload).
const CHUNKER_BUFFER: usize = 1 << 20;
/// An upload nobody touched for this long is given up (its chunks go with the next prune).
const IDLE: Duration = Duration::from_secs(3600);
/// Uploads under way at most (all sessions).
const MAX_UPLOADS: usize = 4096;
/// Names tried for an upload that must not replace a file (`a.jpg`, `a (2).jpg`, …).
const MAX_FRESH_TRIES: u32 = 1000;

/// The uploads under way.
#[derive(Default)]
pub struct Uploads {
    by_id: Mutex<HashMap<String, Arc<Mutex<Upload>>>>,
}

pub struct Upload {
    /// The session token that started it (only it may go on).
    owner: String,
    /// The folder it goes into, and its node (the scope of the chunks).
    dir: Vec<String>,
    dir_node: NodeId,
    /// Path below the folder (sub-folders of a folder upload, then the name).
    path: Vec<String>,
    size: u64,
    received: u64,
    chunker: Option<Chunker>,
    refs: Vec<ChunkRef>,
    /// Chunks cut but not yet stored.
    waiting: Vec<ChunkBody>,
    touched: Instant,
    /// Never replace an existing file: take a free name instead.
    fresh: bool,
}

impl Upload {
    /// A file written as a stream (WebDAV `PUT`): `path` below the folder `dir` (node
    /// `dir_node`), its length not known ahead; [`receive`] its bytes, then [`commit`].
    pub fn stream(dir: Vec<String>, dir_node: NodeId, path: Vec<String>) -> Upload {
        Upload {
            owner: String::new(),
            dir,
            dir_node,
            path,
            size: u64::MAX,
            received: 0,
            chunker: Some(Chunker::with_buffer(CHUNKER_BUFFER)),
            refs: Vec::new(),
            waiting: Vec::new(),
            touched: Instant::now(),
            fresh: false,
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The folder it goes into: the scope of its chunks.
    pub fn scope(&self) -> NodeId {
        self.dir_node
    }
}

impl Uploads {
    fn get(&self, id: &str, session: &WebSession) -> Result<Arc<Mutex<Upload>>, WebError> {
        let map = self.by_id.lock_or_recover();
        match map.get(id) {
            Some(u) if u.lock_or_recover().owner == session.token => Ok(u.clone()),
            _ => Err(WebError::from(ErrorCode::NotFound)),
        }
    }
}

#[derive(Deserialize)]
pub struct Start {
    /// The folder, from the top of the store (`photos/personal`).
    pub dir: String,
    /// The file's path below it (`Trip/a.jpg` for a folder upload, else its name).
    pub path: String,
    pub size: u64,
}

#[derive(Serialize)]
pub struct Progress {
    id: String,
    offset: u64,
    size: u64,
}

/// Whether the `X-CSRF-Token` header every change through the API carries is right.
pub fn csrf_header_ok(web: &Web, session: &WebSession, headers: &HeaderMap) -> bool {
    let given = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    web.sessions.csrf_ok(session, given)
}

/// The signed-in session of an API call whose CSRF header is right.
pub async fn api_session(
    web: &Arc<Web>,
    peer: Peer,
    headers: &HeaderMap,
) -> Result<Arc<WebSession>, Response> {
    let session = match signed_in(web, peer, headers).await {
        Ok(s) => s,
        // An API call gets a status, not a redirect to the sign-in page.
        Err(_) => return Err((StatusCode::UNAUTHORIZED, "not signed in").into_response()),
    };
    if !csrf_header_ok(web, &session, headers) {
        return Err((StatusCode::FORBIDDEN, "bad or missing CSRF token").into_response());
    }
    Ok(session)
}

pub async fn start(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(req): Json<Start>,
) -> Response {
    match api_session(&web, peer, &headers).await {
        Ok(session) => start_as(web, session, req, false).await,
        Err(r) => r,
    }
}

/// Starts an upload for `session`; with `fresh`, the file never replaces one that exists
/// (it gets a new name: a public link's upload).
pub async fn start_as(
    web: Arc<Web>,
    session: Arc<WebSession>,
    req: Start,
    fresh: bool,
) -> Response {
    let (dir, path) = match (components(&req.dir), components(&req.path)) {
        (Ok(d), Ok(p)) if !p.is_empty() => (d, p),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
        _ => return WebError::from(ErrorCode::InvalidName).into_response(),
    };
    let w = web.clone();
    let s = session.clone();
    let d = dir.clone();
    let found = super::blocking(move || resolve(&w, &s, &d).map_err(|e| e.0)).await;
    let dir_node = match found {
        Ok(a) if a.kind == NodeKind::Dir && !a.read_only => a.node,
        Ok(a) if a.kind == NodeKind::Dir => {
            return WebError::from(ErrorCode::ReadOnly).into_response()
        }
        Ok(_) => return WebError::from(ErrorCode::NotDir).into_response(),
        Err(e) => return e.into_response(),
    };
    let mut raw = [0u8; 16];
    if getrandom::getrandom(&mut raw).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let id = hex::encode(raw);
    let upload = Upload {
        owner: session.token.clone(),
        dir,
        dir_node,
        path,
        size: req.size,
        received: 0,
        chunker: Some(Chunker::with_buffer(CHUNKER_BUFFER)),
        refs: Vec::new(),
        waiting: Vec::new(),
        touched: Instant::now(),
        fresh,
    };
    {
        let mut map = web.uploads.by_id.lock_or_recover();
        map.retain(|_, u| u.lock_or_recover().touched.elapsed() < IDLE);
        if map.len() >= MAX_UPLOADS {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many uploads under way",
            )
                .into_response();
        }
        map.insert(id.clone(), Arc::new(Mutex::new(upload)));
    }
    Json(Progress {
        id,
        offset: 0,
        size: req.size,
    })
    .into_response()
}

pub async fn status(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match api_session(&web, peer, &headers).await {
        Ok(session) => status_as(&web, &session, id),
        Err(r) => r,
    }
}

/// Where an upload of `session` is.
pub fn status_as(web: &Web, session: &WebSession, id: String) -> Response {
    match web.uploads.get(&id, session) {
        Ok(u) => {
            let u = u.lock_or_recover();
            Json(Progress {
                id,
                offset: u.received,
                size: u.size,
            })
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub struct At {
    pub offset: u64,
}

pub async fn put(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(at): Query<At>,
    body: Bytes,
) -> Response {
    match api_session(&web, peer, &headers).await {
        Ok(session) => put_as(web, session, id, at, body).await,
        Err(r) => r,
    }
}

/// The next bytes of an upload of `session`, at `at`.
pub async fn put_as(
    web: Arc<Web>,
    session: Arc<WebSession>,
    id: String,
    at: At,
    body: Bytes,
) -> Response {
    let upload = match web.uploads.get(&id, &session) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let w = web.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut u = upload.lock_or_recover();
        u.touched = Instant::now();
        if at.offset != u.received {
            return Err(u.received);
        }
        if u.received + body.len() as u64 > u.size {
            return Err(u.received);
        }
        Ok(receive(&w, &session, &mut u, &body))
    })
    .await;
    match result {
        Ok(Ok(Ok(offset))) => Json(Progress {
            id,
            offset,
            size: 0,
        })
        .into_response(),
        Ok(Ok(Err(e))) => e.into_response(),
        Ok(Err(offset)) => (
            StatusCode::CONFLICT,
            Json(Progress {
                id,
                offset,
                size: 0,
            }),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Cuts and stores what a piece completes; returns the new offset.
pub fn receive(
    web: &Web,
    session: &WebSession,
    u: &mut Upload,
    piece: &[u8],
) -> Result<u64, WebError> {
    let mut cut = cut(u, piece)?;
    store_waiting(web, session, u.dir_node, &mut cut, false)?;
    // What is less than a request's worth waits for the next piece.
    u.waiting = cut;
    Ok(u.received)
}

/// Cuts the chunks a piece completes: the ones not yet stored, in order (with those an
/// earlier piece left waiting), for [`store_chunks`].
pub fn cut(u: &mut Upload, piece: &[u8]) -> Result<Vec<ChunkBody>, WebError> {
    let Upload {
        chunker,
        refs,
        waiting,
        ..
    } = u;
    let Some(chunker) = chunker.as_mut() else {
        return Err(WebError::from(ErrorCode::InvalidArgument));
    };
    chunker.push(piece, &mut |r, data| {
        refs.push(r);
        waiting.push(ChunkBody { id: r.id, data });
        Ok::<(), WebError>(())
    })?;
    u.received += piece.len() as u64;
    Ok(std::mem::take(&mut u.waiting))
}

/// The end of the bytes: the last chunks, not yet stored.
pub fn cut_rest(u: &mut Upload) -> Result<Vec<ChunkBody>, WebError> {
    if let Some(chunker) = u.chunker.take() {
        let (refs, waiting) = (&mut u.refs, &mut u.waiting);
        chunker.finish(&mut |r, data| {
            refs.push(r);
            waiting.push(ChunkBody { id: r.id, data });
            Ok::<(), WebError>(())
        })?;
    }
    Ok(std::mem::take(&mut u.waiting))
}

/// Stores chunks [`cut`] from an upload whose folder is `scope` (its node).
pub fn store_chunks(
    web: &Web,
    session: &WebSession,
    scope: NodeId,
    mut chunks: Vec<ChunkBody>,
) -> Result<(), WebError> {
    store_waiting(web, session, scope, &mut chunks, true)
}

/// Stores the chunks cut so far, a request's worth at a time (all of them when `all`).
fn store_waiting(
    web: &Web,
    session: &WebSession,
    scope: NodeId,
    waiting: &mut Vec<ChunkBody>,
    all: bool,
) -> Result<(), WebError> {
    while waiting.len() >= MAX_CHUNKS_PER_REQUEST || (all && !waiting.is_empty()) {
        let n = waiting.len().min(MAX_CHUNKS_PER_REQUEST);
        let chunks: Vec<ChunkBody> = waiting.drain(..n).collect();
        session.call(
            &web.store,
            Request::PutChunks {
                node: scope,
                chunks,
            },
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
pub struct Finished {
    pub name: String,
    pub size: u64,
    pub version: u64,
}

pub async fn finish(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match api_session(&web, peer, &headers).await {
        Ok(session) => match finish_as(web, session, id).await {
            Ok(f) => Json(f).into_response(),
            Err(e) => e.into_response(),
        },
        Err(r) => r,
    }
}

/// Makes the file of an upload of `session`.
pub async fn finish_as(
    web: Arc<Web>,
    session: Arc<WebSession>,
    id: String,
) -> Result<Finished, WebError> {
    let upload = web.uploads.get(&id, &session)?;
    let w = web.clone();
    let done = super::blocking(move || {
        let mut u = upload.lock_or_recover();
        if u.received != u.size {
            return Err(ErrorCode::InvalidArgument.into());
        }
        commit(&w, &session, &mut u).map_err(|e| e.0)
    })
    .await;
    web.uploads.by_id.lock_or_recover().remove(&id);
    done
}

fn attr_of(answer: Answer) -> Result<shelf_protocol::Attr, WebError> {
    match answer {
        Answer::Attr(a) | Answer::KeptElsewhere { attr: a, .. } => Ok(a),
        _ => Err(WebError::from(ErrorCode::Internal)),
    }
}

/// What `name` in `parent` is, made by `make` if nothing is.
fn lookup_or_make(
    web: &Web,
    session: &WebSession,
    parent: NodeId,
    name: &str,
    make: Request,
) -> Result<shelf_protocol::Attr, WebError> {
    let found = session.call(
        &web.store,
        Request::Lookup {
            parent,
            name: name.to_string(),
        },
    );
    match found {
        Ok(a) => attr_of(a),
        Err(e) if e.code == ErrorCode::NotFound => attr_of(session.call(&web.store, make)?),
        Err(e) => Err(e.into()),
    }
}

/// Makes missing folders, the file if it is new, and commits the chunk list.
pub fn commit(web: &Web, session: &WebSession, u: &mut Upload) -> Result<Finished, WebError> {
    let rest = cut_rest(u)?;
    store_chunks(web, session, u.dir_node, rest)?;
    let (name, folders) = u
        .path
        .split_last()
        .ok_or(WebError::from(ErrorCode::InvalidName))?;
    let mut parent = resolve(web, session, &u.dir)?.node;
    for folder in folders {
        let make = Request::Mkdir {
            parent,
            name: folder.clone(),
            mode: 0o755,
            id: None,
        };
        let attr = lookup_or_make(web, session, parent, folder, make)?;
        if attr.kind != NodeKind::Dir {
            return Err(WebError::from(ErrorCode::NotDir));
        }
        parent = attr.node;
    }
    let (name, file) = match u.fresh {
        true => make_fresh(web, session, parent, name)?,
        false => {
            let make = Request::Create {
                parent,
                name: name.clone(),
                mode: 0o644,
                exclusive: false,
                id: None,
            };
            (
                name.clone(),
                lookup_or_make(web, session, parent, name, make)?,
            )
        }
    };
    if file.kind != NodeKind::File {
        return Err(WebError::from(ErrorCode::IsDir));
    }
    let attr = attr_of(session.call(
        &web.store,
        Request::Commit {
            node: file.node,
            base_version: file.version,
            chunks: u.refs.clone(),
            inline: Vec::new(),
            mtime: Timestamp::now(),
            durable: true,
        },
    )?)?;
    Ok(Finished {
        name,
        size: attr.size,
        version: attr.version,
    })
}

/// Makes a new file named `name` in `parent`, or `name (2)`, `name (3)`… when that is
/// taken: an upload through a public link never replaces anything.
fn make_fresh(
    web: &Web,
    session: &WebSession,
    parent: NodeId,
    name: &str,
) -> Result<(String, shelf_protocol::Attr), WebError> {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    };
    for n in 1..=MAX_FRESH_TRIES {
        let candidate = match n {
            1 => name.to_string(),
            n => format!("{stem} ({n}){ext}"),
        };
        let made = session.call(
            &web.store,
            Request::Create {
                parent,
                name: candidate.clone(),
                mode: 0o644,
                exclusive: true,
                id: None,
            },
        );
        match made {
            Ok(a) => return Ok((candidate, attr_of(a)?)),
            Err(e) if e.code == ErrorCode::Exists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(WebError::from(ErrorCode::Exists))
}

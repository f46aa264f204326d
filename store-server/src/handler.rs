//! Turns one request into one store call. The session of a connection lives in a
//! [`Session`]; every request except `Login`/`Resume` needs one, and every request passes
//! [`authorize`] here before the store sees it (the store checks each node again).
//! Errors are logged once, here, and sent as [`WireError`]s; no secret (password, token) is
//! ever logged.

use crate::authz::{authorize_request, Action};
use crate::error::StoreError;
use crate::store::audit::AuditKind;
use crate::store::conflicts::Committed;
use crate::store::locks::LockSpec;
use crate::store::namespace::NewNode;
use crate::store::shares::ChunkScope;
use crate::store::{Ctx, Store};
use shelf_protocol::sync::LockOrRecover;
use shelf_protocol::{
    AdminRequest, ChunkBody, ChunkId, ChunkRef, ErrorCode, NodeId, NodeKind, Request, Response,
    UserInfo, WireError, MAX_BATCH, MAX_CHUNK, MAX_CHUNKS_PER_REQUEST,
};
use std::sync::Mutex;

/// Chunks of other accounts' files one session remembers having uploaded (a commit naming
/// a forgotten one is answered `MissingChunk`, and the client sends it again).
const MAX_FOREIGN_UPLOADS: usize = 1 << 18;

/// Most chunk ids one `HaveChunks` may ask about.
pub const MAX_HAVE_CHUNKS: usize = 65_536;

/// Where a session's secret comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Door {
    /// A device's (or browser's) session token.
    #[default]
    Device,
    /// A public link's token (made only by the web door).
    Link,
    /// An app password (WebDAV clients).
    App,
}

/// The logged-in state of one connection.
#[derive(Default)]
pub struct Session {
    state: Mutex<Option<(Ctx, String)>>,
    /// The client's network address (for throttling logins and the audit log).
    peer: Option<std::net::IpAddr>,
    /// Chunks this session uploaded into other accounts (shared files), which its commits
    /// may name.
    uploads: Mutex<std::collections::HashSet<(u64, ChunkId)>>,
    /// The program behind this connection when it is not the device's mount
    /// ([`Request::SetAgent`]): its changes are published as made by `DEVICE AGENT`.
    agent: Mutex<Option<String>>,
    /// What kind of secret the token is, so every request checks it again where it lives.
    door: Door,
    /// Files a link's visitor made in this session (the only ones it may commit to).
    made: Mutex<std::collections::HashSet<NodeId>>,
    /// When a device session was last found valid, at which [`Store::session_epoch`], and
    /// what it may do then.
    checked: Mutex<Option<(std::time::Instant, u64, Ctx)>>,
}

/// How long a device session found valid stands without looking again (sessions revoked
/// on another server of the store end within this; on this one, at once).
const SESSION_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl Session {
    pub fn for_peer(peer: std::net::IpAddr) -> Session {
        Session {
            state: Mutex::new(None),
            peer: Some(peer),
            uploads: Mutex::default(),
            agent: Mutex::default(),
            door: Door::Device,
            made: Mutex::default(),
            checked: Mutex::default(),
        }
    }

    /// The session of a public link's visitor, opened by [`Store::open_link`].
    pub fn for_link(peer: std::net::IpAddr, ctx: Ctx, token: String) -> Session {
        Session {
            state: Mutex::new(Some((ctx, token))),
            peer: Some(peer),
            uploads: Mutex::default(),
            agent: Mutex::default(),
            door: Door::Link,
            made: Mutex::default(),
            checked: Mutex::default(),
        }
    }

    /// The session of a program signed in with an app password ([`Store::app_login`]).
    pub fn for_app(peer: std::net::IpAddr, ctx: Ctx, secret: String) -> Session {
        Session {
            state: Mutex::new(Some((ctx, secret))),
            peer: Some(peer),
            uploads: Mutex::default(),
            agent: Mutex::default(),
            door: Door::App,
            made: Mutex::default(),
            checked: Mutex::default(),
        }
    }

    /// Whether this session may name chunk `id` in `scope` (always in its own account).
    fn may_use(&self, scope: &ChunkScope, id: &ChunkId) -> bool {
        scope.covers(id)
            || self
                .uploads
                .lock_or_recover()
                .contains(&(scope.account, *id))
    }

    fn uploaded(&self, scope: &ChunkScope, id: ChunkId) {
        if scope.only.is_some() {
            {
                let mut u = self.uploads.lock_or_recover();
                if u.len() >= MAX_FOREIGN_UPLOADS {
                    u.clear();
                }
                u.insert((scope.account, id));
            }
        }
    }

    pub fn ctx(&self) -> Option<Ctx> {
        self.state
            .lock_or_recover()
            .as_ref()
            .map(|(c, _)| c.clone())
    }
    fn set(&self, value: Option<(Ctx, String)>) {
        *self.state.lock_or_recover() = value;
    }
    /// The context of this device session's token, looked up again when something that
    /// may end sessions happened since the last look, or a second passed.
    pub fn resumed(&self, store: &Store, token: &str) -> Result<Ctx, StoreError> {
        let epoch = store.session_epoch();
        if let Some((at, seen, ctx)) = &*self.checked.lock_or_recover() {
            if *seen == epoch && at.elapsed() < SESSION_RECHECK {
                return Ok(ctx.clone());
            }
        }
        let ctx = store.resume(token)?;
        *self.checked.lock_or_recover() = Some((std::time::Instant::now(), epoch, ctx.clone()));
        Ok(ctx)
    }

    /// A number standing for this session (its token), for lock leases.
    pub fn key(&self) -> u64 {
        let token = self.token().unwrap_or_default();
        let h = blake3::hash(token.as_bytes());
        u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]))
    }

    /// The session's token, when logged in.
    pub fn token(&self) -> Option<String> {
        self.state
            .lock_or_recover()
            .as_ref()
            .map(|(_, t)| t.clone())
    }
}

/// A short description of a request for logs: the variant, never its secrets.
fn describe(req: &Request) -> &'static str {
    match req {
        Request::Login { .. } => "login",
        Request::Resume { .. } => "resume",
        Request::Logout => "logout",
        Request::ListDevices => "list-devices",
        Request::RevokeDevice { .. } => "revoke-device",
        Request::Admin(_) => "admin",
        Request::Share { .. } => "share",
        Request::Unshare { .. } => "unshare",
        Request::ListShares => "list-shares",
        Request::ReportSyncFailure { .. } => "report-sync-failure",
        Request::SetAgent { .. } => "set-agent",
        Request::Lookup { .. } => "lookup",
        Request::GetAttr { .. } => "getattr",
        Request::SetAttr { .. } => "setattr",
        Request::ReadDir { .. } => "readdir",
        Request::Mkdir { .. } => "mkdir",
        Request::Create { .. } => "create",
        Request::Symlink { .. } => "symlink",
        Request::ReadLink { .. } => "readlink",
        Request::Unlink { .. } => "unlink",
        Request::Rmdir { .. } => "rmdir",
        Request::Rename { .. } => "rename",
        Request::Link { .. } => "link",
        Request::SetXattr { .. } => "setxattr",
        Request::GetXattr { .. } => "getxattr",
        Request::ListXattr { .. } => "listxattr",
        Request::RemoveXattr { .. } => "removexattr",
        Request::StatFs => "statfs",
        Request::HaveChunks { .. } => "have-chunks",
        Request::PutChunks { .. } => "put-chunks",
        Request::GetChunks { .. } => "get-chunks",
        Request::GetManifest { .. } => "get-manifest",
        Request::GetSmallFile { .. } => "get-small-file",
        Request::CreateLink { .. } => "create-link",
        Request::ListLinks => "list-links",
        Request::RevokeLink { .. } => "revoke-link",
        Request::AddAppPassword { .. } => "add-app-password",
        Request::ListAppPasswords => "list-app-passwords",
        Request::RevokeAppPassword { .. } => "revoke-app-password",
        Request::Commit { .. } => "commit",
        Request::Status => "status",
        Request::Mknod { .. } => "mknod",
        Request::ListVersions { .. } => "list-versions",
        Request::GetVersion { .. } => "get-version",
        Request::Restore { .. } => "restore",
        Request::Subscribe { .. } => "subscribe",
        Request::Lock { .. } => "lock",
        Request::TestLock { .. } => "test-lock",
        Request::RenewLocks => "renew-locks",
        Request::Batch(_) => "batch",
    }
}

/// Requests whose success must be on disk before the answer (chunk uploads are made
/// durable by the commit that names them).
fn changes_store(req: &Request) -> bool {
    req.batchable()
        || matches!(
            req,
            Request::Link { .. }
                | Request::Commit { .. }
                | Request::Restore { .. }
                | Request::Admin(_)
                | Request::Share { .. }
                | Request::Unshare { .. }
                | Request::CreateLink { .. }
                | Request::RevokeLink { .. }
                | Request::AddAppPassword { .. }
                | Request::RevokeAppPassword { .. }
                | Request::Batch(_)
        )
}

/// Handles one request for the connection whose session is `session`.
pub fn handle(store: &Store, session: &Session, req: Request) -> Result<Response, WireError> {
    let what = describe(&req);
    let started = std::time::Instant::now();
    tracing::trace!(request = what, "request");
    let changes_store = changes_store(&req);
    let mut result = match req {
        Request::Batch(reqs) => batch(store, session, reqs),
        req => dispatch(store, session, req),
    };
    // A change is durable before it is acknowledged: a server killed right after answering
    // loses nothing a client was told was done (chunk bodies first, then the database).
    if changes_store && result.is_ok() {
        if let Err(e) = store.sync() {
            result = Err(e);
        }
    }
    if let Err(e) = &result {
        match e {
            StoreError::Refused(code) => tracing::debug!(request = what, ?code, "refused"),
            other => tracing::warn!(request = what, error = %other, "request failed"),
        }
    }
    let outcome = match &result {
        Ok(_) => "ok",
        Err(StoreError::Refused(_)) => "refused",
        Err(_) => "failed",
    };
    crate::metrics::global().request(what, outcome, started.elapsed());
    result.map_err(|e| e.to_wire())
}

/// Applies a batch's changes in order, each authorised as its own request, stopping at the
/// first refused (the changes before it are committed); [`handle`] then flushes once for all.
/// The changes go in one transaction, or in a few: a commit of a file made earlier in the
/// batch (a small file's content riding with its create) starts the next one, since a
/// commit's chunks are stored and checked against its file before its transaction.
fn batch(
    store: &Store,
    session: &Session,
    reqs: Vec<shelf_protocol::Stamped>,
) -> Result<Response, StoreError> {
    if reqs.len() > MAX_BATCH || !reqs.iter().all(|s| s.req.batchable()) {
        return Err(ErrorCode::InvalidArgument.into());
    }
    let ctx = signed_in(store, session)?;
    if ctx.link.is_some() {
        return Err(ErrorCode::PermissionDenied.into());
    }
    // Commits need their chunks stored and checked before the transaction (which reads and
    // writes the database only through itself), and none collected until it ends.
    let _chunks_in_use = match reqs.iter().any(|s| matches!(s.req, Request::Commit { .. })) {
        true => Some(store.chunks_in_use()?),
        false => None,
    };
    let mut results: Vec<Result<Response, WireError>> = Vec::with_capacity(reqs.len());
    let mut start = 0;
    while start < reqs.len() {
        let part = &reqs[start..segment_end(&reqs, start)];
        let (applied, failure) = batch_segment(store, session, &ctx, part);
        results.extend(applied.into_iter().map(Ok));
        if let Some(e) = failure {
            let what = reqs
                .get(results.len())
                .map(|s| describe(&s.req))
                .unwrap_or("batch");
            match &e {
                StoreError::Refused(code) => {
                    tracing::debug!(request = what, ?code, "refused in a batch")
                }
                other => tracing::warn!(request = what, error = %other, "batched request failed"),
            }
            results.push(Err(e.to_wire()));
            break;
        }
        start += part.len();
    }
    Ok(Response::Batch(results))
}

/// Where the transaction that starts at `start` ends: before the first commit of a file
/// made within it.
fn segment_end(reqs: &[shelf_protocol::Stamped], start: usize) -> usize {
    let mut made = std::collections::HashSet::new();
    for (i, s) in reqs.iter().enumerate().skip(start) {
        match &s.req {
            Request::Create { id: Some(id), .. } => {
                made.insert(*id);
            }
            Request::Commit { node, .. } if made.contains(node) => return i,
            _ => {}
        }
    }
    reqs.len()
}

/// Applies `reqs` in one transaction (commits prepared first), up to the first refused.
fn batch_segment(
    store: &Store,
    session: &Session,
    ctx: &Ctx,
    reqs: &[shelf_protocol::Stamped],
) -> (Vec<Response>, Option<StoreError>) {
    let mut cut = None;
    for (i, s) in reqs.iter().enumerate() {
        if let Request::Commit {
            node,
            chunks,
            inline,
            ..
        } = &s.req
        {
            if let Err(e) = prepare_commit(store, session, ctx, *node, chunks, inline) {
                cut = Some((i, e));
                break;
            }
        }
    }
    let n = cut.as_ref().map_or(reqs.len(), |(i, _)| *i);
    let inline = reqs[..n]
        .iter()
        .any(|s| matches!(&s.req, Request::Commit { inline, .. } if !inline.is_empty()));
    if inline {
        if let Err(e) = chunks_readable_elsewhere(store) {
            return (Vec::new(), Some(e));
        }
    }
    // Nodes the store numbers itself (the client numbers those it makes).
    let new_nodes = reqs[..n]
        .iter()
        .filter(|s| {
            matches!(
                s.req,
                Request::Mkdir { id: None, .. }
                    | Request::Create { id: None, .. }
                    | Request::Symlink { id: None, .. }
                    | Request::Mknod { id: None, .. }
            )
        })
        .count();
    let (applied, failure) = store.in_one_transaction(n, new_nodes, |i| {
        let shelf_protocol::Stamped { at, req } = &reqs[i];
        tracing::trace!(request = describe(req), "in a batch");
        store.at_time(*at, || match req {
            // Checked above; a conflict or a deletion meanwhile is refused here (alone,
            // the client's commit is resolved: see `Store::commit_resolving`).
            Request::Commit {
                node,
                base_version,
                chunks,
                mtime,
                ..
            } => store
                .commit_checked(ctx, *node, *base_version, chunks.clone(), *mtime)
                .map(Response::Attr),
            req => apply(store, session, ctx, req.clone()),
        })
    });
    (applied, failure.or(cut.map(|(_, e)| e)))
}

/// On a store other servers share (metadata on PostgreSQL), a committed version is seen
/// by them at once and outlives this server: the chunks it names must be where they can
/// read them first, so chunks still in this server's memory go to the bucket before the
/// transaction. (With sled, the sync before the answer covers it: a killed server loses
/// an unflushed commit together with its chunks.)
fn chunks_readable_elsewhere(store: &Store) -> Result<(), StoreError> {
    if store.db.is_shared() {
        store.share_chunks()?;
    }
    Ok(())
}

/// A batched commit's part outside the batch's transaction: its inline chunks stored, and
/// [`Store::check_commit`] (the same checks as a commit sent alone).
fn prepare_commit(
    store: &Store,
    session: &Session,
    ctx: &Ctx,
    node: NodeId,
    chunks: &[ChunkRef],
    inline: &[ChunkBody],
) -> Result<(), StoreError> {
    let scope = store.chunk_scope(ctx, node, Action::Write)?;
    put_chunks(store, ctx, session, &scope, inline)?;
    if chunks.iter().any(|c| !session.may_use(&scope, &c.id)) {
        return Err(ErrorCode::MissingChunk.into());
    }
    store.check_commit(ctx, node, chunks)
}

fn dispatch(store: &Store, session: &Session, req: Request) -> Result<Response, StoreError> {
    // Requests that establish a session.
    match req {
        Request::Login {
            user,
            password,
            device,
        } => {
            let logins = &crate::metrics::global().logins;
            let (token, ctx) = store
                .login_from(&user, &password, &device, session.peer)
                .inspect_err(|e| {
                    let outcome = match e.code() {
                        ErrorCode::AuthFailed => "failed",
                        ErrorCode::Locked => "locked",
                        _ => "refused",
                    };
                    logins
                        .get_or_create(&crate::metrics::OutcomeLabel { outcome })
                        .inc();
                    if matches!(e.code(), ErrorCode::AuthFailed | ErrorCode::Locked) {
                        tracing::info!(user = %user, device = %device, peer = ?session.peer, code = ?e.code(), "failed login");
                    }
                })?;
            tracing::info!(user = %ctx.user, device = %ctx.device, "login");
            logins
                .get_or_create(&crate::metrics::OutcomeLabel { outcome: "ok" })
                .inc();
            let root = store.getattr(&ctx, ctx.root)?;
            let resp = Response::Session {
                token: token.clone(),
                user: ctx.user.clone(),
                role: ctx.role,
                root,
            };
            session.set(Some((ctx, token)));
            return Ok(resp);
        }
        Request::Resume { token } => {
            let ctx = store.resume(&token)?;
            let root = store.getattr(&ctx, ctx.root)?;
            let resp = Response::Session {
                token: token.clone(),
                user: ctx.user.clone(),
                role: ctx.role,
                root,
            };
            session.set(Some((ctx, token)));
            return Ok(resp);
        }
        _ => {}
    }
    let ctx = signed_in(store, session)?;
    apply(store, session, &ctx, req)
}

/// The session's account and device, looked up again for every request (a batch counts as
/// one): a revoked device, an expired session, a deleted account or a changed role take
/// effect at once.
fn signed_in(store: &Store, session: &Session) -> Result<Ctx, StoreError> {
    let Some(token) = session.token() else {
        return Err(ErrorCode::AuthRequired.into());
    };
    let resumed = match session.door {
        Door::Device => session.resumed(store, &token),
        Door::Link => store.resume_link(&token),
        Door::App => store.resume_app_password(&token),
    };
    let mut ctx = match resumed {
        Ok(ctx) => ctx,
        Err(e) => {
            session.set(None);
            return Err(e);
        }
    };
    if let Some(agent) = session.agent.lock_or_recover().clone() {
        ctx.device = format!("{} {agent}", ctx.device);
    }
    Ok(ctx)
}

/// Authorises and carries out one request of a signed-in session.
fn apply(
    store: &Store,
    session: &Session,
    ctx: &Ctx,
    req: Request,
) -> Result<Response, StoreError> {
    authorize_request(ctx, &req)?;
    if ctx.link == Some(shelf_protocol::LinkAccess::Upload) {
        if let Request::Commit { node, .. } = &req {
            // An upload link fills only the files its visit made.
            if !session.made.lock_or_recover().contains(node) {
                return Err(ErrorCode::PermissionDenied.into());
            }
        }
    }
    let made_by_link = ctx.link.is_some() && matches!(req, Request::Create { .. });
    let answer = apply_authorized(store, session, ctx, req)?;
    if made_by_link {
        if let Response::Attr(a) = &answer {
            session.made.lock_or_recover().insert(a.node);
        }
    }
    Ok(answer)
}

/// Carries out one request [`apply`] authorised.
fn apply_authorized(
    store: &Store,
    session: &Session,
    ctx: &Ctx,
    req: Request,
) -> Result<Response, StoreError> {
    Ok(match req {
        // Answered before the session check above; batches do not nest.
        Request::Login { .. } | Request::Resume { .. } | Request::Batch(_) => {
            return Err(ErrorCode::InvalidArgument.into())
        }
        Request::Logout => {
            if let Some(token) = session.token() {
                store.logout(&token)?;
            }
            session.set(None);
            Response::Ok
        }
        Request::ListDevices => Response::Devices(store.devices(ctx)?),
        Request::Admin(req) => admin(store, ctx, req)?,
        Request::Share { node, with, write } => {
            store.share(ctx, node, &with, write)?;
            Response::Ok
        }
        Request::Unshare { node, with } => {
            store.unshare(ctx, node, with.as_deref())?;
            Response::Ok
        }
        Request::ListShares => Response::Shares(store.list_shares(ctx)?),
        Request::CreateLink {
            node,
            access,
            password,
            expires,
        } => Response::Links(vec![store.create_link(
            ctx,
            node,
            access,
            password.as_deref(),
            expires,
        )?]),
        Request::ListLinks => Response::Links(store.list_links(ctx)?),
        Request::RevokeLink { id } => {
            store.revoke_link(ctx, id)?;
            Response::Ok
        }
        Request::AddAppPassword { name } => Response::AppPassword {
            secret: store.add_app_password(ctx, &name)?,
            name,
        },
        Request::ListAppPasswords => Response::AppPasswords(store.list_app_passwords(ctx)?),
        Request::RevokeAppPassword { name } => {
            store.revoke_app_password(ctx, &name)?;
            Response::Ok
        }
        Request::SetAgent { agent } => {
            if !shelf_protocol::is_valid_agent(&agent) {
                return Err(ErrorCode::InvalidArgument.into());
            }
            *session.agent.lock_or_recover() = Some(agent);
            Response::Ok
        }
        Request::ReportSyncFailure { path, error } => {
            store.sync_failure(ctx, &path, &error);
            Response::Ok
        }
        Request::RevokeDevice { device } => {
            store.revoke_device(ctx, &device)?;
            Response::Ok
        }
        Request::Lookup { parent, name } => Response::Attr(store.lookup(ctx, parent, &name)?),
        Request::GetAttr { node } => Response::Attr(store.getattr(ctx, node)?),
        Request::SetAttr {
            node,
            mode,
            uid,
            gid,
            atime,
            mtime,
        } => Response::Attr(store.setattr(ctx, node, mode, (uid, gid), atime, mtime)?),
        Request::Mknod {
            parent,
            name,
            kind,
            mode,
            rdev,
            id,
        } => {
            if matches!(kind, NodeKind::Dir | NodeKind::Symlink) {
                return Err(ErrorCode::InvalidArgument.into());
            }
            Response::Attr(store.create_node(
                ctx,
                parent,
                &name,
                NewNode {
                    kind,
                    mode,
                    target: None,
                    exclusive: true,
                    rdev,
                    id,
                },
            )?)
        }
        Request::ReadDir { dir, after, limit } => {
            let (entries, more) = store.readdir(ctx, dir, after.as_deref(), limit)?;
            Response::DirPage { entries, more }
        }
        Request::Mkdir {
            parent,
            name,
            mode,
            id,
        } => Response::Attr(store.create_node(
            ctx,
            parent,
            &name,
            NewNode {
                kind: NodeKind::Dir,
                mode,
                target: None,
                exclusive: true,
                rdev: 0,
                id,
            },
        )?),
        Request::Create {
            parent,
            name,
            mode,
            exclusive,
            id,
        } => Response::Attr(store.create_node(
            ctx,
            parent,
            &name,
            NewNode {
                kind: NodeKind::File,
                mode,
                target: None,
                exclusive,
                rdev: 0,
                id,
            },
        )?),
        Request::Symlink {
            parent,
            name,
            target,
            id,
        } => Response::Attr(store.create_node(
            ctx,
            parent,
            &name,
            NewNode {
                kind: NodeKind::Symlink,
                mode: 0o777,
                target: Some(&target),
                exclusive: true,
                rdev: 0,
                id,
            },
        )?),
        Request::ReadLink { node } => Response::Target(store.readlink(ctx, node)?),
        Request::Link {
            node,
            new_parent,
            new_name,
        } => Response::Attr(store.link(ctx, node, new_parent, &new_name)?),
        Request::Unlink {
            parent,
            name,
            expect,
        } => {
            // A hard-linked file that keeps other names is not gone: answer no node.
            let (node, linked) = store.remove_expecting(ctx, parent, &name, false, expect)?;
            Response::Removed((!linked).then_some(node))
        }
        Request::Rmdir {
            parent,
            name,
            expect,
        } => Response::Removed(Some(
            store.remove_expecting(ctx, parent, &name, true, expect)?.0,
        )),
        Request::Rename {
            parent,
            name,
            new_parent,
            new_name,
            mode,
            expect,
        } => Response::Removed(store.rename(
            ctx,
            (parent, &name),
            (new_parent, &new_name),
            mode,
            expect,
        )?),
        Request::SetXattr {
            node,
            name,
            value,
            mode,
        } => {
            store.set_xattr(ctx, node, &name, &value, mode)?;
            Response::Ok
        }
        Request::GetXattr { node, name } => Response::Bytes(store.get_xattr(ctx, node, &name)?),
        Request::ListXattr { node } => Response::Names(store.list_xattr(ctx, node)?),
        Request::RemoveXattr { node, name } => {
            store.remove_xattr(ctx, node, &name)?;
            Response::Ok
        }
        Request::StatFs => {
            let used = store.chunks.stored_bytes(ctx.account)?;
            // `df` on the mount shows the quota when one is set.
            let free = match store.quota(ctx.account)? {
                Some(q) => free_space(store).min(q.saturating_sub(used)),
                None => free_space(store),
            };
            Response::StatFs {
                used_bytes: used,
                free_bytes: free,
                files: 0,
            }
        }
        Request::HaveChunks { node, ids } => {
            if ids.len() > MAX_HAVE_CHUNKS {
                return Err(ErrorCode::TooLarge.into());
            }
            let scope = store.chunk_scope(ctx, node, Action::Write)?;
            let mut missing = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                if !session.may_use(&scope, id) || !store.chunks.contains(scope.account, id)? {
                    missing.push(i as u32);
                }
            }
            // The ones it had need not be sent: deduplicated.
            crate::metrics::global()
                .chunks_deduplicated
                .inc_by((ids.len() - missing.len()) as u64);
            Response::Missing(missing)
        }
        Request::PutChunks { node, chunks } => {
            let scope = store.chunk_scope(ctx, node, Action::Write)?;
            let bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
            crate::metrics::global().chunk_bytes_in.inc_by(bytes as u64);
            put_chunks(store, ctx, session, &scope, &chunks)?;
            Response::Ok
        }
        Request::GetChunks { node, ids } => {
            if ids.len() > MAX_CHUNKS_PER_REQUEST {
                return Err(ErrorCode::TooLarge.into());
            }
            let scope = store.chunk_scope(ctx, node, Action::Read)?;
            let bodies = read_chunks(store, ctx, &scope, ids)?;
            let bytes: usize = bodies.iter().map(|c| c.data.len()).sum();
            crate::metrics::global()
                .chunk_bytes_out
                .inc_by(bytes as u64);
            Response::Chunks(bodies)
        }
        Request::GetManifest { node } => {
            let (version, size, chunks) = store.manifest(ctx, node)?;
            Response::Manifest {
                version,
                size,
                chunks,
            }
        }
        Request::GetSmallFile { node, max } => {
            let (version, size, chunks) = store.manifest(ctx, node)?;
            let small = size <= u64::from(max.min(shelf_protocol::MAX_SMALL_FILE))
                && chunks.len() <= MAX_CHUNKS_PER_REQUEST;
            let bodies = match small && !chunks.is_empty() {
                true => {
                    let scope = store.chunk_scope(ctx, node, Action::Read)?;
                    read_chunks(store, ctx, &scope, chunks.iter().map(|c| c.id).collect())?
                }
                false => Vec::new(),
            };
            Response::SmallFile {
                version,
                size,
                chunks,
                bodies,
            }
        }
        Request::Commit {
            node,
            base_version,
            chunks,
            inline,
            mtime,
            durable,
        } => {
            let scope = store.chunk_scope(ctx, node, Action::Write)?;
            put_chunks(store, ctx, session, &scope, &inline)?;
            // A recipient's commit may name only chunks of the file's history or chunks it
            // uploaded itself: the owner's other chunks are not its to learn about.
            if chunks.iter().any(|c| !session.may_use(&scope, &c.id)) {
                return Err(ErrorCode::MissingChunk.into());
            }
            // Every commit is made durable before the answer (see `handle`); `durable`
            // stays in the protocol for the client's own bookkeeping.
            let _ = durable;
            if !inline.is_empty() {
                chunks_readable_elsewhere(store)?;
            }
            let committed = store.commit_resolving(ctx, node, base_version, chunks, mtime)?;
            match committed {
                Committed::Done(attr) => Response::Attr(attr),
                Committed::Elsewhere { attr, name } => Response::KeptElsewhere { attr, name },
            }
        }
        Request::Status => Response::Status(store.status(ctx)?),
        Request::ListVersions { dir } => Response::Versions(store.list_versions(ctx, dir)?),
        Request::GetVersion { node, version } => {
            let (size, chunks) = store.version_manifest(ctx, node, version)?;
            Response::Manifest {
                version,
                size,
                chunks,
            }
        }
        Request::Restore { dir, name, number } => {
            let attr = store.restore(ctx, dir, &name, number)?;
            Response::Attr(attr)
        }
        // The connection answers it (it owns the stream events go to): see [`subscribe`].
        Request::Subscribe { .. } => return Err(ErrorCode::Unsupported.into()),
        Request::Lock {
            node,
            owner,
            kind,
            start,
            end,
        } => {
            let spec = LockSpec {
                session: session.key(),
                node,
                owner,
                kind,
                start,
                end,
            };
            store.lock(ctx, spec)?;
            Response::Ok
        }
        Request::TestLock {
            node,
            owner,
            kind,
            start,
            end,
        } => {
            let spec = LockSpec {
                session: session.key(),
                node,
                owner,
                kind,
                start,
                end,
            };
            Response::LockHolder(store.test_lock(ctx, spec)?)
        }
        Request::RenewLocks => {
            store.renew_locks(session.key());
            Response::Ok
        }
    })
}

/// What a subscription starts with: the answer, the backlog to send after it, and the
/// receiver of live changes (taken before the backlog was read, so nothing falls between).
pub struct Subscription {
    pub response: Response,
    pub backlog: Vec<shelf_protocol::Change>,
    pub live: tokio::sync::broadcast::Receiver<shelf_protocol::Change>,
}

/// `Subscribe` for the connection whose session is `session`.
pub fn subscribe(
    store: &Store,
    session: &Session,
    after: Option<u64>,
) -> Result<Subscription, WireError> {
    let ctx = session
        .ctx()
        .ok_or_else(|| WireError::from(ErrorCode::AuthRequired))?;
    authorize_request(&ctx, &Request::Subscribe { after }).map_err(WireError::from)?;
    let live = store.subscribe(ctx.account);
    let (backlog, trimmed, head) = store
        .changes_since(ctx.account, after)
        .map_err(|e| e.to_wire())?;
    Ok(Subscription {
        response: Response::Subscribed { trimmed, head },
        backlog,
        live,
    })
}

/// Verifies a batch of uploaded chunks against their ids, then stores them (nothing is
/// stored if any fails).
/// An admin's request (the role was checked by [`authorize`]).
fn admin(store: &Store, ctx: &Ctx, req: AdminRequest) -> Result<Response, StoreError> {
    let by = format!("{} on {}", ctx.user, ctx.device);
    let named = |name: &str| -> Result<crate::store::AccountRec, StoreError> {
        store
            .account(name)?
            .ok_or_else(|| ErrorCode::NotFound.into())
    };
    Ok(match req {
        AdminRequest::ListUsers => {
            let mut out = Vec::new();
            for a in store.list_users()? {
                out.push(UserInfo {
                    stored_bytes: store.chunks.stored_bytes(a.id)?,
                    quota: store.quota(a.id)?,
                    retention: store.policy(a.id)?.into(),
                    last_writer_wins: store.conflict_policy(a.id)?
                        == crate::store::conflicts::ConflictPolicy::LastWriterWins,
                    name: a.name,
                    role: a.role,
                });
            }
            Response::Users(out)
        }
        AdminRequest::AddUser {
            name,
            password,
            role,
        } => {
            let a = store.add_user(&name, &password, role)?;
            store.audit(a.id, AuditKind::UserAdded, &name, &by, &role.to_string());
            Response::Ok
        }
        AdminRequest::DeleteUser { name } => {
            store.delete_user(&name, &by)?;
            Response::Ok
        }
        AdminRequest::SetRole { name, role } => {
            store.set_role(&name, role, &by)?;
            Response::Ok
        }
        AdminRequest::SetPassword { name, password } => {
            store.set_password(&name, &password, &by)?;
            Response::Ok
        }
        AdminRequest::SetQuota { name, bytes } => {
            store.set_quota(named(&name)?.id, bytes)?;
            Response::Ok
        }
        AdminRequest::Audit { limit, user, kind } => Response::Audit(
            store
                .audit_filtered(user.as_deref(), kind.as_deref(), limit.min(10_000) as usize)?
                .into_iter()
                .map(|e| e.line())
                .collect(),
        ),
        AdminRequest::Health => Response::Health(store.health()?),
        AdminRequest::SetRetention { name, policy } => {
            store.set_policy(named(&name)?.id, policy.into())?;
            store.audit(0, AuditKind::RetentionChanged, &name, &by, "");
            Response::Ok
        }
        AdminRequest::SetConflictPolicy {
            name,
            last_writer_wins,
        } => {
            use crate::store::conflicts::ConflictPolicy;
            let p = match last_writer_wins {
                true => ConflictPolicy::LastWriterWins,
                false => ConflictPolicy::KeepBoth,
            };
            store.set_conflict_policy(named(&name)?.id, p)?;
            store.audit(0, AuditKind::ConflictPolicyChanged, &name, &by, "");
            Response::Ok
        }
    })
}

fn put_chunks(
    store: &Store,
    ctx: &Ctx,
    session: &Session,
    scope: &ChunkScope,
    chunks: &[ChunkBody],
) -> Result<(), StoreError> {
    if chunks.len() > MAX_CHUNKS_PER_REQUEST {
        return Err(ErrorCode::TooLarge.into());
    }
    for c in chunks {
        if c.data.len() > MAX_CHUNK {
            return Err(ErrorCode::TooLarge.into());
        }
        if blake3::hash(&c.data).as_bytes() != &c.id.0 {
            tracing::warn!(user = %ctx.user, "uploaded chunk does not match its id");
            return Err(ErrorCode::Corrupt.into());
        }
    }
    let mut extra = 0u64;
    for c in chunks {
        if !store.chunks.contains(scope.account, &c.id)? {
            extra += c.data.len() as u64;
        }
    }
    // Space is the owner's: a recipient's uploads count against the owner's quota.
    store.check_quota(scope.account, &ctx.user, extra)?;
    let metrics = crate::metrics::global();
    for c in chunks {
        match store.chunks.put(scope.account, &c.id, &c.data)? {
            true => metrics.chunks_stored.inc(),
            false => metrics.chunks_deduplicated.inc(),
        };
        session.uploaded(scope, c.id);
    }
    Ok(())
}

/// Free bytes on the filesystem holding the data folder (0 if unknown).
fn free_space(store: &Store) -> u64 {
    store
        .data_root
        .as_deref()
        .and_then(crate::store::health::disk_space)
        .map_or(0, |(free, _)| free)
}

/// Bodies of `ids`, chunks of the file `scope` was made for.
fn read_chunks(
    store: &Store,
    ctx: &Ctx,
    scope: &ChunkScope,
    ids: Vec<ChunkId>,
) -> Result<Vec<ChunkBody>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        // A recipient reads only chunks of the shared file's own history.
        if !scope.covers(&id) {
            return Err(ErrorCode::NotFound.into());
        }
        // The store is sealed with the chunk id in the associated data, and a body's id was
        // checked when it was stored: what opens is that chunk (no second hash on every
        // read; the client checks the id again all the same).
        let data = match store.chunks.get(scope.account, &id) {
            Ok(data) => data,
            Err(StoreError::Corrupt(_)) => {
                store.chunk_failed(scope.account, &ctx.user, &id);
                return Err(ErrorCode::Corrupt.into());
            }
            Err(e) => return Err(e),
        };
        out.push(ChunkBody { id, data });
    }
    Ok(out)
}

//! The authorisation matrix: every protocol request × every role × whose node it names
//! (the session's own account, another account's, or a node that does not exist), sent
//! through the real request handler (`handler::handle`, the path the server runs) against a
//! real store. Each cell states allowed or denied and with which code; for another
//! account's node the refusal must be exactly the one for a node that does not exist, so no
//! answer reveals that someone else's file exists.
//!
//! Advisory classes covered (from real Nextcloud and Seafile advisories): a handle (node id,
//! chunk id) accepted on a resource it was not issued for; a second code path (versions,
//! restore, locks, manifests, chunks, events, admin) that skips the check; an error that
//! reveals existence; access that lingers after a role change or a revoked device. Share
//! cells (read-only recipients restoring or deleting versions, re-sharing with more rights,
//! unsharing for others) join the matrix with sharing.

use shelf_protocol::{
    AdminRequest, ChunkBody, ChunkId, ChunkRef, ErrorCode, LinkAccess, LockKind, NodeId, NodeKind,
    RenameMode, Request, Response, Role, Stamped, Timestamp, WireError, XattrMode,
};
use shelf_server::chunkstore::PackStore;
use shelf_server::handler::{handle, subscribe, Session};
use shelf_server::store::namespace::NewNode;
use shelf_server::store::Store;
use std::sync::Arc;

/// Nodes of one account the requests aim at.
#[derive(Clone, Copy)]
struct Tree {
    dir: NodeId,
    file: NodeId,
    link: NodeId,
    chunk: ChunkId,
}

fn chunk_of(data: &[u8]) -> ChunkId {
    ChunkId(*blake3::hash(data).as_bytes())
}

/// Builds `files/` content for `user`: a file with one version and an xattr, a symlink,
/// and victims for every cell that removes or renames something.
fn tree(store: &Store, user: &str, victims: &[String]) -> Tree {
    let (_, ctx) = store.login(user, "pw", "setup").expect("login");
    let dir = store.lookup(&ctx, ctx.root, "files").expect("files").node;
    let new = |kind, target| NewNode {
        kind,
        mode: 0o644,
        target,
        exclusive: true,
        rdev: 0,
        id: None,
    };
    let file = store
        .create_node(&ctx, dir, "f", new(NodeKind::File, None))
        .expect("file")
        .node;
    let body = format!("content of {user}").into_bytes();
    let chunk = chunk_of(&body);
    store.chunks.put(ctx.account, &chunk, &body).expect("chunk");
    let r = ChunkRef {
        id: chunk,
        len: body.len() as u32,
    };
    store
        .commit(&ctx, file, 0, vec![r], Timestamp::now())
        .expect("commit");
    store
        .set_xattr(&ctx, file, "user.tag", b"v", XattrMode::Set)
        .expect("xattr");
    let link = store
        .create_node(&ctx, dir, "l", new(NodeKind::Symlink, Some("f")))
        .expect("link")
        .node;
    for v in victims {
        store
            .create_node(&ctx, dir, &format!("{v}.file"), new(NodeKind::File, None))
            .expect("victim");
        store
            .create_node(&ctx, dir, &format!("{v}.dir"), new(NodeKind::Dir, None))
            .expect("victim dir");
        store
            .create_node(&ctx, dir, &format!("{v}.ren"), new(NodeKind::File, None))
            .expect("victim to rename");
        store
            .set_xattr(&ctx, file, &format!("user.{v}"), b"x", XattrMode::Set)
            .expect("victim xattr");
    }
    Tree {
        dir,
        file,
        link,
        chunk,
    }
}

/// How a request is classed for the expectations.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Read,
    Write,
    /// Names no node: ownership does not apply.
    Session,
    Admin,
}

/// Every request, aimed at `t`. `tag` makes names unique per cell. The `match` below lists
/// every variant: a new request does not compile until it has its row here.
fn requests(t: Tree, tag: &str, body_of: &[u8]) -> Vec<(&'static str, Kind, Request)> {
    let ts = Timestamp::now();
    let all = vec![
        (
            "lookup",
            Request::Lookup {
                parent: t.dir,
                name: "f".into(),
            },
        ),
        ("getattr", Request::GetAttr { node: t.file }),
        (
            "setattr",
            Request::SetAttr {
                node: t.file,
                mode: Some(0o600),
                uid: None,
                gid: None,
                atime: None,
                mtime: Some(ts),
            },
        ),
        (
            "readdir",
            Request::ReadDir {
                dir: t.dir,
                after: None,
                limit: 100,
            },
        ),
        (
            "mkdir",
            Request::Mkdir {
                parent: t.dir,
                name: format!("{tag}.mk"),
                mode: 0o755,
                id: None,
            },
        ),
        (
            "create",
            Request::Create {
                parent: t.dir,
                name: format!("{tag}.new"),
                mode: 0o644,
                exclusive: true,
                id: None,
            },
        ),
        (
            "symlink",
            Request::Symlink {
                parent: t.dir,
                name: format!("{tag}.sl"),
                target: "f".into(),
                id: None,
            },
        ),
        ("readlink", Request::ReadLink { node: t.link }),
        (
            "unlink",
            Request::Unlink {
                parent: t.dir,
                name: format!("{tag}.file"),
                expect: None,
            },
        ),
        (
            "rmdir",
            Request::Rmdir {
                parent: t.dir,
                name: format!("{tag}.dir"),
                expect: None,
            },
        ),
        (
            "rename",
            Request::Rename {
                parent: t.dir,
                name: format!("{tag}.ren"),
                new_parent: t.dir,
                new_name: format!("{tag}.moved"),
                mode: RenameMode::NoReplace,
                expect: None,
            },
        ),
        (
            "link",
            Request::Link {
                node: t.file,
                new_parent: t.dir,
                new_name: format!("{tag}.link"),
            },
        ),
        (
            "setxattr",
            Request::SetXattr {
                node: t.file,
                name: "user.set".into(),
                value: b"1".to_vec(),
                mode: XattrMode::Set,
            },
        ),
        (
            "getxattr",
            Request::GetXattr {
                node: t.file,
                name: "user.tag".into(),
            },
        ),
        ("listxattr", Request::ListXattr { node: t.file }),
        (
            "removexattr",
            Request::RemoveXattr {
                node: t.file,
                name: format!("user.{tag}"),
            },
        ),
        ("statfs", Request::StatFs),
        (
            "have-chunks",
            Request::HaveChunks {
                node: t.file,
                ids: vec![t.chunk],
            },
        ),
        (
            "put-chunks",
            Request::PutChunks {
                node: t.file,
                chunks: vec![ChunkBody {
                    id: chunk_of(body_of),
                    data: body_of.to_vec(),
                }],
            },
        ),
        (
            "get-chunks",
            Request::GetChunks {
                node: t.file,
                ids: vec![t.chunk],
            },
        ),
        ("get-manifest", Request::GetManifest { node: t.file }),
        (
            "get-small-file",
            Request::GetSmallFile {
                node: t.file,
                max: 1 << 20,
            },
        ),
        (
            "commit",
            Request::Commit {
                node: t.file,
                base_version: 0, // filled in at send time with the current version
                chunks: vec![ChunkRef {
                    id: chunk_of(body_of),
                    len: body_of.len() as u32,
                }],
                inline: vec![ChunkBody {
                    id: chunk_of(body_of),
                    data: body_of.to_vec(),
                }],
                mtime: ts,
                durable: true,
            },
        ),
        ("status", Request::Status),
        (
            "mknod",
            Request::Mknod {
                parent: t.dir,
                name: format!("{tag}.fifo"),
                kind: NodeKind::Fifo,
                mode: 0o644,
                rdev: 0,
                id: None,
            },
        ),
        ("list-versions", Request::ListVersions { dir: t.dir }),
        (
            "get-version",
            Request::GetVersion {
                node: t.file,
                version: 1,
            },
        ),
        (
            "restore",
            Request::Restore {
                dir: t.dir,
                name: "f".into(),
                number: 1,
            },
        ),
        ("subscribe", Request::Subscribe { after: None }),
        (
            "lock",
            Request::Lock {
                node: t.file,
                owner: 1,
                kind: LockKind::Read,
                start: 0,
                end: 10,
            },
        ),
        (
            "test-lock",
            Request::TestLock {
                node: t.file,
                owner: 1,
                kind: LockKind::Write,
                start: 0,
                end: 10,
            },
        ),
        ("renew-locks", Request::RenewLocks),
        ("list-devices", Request::ListDevices),
        ("list-shares", Request::ListShares),
        (
            "report-sync-failure",
            Request::ReportSyncFailure {
                path: "p".into(),
                error: "e".into(),
            },
        ),
        (
            "set-agent",
            Request::SetAgent {
                agent: "backup".into(),
            },
        ),
        (
            "share",
            Request::Share {
                node: t.file,
                with: "other".into(),
                write: true,
            },
        ),
        (
            "create-link",
            Request::CreateLink {
                node: t.file,
                access: LinkAccess::Download,
                password: None,
                expires: None,
            },
        ),
        ("list-links", Request::ListLinks),
        (
            "add-app-password",
            Request::AddAppPassword {
                name: format!("app-{tag}"),
            },
        ),
        ("list-app-passwords", Request::ListAppPasswords),
        (
            "revoke-app-password",
            Request::RevokeAppPassword {
                name: format!("app-{tag}"),
            },
        ),
        // revoke-link names a link, not a node: its cells are in `public_links_*` below.
        ("logout", Request::Logout),
    ];
    all.into_iter()
        .map(|(name, req)| {
            let kind = match &req {
                Request::Login { .. } | Request::Resume { .. } | Request::Logout => Kind::Session,
                Request::StatFs
                | Request::Status
                | Request::Subscribe { .. }
                | Request::RenewLocks
                | Request::ListDevices
                | Request::RevokeDevice { .. }
                | Request::ListShares
                | Request::Unshare { .. }
                | Request::ReportSyncFailure { .. }
                | Request::SetAgent { .. } => Kind::Session,
                Request::Share { .. } | Request::CreateLink { .. } => Kind::Write,
                Request::ListLinks
                | Request::RevokeLink { .. }
                | Request::AddAppPassword { .. }
                | Request::ListAppPasswords
                | Request::RevokeAppPassword { .. } => Kind::Session,
                Request::PutChunks { .. } | Request::HaveChunks { .. } => Kind::Write,
                Request::Admin(_) => Kind::Admin,
                Request::Lookup { .. }
                | Request::GetAttr { .. }
                | Request::ReadDir { .. }
                | Request::ReadLink { .. }
                | Request::GetXattr { .. }
                | Request::ListXattr { .. }
                | Request::GetChunks { .. }
                | Request::GetManifest { .. }
                | Request::GetSmallFile { .. }
                | Request::ListVersions { .. }
                | Request::GetVersion { .. }
                | Request::Lock { .. }
                | Request::TestLock { .. } => Kind::Read,
                Request::SetAttr { .. }
                | Request::Mkdir { .. }
                | Request::Create { .. }
                | Request::Symlink { .. }
                | Request::Unlink { .. }
                | Request::Rmdir { .. }
                | Request::Rename { .. }
                | Request::Link { .. }
                | Request::SetXattr { .. }
                | Request::RemoveXattr { .. }
                | Request::Commit { .. }
                | Request::Mknod { .. }
                | Request::Restore { .. } => Kind::Write,
                Request::Batch(_) => unreachable!("batches are cells of their own (`batched`)"),
            };
            (name, kind, req)
        })
        .collect()
}

fn store() -> (Store, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = shelf_server::kv::Db::temporary().expect("db");
    let chunks = Arc::new(PackStore::open(tmp.path().join("packs"), &db).expect("packs"));
    (Store::with_chunk_store(db, chunks).expect("store"), tmp)
}

fn session(store: &Store, user: &str, device: &str) -> Session {
    let s = Session::default();
    handle(
        store,
        &s,
        Request::Login {
            user: user.into(),
            password: "pw".into(),
            device: device.into(),
        },
    )
    .expect("login");
    s
}

/// Sends one request; `Subscribe` goes where the connection would send it.
fn send(store: &Store, s: &Session, req: Request) -> Result<Response, WireError> {
    let req = match req {
        Request::Commit {
            node,
            chunks,
            inline,
            mtime,
            durable,
            ..
        } => {
            // The base the client would have: the file's current version, if it may see it.
            let base_version = match handle(store, s, Request::GetAttr { node }) {
                Ok(Response::Attr(a)) => a.version,
                _ => 1,
            };
            Request::Commit {
                node,
                base_version,
                chunks,
                inline,
                mtime,
                durable,
            }
        }
        other => other,
    };
    match req {
        // The batched run: every change a batch may carry goes in a batch of its own, and
        // must be answered exactly as when sent alone.
        req if req.batchable() && BATCHED.get() => {
            let at = Timestamp::now();
            match handle(store, s, Request::Batch(vec![Stamped { at, req }]))? {
                Response::Batch(mut results) if results.len() == 1 => {
                    results.pop().expect("one result")
                }
                other => panic!("a batch of one answered {other:?}"),
            }
        }
        Request::Subscribe { after } => subscribe(store, s, after).map(|sub| sub.response),
        other => handle(store, s, other),
    }
}

/// A node id no account has.
const NOWHERE: NodeId = 1 << 40;

thread_local! {
    /// Whether [`send`] wraps changes in batches.
    static BATCHED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[test]
fn every_request_role_and_owner() {
    matrix();
}

/// The same matrix, every namespace change inside a `Batch`: each is authorised on its own.
#[test]
fn every_request_role_and_owner_batched() {
    BATCHED.set(true);
    matrix();
}

fn matrix() {
    let (store, _tmp) = store();
    let roles = [
        ("ad", Role::Admin),
        ("us", Role::User),
        ("vi", Role::Viewer),
    ];
    let mut victims = Vec::new();
    for (r, _) in roles {
        for i in 0..64 {
            victims.push(format!("{r}-{i}"));
        }
    }
    for (name, _) in roles {
        store.add_user(name, "pw", Role::User).expect("add");
    }
    store.add_user("other", "pw", Role::User).expect("add");
    let mut trees = std::collections::HashMap::new();
    for (name, _) in roles {
        trees.insert(name, tree(&store, name, &victims));
    }
    let other = tree(&store, "other", &victims);
    // Roles are given after the trees exist (a viewer cannot make its own).
    for (name, role) in roles {
        store.set_role(name, role, "test").expect("role");
    }
    let nowhere = Tree {
        dir: NOWHERE,
        file: NOWHERE + 1,
        link: NOWHERE + 2,
        chunk: ChunkId([0xEE; 32]),
    };

    let mut cells = 0;
    let mut failures = Vec::new();
    for (role_name, role) in roles {
        let own = trees[role_name];
        for (whose, target) in [("own", own), ("other's", other)] {
            let s = session(
                &store,
                role_name,
                if whose == "own" {
                    "dev-own"
                } else {
                    "dev-other"
                },
            );
            let tag = format!("{role_name}-{}", if whose == "own" { 1 } else { 2 });
            let body = format!("new content {tag}").into_bytes();
            let reqs = requests(target, &tag, &body);
            let ghosts = requests(nowhere, &tag, &body);
            for ((name, kind, req), (_, _, ghost)) in reqs.into_iter().zip(ghosts) {
                if kind == Kind::Session && whose != "own" {
                    continue; // names nothing of anyone: one cell per role
                }
                cells += 1;
                let got = send(&store, &s, req);
                let verdict = match (kind, whose, role) {
                    (Kind::Session, _, _) => match (name, &got) {
                        (_, Ok(_)) => None,
                        (_, Err(e)) => Some(format!("refused {e:?}")),
                    },
                    (Kind::Read, "own", _) => got.as_ref().err().map(|e| format!("refused {e:?}")),
                    (Kind::Write, "own", Role::Admin | Role::User) => {
                        got.as_ref().err().map(|e| format!("refused {e:?}"))
                    }
                    (Kind::Write, "own", Role::Viewer) => match &got {
                        Err(e) if e.code == ErrorCode::ReadOnly => None,
                        other => Some(format!(
                            "a viewer's write was not refused read-only: {other:?}"
                        )),
                    },
                    (Kind::Read | Kind::Write, _, _) => {
                        // Another account's node: refused exactly as a node that does not
                        // exist; chunks of another account are simply not there.
                        let ghost = send(&store, &s, ghost);
                        match (&got, name) {
                            (Ok(Response::Missing(m)), "have-chunks") if m == &vec![0] => None,
                            (Err(e), _) if Err::<Response, _>(e.clone()) == ghost => match e.code {
                                ErrorCode::NotFound | ErrorCode::ReadOnly => None,
                                c => Some(format!("refused with {c:?}, expected NotFound")),
                            },
                            (got, _) => Some(format!(
                                "served or told apart: {got:?} vs nowhere {ghost:?}"
                            )),
                        }
                    }
                    (Kind::Admin, _, _) => Some("admin requests have their own rows".into()),
                };
                if let Some(v) = verdict {
                    failures.push(format!("{role_name} ({role}) {name} on {whose}: {v}"));
                }
            }
        }
    }

    // Admin requests: allowed for admins only; everyone else is refused before any effect.
    for (role_name, role) in roles {
        let s = session(&store, role_name, "admin-dev");
        let victim = format!("victim-{role_name}");
        store.add_user(&victim, "pw", Role::User).expect("victim");
        let admin_reqs = vec![
            ("list-users", AdminRequest::ListUsers),
            (
                "add-user",
                AdminRequest::AddUser {
                    name: format!("new-{role_name}"),
                    password: "pw".into(),
                    role: Role::Admin,
                },
            ),
            (
                "set-role",
                AdminRequest::SetRole {
                    name: victim.clone(),
                    role: Role::Admin,
                },
            ),
            (
                "set-password",
                AdminRequest::SetPassword {
                    name: victim.clone(),
                    password: "x".into(),
                },
            ),
            (
                "set-quota",
                AdminRequest::SetQuota {
                    name: victim.clone(),
                    bytes: Some(1),
                },
            ),
            (
                "audit",
                AdminRequest::Audit {
                    limit: 10,
                    user: None,
                    kind: None,
                },
            ),
            ("health", AdminRequest::Health),
            (
                "delete-user",
                AdminRequest::DeleteUser {
                    name: victim.clone(),
                },
            ),
        ];
        for (name, req) in admin_reqs {
            cells += 1;
            let got = handle(&store, &s, Request::Admin(req));
            let bad = match (role, &got) {
                (Role::Admin, Ok(_)) => false,
                (Role::Admin, Err(_)) => true,
                (_, Err(e)) => e.code != ErrorCode::PermissionDenied,
                (_, Ok(_)) => true,
            };
            if bad {
                failures.push(format!("{role_name} ({role}) admin {name}: {got:?}"));
            }
        }
        if role != Role::Admin {
            // Nothing happened: the victim is unchanged and still logs in with its password.
            let v = store.account(&victim).expect("db").expect("victim kept");
            assert_eq!(v.role, Role::User);
            assert!(store.login(&victim, "pw", "d").is_ok());
            assert!(store.quota(v.id).expect("quota").is_none());
        }
    }

    // Devices: revoking names only the session's own account's devices.
    for (role_name, role) in roles {
        cells += 2;
        let s = session(&store, role_name, "main");
        let (_, _) = store.login(role_name, "pw", "spare").expect("spare");
        let (other_token, _) = store.login("other", "pw", "spare").expect("other's spare");
        match handle(
            &store,
            &s,
            Request::RevokeDevice {
                device: "spare".into(),
            },
        ) {
            Ok(_) => {}
            e => failures.push(format!("{role_name} ({role}) revoke own device: {e:?}")),
        }
        assert!(
            store.session_valid(&other_token),
            "revoking my device named spare left the other account's alone"
        );
        let (only_token, _) = store.login("other", "pw", "other-only").expect("login");
        match handle(
            &store,
            &s,
            Request::RevokeDevice {
                device: "other-only".into(),
            },
        ) {
            Err(e) if e.code == ErrorCode::NotFound => {}
            e => failures.push(format!(
                "{role_name} ({role}) revoke another account's device: {e:?}"
            )),
        }
        assert!(store.session_valid(&only_token));
    }

    // A commit may name only chunks of its own account (no dedup across accounts).
    for (role_name, role) in [("ad", Role::Admin), ("us", Role::User)] {
        cells += 1;
        let s = session(&store, role_name, "x");
        let t = trees[role_name];
        let base = match handle(&store, &s, Request::GetAttr { node: t.file }) {
            Ok(Response::Attr(a)) => a.version,
            other => panic!("{other:?}"),
        };
        let got = handle(
            &store,
            &s,
            Request::Commit {
                node: t.file,
                base_version: base,
                chunks: vec![ChunkRef {
                    id: other.chunk,
                    len: 16,
                }],
                inline: vec![],
                mtime: Timestamp::now(),
                durable: false,
            },
        );
        if !matches!(&got, Err(e) if e.code == ErrorCode::MissingChunk) {
            failures.push(format!(
                "{role_name} ({role}) commit naming another account's chunk: {got:?}"
            ));
        }
    }

    // Shares: the owner's folder `files/` (with the file, link and victims) shared read-only,
    // read-write, with nobody, or shared and then revoked (with the recipient's session
    // opened before the revocation: nothing lingers).
    let recipients = ["rrec", "wrec", "nrec", "gone"];
    let mut share_victims = Vec::new();
    for r in recipients {
        for i in 0..4 {
            share_victims.push(format!("{r}-{i}"));
        }
    }
    store.add_user("owner", "pw", Role::User).expect("owner");
    for r in recipients {
        store.add_user(r, "pw", Role::User).expect("recipient");
    }
    let shared = tree(&store, "owner", &share_victims);
    // Another file of the owner, outside the share: its chunk must stay invisible.
    let (_, owner_ctx) = store.login("owner", "pw", "setup").expect("login");
    let outside_body = b"not shared".to_vec();
    let outside = chunk_of(&outside_body);
    store
        .chunks
        .put(owner_ctx.account, &outside, &outside_body)
        .expect("chunk");
    for (r, write) in [("rrec", false), ("wrec", true), ("gone", true)] {
        store
            .share(&owner_ctx, shared.dir, r, write)
            .expect("share");
    }
    let sessions: Vec<(&str, Session)> = recipients
        .iter()
        .map(|r| (*r, session(&store, r, "pc")))
        .collect();
    store
        .unshare(&owner_ctx, shared.dir, Some("gone"))
        .expect("revoke");
    for (r, s) in &sessions {
        let tag = format!("{r}-1");
        let body = format!("edit by {r}").into_bytes();
        let reqs = requests(shared, &tag, &body);
        let ghosts = requests(nowhere, &tag, &body);
        for ((name, kind, req), (_, _, ghost)) in reqs.into_iter().zip(ghosts) {
            if kind == Kind::Session {
                continue;
            }
            cells += 1;
            let got = send(&store, s, req);
            let verdict = match (*r, kind, name) {
                // Passing a share on is refused, whatever was given.
                ("rrec" | "wrec", _, "share" | "create-link") => match &got {
                    Err(e) if e.code == ErrorCode::PermissionDenied => None,
                    other => Some(format!("re-sharing was not refused: {other:?}")),
                },
                // Hard links stay out of shared folders: EXDEV for a writer.
                ("wrec", _, "link") => match &got {
                    Err(e) if e.code == ErrorCode::CrossDevice => None,
                    other => Some(format!("a link into a share was not refused: {other:?}")),
                },
                ("rrec", Kind::Read, _) | ("wrec", _, _) => {
                    got.as_ref().err().map(|e| format!("refused {e:?}"))
                }
                // Read-only: every change refused, restoring and deleting versions too.
                ("rrec", Kind::Write, _) => match &got {
                    Err(e) if e.code == ErrorCode::ReadOnly => None,
                    other => Some(format!(
                        "a read-only recipient changed something: {other:?}"
                    )),
                },
                // No share, or a revoked one: as if the node did not exist.
                _ => {
                    let ghost = send(&store, s, ghost);
                    match &got {
                        Err(e) if Err::<Response, _>(e.clone()) == ghost => None,
                        other => Some(format!("served or told apart: {other:?} vs {ghost:?}")),
                    }
                }
            };
            if let Some(v) = verdict {
                failures.push(format!("{r} (share) {name}: {v}"));
            }
        }
        // The owner's chunks outside the shared file stay unknown, even to a writer.
        if *r == "rrec" || *r == "wrec" {
            cells += 1;
            match handle(
                &store,
                s,
                Request::GetChunks {
                    node: shared.file,
                    ids: vec![outside],
                },
            ) {
                Err(e) if e.code == ErrorCode::NotFound => {}
                other => failures.push(format!("{r} read a chunk outside the share: {other:?}")),
            }
        }
        if *r == "wrec" {
            cells += 1;
            match handle(
                &store,
                s,
                Request::HaveChunks {
                    node: shared.file,
                    ids: vec![outside],
                },
            ) {
                Ok(Response::Missing(m)) if m == vec![0] => {}
                other => failures.push(format!(
                    "wrec learnt of a chunk outside the share: {other:?}"
                )),
            }
            cells += 1;
            let base = match handle(&store, s, Request::GetAttr { node: shared.file }) {
                Ok(Response::Attr(a)) => a.version,
                other => panic!("{other:?}"),
            };
            let got = handle(
                &store,
                s,
                Request::Commit {
                    node: shared.file,
                    base_version: base,
                    chunks: vec![ChunkRef {
                        id: outside,
                        len: outside_body.len() as u32,
                    }],
                    inline: vec![],
                    mtime: Timestamp::now(),
                    durable: false,
                },
            );
            if !matches!(&got, Err(e) if e.code == ErrorCode::MissingChunk) {
                failures.push(format!("wrec committed a chunk it never uploaded: {got:?}"));
            }
        }
    }
    // Unsharing: a recipient may end only its own access.
    cells += 2;
    let rrec = &sessions[0].1;
    match handle(
        &store,
        rrec,
        Request::Unshare {
            node: shared.dir,
            with: Some("wrec".into()),
        },
    ) {
        Err(e) if e.code == ErrorCode::PermissionDenied => {}
        other => failures.push(format!("rrec removed wrec's share: {other:?}")),
    }
    assert!(handle(
        &store,
        &sessions[1].1,
        Request::GetAttr { node: shared.file }
    )
    .is_ok());
    match handle(
        &store,
        rrec,
        Request::Unshare {
            node: shared.dir,
            with: None,
        },
    ) {
        Ok(_) => {}
        other => failures.push(format!("rrec could not leave the share: {other:?}")),
    }
    assert!(
        handle(&store, rrec, Request::GetAttr { node: shared.file }).is_err(),
        "left"
    );
    assert!(
        handle(
            &store,
            &sessions[1].1,
            Request::GetAttr { node: shared.file }
        )
        .is_ok(),
        "leaving ended nobody else's access"
    );

    // A changed role takes effect on the very next request of an open session.
    let s = session(&store, "us", "live");
    let t = trees["us"];
    assert!(handle(
        &store,
        &s,
        Request::SetXattr {
            node: t.file,
            name: "user.a".into(),
            value: vec![],
            mode: XattrMode::Set
        }
    )
    .is_ok());
    store.set_role("us", Role::Viewer, "test").expect("demote");
    let got = handle(
        &store,
        &s,
        Request::SetXattr {
            node: t.file,
            name: "user.b".into(),
            value: vec![],
            mode: XattrMode::Set,
        },
    );
    assert!(
        matches!(&got, Err(e) if e.code == ErrorCode::ReadOnly),
        "{got:?}"
    );
    cells += 1;

    eprintln!("authorisation matrix: {cells} cells");
    let failures: Vec<String> = failures
        .into_iter()
        .map(|f| f.chars().take(300).collect())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cells >= 150, "{cells}");
}

/// A batch applies its changes in order, stops at the first refused (later ones are not
/// tried), carries only namespace changes, does not nest and has a size limit.
#[test]
fn batches_apply_in_order_and_stop_at_the_first_refusal() {
    let (store, _tmp) = store();
    store.add_user("u", "pw", Role::User).expect("add");
    let (s, files) = login_files(&store);
    let mk = |name: &str| Request::Mkdir {
        parent: files,
        name: name.into(),
        mode: 0o755,
        id: None,
    };
    let got = handle(
        &store,
        &s,
        Request::Batch(stamped(vec![
            mk("a"),
            mk("b"),
            mk("a"),
            mk("c"),
            Request::Rename {
                parent: files,
                name: "b".into(),
                new_parent: files,
                new_name: "b2".into(),
                mode: RenameMode::Replace,
                expect: None,
            },
        ])),
    )
    .expect("batch");
    let Response::Batch(results) = got else {
        panic!("{got:?}")
    };
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(results[0].is_ok() && results[1].is_ok());
    assert_eq!(results[2].as_ref().unwrap_err().code, ErrorCode::Exists);
    let exists = |name: &str| {
        handle(
            &store,
            &s,
            Request::Lookup {
                parent: files,
                name: name.into(),
            },
        )
        .is_ok()
    };
    assert!(exists("a") && exists("b"));
    assert!(
        !exists("c") && !exists("b2"),
        "changes after the refusal were applied"
    );

    // Only namespace changes ride in a batch; batches do not nest; at most MAX_BATCH.
    for bad in [
        vec![Request::Status],
        vec![Request::Batch(stamped(vec![mk("n")]))],
        vec![Request::Login {
            user: "u".into(),
            password: "pw".into(),
            device: "x".into(),
        }],
        (0..shelf_protocol::MAX_BATCH + 1)
            .map(|i| mk(&format!("m{i}")))
            .collect(),
    ] {
        let got = handle(&store, &s, Request::Batch(stamped(bad)));
        assert_eq!(got.unwrap_err().code, ErrorCode::InvalidArgument);
    }
    assert!(!exists("n") && !exists("m0"));
}

/// A session of user `u` (password `pw`) and the node of its `files/`.
fn login_files(store: &Store) -> (Session, NodeId) {
    let s = Session::default();
    let root = match handle(
        store,
        &s,
        Request::Login {
            user: "u".into(),
            password: "pw".into(),
            device: "d".into(),
        },
    ) {
        Ok(Response::Session { root, .. }) => root,
        other => panic!("login: {other:?}"),
    };
    let files = match handle(
        store,
        &s,
        Request::Lookup {
            parent: root.node,
            name: "files".into(),
        },
    ) {
        Ok(Response::Attr(a)) => a.node,
        other => panic!("files: {other:?}"),
    };
    (s, files)
}

fn stamped(reqs: Vec<Request>) -> Vec<Stamped> {
    reqs.into_iter()
        .map(|req| Stamped {
            at: Timestamp::now(),
            req,
        })
        .collect()
}

/// A batched change carries the time the device made it: the server stamps the folder's
/// mtime with it (so the device's view does not shift when the change lands), unless it is
/// in the server's future or too old.
#[test]
fn batched_changes_take_the_devices_time_within_limits() {
    let (store, _tmp) = store();
    store.add_user("u", "pw", Role::User).expect("add");
    let (s, files) = login_files(&store);
    let now = Timestamp::now();
    let ago = |secs: i64| Timestamp {
        secs: now.secs - secs,
        nanos: 0,
    };
    for (name, at, kept) in [
        ("recent", ago(30), true),
        ("future", ago(-3600), false),
        ("ancient", ago(3 * 3600), false),
    ] {
        let got = handle(
            &store,
            &s,
            Request::Batch(vec![Stamped {
                at,
                req: Request::Mkdir {
                    parent: files,
                    name: name.into(),
                    mode: 0o755,
                    id: None,
                },
            }]),
        );
        let Ok(Response::Batch(r)) = got else {
            panic!("{got:?}")
        };
        let Some(Ok(Response::Attr(a))) = r.first() else {
            panic!("{r:?}")
        };
        match kept {
            true => assert_eq!(a.mtime, at, "{name}"),
            false => assert!(
                a.mtime.secs >= now.secs && a.mtime.secs <= Timestamp::now().secs,
                "{name}: {:?}",
                a.mtime
            ),
        }
    }
}

/// A public link's visitor through the handler (as the web door runs it).
fn visitor(store: &Store, token: &str) -> Session {
    let opened = store
        .open_link(
            token,
            shelf_server::store::public_links::Key::None,
            None,
            false,
        )
        .expect("open link");
    Session::for_link(
        "127.0.0.1".parse().expect("ip"),
        opened.ctx,
        token.to_string(),
    )
}

fn make_link(store: &Store, s: &Session, node: NodeId, access: LinkAccess) -> (u64, String) {
    match handle(
        store,
        s,
        Request::CreateLink {
            node,
            access,
            password: None,
            expires: None,
        },
    ) {
        Ok(Response::Links(l)) if l.len() == 1 => (l[0].id, l[0].token.clone()),
        other => panic!("create-link answered {other:?}"),
    }
}

fn code(r: Result<Response, WireError>) -> Option<ErrorCode> {
    r.err().map(|e| e.code)
}

/// A download link opens its own folder and what is below it, read-only, and nothing else
/// of its owner's or anyone's; an upload link only adds files; revoking ends both at once;
/// another account cannot list or end the owner's links.
#[test]
fn public_links_reach_only_their_node_and_only_what_they_allow() {
    let (store, _tmp) = store();
    store.add_user("owner", "pw", Role::User).expect("add");
    store.add_user("other", "pw", Role::User).expect("add");
    let mine = tree(&store, "owner", &[]);
    let theirs = tree(&store, "other", &[]);
    let owner = session(&store, "owner", "dev");
    let other = session(&store, "other", "dev");
    let root = store.login("owner", "pw", "x").expect("login").1.root;
    // A link to the folder `files/sub` (so `files/f` is outside it).
    let sub = match handle(
        &store,
        &owner,
        Request::Mkdir {
            parent: mine.dir,
            name: "sub".into(),
            mode: 0o755,
            id: None,
        },
    ) {
        Ok(Response::Attr(a)) => a.node,
        other => panic!("mkdir {other:?}"),
    };
    let inside = match handle(
        &store,
        &owner,
        Request::Create {
            parent: sub,
            name: "in.txt".into(),
            mode: 0o644,
            exclusive: true,
            id: None,
        },
    ) {
        Ok(Response::Attr(a)) => a.node,
        other => panic!("create {other:?}"),
    };
    let (down_id, down) = make_link(&store, &owner, sub, LinkAccess::Download);
    let v = visitor(&store, &down);
    let listed = handle(
        &store,
        &v,
        Request::ReadDir {
            dir: sub,
            after: None,
            limit: 10,
        },
    );
    assert!(listed.is_ok(), "{listed:?}");
    assert!(handle(&store, &v, Request::GetManifest { node: inside }).is_ok());
    // Outside the link: the owner's other file, root, and another account's file are
    // answered exactly as nodes that do not exist.
    for node in [mine.file, root, theirs.file, NOWHERE] {
        assert_eq!(
            code(handle(&store, &v, Request::GetAttr { node })),
            Some(ErrorCode::NotFound),
            "node {node} outside the link"
        );
    }
    // Nothing but reading: no writes, no shares, no links, no account requests.
    for req in [
        Request::Create {
            parent: sub,
            name: "x".into(),
            mode: 0o644,
            exclusive: true,
            id: None,
        },
        Request::Unlink {
            parent: sub,
            name: "in.txt".into(),
            expect: None,
        },
        Request::Share {
            node: sub,
            with: "other".into(),
            write: false,
        },
        Request::CreateLink {
            node: sub,
            access: LinkAccess::Download,
            password: None,
            expires: None,
        },
        Request::ListLinks,
        Request::ListDevices,
        Request::Status,
        Request::ListVersions { dir: sub },
        Request::Admin(AdminRequest::ListUsers),
        Request::Batch(vec![]),
    ] {
        let what = format!("{req:?}");
        assert_eq!(
            code(handle(&store, &v, req)),
            Some(ErrorCode::PermissionDenied),
            "a download link's visitor sent {what}"
        );
    }

    // An upload link: make a new file and fill it; never read, replace or remove.
    let (_, up) = make_link(&store, &owner, sub, LinkAccess::Upload);
    let u = visitor(&store, &up);
    assert_eq!(
        code(handle(
            &store,
            &u,
            Request::ReadDir {
                dir: sub,
                after: None,
                limit: 10
            }
        )),
        Some(ErrorCode::PermissionDenied)
    );
    assert_eq!(
        code(handle(&store, &u, Request::GetManifest { node: inside })),
        Some(ErrorCode::PermissionDenied)
    );
    assert_eq!(
        code(handle(
            &store,
            &u,
            Request::Create {
                parent: sub,
                name: "in.txt".into(),
                mode: 0o644,
                exclusive: false,
                id: None
            },
        )),
        Some(ErrorCode::PermissionDenied),
        "a non-exclusive create could open an existing file"
    );
    let body = b"sent through a link".to_vec();
    let id = chunk_of(&body);
    let commit = |node| Request::Commit {
        node,
        base_version: 0,
        chunks: vec![ChunkRef {
            id,
            len: body.len() as u32,
        }],
        inline: vec![ChunkBody {
            id,
            data: body.clone(),
        }],
        mtime: Timestamp::now(),
        durable: true,
    };
    assert_eq!(
        code(handle(&store, &u, commit(inside))),
        Some(ErrorCode::PermissionDenied),
        "an upload link replaced a file it did not make"
    );
    let new = match handle(
        &store,
        &u,
        Request::Create {
            parent: sub,
            name: "new.txt".into(),
            mode: 0o644,
            exclusive: true,
            id: None,
        },
    ) {
        Ok(Response::Attr(a)) => a.node,
        other => panic!("create through the upload link: {other:?}"),
    };
    handle(&store, &u, commit(new)).expect("commit of the file it made");
    for req in [
        Request::Unlink {
            parent: sub,
            name: "in.txt".into(),
            expect: None,
        },
        Request::Rename {
            parent: sub,
            name: "in.txt".into(),
            new_parent: sub,
            new_name: "moved".into(),
            mode: RenameMode::Replace,
            expect: None,
        },
        Request::GetChunks {
            node: new,
            ids: vec![id],
        },
    ] {
        let what = format!("{req:?}");
        assert_eq!(
            code(handle(&store, &u, req)),
            Some(ErrorCode::PermissionDenied),
            "an upload link's visitor sent {what}"
        );
    }
    // The owner sees the new file, whole.
    match handle(
        &store,
        &owner,
        Request::GetSmallFile {
            node: new,
            max: 1 << 20,
        },
    ) {
        Ok(Response::SmallFile { bodies, .. }) => assert_eq!(bodies[0].data, body),
        other => panic!("the owner reads the uploaded file: {other:?}"),
    }

    // Another account neither sees nor ends the owner's links.
    match handle(&store, &other, Request::ListLinks) {
        Ok(Response::Links(l)) => assert!(l.is_empty(), "{l:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        code(handle(&store, &other, Request::RevokeLink { id: down_id })),
        Some(ErrorCode::NotFound)
    );
    // A link is not a device token: the protocol's Resume refuses it.
    assert_eq!(
        code(handle(
            &store,
            &Session::default(),
            Request::Resume {
                token: down.clone()
            }
        )),
        Some(ErrorCode::SessionExpired)
    );
    // Revoked: the visitor's very next request is refused, and the link opens no more.
    handle(&store, &owner, Request::RevokeLink { id: down_id }).expect("revoke");
    assert_eq!(
        code(handle(
            &store,
            &v,
            Request::ReadDir {
                dir: sub,
                after: None,
                limit: 10
            }
        )),
        Some(ErrorCode::SessionExpired)
    );
    assert!(store
        .open_link(
            &down,
            shelf_server::store::public_links::Key::None,
            None,
            false
        )
        .is_err());
}

//! Typed calls: one method per request the client makes (the filesystem core, import and
//! the command line), returning what that request answers. An answer of the wrong kind becomes a protocol error here, once,
//! instead of an "unexpected answer" branch at every caller.

use super::{Remote, RemoteError, Ticket};
use shelf_protocol::{
    AdminRequest, Attr, AuditLine, ChunkBody, ChunkId, ChunkRef, DeviceInfo, DirEntry, LockKind,
    NodeId, Request, Response, Role, ServerStatus, ShareInfo, Stamped, UserInfo, VersionInfo,
    WireError,
};

/// One page of a directory listing.
pub struct DirPage {
    pub entries: Vec<DirEntry>,
    /// More entries follow the last one.
    pub more: bool,
}

/// A file version's chunk list.
pub struct ManifestAnswer {
    pub version: u64,
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
}

/// A file version's chunk list, with the bodies when the file was small enough.
pub struct SmallFile {
    pub version: u64,
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
    /// Every chunk's body in the list's order, or none.
    pub bodies: Vec<ChunkBody>,
}

/// A session opened by `Login` or `Resume`.
pub struct Session {
    pub token: String,
    pub user: String,
    pub role: Role,
    /// The session's top folder.
    pub root: Attr,
}

/// Space figures for statfs.
pub struct Space {
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub files: u64,
}

/// A lock held by someone else: its kind and byte range.
pub type LockHolder = Option<(LockKind, u64, u64)>;

/// A request sent and not waited for yet, with the kind of answer it gets (several go out
/// at once: chunk uploads and downloads).
pub struct Awaited<T> {
    ticket: Ticket,
    what: &'static str,
    pick: fn(Response) -> Option<T>,
}

impl<T> Awaited<T> {
    pub fn wait(self) -> Result<T, RemoteError> {
        pick(self.what, self.ticket.wait()?, self.pick)
    }
}

/// Chunk bodies asked for and not waited for yet (see [`Remote::submit_get_chunks`]).
pub struct ChunksTicket {
    answer: Awaited<Vec<ChunkBody>>,
    asked: usize,
}

impl ChunksTicket {
    /// The bodies, in the order asked for (checked: as many as asked).
    pub fn wait(self) -> Result<Vec<ChunkBody>, RemoteError> {
        let bodies = self.answer.wait()?;
        match bodies.len() == self.asked {
            true => Ok(bodies),
            false => Err(RemoteError::Protocol(format!(
                "get-chunks: {} bodies for {} chunks",
                bodies.len(),
                self.asked
            ))),
        }
    }
}

/// `answer` as the kind `what` answers, or a protocol error.
fn pick<T>(
    what: &'static str,
    answer: Response,
    f: impl FnOnce(Response) -> Option<T>,
) -> Result<T, RemoteError> {
    f(answer).ok_or_else(|| RemoteError::Protocol(format!("unexpected answer to {what}")))
}

/// What a commit made.
pub enum Committed {
    /// The new version.
    Made(Attr),
    /// Another device changed or deleted the file meanwhile: the server kept this content
    /// as a new file `name` beside it, with these attributes.
    KeptElsewhere { attr: Attr, name: String },
}

/// The answers to a `Request::Batch`, in order, up to the first refused request (whose
/// error is the last answer); each is read as the kind of answer its request gets.
pub struct BatchAnswers(Vec<Result<Response, WireError>>);

impl BatchAnswers {
    /// Requests answered (the refused one included).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether request `i` was made.
    pub fn made(&self, i: usize) -> bool {
        self.0.get(i).is_some_and(|r| r.is_ok())
    }

    /// The attributes request `i` answered (create, setattr, commit), if it was made.
    pub fn attr(&self, i: usize) -> Option<&Attr> {
        match self.0.get(i) {
            Some(Ok(Response::Attr(a))) => Some(a),
            _ => None,
        }
    }

    /// The node that lost its last name by request `i` (remove, rename), if it was made.
    pub fn removed(&self, i: usize) -> Option<Option<NodeId>> {
        match self.0.get(i) {
            Some(Ok(Response::Removed(n))) => Some(*n),
            _ => None,
        }
    }
}

fn attr(r: Response) -> Option<Attr> {
    match r {
        Response::Attr(a) => Some(a),
        _ => None,
    }
}

impl Remote {
    fn submit_typed<T>(
        &self,
        what: &'static str,
        req: Request,
        pick: fn(Response) -> Option<T>,
    ) -> Awaited<T> {
        Awaited {
            ticket: self.submit(req),
            what,
            pick,
        }
    }

    fn ask<T>(
        &self,
        what: &'static str,
        req: Request,
        f: impl FnOnce(Response) -> Option<T>,
    ) -> Result<T, RemoteError> {
        pick(what, self.call(req)?, f)
    }

    /// A request that answers only "done" (`Response::Ok`).
    pub fn ask_ok(&self, what: &'static str, req: Request) -> Result<(), RemoteError> {
        self.ask(what, req, |r| matches!(r, Response::Ok).then_some(()))
    }

    /// A request that answers a node's attributes (getattr, lookup, creates, commit, …).
    pub fn ask_attr(&self, what: &'static str, req: Request) -> Result<Attr, RemoteError> {
        self.ask(what, req, attr)
    }

    /// A request that removes a name: the node that lost its last name, if any.
    pub fn ask_removed(
        &self,
        what: &'static str,
        req: Request,
    ) -> Result<Option<NodeId>, RemoteError> {
        self.ask(what, req, |r| match r {
            Response::Removed(n) => Some(n),
            _ => None,
        })
    }

    /// Sends `reqs` as one `Request::Batch` (applied in order up to the first refused).
    pub fn batch(&self, reqs: Vec<Stamped>) -> Result<BatchAnswers, RemoteError> {
        let sent = reqs.len();
        self.ask("batch", Request::Batch(reqs), |r| match r {
            Response::Batch(answers) if answers.len() <= sent => Some(BatchAnswers(answers)),
            _ => None,
        })
    }

    pub fn lookup(&self, parent: NodeId, name: &str) -> Result<Attr, RemoteError> {
        let name = name.to_string();
        self.ask_attr("lookup", Request::Lookup { parent, name })
    }

    pub fn read_dir(
        &self,
        dir: NodeId,
        after: Option<String>,
        limit: u32,
    ) -> Result<DirPage, RemoteError> {
        let req = Request::ReadDir { dir, after, limit };
        self.ask("readdir", req, |r| match r {
            Response::DirPage { entries, more } => Some(DirPage { entries, more }),
            _ => None,
        })
    }

    pub fn read_link(&self, node: NodeId) -> Result<String, RemoteError> {
        self.ask("readlink", Request::ReadLink { node }, |r| match r {
            Response::Target(t) => Some(t),
            _ => None,
        })
    }

    pub fn stat_fs(&self) -> Result<Space, RemoteError> {
        self.ask("statfs", Request::StatFs, |r| match r {
            Response::StatFs {
                used_bytes,
                free_bytes,
                files,
            } => Some(Space {
                used_bytes,
                free_bytes,
                files,
            }),
            _ => None,
        })
    }

    pub fn get_xattr(&self, node: NodeId, name: &str) -> Result<Vec<u8>, RemoteError> {
        let name = name.to_string();
        self.ask("getxattr", Request::GetXattr { node, name }, |r| match r {
            Response::Bytes(b) => Some(b),
            _ => None,
        })
    }

    pub fn list_xattr(&self, node: NodeId) -> Result<Vec<String>, RemoteError> {
        self.ask("listxattr", Request::ListXattr { node }, |r| match r {
            Response::Names(n) => Some(n),
            _ => None,
        })
    }

    fn manifest_of(&self, what: &'static str, req: Request) -> Result<ManifestAnswer, RemoteError> {
        self.ask(what, req, |r| match r {
            Response::Manifest {
                version,
                size,
                chunks,
            } => Some(ManifestAnswer {
                version,
                size,
                chunks,
            }),
            _ => None,
        })
    }

    /// The chunk list of a file's current version.
    pub fn get_manifest(&self, node: NodeId) -> Result<ManifestAnswer, RemoteError> {
        self.manifest_of("get-manifest", Request::GetManifest { node })
    }

    /// The chunk list of one version of a file.
    pub fn get_version(&self, node: NodeId, version: u64) -> Result<ManifestAnswer, RemoteError> {
        self.manifest_of("get-version", Request::GetVersion { node, version })
    }

    /// The chunk list of a file's current version, with the bodies when it is at most
    /// `max` bytes (checked: one body per chunk, or none).
    pub fn get_small_file(&self, node: NodeId, max: u32) -> Result<SmallFile, RemoteError> {
        let f = self.ask(
            "get-small-file",
            Request::GetSmallFile { node, max },
            |r| match r {
                Response::SmallFile {
                    version,
                    size,
                    chunks,
                    bodies,
                } => Some(SmallFile {
                    version,
                    size,
                    chunks,
                    bodies,
                }),
                _ => None,
            },
        )?;
        match f.bodies.is_empty() || f.bodies.len() == f.chunks.len() {
            true => Ok(f),
            false => Err(RemoteError::Protocol(format!(
                "get-small-file: {} bodies for {} chunks",
                f.bodies.len(),
                f.chunks.len()
            ))),
        }
    }

    pub fn list_versions(&self, dir: NodeId) -> Result<Vec<VersionInfo>, RemoteError> {
        self.ask(
            "list-versions",
            Request::ListVersions { dir },
            |r| match r {
                Response::Versions(v) => Some(v),
                _ => None,
            },
        )
    }

    /// Asks for chunk bodies without waiting (several such requests go out at once).
    pub fn submit_get_chunks(&self, node: NodeId, ids: Vec<ChunkId>) -> ChunksTicket {
        let asked = ids.len();
        let answer = self.submit_typed(
            "get-chunks",
            Request::GetChunks { node, ids },
            |r| match r {
                Response::Chunks(b) => Some(b),
                _ => None,
            },
        );
        ChunksTicket { answer, asked }
    }

    /// Asks which of `ids` the server lacks: their indices.
    pub fn submit_have_chunks(&self, node: NodeId, ids: Vec<ChunkId>) -> Awaited<Vec<u32>> {
        self.submit_typed(
            "have-chunks",
            Request::HaveChunks { node, ids },
            |r| match r {
                Response::Missing(m) => Some(m),
                _ => None,
            },
        )
    }

    /// Uploads chunk bodies.
    pub fn submit_put_chunks(&self, node: NodeId, chunks: Vec<ChunkBody>) -> Awaited<()> {
        let req = Request::PutChunks { node, chunks };
        self.submit_typed("put-chunks", req, |r| {
            matches!(r, Response::Ok).then_some(())
        })
    }

    /// Makes a new version of a file (`Request::Commit`).
    /// Sends a `Request::Commit`, in one batch with the commits other threads make
    /// meanwhile (see [`super::commit_group`]).
    pub fn commit(&self, req: Request) -> Result<Committed, RemoteError> {
        self.commit_grouped(req)
    }

    /// Sends a `Request::Commit` on its own.
    pub fn commit_alone(&self, req: Request) -> Result<Committed, RemoteError> {
        self.ask("commit", req, |r| match r {
            Response::Attr(a) => Some(Committed::Made(a)),
            Response::KeptElsewhere { attr, name } => Some(Committed::KeptElsewhere { attr, name }),
            _ => None,
        })
    }

    /// Opens a session (`Request::Login` or `Request::Resume`).
    pub fn session(&self, req: Request) -> Result<Session, RemoteError> {
        self.ask("login", req, |r| match r {
            Response::Session {
                token,
                user,
                role,
                root,
            } => Some(Session {
                token,
                user,
                role,
                root,
            }),
            _ => None,
        })
    }

    pub fn status(&self) -> Result<ServerStatus, RemoteError> {
        self.ask("status", Request::Status, |r| match r {
            Response::Status(s) => Some(s),
            _ => None,
        })
    }

    pub fn list_devices(&self) -> Result<Vec<DeviceInfo>, RemoteError> {
        self.ask("list-devices", Request::ListDevices, |r| match r {
            Response::Devices(d) => Some(d),
            _ => None,
        })
    }

    pub fn list_shares(&self) -> Result<Vec<ShareInfo>, RemoteError> {
        self.ask("list-shares", Request::ListShares, |r| match r {
            Response::Shares(s) => Some(s),
            _ => None,
        })
    }

    /// An administrator's request that answers only "done".
    pub fn admin(&self, req: AdminRequest) -> Result<(), RemoteError> {
        self.ask_ok("admin", Request::Admin(req))
    }

    pub fn admin_users(&self) -> Result<Vec<UserInfo>, RemoteError> {
        let req = Request::Admin(AdminRequest::ListUsers);
        self.ask("list-users", req, |r| match r {
            Response::Users(u) => Some(u),
            _ => None,
        })
    }

    pub fn admin_audit(
        &self,
        limit: u32,
        user: Option<String>,
        kind: Option<String>,
    ) -> Result<Vec<AuditLine>, RemoteError> {
        let req = Request::Admin(AdminRequest::Audit { limit, user, kind });
        self.ask("audit", req, |r| match r {
            Response::Audit(a) => Some(a),
            _ => None,
        })
    }

    pub fn test_lock(&self, req: Request) -> Result<LockHolder, RemoteError> {
        self.ask("test-lock", req, |r| match r {
            Response::LockHolder(h) => Some(h),
            _ => None,
        })
    }
}

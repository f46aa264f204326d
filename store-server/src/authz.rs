//! The one authorisation function. Every request passes [`authorize`] before the handler acts
//! (with `node: None`), and every node a store operation reads or changes passes it again with
//! the node's record, so no code path — admin, versions, events — can skip the check.
//!
//! Rules: a session may touch nodes its account owns, and nodes of another account that are
//! shared with it (the node or a folder above it, [`Target::grant`]) — to read with a
//! read-only share, to read and write with a read-write one. Any other account's node is
//! reported as *not found*, so an error never reveals that someone else's file exists.
//! Viewers may read but every write is refused as read-only; so is a write in a read-only
//! share. Account management is for admins.
//!
//! A public link's visitor is a session of the link's own principal ([`Ctx::link`]),
//! granted its node like a share recipient (read for a download link, read-write for an
//! upload link). [`authorize_request`] first limits it to the requests its kind of link
//! needs ([`link_may`]): reading for a download link; for an upload link making folders and
//! files and storing their content, never removing, renaming or reading anything back.

use crate::store::Ctx;
use shelf_protocol::{ErrorCode, LinkAccess, Request, Role};

/// What a request or store step wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Look at names, attributes or content.
    Read,
    /// Change names, attributes or content.
    Write,
    /// Manage accounts, see usage and the audit log (admins only).
    Admin,
}

impl Action {
    /// How a request is classed: anything that changes the store is a write.
    pub fn of(req: &Request) -> Action {
        match req {
            Request::Login { .. }
            | Request::Resume { .. }
            | Request::Logout
            | Request::Lookup { .. }
            | Request::GetAttr { .. }
            | Request::ReadDir { .. }
            | Request::ReadLink { .. }
            | Request::GetXattr { .. }
            | Request::ListXattr { .. }
            | Request::StatFs
            | Request::GetChunks { .. }
            | Request::GetManifest { .. }
            | Request::GetSmallFile { .. }
            | Request::Status
            | Request::ListVersions { .. }
            | Request::GetVersion { .. }
            | Request::Subscribe { .. }
            | Request::Lock { .. }
            | Request::TestLock { .. }
            | Request::RenewLocks
            // A viewer may still see and sign out its own devices.
            | Request::ListDevices
            | Request::RevokeDevice { .. }
            // Anyone may drop a share of its own (the store checks whose it is).
            | Request::Unshare { .. }
            | Request::ListShares
            // Only the owner's own links (the store checks whose they are).
            | Request::ListLinks
            | Request::RevokeLink { .. }
            // A viewer may reach its store from WebDAV too (read-only there as here).
            | Request::AddAppPassword { .. }
            | Request::ListAppPasswords
            | Request::RevokeAppPassword { .. }
            | Request::ReportSyncFailure { .. }
            | Request::SetAgent { .. } => Action::Read,
            Request::Share { .. } | Request::CreateLink { .. } => Action::Write,
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
            | Request::PutChunks { .. }
            // Asked only while uploading.
            | Request::HaveChunks { .. }
            | Request::Commit { .. }
            | Request::Mknod { .. }
            | Request::Restore { .. }
            // Each change in it is authorised again on its own.
            | Request::Batch(_) => Action::Write,
            Request::Admin(_) => Action::Admin,
        }
    }
}

/// What a share grants.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Access {
    Read,
    Write,
}

/// The node a step acts on, as authorisation sees it: whose it is, and what the session's
/// account was granted on it by shares (only looked up for other accounts' nodes).
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub owner: u64,
    pub grant: Option<Access>,
}

/// Decides whether the session `ctx` may perform `action`, on `target` when one is given.
pub fn authorize(ctx: &Ctx, action: Action, target: Option<Target>) -> Result<(), ErrorCode> {
    if let Some(t) = target {
        if t.owner != ctx.account {
            match (t.grant, action) {
                (None, _) | (_, Action::Admin) => return Err(ErrorCode::NotFound),
                (Some(Access::Read), Action::Write) => return Err(ErrorCode::ReadOnly),
                (Some(_), _) => {}
            }
        }
    }
    match (action, ctx.role) {
        (Action::Admin, Role::Admin) => Ok(()),
        (Action::Admin, _) => Err(ErrorCode::PermissionDenied),
        (Action::Read, _) => Ok(()),
        (Action::Write, Role::Admin | Role::User) => Ok(()),
        (Action::Write, Role::Viewer) => Err(ErrorCode::ReadOnly),
    }
}

/// Whether a public link's visitor may send `req` at all (its nodes are checked after).
pub fn link_may(access: LinkAccess, req: &Request) -> bool {
    match access {
        LinkAccess::Download => matches!(
            req,
            Request::Lookup { .. }
                | Request::GetAttr { .. }
                | Request::ReadDir { .. }
                | Request::ReadLink { .. }
                | Request::GetManifest { .. }
                | Request::GetChunks { .. }
                | Request::GetSmallFile { .. }
                | Request::Logout
        ),
        // Lookup finds a folder a folder upload made a moment before; commits are
        // further limited to files the same visit made (the handler checks).
        LinkAccess::Upload => matches!(
            req,
            Request::Lookup { .. }
                | Request::GetAttr { .. }
                | Request::Mkdir { .. }
                | Request::Create {
                    exclusive: true,
                    ..
                }
                | Request::PutChunks { .. }
                | Request::HaveChunks { .. }
                | Request::Commit { .. }
                | Request::Logout
        ),
    }
}

/// Decides whether the session `ctx` may send `req` (before any node is looked at).
pub fn authorize_request(ctx: &Ctx, req: &Request) -> Result<(), ErrorCode> {
    if let Some(access) = ctx.link {
        if !link_may(access, req) {
            return Err(ErrorCode::PermissionDenied);
        }
    }
    authorize(ctx, Action::of(req), None)
}

//! The one authorisation function. Every request passes [`authorize`] before the handler acts
//! (with `node: None`), and every node a store operation reads or changes passes it again with
//! the node's record, so no code path — admin, versions, events — can skip the check.
//!
//! Rules today: a session may touch only nodes its account owns; a node of another account is
//! reported as *not found*, so an error never reveals that someone else's file exists. Viewers
//! may read but every write is refused as read-only.

use crate::store::{Ctx, NodeRec};
use shelf_protocol::{ErrorCode, Request, Role};

/// What a request or store step wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Look at names, attributes or content.
    Read,
    /// Change names, attributes or content.
    Write,
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
            | Request::HaveChunks { .. }
            | Request::Status
            | Request::ListVersions { .. }
            | Request::GetVersion { .. }
            | Request::Subscribe { .. }
            | Request::Lock { .. }
            | Request::TestLock { .. }
            | Request::RenewLocks => Action::Read,
            Request::SetAttr { .. }
            | Request::Mkdir { .. }
            | Request::Create { .. }
            | Request::Symlink { .. }
            | Request::Unlink { .. }
            | Request::Rmdir { .. }
            | Request::Rename { .. }
            | Request::SetXattr { .. }
            | Request::RemoveXattr { .. }
            | Request::PutChunks { .. }
            | Request::Commit { .. }
            | Request::Mknod { .. }
            | Request::Restore { .. } => Action::Write,
        }
    }
}

/// Decides whether the session `ctx` may perform `action`, on `node` when one is given.
pub fn authorize(ctx: &Ctx, action: Action, node: Option<&NodeRec>) -> Result<(), ErrorCode> {
    if let Some(node) = node {
        if node.owner != ctx.account {
            return Err(ErrorCode::NotFound);
        }
    }
    match (action, ctx.role) {
        (Action::Read, _) => Ok(()),
        (Action::Write, Role::Admin | Role::User) => Ok(()),
        (Action::Write, Role::Viewer) => Err(ErrorCode::ReadOnly),
    }
}

//! Conflicts: a commit based on a version that is no longer the file's newest, or on a file
//! another device deleted. Nothing is lost either way.
//!
//! Per-account policy (`prefs` tree, key account ‖ `conflicts`):
//! - keep both (default): the incoming content becomes a new file beside the original,
//!   `NAME (conflicted copy YYYY-MM-DD HHMMSS from DEVICE).EXT`, and a `Conflicted`
//!   change tells every device;
//! - last writer wins: the incoming content becomes the newest version; the other stays
//!   in the history.
//!
//! An edit of a deleted file is kept either way: the file comes back under its last name
//! (or as a conflicted copy if that name is taken again).

use super::namespace::NewNode;
use super::{node_key, Ctx, NodeRec, Store, VersionRec};
use crate::error::{Result, StoreError};
use shelf_protocol::{Attr, ChangeKind, ChunkRef, ErrorCode, NodeId, NodeKind, Timestamp};

/// How an account resolves conflicting commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConflictPolicy {
    KeepBoth,
    LastWriterWins,
}

/// What a commit did.
#[derive(Debug)]
pub enum Committed {
    /// The new version of the file.
    Done(Attr),
    /// The content went to another file (a conflicted copy, or the deleted file brought
    /// back), named `name` in the same folder.
    Elsewhere { attr: Attr, name: String },
}

fn prefs_key(account: u64) -> Vec<u8> {
    let mut k = account.to_be_bytes().to_vec();
    k.extend_from_slice(b"conflicts");
    k
}

pub use shelf_protocol::names::conflict_name;

impl Store {
    pub fn conflict_policy(&self, account: u64) -> Result<ConflictPolicy> {
        Ok(match self.prefs.get(prefs_key(account))?.as_deref() {
            Some([1]) => ConflictPolicy::LastWriterWins,
            _ => ConflictPolicy::KeepBoth,
        })
    }

    pub fn set_conflict_policy(&self, account: u64, p: ConflictPolicy) -> Result<()> {
        let v = match p {
            ConflictPolicy::KeepBoth => 0u8,
            ConflictPolicy::LastWriterWins => 1,
        };
        self.prefs.insert(prefs_key(account), &[v])?;
        Ok(())
    }

    /// A client's commit, with conflicts resolved by the account's policy.
    pub fn commit_resolving(
        &self,
        ctx: &Ctx,
        node: NodeId,
        base: u64,
        chunks: Vec<ChunkRef>,
        mtime: Timestamp,
    ) -> Result<Committed> {
        match self.commit(ctx, node, base, chunks.clone(), mtime) {
            Ok(a) => Ok(Committed::Done(a)),
            Err(StoreError::Refused(ErrorCode::Conflict)) => {
                let current = self.getattr(ctx, node)?;
                let head: Option<VersionRec> = self
                    .versions
                    .get(super::version_key(node, current.version))?
                    .map(|b| super::decode(&b))
                    .transpose()?;
                if let Some(head) = head {
                    if head.chunks == chunks {
                        // The same content again (a replay after a crash): nothing to do.
                        return Ok(Committed::Done(current));
                    }
                    if head.device == ctx.device {
                        // This device's own newer content, replayed on an old base after a
                        // crash: not a conflict with anyone.
                        return self
                            .commit(ctx, node, current.version, chunks, mtime)
                            .map(Committed::Done);
                    }
                }
                match self.conflict_policy(ctx.account)? {
                    ConflictPolicy::LastWriterWins => {
                        let current = self.getattr(ctx, node)?.version;
                        self.commit(ctx, node, current, chunks, mtime)
                            .map(Committed::Done)
                    }
                    ConflictPolicy::KeepBoth => self.keep_elsewhere(ctx, node, chunks, mtime, true),
                }
            }
            Err(StoreError::Refused(ErrorCode::NotFound)) if self.was_deleted(ctx, node)? => {
                // Delete against edit: the edit stays.
                self.keep_elsewhere(ctx, node, chunks, mtime, false)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether `node` is a file another device deleted (a device's own deletion is its
    /// latest word on the file: its late uploads do not bring it back).
    fn was_deleted(&self, ctx: &Ctx, node: NodeId) -> Result<bool> {
        let Some(b) = self.nodes.get(node_key(node))? else {
            return Ok(false);
        };
        let rec: NodeRec = self.open_node(node, &b)?;
        if rec.owner != ctx.account || rec.deleted.is_none() || rec.kind != NodeKind::File {
            return Ok(false);
        }
        let by_me = rec
            .xattrs
            .get(super::namespace::DELETED_BY)
            .is_some_and(|d| d.as_slice() == ctx.device.as_bytes());
        Ok(!by_me)
    }

    /// Stores the content as a new file in the folder of `node`: a conflicted copy, or
    /// (for a deleted file) under its old name when that is free.
    fn keep_elsewhere(
        &self,
        ctx: &Ctx,
        node: NodeId,
        chunks: Vec<ChunkRef>,
        mtime: Timestamp,
        conflict: bool,
    ) -> Result<Committed> {
        let Some(bytes) = self.nodes.get(node_key(node))? else {
            return Err(ErrorCode::NotFound.into());
        };
        let rec = self.open_node(node, &bytes)?;
        let Some((mut parent, old_name)) = self.place_of(rec.owner, node)? else {
            return Err(ErrorCode::NotFound.into());
        };
        // The folder may be gone too: then the account's root holds the file.
        if self.getattr(ctx, parent).is_err() {
            parent = ctx.root;
        }
        let mode = rec.mode;
        let now = self.now();
        let mut names = Vec::new();
        if !conflict {
            names.push(old_name.clone());
        }
        let copy = conflict_name(&old_name, now, &ctx.device);
        names.push(copy.clone());
        for n in 2..10 {
            names.push(conflict_name(&format!("{old_name} {n}"), now, &ctx.device));
        }
        for name in names {
            let new = NewNode {
                kind: NodeKind::File,
                mode,
                target: None,
                exclusive: true,
                rdev: 0,
                id: None,
            };
            let attr = match self.create_node(ctx, parent, &name, new) {
                Ok(a) => a,
                Err(StoreError::Refused(ErrorCode::Exists)) => continue,
                Err(e) => return Err(e),
            };
            let attr = self.commit(ctx, attr.node, 0, chunks, mtime)?;
            // Also to the committing device, whose own changes are otherwise not applied.
            self.publish(ctx, ChangeKind::Conflicted, attr.node, parent, &name);
            // File names stay out of the log (the data folder holds no plaintext names).
            tracing::info!(user = %ctx.user, device = %ctx.device, node = attr.node, "conflict kept both versions");
            return Ok(Committed::Elsewhere { attr, name });
        }
        Err(ErrorCode::Exists.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names() {
        let at = Timestamp {
            secs: 1_795_305_600 + 23 * 3600 + 15 * 60,
            nanos: 0,
        };
        assert_eq!(
            conflict_name("report.txt", at, "laptop"),
            "report (conflicted copy 2026-11-22 231500 from laptop).txt"
        );
        assert_eq!(
            conflict_name(".bashrc", at, "pc"),
            ".bashrc (conflicted copy 2026-11-22 231500 from pc)"
        );
        assert_eq!(
            conflict_name("a.tar.gz", at, "pc"),
            "a.tar (conflicted copy 2026-11-22 231500 from pc).gz"
        );
        let long = "x".repeat(250) + ".txt";
        assert!(conflict_name(&long, at, "pc").len() <= 255);
    }
}

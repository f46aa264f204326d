//! Small files' content rides with the namespace changes.
//!
//! When the sender sends a batch of namespace changes, it takes along the commit of every
//! small file closed since: a `tar x` or `git clone` of small files then costs the server one
//! batch, two transactions and one flush for dozens of files (create, chown, chmod, utimens
//! and content together), where each file used to wait for its create to be sent and then
//! be committed by an uploader on its own.
//!
//! A fold is only a faster way to send. The file is claimed as an upload is (`uploading`),
//! so nothing else commits it meanwhile; a commit the batch did not make (refused, not
//! reached, the file written again) is left to the uploaders, which settle conflicts and
//! deletions by the usual rules.

use super::files::FileState;
use super::upload::SnapshotReader;
use super::FsCore;
use crate::cache::oplog::{NsOp, Queued};
use crate::transfer;
use shelf_protocol::{Attr, ChunkBody, ChunkRef, NodeId, NodeKind, Request, Timestamp};
use std::collections::HashSet;
use std::sync::Arc;

/// Commits one batch carries at most.
pub(crate) const FOLD_MAX: usize = 128;
/// Content one batch carries at most (a frame holds 8 MiB, and the namespace changes of
/// the batch come first).
const FOLD_BYTES: usize = 3 << 20;

/// A small file's content claimed for the batch being sent.
pub(crate) struct Folded {
    node: NodeId,
    st: Arc<FileState>,
    gen: u64,
    base: u64,
    mtime: Timestamp,
    chunks: Vec<ChunkRef>,
    inline: Vec<ChunkBody>,
}

impl Folded {
    /// The commit the batch carries.
    pub(crate) fn request(&self) -> Request {
        Request::Commit {
            node: self.node,
            base_version: self.base,
            chunks: self.chunks.clone(),
            inline: self.inline.clone(),
            mtime: self.mtime,
            durable: false,
        }
    }
}

impl FsCore {
    /// Claims the small files waiting for upload that a batch of `ops` can commit: closed,
    /// not being written or uploaded, and made by `ops` or known to the server (`queued`
    /// were waiting for upload before `ops` were taken; `whole_log`: `ops` are every change
    /// queued then, so the creates of those files are among them or sent).
    pub(crate) fn fold_uploads(
        &self,
        ops: &[Queued],
        queued: &[NodeId],
        whole_log: bool,
    ) -> Vec<Folded> {
        if std::env::var_os("SHELF_TEST_HOLD_UPLOADS").is_some() {
            return Vec::new();
        }
        let mut made = HashSet::new();
        let mut candidates = Vec::new();
        for q in ops {
            match &q.op {
                NsOp::Make {
                    id,
                    kind: NodeKind::File,
                    ..
                } => {
                    made.insert(*id);
                    candidates.push(*id);
                }
                NsOp::SetAttr { node, .. } => candidates.push(*node),
                _ => {}
            }
        }
        candidates.extend_from_slice(queued);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut bytes = 0;
        for node in candidates {
            if out.len() >= FOLD_MAX || bytes >= FOLD_BYTES || !seen.insert(node) {
                continue;
            }
            // Its create must reach the server before the commit.
            let reachable = made.contains(&node) || whole_log || !self.overlay_created(node);
            if !reachable {
                continue;
            }
            if let Some(f) = self.fold_one(node, FOLD_BYTES - bytes) {
                bytes += f.inline.iter().map(|c| c.data.len()).sum::<usize>();
                out.push(f);
            }
        }
        out
    }

    /// Claims `node` and reads its content, if it is a small closed file with unsent content
    /// of at most `room` bytes.
    fn fold_one(&self, node: NodeId, room: usize) -> Option<Folded> {
        let st = self.existing_file_state(node)?;
        if st.is_unlinked() {
            return None;
        }
        let (file, gen, base, mtime, size) = {
            let mut inner = st.lock();
            if inner.uploading || inner.writing > 0 || inner.open_writers > 0 {
                return None;
            }
            let s = inner.staging.as_mut()?;
            s.refresh();
            if !s.dirty() || s.size > transfer::INLINE_MAX || s.size > room as u64 {
                return None;
            }
            let snapshot = (s.file().ok()?, s.gen, s.base_version, s.mtime, s.size);
            inner.uploading = true;
            snapshot
        };
        let read = transfer::inline_chunks(SnapshotReader::new(file, 0, size));
        // Written while it was read (a writer opened it meanwhile): the uploaders take it.
        let unchanged = {
            let mut inner = st.lock();
            if let Some(s) = inner.staging.as_mut() {
                s.refresh();
            }
            inner.writing == 0
                && inner.open_writers == 0
                && inner.staging.as_ref().is_some_and(|s| s.gen == gen)
        };
        match read {
            Ok((chunks, inline)) if unchanged => Some(Folded {
                node,
                st,
                gen,
                base,
                mtime,
                chunks,
                inline,
            }),
            _ => {
                self.end_upload(node, &st);
                None
            }
        }
    }

    /// Ends a fold with the server's answer to its commit (`None`: not reached).
    pub(crate) fn fold_done(&self, f: Folded, made: Option<&Attr>) {
        let Folded {
            node,
            st,
            gen,
            mtime,
            chunks,
            ..
        } = f;
        match made {
            Some(attr) => {
                self.queue.forget(node);
                match self.committed(node, &st, gen, mtime, chunks, attr.clone(), false) {
                    Ok(_) => self.note_upload(node, None),
                    Err(e) => {
                        tracing::warn!(node, error = %e, "cannot record a committed file");
                        self.queue.push(node);
                    }
                }
                self.end_upload(node, &st);
            }
            // Refused (a conflict, a deletion meanwhile) or not reached: an uploader takes
            // it, by the rules of a commit sent alone.
            _ => {
                self.end_upload(node, &st);
                self.queue.push(node);
            }
        }
    }
}

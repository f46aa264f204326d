//! The uploader: turns a dirty staging file into a committed version.
//!
//! 1. Take a snapshot point: no write in progress, remember the generation.
//! 2. Chunk the staging file (FastCDC + BLAKE3), ask the server which chunks it lacks, in
//!    batches, and upload only those, many in flight at once.
//! 3. If the file changed while it was read, start over (a torn mix of old and new bytes is
//!    never committed).
//! 4. Commit against the version the content was based on. The commit is one server
//!    transaction; a `durable` commit (fsync) is flushed to disk before the answer.
//! 5. If nothing changed meanwhile, drop the journal record: the file is clean.
//!
//! Uploader threads ([`super::background`]) take files from a [`Queue`] after their last
//! writer closed them; a failed upload stays journaled and is retried with backoff.

use super::files::{FileState, Manifest};
use super::{FsCore, FsError};
use crate::remote::calls::Committed;
use crate::remote::RemoteError;
use crate::sync::LockOrRecover;
use crate::transfer;
use shelf_protocol::{Attr, ChunkRef, ErrorCode, NodeId, Request, Timestamp};
use std::collections::{HashSet, VecDeque};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Files waiting for upload, each at most once.
#[derive(Default)]
pub struct Queue {
    inner: Mutex<QueueInner>,
    cv: Condvar,
}

#[derive(Default)]
struct QueueInner {
    order: VecDeque<NodeId>,
    queued: HashSet<NodeId>,
    busy: usize,
    stopping: bool,
}

impl Queue {
    pub fn push(&self, node: NodeId) {
        let mut q = self.inner.lock_or_recover();
        if q.queued.insert(node) {
            q.order.push_back(node);
        }
        self.cv.notify_all();
    }

    pub(super) fn pop(&self) -> Option<NodeId> {
        let mut q = self.inner.lock_or_recover();
        loop {
            if q.stopping {
                return None;
            }
            if let Some(n) = q.order.pop_front() {
                q.queued.remove(&n);
                q.busy += 1;
                return Some(n);
            }
            q = self.cv.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Up to `max` of the files waiting, oldest first (they stay queued).
    pub fn peek(&self, max: usize) -> Vec<NodeId> {
        let q = self.inner.lock_or_recover();
        q.order.iter().take(max).copied().collect()
    }

    /// Takes `node` off the queue (committed by other means).
    pub fn forget(&self, node: NodeId) {
        let mut q = self.inner.lock_or_recover();
        if q.queued.remove(&node) {
            q.order.retain(|n| *n != node);
            self.cv.notify_all();
        }
    }

    pub(super) fn done(&self) {
        let mut q = self.inner.lock_or_recover();
        q.busy -= 1;
        self.cv.notify_all();
    }

    /// Files queued or being uploaded.
    pub fn pending(&self) -> usize {
        let q = self.inner.lock_or_recover();
        q.order.len() + q.busy
    }

    pub fn stop(&self) {
        let mut q = self.inner.lock_or_recover();
        q.stopping = true;
        self.cv.notify_all();
    }

    /// Waits until nothing is queued or in progress, or `timeout` passes. Returns what is left.
    pub fn wait_idle(&self, timeout: Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        let mut q = self.inner.lock_or_recover();
        loop {
            let left = q.order.len() + q.busy;
            let now = std::time::Instant::now();
            if left == 0 || now >= deadline || q.stopping {
                return left;
            }
            crate::blocking::about_to_block();
            q = self
                .cv
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Reads a staging file from a snapshot, up to its size, with positional reads.
pub(crate) struct SnapshotReader {
    file: Arc<std::fs::File>,
    pos: u64,
    end: u64,
}

impl SnapshotReader {
    /// Reads `[from, to)` of `file`.
    pub(crate) fn new(file: Arc<std::fs::File>, from: u64, to: u64) -> SnapshotReader {
        SnapshotReader {
            file,
            pos: from,
            end: to,
        }
    }
}

impl std::io::Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl FsCore {
    /// Uploads `node`'s local content if it is dirty. `durable` (fsync) uploads even while
    /// the file is open and waits for the server's flush.
    pub fn upload(&self, node: NodeId, durable: bool) -> Result<(), FsError> {
        // Committed meanwhile (its content rode with the namespace changes): nothing to wait
        // for. A file being uploaded is waited for below.
        let clean = |st: &FileState| {
            let inner = st.lock();
            !inner.uploading && !inner.staging.as_ref().is_some_and(|s| s.dirty())
        };
        if !durable && self.existing_file_state(node).is_none_or(|st| clean(&st)) {
            return Ok(());
        }
        // Namespace changes made before go first (the file's create may be one of them).
        let patience = durable.then_some(Duration::from_secs(1));
        if !self.pending.wait_sent(self.pending.next_seq(), patience) {
            return Err(FsError::Remote(RemoteError::Disconnected(
                "changes made offline are still waiting for the server".into(),
            )));
        }
        let st = self.file_state(node);
        // One upload of a file at a time.
        {
            let mut inner = st.lock();
            if inner.uploading {
                crate::blocking::about_to_block();
            }
            while inner.uploading {
                inner = st.changed.wait(inner).unwrap_or_else(|p| p.into_inner());
            }
            inner.uploading = true;
        }
        let result = self.upload_exclusive(node, durable);
        self.end_upload(node, &st);
        result
    }

    /// Ends an upload of `node` (its file state `st`, marked `uploading` by the caller).
    pub(super) fn end_upload(&self, node: NodeId, st: &FileState) {
        let gone = {
            let mut inner = st.lock();
            inner.uploading = false;
            inner.close_idle_fd();
            st.is_unlinked()
                && inner.open_handles == 0
                && !inner
                    .staging
                    .as_ref()
                    .is_some_and(super::files::Staging::dirty)
        };
        st.changed.notify_all();
        if gone {
            // Uploaded under no name after its last close: nothing local is needed now.
            self.drop_local(node);
        }
    }

    fn upload_exclusive(&self, node: NodeId, durable: bool) -> Result<(), FsError> {
        let st = self.file_state(node);
        let mut retry_all = false;
        for _attempt in 0..100 {
            // 1. Snapshot point.
            let (file, gen, base, mtime, size) = {
                let mut inner = st.lock();
                if inner.writing > 0 {
                    crate::blocking::about_to_block();
                }
                while inner.writing > 0 {
                    inner = st.changed.wait(inner).unwrap_or_else(|p| p.into_inner());
                }
                if !durable && inner.open_writers > 0 {
                    // Reopened for writing: the last release queues it again.
                    return Ok(());
                }
                if let Some(s) = inner.staging.as_mut() {
                    s.refresh();
                }
                match inner.staging.as_mut() {
                    Some(s) if s.dirty() => (s.file()?, s.gen, s.base_version, s.mtime, s.size),
                    _ => return Ok(()),
                }
            };
            // 2. Chunk and send what the server lacks. A small file's chunks ride along with
            // the commit instead (one round trip; the server deduplicates).
            let (chunks, inline) = if size <= transfer::INLINE_MAX {
                transfer::inline_chunks(SnapshotReader::new(file, 0, size))?
            } else {
                // What write-behind sent and the file still holds (not after a MissingChunk
                // answer: then every chunk is chunked and asked about again).
                let sent = match retry_all {
                    false => self.write_behind.sent_chunks(node),
                    true => Vec::new(),
                };
                let (mut chunks, from) = still_there(&file, &sent, size)?;
                if !sent.is_empty() {
                    tracing::debug!(
                        node,
                        sent = sent.len(),
                        kept = chunks.len(),
                        from,
                        "chunks sent while written"
                    );
                }
                // The base version's chunks, if its manifest is at hand (not after a
                // MissingChunk answer: then the server is asked about every chunk).
                let known: HashSet<_> = match retry_all {
                    false => self
                        .manifests
                        .of_version(node, base)
                        .map(|m| m.chunks.iter().map(|c| c.id).collect())
                        .unwrap_or_default(),
                    true => HashSet::new(),
                };
                let rest = SnapshotReader::new(file, from, size);
                chunks.extend(transfer::send_chunks(&self.remote, node, rest, &known)?);
                (chunks, Vec::new())
            };
            // 3. Changed while we read it? Then take a new snapshot.
            {
                let mut inner = st.lock();
                if let Some(s) = inner.staging.as_mut() {
                    s.refresh();
                }
                let same =
                    inner.writing == 0 && inner.staging.as_ref().is_some_and(|s| s.gen == gen);
                if !same {
                    continue;
                }
            }
            // 4. Commit.
            let commit = |base_version| {
                self.remote.commit(Request::Commit {
                    node,
                    base_version,
                    chunks: chunks.clone(),
                    inline: inline.clone(),
                    mtime,
                    durable,
                })
            };
            let attr = match commit(base) {
                Ok(Committed::Made(a)) => a,
                Ok(Committed::KeptElsewhere { attr, name }) => {
                    // Another device changed (or deleted) the file meanwhile: the server
                    // kept this content as `name` beside it. This file is theirs now.
                    tracing::warn!(node, copy = %name, "conflict: this device's version was kept as a separate file");
                    self.after_conflict(node, gen, attr.node);
                    return Ok(());
                }
                Err(e) if e.code() == Some(ErrorCode::Conflict) => {
                    // An older server without conflict resolution: last writer wins and
                    // the other content stays as the previous version.
                    tracing::warn!(
                        node,
                        "file changed on the server meanwhile; keeping both as versions"
                    );
                    self.forget_attr(node);
                    let current = self.server_attr(node)?;
                    match commit(current.version)? {
                        Committed::Made(a) => a,
                        Committed::KeptElsewhere { attr, .. } => {
                            self.after_conflict(node, gen, attr.node);
                            return Ok(());
                        }
                    }
                }
                Err(e) if e.code() == Some(ErrorCode::MissingChunk) => {
                    // The server collected a chunk it had (retention runs between our
                    // upload and the commit): ask again and send what it lacks.
                    tracing::info!(node, "a chunk was collected before the commit; resending");
                    retry_all = true;
                    continue;
                }
                Err(e)
                    if e.code() == Some(ErrorCode::NotFound)
                        && !self.known_path(node).starts_with("shared/") =>
                {
                    // This device deleted or replaced it (another device's deletion is
                    // answered with a kept copy): nothing left to upload to. (In a share,
                    // a revoked share or the owner's deletion: the loop keeps the content.)
                    self.drop_local(node);
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            // 5. Mark clean (or go round again when fsync finds it written meanwhile).
            if self.committed(node, &st, gen, mtime, chunks, attr, durable)? {
                continue;
            }
            return Ok(());
        }
        Err(FsError::Io(std::io::Error::other(
            "the file kept changing while it was uploaded",
        )))
    }

    /// What a commit of generation `gen` of `node` (made from `chunks`, with `mtime`) that
    /// the server answered with `attr` leaves to do: the file is clean, or journaled again on
    /// the new base if written meanwhile. Returns whether a `durable` upload goes round again.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn committed(
        &self,
        node: NodeId,
        st: &FileState,
        gen: u64,
        mtime: Timestamp,
        chunks: Vec<ChunkRef>,
        attr: Attr,
        durable: bool,
    ) -> Result<bool, FsError> {
        // The committed attributes are remembered first: from the moment the file is clean,
        // its size and mtime come from the attribute cache (`FsCore::stat_of`).
        self.remember(attr.clone());
        self.refused.take(node);
        self.manifests
            .put(Arc::new(Manifest::new(node, attr.version, chunks)));
        let mut inner = st.lock();
        // A utimens that raced the upload set the server's mtime before this commit
        // overwrote it with the snapshot's: send it again.
        let newer_mtime = inner
            .staging
            .as_ref()
            .map(|s| s.mtime)
            .filter(|m| *m != mtime);
        let mut still_dirty = false;
        if let Some(s) = inner.staging.as_mut() {
            s.base_version = attr.version;
            s.committed_gen = gen;
            still_dirty = s.dirty();
            if still_dirty && s.journaled_gen == s.gen {
                s.journaled_gen = 0; // rewrite with the new base below
            }
        }
        if still_dirty {
            if inner.open_writers == 0
                || inner.staging.as_ref().is_some_and(|s| s.journaled_gen == 0)
            {
                self.journal_locked(node, &mut inner)?;
            }
            if durable {
                return Ok(true);
            }
            let reopened = inner.open_writers > 0;
            drop(inner);
            if !reopened {
                self.queue.push(node);
            }
        } else {
            self.journal.remove(node)?;
            drop(inner);
            if let Some(m) = newer_mtime {
                let _ = self.remote.call(Request::SetAttr {
                    node,
                    mode: None,
                    uid: None,
                    gid: None,
                    atime: None,
                    mtime: Some(m),
                });
                self.forget_attr(node);
            }
            // The kernel's pages of this file are what we just committed.
            self.note_committed(node, attr.version, attr.size);
        }
        Ok(false)
    }

    /// This device's content of `node` (generation `gen`) now lives in the server's node
    /// `copy`: the local copy goes, unless it changed again meanwhile or is still open (then
    /// it stays, based on the server's current version, and is uploaded again later).
    fn after_conflict(&self, node: NodeId, gen: u64, copy: NodeId) {
        self.forget_attr(node);
        self.forget_attr(copy);
        let st = self.file_state(node);
        let mut inner = st.lock();
        let untouched = inner.staging.as_ref().is_some_and(|s| s.gen == gen);
        if untouched {
            // This content is the copy now. Still open (an fsync's handle, a reader): it
            // stays for those handles as a clean copy of its old base, which the next open
            // finds stale; it must not be sent again as the file's newest version (that
            // would hide the other device's edit behind the same content twice).
            match inner.open_handles {
                0 => {
                    if let Some(s) = inner.staging.take() {
                        s.discard(&self.staging_files);
                    }
                }
                _ => {
                    if let Some(s) = inner.staging.as_mut() {
                        s.committed_gen = s.gen;
                        s.journaled_gen = s.gen;
                    }
                }
            }
            drop(inner);
            if let Err(e) = self.journal.remove(node) {
                tracing::warn!(node, error = %e, "could not remove a journal record");
            }
        } else {
            let current = self.server_attr(node).map(|a| a.version).unwrap_or(0);
            if let Some(s) = inner.staging.as_mut() {
                s.base_version = current;
                s.journaled_gen = 0;
            }
            let _ = self.journal_locked(node, &mut inner);
        }
        self.invalidate_node(node);
    }

    fn note_committed(&self, node: NodeId, version: u64, size: u64) {
        let _ = self.keep_cache(node, version, size);
        self.remember_clean_copy(node, size);
    }

    /// Counts a committed staging file as a clean local copy, then evicts the least
    /// recently used clean copies beyond the cache budget (the same budget as the chunk
    /// cache). Dirty files are never evicted: they are the only copy of unsent data.
    pub(crate) fn remember_clean_copy(&self, node: NodeId, size: u64) {
        let victims = self.clean.add(node, size);
        for victim in victims {
            let Some(st) = self.files.get(victim) else {
                continue;
            };
            let mut inner = st.lock();
            // `node` is being committed by this very thread (its uploading flag is ours);
            // it is a victim only when it alone exceeds the budget.
            let evictable = inner.open_handles == 0
                && !self.is_pinned(victim)
                && (victim == node || !inner.uploading)
                && inner.staging.as_ref().is_some_and(|s| !s.dirty());
            if evictable {
                if let Some(s) = inner.staging.take() {
                    // Readers holding the descriptor keep reading; the name goes now.
                    s.discard(&self.staging_files);
                }
            }
        }
    }

    /// Stops counting a local copy that was dropped.
    pub(crate) fn forget_clean_copy(&self, node: NodeId) {
        self.clean.forget(node);
    }

    /// Marks a clean local copy as recently used.
    pub(crate) fn touch_clean_copy(&self, node: NodeId) {
        self.clean.touch(node);
    }

    /// Forgets local content of a node that no longer has a name on the server. While
    /// handles are open it stays (marked unlinked): they keep reading and writing it until
    /// the last close (see `FsCore::release`).
    pub(crate) fn drop_local(&self, node: NodeId) {
        let Some(st) = self.files.get(node) else {
            return;
        };
        let mut inner = st.lock();
        if inner.open_handles > 0 && inner.staging.is_some() {
            st.set_unlinked(true);
            return;
        }
        st.set_unlinked(false);
        if let Some(s) = inner.staging.take() {
            s.discard(&self.staging_files);
        }
        if let Err(e) = self.journal.remove(node) {
            tracing::warn!(node, error = %e, "could not remove a journal record");
        }
    }

    /// Namespace changes made offline that the server does not have yet.
    pub fn pending_changes(&self) -> usize {
        self.pending.len()
    }
}

impl Queue {
    /// Sleeps for `d`, or until the queue is stopped.
    pub(super) fn pause(&self, d: Duration) {
        let until = std::time::Instant::now() + d;
        let mut q = self.inner.lock_or_recover();
        while !q.stopping {
            let now = std::time::Instant::now();
            if now >= until {
                return;
            }
            q = self
                .cv
                .wait_timeout(q, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.inner.lock_or_recover().stopping
    }
}

/// The leading chunks of `sent` that `file` still holds (each read again and hashed), and
/// where they end: a cut point of the whole file, from which chunking goes on.
fn still_there(
    file: &std::fs::File,
    sent: &[ChunkRef],
    size: u64,
) -> Result<(Vec<ChunkRef>, u64), FsError> {
    let mut kept = Vec::with_capacity(sent.len());
    let mut at = 0u64;
    let mut buf = Vec::new();
    for c in sent {
        let end = at + u64::from(c.len);
        if end > size {
            break;
        }
        buf.resize(c.len as usize, 0);
        file.read_exact_at(&mut buf, at)?;
        if crate::chunker::chunk_id(&buf) != c.id {
            break;
        }
        kept.push(*c);
        at = end;
    }
    Ok((kept, at))
}

#[allow(dead_code)]
fn is_transient(e: &RemoteError) -> bool {
    e.is_transient()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs_of(data: &[u8]) -> Vec<ChunkRef> {
        let mut refs = Vec::new();
        crate::chunker::chunk_stream(data, |r, _| {
            refs.push(r);
            Ok(())
        })
        .expect("chunk");
        refs
    }

    #[test]
    fn chunks_sent_ahead_are_kept_up_to_the_first_changed_one() {
        let mut x = 7u64;
        let mut data: Vec<u8> = (0..(4 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let sent = refs_of(&data);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, &data).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        let size = data.len() as u64;
        // Unchanged: every chunk is kept, up to the end.
        assert_eq!(
            still_there(&file, &sent, size).expect("read"),
            (sent.clone(), size)
        );
        // A byte changed in the middle: the chunks before it are kept, and chunking from
        // where they end gives what chunking the whole file gives.
        data[(2 << 20) + 5] ^= 1;
        std::fs::write(&path, &data).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        let (kept, from) = still_there(&file, &sent, size).expect("read");
        assert!(!kept.is_empty() && kept.len() < sent.len());
        assert!(from <= (2 << 20) + 5 && from > 1 << 20, "kept up to {from}");
        let mut whole = kept.clone();
        whole.extend(refs_of(&data[from as usize..]));
        assert_eq!(whole, refs_of(&data));
        // Shorter than what was sent: nothing past the end is kept.
        let (kept, from) = still_there(&file, &sent, 1 << 20).expect("read");
        assert!(from <= 1 << 20 && kept.len() < sent.len());
    }
}

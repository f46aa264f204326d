//! The namespace journal: creates, removes, renames and attribute changes made in the
//! mount, in the order they were made, until the server has them (write-back: online as
//! well as offline).
//!
//! One append-only log, `CACHE/journal/ops`, framed like the upload journal: an `Op` entry
//! when a change is made locally, a `Done` entry once the server has applied it (or refused
//! it for good). A torn last entry is ignored: that call never returned. The log is rewritten
//! with only the live entries when opened, and emptied whenever it drains.

use super::journal::{append_whole, entries, frame, read_log, replace_log};
use crate::sync::LockOrRecover;
use serde::{Deserialize, Serialize};
use shelf_protocol::{Expect, NodeId, NodeKind, RenameMode, Timestamp};
use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const FORMAT: u8 = 1;

/// One namespace change, as the device made it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum NsOp {
    /// mkdir, create, symlink or mknod, with the node id the device chose.
    Make {
        parent: NodeId,
        name: String,
        id: NodeId,
        kind: NodeKind,
        mode: u32,
        rdev: u32,
        target: Option<String>,
        /// O_EXCL (online only: a replayed create always makes a new node).
        exclusive: bool,
        at: Timestamp,
    },
    /// unlink (`dir == false`) or rmdir. Queued, it carries what the device saw under the
    /// name: the server removes it only if that is still there, unchanged.
    Remove {
        parent: NodeId,
        name: String,
        dir: bool,
        expect: Option<Expect>,
    },
    /// rename; queued, it carries the node the device moved.
    Rename {
        parent: NodeId,
        name: String,
        new_parent: NodeId,
        new_name: String,
        mode: RenameMode,
        expect: Option<NodeId>,
    },
    /// chmod, chown, utimens.
    SetAttr {
        node: NodeId,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    },
}

#[derive(Serialize, Deserialize, Debug)]
enum Entry {
    /// Written by clients before changes carried their time (read as made at replay).
    Op {
        format: u8,
        seq: u64,
        op: NsOp,
    },
    Done(u64),
    /// A change and when it was made (the server stamps it with that time).
    OpAt {
        format: u8,
        seq: u64,
        at: Timestamp,
        op: NsOp,
    },
}

/// A change waiting for the server.
#[derive(Clone, Debug, PartialEq)]
pub struct Queued {
    pub seq: u64,
    pub at: Timestamp,
    pub op: NsOp,
}

struct Inner {
    file: File,
    ops: VecDeque<Queued>,
    next_seq: u64,
}

pub struct OpLog {
    inner: Mutex<Inner>,
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("ops")
}

/// The live operations of a log, in order.
fn replay(bytes: &[u8]) -> VecDeque<Queued> {
    let mut ops: VecDeque<Queued> = VecDeque::new();
    for entry in entries::<Entry>(bytes) {
        match entry {
            Entry::Op { format, seq, op } if format == FORMAT => ops.push_back(Queued {
                seq,
                at: Timestamp::now(),
                op,
            }),
            Entry::OpAt {
                format,
                seq,
                at,
                op,
            } if format == FORMAT => ops.push_back(Queued { seq, at, op }),
            Entry::Op { format, .. } | Entry::OpAt { format, .. } => {
                tracing::error!(format, "namespace journal entry of unknown format")
            }
            Entry::Done(seq) => ops.retain(|q| q.seq != seq),
        }
    }
    ops
}

fn entry(q: &Queued) -> Entry {
    Entry::OpAt {
        format: FORMAT,
        seq: q.seq,
        at: q.at,
        op: q.op.clone(),
    }
}

fn rewrite(dir: &Path, ops: &VecDeque<Queued>) -> std::io::Result<File> {
    let mut bytes = Vec::new();
    for q in ops {
        bytes.extend(frame(&entry(q))?);
    }
    replace_log(&log_path(dir), &bytes)
}

impl OpLog {
    /// Opens the log in `dir` with the operations still waiting for the server.
    pub fn open(dir: PathBuf) -> std::io::Result<OpLog> {
        let ops = replay(&read_log(&log_path(&dir))?);
        let file = rewrite(&dir, &ops)?;
        let next_seq = ops.back().map(|q| q.seq + 1).unwrap_or(1);
        Ok(OpLog {
            inner: Mutex::new(Inner {
                file,
                ops,
                next_seq,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock_or_recover()
    }

    /// Appends an operation made at `at` (one `write(2)`; the syncer makes it durable with
    /// the rest).
    pub fn push(&self, op: NsOp, at: Timestamp) -> std::io::Result<u64> {
        let mut inner = self.lock();
        let q = Queued {
            seq: inner.next_seq,
            at,
            op,
        };
        append_whole(&mut inner.file, &frame(&entry(&q))?)?;
        inner.next_seq += 1;
        let seq = q.seq;
        inner.ops.push_back(q);
        Ok(seq)
    }

    /// The oldest operation the server does not have yet.
    pub fn front(&self) -> Option<(u64, NsOp)> {
        self.lock().ops.front().map(|q| (q.seq, q.op.clone()))
    }

    /// The oldest `n` operations the server does not have yet.
    pub fn front_n(&self, n: usize) -> Vec<Queued> {
        self.lock().ops.iter().take(n).cloned().collect()
    }

    /// The sequence number the next operation gets.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// Records that operation `seq` (the oldest) is done; an emptied log is truncated.
    pub fn done(&self, seq: u64) -> std::io::Result<()> {
        self.done_many(&[seq])
    }

    /// Records that the oldest operations `seqs` are done (one append); an emptied log is
    /// truncated (without a sync: a log that comes back holds only done operations, or ones
    /// whose replay is harmless again). They are done in memory even when the append fails
    /// (a full disk): at worst a restarted client sends them again, which is harmless.
    pub fn done_many(&self, seqs: &[u64]) -> std::io::Result<()> {
        let mut inner = self.lock();
        for seq in seqs {
            match inner.ops.front() {
                Some(q) if q.seq == *seq => {
                    inner.ops.pop_front();
                }
                _ => inner.ops.retain(|q| q.seq != *seq),
            }
        }
        if inner.ops.is_empty() {
            inner.file.set_len(0)?;
        } else {
            let mut bytes = Vec::new();
            for seq in seqs {
                bytes.extend(frame(&Entry::Done(*seq))?);
            }
            append_whole(&mut inner.file, &bytes)?;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every waiting operation, oldest first.
    pub fn ops(&self) -> Vec<NsOp> {
        self.lock().ops.iter().map(|q| q.op.clone()).collect()
    }
}

/// Operations waiting in the log of folder `dir` (read-only; for `shelf status`).
pub fn count(dir: &Path) -> usize {
    std::fs::read(log_path(dir))
        .map(|b| replay(&b).len())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(n: u64) -> NsOp {
        NsOp::SetAttr {
            node: n,
            mode: Some(0o600),
            uid: None,
            gid: None,
            atime: None,
            mtime: None,
        }
    }

    #[test]
    fn keeps_order_across_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = OpLog::open(dir.path().to_path_buf()).unwrap();
        for n in 0..5 {
            log.push(op(n), Timestamp::now()).unwrap();
        }
        let (first, _) = log.front().unwrap();
        log.done(first).unwrap();
        log.push(op(5), Timestamp::now()).unwrap();
        drop(log);
        assert_eq!(count(dir.path()), 5);
        // A torn last append is ignored.
        let path = dir.path().join("ops");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).unwrap();
        let log = OpLog::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(log.ops(), vec![op(1), op(2), op(3), op(4)]);
        // New entries continue after the surviving ones.
        let seq = log.push(op(9), Timestamp::now()).unwrap();
        assert!(seq > log.front().unwrap().0);
        while let Some((seq, _)) = log.front() {
            log.done(seq).unwrap();
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(count(dir.path()), 0);
    }
}

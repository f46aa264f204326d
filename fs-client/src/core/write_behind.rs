//! Write-behind: a large file's chunks go to the server while it is still being written.
//!
//! A file open for writing is watched; once its local copy has grown [`STEP`] past what was
//! sent, the next stretch (up to [`PASS`]) is chunked from the last cut point kept and the
//! chunks the server lacks are uploaded — no commit. Content-defined cut points depend only
//! on the bytes since the previous cut, so a pass that starts at a cut point of the whole
//! file finds the whole file's next cuts; each pass keeps all but its last chunk (cut by
//! the stretch's end, not by the content).
//!
//! Nothing here is trusted for a commit without a check: the kernel may rewrite the local
//! copy anywhere at any time (it writes it directly). The upload at close or `fsync` takes
//! the chunks sent ([`WriteBehind::sent_chunks`]) and reads them again, keeping each whose
//! bytes still hash to its id (no cut points to search, no question to the server), and
//! chunks the file from the first that does not. A 1 GiB `dd conv=fsync` then waits for
//! hashing and the tail, not for chunking and sending the whole file. A rewritten stretch
//! costs chunks sent for nothing, which the server's garbage collection drops like any
//! chunk no version names.

use super::FsCore;
use crate::sync::LockOrRecover;
use shelf_protocol::{ChunkRef, NodeId};
use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Files smaller than this are left to the upload at close.
const MIN_SIZE: u64 = 16 << 20;
/// Unsent growth that starts a pass.
const STEP: u64 = 8 << 20;
/// Bytes chunked per pass, at most.
const PASS: u64 = 32 << 20;
/// How often watched files are looked at.
const TICK: Duration = Duration::from_millis(200);

/// The files being watched, each with the chunks sent so far.
#[derive(Default)]
pub struct WriteBehind {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    sent: HashMap<NodeId, Sent>,
    stopping: bool,
}

/// The chunks of a file sent from its start, in order, up to the cut point `to`.
#[derive(Default)]
struct Sent {
    to: u64,
    chunks: Vec<ChunkRef>,
}

impl WriteBehind {
    /// Watches `node`, just opened for writing.
    pub fn watch(&self, node: NodeId) {
        self.state.lock_or_recover().sent.entry(node).or_default();
    }

    pub fn stop(&self) {
        self.state.lock_or_recover().stopping = true;
        self.wake.notify_all();
    }

    /// Waits a tick; the files watched then, or `None` once stopped.
    fn next_round(&self) -> Option<Vec<(NodeId, u64)>> {
        let mut st = self.state.lock_or_recover();
        if !st.stopping {
            st = self
                .wake
                .wait_timeout(st, TICK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        match st.stopping {
            true => None,
            false => Some(st.sent.iter().map(|(n, s)| (*n, s.to)).collect()),
        }
    }

    fn is_stopping(&self) -> bool {
        self.state.lock_or_recover().stopping
    }

    fn forget(&self, nodes: &HashSet<NodeId>) {
        if !nodes.is_empty() {
            self.state
                .lock_or_recover()
                .sent
                .retain(|n, _| !nodes.contains(n));
        }
    }

    /// Records the chunks a pass from `from` kept (`from` 0 starts the list again).
    fn set_sent(&self, node: NodeId, from: u64, kept: &[ChunkRef]) {
        if let Some(s) = self.state.lock_or_recover().sent.get_mut(&node) {
            if from == 0 || from != s.to {
                s.chunks.clear();
                s.to = 0;
            }
            if from == s.to {
                s.chunks.extend_from_slice(kept);
                s.to += kept.iter().map(|c| u64::from(c.len)).sum::<u64>();
            }
        }
    }

    /// The chunks sent of `node` from its start, in order (to be checked against the file).
    pub fn sent_chunks(&self, node: NodeId) -> Vec<ChunkRef> {
        self.state
            .lock_or_recover()
            .sent
            .get(&node)
            .map(|s| s.chunks.clone())
            .unwrap_or_default()
    }
}

/// What to do with a watched file this round.
enum Next {
    /// Closed, gone or failing: stop watching.
    Forget,
    Wait,
    /// Send `[from, to)` of this file.
    Send {
        file: std::sync::Arc<std::fs::File>,
        from: u64,
        to: u64,
    },
}

impl FsCore {
    /// The write-behind thread's loop (see the module notes).
    pub(crate) fn write_behind_loop(&self) {
        while let Some(watched) = self.write_behind.next_round() {
            let mut forget = HashSet::new();
            for (node, mut sent_to) in watched {
                // Pass after pass while the file keeps ahead.
                while let Some(to) = self.write_behind_pass(node, sent_to, &mut forget) {
                    sent_to = to;
                }
            }
            self.write_behind.forget(&forget);
        }
    }

    /// One pass over `node`; the new cut point when it sent something.
    fn write_behind_pass(
        &self,
        node: NodeId,
        sent_to: u64,
        forget: &mut HashSet<NodeId>,
    ) -> Option<u64> {
        if self.write_behind.is_stopping() {
            return None;
        }
        match self.write_behind_next(node, sent_to) {
            Next::Forget => {
                forget.insert(node);
                None
            }
            Next::Wait => None,
            Next::Send { file, from, to } => {
                let reader = super::upload::SnapshotReader::new(file, from, to);
                match crate::transfer::send_chunks(&self.remote, node, reader, &HashSet::new()) {
                    // All but the last chunk, which the stretch's end cut.
                    Ok(refs) if refs.len() > 1 => {
                        let kept = &refs[..refs.len() - 1];
                        self.write_behind.set_sent(node, from, kept);
                        Some(from + kept.iter().map(|c| u64::from(c.len)).sum::<u64>())
                    }
                    Ok(_) => {
                        forget.insert(node);
                        None
                    }
                    Err(e) => {
                        tracing::debug!(node, error = %e, "write-behind stopped; the upload at close sends it all");
                        forget.insert(node);
                        None
                    }
                }
            }
        }
    }

    fn write_behind_next(&self, node: NodeId, sent_to: u64) -> Next {
        let Some(st) = self.files.get(node) else {
            return Next::Forget;
        };
        let mut inner = st.lock();
        if inner.open_writers == 0 {
            return Next::Forget;
        }
        if inner.uploading {
            return Next::Wait;
        }
        let Some(staging) = inner.staging.as_mut() else {
            return Next::Wait;
        };
        let Ok(file) = staging.file() else {
            return Next::Forget;
        };
        drop(inner);
        // The kernel writes it directly: its size is the file's, not the one recorded.
        let Ok(size) = file.metadata().map(|m| m.len()) else {
            return Next::Forget;
        };
        // Cut back below what was sent: start again from the beginning.
        let from = if size < sent_to { 0 } else { sent_to };
        if size < MIN_SIZE || size < from + STEP {
            return Next::Wait;
        }
        Next::Send {
            file,
            from,
            to: size.min(from + PASS),
        }
    }
}

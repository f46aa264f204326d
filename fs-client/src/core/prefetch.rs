//! Read-ahead in the background: a sequential reader gets the chunks it asked for at once,
//! while the next ones are fetched by a prefetch thread into the chunk cache, so the
//! network stays busy between the reader's requests. A read that needs a chunk already on
//! its way waits for it instead of fetching it twice.

use super::FsCore;
use crate::remote::calls::ChunksTicket;
use crate::sync::LockOrRecover;
use shelf_protocol::{ChunkId, ChunkRef, NodeId};
use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Chunks being fetched ahead, and the batches waiting for the prefetch thread.
#[derive(Default)]
pub struct Prefetch {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    in_flight: HashSet<ChunkId>,
    /// Batches of one file's chunks each, oldest first.
    queue: VecDeque<(NodeId, Vec<ChunkRef>)>,
    /// A prefetch thread is serving the queue (a core without background threads, as in
    /// unit tests, reads without read-ahead).
    running: bool,
    stopping: bool,
}

/// Chunks the prefetch thread keeps on their way at once (~4 MiB).
const IN_FLIGHT_CHUNKS: usize = 64;
/// A reader never waits longer than this for a chunk being prefetched (then fetches it).
const WAIT_LIMIT: Duration = Duration::from_secs(30);

impl FsCore {
    fn prefetch_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.prefetch.state.lock_or_recover()
    }

    /// Queues `refs` (those not cached nor already on their way) for the prefetch thread.
    pub(crate) fn prefetch_chunks(&self, node: NodeId, refs: &[ChunkRef]) {
        let mut st = self.prefetch_state();
        if !st.running || st.stopping {
            return;
        }
        let todo: Vec<ChunkRef> = refs
            .iter()
            .filter(|r| !self.chunks.contains(&r.id) && !st.in_flight.contains(&r.id))
            .copied()
            .collect();
        if todo.is_empty() {
            return;
        }
        st.in_flight.extend(todo.iter().map(|r| r.id));
        st.queue.push_back((node, todo));
        self.prefetch.changed.notify_all();
    }

    /// Waits until none of `ids` is being prefetched (or the wait limit passes).
    pub(crate) fn wait_for_prefetch(&self, ids: &[ChunkId]) {
        let mut st = self.prefetch_state();
        let deadline = std::time::Instant::now() + WAIT_LIMIT;
        while ids.iter().any(|id| st.in_flight.contains(id)) {
            let now = std::time::Instant::now();
            if now >= deadline {
                return;
            }
            crate::blocking::about_to_block();
            st = self
                .prefetch
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The prefetch thread: keeps up to [`IN_FLIGHT_CHUNKS`] queued chunks on their way at
    /// once (requests of a few chunks each, sent without waiting for the ones before), and
    /// files each answer into the chunk cache as it comes, oldest first.
    pub(crate) fn prefetch_loop(&self) {
        self.prefetch_state().running = true;
        let mut out: VecDeque<(NodeId, Vec<ChunkRef>, ChunksTicket)> = VecDeque::new();
        let mut out_chunks = 0usize;
        loop {
            {
                let mut st = self.prefetch_state();
                loop {
                    if st.stopping {
                        st.running = false;
                        st.queue.clear();
                        st.in_flight.clear();
                        self.prefetch.changed.notify_all();
                        return;
                    }
                    while out_chunks < IN_FLIGHT_CHUNKS {
                        let Some((node, mut batch)) = st.queue.pop_front() else {
                            break;
                        };
                        let rest = batch.split_off(batch.len().min(IN_FLIGHT_CHUNKS - out_chunks));
                        if !rest.is_empty() {
                            st.queue.push_front((node, rest));
                        }
                        for group in batch.chunks(super::files::READ_BATCH_CHUNKS) {
                            let ids = group.iter().map(|r| r.id).collect();
                            let ticket = self.remote.submit_get_chunks(node, ids);
                            out_chunks += group.len();
                            out.push_back((node, group.to_vec(), ticket));
                        }
                    }
                    if !out.is_empty() {
                        break;
                    }
                    st = self
                        .prefetch
                        .changed
                        .wait(st)
                        .unwrap_or_else(|p| p.into_inner());
                }
            }
            let Some((_, group, ticket)) = out.pop_front() else {
                continue;
            };
            out_chunks -= group.len();
            if let Err(e) = self.file_fetched(&group, ticket) {
                tracing::debug!(error = %e, "read-ahead failed; readers fetch on their own");
            }
            let mut st = self.prefetch_state();
            for r in &group {
                st.in_flight.remove(&r.id);
            }
            self.prefetch.changed.notify_all();
        }
    }

    pub(crate) fn stop_prefetch(&self) {
        self.prefetch_state().stopping = true;
        self.prefetch.changed.notify_all();
    }
}

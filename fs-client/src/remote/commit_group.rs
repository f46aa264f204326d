//! Group commit on the client: commits that wait together go together.
//!
//! While one commit is out, the commits that arrive wait, and the next request carries all
//! of them as one [`Request::Batch`]: one round trip, one server transaction and one flush
//! for a burst of small files (an untar) instead of one each. A batch is only a faster way
//! to send: a commit the batch did not make (refused, not reached, an older server, a lost
//! connection) is sent again alone, where the server resolves conflicts and deletions.

use super::calls::Committed;
use super::{Remote, RemoteError};
use crate::sync::LockOrRecover;
use shelf_protocol::{Request, Stamped, Timestamp, MAX_BATCH};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

/// Inline chunk bytes in one batch, at most (a frame holds 8 MiB).
const MAX_BATCH_BYTES: usize = 4 << 20;

/// What became of a commit that went out in a group.
enum Outcome {
    Done(Result<Committed, RemoteError>),
    /// Not made by the batch: to be sent alone.
    Alone(Request),
}

#[derive(Default)]
struct State {
    next: u64,
    waiting: Vec<(u64, Request)>,
    done: HashMap<u64, Outcome>,
    /// A group is out.
    sending: bool,
}

#[derive(Default)]
pub(super) struct CommitGroup {
    state: Mutex<State>,
    sent: Condvar,
}

impl Remote {
    /// Sends a `Request::Commit`, together with the commits other threads send meanwhile.
    pub(super) fn commit_grouped(&self, req: Request) -> Result<Committed, RemoteError> {
        let group = &self.commits;
        let mut st = group.state.lock_or_recover();
        let me = st.next;
        st.next += 1;
        st.waiting.push((me, req));
        loop {
            if let Some(outcome) = st.done.remove(&me) {
                drop(st);
                return match outcome {
                    Outcome::Done(result) => result,
                    Outcome::Alone(req) => self.commit_alone(req),
                };
            }
            if st.sending {
                crate::blocking::about_to_block();
                st = group.sent.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // This thread sends the next group (its own commit may wait for a later one
            // when the group is full).
            st.sending = true;
            let take = group_len(&st.waiting);
            let batch: Vec<_> = st.waiting.drain(..take).collect();
            drop(st);
            let outcomes = self.send_group(batch);
            st = group.state.lock_or_recover();
            st.sending = false;
            st.done.extend(outcomes);
            group.sent.notify_all();
        }
    }

    fn send_group(&self, batch: Vec<(u64, Request)>) -> Vec<(u64, Outcome)> {
        if batch.len() == 1 {
            return batch
                .into_iter()
                .map(|(id, req)| (id, Outcome::Done(self.commit_alone(req))))
                .collect();
        }
        let at = Timestamp::now();
        let reqs = batch
            .iter()
            .map(|(_, req)| Stamped {
                at,
                req: req.clone(),
            })
            .collect();
        // Refused as a whole (an older server) or lost: each goes alone.
        let answers = self.batch(reqs).ok();
        batch
            .into_iter()
            .enumerate()
            .map(|(i, (id, req))| {
                let outcome = match answers.as_ref().and_then(|a| a.attr(i)) {
                    Some(a) => Outcome::Done(Ok(Committed::Made(a.clone()))),
                    None => Outcome::Alone(req),
                };
                (id, outcome)
            })
            .collect()
    }
}

/// How many of the waiting commits (from the front) one batch carries.
fn group_len(waiting: &[(u64, Request)]) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for (_, req) in waiting.iter().take(MAX_BATCH.min(256)) {
        let size = match req {
            Request::Commit { inline, .. } => inline.iter().map(|c| c.data.len()).sum(),
            _ => 0,
        };
        if n > 0 && bytes + size > MAX_BATCH_BYTES {
            break;
        }
        bytes += size;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelf_protocol::{ChunkBody, ChunkId};

    fn commit(inline_bytes: usize) -> Request {
        Request::Commit {
            node: 1,
            base_version: 0,
            chunks: Vec::new(),
            inline: vec![ChunkBody {
                id: ChunkId([0; 32]),
                data: vec![0; inline_bytes],
            }],
            mtime: Timestamp::now(),
            durable: false,
        }
    }

    #[test]
    fn a_group_holds_at_most_4_mib_of_content_and_256_commits_but_always_one() {
        let small: Vec<_> = (0..300).map(|i| (i, commit(1000))).collect();
        assert_eq!(group_len(&small), 256);
        let big: Vec<_> = (0..40).map(|i| (i, commit(256 << 10))).collect();
        assert_eq!(group_len(&big), 16);
        let huge = vec![(0, commit(6 << 20))];
        assert_eq!(group_len(&huge), 1);
        assert_eq!(group_len(&[]), 0);
    }
}

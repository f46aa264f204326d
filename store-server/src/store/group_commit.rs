//! Group commit: many threads that each need their change on disk share one flush.
//!
//! A caller needs a flush that *starts* after its change was applied. While one flush runs,
//! every caller that arrives waits for the next, and the first of them runs it for all: a
//! burst of N concurrent changes costs about two flushes instead of N.

use shelf_protocol::sync::LockOrRecover;
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Default)]
struct Rounds {
    /// Flushes started so far (the number of the latest).
    started: u64,
    /// The latest flush that ended.
    finished: u64,
    running: bool,
    /// The latest flush that failed: its number, OS error code and message.
    failed: Option<(u64, Option<i32>, String)>,
}

#[derive(Default)]
pub struct GroupCommit {
    rounds: Mutex<Rounds>,
    ended: Condvar,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, Rounds> {
        self.rounds.lock_or_recover()
    }

    /// Returns once a run of `flush` that started after this call began has ended, with
    /// that run's outcome.
    pub fn flush(&self, flush: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
        let mut g = self.lock();
        // A flush already running may have started before the caller's change.
        let need = g.started + 1;
        let mut flush = Some(flush);
        loop {
            if g.finished >= need {
                return match &g.failed {
                    Some((round, code, e)) if *round >= need => Err(match code {
                        Some(code) => std::io::Error::from_raw_os_error(*code),
                        None => std::io::Error::other(e.clone()),
                    }),
                    _ => Ok(()),
                };
            }
            if !g.running {
                let Some(run) = flush.take() else {
                    // Our own round ended without reaching `need` (cannot happen: rounds
                    // are numbered in order), so wait for the next one.
                    g = self.ended.wait(g).unwrap_or_else(|p| p.into_inner());
                    continue;
                };
                g.started += 1;
                let round = g.started;
                g.running = true;
                drop(g);
                let result = run();
                g = self.lock();
                g.running = false;
                g.finished = round;
                if let Err(e) = &result {
                    g.failed = Some((round, e.raw_os_error(), e.to_string()));
                }
                self.ended.notify_all();
                continue;
            }
            g = self.ended.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn concurrent_callers_share_flushes_and_each_sees_one_that_started_after_it() {
        let g = Arc::new(GroupCommit::default());
        let flushes = Arc::new(AtomicU64::new(0));
        // `applied` counts changes; a flush records how many it covers.
        let applied = Arc::new(AtomicU64::new(0));
        let covered = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (g, flushes, applied, covered) =
                    (g.clone(), flushes.clone(), applied.clone(), covered.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mine = applied.fetch_add(1, Ordering::SeqCst) + 1;
                        g.flush(|| {
                            let upto = applied.load(Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(2));
                            flushes.fetch_add(1, Ordering::SeqCst);
                            covered.fetch_max(upto, Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap();
                        // Durable: some flush that started after the change covered it.
                        assert!(covered.load(Ordering::SeqCst) >= mine);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = flushes.load(Ordering::SeqCst);
        assert!(n < 16 * 50 / 2, "{n} flushes for 800 changes");
    }

    #[test]
    fn a_failed_flush_is_reported_to_its_callers_and_the_next_one_succeeds() {
        let g = GroupCommit::default();
        let full = g.flush(|| Err(std::io::Error::from_raw_os_error(libc::ENOSPC)));
        assert_eq!(full.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
        g.flush(|| Ok(())).unwrap();
    }
}

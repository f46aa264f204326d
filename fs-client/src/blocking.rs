//! Which FUSE thread waits for the kernel's next request.
//!
//! Several FUSE threads serve a mount, but only one of them waits in the kernel's queue at a
//! time. The kernel hands each request to the thread that has waited longest, so with all of
//! them waiting every request woke a thread that had gone cold: on a 2-core machine a
//! 5,000-file untar ran at about 2,000 files/s with four threads waiting and 2,900 with one.
//!
//! [`Relay`] keeps one reader: a thread that finishes a request while another already waits
//! in the queue parks here instead of going back to it. A thread about to wait for the
//! network, for background work or for another process's lock calls [`about_to_block`],
//! which sends a parked thread back to the queue, so a slow request never holds up the
//! others. A parked thread also goes back on its own after [`PARK`], so that threads are
//! never stuck here when the mount ends. Threads that never entered a relay (uploaders,
//! the tests' callers) pass through [`about_to_block`] untouched.

use crate::sync::LockOrRecover;
use std::cell::RefCell;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a parked thread waits to be sent back before it goes back by itself.
pub const PARK: Duration = Duration::from_millis(100);

pub struct Relay {
    st: Mutex<State>,
    cv: Condvar,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct State {
    /// Threads waiting in (or on their way to) the kernel's queue.
    reading: usize,
    /// Threads parked here.
    parked: usize,
    /// Parked threads told to go back to the queue (already counted in `reading`).
    sent_back: usize,
}

thread_local! {
    /// The relay of the request this thread is serving, and whether it already sent a
    /// parked thread back during it.
    static SERVING: RefCell<Option<(Arc<Relay>, bool)>> = const { RefCell::new(None) };
}

impl Relay {
    /// A relay for `threads` threads, all of them waiting in the queue to begin with.
    pub fn new(threads: usize) -> Arc<Relay> {
        Arc::new(Relay {
            st: Mutex::new(State {
                reading: threads,
                ..State::default()
            }),
            cv: Condvar::new(),
        })
    }

    /// Called by a thread that took a request from the queue; the returned guard, dropped
    /// once the request is answered, parks the thread if another one is reading.
    pub fn serve(self: &Arc<Self>) -> Serving<'_> {
        {
            let mut s = self.st.lock_or_recover();
            s.reading = s.reading.saturating_sub(1);
        }
        SERVING.with(|c| {
            let mut c = c.borrow_mut();
            match c.as_mut() {
                Some((relay, released)) if Arc::ptr_eq(relay, self) => *released = false,
                _ => *c = Some((self.clone(), false)),
            }
        });
        Serving { relay: self }
    }

    /// Sends a parked thread back to the queue when nobody waits there.
    fn send_one_back(&self) {
        let mut s = self.st.lock_or_recover();
        if s.reading == 0 && s.parked > s.sent_back {
            s.sent_back += 1;
            s.reading += 1;
            self.cv.notify_one();
        }
    }

    /// The end of a request: back to the queue if nobody waits there, else park.
    fn done(&self) {
        let mut s = self.st.lock_or_recover();
        if s.reading == 0 {
            s.reading += 1;
            return;
        }
        s.parked += 1;
        let deadline = Instant::now() + PARK;
        loop {
            if s.sent_back > 0 {
                s.sent_back -= 1;
                s.parked -= 1;
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                s.parked -= 1;
                s.reading += 1;
                return;
            }
            s = self
                .cv
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    #[cfg(test)]
    fn state(&self) -> (usize, usize, usize) {
        let s = self.st.lock_or_recover();
        (s.reading, s.parked, s.sent_back)
    }
}

/// A request being served (see [`Relay::serve`]).
pub struct Serving<'a> {
    relay: &'a Relay,
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        SERVING.with(|c| {
            if let Some((_, released)) = c.borrow_mut().as_mut() {
                // Waits after the answer (none today) must not send anyone back.
                *released = true;
            }
        });
        self.relay.done();
    }
}

/// Tells the relay of the request this thread serves (if any) that the thread is about to
/// wait for something slow, so another thread takes the kernel's queue meanwhile. Cheap
/// when called again in the same request, or on a thread that serves no request.
pub fn about_to_block() {
    SERVING.with(|c| {
        if let Some((relay, released)) = c.borrow_mut().as_mut() {
            if !*released {
                *released = true;
                relay.send_one_back();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn one_thread_reads_while_the_others_park() {
        let relay = Relay::new(3);
        // Two requests served one after the other by two of the threads: the first one
        // parks (two others still read), the second parks too (one still reads).
        let (tx, rx) = mpsc::channel();
        for _ in 0..2 {
            let r = relay.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                drop(r.serve());
                tx.send(()).unwrap();
            });
        }
        std::thread::sleep(PARK / 4);
        assert_eq!(relay.state(), (1, 2, 0), "one reads, two park");
        assert!(rx.try_recv().is_err(), "parked threads have not gone back");
        // Parked threads go back by themselves after PARK.
        rx.recv_timeout(PARK * 20).unwrap();
        rx.recv_timeout(PARK * 20).unwrap();
        assert_eq!(relay.state(), (3, 0, 0));
    }

    #[test]
    fn a_thread_about_to_block_sends_a_parked_one_back() {
        let relay = Relay::new(2);
        // Thread A serves a request and parks (B still reads).
        let (tx, rx) = mpsc::channel();
        let r = relay.clone();
        std::thread::spawn(move || {
            drop(r.serve());
            tx.send(Instant::now()).unwrap();
        });
        std::thread::sleep(PARK / 4);
        assert_eq!(relay.state(), (1, 1, 0));
        // B takes a request and is about to wait for the network: A goes back at once.
        let serving = relay.serve();
        assert_eq!(relay.state(), (0, 1, 0));
        let asked = Instant::now();
        about_to_block();
        about_to_block(); // once per request
        let back = rx.recv_timeout(PARK * 20).unwrap();
        assert!(
            back.duration_since(asked) < PARK / 2,
            "sent back, not timed out"
        );
        assert_eq!(relay.state(), (1, 0, 0));
        // B's answer: A reads, so B parks, and goes back after PARK.
        let t0 = Instant::now();
        drop(serving);
        assert!(t0.elapsed() >= PARK);
        assert_eq!(relay.state(), (2, 0, 0));
    }

    #[test]
    fn threads_outside_a_request_are_not_affected() {
        let relay = Relay::new(1);
        about_to_block();
        assert_eq!(relay.state(), (1, 0, 0));
        // The last reader never parks.
        drop(relay.serve());
        assert_eq!(relay.state(), (1, 0, 0));
        about_to_block();
        assert_eq!(relay.state(), (1, 0, 0));
    }
}

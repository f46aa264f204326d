//! The mount's background work: uploader threads, the namespace sender, write-behind,
//! read-ahead, the pin keeper (pinned files kept complete, lock leases renewed) and the
//! syncer (the cache folder made durable about once a second, in one `syncfs`; traffic
//! figures for `shelf status`). [`FsCore::start_background`] starts them all,
//! [`FsCore::stop_background`] stops them all, [`FsCore::drain`] waits for their work.
//!
//! [`Background`] owns what the syncer is told: whether something was recorded in the
//! cache folder (a journal record, a queued change, a staging file closed) that is not
//! durable yet.

use super::{FsCore, FsError};
use shelf_protocol::{NodeId, Request};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often pinned files are checked for new versions and new files in pinned folders.
const PIN_REFRESH: Duration = Duration::from_secs(300);

/// What the syncer has to make durable.
#[derive(Default)]
pub struct Background {
    unsynced: AtomicBool,
}

impl Background {
    /// Something was recorded in the cache folder that is not durable yet: the syncer
    /// syncs it within about a second.
    pub fn note_unsynced(&self) {
        self.unsynced.store(true, Ordering::Release);
    }

    /// Whether something waits to be synced (and the flag cleared).
    fn take_unsynced(&self) -> bool {
        self.unsynced.swap(false, Ordering::AcqRel)
    }
}

impl FsCore {
    /// Starts `n` uploader threads, write-behind, read-ahead, the pin keeper, the namespace
    /// sender and the syncer. They stop with [`FsCore::stop_background`].
    pub fn start_background(self: &Arc<Self>, n: usize) -> Vec<std::thread::JoinHandle<()>> {
        let mut threads = Vec::new();
        for i in 0..n {
            threads.push(self.spawn(format!("shelf-upload-{i}"), FsCore::upload_loop));
        }
        threads.push(self.spawn("shelf-write-behind".into(), FsCore::write_behind_loop));
        threads.push(self.spawn("shelf-prefetch".into(), FsCore::prefetch_loop));
        // Not joined: it sleeps for minutes and holds nothing that needs a clean stop.
        drop(self.spawn("shelf-pins".into(), FsCore::pins_loop));
        threads.extend(self.start_sender());
        threads.push(self.spawn("shelf-sync".into(), FsCore::sync_loop));
        threads
    }

    /// Runs `work` on a thread of its own named `name`.
    fn spawn(self: &Arc<Self>, name: String, work: fn(&FsCore)) -> std::thread::JoinHandle<()> {
        let core = self.clone();
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || work(&core))
            .unwrap_or_else(|e| panic!("spawning the {name} thread: {e}"))
    }

    /// Starts the thread that sends namespace changes to the server (once; `None` when it
    /// runs already). It stops with [`FsCore::stop_background`].
    pub fn start_sender(self: &Arc<Self>) -> Option<std::thread::JoinHandle<()>> {
        if self.pending.sender_started.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(self.spawn("shelf-sender".into(), FsCore::replay_loop))
    }

    fn upload_loop(&self) {
        crate::cache::staging_files::yield_to_foreground();
        // Fault injection for tests: hold background uploads back so a test can kill the
        // client between close and upload. fsync still uploads.
        while std::env::var_os("SHELF_TEST_HOLD_UPLOADS").is_some() && !self.queue.is_stopping() {
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut backoff =
            shelf_protocol::sync::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        while let Some(node) = self.queue.pop() {
            match self.upload(node, false) {
                Ok(()) => {
                    backoff.reset();
                    self.note_upload(node, None);
                }
                Err(e) if super::refused::permanent_refusal(&e).is_some() => {
                    // Retrying cannot help: the content is kept elsewhere, the queue moves on.
                    if let Some(code) = super::refused::permanent_refusal(&e) {
                        self.keep_refused(node, code);
                    }
                    self.note_upload(node, None);
                }
                Err(e) => {
                    self.note_upload(node, Some(&e));
                    // Any other failure leaves the file journaled to be tried again (it may
                    // be temporary, like a full server or a session being resumed);
                    // `shelf status` raises an alert if it keeps failing.
                    let wait = backoff.next_wait();
                    tracing::warn!(node, error = %e, retry_in = ?wait, "upload failed; it stays journaled");
                    self.queue.pause(wait);
                    self.queue.push(node);
                }
            }
            self.queue.done();
        }
    }

    /// Records an upload's outcome; failures are kept (with how often and since when) in
    /// `CACHE/failures`, which `shelf status` turns into an alert.
    pub(crate) fn note_upload(&self, node: NodeId, error: Option<&FsError>) {
        let changed = match error {
            None => self.failures.succeeded(node),
            Some(e) => {
                let (count, list) = self.failures.failed(node, e.to_string());
                // One line in `shelf events` per failing file, when the alert starts.
                if count == crate::cache::ALERT_AFTER {
                    self.note_event("failed", node, &format!("upload: {e}; retrying"));
                }
                // The server (when it answers) tells the account's devices and the admins;
                // again every 20 failures, in case it was unreachable the first time.
                if count >= crate::cache::ALERT_AFTER
                    && (count - crate::cache::ALERT_AFTER).is_multiple_of(20)
                {
                    drop(self.remote.submit(Request::ReportSyncFailure {
                        path: self.known_path(node),
                        error: e.to_string(),
                    }));
                }
                Some(list)
            }
        };
        if let Some(list) = changed {
            crate::cache::set_upload_failures(&self.cache.root, &list);
        }
    }

    /// Keeps pinned files complete (at start, then every few minutes) and held lock
    /// leases alive.
    fn pins_loop(&self) {
        let mut renewed = std::time::Instant::now();
        loop {
            if self.pins.any() {
                if let Err(e) = self.refresh_pins() {
                    tracing::warn!(error = %e, "refreshing pinned files failed; retrying later");
                }
            }
            for _ in 0..(PIN_REFRESH.as_millis() / 500) {
                if self.queue.is_stopping() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
                if renewed.elapsed() >= super::locks::RENEW_EVERY {
                    self.renew_locks();
                    renewed = std::time::Instant::now();
                }
            }
        }
    }

    fn sync_loop(&self) {
        let mut reported = (u64::MAX, u64::MAX);
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let traffic = self.remote.traffic.totals();
            if traffic != reported {
                crate::cache::set_traffic(&self.cache.root, traffic);
                reported = traffic;
            }
            if self.background.take_unsynced() {
                if let Err(e) = self.cache.syncfs() {
                    tracing::error!(error = %e, "syncing the cache folder failed");
                    self.background.note_unsynced();
                }
            }
            if self.queue.is_stopping() {
                let _ = self.cache.syncfs();
                return;
            }
        }
    }

    /// Stops the uploader, replayer and syncer threads (after a final sync).
    pub fn stop_background(&self) {
        self.queue.stop();
        self.pending.stop();
        self.stop_prefetch();
        self.write_behind.stop();
    }

    /// Sends every queued change and upload, waiting up to `timeout`. Returns how many
    /// changes and files are left.
    pub fn drain(&self, timeout: Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        if !self.wait_changes_sent(Some(timeout)) {
            return self.pending.len() + self.queue.pending();
        }
        self.queue
            .wait_idle(deadline.saturating_duration_since(std::time::Instant::now()))
    }
}

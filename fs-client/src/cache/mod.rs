//! The per-account cache folder of a mount:
//!
//! ```text
//! CACHE/chunks/<hex>     downloaded chunk bodies, LRU-bounded by bytes (chunks.rs)
//! CACHE/staging/<node>   local copies of files being written or recently written
//! CACHE/spare/<n>        empty files ready to become staging files (staging_files.rs)
//! CACHE/journal/log      append-only log of files whose close has returned but whose
//!                        upload has not been committed (journal.rs)
//! CACHE/lock             flock'd by the mount using the folder
//! CACHE/io-mode          "local" or "relayed": how the mount does file I/O (for status)
//! CACHE/traffic          bytes sent and received by the mount so far (for status)
//! CACHE/failures         uploads that keep failing (for the alert in status)
//! ```

pub mod chunks;
pub mod journal;
pub mod leases;
pub mod oplog;
pub mod staging_files;

use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

pub struct CacheDir {
    pub root: PathBuf,
    _lock: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the cache folder {0} is in use by another shelf mount")]
    InUse(PathBuf),
    #[error("cache folder {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl CacheDir {
    /// Creates the folder layout and takes the folder's lock.
    pub fn open(root: &Path) -> Result<CacheDir, CacheError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        for sub in ["chunks", "staging", "journal"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
        }
        let lock_path = root.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        // SAFETY: flock on a valid fd we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(CacheError::InUse(root.to_path_buf()));
        }
        Ok(CacheDir {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn chunks(&self) -> PathBuf {
        self.root.join("chunks")
    }
    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }
    pub fn journal(&self) -> PathBuf {
        self.root.join("journal")
    }

    /// Flushes everything written to the cache filesystem (one syscall for a batch of closes).
    pub fn syncfs(&self) -> std::io::Result<()> {
        let f = std::fs::File::open(&self.root)?;
        // SAFETY: syncfs on a valid fd we own.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Records how the mount does file I/O, for `shelf status`.
pub fn set_io_mode(root: &Path, mode: &str) {
    let _ = std::fs::write(root.join("io-mode"), format!("{mode}\n"));
}

/// What [`set_io_mode`] recorded.
pub fn io_mode(root: &Path) -> Option<String> {
    std::fs::read_to_string(root.join("io-mode"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Records the mount's bytes sent and received (written twice a second when they change).
pub fn set_traffic(root: &Path, (sent, received): (u64, u64)) {
    let _ = std::fs::write(root.join("traffic"), format!("{sent} {received}\n"));
}

/// What [`set_traffic`] recorded: (sent, received).
pub fn traffic(root: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(root.join("traffic")).ok()?;
    let mut it = text.split_whitespace().map(|n| n.parse().ok());
    Some((it.next()??, it.next()??))
}

/// Failed attempts in a row after which an upload is reported (`ALERT` in `shelf status`,
/// a `failed` line in `shelf events`).
pub const ALERT_AFTER: u32 = 3;

/// A background upload that failed, as `shelf status` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadFailure {
    pub node: u64,
    /// Failed attempts in a row.
    pub count: u32,
    /// Unix seconds of the first failure.
    pub since: u64,
    pub error: String,
}

/// Records the failing uploads (an empty list removes the file).
pub fn set_upload_failures(root: &Path, list: &[UploadFailure]) {
    let path = root.join("failures");
    if list.is_empty() {
        let _ = std::fs::remove_file(path);
        return;
    }
    let text: String = list
        .iter()
        .map(|f| {
            let error = f.error.replace(['\n', '\t'], " ");
            format!("{}\t{}\t{}\t{error}\n", f.node, f.count, f.since)
        })
        .collect();
    let _ = std::fs::write(path, text);
}

/// What [`set_upload_failures`] recorded.
pub fn upload_failures(root: &Path) -> Vec<UploadFailure> {
    let text = std::fs::read_to_string(root.join("failures")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(4, '\t');
            Some(UploadFailure {
                node: it.next()?.parse().ok()?,
                count: it.next()?.parse().ok()?,
                since: it.next()?.parse().ok()?,
                error: it.next()?.to_string(),
            })
        })
        .collect()
}

/// One of this device's own events (an upload that failed, a pinned file downloaded, a
/// change made offline that could not be applied), for `shelf events` beside the server's
/// feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEvent {
    /// Unix seconds.
    pub at: i64,
    pub what: String,
    pub path: String,
    pub detail: String,
}

/// Largest size of the local event log before its older half is dropped.
const EVENTS_MAX: u64 = 1 << 20;

/// Appends a line to `CACHE/events` (tab-separated: time, what, path, detail).
pub fn append_event(root: &Path, what: &str, path: &str, detail: &str) {
    use std::io::Write;
    let path_file = root.join("events");
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let clean = |s: &str| s.replace(['\n', '\t'], " ");
    let line = format!("{at}\t{what}\t{}\t{}\n", clean(path), clean(detail));
    if std::fs::metadata(&path_file).is_ok_and(|m| m.len() > EVENTS_MAX) {
        if let Ok(text) = std::fs::read_to_string(&path_file) {
            let keep = text.len() / 2;
            let cut = text[keep..]
                .find('\n')
                .map(|i| keep + i + 1)
                .unwrap_or(text.len());
            let _ = std::fs::write(&path_file, &text[cut..]);
        }
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path_file)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// The events [`append_event`] recorded, from byte `from` of the log on, and where the log
/// ends (to continue from).
pub fn local_events(root: &Path, from: u64) -> (Vec<LocalEvent>, u64) {
    let text = std::fs::read(root.join("events")).unwrap_or_default();
    // A log cut shorter since (its old half dropped) is read from its start.
    let from = if from as usize > text.len() {
        0
    } else {
        from as usize
    };
    let end = text[from..]
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|i| from + i + 1)
        .unwrap_or(from);
    let events = String::from_utf8_lossy(&text[from..end])
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(4, '\t');
            Some(LocalEvent {
                at: it.next()?.parse().ok()?,
                what: it.next()?.to_string(),
                path: it.next()?.to_string(),
                detail: it.next().unwrap_or_default().to_string(),
            })
        })
        .collect();
    (events, end as u64)
}

/// Number of pending uploads recorded in a cache folder (for `shelf status` and `umount`).
pub fn pending_uploads(root: &Path) -> usize {
    journal::count(&root.join("journal"))
}

/// Namespace changes (creates, renames, deletes, …) made offline and not yet on the server.
pub fn pending_changes(root: &Path) -> usize {
    oplog::count(&root.join("journal"))
}

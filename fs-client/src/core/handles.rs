//! Open handles: the numbers the kernel holds for each open file and directory, and what
//! each stands for (a file, or an old version of one; a listing as it was read).

use super::files::Handle;
use super::DirItem;
use crate::sync::LockOrRecover;
use shelf_protocol::NodeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A directory listing read at open, with the epoch of pushed changes it was read at.
pub(crate) type OpenDir = (Arc<Vec<DirItem>>, u64);

pub(crate) struct Handles {
    files: Mutex<HashMap<u64, Handle>>,
    dirs: Mutex<HashMap<u64, OpenDir>>,
    next: AtomicU64,
}

impl Default for Handles {
    fn default() -> Handles {
        Handles {
            files: Mutex::default(),
            dirs: Mutex::default(),
            next: AtomicU64::new(1),
        }
    }
}

impl Handles {
    fn number(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// A new handle for an open file.
    pub fn open_file(&self, handle: Handle) -> u64 {
        let fh = self.number();
        self.files.lock_or_recover().insert(fh, handle);
        fh
    }

    /// The file `fh` stands for: (node, writable, where the last read ended).
    pub fn file(&self, fh: u64) -> Option<(NodeId, bool, u64)> {
        let files = self.files.lock_or_recover();
        files.get(&fh).map(|h| (h.node, h.writable, h.last_end))
    }

    /// The old version `fh` reads, if it is one (a file in `.versions/`).
    pub fn version(&self, fh: u64) -> Option<u64> {
        self.files
            .lock_or_recover()
            .get(&fh)
            .and_then(|h| h.version)
    }

    /// Notes that a read of `fh` ended at `end`; returns the old version it reads, if any.
    pub fn read_to(&self, fh: u64, end: u64) -> Option<u64> {
        let mut files = self.files.lock_or_recover();
        let h = files.get_mut(&fh)?;
        h.last_end = end;
        h.version
    }

    /// Notes that `owner` took a POSIX lock through `fh`, if `fh` is read-only (its close
    /// is not reported; the lock goes when it is released).
    pub fn note_lock_owner(&self, fh: u64, owner: u64) {
        let mut files = self.files.lock_or_recover();
        if let Some(h) = files.get_mut(&fh).filter(|h| !h.writable) {
            if !h.lock_owners.contains(&owner) {
                h.lock_owners.push(owner);
            }
        }
    }

    /// Closes `fh`: what it stood for.
    pub fn close_file(&self, fh: u64) -> Option<Handle> {
        self.files.lock_or_recover().remove(&fh)
    }

    /// A new handle for a listing read at `epoch`.
    pub fn open_dir(&self, items: Vec<DirItem>, epoch: u64) -> u64 {
        let fh = self.number();
        self.dirs
            .lock_or_recover()
            .insert(fh, (Arc::new(items), epoch));
        fh
    }

    /// The listing `fh` stands for.
    pub fn dir(&self, fh: u64) -> Option<OpenDir> {
        self.dirs.lock_or_recover().get(&fh).cloned()
    }

    pub fn close_dir(&self, fh: u64) {
        self.dirs.lock_or_recover().remove(&fh);
    }
}

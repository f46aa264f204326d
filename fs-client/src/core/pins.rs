//! Pinned files: kept fully in the chunk cache for offline use (`shelf pin PATH`).
//!
//! The CLI pins through the mount with the reserved extended attribute `user.shelf.pin`
//! (never stored on the server, never listed): setting it on a file downloads every chunk of
//! the file's current version and keeps them out of the cache's eviction order; on a folder
//! it records the folder, so files that appear in it later are pinned when the mount
//! refreshes its pins (at start and every few minutes). Removing it unpins. Pins live in
//! `CACHE/pins`, one `file NODE` or `folder NODE` per line.

use super::{FsCore, FsError};
use crate::sync::LockOrRecover;
use shelf_protocol::{NodeId, NodeKind};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The reserved extended attribute that pins.
pub const PIN_XATTR: &str = "user.shelf.pin";
/// Reserved prefix: never stored on the server.
pub const RESERVED_XATTR_PREFIX: &str = "user.shelf.";
/// Setting it (on any node; the value is ignored) returns once every namespace change made
/// in the mount so far is on the server: at once with EAGAIN while the server cannot be
/// reached, EAGAIN after 10 s otherwise. How `shelf` commands see the mount's changes.
pub const SYNC_XATTR: &str = "user.shelf.sync";

/// The pinned files and folders, saved in `CACHE/pins` at every change: owns its lock.
pub struct Pins {
    path: PathBuf,
    set: Mutex<PinSet>,
}

#[derive(Default)]
struct PinSet {
    files: BTreeSet<NodeId>,
    folders: BTreeSet<NodeId>,
}

impl PinSet {
    fn load(path: &Path) -> PinSet {
        let mut pins = PinSet::default();
        let Ok(text) = std::fs::read_to_string(path) else {
            return pins;
        };
        for line in text.lines() {
            let mut it = line.split_whitespace();
            match (it.next(), it.next().and_then(|n| n.parse().ok())) {
                (Some("file"), Some(n)) => {
                    pins.files.insert(n);
                }
                (Some("folder"), Some(n)) => {
                    pins.folders.insert(n);
                }
                _ => tracing::warn!(line, "ignoring a bad line in the pins file"),
            }
        }
        pins
    }

    fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut text = String::new();
        for n in &self.files {
            text.push_str(&format!("file {n}\n"));
        }
        for n in &self.folders {
            text.push_str(&format!("folder {n}\n"));
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, path)
    }
}

impl Pins {
    /// The pins saved at `path` (none if it is missing).
    pub fn load(path: &Path) -> Pins {
        Pins {
            path: path.to_path_buf(),
            set: Mutex::new(PinSet::load(path)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PinSet> {
        self.set.lock_or_recover()
    }

    pub fn contains(&self, node: NodeId) -> bool {
        let p = self.lock();
        p.files.contains(&node) || p.folders.contains(&node)
    }

    /// Whether anything is pinned.
    pub fn any(&self) -> bool {
        let p = self.lock();
        !p.files.is_empty() || !p.folders.is_empty()
    }

    pub fn files(&self) -> Vec<NodeId> {
        self.lock().files.iter().copied().collect()
    }

    pub fn folders(&self) -> Vec<NodeId> {
        self.lock().folders.iter().copied().collect()
    }

    /// Pins a file or a folder and saves.
    fn add(&self, node: NodeId, kind: NodeKind) -> Result<(), FsError> {
        let mut pins = self.lock();
        match kind {
            NodeKind::File => pins.files.insert(node),
            NodeKind::Dir => pins.folders.insert(node),
            _ => return Err(FsError::Invalid),
        };
        Ok(pins.save(&self.path)?)
    }

    /// Unpins and saves; false if it was not pinned.
    fn remove(&self, node: NodeId) -> Result<bool, FsError> {
        let mut pins = self.lock();
        let was = pins.files.remove(&node) | pins.folders.remove(&node);
        if was {
            pins.save(&self.path)?;
        }
        Ok(was)
    }

    /// Pins these files too (found in pinned folders) and saves if that changed anything.
    fn add_files(&self, found: Vec<NodeId>) -> Result<(), FsError> {
        let mut pins = self.lock();
        let before = pins.files.len();
        pins.files.extend(found);
        if pins.files.len() != before {
            pins.save(&self.path)?;
        }
        Ok(())
    }
}

impl FsCore {
    pub(crate) fn is_pinned(&self, node: NodeId) -> bool {
        self.pins.contains(node)
    }

    /// Pins a file (downloading what is missing) or a folder.
    pub(crate) fn pin(&self, node: NodeId) -> Result<(), FsError> {
        let attr = self.server_attr(node)?;
        self.pins.add(node, attr.kind)?;
        if attr.kind == NodeKind::File {
            self.fetch_pinned()?;
        }
        Ok(())
    }

    pub(crate) fn unpin(&self, node: NodeId) -> Result<(), FsError> {
        if !self.pins.remove(node)? {
            return Err(FsError::NoAttribute);
        }
        self.fetch_pinned()
    }

    /// Pins every file below the pinned folders, then makes the chunk cache hold every chunk
    /// of every pinned file's current version, downloading what is missing.
    pub fn refresh_pins(&self) -> Result<(), FsError> {
        let folders = self.pins.folders();
        let mut found = Vec::new();
        for f in folders {
            self.files_below(f, &mut found)?;
        }
        if !found.is_empty() {
            self.pins.add_files(found)?;
        }
        self.fetch_pinned()
    }

    fn files_below(&self, dir: NodeId, out: &mut Vec<NodeId>) -> Result<(), FsError> {
        let mut after = None;
        loop {
            let crate::remote::calls::DirPage { entries, more } =
                self.remote.read_dir(dir, after.clone(), 1024)?;
            after = entries.last().map(|e| e.name.clone());
            for e in entries {
                self.seen.remember(dir, &e.name, e.attr.node);
                match e.attr.kind {
                    NodeKind::File => out.push(e.attr.node),
                    NodeKind::Dir => self.files_below(e.attr.node, out)?,
                    _ => {}
                }
            }
            if !more || after.is_none() {
                return Ok(());
            }
        }
    }

    /// Recomputes the pinned chunk set and downloads what is missing.
    fn fetch_pinned(&self) -> Result<(), FsError> {
        let files = self.pins.files();
        let mut want = HashSet::new();
        let mut per_file = Vec::new();
        for node in files {
            self.forget_attr(node);
            // The list alone: what is missing is fetched (and reported) below.
            let m = match self.manifest_with(node, false) {
                Ok(m) => m,
                // Deleted meanwhile: nothing to keep.
                Err(e) if e.errno() == libc::ENOENT => continue,
                Err(e) => return Err(e),
            };
            want.extend(m.chunks.iter().map(|c| c.id));
            per_file.push((node, m));
        }
        self.chunks.set_pinned(want);
        let mut missing: HashSet<_> = self.chunks.missing_pinned().into_iter().collect();
        for (node, m) in per_file {
            let todo: Vec<_> = m
                .chunks
                .iter()
                .filter(|r| missing.remove(&r.id))
                .copied()
                .collect();
            if todo.is_empty() {
                continue;
            }
            for batch in todo.chunks(64) {
                self.fetch_chunks(node, batch)?;
            }
            let bytes: u64 = todo.iter().map(|r| u64::from(r.len)).sum();
            self.note_event(
                "downloaded",
                node,
                &format!("pinned, {bytes} bytes fetched"),
            );
        }
        // Pinned means on this disk: the chunk cache's writer is waited for.
        self.chunks.flush();
        Ok(())
    }
}

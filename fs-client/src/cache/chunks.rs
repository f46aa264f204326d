//! The on-disk chunk cache: one file per chunk, named by its id, bounded in bytes and evicted
//! least-recently-used first (the `lru` crate keeps the order). Only verified chunks are
//! written here (the caller checks the BLAKE3 id of every downloaded body), and a write is
//! tmp-file-then-rename, so a killed client never leaves a torn chunk.
//!
//! Chunks of pinned files (`shelf pin`) are kept apart from the LRU order and never
//! evicted; they do not count against the byte budget.
//!
//! Files are written by a background thread (creating a file costs ext4 far more than a
//! small read that fetched it: a cold read of 5,000 small files spent most of its time
//! there): [`ChunkCache::put`] returns at once and [`ChunkCache::get`] finds a body waiting
//! to be written in memory. Past [`MAX_WAITING`] bytes waiting, `put` writes itself.

use crate::sync::LockOrRecover;
use lru::LruCache;
use shelf_protocol::ChunkId;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

/// Bytes of bodies waiting for the writer, at most.
const MAX_WAITING: u64 = 64 << 20;

pub struct ChunkCache {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    capacity: u64,
    inner: Mutex<Inner>,
    /// Signals bodies to write (to the writer), and bodies written (to `flush`).
    written: Condvar,
}

struct Inner {
    /// Evictable chunks and their sizes, least recently used first.
    lru: LruCache<ChunkId, u64>,
    /// Bytes of the evictable chunks.
    bytes: u64,
    /// Chunks of pinned files that are on disk, with their sizes.
    pinned: HashMap<ChunkId, u64>,
    /// Every chunk pinned files need.
    want: HashSet<ChunkId>,
    /// The most recently read bodies, so a chunk read in several kernel-sized pieces is read
    /// from disk once.
    hot: LruCache<ChunkId, Arc<Vec<u8>>>,
    /// Bodies waiting for the writer, oldest first, and their bytes.
    waiting: std::collections::VecDeque<(ChunkId, Arc<Vec<u8>>)>,
    waiting_ids: HashMap<ChunkId, Arc<Vec<u8>>>,
    waiting_bytes: u64,
    /// A body the writer is writing now.
    writing: Option<(ChunkId, Arc<Vec<u8>>)>,
    stopping: bool,
}

impl ChunkCache {
    /// Opens the cache, indexing the chunks already on disk.
    pub fn open(dir: PathBuf, capacity: u64) -> std::io::Result<ChunkCache> {
        let mut lru = LruCache::unbounded();
        let mut bytes = 0;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            match ChunkId::from_hex(&name) {
                Some(id) => {
                    let len = entry.metadata()?.len();
                    bytes += len;
                    lru.put(id, len);
                }
                None => {
                    // Leftover temporary file of a killed client.
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let shared = Arc::new(Shared {
            dir,
            capacity,
            inner: Mutex::new(Inner {
                lru,
                bytes,
                pinned: HashMap::new(),
                want: HashSet::new(),
                hot: LruCache::new(std::num::NonZeroUsize::new(32).expect("nonzero")),
                waiting: Default::default(),
                waiting_ids: HashMap::new(),
                waiting_bytes: 0,
                writing: None,
                stopping: false,
            }),
            written: Condvar::new(),
        });
        shared.evict();
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("shelf-chunks".into())
            .spawn(move || writer.write_loop())?;
        Ok(ChunkCache { shared })
    }

    pub fn get(&self, id: &ChunkId) -> Option<Arc<Vec<u8>>> {
        self.shared.get(id)
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.shared.contains(id)
    }

    /// Stores a verified body (in the background; see the module's notes). A full disk is
    /// not an error for the caller: the chunk is simply not cached.
    pub fn put(&self, id: &ChunkId, body: Arc<Vec<u8>>) {
        let s = &self.shared;
        let mut inner = s.lock();
        inner.hot.put(*id, body.clone());
        if inner.lru.contains(id)
            || inner.pinned.contains_key(id)
            || inner.waiting_ids.contains_key(id)
        {
            return;
        }
        if inner.waiting_bytes >= MAX_WAITING {
            drop(inner);
            s.store(id, &body);
            return;
        }
        inner.waiting_bytes += body.len() as u64;
        inner.waiting_ids.insert(*id, body.clone());
        inner.waiting.push_back((*id, body));
        drop(inner);
        s.written.notify_all();
    }

    /// Waits until every body put so far is on disk.
    pub fn flush(&self) {
        let s = &self.shared;
        let mut inner = s.lock();
        while !inner.waiting.is_empty() || inner.writing.is_some() {
            crate::blocking::about_to_block();
            inner = s.written.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub fn set_pinned(&self, ids: HashSet<ChunkId>) {
        self.shared.set_pinned(ids)
    }

    pub fn missing_pinned(&self) -> Vec<ChunkId> {
        self.shared.missing_pinned()
    }

    pub fn pinned_bytes(&self) -> u64 {
        self.shared.pinned_bytes()
    }

    /// Bytes of the evictable chunks on disk.
    pub fn bytes(&self) -> u64 {
        self.shared.lock().bytes
    }
}

impl Drop for ChunkCache {
    /// The writer finishes what waits, then stops.
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.written.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The client's one policy for poisoned locks (see `crate::sync`).
        self.inner.lock_or_recover()
    }

    fn write_loop(&self) {
        super::staging_files::yield_to_foreground();
        loop {
            let mut inner = self.lock();
            let (id, body) = loop {
                if let Some(next) = inner.waiting.pop_front() {
                    break next;
                }
                if inner.stopping {
                    return;
                }
                inner = self.written.wait(inner).unwrap_or_else(|p| p.into_inner());
            };
            inner.writing = Some((id, body.clone()));
            drop(inner);
            self.store(&id, &body);
            let mut inner = self.lock();
            inner.writing = None;
            inner.waiting_ids.remove(&id);
            inner.waiting_bytes -= body.len() as u64;
            drop(inner);
            self.written.notify_all();
        }
    }

    fn path(&self, id: &ChunkId) -> PathBuf {
        self.dir.join(id.to_hex())
    }

    fn get(&self, id: &ChunkId) -> Option<Arc<Vec<u8>>> {
        {
            let mut inner = self.lock();
            if let Some(body) = inner.hot.get(id) {
                let body = body.clone();
                inner.lru.get(id);
                return Some(body);
            }
            if let Some(body) = inner.waiting_ids.get(id) {
                return Some(body.clone());
            }
            if let Some((w, body)) = &inner.writing {
                if w == id {
                    return Some(body.clone());
                }
            }
            if !inner.pinned.contains_key(id) {
                inner.lru.get(id)?;
            }
        }
        match std::fs::read(self.path(id)) {
            Ok(body) => {
                let body = Arc::new(body);
                {
                    let mut inner = self.inner.lock_or_recover();
                    inner.hot.put(*id, body.clone());
                }
                Some(body)
            }
            Err(_) => {
                {
                    let mut inner = self.inner.lock_or_recover();
                    if let Some(len) = inner.lru.pop(id) {
                        inner.bytes -= len;
                    }
                    inner.pinned.remove(id);
                }
                None
            }
        }
    }

    fn contains(&self, id: &ChunkId) -> bool {
        let i = self.lock();
        i.lru.contains(id) || i.pinned.contains_key(id) || i.waiting_ids.contains_key(id)
    }

    /// Writes a body to its file and accounts for it.
    fn store(&self, id: &ChunkId, body: &[u8]) {
        let tmp = self.dir.join(format!("{}.tmp", id.to_hex()));
        let ok = std::fs::write(&tmp, body).and_then(|_| std::fs::rename(&tmp, self.path(id)));
        if let Err(e) = ok {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(error = %e, "could not store a chunk in the cache");
            return;
        }
        {
            let mut inner = self.inner.lock_or_recover();
            let len = body.len() as u64;
            if inner.want.contains(id) {
                inner.pinned.insert(*id, len);
            } else {
                inner.bytes += len;
                inner.lru.put(*id, len);
            }
        }
        self.evict();
    }

    /// Makes `ids` the pinned chunks: those on disk leave the LRU order, chunks no longer
    /// pinned join it (as most recently used) and may be evicted.
    fn set_pinned(&self, ids: HashSet<ChunkId>) {
        {
            let mut inner = self.inner.lock_or_recover();
            let released: Vec<(ChunkId, u64)> = inner
                .pinned
                .iter()
                .filter(|(id, _)| !ids.contains(id))
                .map(|(id, len)| (*id, *len))
                .collect();
            for (id, len) in released {
                inner.pinned.remove(&id);
                inner.bytes += len;
                inner.lru.put(id, len);
            }
            for id in &ids {
                if let Some(len) = inner.lru.pop(id) {
                    inner.bytes -= len;
                    inner.pinned.insert(*id, len);
                }
            }
            inner.want = ids;
        }
        self.evict();
    }

    /// Pinned chunks not on disk yet (nor waiting to be written).
    fn missing_pinned(&self) -> Vec<ChunkId> {
        let i = self.lock();
        i.want
            .iter()
            .filter(|id| !i.pinned.contains_key(id) && !i.waiting_ids.contains_key(id))
            .copied()
            .collect()
    }

    /// Bytes of pinned chunks on disk.
    fn pinned_bytes(&self) -> u64 {
        self.lock().pinned.values().sum()
    }

    fn evict(&self) {
        let mut victims = Vec::new();
        {
            let mut inner = self.inner.lock_or_recover();
            while inner.bytes > self.capacity {
                let Some((id, len)) = inner.lru.pop_lru() else {
                    break;
                };
                inner.bytes -= len;
                inner.hot.pop(&id);
                victims.push(id);
            }
        }
        for id in victims {
            let _ = std::fs::remove_file(self.path(&id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_beyond_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(dir.path().to_path_buf(), 250).unwrap();
        let ids: Vec<ChunkId> = (0..3u8).map(|i| ChunkId([i; 32])).collect();
        cache.put(&ids[0], Arc::new(vec![0; 100]));
        cache.put(&ids[1], Arc::new(vec![1; 100]));
        cache.flush();
        assert!(cache.get(&ids[0]).is_some()); // 0 is now more recent than 1
        cache.put(&ids[2], Arc::new(vec![2; 100]));
        cache.flush();
        assert!(cache.contains(&ids[0]));
        assert!(!cache.contains(&ids[1]), "least recently used is evicted");
        assert!(cache.contains(&ids[2]));
        assert!(cache.bytes() <= 250);
        drop(cache);
        let reopened = ChunkCache::open(dir.path().to_path_buf(), 250).unwrap();
        assert_eq!(reopened.bytes(), 200);
        assert_eq!(reopened.get(&ids[2]).unwrap().as_slice(), &[2u8; 100][..]);
    }

    #[test]
    fn a_body_waiting_to_be_written_is_read_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(dir.path().to_path_buf(), 1 << 20).unwrap();
        let ids: Vec<ChunkId> = (0..40u8).map(|i| ChunkId([i; 32])).collect();
        for (i, id) in ids.iter().enumerate() {
            cache.put(id, Arc::new(vec![i as u8; 1000]));
        }
        // More than the hot set holds: the oldest come from the waiting queue or the disk.
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(cache.get(id).unwrap().as_slice(), &vec![i as u8; 1000][..]);
        }
        cache.flush();
        assert_eq!(cache.bytes(), 40 * 1000);
        drop(cache);
        // Everything put before the cache was dropped is on disk.
        let reopened = ChunkCache::open(dir.path().to_path_buf(), 1 << 20).unwrap();
        assert_eq!(reopened.bytes(), 40 * 1000);
    }

    #[test]
    fn pinned_chunks_are_never_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(dir.path().to_path_buf(), 150).unwrap();
        let ids: Vec<ChunkId> = (0..4u8).map(|i| ChunkId([i; 32])).collect();
        cache.put(&ids[0], Arc::new(vec![0; 100]));
        cache.flush();
        cache.set_pinned([ids[0], ids[1]].into_iter().collect());
        assert_eq!(cache.missing_pinned(), vec![ids[1]]);
        cache.put(&ids[1], Arc::new(vec![1; 100]));
        cache.flush();
        assert!(cache.missing_pinned().is_empty());
        // Unpinned traffic cycles through the budget without touching pinned chunks.
        cache.put(&ids[2], Arc::new(vec![2; 100]));
        cache.flush();
        cache.put(&ids[3], Arc::new(vec![3; 100]));
        cache.flush();
        assert!(cache.contains(&ids[0]) && cache.contains(&ids[1]));
        assert!(!cache.contains(&ids[2]) && cache.contains(&ids[3]));
        assert_eq!((cache.pinned_bytes(), cache.bytes()), (200, 100));
        // Unpinned, they are ordinary cache entries again, evicted beyond the budget.
        cache.set_pinned(HashSet::new());
        assert!(cache.bytes() <= 150);
        assert_eq!(cache.pinned_bytes(), 0);
    }
}

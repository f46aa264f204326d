//! The on-disk chunk cache: verified chunk bodies appended to segment files
//! (`NNNNNNNNNNNNNNNN.seg`, [`SEGMENT_BYTES`] each at most), found through an index in
//! memory, bounded in bytes.
//!
//! Why segments: a file per chunk cost ext4 a create, a rename and later an unlink for every
//! 64 KiB read from the server — on a cold read of 1 GiB, more CPU than the server spent
//! sending it. Appending costs a write; eviction drops a whole segment.
//!
//! Eviction is FIFO with reinsertion (the order of a log): the oldest segment goes, and the
//! chunks in it that were read since they were written there — and the chunks of pinned
//! files (`shelf pin`), which are never evicted and do not count against the budget — are
//! written again at the head first. A chunk read often stays; one read once goes in turn.
//!
//! Crash and power-cut safety without a sync per chunk: at start the segments are scanned
//! record by record and cut at the first torn record; a chunk found this way is checked
//! against its BLAKE3 id the first time it is read (a body the disk lost is dropped, never
//! returned). Chunks written by this process are trusted (they were verified when they
//! were downloaded).
//!
//! Files are written by a background thread: [`ChunkCache::put`] returns at once and
//! [`ChunkCache::get`] finds a body waiting to be written in memory. Past [`MAX_WAITING`]
//! bytes waiting, `put` writes itself.

use crate::sync::LockOrRecover;
use lru::LruCache;
use shelf_protocol::ChunkId;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

/// Bytes of bodies waiting for the writer, at most.
const MAX_WAITING: u64 = 64 << 20;

/// A segment is closed once it holds this many bytes (smaller for small budgets, so a
/// segment is at most a 32nd of the budget).
const SEGMENT_BYTES: u64 = 16 << 20;

/// A record: magic, chunk id, body length (big-endian), then the body.
const MAGIC: [u8; 4] = *b"SCH1";
const HEADER_LEN: u64 = 4 + 32 + 4;

/// Bodies longer than this are not chunks (the scan stops there).
const MAX_BODY: u64 = 64 << 20;

pub struct ChunkCache {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    capacity: u64,
    segment_bytes: u64,
    inner: Mutex<Inner>,
    /// The segment being appended to; held while appending and evicting (taken before
    /// `inner`, never after).
    appender: Mutex<Appender>,
    /// Signals bodies to write (to the writer), and bodies written (to `flush`).
    written: Condvar,
}

/// Where a chunk's body is.
#[derive(Clone, Copy)]
struct Loc {
    segment: u64,
    /// Offset of the body in the segment.
    offset: u64,
    len: u32,
    /// Checked against its id (written by this process, or read and checked since).
    verified: bool,
    /// Read again since it was written to this segment (it is written again when the
    /// segment is evicted).
    used: bool,
    /// [`Inner::appended`] when it was written: reads soon after (the same pass over a
    /// file, read-ahead catching up) do not count as reading it again.
    written_at: u64,
}

struct Segment {
    file: Arc<File>,
    /// Chunks written to it, in order (some may since have moved or gone).
    ids: Vec<ChunkId>,
}

struct Appender {
    /// The open segment: its number, file and length.
    active: Option<(u64, Arc<File>, u64)>,
    next: u64,
}

struct Inner {
    index: HashMap<ChunkId, Loc>,
    /// Bytes appended since the cache was opened (the log's clock).
    appended: u64,
    /// Segments, oldest first.
    segments: BTreeMap<u64, Segment>,
    /// Bytes of the chunks that count against the budget (not pinned).
    bytes: u64,
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

impl Inner {
    /// Notes a read of `id`: a read once an eighth of the budget has gone through the log
    /// since the chunk was written counts as reading it again.
    fn touch(&mut self, id: &ChunkId, capacity: u64) {
        let now = self.appended;
        if let Some(loc) = self.index.get_mut(id) {
            if now.saturating_sub(loc.written_at) > capacity / 8 {
                loc.used = true;
            }
        }
    }

    /// Forgets a chunk (evicted, moved away or found damaged).
    fn drop_chunk(&mut self, id: &ChunkId) {
        if let Some(loc) = self.index.remove(id) {
            if !self.want.contains(id) {
                self.bytes -= u64::from(loc.len);
            }
        }
        self.hot.pop(id);
    }
}

fn segment_name(n: u64) -> String {
    format!("{n:016x}.seg")
}

/// The records of a segment file, cutting the file at the first torn or foreign one.
fn scan(file: &File) -> std::io::Result<Vec<(ChunkId, u64, u32)>> {
    let len = file.metadata()?.len();
    let mut out = Vec::new();
    let mut at = 0;
    let mut header = [0u8; HEADER_LEN as usize];
    while at + HEADER_LEN <= len {
        file.read_exact_at(&mut header, at)?;
        let body_len = u64::from(u32::from_be_bytes(
            header[36..40].try_into().expect("4 bytes"),
        ));
        if header[..4] != MAGIC || body_len > MAX_BODY || at + HEADER_LEN + body_len > len {
            break;
        }
        let id = ChunkId(header[4..36].try_into().expect("32 bytes"));
        out.push((id, at + HEADER_LEN, body_len as u32));
        at += HEADER_LEN + body_len;
    }
    if at < len {
        tracing::warn!(
            cut_at = at,
            length = len,
            "a chunk-cache segment ends in a torn record; cutting it"
        );
        file.set_len(at)?;
    }
    Ok(out)
}

impl ChunkCache {
    /// Opens the cache, indexing the chunks already on disk (files that are not segments,
    /// such as an older cache's chunk files, are removed).
    pub fn open(dir: PathBuf, capacity: u64) -> std::io::Result<ChunkCache> {
        std::fs::create_dir_all(&dir)?;
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            match name
                .strip_suffix(".seg")
                .and_then(|n| u64::from_str_radix(n, 16).ok())
            {
                Some(n) => numbers.push(n),
                None => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        numbers.sort_unstable();
        let mut index = HashMap::new();
        let mut segments = BTreeMap::new();
        let mut bytes = 0u64;
        for &n in &numbers {
            let path = dir.join(segment_name(n));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)?;
            let records = scan(&file)?;
            if records.is_empty() {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let mut ids = Vec::with_capacity(records.len());
            for (id, offset, len) in records {
                let loc = Loc {
                    segment: n,
                    offset,
                    len,
                    verified: false,
                    used: false,
                    written_at: 0,
                };
                bytes += u64::from(len);
                if let Some(old) = index.insert(id, loc) {
                    bytes -= u64::from(old.len);
                }
                ids.push(id);
            }
            segments.insert(
                n,
                Segment {
                    file: Arc::new(file),
                    ids,
                },
            );
        }
        let shared = Arc::new(Shared {
            dir,
            capacity,
            segment_bytes: (capacity / 32).clamp(1, SEGMENT_BYTES),
            inner: Mutex::new(Inner {
                index,
                appended: 0,
                segments,
                bytes,
                want: HashSet::new(),
                hot: LruCache::new(std::num::NonZeroUsize::new(32).expect("nonzero")),
                waiting: Default::default(),
                waiting_ids: HashMap::new(),
                waiting_bytes: 0,
                writing: None,
                stopping: false,
            }),
            appender: Mutex::new(Appender {
                active: None,
                next: numbers.last().map_or(0, |n| n + 1),
            }),
            written: Condvar::new(),
        });
        shared.evict(&mut shared.appender.lock_or_recover());
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
        let i = self.shared.lock();
        i.index.contains_key(id)
            || i.waiting_ids.contains_key(id)
            || i.writing.as_ref().is_some_and(|(w, _)| w == id)
    }

    /// Stores a verified body (in the background; see the module's notes). A full disk is
    /// not an error for the caller: the chunk is simply not cached.
    pub fn put(&self, id: &ChunkId, body: Arc<Vec<u8>>) {
        let s = &self.shared;
        let mut inner = s.lock();
        inner.hot.put(*id, body.clone());
        if inner.index.contains_key(id) || inner.waiting_ids.contains_key(id) {
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

    /// Makes `ids` the pinned chunks: kept through evictions and not counted against the
    /// budget; chunks no longer pinned count again (and may be evicted).
    pub fn set_pinned(&self, ids: HashSet<ChunkId>) {
        let s = &self.shared;
        let mut appender = s.appender.lock_or_recover();
        {
            let mut inner = s.lock();
            inner.bytes = inner
                .index
                .iter()
                .filter(|(id, _)| !ids.contains(id))
                .map(|(_, l)| u64::from(l.len))
                .sum();
            inner.want = ids;
        }
        s.evict(&mut appender);
    }

    /// Pinned chunks not on disk yet (nor waiting to be written).
    pub fn missing_pinned(&self) -> Vec<ChunkId> {
        let i = self.shared.lock();
        i.want
            .iter()
            .filter(|id| !i.index.contains_key(id) && !i.waiting_ids.contains_key(id))
            .copied()
            .collect()
    }

    /// Bytes of pinned chunks on disk.
    pub fn pinned_bytes(&self) -> u64 {
        let i = self.shared.lock();
        i.want
            .iter()
            .filter_map(|id| i.index.get(id))
            .map(|l| u64::from(l.len))
            .sum()
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

    fn get(&self, id: &ChunkId) -> Option<Arc<Vec<u8>>> {
        let (file, loc) = {
            let mut inner = self.lock();
            if let Some(body) = inner.hot.get(id) {
                let body = body.clone();
                inner.touch(id, self.capacity);
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
            inner.touch(id, self.capacity);
            let loc = *inner.index.get(id)?;
            (inner.segments.get(&loc.segment)?.file.clone(), loc)
        };
        let mut body = vec![0u8; loc.len as usize];
        let good = file.read_exact_at(&mut body, loc.offset).is_ok()
            && (loc.verified || crate::chunker::chunk_id(&body) == *id);
        let mut inner = self.lock();
        let current = inner
            .index
            .get_mut(id)
            .filter(|l| l.segment == loc.segment && l.offset == loc.offset);
        if !good {
            if current.is_some() {
                tracing::warn!(chunk = %id, "a cached chunk was damaged on disk; it is fetched again");
                inner.drop_chunk(id);
            }
            return None;
        }
        if let Some(l) = current {
            l.verified = true;
        }
        let body = Arc::new(body);
        inner.hot.put(*id, body.clone());
        Some(body)
    }

    /// Appends a body and accounts for it, then evicts beyond the budget.
    fn store(&self, id: &ChunkId, body: &[u8]) {
        let mut appender = self.appender.lock_or_recover();
        if let Err(e) = self.append(&mut appender, id, body, true) {
            tracing::warn!(error = %e, "could not store a chunk in the cache");
            return;
        }
        self.evict(&mut appender);
    }

    /// Writes one record at the end of the open segment (opening a new one when it is full)
    /// and points the index at it.
    fn append(
        &self,
        appender: &mut Appender,
        id: &ChunkId,
        body: &[u8],
        verified: bool,
    ) -> std::io::Result<()> {
        if appender
            .active
            .as_ref()
            .is_none_or(|(_, _, len)| *len >= self.segment_bytes)
        {
            let n = appender.next;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(self.dir.join(segment_name(n)))?;
            appender.next += 1;
            let file = Arc::new(file);
            self.lock().segments.insert(
                n,
                Segment {
                    file: file.clone(),
                    ids: Vec::new(),
                },
            );
            appender.active = Some((n, file, 0));
        }
        let Some((n, file, len)) = appender.active.as_mut() else {
            unreachable!("a segment was opened above");
        };
        let mut header = [0u8; HEADER_LEN as usize];
        header[..4].copy_from_slice(&MAGIC);
        header[4..36].copy_from_slice(&id.0);
        header[36..40].copy_from_slice(&(body.len() as u32).to_be_bytes());
        let written = file
            .write_all_at(&header, *len)
            .and_then(|()| file.write_all_at(body, *len + HEADER_LEN));
        if let Err(e) = written {
            // Whatever part was written is cut off again (the scan would stop there).
            let _ = file.set_len(*len);
            return Err(e);
        }
        *len += HEADER_LEN + body.len() as u64;
        let mut inner = self.lock();
        inner.appended += HEADER_LEN + body.len() as u64;
        let loc = Loc {
            segment: *n,
            offset: *len - body.len() as u64,
            len: body.len() as u32,
            verified,
            used: false,
            written_at: inner.appended,
        };
        let pinned = inner.want.contains(id);
        if let Some(old) = inner.index.insert(*id, loc) {
            if !pinned {
                inner.bytes -= u64::from(old.len);
            }
        }
        if !pinned {
            inner.bytes += u64::from(loc.len);
        }
        if let Some(seg) = inner.segments.get_mut(n) {
            seg.ids.push(*id);
        }
        Ok(())
    }

    /// Drops the oldest segments while the budget is exceeded, writing again at the head
    /// what was read since (and what is pinned).
    fn evict(&self, appender: &mut Appender) {
        // Each round removes one segment; a chunk kept in one round is unmarked, so the
        // rounds end.
        let rounds = self.lock().segments.len() * 2;
        for _ in 0..=rounds {
            let active = appender.active.as_ref().map(|(n, _, _)| *n);
            let (victim, file, keep) = {
                let mut inner = self.lock();
                if inner.bytes <= self.capacity {
                    return;
                }
                let Some(victim) = inner.segments.keys().copied().find(|n| Some(*n) != active)
                else {
                    return;
                };
                let seg = inner.segments.remove(&victim).expect("a listed segment");
                let mut keep = Vec::new();
                for id in seg.ids {
                    let Some(loc) = inner.index.get(&id).copied() else {
                        continue;
                    };
                    if loc.segment != victim {
                        continue;
                    }
                    if loc.used || inner.want.contains(&id) {
                        keep.push((id, loc));
                    } else {
                        inner.drop_chunk(&id);
                    }
                }
                (victim, seg.file, keep)
            };
            for (id, loc) in keep {
                let mut body = vec![0u8; loc.len as usize];
                let moved = file.read_exact_at(&mut body, loc.offset).is_ok()
                    && (loc.verified || crate::chunker::chunk_id(&body) == id)
                    && self.append(appender, &id, &body, true).is_ok();
                if !moved {
                    self.lock().drop_chunk(&id);
                }
            }
            let _ = std::fs::remove_file(self.dir.join(segment_name(victim)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(fill: u8, len: usize) -> (ChunkId, Arc<Vec<u8>>) {
        let body = vec![fill; len];
        (crate::chunker::chunk_id(&body), Arc::new(body))
    }

    fn segments(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn evicts_what_was_not_read_again_beyond_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(dir.path().to_path_buf(), 250).unwrap();
        let c: Vec<_> = (0..3u8).map(|i| chunk(i, 100)).collect();
        cache.put(&c[0].0, c[0].1.clone());
        cache.put(&c[1].0, c[1].1.clone());
        cache.flush();
        assert!(cache.get(&c[0].0).is_some()); // 0 was read again, 1 was not
        cache.put(&c[2].0, c[2].1.clone());
        cache.flush();
        assert!(cache.contains(&c[0].0));
        assert!(
            !cache.contains(&c[1].0),
            "the chunk not read again is evicted"
        );
        assert!(cache.contains(&c[2].0));
        assert!(cache.bytes() <= 250);
        drop(cache);
        let reopened = ChunkCache::open(dir.path().to_path_buf(), 250).unwrap();
        assert_eq!(reopened.bytes(), 200);
        assert_eq!(reopened.get(&c[2].0).unwrap(), c[2].1);
        assert_eq!(reopened.get(&c[0].0).unwrap(), c[0].1);
    }

    #[test]
    fn segments_hold_many_chunks_and_go_whole() {
        let dir = tempfile::tempdir().unwrap();
        // 32 KiB budget: segments of 1 KiB, four 300-byte chunks each.
        let cache = ChunkCache::open(dir.path().to_path_buf(), 32 << 10).unwrap();
        let c: Vec<_> = (0..=255u8).map(|i| chunk(i, 300)).collect();
        for (id, body) in &c[..10] {
            cache.put(id, body.clone());
        }
        cache.flush();
        assert!(
            segments(dir.path()).len() < 10,
            "chunks share segment files"
        );
        // The first chunk is read now and then; everything else streams through once.
        for (i, (id, body)) in c.iter().enumerate().skip(10) {
            cache.put(id, body.clone());
            if i % 20 == 0 {
                cache.flush();
                assert_eq!(cache.get(&c[0].0).unwrap(), c[0].1);
            }
        }
        cache.flush();
        assert!(cache.bytes() <= 32 << 10);
        assert!(
            cache.bytes() > 24 << 10,
            "eviction goes a segment at a time"
        );
        assert!(cache.contains(&c[0].0), "a chunk read again stays");
        assert!(!cache.contains(&c[1].0) && cache.contains(&c[255].0));
        let on_disk: u64 = segments(dir.path())
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        // Bodies and their 40-byte headers, and at most the open segment beyond.
        assert!(
            on_disk <= (32 << 10) * 340 / 300 + 1360,
            "{on_disk} bytes on disk"
        );
        drop(cache);
        let reopened = ChunkCache::open(dir.path().to_path_buf(), 32 << 10).unwrap();
        assert_eq!(reopened.get(&c[255].0).unwrap(), c[255].1);
    }

    #[test]
    fn a_torn_or_damaged_record_is_never_returned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(dir.path().to_path_buf(), 1 << 30).unwrap();
        let c: Vec<_> = (0..3u8).map(|i| chunk(i, 1000)).collect();
        for (id, body) in &c {
            cache.put(id, body.clone());
        }
        cache.flush();
        drop(cache);
        let seg = segments(dir.path()).pop().unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        // A power cut: the second body lost a block, the third record is cut short.
        let second = HEADER_LEN + 1000 + HEADER_LEN;
        file.write_all_at(&[0u8; 16], second + 500).unwrap();
        file.set_len(3 * (HEADER_LEN + 1000) - 10).unwrap();
        drop(file);
        // And an older cache's chunk file is left in the folder.
        std::fs::write(dir.path().join(c[0].0.to_hex()), b"old").unwrap();
        let reopened = ChunkCache::open(dir.path().to_path_buf(), 1 << 30).unwrap();
        assert!(!dir.path().join(c[0].0.to_hex()).exists());
        assert_eq!(reopened.get(&c[0].0).unwrap(), c[0].1);
        assert!(
            reopened.get(&c[1].0).is_none(),
            "a damaged body is not returned"
        );
        assert!(!reopened.contains(&c[1].0));
        assert!(!reopened.contains(&c[2].0), "a torn record is cut off");
        assert_eq!(reopened.bytes(), 1000);
        // The cut segment takes new records after its last whole one.
        reopened.put(&c[2].0, c[2].1.clone());
        reopened.flush();
        drop(reopened);
        let again = ChunkCache::open(dir.path().to_path_buf(), 1 << 30).unwrap();
        assert_eq!(again.get(&c[2].0).unwrap(), c[2].1);
        assert_eq!(again.get(&c[0].0).unwrap(), c[0].1);
    }

    #[test]
    fn a_body_waiting_to_be_written_is_read_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(dir.path().to_path_buf(), 1 << 20).unwrap();
        let c: Vec<_> = (0..40u8).map(|i| chunk(i, 1000)).collect();
        for (id, body) in &c {
            cache.put(id, body.clone());
        }
        // More than the hot set holds: the oldest come from the waiting queue or the disk.
        for (id, body) in &c {
            assert_eq!(&cache.get(id).unwrap(), body);
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
        let c: Vec<_> = (0..4u8).map(|i| chunk(i, 100)).collect();
        cache.put(&c[0].0, c[0].1.clone());
        cache.flush();
        cache.set_pinned([c[0].0, c[1].0].into_iter().collect());
        assert_eq!(cache.missing_pinned(), vec![c[1].0]);
        cache.put(&c[1].0, c[1].1.clone());
        cache.flush();
        assert!(cache.missing_pinned().is_empty());
        // Unpinned traffic cycles through the budget without touching pinned chunks.
        cache.put(&c[2].0, c[2].1.clone());
        cache.flush();
        cache.put(&c[3].0, c[3].1.clone());
        cache.flush();
        assert!(cache.contains(&c[0].0) && cache.contains(&c[1].0));
        assert!(!cache.contains(&c[2].0) && cache.contains(&c[3].0));
        assert_eq!((cache.pinned_bytes(), cache.bytes()), (200, 100));
        assert_eq!(cache.get(&c[0].0).unwrap(), c[0].1);
        // Unpinned, they are ordinary cache entries again, evicted beyond the budget.
        cache.set_pinned(HashSet::new());
        assert!(cache.bytes() <= 150);
        assert_eq!(cache.pinned_bytes(), 0);
    }
}

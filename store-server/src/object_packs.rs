//! Chunk bodies in S3-compatible object storage (Garage, MinIO, Ceph, AWS S3), for a store
//! that outgrows one disk: [`ObjectPackStore`] is the [`ChunkStore`] that
//! [`crate::chunkstore::PackStore`] is on a local disk.
//!
//! Chunks are gathered into packs in memory, each record as in a local pack (`magic ‖
//! account ‖ id ‖ length ‖ body`, so a pack describes itself), and a pack is written
//! once as one object `PREFIX/packs/<16 hex digits>` when it reaches its size (32 MiB by
//! default) or when [`ChunkStore::sync`] asks for what was written so far. Pack names are
//! random, so several servers on one bucket never write the same name, and a retried
//! `PUT` writes the same bytes again (idempotent). A chunk is read with one ranged `GET`
//! of its record and up to 8 MiB of the records after it (a file's next chunks), kept in a
//! read cache in memory.
//!
//! Crash order: a chunk enters the index (a sled tree) only once its pack is in the
//! bucket, so a durable index never names a chunk that was not stored; until then it is
//! answered from the pack in memory. [`ChunkStore::sync`] waits for every pack under way.
//! Compaction rewrites packs that are mostly garbage or small (the ones a sync cut short)
//! into new ones, then deletes them. The bucket only ever holds sealed bodies: the
//! [`crate::sealed_chunks::SealedChunks`] wrapper seals before this store sees a byte.

use crate::chunkstore::{
    index_key, record_header, record_matches, split_index_key, ChunkStore, DiskUse, Usage,
    HEADER_LEN,
};
use crate::error::{Result, StoreError};
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use shelf_protocol::sync::LockOrRecover;
use shelf_protocol::{ChunkId, ErrorCode};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// Packs are written once they hold this many bytes.
pub const PACK_SIZE: usize = 32 << 20;
/// Chunk records kept in the read cache.
const CACHE_RECORDS: usize = 1024;
/// Bytes of a pack one read fetches: the record asked for and those after it.
const READ_AHEAD: u64 = 8 << 20;

/// Packs written less than this long ago are not compacted (`SHELF_COMPACT_MIN_AGE_SECS`,
/// default an hour): another server's chunks in them may not be in the index yet.
fn compact_min_age() -> i64 {
    std::env::var("SHELF_COMPACT_MIN_AGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600)
}

/// Where the bucket is and how to sign in to it: `DIR/object-store.json` (0600), or the
/// environment (`SHELF_S3_ENDPOINT`, `SHELF_S3_BUCKET`, `SHELF_S3_REGION`,
/// `SHELF_S3_ACCESS_KEY_ID`, `SHELF_S3_SECRET_ACCESS_KEY`, `SHELF_S3_PREFIX`).
#[derive(Clone, Serialize, Deserialize)]
pub struct S3Config {
    /// `http://127.0.0.1:3900` (Garage), `https://s3.eu-west-1.amazonaws.com`, …
    pub endpoint: String,
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Object names start with this (several stores can share a bucket).
    #[serde(default)]
    pub prefix: String,
}

fn default_region() -> String {
    "garage".to_string()
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(
            f,
            "S3Config({} bucket {} key {})",
            self.endpoint, self.bucket, self.access_key_id
        )
    }
}

impl S3Config {
    /// From the environment, if `SHELF_S3_BUCKET` is set.
    pub fn from_env() -> Option<S3Config> {
        let var = |name: &str| std::env::var(name).ok();
        Some(S3Config {
            bucket: var("SHELF_S3_BUCKET")?,
            endpoint: var("SHELF_S3_ENDPOINT").unwrap_or_default(),
            region: var("SHELF_S3_REGION").unwrap_or_else(default_region),
            access_key_id: var("SHELF_S3_ACCESS_KEY_ID").unwrap_or_default(),
            secret_access_key: var("SHELF_S3_SECRET_ACCESS_KEY").unwrap_or_default(),
            prefix: var("SHELF_S3_PREFIX").unwrap_or_default(),
        })
    }

    /// From `path`, if it exists.
    pub fn from_file(path: &std::path::Path) -> Result<Option<S3Config>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn connect(&self) -> Result<Arc<dyn ObjectStore>> {
        // reqwest's TLS (for an https endpoint) uses the process's rustls provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(self.endpoint.starts_with("http://"))
            .with_region(&self.region)
            .with_bucket_name(&self.bucket)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .build()
            .map_err(object_error)?;
        Ok(Arc::new(s3))
    }
}

fn object_error(e: object_store::Error) -> StoreError {
    StoreError::Io(std::io::Error::other(format!("object store: {e}")))
}

/// A chunk's record (header and sealed body), shared.
type Record = Arc<Vec<u8>>;

/// Where a chunk's record is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
struct Location {
    pack: u64,
    /// Offset of the record header in the pack.
    offset: u64,
    len: u32,
}

/// The pack being filled, and what it holds.
#[derive(Default)]
struct Open {
    pack: u64,
    bytes: Vec<u8>,
    records: HashMap<[u8; 40], Location>,
}

/// A pack on its way to the bucket: readable from memory until it is there.
struct Sending {
    bytes: Arc<Vec<u8>>,
    records: HashMap<[u8; 40], Location>,
}

pub struct ObjectPackStore {
    bucket: Arc<dyn ObjectStore>,
    prefix: String,
    /// The object store client's own runtime, so the store's blocking callers can wait for
    /// it from any thread (taken, and shut down without blocking, when the store goes).
    runtime: Option<tokio::runtime::Runtime>,
    index: crate::kv::Tree,
    pack_size: usize,
    /// Packs younger than this (seconds) are not compacted.
    min_age: i64,
    open: Mutex<Open>,
    /// Packs written to the bucket's client but not confirmed, by pack.
    sending: Mutex<HashMap<u64, Arc<Sending>>>,
    /// Uploads under way.
    uploads: Mutex<Vec<(u64, tokio::task::JoinHandle<Result<()>>)>>,
    /// Held while uploads are waited for ([`ObjectPackStore::finish_uploads`]).
    syncing: Mutex<()>,
    cache: Mutex<lru::LruCache<(u64, u64), Record>>,
    /// Lengths of packs read from.
    pack_lens: Mutex<HashMap<u64, u64>>,
    usage: Usage,
}

fn random_pack() -> Result<u64> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b)
        .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
    Ok(u64::from_le_bytes(b) | 1)
}

impl ObjectPackStore {
    /// The store over the bucket `config` names, its index in `db`.
    pub fn open(config: &S3Config, db: &crate::kv::Db) -> Result<ObjectPackStore> {
        ObjectPackStore::over(config.connect()?, &config.prefix, db)
    }

    /// The store over any object store (tests use a local folder as the bucket).
    pub fn over(bucket: Arc<dyn ObjectStore>, prefix: &str, db: &crate::kv::Db) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-store")
            .enable_all()
            .build()?;
        let pack_size = std::env::var("SHELF_PACK_SIZE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(PACK_SIZE);
        Ok(ObjectPackStore {
            bucket,
            prefix: prefix.trim_matches('/').to_string(),
            runtime: Some(runtime),
            index: db.open_tree("object_chunk_index")?,
            pack_size,
            min_age: compact_min_age(),
            open: Mutex::new(Open {
                pack: random_pack()?,
                ..Open::default()
            }),
            sending: Mutex::default(),
            uploads: Mutex::default(),
            syncing: Mutex::default(),
            pack_lens: Mutex::default(),
            cache: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(CACHE_RECORDS).unwrap_or(NonZeroUsize::MIN),
            )),
            usage: Usage::for_db(db),
        })
    }

    /// The same store with packs written at `bytes` and compaction of packs of any age
    /// (tests).
    pub fn with_pack_size(mut self, bytes: usize) -> Self {
        self.pack_size = bytes;
        self.min_age = 0;
        self
    }

    fn path(&self, pack: u64) -> ObjectPath {
        match self.prefix.is_empty() {
            true => ObjectPath::from(format!("packs/{pack:016x}")),
            false => ObjectPath::from(format!("{}/packs/{pack:016x}", self.prefix)),
        }
    }

    /// Starts `work` on the client's runtime.
    fn spawn<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<T>> {
        match &self.runtime {
            Some(rt) => Ok(rt.spawn(work)),
            None => Err(StoreError::Io(std::io::Error::other("object store closed"))),
        }
    }

    /// Runs `work` on the client's runtime and waits for it (from any thread).
    fn wait<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.spawn(async move {
            let _ = tx.send(work.await);
        })?;
        rx.recv()
            .map_err(|_| StoreError::Io(std::io::Error::other("object store task ended")))
    }

    /// Where a chunk is: written (the index) or on its way (a pack in memory).
    fn locate(&self, key: &[u8; 40]) -> Result<Option<(Location, Option<Record>)>> {
        if let Some(raw) = self.index.get(key)? {
            return Ok(Some((postcard::from_bytes(&raw)?, None)));
        }
        let record = |bytes: &[u8], loc: &Location| {
            let at = loc.offset as usize;
            Some((
                *loc,
                Some(Arc::new(
                    bytes[at..at + HEADER_LEN + loc.len as usize].to_vec(),
                )),
            ))
        };
        {
            let open = self.open.lock_or_recover();
            if let Some(loc) = open.records.get(key) {
                return Ok(record(&open.bytes, loc));
            }
        }
        for s in self.sending.lock_or_recover().values() {
            if let Some(loc) = s.records.get(key) {
                return Ok(record(&s.bytes, loc));
            }
        }
        Ok(None)
    }

    /// Sends the open pack to the bucket (in the background) and starts a new one.
    fn send_open(&self, open: &mut Open) -> Result<()> {
        if open.bytes.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(
            open,
            Open {
                pack: random_pack()?,
                ..Open::default()
            },
        );
        let sending = Arc::new(Sending {
            bytes: Arc::new(full.bytes),
            records: full.records,
        });
        self.sending
            .lock_or_recover()
            .insert(full.pack, sending.clone());
        self.upload(full.pack, sending.bytes.clone())
    }

    /// Starts writing `pack` to the bucket.
    fn upload(&self, pack: u64, body: Arc<Vec<u8>>) -> Result<()> {
        let (bucket, path) = (self.bucket.clone(), self.path(pack));
        let upload = self.spawn(async move {
            let payload = PutPayload::from_bytes(bytes::Bytes::from_owner(SharedBytes(body)));
            bucket.put(&path, payload).await.map_err(object_error)?;
            Ok(())
        })?;
        self.uploads.lock_or_recover().push((pack, upload));
        Ok(())
    }

    /// Waits for every upload under way; a written pack's chunks enter the index, a pack
    /// that failed is sent again (and its error returned). One caller at a time: a second
    /// one waits, then finds the packs the first was waiting for written or sent again.
    fn finish_uploads(&self) -> Result<()> {
        let _one_at_a_time = self.syncing.lock_or_recover();
        let uploads = std::mem::take(&mut *self.uploads.lock_or_recover());
        let mut failed = None;
        for (pack, upload) in uploads {
            let outcome = self
                .wait(upload)?
                .unwrap_or_else(|e| Err(StoreError::Io(std::io::Error::other(e))));
            let Some(sent) = self.sending.lock_or_recover().get(&pack).cloned() else {
                continue;
            };
            match outcome {
                Ok(()) => {
                    // Into the index first, then out of memory: a chunk is always in one.
                    for (key, loc) in &sent.records {
                        self.index.insert(key, postcard::to_stdvec(loc)?)?;
                    }
                    self.sending.lock_or_recover().remove(&pack);
                }
                // It stays in memory and goes again; the next sync waits for it.
                Err(e) => {
                    self.upload(pack, sent.bytes.clone())?;
                    failed = Some(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// The record at `loc`, from the cache or with one ranged read.
    fn read_record(&self, loc: Location) -> Result<Record> {
        if let Some(r) = self.cache.lock_or_recover().get(&(loc.pack, loc.offset)) {
            return Ok(r.clone());
        }
        // The records after it in the pack come in the same read (a file's chunks were
        // written one after another), up to READ_AHEAD bytes and the pack's end.
        let end = loc.offset + (HEADER_LEN as u64) + u64::from(loc.len);
        let size = self.pack_len(loc.pack)?;
        let until = (loc.offset + READ_AHEAD).min(size).max(end);
        let bucket = self.bucket.clone();
        let path = self.path(loc.pack);
        let range = loc.offset..until;
        let window = self
            .wait(async move { bucket.get_range(&path, range).await })?
            .map_err(object_error)?;
        let mut cache = self.cache.lock_or_recover();
        let mut at = 0usize;
        let mut first = None;
        while let Some(header) = window.get(at..at + HEADER_LEN) {
            let len = u32::from_be_bytes([header[44], header[45], header[46], header[47]]);
            let Some(record) = window.get(at..at + HEADER_LEN + len as usize) else {
                break;
            };
            let record = Arc::new(record.to_vec());
            cache.put((loc.pack, loc.offset + at as u64), record.clone());
            first.get_or_insert(record);
            at += HEADER_LEN + len as usize;
        }
        first.ok_or_else(|| StoreError::Corrupt(format!("pack {:x} is cut short", loc.pack)))
    }

    /// A pack's length (asked of the bucket once, then remembered).
    fn pack_len(&self, pack: u64) -> Result<u64> {
        if let Some(n) = self.pack_lens.lock_or_recover().get(&pack) {
            return Ok(*n);
        }
        let bucket = self.bucket.clone();
        let path = self.path(pack);
        let meta = self
            .wait(async move { bucket.head(&path).await })?
            .map_err(object_error)?;
        let mut lens = self.pack_lens.lock_or_recover();
        if lens.len() >= 65536 {
            lens.clear();
        }
        lens.insert(pack, meta.size);
        Ok(meta.size)
    }

    /// Every pack in the bucket: its size and when it was written (Unix seconds).
    fn packs(&self) -> Result<Vec<(u64, u64, i64)>> {
        let bucket = self.bucket.clone();
        let under = match self.prefix.is_empty() {
            true => ObjectPath::from("packs"),
            false => ObjectPath::from(format!("{}/packs", self.prefix)),
        };
        let metas =
            self.wait(async move { bucket.list(Some(&under)).collect::<Vec<_>>().await })?;
        let mut out = Vec::new();
        for m in metas {
            let m = m.map_err(object_error)?;
            if let Some(pack) = m
                .location
                .filename()
                .and_then(|n| u64::from_str_radix(n, 16).ok())
            {
                out.push((pack, m.size, m.last_modified.timestamp()));
            }
        }
        Ok(out)
    }
}

/// A pack's bytes shared with the upload (no copy).
struct SharedBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl ChunkStore for ObjectPackStore {
    fn contains(&self, account: u64, id: &ChunkId) -> Result<bool> {
        let open = self.open.lock_or_recover();
        self.locate_unlocked(&open, &index_key(account, id))
    }

    fn put(&self, account: u64, id: &ChunkId, data: &[u8]) -> Result<bool> {
        let key = index_key(account, id);
        if self.index.contains_key(key)? {
            return Ok(false);
        }
        let mut open = self.open.lock_or_recover();
        if self.locate_unlocked(&open, &key)? {
            return Ok(false);
        }
        let offset = open.bytes.len() as u64;
        open.bytes
            .extend_from_slice(&record_header(account, id, data.len() as u32));
        open.bytes.extend_from_slice(data);
        let loc = Location {
            pack: open.pack,
            offset,
            len: data.len() as u32,
        };
        open.records.insert(key, loc);
        if open.bytes.len() >= self.pack_size {
            self.send_open(&mut open)?;
        }
        drop(open);
        self.usage.added(account, data.len() as u64);
        Ok(true)
    }

    fn get_split(&self, account: u64, id: &ChunkId, head: &mut [u8]) -> Result<Vec<u8>> {
        let Some((loc, record)) = self.locate(&index_key(account, id))? else {
            return Err(ErrorCode::NotFound.into());
        };
        let record = match record {
            Some(r) => r,
            None => self.read_record(loc)?,
        };
        if record.len() != HEADER_LEN + loc.len as usize
            || !record_matches(&record[..HEADER_LEN], account, id, loc.len)
        {
            return Err(StoreError::Corrupt(format!(
                "pack record for chunk {id:?} has a wrong header"
            )));
        }
        let body = &record[HEADER_LEN..];
        if body.len() < head.len() {
            return Err(StoreError::Corrupt(format!(
                "pack record for chunk {id:?} is shorter than its seal"
            )));
        }
        head.copy_from_slice(&body[..head.len()]);
        Ok(body[head.len()..].to_vec())
    }

    fn sync(&self) -> Result<()> {
        {
            let mut open = self.open.lock_or_recover();
            self.send_open(&mut open)?;
        }
        self.finish_uploads()
    }

    fn share_written(&self) -> Result<()> {
        self.sync()
    }

    fn usage(&self, account: u64) -> Result<(u64, u64)> {
        self.usage.of(account, || {
            let (mut total, mut count) = (0u64, 0u64);
            for (_, len) in self.ids(account)? {
                total += u64::from(len);
                count += 1;
            }
            Ok((total, count))
        })
    }

    fn ids(&self, account: u64) -> Result<Vec<(ChunkId, u32)>> {
        let mut out = Vec::new();
        for item in self.index.scan_prefix(account.to_be_bytes()) {
            let (k, v) = item?;
            let loc: Location = postcard::from_bytes(&v)?;
            out.push((split_index_key(&k)?.1, loc.len));
        }
        let open = self.open.lock_or_recover();
        let sending = self.sending.lock_or_recover();
        let waiting = open
            .records
            .iter()
            .chain(sending.values().flat_map(|s| s.records.iter()));
        // (A chunk moves from memory to the index between the two reads at most once:
        // listed twice then, which only its caller's set removes.)
        for (k, loc) in waiting {
            if k[..8] == account.to_be_bytes() {
                out.push((split_index_key(k)?.1, loc.len));
            }
        }
        Ok(out)
    }

    fn remove(&self, account: u64, id: &ChunkId) -> Result<Option<u32>> {
        // Chunks still on their way are written first, so the removal is the last word.
        self.sync()?;
        let Some(raw) = self.index.remove(index_key(account, id))? else {
            return Ok(None);
        };
        let loc: Location = postcard::from_bytes(&raw)?;
        self.usage.removed(account, u64::from(loc.len));
        Ok(Some(loc.len))
    }

    fn compact(&self) -> Result<u64> {
        self.sync()?;
        let mut live: HashMap<u64, Vec<(crate::kv::IVec, Location)>> = HashMap::new();
        for item in self.index.iter() {
            let (k, v) = item?;
            let loc: Location = postcard::from_bytes(&v)?;
            live.entry(loc.pack).or_default().push((k, loc));
        }
        let mut freed = 0u64;
        let mut doomed = Vec::new();
        // Packs still on their way (here, or written by another server a moment ago: their
        // chunks may not be in the index yet) are left alone.
        let now = jiff::Timestamp::now().as_second();
        let in_memory: Vec<u64> = self.sending.lock_or_recover().keys().copied().collect();
        let min_age = self.min_age;
        for (pack, size, written) in self.packs()? {
            if now - written < min_age || in_memory.contains(&pack) {
                continue;
            }
            let records = live.remove(&pack).unwrap_or_default();
            let live_bytes: u64 = records
                .iter()
                .map(|(_, l)| HEADER_LEN as u64 + u64::from(l.len))
                .sum();
            // Mostly garbage, or a small pack a sync cut short: rewritten.
            let small = size < (self.pack_size / 4) as u64;
            if live_bytes * 2 > size && !small {
                continue;
            }
            for (key, loc) in records {
                let (account, id) = split_index_key(&key)?;
                let record = self.read_record(loc)?;
                let mut open = self.open.lock_or_recover();
                let offset = open.bytes.len() as u64;
                open.bytes.extend_from_slice(&record);
                let moved = Location {
                    pack: open.pack,
                    offset,
                    len: loc.len,
                };
                // Only if nobody removed or moved it meanwhile: the index changes when
                // the new pack is written (see `finish_uploads`), so check it now.
                if self.index.get(&key)?.as_deref() == Some(&postcard::to_stdvec(&loc)?[..]) {
                    open.records.insert(index_key(account, &id), moved);
                } else {
                    open.bytes.truncate(offset as usize);
                }
                if open.bytes.len() >= self.pack_size {
                    self.send_open(&mut open)?;
                }
            }
            freed += size.saturating_sub(live_bytes);
            doomed.push(pack);
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        // The moved records are in the bucket and the index names them before the old
        // packs go: a crash in between leaves both copies, never none.
        self.sync()?;
        self.index.flush()?;
        for pack in doomed {
            let bucket = self.bucket.clone();
            let path = self.path(pack);
            self.wait(async move { bucket.delete(&path).await })?
                .map_err(object_error)?;
        }
        Ok(freed)
    }

    fn disk(&self) -> Result<DiskUse> {
        let mut out = DiskUse::default();
        for (_, size, _) in self.packs()? {
            out.files += 1;
            out.bytes += size;
        }
        for item in self.index.iter() {
            let (_, v) = item?;
            let loc: Location = postcard::from_bytes(&v)?;
            out.live_bytes += HEADER_LEN as u64 + u64::from(loc.len);
        }
        Ok(out)
    }
}

impl Drop for ObjectPackStore {
    /// Packs still in memory go to the bucket; then the client's runtime stops without
    /// blocking (the store may go away inside the server's own runtime).
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::warn!(error = %e, "chunk packs not written at shutdown");
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl ObjectPackStore {
    /// Whether the chunk is already in the open pack or on its way (the caller holds the
    /// open pack).
    fn locate_unlocked(&self, open: &Open, key: &[u8; 40]) -> Result<bool> {
        if open.records.contains_key(key) {
            return Ok(true);
        }
        Ok(self
            .sending
            .lock_or_recover()
            .values()
            .any(|s| s.records.contains_key(key))
            || self.index.contains_key(key)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn id(data: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    fn store(bucket: &Arc<InMemory>, db: &crate::kv::Db) -> ObjectPackStore {
        ObjectPackStore::over(bucket.clone(), "test", db)
            .unwrap()
            .with_pack_size(64 << 10)
    }

    fn objects(bucket: &Arc<InMemory>) -> usize {
        let b = bucket.clone();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move { b.list(None).collect::<Vec<_>>().await.len() })
    }

    #[test]
    fn chunks_are_readable_before_and_after_their_pack_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::from(sled::open(tmp.path().join("db")).unwrap());
        let bucket = Arc::new(InMemory::new());
        let s = store(&bucket, &db);
        let (a, b) = (b"first chunk".to_vec(), vec![7u8; 5000]);
        assert!(s.put(1, &id(&a), &a).unwrap());
        assert!(!s.put(1, &id(&a), &a).unwrap(), "deduplicated");
        assert!(
            s.put(2, &id(&a), &a).unwrap(),
            "accounts do not share chunks"
        );
        assert!(s.put(1, &id(&b), &b).unwrap());
        // Still in memory: answered from there, nothing in the bucket or the index.
        assert_eq!(s.get(1, &id(&a)).unwrap(), a);
        assert_eq!(objects(&bucket), 0);
        assert!(s.index.is_empty());
        s.sync().unwrap();
        assert_eq!(objects(&bucket), 1, "one pack");
        assert_eq!(s.index.len(), 3);
        assert_eq!(s.usage(1).unwrap(), (a.len() as u64 + 5000, 2));
        // Another server (a new store over the same index and bucket) reads them with
        // ranged reads, a seal's head apart.
        drop(s);
        let s = store(&bucket, &db);
        let mut head = [0u8; 4];
        assert_eq!(s.get_split(1, &id(&b), &mut head).unwrap(), vec![7u8; 4996]);
        assert_eq!(head, [7u8; 4]);
        assert_eq!(s.get(2, &id(&a)).unwrap(), a);
        assert!(matches!(
            s.get(3, &id(&a)),
            Err(StoreError::Refused(ErrorCode::NotFound))
        ));
    }

    #[test]
    fn a_full_pack_is_written_at_once_and_a_killed_server_leaves_no_dangling_index() {
        let tmp = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::from(sled::open(tmp.path().join("db")).unwrap());
        let bucket = Arc::new(InMemory::new());
        let s = store(&bucket, &db);
        let chunks: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 4000]).collect();
        for c in &chunks {
            s.put(9, &id(c), c).unwrap();
        }
        s.finish_uploads().unwrap();
        // 160 kB in 64 KiB packs: two were full and written without a sync.
        assert_eq!(objects(&bucket), 2);
        let indexed = s.index.len();
        assert!(indexed > 0 && indexed < 40, "{indexed}");
        // Killed before a sync: what was in memory is gone, and the index names only
        // chunks whose packs are in the bucket, so a client sends the rest again.
        db.flush().unwrap();
        std::mem::forget(s); // no drop: a dropped store writes what it holds
        let s = store(&bucket, &db);
        let known = chunks
            .iter()
            .filter(|c| s.contains(9, &id(c)).unwrap())
            .count();
        assert_eq!(known, indexed);
        for c in chunks.iter().filter(|c| s.contains(9, &id(c)).unwrap()) {
            assert_eq!(&s.get(9, &id(c)).unwrap(), c);
        }
    }

    #[test]
    fn compaction_rewrites_small_and_mostly_dead_packs() {
        let tmp = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::from(sled::open(tmp.path().join("db")).unwrap());
        let bucket = Arc::new(InMemory::new());
        let s = store(&bucket, &db);
        let chunks: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 3000]).collect();
        for c in &chunks {
            s.put(1, &id(c), c).unwrap();
            // A sync after each: ten small packs, as many small commits make.
            s.sync().unwrap();
        }
        assert_eq!(objects(&bucket), 10);
        for c in &chunks[..5] {
            assert_eq!(s.remove(1, &id(c)).unwrap(), Some(3000));
        }
        let freed = s.compact().unwrap();
        assert!(freed >= 5 * 3000, "{freed}");
        assert_eq!(objects(&bucket), 1, "the live chunks in one pack");
        for c in &chunks[5..] {
            assert_eq!(&s.get(1, &id(c)).unwrap(), c);
        }
        for c in &chunks[..5] {
            assert!(!s.contains(1, &id(c)).unwrap());
        }
        let disk = s.disk().unwrap();
        assert_eq!(disk.files, 1);
        assert_eq!(disk.live_bytes, disk.bytes);
    }
}

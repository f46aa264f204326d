//! The store's one transactional key-value interface: named trees of byte keys (ordered
//! bytewise) and byte values, single-key reads and writes, ordered range scans, atomic
//! batches, and serializable transactions over several trees that are retried on conflict.
//!
//! Two engines sit behind it: sled (the embedded default, [`sled_kv`]) and PostgreSQL
//! ([`pg`], one table per tree), so the namespace, history, shares and feed code is one code
//! path for both. The shapes follow sled's API, which the code was written against first.
//!
//! A transaction's closure may run more than once (after a conflict); it must not have
//! effects outside the trees it is given, and may not use any other tree meanwhile.

pub mod pg;
pub mod sled_kv;

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// A value (or key) as the engines hand it out: cheap to clone, derefs to bytes.
pub use sled::IVec;

/// Why a key-value operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("PostgreSQL: {0}")]
    Pg(#[from] tokio_postgres::Error),
    #[error("PostgreSQL: {0}")]
    PgSetup(String),
}

impl KvError {
    /// The operating-system error beneath, if the engine failed on local i/o.
    pub fn io(&self) -> Option<&std::io::Error> {
        match self {
            KvError::Sled(sled::Error::Io(e)) => Some(e),
            _ => None,
        }
    }
}

pub type Result<T, E = KvError> = std::result::Result<T, E>;

/// A database: sled in the data folder, or a PostgreSQL database.
#[derive(Clone)]
pub enum Db {
    Sled(sled::Db),
    Pg(Arc<pg::PgKv>),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.engine())
    }
}

impl From<sled::Db> for Db {
    fn from(db: sled::Db) -> Db {
        Db::Sled(db)
    }
}

impl Db {
    /// A throwaway in-memory sled database (tests).
    pub fn temporary() -> Result<Db> {
        Ok(Db::Sled(sled::Config::new().temporary(true).open()?))
    }

    /// The engine's name, for logs and status.
    pub fn engine(&self) -> &'static str {
        match self {
            Db::Sled(_) => "sled",
            Db::Pg(_) => "postgresql",
        }
    }

    /// Opens (creating if needed) the tree `name`.
    pub fn open_tree(&self, name: &str) -> Result<Tree> {
        Ok(match self {
            Db::Sled(db) => Tree::Sled(db.open_tree(name)?),
            Db::Pg(pg) => Tree::Pg(pg.open_tree(name)?),
        })
    }

    /// The names of the trees that hold records.
    pub fn tree_names(&self) -> Result<Vec<String>> {
        match self {
            Db::Sled(db) => sled_kv::tree_names(db),
            Db::Pg(pg) => pg.tree_names(),
        }
    }

    /// A number never handed out before by this database (monotonic, not dense).
    pub fn generate_id(&self) -> Result<u64> {
        match self {
            Db::Sled(db) => sled_kv::generate_id(db),
            Db::Pg(pg) => pg.generate_id(),
        }
    }

    /// Makes sure [`Db::generate_id`] hands out only numbers above `floor` from now on
    /// (after records were copied in from another database).
    pub fn raise_ids(&self, floor: u64) -> Result<()> {
        match self {
            Db::Sled(db) => sled_kv::raise_ids(db, floor),
            Db::Pg(pg) => pg.raise_ids(floor),
        }
    }

    /// The highest id handed out so far (0 for none).
    pub fn last_id(&self) -> Result<u64> {
        match self {
            Db::Sled(db) => sled_kv::last_id(db),
            Db::Pg(pg) => pg.last_id(),
        }
    }

    /// Makes every write committed so far durable.
    pub fn flush(&self) -> Result<()> {
        match self {
            Db::Sled(db) => {
                db.flush()?;
                Ok(())
            }
            Db::Pg(pg) => pg.flush(),
        }
    }

    /// Bytes the database takes on disk (0 where the engine does not say cheaply).
    pub fn size_on_disk(&self) -> Result<u64> {
        match self {
            Db::Sled(db) => Ok(db.size_on_disk()?),
            Db::Pg(pg) => pg.size_on_disk(),
        }
    }

    /// Whether other servers may share this database (PostgreSQL): caches of its records
    /// then hear of their changes only through [`Db::listen`].
    pub fn is_shared(&self) -> bool {
        matches!(self, Db::Pg(_))
    }

    /// Tells every server listening on this database (none for sled, which one process
    /// holds) `payload` on `channel`.
    pub fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        match self {
            Db::Sled(_) => Ok(()),
            Db::Pg(pg) => pg.notify(channel, payload),
        }
    }

    /// Calls `on` for what is sent on `channels` (by [`Db::notify`] or
    /// [`TxTree::notify`]), from a thread of the engine's (it must not block). Nothing is
    /// ever heard on sled.
    pub fn listen(&self, channels: &[&str], on: Box<dyn Fn(Notice) + Send + Sync>) {
        if let Db::Pg(pg) = self {
            pg.listen(channels, on);
        }
    }

    /// The database-wide lock `name`, if no other server holds it: one server at a time
    /// runs the job it guards. With sled (one process) it is always free.
    pub fn try_job_lock(&self, name: &str) -> Result<Option<JobLock>> {
        match self {
            Db::Sled(_) => Ok(Some(JobLock(None))),
            Db::Pg(pg) => Ok(pg.try_job_lock(name)?.map(|l| JobLock(Some(l)))),
        }
    }

    /// Waits (at most `timeout`; `None`: as long as it takes) for the database-wide lock
    /// `name`, shared or alone; `None` if the time ran out. Always free with sled.
    pub fn lock(
        &self,
        name: &str,
        shared: bool,
        timeout: Option<std::time::Duration>,
    ) -> Result<Option<JobLock>> {
        match self {
            Db::Sled(_) => Ok(Some(JobLock(None))),
            Db::Pg(pg) => Ok(pg.lock(name, shared, timeout)?.map(|l| JobLock(Some(l)))),
        }
    }

    /// Runs `f` over `trees` in one serializable transaction, again after a conflict,
    /// until it commits or aborts.
    pub fn transaction<const N: usize, T, E>(
        &self,
        trees: [&Tree; N],
        f: impl Fn(&[TxTree; N]) -> TxResult<T, E>,
    ) -> TransactionResult<T, E> {
        match self {
            Db::Sled(_) => sled_kv::transaction(trees, f),
            Db::Pg(pg) => pg.transaction(trees, f),
        }
    }
}

pub use pg::Notice;

/// Held while a job runs that one server at a time may run ([`Db::try_job_lock`]).
pub struct JobLock(#[allow(dead_code)] Option<pg::PgJobLock>);

/// One tree of a [`Db`].
#[derive(Clone)]
pub enum Tree {
    Sled(sled::Tree),
    Pg(pg::PgTree),
}

/// A change to make to a tree in one atomic write.
#[derive(Default, Debug, Clone)]
pub struct Batch {
    pub(crate) ops: Vec<(IVec, Option<IVec>)>,
}

impl Batch {
    pub fn insert(&mut self, key: impl Into<IVec>, value: impl Into<IVec>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn remove(&mut self, key: impl Into<IVec>) {
        self.ops.push((key.into(), None));
    }
}

/// A failed [`Tree::compare_and_swap`]: what the key holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareAndSwapError {
    pub current: Option<IVec>,
    pub proposed: Option<IVec>,
}

/// The key range `[lo, hi)` (or unbounded above) of the keys starting with `prefix`.
pub(crate) fn prefix_range(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let mut hi = prefix.to_vec();
    while let Some(last) = hi.pop() {
        if last < 0xff {
            hi.push(last + 1);
            return (Bound::Included(prefix.to_vec()), Bound::Excluded(hi));
        }
    }
    (Bound::Included(prefix.to_vec()), Bound::Unbounded)
}

fn owned_bounds<K: AsRef<[u8]>, R: RangeBounds<K>>(range: R) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let own = |b: Bound<&K>| match b {
        Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    };
    (own(range.start_bound()), own(range.end_bound()))
}

impl Tree {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<IVec>> {
        match self {
            Tree::Sled(t) => Ok(t.get(key)?),
            Tree::Pg(t) => t.get(key.as_ref()),
        }
    }

    /// Sets `key` to `value`; returns what it held.
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl Into<IVec>) -> Result<Option<IVec>> {
        match self {
            Tree::Sled(t) => Ok(t.insert(key, value)?),
            Tree::Pg(t) => t.insert(key.as_ref(), &value.into()),
        }
    }

    /// Removes `key`; returns what it held.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<Option<IVec>> {
        match self {
            Tree::Sled(t) => Ok(t.remove(key)?),
            Tree::Pg(t) => t.remove(key.as_ref()),
        }
    }

    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Sets `key` to `new` only if it holds `old` (`None`: absent / remove).
    pub fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        old: Option<impl AsRef<[u8]>>,
        new: Option<impl Into<IVec>>,
    ) -> Result<std::result::Result<(), CompareAndSwapError>> {
        let new = new.map(Into::into);
        match self {
            Tree::Sled(t) => {
                Ok(t.compare_and_swap(key, old, new)?
                    .map_err(|e| CompareAndSwapError {
                        current: e.current,
                        proposed: e.proposed,
                    }))
            }
            Tree::Pg(t) => t.compare_and_swap(key.as_ref(), old.as_ref().map(|o| o.as_ref()), new),
        }
    }

    /// Applies every change of `batch` at once.
    pub fn apply_batch(&self, batch: Batch) -> Result<()> {
        match self {
            Tree::Sled(t) => {
                let mut b = sled::Batch::default();
                for (k, v) in batch.ops {
                    match v {
                        Some(v) => b.insert(k, v),
                        None => b.remove(k),
                    }
                }
                Ok(t.apply_batch(b)?)
            }
            Tree::Pg(t) => t.apply_batch(batch),
        }
    }

    /// Every record, in key order.
    pub fn iter(&self) -> Iter {
        self.range::<&[u8], _>(..)
    }

    /// The records whose keys start with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        match self {
            Tree::Sled(t) => Iter::Sled(t.scan_prefix(prefix)),
            Tree::Pg(t) => Iter::Pg(t.scan(prefix_range(prefix.as_ref()))),
        }
    }

    /// The records whose keys are in `range`, in key order.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        match self {
            Tree::Sled(t) => Iter::Sled(t.range(owned_bounds(range))),
            Tree::Pg(t) => Iter::Pg(t.scan(owned_bounds(range))),
        }
    }

    /// How many records the tree holds (a full count: for tests and reports).
    pub fn len(&self) -> usize {
        match self {
            Tree::Sled(t) => t.len(),
            Tree::Pg(t) => t.len().unwrap_or(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Makes this tree's writes durable (the whole database's, in fact).
    pub fn flush(&self) -> Result<()> {
        match self {
            Tree::Sled(t) => {
                t.flush()?;
                Ok(())
            }
            Tree::Pg(t) => t.flush(),
        }
    }

    /// The tree's name.
    pub fn name(&self) -> String {
        match self {
            Tree::Sled(t) => String::from_utf8_lossy(&t.name()).into_owned(),
            Tree::Pg(t) => t.name().to_string(),
        }
    }
}

/// Records of a tree in key order (either end).
pub enum Iter {
    Sled(sled::Iter),
    Pg(pg::PgIter),
}

impl Iterator for Iter {
    type Item = Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sled(i) => i.next().map(|r| r.map_err(KvError::from)),
            Iter::Pg(i) => i.next(),
        }
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sled(i) => i.next_back().map(|r| r.map_err(KvError::from)),
            Iter::Pg(i) => i.next_back(),
        }
    }
}

impl Iter {
    /// Just the keys.
    pub fn keys(self) -> impl DoubleEndedIterator<Item = Result<IVec>> {
        self.map(|r| r.map(|(k, _)| k))
    }

    /// Just the values.
    pub fn values(self) -> impl DoubleEndedIterator<Item = Result<IVec>> {
        self.map(|r| r.map(|(_, v)| v))
    }
}

/// A tree as a transaction sees it.
#[derive(Clone)]
pub enum TxTree {
    Sled(sled::transaction::TransactionalTree),
    Pg(pg::PgTxTree),
}

impl TxTree {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<IVec>, UnabortableTransactionError> {
        match self {
            TxTree::Sled(t) => Ok(t.get(key)?),
            TxTree::Pg(t) => t.get(key.as_ref()),
        }
    }

    pub fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<IVec>,
    ) -> Result<(), UnabortableTransactionError> {
        match self {
            TxTree::Sled(t) => {
                t.insert(key.as_ref(), value.into())?;
                Ok(())
            }
            TxTree::Pg(t) => {
                t.put(key.as_ref(), Some(value.into()));
                Ok(())
            }
        }
    }

    /// Sends `payload` on `channel` to the database's listeners if (and when) the
    /// transaction commits (see [`Db::listen`]; nothing on sled).
    pub fn notify(&self, channel: &str, payload: &str) {
        if let TxTree::Pg(t) = self {
            t.notify(channel, payload);
        }
    }

    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), UnabortableTransactionError> {
        match self {
            TxTree::Sled(t) => {
                t.remove(key.as_ref())?;
                Ok(())
            }
            TxTree::Pg(t) => {
                t.put(key.as_ref(), None);
                Ok(())
            }
        }
    }
}

/// A failure inside a transaction that the closure cannot turn into its own abort.
#[derive(Debug)]
pub enum UnabortableTransactionError {
    /// Another transaction got in the way: the closure runs again.
    Conflict,
    Storage(KvError),
}

/// How a transaction's closure ends early.
#[derive(Debug)]
pub enum ConflictableTransactionError<E> {
    /// Give up with `E`; nothing is written.
    Abort(E),
    /// Run the closure again.
    Conflict,
    Storage(KvError),
}

/// How a transaction ended without committing.
#[derive(Debug)]
pub enum TransactionError<E> {
    Abort(E),
    Storage(KvError),
}

pub type TxResult<T, E> = std::result::Result<T, ConflictableTransactionError<E>>;
pub type TransactionResult<T, E> = std::result::Result<T, TransactionError<E>>;

/// Ends a transaction's closure, writing nothing, with `e`.
pub fn abort<T, E>(e: E) -> TxResult<T, E> {
    Err(ConflictableTransactionError::Abort(e))
}

impl<E> From<UnabortableTransactionError> for ConflictableTransactionError<E> {
    fn from(e: UnabortableTransactionError) -> Self {
        match e {
            UnabortableTransactionError::Conflict => ConflictableTransactionError::Conflict,
            UnabortableTransactionError::Storage(e) => ConflictableTransactionError::Storage(e),
        }
    }
}

impl From<sled::transaction::UnabortableTransactionError> for UnabortableTransactionError {
    fn from(e: sled::transaction::UnabortableTransactionError) -> Self {
        match e {
            sled::transaction::UnabortableTransactionError::Conflict => {
                UnabortableTransactionError::Conflict
            }
            sled::transaction::UnabortableTransactionError::Storage(e) => {
                UnabortableTransactionError::Storage(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_end_after_the_last_key_with_the_prefix() {
        assert_eq!(
            prefix_range(b"ab"),
            (
                Bound::Included(b"ab".to_vec()),
                Bound::Excluded(b"ac".to_vec())
            )
        );
        assert_eq!(
            prefix_range(&[1, 0xff, 0xff]),
            (
                Bound::Included(vec![1, 0xff, 0xff]),
                Bound::Excluded(vec![2])
            )
        );
        assert_eq!(
            prefix_range(&[0xff]),
            (Bound::Included(vec![0xff]), Bound::Unbounded)
        );
    }
}

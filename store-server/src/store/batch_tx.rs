//! One transaction for a batch of namespace changes.
//!
//! sled writes its log buffer out (and waits for the disk) twice at the start of every
//! transaction, so a device's batch of 1,000 creates and attribute changes cost 2,000 waits
//! when each change was its own transaction. [`Store::ns_tx`] runs a namespace change's
//! body in the transaction of the batch this thread is applying, if any, and in a
//! transaction of its own otherwise; [`Store::in_one_transaction`] opens the batch's.
//! What a change does after it is committed (feed, audit, shares) waits for the batch's
//! commit ([`Store::after_commit`]), so a batch that is retried or cut short announces only
//! what it committed.

use super::{Store, StoreError};
use crate::kv::{ConflictableTransactionError, TxTree};
use std::cell::{Cell, RefCell};

/// The trees a namespace change may touch: nodes, dirents, lineage, graves, names,
/// versions.
pub(crate) type NsTrees = (TxTree, TxTree, TxTree, TxTree, TxTree, TxTree);

type TxResult<T, E = StoreError> = std::result::Result<T, ConflictableTransactionError<E>>;

/// Work to do once the changes are committed.
type AfterCommit = Box<dyn FnOnce(&Store)>;

thread_local! {
    /// The transaction of the batch this thread is applying.
    static BATCH: RefCell<Option<NsTrees>> = const { RefCell::new(None) };
    /// A change of that batch met a conflict (sled retries the whole batch).
    static CONFLICTED: Cell<bool> = const { Cell::new(false) };
    /// What the batch's changes do once committed, in order.
    static AFTER: RefCell<Vec<AfterCommit>> = const { RefCell::new(Vec::new()) };
    /// Node ids drawn for the batch before its transaction (sled cannot draw one inside),
    /// and how many of them the current attempt used.
    static FRESH_IDS: RefCell<(Vec<u64>, usize)> = const { RefCell::new((Vec::new(), 0)) };
}

/// Whether this thread is applying a batch: the database is then read and written only
/// through the batch's transaction (sled holds its global lock for the transaction's
/// length; any other call would wait for it forever).
pub(crate) fn in_batch() -> bool {
    BATCH.with(|b| b.borrow().is_some())
}

/// The next node id drawn for the current batch, `None` outside a batch.
pub(crate) fn fresh_id() -> Option<Result<u64, StoreError>> {
    if !in_batch() {
        return None;
    }
    Some(FRESH_IDS.with(|f| {
        let (ids, used) = &mut *f.borrow_mut();
        let id = ids.get(*used).copied().ok_or_else(|| {
            StoreError::Corrupt("a batch made more nodes than it announced".into())
        })?;
        *used += 1;
        Ok(id)
    }))
}

/// Clears the thread's batch state however the batch's closure ends.
struct Scope;

impl Drop for Scope {
    fn drop(&mut self) {
        BATCH.with(|b| b.borrow_mut().take());
    }
}

impl Store {
    /// A transaction over the namespace trees.
    fn ns_transaction<T, E>(
        &self,
        f: impl Fn(&NsTrees) -> TxResult<T, E>,
    ) -> crate::kv::TransactionResult<T, E> {
        let trees = [
            &self.nodes,
            &self.dirents,
            &self.lineage,
            &self.graves,
            &self.names,
            &self.versions,
        ];
        self.db.transaction(trees, |[n, d, l, g, na, v]| {
            f(&(
                n.clone(),
                d.clone(),
                l.clone(),
                g.clone(),
                na.clone(),
                v.clone(),
            ))
        })
    }

    /// Runs `f` on the namespace trees: inside the current batch's transaction, or in a
    /// transaction of its own.
    pub(crate) fn ns_tx<T>(&self, f: impl Fn(&NsTrees) -> TxResult<T>) -> Result<T, StoreError> {
        let current = BATCH.with(|b| b.borrow().clone());
        let Some(trees) = current else {
            let outcome = self.ns_transaction(|trees| f(trees));
            self.places.settle();
            return outcome.map_err(super::namespace::tx_error);
        };
        match f(&trees) {
            Ok(v) => Ok(v),
            Err(ConflictableTransactionError::Abort(e)) => Err(e),
            Err(ConflictableTransactionError::Conflict) => {
                CONFLICTED.with(|c| c.set(true));
                Err(StoreError::Corrupt("transaction conflict".into()))
            }
            Err(ConflictableTransactionError::Storage(e)) => Err(StoreError::Db(e)),
        }
    }

    /// Runs `f` now, or once the current batch is committed.
    pub(crate) fn after_commit(&self, f: impl FnOnce(&Store) + 'static) {
        if BATCH.with(|b| b.borrow().is_some()) {
            AFTER.with(|a| a.borrow_mut().push(Box::new(f)));
        } else {
            f(self);
        }
    }

    /// Applies changes `0..n` (`change(i)`) in one transaction, in order, stopping at the
    /// first that fails: the changes before it are committed together and it is not.
    /// `new_nodes` is how many nodes the changes may make without an id of their own.
    /// Returns their results and the failure, if any.
    pub fn in_one_transaction<R>(
        &self,
        n: usize,
        new_nodes: usize,
        change: impl Fn(usize) -> Result<R, StoreError>,
    ) -> (Vec<R>, Option<StoreError>) {
        let mut ids = Vec::with_capacity(new_nodes);
        for _ in 0..new_nodes {
            match self.new_node_id() {
                Ok(id) => ids.push(id),
                Err(e) => return (Vec::new(), Some(e)),
            }
        }
        FRESH_IDS.with(|f| *f.borrow_mut() = (ids, 0));
        let mut upto = n;
        let mut failure = None;
        loop {
            if upto == 0 {
                return (Vec::new(), failure);
            }
            match self.try_in_one_transaction(upto, &change) {
                Ok(results) => return (results, failure),
                // Cut short: commit the changes before the failed one, then report it.
                Err((at, e)) => {
                    upto = at;
                    failure = Some(e);
                }
            }
        }
    }

    /// Applies changes `0..n` in one transaction, or none of them: `Err((i, e))` when
    /// change `i` failed with `e`.
    fn try_in_one_transaction<R>(
        &self,
        n: usize,
        change: &impl Fn(usize) -> Result<R, StoreError>,
    ) -> Result<Vec<R>, (usize, StoreError)> {
        let outcome = self.ns_transaction(|trees| {
            AFTER.with(|a| a.borrow_mut().clear());
            FRESH_IDS.with(|f| f.borrow_mut().1 = 0);
            CONFLICTED.with(|c| c.set(false));
            BATCH.with(|b| *b.borrow_mut() = Some(trees.clone()));
            let _scope = Scope;
            let mut results = Vec::with_capacity(n);
            for i in 0..n {
                match change(i) {
                    Ok(r) => results.push(r),
                    Err(_) if CONFLICTED.with(|c| c.get()) => {
                        return Err(ConflictableTransactionError::Conflict)
                    }
                    Err(e) => {
                        return Err(ConflictableTransactionError::Abort((i, e)));
                    }
                }
            }
            Ok(results)
        });
        self.places.settle();
        let after = AFTER.with(|a| std::mem::take(&mut *a.borrow_mut()));
        match outcome {
            Ok(results) => {
                // The feed gets one entry for the batch's changes, not one per change.
                self.bundling_feed(|| {
                    for f in after {
                        f(self);
                    }
                });
                Ok(results)
            }
            Err(crate::kv::TransactionError::Abort(failed)) => Err(failed),
            // Nothing was committed: report it as the first change's failure.
            Err(crate::kv::TransactionError::Storage(e)) => Err((0, StoreError::Db(e))),
        }
    }
}

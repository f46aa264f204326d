//! The client's one policy for poisoned locks: a mutex whose holder panicked is used as it
//! is. Every state behind the client's mutexes is plain data that each holder leaves
//! consistent between statements (caches, queues, counters), so the data is still right;
//! skipping it instead (treating a poisoned cache as empty, a poisoned queue as stopped)
//! would make one panic turn into wrong answers elsewhere.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub trait LockOrRecover<T> {
    /// Locks, taking over the data if a holder panicked.
    fn lock_or_recover(&self) -> MutexGuard<'_, T>;
}

impl<T> LockOrRecover<T> for Mutex<T> {
    fn lock_or_recover(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

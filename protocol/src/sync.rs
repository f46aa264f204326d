//! The one policy for poisoned locks, in the client and the server alike: a mutex whose
//! holder panicked is used as it is. Every state behind Shelf's mutexes is plain data that
//! each holder leaves consistent between statements (caches, queues, counters, a session's
//! sign-in), so the data is still right; skipping it instead (treating a poisoned cache as
//! empty, a poisoned session as signed out) would make one panic turn into wrong answers
//! elsewhere.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub trait LockOrRecover<T> {
    /// Locks, taking over the data if a holder panicked.
    fn lock_or_recover(&self) -> MutexGuard<'_, T>;
}

impl<T> LockOrRecover<T> for Mutex<T> {
    fn lock_or_recover(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub trait RwLockOrRecover<T> {
    /// Locks for reading, taking over the data if a writer panicked.
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T>;
    /// Locks for writing, taking over the data if a writer panicked.
    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T> RwLockOrRecover<T> for RwLock<T> {
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

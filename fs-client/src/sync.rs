//! The client's locks follow the one policy for poisoned locks
//! ([`shelf_protocol::sync`]: a mutex whose holder panicked is used as it is).

pub use shelf_protocol::sync::{LockOrRecover, RwLockOrRecover};

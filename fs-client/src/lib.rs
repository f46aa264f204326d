//! `shelf`: the Shelf client. Mounts a user's store with FUSE and a local write-back cache.
//!
//! * [`config`] — config/cache folders and the login record.
//! * [`remote`] — the multiplexed TLS connection to the server.
//! * [`core`] — the filesystem core (no fuser, testable without a mount).
//! * [`cache`] — chunk cache, staging files, upload journal.
//! * [`chunker`] — FastCDC + BLAKE3.
//! * [`transfer`] — sending file content: only the chunks the server lacks.
//! * [`ingest`] — import and scheduled backup of local folders.
//! * [`fuse`] — the thin fuser adapter.
//! * [`blocking`] — which FUSE thread waits for the kernel's next request.
//! * [`sync`] — the one policy for poisoned locks.

pub mod blocking;
pub mod cache;
pub use shelf_protocol::chunker;
pub mod config;
pub mod core;
pub mod fuse;
pub mod ingest;
pub mod remote;
pub mod sync;
pub mod transfer;

//! `shelf-server`: the store behind every Shelf mount.
//!
//! Data flows one way: [`server`] accepts TLS 1.3 connections and decodes frames,
//! [`handler`] turns each request into a store call after [`authz::authorize`] has approved
//! it, and [`store`] keeps accounts, sessions, the namespace and versions in sled and chunk
//! bodies in a [`chunkstore::ChunkStore`] (append-only pack files).
//!
//! * [`control`] — admin commands, run here or by a running server over its control socket.
//! * [`datadir`] — the on-disk layout of a data folder and `init`.
//! * [`tls`] — certificate generation, fingerprints, the TLS-1.3-only server config.
//! * [`store`] — the sled database: accounts, sessions, nodes, directory entries, versions.
//! * [`chunkstore`] — content-addressed chunk bodies in pack files.
//! * [`object_packs`] — the same in S3-compatible object storage (Garage, MinIO, AWS).
//! * [`crypto`] — encryption at rest: master key, per-account data keys, sealing.
//! * [`sealed_chunks`] — the chunk store wrapper that seals every body.
//! * [`authz`] — the one authorisation function every request passes.
//! * [`handler`] — request → store call → response.
//! * [`server`] — listener, per-connection task, limits, timeouts, graceful shutdown.
//! * [`metrics`] — Prometheus metrics (`--metrics ADDR`).
//! * [`web`] — the web app (`--web ADDR`): another door onto the same handler.

pub mod authz;
pub mod chunkstore;
pub mod control;
pub mod crypto;
pub mod datadir;
pub mod error;
pub mod handler;
pub mod kv;
pub mod metrics;
pub mod migrate;
pub mod object_packs;
pub mod sealed_chunks;
pub mod server;
pub mod store;
pub mod tls;
pub mod web;

pub use error::StoreError;

//! The Shelf wire protocol: every type that crosses the network between `shelf` (the client)
//! and `shelf-server`, and nothing else.
//!
//! * [`messages`] — the request/response/event enums and the records they carry.
//! * [`frame`] — length-prefixed postcard framing over any `AsyncRead`/`AsyncWrite`, with a
//!   hard size cap.
//! * [`error`] — typed error codes that travel in responses and map to errno on the client.
//! * [`names`] — the one validation of file names both sides apply.
//! * [`chunk`] — content-addressed chunk ids (BLAKE3 of the plaintext).
//!
//! A connection starts with [`messages::ClientFrame::Hello`] naming [`MAGIC`] and
//! [`PROTOCOL_VERSION`]; the server answers `Hello` or `HelloRejected`, so a version mismatch
//! is a clear error rather than a decode failure or a hang. After that every request carries an
//! id that its response echoes, so many requests can be in flight on one connection.

pub mod category;
pub mod chunk;
pub mod chunker;
pub mod error;
pub mod frame;
pub mod messages;
pub mod names;
pub mod sync;

pub use chunk::ChunkId;
pub use error::{ErrorCode, WireError};
pub use frame::{FrameError, FrameReader, FrameWriter, MAX_FRAME};
pub use messages::*;
pub use names::is_valid_agent;

/// First four bytes of every client hello: guards against talking to something that is not Shelf.
pub const MAGIC: [u8; 4] = *b"SHLF";

/// Bumped on every incompatible change of [`messages`].
pub const PROTOCOL_VERSION: u32 = 3;

/// Largest chunk body the server accepts (FastCDC's maximum chunk size is below this).
pub const MAX_CHUNK: usize = 1 << 20;

/// Most chunks one `PutChunks`/`GetChunks` may carry (a `GetChunks` answer of this many
/// maximum-size chunks still fits in a frame).
pub const MAX_CHUNKS_PER_REQUEST: usize = 16;

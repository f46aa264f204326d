//! The server library's error type. Anything that reaches a client is turned into a
//! [`shelf_protocol::WireError`] by [`StoreError::to_wire`], which never leaks internals
//! beyond a short message (details go to the log, once, at the handler boundary).

use crate::crypto::CryptoError;
use shelf_protocol::{ErrorCode, WireError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A refusal with a protocol error code (not found, exists, denied, …).
    #[error("{0:?}")]
    Refused(ErrorCode),
    #[error("database error: {0}")]
    Db(#[from] crate::kv::KvError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// Encryption at rest: a value failed authentication (integrity) or a key is missing.
    #[error("{0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    /// A job one server at a time runs (prune, scrub) is running on another server.
    #[error("another server of this store is running {0} now")]
    JobElsewhere(&'static str),
    /// Another server of the store did not pause its commits for a garbage collection.
    #[error("the other servers of this store did not pause their commits in time; garbage collection skipped")]
    ServersBusy,
}

impl From<ErrorCode> for StoreError {
    fn from(code: ErrorCode) -> StoreError {
        StoreError::Refused(code)
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> StoreError {
        StoreError::Db(e.into())
    }
}

impl From<postcard::Error> for StoreError {
    fn from(e: postcard::Error) -> StoreError {
        StoreError::Corrupt(e.to_string())
    }
}

impl StoreError {
    pub fn to_wire(&self) -> WireError {
        match self {
            StoreError::Refused(code) => WireError::from(*code),
            StoreError::Db(e) if e.io().and_then(|e| e.raw_os_error()) == Some(libc::ENOSPC) => {
                WireError::from(ErrorCode::NoSpace)
            }
            StoreError::Io(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                WireError::from(ErrorCode::NoSpace)
            }
            StoreError::Io(e) if e.raw_os_error() == Some(libc::EDQUOT) => {
                WireError::from(ErrorCode::NoSpace)
            }
            StoreError::Corrupt(_) | StoreError::Crypto(CryptoError::Tampered) => {
                WireError::from(ErrorCode::Corrupt)
            }
            StoreError::Db(_) | StoreError::Io(_) | StoreError::Hash(_) | StoreError::Crypto(_) => {
                WireError::from(ErrorCode::Internal)
            }
            StoreError::JobElsewhere(_) | StoreError::ServersBusy => {
                WireError::new(ErrorCode::WouldBlock, self.to_string())
            }
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.to_wire().code
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

//! The filesystem core's error, and the one place it becomes an errno. The match is
//! exhaustive on purpose; debatable choices carry a comment.

use crate::remote::RemoteError;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("local cache i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("no such entry")]
    NotFound,
    #[error("invalid argument")]
    Invalid,
    #[error("read-only")]
    ReadOnly,
    #[error("not supported")]
    Unsupported,
    #[error("no such attribute")]
    NoAttribute,
    #[error("unknown file handle")]
    BadHandle,
    #[error("permission denied")]
    Denied,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("the server answered {0} with an unexpected response")]
    Unexpected(&'static str),
}

impl FsError {
    pub fn errno(&self) -> i32 {
        match self {
            FsError::Remote(e) => match e {
                RemoteError::Server(w) => w.code.errno(),
                // The server is unreachable: the operation could not be done. (Issue 4 turns
                // many of these into queued offline work.)
                RemoteError::Unreachable { .. }
                | RemoteError::Disconnected(_)
                | RemoteError::Timeout(_) => libc::EIO,
                RemoteError::VersionMismatch(_) => libc::EPROTO,
                RemoteError::Protocol(_) => libc::EIO,
            },
            // Local cache errors keep their own errno (ENOSPC when the cache disk is full).
            FsError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            FsError::NotFound => libc::ENOENT,
            FsError::Invalid => libc::EINVAL,
            FsError::ReadOnly => libc::EROFS,
            FsError::Unsupported => libc::EOPNOTSUPP,
            FsError::NoAttribute => libc::ENODATA,
            FsError::BadHandle => libc::EBADF,
            FsError::Denied => libc::EACCES,
            FsError::NotPermitted => libc::EPERM,
            FsError::Unexpected(_) => libc::EIO,
        }
    }
}

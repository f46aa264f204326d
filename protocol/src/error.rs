//! Typed error codes. The server answers a failed request with a [`WireError`]: a code the
//! client maps to errno with [`ErrorCode::errno`] and a human message for the CLI.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a request failed. Each variant maps to exactly one errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub enum ErrorCode {
    /// No such file, directory or node.
    NotFound,
    /// The name is already taken.
    Exists,
    /// rmdir of a directory that still has entries.
    NotEmpty,
    /// A directory was needed.
    NotDir,
    /// A non-directory was needed.
    IsDir,
    /// The session may not do this to this node.
    PermissionDenied,
    /// The target is read-only (viewer role, `.versions`, read-only share).
    ReadOnly,
    /// The account's quota would be exceeded.
    QuotaExceeded,
    /// The server has no space left.
    NoSpace,
    /// A name that is empty, `.`, `..`, or holds `/` or NUL.
    InvalidName,
    /// A name over 255 bytes or a symlink target over 4095.
    NameTooLong,
    /// A name the store reserves (`.versions`).
    Reserved,
    /// Any other malformed argument.
    InvalidArgument,
    /// Wrong user name or password (deliberately not saying which).
    AuthFailed,
    /// The request needs a logged-in session.
    AuthRequired,
    /// The session token is unknown, expired or revoked.
    SessionExpired,
    /// The account is temporarily locked after failed logins.
    Locked,
    /// Client and server speak different protocol versions.
    VersionMismatch,
    /// A frame or chunk over the size cap.
    TooLarge,
    /// The commit's base version is no longer the current one.
    Conflict,
    /// The extended attribute does not exist.
    NoAttribute,
    /// The operation is not supported by Shelf.
    Unsupported,
    /// A rename would move a directory into itself.
    Busy,
    /// Stored data failed its integrity check.
    Corrupt,
    /// A chunk referenced by a commit is not on the server.
    MissingChunk,
    /// The server failed; the message says why.
    Internal,
    /// Another holder (here or on another device) has a conflicting lock.
    WouldBlock,
    /// A rename between two accounts' trees (into or out of a shared folder).
    CrossDevice,
}

impl ErrorCode {
    /// The errno a filesystem call reports for this code. Exhaustive on purpose: a new code
    /// must choose its errno here.
    pub fn errno(self) -> i32 {
        match self {
            ErrorCode::NotFound => libc::ENOENT,
            ErrorCode::Exists => libc::EEXIST,
            ErrorCode::NotEmpty => libc::ENOTEMPTY,
            ErrorCode::NotDir => libc::ENOTDIR,
            ErrorCode::IsDir => libc::EISDIR,
            ErrorCode::PermissionDenied => libc::EACCES,
            ErrorCode::ReadOnly => libc::EROFS,
            ErrorCode::QuotaExceeded => libc::EDQUOT,
            ErrorCode::NoSpace => libc::ENOSPC,
            ErrorCode::InvalidName => libc::EINVAL,
            ErrorCode::NameTooLong => libc::ENAMETOOLONG,
            // Creating `.versions` is refused like writing into it: the name is read-only.
            ErrorCode::Reserved => libc::EROFS,
            ErrorCode::InvalidArgument => libc::EINVAL,
            // Authentication problems surface to file operations as "permission denied".
            ErrorCode::AuthFailed | ErrorCode::AuthRequired | ErrorCode::SessionExpired => {
                libc::EACCES
            }
            ErrorCode::Locked => libc::EACCES,
            ErrorCode::VersionMismatch => libc::EPROTO,
            ErrorCode::TooLarge => libc::EFBIG,
            // A conflict is resolved by the client; if it ever reaches a syscall, retrying helps.
            ErrorCode::Conflict => libc::EAGAIN,
            ErrorCode::NoAttribute => libc::ENODATA,
            ErrorCode::Unsupported => libc::EOPNOTSUPP,
            ErrorCode::Busy => libc::EINVAL,
            ErrorCode::Corrupt => libc::EIO,
            ErrorCode::MissingChunk => libc::EIO,
            ErrorCode::WouldBlock => libc::EAGAIN,
            ErrorCode::Internal => libc::EIO,
            ErrorCode::CrossDevice => libc::EXDEV,
        }
    }
}

/// An error as it travels: the code plus a message meant for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for WireError {}

impl From<ErrorCode> for WireError {
    fn from(code: ErrorCode) -> WireError {
        let message = match code {
            ErrorCode::NotFound => "no such file or directory",
            ErrorCode::Exists => "file exists",
            ErrorCode::NotEmpty => "directory not empty",
            ErrorCode::NotDir => "not a directory",
            ErrorCode::IsDir => "is a directory",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::ReadOnly => "read-only",
            ErrorCode::QuotaExceeded => "quota exceeded",
            ErrorCode::NoSpace => "no space left on the server",
            ErrorCode::InvalidName => "invalid name (empty, '.', '..', or contains '/' or NUL)",
            ErrorCode::NameTooLong => "name too long (limit 255 bytes)",
            ErrorCode::Reserved => "the name .versions is reserved for file history",
            ErrorCode::InvalidArgument => "invalid argument",
            ErrorCode::AuthFailed => "wrong user name or password",
            ErrorCode::AuthRequired => "not logged in",
            ErrorCode::SessionExpired => "session expired or revoked: run `shelf login` again",
            ErrorCode::Locked => "account temporarily locked after failed logins",
            ErrorCode::VersionMismatch => "protocol version mismatch",
            ErrorCode::TooLarge => "too large",
            ErrorCode::Conflict => "the file changed on the server meanwhile",
            ErrorCode::NoAttribute => "no such attribute",
            ErrorCode::Unsupported => "operation not supported",
            ErrorCode::Busy => "cannot move a directory into itself",
            ErrorCode::Corrupt => "stored data failed its integrity check",
            ErrorCode::MissingChunk => "a chunk of this version is missing on the server",
            ErrorCode::WouldBlock => "the file is locked by another holder",
            ErrorCode::Internal => "internal server error",
            ErrorCode::CrossDevice => "cannot move between your files and a shared folder",
        };
        WireError::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_is_posix() {
        assert_eq!(ErrorCode::NotFound.errno(), libc::ENOENT);
        assert_eq!(ErrorCode::NotEmpty.errno(), libc::ENOTEMPTY);
        assert_eq!(ErrorCode::ReadOnly.errno(), libc::EROFS);
        assert_eq!(ErrorCode::QuotaExceeded.errno(), libc::EDQUOT);
        assert_eq!(ErrorCode::NameTooLong.errno(), libc::ENAMETOOLONG);
    }
}

//! File-name validation, applied by the client before it sends and by the server before it
//! writes, so a bad name is refused with the same clear error on both sides and nothing is
//! written on rejection.

use crate::error::ErrorCode;

/// Longest name in bytes, as on ext4 and most POSIX filesystems.
pub const MAX_NAME: usize = 255;

/// The reserved name of the per-directory virtual history folder.
pub const VERSIONS_DIR: &str = ".versions";

/// The name a version has in `.versions/`: `NAME.vNN` (two digits, more once past 99),
/// the same in the mount and over WebDAV.
pub fn version_name(name: &str, number: u64) -> String {
    format!("{name}.v{number:02}")
}

/// Longest symlink target in bytes (Linux's PATH_MAX).
pub const MAX_SYMLINK: usize = 4095;

/// Checks one path component. `Err` carries the code to send back.
pub fn validate_name(name: &str) -> Result<(), ErrorCode> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(ErrorCode::InvalidName);
    }
    if name.len() > MAX_NAME {
        return Err(ErrorCode::NameTooLong);
    }
    if name.bytes().any(|b| b == b'/' || b == 0) {
        return Err(ErrorCode::InvalidName);
    }
    if name == VERSIONS_DIR {
        return Err(ErrorCode::Reserved);
    }
    Ok(())
}

/// Checks a symlink target: any bytes but NUL, at most [`MAX_SYMLINK`].
pub fn validate_symlink_target(target: &str) -> Result<(), ErrorCode> {
    if target.is_empty() || target.contains('\0') {
        return Err(ErrorCode::InvalidArgument);
    }
    if target.len() > MAX_SYMLINK {
        return Err(ErrorCode::NameTooLong);
    }
    Ok(())
}

/// `YYYY-MM-DD HHMMSS` in UTC (for conflicted-copy names).
pub fn civil(secs: i64) -> String {
    let [y, m, d, hh, mm, ss] = crate::Timestamp { secs, nanos: 0 }.utc();
    format!("{y:04}-{m:02}-{d:02} {hh:02}{mm:02}{ss:02}")
}

/// `report.txt` → `report (conflicted copy 2026-11-22 231500 from laptop).txt`, kept
/// within the 255-byte name limit. Used by the server for conflicting commits and by a
/// client whose offline create finds the name taken.
pub fn conflict_name(name: &str, at: crate::Timestamp, device: &str) -> String {
    let when = civil(at.secs);
    tagged_name(name, format!(" (conflicted copy {when} from {device})"))
}

/// `report.txt` → `report (not saved - read-only, 2026-11-22 231500 from laptop).txt`: a
/// copy of content the server refused where it was written (see the client's
/// `core::refused`), within the name limit.
pub fn refused_name(name: &str, why: &str, at: crate::Timestamp, device: &str) -> String {
    let when = civil(at.secs);
    tagged_name(name, format!(" (not saved - {why}, {when} from {device})"))
}

/// `name` with `tag` before its extension, both cut to fit in [`MAX_NAME`] bytes.
fn tagged_name(name: &str, mut tag: String) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    while tag.len() + ext.len() > MAX_NAME / 2 && !tag.is_empty() {
        tag.pop();
    }
    let mut stem = stem.to_string();
    while stem.len() + tag.len() + ext.len() > MAX_NAME && !stem.is_empty() {
        stem.pop();
    }
    format!("{stem}{tag}{ext}")
}

/// Whether `agent` may name a program on a device ([`crate::Request::SetAgent`]): 1–16
/// characters of `[a-z0-9-]`, so that `DEVICE AGENT` stays a valid part of a file name.
pub fn is_valid_agent(agent: &str) -> bool {
    (1..=16).contains(&agent.len())
        && agent
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_names_keep_the_extension_and_fit() {
        let at = crate::Timestamp {
            secs: 1_795_000_000,
            nanos: 0,
        };
        let when = civil(at.secs);
        assert_eq!(
            refused_name("doc.txt", "read-only", at, "laptop"),
            format!("doc (not saved - read-only, {when} from laptop).txt")
        );
        assert_eq!(
            refused_name(".bashrc", "over quota", at, "pc"),
            format!(".bashrc (not saved - over quota, {when} from pc)")
        );
        let long = format!("{}.tar.gz", "x".repeat(300));
        assert!(refused_name(&long, "read-only", at, "pc").len() <= MAX_NAME);
    }

    #[test]
    fn accepts_ordinary_names() {
        for n in [
            "a",
            "report.txt",
            ".hidden",
            "..x",
            "名前.jpg",
            &"x".repeat(255),
        ] {
            assert_eq!(validate_name(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(validate_name(""), Err(ErrorCode::InvalidName));
        assert_eq!(validate_name("."), Err(ErrorCode::InvalidName));
        assert_eq!(validate_name(".."), Err(ErrorCode::InvalidName));
        assert_eq!(validate_name("a/b"), Err(ErrorCode::InvalidName));
        assert_eq!(validate_name("a\0b"), Err(ErrorCode::InvalidName));
        assert_eq!(validate_name(&"x".repeat(256)), Err(ErrorCode::NameTooLong));
        assert_eq!(validate_name(".versions"), Err(ErrorCode::Reserved));
    }

    #[test]
    fn symlink_targets() {
        assert!(validate_symlink_target("../a/b").is_ok());
        assert!(validate_symlink_target("").is_err());
        assert!(validate_symlink_target(&"x".repeat(4096)).is_err());
    }
}

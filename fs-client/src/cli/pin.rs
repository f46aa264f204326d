//! `shelf pin PATH…` / `shelf unpin PATH…`: keep files fully cached for offline use, through
//! the mount (the reserved extended attribute `user.shelf.pin`; see `core::pins`).

use anyhow::{bail, Context};
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const PIN_XATTR: &str = "user.shelf.pin";

fn c_path(path: &Path) -> anyhow::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).context("a path with a NUL byte")
}

fn set_pin(path: &Path, on: bool) -> std::io::Result<()> {
    let p = c_path(path).map_err(std::io::Error::other)?;
    let name = CString::new(PIN_XATTR).expect("no NUL");
    // SAFETY: valid NUL-terminated strings and a 1-byte buffer that outlives the call.
    let rc = unsafe {
        if on {
            libc::setxattr(p.as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0)
        } else {
            libc::removexattr(p.as_ptr(), name.as_ptr())
        }
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // Unpinning something that was not pinned is fine.
        if !on && e.raw_os_error() == Some(libc::ENODATA) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// Every regular file below `dir` (`.versions` folders are never listed, so not walked).
fn files_below(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            files_below(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push((entry.path(), entry.metadata()?.len()));
        }
    }
    Ok(())
}

fn check_in_mount(path: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
    if !super::mount::shelf_mounts()
        .iter()
        .any(|m| abs.starts_with(m) && abs != Path::new(m))
    {
        bail!(
            "{} is not inside a mounted Shelf store (pin works through the mount)",
            path.display()
        );
    }
    Ok(abs)
}

pub fn pin(paths: &[PathBuf], on: bool) -> anyhow::Result<()> {
    let verb = if on { "pinning" } else { "unpinning" };
    for path in paths {
        let abs = check_in_mount(path)?;
        let mut files = Vec::new();
        let is_dir = abs.is_dir();
        if is_dir {
            files_below(&abs, &mut files)?;
        } else {
            files.push((abs.clone(), abs.metadata()?.len()));
        }
        let total: u64 = files.iter().map(|(_, n)| n).sum();
        let mut done = 0u64;
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        for (i, (f, len)) in files.iter().enumerate() {
            if tty {
                eprint!(
                    "\r{verb} {}: {}/{} files, {} of {}   ",
                    path.display(),
                    i + 1,
                    files.len(),
                    super::human(done),
                    super::human(total)
                );
                let _ = std::io::stderr().flush();
            }
            set_pin(f, on).with_context(|| format!("{verb} {}", f.display()))?;
            done += len;
        }
        if is_dir {
            // The folder itself: files added to it later are pinned too.
            set_pin(&abs, on).with_context(|| format!("{verb} {}", abs.display()))?;
        }
        if tty {
            eprintln!();
        }
        println!(
            "{} {}: {} file(s), {}",
            if on { "pinned" } else { "unpinned" },
            path.display(),
            files.len(),
            super::human(total)
        );
    }
    Ok(())
}

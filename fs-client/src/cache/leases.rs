//! Asking the kernel who else has a local file open, with file leases (`F_SETLEASE`).
//!
//! A lease is granted only when no other open file description conflicts with it, and the
//! kernel counts every one: descriptors of any process, and the files a memory mapping
//! keeps alive after its descriptor was closed (FUSE passthrough maps a staging file itself
//! into the processes that `mmap` the mounted file, where `/proc/PID/maps` does not name
//! it). Each lease here goes with its descriptor at once. A lease broken while held would
//! signal SIGIO, whose default kills the process, so the signal is ignored (nothing here
//! uses it).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

fn lease(path: &Path, kind: libc::c_int) -> bool {
    static IGNORE_SIGIO: std::sync::Once = std::sync::Once::new();
    IGNORE_SIGIO.call_once(|| {
        // SAFETY: sets a signal's disposition to "ignore"; no handler runs.
        unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
    });
    let Ok(file) = File::open(path) else {
        return false;
    };
    // SAFETY: fcntl on a descriptor owned by `file`, alive for the call.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, kind) == 0 }
}

/// Whether no descriptor or mapping anywhere has the file at `path` open for writing (a
/// read lease is granted only then).
pub fn nobody_writes(path: &Path) -> bool {
    lease(path, libc::F_RDLCK)
}

/// Whether nothing but this call has the file at `path` open at all, for reading or
/// writing, through a descriptor or a mapping (a write lease is granted only then).
pub fn nobody_has_open(path: &Path) -> bool {
    lease(path, libc::F_WRLCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_see_descriptors_and_mappings_that_outlive_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [7u8; 4096]).unwrap();
        assert!(nobody_writes(&path) && nobody_has_open(&path));

        let reader = File::open(&path).unwrap();
        assert!(nobody_writes(&path), "a reader does not write");
        assert!(!nobody_has_open(&path), "a reader has it open");
        drop(reader);
        assert!(nobody_has_open(&path));

        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert!(!nobody_writes(&path) && !nobody_has_open(&path));
        drop(writer);

        // A shared mapping keeps the file open after its descriptor is closed.
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        // SAFETY: a fresh shared mapping of an open 4 KiB file, unmapped below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                rw.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        drop(rw);
        assert!(!nobody_writes(&path), "a writable mapping writes");
        assert!(!nobody_has_open(&path), "a mapping has it open");
        // SAFETY: unmapping the mapping made above.
        unsafe { libc::munmap(map, 4096) };
        assert!(nobody_writes(&path) && nobody_has_open(&path));
    }
}

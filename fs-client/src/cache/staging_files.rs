//! Making and giving up staging files (`CACHE/staging/<node>`) off the calls that need them.
//!
//! On ext4 both ends of a small file's life are slow next to the rest of a FUSE call:
//! allocating an inode scans the inode bitmap (and, without a journal, steps over every
//! inode freed in the last minutes: after an `rm -r` of 5,000 files a create took ~0.6 ms
//! on this project's test machine), and unlinking a file whose blocks were written frees
//! them (with `discard`, ~0.15 ms). So a background thread does that work:
//!
//! * [`StagingFiles::remove`] queues a staging file and returns at once. The thread waits
//!   while removals keep coming (an `rm -r` is not slowed by the deleting), then empties
//!   it and keeps it as stock in `CACHE/spare/` when nothing can still see its content, and
//!   deletes it otherwise: when a descriptor this client handed out is still alive, or,
//!   for a file the kernel had for local I/O, when a lease shows it still open somewhere
//!   (FUSE passthrough maps the staging file itself into processes that `mmap` the file,
//!   and a mapping outlives the file's close; see [`super::leases`]). Reusing files keeps
//!   ext4 from allocating and freeing an inode per small file. A deleted file's readers
//!   keep their content, as with any unlinked file.
//! * [`StagingFiles::create`] takes a file from the stock by rename (one directory
//!   operation; the stock's newest files are kept open, so most creates need no `open`),
//!   and makes a new one only when the stock is out; the thread tops the stock up with new
//!   empty files while idle.
//!
//! A path queued for removal and created again before its turn is deleted at once and made
//! anew, and one being worked on right then is waited for: a new file never meets an old
//! removal. Queued files a killed client did not get to are staging files without a
//! journal record, which the next mount gives up (see `FsCore::replay_journal`).

use crate::sync::LockOrRecover;
use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// New empty files kept ready.
const STOCK: usize = 512;
/// Emptied files kept for reuse, at most.
const MAX_STOCK: usize = 16_384;
/// Stock files kept open, at most.
const OPEN_SPARES: usize = STOCK;
/// Files given up together (one scan of the process maps for all).
const BATCH: usize = 1024;
/// How long the thread waits for more removals before working on the queue.
const GATHER: Duration = Duration::from_millis(20);
/// Removals gathered at most before the thread works on them (bounds the space held).
const MAX_GATHERED: usize = 16 * BATCH;

pub struct StagingFiles {
    shared: Arc<Shared>,
}

struct Shared {
    spare_dir: PathBuf,
    state: Mutex<State>,
    cv: Condvar,
}

/// An empty file of the stock, open for reading and writing while few enough are (a
/// create then needs no `open` of its own).
struct Spare {
    path: PathBuf,
    file: Option<File>,
}

/// A staging file given up.
struct Doomed {
    path: PathBuf,
    /// Descriptors handed out for it.
    holders: Vec<Weak<File>>,
    /// The kernel had it for local I/O.
    for_kernel: bool,
}

#[derive(Default)]
struct State {
    /// Files given up, oldest first (and their paths, to find one).
    doomed: VecDeque<Doomed>,
    doomed_paths: HashSet<PathBuf>,
    /// Files the thread is working on right now.
    busy: HashSet<PathBuf>,
    /// Empty files ready to be taken, the newest open already (at most [`OPEN_SPARES`]).
    spares: Vec<Spare>,
    /// How many of them are open.
    open_spares: usize,
    next_spare: u64,
    /// The stock was full: no topping up until it falls below half.
    resting: bool,
    stopping: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The client's one policy for poisoned locks (see `crate::sync`).
        self.state.lock_or_recover()
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cv.wait(g).unwrap_or_else(|p| p.into_inner())
    }
}

impl StagingFiles {
    /// Takes over `spare_dir` (files left by an earlier run are stock) and starts the
    /// background thread, which stops when this is dropped.
    pub fn open(spare_dir: &Path) -> std::io::Result<StagingFiles> {
        std::fs::create_dir_all(spare_dir)?;
        let mut state = State::default();
        for entry in std::fs::read_dir(spare_dir)? {
            let entry = entry?;
            if let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            {
                state.next_spare = state.next_spare.max(n + 1);
            }
            state.spares.push(Spare {
                path: entry.path(),
                file: None,
            });
        }
        let shared = Arc::new(Shared {
            spare_dir: spare_dir.to_path_buf(),
            state: Mutex::new(state),
            cv: Condvar::new(),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("shelf-staging".into())
            .spawn(move || worker.run())?;
        Ok(StagingFiles { shared })
    }

    /// An empty staging file at `path`, open for reading and writing.
    pub fn create(&self, path: &Path) -> std::io::Result<File> {
        let (spare, reclaimed) = {
            let mut st = self.shared.lock();
            while st.busy.contains(path) {
                crate::blocking::about_to_block();
                st = self.shared.wait(st);
            }
            let reclaimed = st.doomed_paths.remove(path);
            if reclaimed {
                st.doomed.retain(|d| d.path != path);
            }
            let spare = st.spares.pop();
            if spare.as_ref().is_some_and(|s| s.file.is_some()) {
                st.open_spares -= 1;
            }
            // The thread rests while the stock is full enough: wake it to top up.
            if st.resting && st.spares.len() < STOCK / 2 {
                self.shared.cv.notify_all();
            }
            (spare, reclaimed)
        };
        if reclaimed {
            // Someone may still read the old content: it goes with its name.
            let _ = std::fs::remove_file(path);
        }
        if let Some(spare) = spare {
            match std::fs::rename(&spare.path, path) {
                Ok(()) => {
                    if let Some(file) = spare.file {
                        return Ok(file);
                    }
                }
                Err(_) => {
                    let _ = std::fs::remove_file(&spare.path);
                }
            }
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }

    /// Gives up the staging file at `path` (see the module's notes). `holders` are the
    /// descriptors handed out for it; `for_kernel` whether the kernel had it for local I/O.
    pub fn remove(&self, path: PathBuf, holders: Vec<Weak<File>>, for_kernel: bool) {
        let mut st = self.shared.lock();
        // The thread is busy or gathering while files wait: wake it only for the first.
        let wake = st.doomed.is_empty();
        if st.doomed_paths.insert(path.clone()) {
            st.doomed.push_back(Doomed {
                path,
                holders,
                for_kernel,
            });
        } else if let Some(d) = st.doomed.iter_mut().find(|d| d.path == path) {
            d.holders.extend(holders);
            d.for_kernel |= for_kernel;
        }
        if wake {
            self.shared.cv.notify_all();
        }
    }

    /// Whether every file given up so far has been dealt with (for tests).
    pub fn idle(&self) -> bool {
        let st = self.shared.lock();
        st.doomed.is_empty() && st.busy.is_empty()
    }
}

impl Drop for StagingFiles {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.cv.notify_all();
    }
}

/// Lowers the calling thread's scheduling priority (nice 10): background work (uploads,
/// making and removing local copies) yields the CPU to the calls a program waits on, which
/// on a machine with few cores otherwise queue behind it.
pub fn yield_to_foreground() {
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

impl Shared {
    /// Works on given-up files first, then tops up the stock; on stop, finishes the queue.
    fn run(&self) {
        yield_to_foreground();
        loop {
            let mut st = self.lock();
            while st.doomed.is_empty() && (st.stopping || st.resting || st.spares.len() >= STOCK) {
                if st.stopping {
                    return;
                }
                st = self.wait(st);
                st.resting = st.resting && st.spares.len() >= STOCK / 2;
            }
            if !st.doomed.is_empty() {
                // Let removals gather while they keep coming (an `rm -r` gives up thousands):
                // the deleting is done after the burst, not on the CPU its calls need.
                while st.doomed.len() < MAX_GATHERED && !st.stopping {
                    let before = st.doomed.len();
                    drop(st);
                    std::thread::sleep(GATHER);
                    st = self.lock();
                    if st.doomed.len() == before {
                        break;
                    }
                }
                let n = st.doomed.len().min(BATCH);
                let batch: Vec<Doomed> = st.doomed.drain(..n).collect();
                for d in &batch {
                    st.doomed_paths.remove(&d.path);
                    st.busy.insert(d.path.clone());
                }
                let room = MAX_STOCK.saturating_sub(st.spares.len());
                let first = st.next_spare;
                st.next_spare += batch.len() as u64;
                drop(st);
                let kept = self.give_up(&batch, room, first);
                let mut st = self.lock();
                st.spares
                    .extend(kept.into_iter().map(|path| Spare { path, file: None }));
                for d in &batch {
                    st.busy.remove(&d.path);
                }
                drop(st);
                self.cv.notify_all();
                continue;
            }
            // Top up the stock, one file at a time so removals and takers are not held up.
            let n = st.next_spare;
            st.next_spare += 1;
            drop(st);
            let path = self.spare_dir.join(n.to_string());
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    let mut st = self.lock();
                    let file = (st.open_spares < OPEN_SPARES).then_some(file);
                    st.open_spares += usize::from(file.is_some());
                    st.spares.push(Spare { path, file });
                    st.resting = st.spares.len() >= STOCK;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot make a spare staging file");
                    // A full or read-only cache disk: rest until something changes.
                    let mut st = self.lock();
                    st.resting = true;
                }
            }
        }
    }

    /// Empties and keeps (up to `room`, named from `first` on) the files nothing can still
    /// see, deletes the others. Returns the kept files' new paths.
    fn give_up(&self, batch: &[Doomed], room: usize, first: u64) -> Vec<PathBuf> {
        let mut kept = Vec::new();
        for (i, d) in batch.iter().enumerate() {
            // A file the kernel had may be mapped by a process that closed it long ago
            // (passthrough maps the staging file itself): only a lease can tell.
            let reusable = kept.len() < room
                && d.holders.iter().all(|h| h.strong_count() == 0)
                && (!d.for_kernel || super::leases::nobody_has_open(&d.path));
            if reusable {
                let spare = self.spare_dir.join((first + i as u64).to_string());
                let emptied = std::fs::rename(&d.path, &spare).is_ok()
                    && OpenOptions::new()
                        .write(true)
                        .open(&spare)
                        .and_then(|f| f.set_len(0))
                        .is_ok();
                match emptied {
                    true => kept.push(spare),
                    false => {
                        let _ = std::fs::remove_file(&spare);
                    }
                }
                continue;
            }
            if let Err(e) = std::fs::remove_file(&d.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %d.path.display(), error = %e, "cannot delete a local copy");
                }
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;

    fn wait(f: impl Fn() -> bool) {
        for _ in 0..1000 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("timed out");
    }

    fn spare_inodes(dir: &Path) -> HashSet<u64> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().ino())
            .collect()
    }

    fn setup() -> (tempfile::TempDir, StagingFiles, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let files = StagingFiles::open(&dir.path().join("spare")).unwrap();
        let spare = dir.path().join("spare");
        wait(|| std::fs::read_dir(&spare).unwrap().count() >= STOCK);
        (dir, files, spare)
    }

    #[test]
    fn a_file_nothing_sees_is_emptied_and_reused() {
        let (dir, files, spare) = setup();
        let a = dir.path().join("1");
        let mut f = files.create(&a).unwrap();
        f.write_all(b"hello").unwrap();
        let ino = f.metadata().unwrap().ino();
        drop(f);
        files.remove(a.clone(), Vec::new(), false);
        wait(|| files.idle());
        assert!(!a.exists());
        assert!(spare_inodes(&spare).contains(&ino), "not kept as stock");
        for e in std::fs::read_dir(&spare).unwrap() {
            assert_eq!(e.unwrap().metadata().unwrap().len(), 0, "stock not empty");
        }
    }

    #[test]
    fn a_file_still_held_is_deleted_and_its_holder_keeps_reading() {
        let (dir, files, spare) = setup();
        let a = dir.path().join("1");
        let f = Arc::new(files.create(&a).unwrap());
        (&*f).write_all(b"hello").unwrap();
        let ino = f.metadata().unwrap().ino();
        files.remove(a.clone(), vec![Arc::downgrade(&f)], false);
        wait(|| files.idle());
        assert!(!a.exists());
        assert!(!spare_inodes(&spare).contains(&ino), "reused while held");
        let mut got = String::new();
        let mut reader: &File = &f;
        use std::io::Seek;
        reader.seek(std::io::SeekFrom::Start(0)).unwrap();
        reader.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello");
    }

    #[test]
    fn a_file_the_kernel_had_is_deleted_not_reused() {
        let (dir, files, spare) = setup();
        let a = dir.path().join("1");
        let mut f = files.create(&a).unwrap();
        f.write_all(&[7u8; 4096]).unwrap();
        let ino = f.metadata().unwrap().ino();
        use std::os::unix::io::AsRawFd;
        // SAFETY: a fresh shared read-only mapping of an open 4 KiB file, unmapped below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        drop(f);
        files.remove(a.clone(), Vec::new(), true);
        wait(|| files.idle());
        assert!(!a.exists());
        assert!(!spare_inodes(&spare).contains(&ino), "reused while mapped");
        // The mapping still shows the file's own bytes.
        // SAFETY: the mapping above is 4096 readable bytes.
        let first = unsafe { *(map as *const u8) };
        assert_eq!(first, 7);
        // SAFETY: unmapping the mapping made above.
        unsafe { libc::munmap(map, 4096) };
    }

    #[test]
    fn a_file_the_kernel_had_and_nothing_holds_any_more_is_reused() {
        let (dir, files, spare) = setup();
        let a = dir.path().join("1");
        let mut f = files.create(&a).unwrap();
        f.write_all(&[7u8; 4096]).unwrap();
        let ino = f.metadata().unwrap().ino();
        drop(f);
        files.remove(a.clone(), Vec::new(), true);
        wait(|| files.idle());
        assert!(!a.exists());
        assert!(spare_inodes(&spare).contains(&ino), "not reused");
    }

    #[test]
    fn a_path_made_again_before_its_removal_is_a_new_empty_file() {
        let (dir, files, _spare) = setup();
        let a = dir.path().join("7");
        for round in 0..200 {
            let mut f = files.create(&a).unwrap();
            assert_eq!(std::fs::metadata(&a).unwrap().len(), 0, "round {round}");
            f.write_all(b"x").unwrap();
            files.remove(a.clone(), Vec::new(), round % 2 == 0);
        }
        let mut f = files.create(&a).unwrap();
        f.write_all(b"last").unwrap();
        wait(|| files.idle());
        assert_eq!(std::fs::read(&a).unwrap(), b"last");
    }

    #[test]
    fn stock_left_by_an_earlier_run_is_used_and_numbers_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let spare = dir.path().join("spare");
        std::fs::create_dir(&spare).unwrap();
        std::fs::write(spare.join("41"), b"").unwrap();
        let files = StagingFiles::open(&spare).unwrap();
        wait(|| std::fs::read_dir(&spare).unwrap().count() >= STOCK);
        let names: HashSet<String> = std::fs::read_dir(&spare)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains("41") && names.contains("42"), "{names:?}");
        drop(files);
    }
}

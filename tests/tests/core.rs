//! The filesystem core without a mount: `FsCore` driven directly against a real
//! `shelf-server` process, as the fuser adapter would drive it.

use shelf::cache::CacheDir;
use shelf::core::{CoreOptions, FsCore, SetAttr};
use shelf_tests::*;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

fn core_for(server: &Server, cache: &std::path::Path, device: &str) -> Arc<FsCore> {
    core_with(server, cache, device, false)
}

fn core_with(
    server: &Server,
    cache: &std::path::Path,
    device: &str,
    passthrough: bool,
) -> Arc<FsCore> {
    let core = core_alone(server, cache, device, passthrough);
    // Namespace changes are write-back: the sender streams them to the server.
    let _ = core.start_sender();
    core
}

/// A core with no thread of its own: nothing it does reaches the server by itself, as if
/// the client were killed after the calls returned.
fn core_alone(
    server: &Server,
    cache: &std::path::Path,
    device: &str,
    passthrough: bool,
) -> Arc<FsCore> {
    let (remote, root) = server.connect("alice", "pw", device);
    FsCore::new(
        Arc::new(remote),
        root,
        CacheDir::open(cache).expect("cache"),
        CoreOptions {
            uid: 0,
            gid: 0,
            read_only: false,
            // Small, so the eviction path runs.
            chunk_cache_bytes: 1 << 20,
            passthrough,
            device: device.to_string(),
        },
    )
    .expect("core")
}

fn lookup_path(core: &FsCore, path: &str) -> u64 {
    path.split('/').fold(1, |ino, name| {
        core.lookup(ino, OsStr::new(name)).expect(name).ino
    })
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn write_back_then_read_from_another_core_chunk_by_chunk() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = core_for(&server, &dir.path().join("a"), "a");
    let files = lookup_path(&a, "files");
    let docs = a.mkdir(files, OsStr::new("docs"), 0o755).expect("mkdir");
    let data = pseudo_random(3 << 20, 7);
    let (stat, opened) = a
        .create(docs.ino, OsStr::new("blob"), 0o644, libc::O_WRONLY)
        .expect("create");
    assert_eq!(stat.size, 0);
    for (i, piece) in data.chunks(1 << 20).enumerate() {
        a.write(opened.fh, (i << 20) as u64, piece).expect("write");
    }
    // Before any upload, the core reports the local size and reads local content.
    assert_eq!(
        a.getattr(stat.ino).expect("getattr").size,
        data.len() as u64
    );
    a.fsync(opened.fh).expect("fsync");
    a.flush(opened.fh).expect("flush");
    a.release(opened.fh).expect("release");

    // A second core (another device) reads it through the chunk path.
    let b = core_for(&server, &dir.path().join("b"), "b");
    let ino = lookup_path(&b, "files/docs/blob");
    let o = b.open(ino, libc::O_RDONLY).expect("open");
    let mut got = Vec::new();
    while got.len() < data.len() {
        let part = b.read(o.fh, got.len() as u64, 128 << 10).expect("read");
        assert!(!part.is_empty());
        got.extend_from_slice(&part);
    }
    assert!(got == data, "content differs");
    // A read at the end fetches only what it needs.
    let tail = b
        .read(o.fh, data.len() as u64 - 10, 100)
        .expect("read tail");
    assert_eq!(&tail[..], &data[data.len() - 10..]);
    assert!(b
        .read(o.fh, data.len() as u64, 100)
        .expect("read past end")
        .is_empty());
    b.release(o.fh).expect("release");

    // Namespace operations through the core.
    b.rename(
        lookup_path(&b, "files/docs"),
        OsStr::new("blob"),
        lookup_path(&b, "files"),
        OsStr::new("moved"),
        shelf_protocol::RenameMode::Replace,
    )
    .expect("rename");
    let dh = b.opendir(lookup_path(&b, "files")).expect("opendir");
    let names: Vec<String> = b
        .readdir(dh, 0)
        .expect("readdir")
        .into_iter()
        .map(|(_, i)| i.name)
        .collect();
    b.releasedir(dh);
    assert!(
        names.contains(&"moved".to_string()) && names.contains(&"docs".to_string()),
        "{names:?}"
    );
    let moved = lookup_path(&b, "files/moved");
    let st = b
        .setattr(
            moved,
            SetAttr {
                mode: Some(0o600),
                ..SetAttr::default()
            },
        )
        .expect("chmod");
    assert_eq!(st.perm, 0o600);
    b.unlink(lookup_path(&b, "files"), OsStr::new("moved"))
        .expect("unlink");
    assert!(b
        .lookup(lookup_path(&b, "files"), OsStr::new("moved"))
        .is_err());
}

#[test]
fn journal_replays_after_the_core_is_dropped_without_uploading() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let want = pseudo_random(200_000, 3);
    {
        // No background threads: neither the create nor the content reaches the server, as
        // if the client died after close.
        let a = core_alone(&server, &cache, "a", false);
        let work = lookup_path(&a, "files/work");
        let (_, o) = a
            .create(work, OsStr::new("pending.bin"), 0o644, libc::O_WRONLY)
            .expect("create");
        a.write(o.fh, 0, &want).expect("write");
        a.flush(o.fh).expect("close returns after journaling");
        a.release(o.fh).expect("release");
        assert_eq!(shelf::cache::pending_uploads(&cache), 1);
    }
    // The next core on the same cache replays the journal.
    let a = core_for(&server, &cache, "a");
    let threads = a.start_background(1);
    assert_eq!(a.drain(Duration::from_secs(30)), 0);
    assert_eq!(shelf::cache::pending_uploads(&cache), 0);
    a.stop_background();
    for t in threads {
        t.join().expect("thread");
    }
    let b = core_for(&server, &dir.path().join("b"), "b");
    let ino = lookup_path(&b, "files/work/pending.bin");
    let o = b.open(ino, libc::O_RDONLY).expect("open");
    let got = b.read(o.fh, 0, want.len() as u32).expect("read");
    assert!(got[..] == want[..]);
}

#[test]
fn truncate_and_overwrite_of_an_uploaded_file() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = core_for(&server, &dir.path().join("a"), "a");
    let files = lookup_path(&a, "files");
    let (st, o) = a
        .create(files, OsStr::new("t"), 0o644, libc::O_RDWR)
        .expect("create");
    a.write(o.fh, 0, b"0123456789").expect("write");
    a.fsync(o.fh).expect("fsync");
    a.release(o.fh).expect("release");
    // truncate(2) without an open handle is a content change uploaded like a close.
    a.setattr(
        st.ino,
        SetAttr {
            size: Some(4),
            ..SetAttr::default()
        },
    )
    .expect("truncate");
    let o = a.open(st.ino, libc::O_RDWR).expect("open");
    a.write(o.fh, 8, b"xy")
        .expect("write past the end leaves a hole");
    a.fsync(o.fh).expect("fsync");
    a.release(o.fh).expect("release");
    let b = core_for(&server, &dir.path().join("b"), "b");
    let ino = lookup_path(&b, "files/t");
    let o = b.open(ino, libc::O_RDONLY).expect("open");
    assert_eq!(&b.read(o.fh, 0, 100).expect("read")[..], b"0123\0\0\0\0xy");
}

#[test]
fn large_directories_list_completely_across_pages() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = core_for(&server, &dir.path().join("a"), "a");
    let files = lookup_path(&a, "files");
    let big = a.mkdir(files, OsStr::new("big"), 0o755).expect("mkdir");
    let n = 2500;
    for i in 0..n {
        let (_, o) = a
            .create(
                big.ino,
                OsStr::new(&format!("f{i:05}")),
                0o644,
                libc::O_WRONLY,
            )
            .expect("create");
        a.release(o.fh).expect("release");
    }
    let fh = a.opendir(big.ino).expect("opendir");
    // Page through it as the kernel does, a few entries at a time.
    let mut names = Vec::new();
    let mut offset = 0;
    loop {
        let page: Vec<_> = a
            .readdir(fh, offset)
            .expect("readdir")
            .into_iter()
            .take(100)
            .collect();
        let Some((next, _)) = page.last() else { break };
        offset = *next;
        names.extend(page.into_iter().map(|(_, item)| item.name));
    }
    a.releasedir(fh);
    assert_eq!(names.len(), n + 2, "all entries plus . and ..");
    let mut sorted = names[2..].to_vec();
    sorted.dedup();
    assert_eq!(sorted.len(), n, "no entry twice");
    assert_eq!(a.getattr(big.ino).expect("getattr").nlink, 2);
}

#[test]
fn clean_local_copies_stay_within_the_cache_budget() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("a");
    let a = core_for(&server, &cache, "a"); // 1 MiB budget
    let files = lookup_path(&a, "files");
    let mut wants = Vec::new();
    for i in 0..4u64 {
        let data = pseudo_random(600 << 10, 20 + i);
        let (st, o) = a
            .create(files, OsStr::new(&format!("c{i}")), 0o644, libc::O_WRONLY)
            .expect("create");
        a.write(o.fh, 0, &data).expect("write");
        a.fsync(o.fh).expect("fsync");
        a.release(o.fh).expect("release");
        wants.push((st.ino, data));
    }
    // Evicted copies are deleted in the background, within moments.
    let staged = || -> u64 {
        std::fs::read_dir(cache.join("staging"))
            .expect("staging")
            .map(|e| e.expect("entry").metadata().expect("meta").len())
            .sum()
    };
    assert!(
        wait_until(Duration::from_secs(5), || staged() <= 1 << 20),
        "clean copies use {} bytes, budget 1 MiB",
        staged()
    );
    // Evicted files are read back from the server.
    for (ino, want) in wants {
        let o = a.open(ino, libc::O_RDONLY).expect("open");
        let mut got = Vec::new();
        while got.len() < want.len() {
            let part = a.read(o.fh, got.len() as u64, 128 << 10).expect("read");
            assert!(!part.is_empty());
            got.extend_from_slice(&part);
        }
        a.release(o.fh).expect("release");
        assert!(got == want);
    }
}

/// Local I/O: the core hands out the staging file, the "kernel" writes it directly, and
/// flush/fsync notice the change by its stamp. One file is in one mode at a time; when the
/// kernel refuses passthrough the handle and every later one are relayed.
#[test]
fn local_io_modes_and_the_fallback_to_relayed_io() {
    use std::os::unix::fs::FileExt;
    let server = Server::start(&[("alice", "pw", "user")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = core_with(&server, &dir.path().join("a"), "a", true);
    let files = lookup_path(&a, "files");
    let (stat, w) = a
        .create(files, OsStr::new("direct"), 0o644, libc::O_RDWR)
        .expect("create");
    let file = w.local.clone().expect("a writer gets local I/O");
    file.write_all_at(b"written by the kernel", 0)
        .expect("write");
    // A second handle of the same file shares the mode and the staging file.
    let r = a.open(stat.ino, libc::O_RDONLY).expect("open");
    assert!(r.local.is_some(), "second handle is local too");
    // getattr sees the direct write before any close.
    assert_eq!(a.getattr(stat.ino).expect("getattr").size, 21);
    a.fsync(w.fh).expect("fsync");
    a.release(r.fh).expect("release");
    a.flush(w.fh).expect("flush");
    a.release(w.fh).expect("release");

    let b = core_for(&server, &dir.path().join("b"), "b");
    let ino = lookup_path(&b, "files/direct");
    let o = b.open(ino, libc::O_RDONLY).expect("open");
    assert!(o.local.is_none(), "passthrough off: relayed");
    assert_eq!(
        &b.read(o.fh, 0, 100).expect("read")[..],
        b"written by the kernel"
    );
    b.release(o.fh).expect("release");

    // The kernel refuses the backing file: the handle becomes relayed, and so do new ones.
    let o = a.open(stat.ino, libc::O_RDWR).expect("open");
    assert!(o.local.is_some());
    a.local_io_failed(o.fh);
    assert!(!a.local_io_enabled());
    a.write(o.fh, 0, b"WRITTEN").expect("relayed write");
    let o2 = a.open(stat.ino, libc::O_RDONLY).expect("open");
    assert!(o2.local.is_none(), "later opens are relayed");
    assert_eq!(
        &a.read(o2.fh, 0, 100).expect("read")[..],
        b"WRITTEN by the kernel"
    );
    a.release(o2.fh).expect("release");
    a.fsync(o.fh).expect("fsync");
    a.release(o.fh).expect("release");
    let o = b.open(ino, libc::O_RDONLY).expect("open");
    // fsync committed it; B's cached attributes expire within the 1 s TTL.
    let seen = (0..60).any(|_| {
        let got = b.read(o.fh, 0, 100).expect("read");
        std::thread::sleep(std::time::Duration::from_millis(50));
        &got[..] == b"WRITTEN by the kernel"
    });
    b.release(o.fh).expect("release");
    assert!(seen, "the relayed write reached the server");
}

/// Read-after-write under load: while files are closed and uploaded in the background,
/// a reader that stats and reads each file right after its close sees the full content.
/// (A getattr answer the server gave just before an upload's commit, arriving just after
/// the local copy turned clean, once made a just-written file look empty.)
fn read_after_close_while_uploading(local: bool) {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let core = core_with(&server, &dir.path().join("cache"), "a", local);
    let threads = core.start_background(2);
    let projects = lookup_path(&core, "files/projects");
    let top = core
        .mkdir(projects, OsStr::new("raw"), 0o755)
        .expect("mkdir")
        .ino;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Stat storms: other threads keep asking the server for the same files' attributes
    // (as `git`'s many lstat calls do), so answers race the commits.
    let closed: Arc<std::sync::Mutex<Vec<(u64, usize)>>> = Arc::default();
    let mut stormers = Vec::new();
    for _ in 0..2 {
        let (core, closed, stop) = (core.clone(), closed.clone(), stop.clone());
        stormers.push(std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let pick = closed.lock().expect("list").get(i).copied();
                match pick {
                    Some((ino, len)) => {
                        let got = core.getattr(ino).expect("getattr").size;
                        assert_eq!(got, len as u64, "stat of a closed file (ino {ino})");
                        i += 1;
                    }
                    None => i = 0,
                }
                if i.is_multiple_of(64) {
                    i = i.saturating_sub(400);
                }
            }
        }));
    }
    for round in 0..6 {
        let mut files = Vec::new();
        for n in 0..300 {
            let name = format!("f{round}-{n}");
            let len = 1 + (n * 37 + round * 11) % 3000;
            let data = pseudo_random(len, (round * 1000 + n) as u64);
            let (stat, o) = core
                .create(top, OsStr::new(&name), 0o644, libc::O_WRONLY)
                .expect("create");
            match &o.local {
                Some(f) => {
                    std::os::unix::fs::FileExt::write_all_at(&**f, &data, 0).expect("local write")
                }
                None => {
                    core.write(o.fh, 0, &data).expect("write");
                }
            }
            core.flush(o.fh).expect("flush");
            core.release(o.fh).expect("release");
            // Right after close: stat and content.
            assert_eq!(core.getattr(stat.ino).expect("getattr").size, len as u64);
            closed.lock().expect("list").push((stat.ino, len));
            files.push((stat.ino, data));
        }
        // A little later, while the uploads of this round run: every file again.
        for (ino, data) in &files {
            let st = core.getattr(*ino).expect("getattr");
            assert_eq!(
                st.size,
                data.len() as u64,
                "size of ino {ino} in round {round}"
            );
            let o = core.open(*ino, libc::O_RDONLY).expect("open");
            let got = match &o.local {
                Some(f) => {
                    let mut buf = vec![0; data.len() + 10];
                    let n = std::os::unix::fs::FileExt::read_at(&**f, &mut buf, 0).expect("read");
                    buf.truncate(n);
                    buf
                }
                None => core
                    .read(o.fh, 0, data.len() as u32 + 10)
                    .expect("read")
                    .to_vec(),
            };
            core.release(o.fh).expect("release");
            assert!(got == *data, "content of ino {ino} in round {round}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in stormers {
        s.join().expect("a stat of a just-closed file was wrong");
    }
    assert_eq!(core.drain(Duration::from_secs(60)), 0);
    core.stop_background();
    for t in threads {
        t.join().expect("background thread");
    }
}

#[test]
fn read_after_close_while_uploading_relayed() {
    read_after_close_while_uploading(false);
}

#[test]
fn read_after_close_while_uploading_local() {
    read_after_close_while_uploading(true);
}

/// Another device's change to a folder while this core's own changes there wait to be sent
/// must show once they are: what the overlay showed of the folder is not kept as the
/// server's state.
#[test]
fn another_devices_change_during_write_back_shows_after_the_drain() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let b = core_for(&server, &dir.path().join("b"), "b");
    let files_b = lookup_path(&b, "files");
    let docs_b = b.mkdir(files_b, OsStr::new("docs"), 0o755).expect("mkdir");
    b.fsyncdir().expect("fsyncdir");

    // Device a follows the feed, as a mount does (the kernel trusting its answers for the
    // long TTL); its changes wait (no sender yet): a file, and a folder with a file in it.
    let a = core_alone(&server, &dir.path().join("a"), "a", false);
    a.set_kernel_cache(Box::new(NoKernel));
    a.start_events("a".to_string()).expect("subscribe");
    let docs = lookup_path(&a, "files/docs");
    let (_, o) = a
        .create(docs, OsStr::new("mine"), 0o644, libc::O_WRONLY)
        .expect("create");
    a.release(o.fh).expect("release");
    let new = a.mkdir(docs, OsStr::new("new"), 0o755).expect("mkdir");
    let (_, o) = a
        .create(new.ino, OsStr::new("f"), 0o644, libc::O_WRONLY)
        .expect("create");
    a.release(o.fh).expect("release");
    assert_eq!(a.getattr(docs).expect("getattr").nlink, 3);

    // Meanwhile b makes a folder there (the folder's link count goes up). First a has
    // applied what the feed had before (b's earlier changes, and their second applications
    // 30 and 250 ms later), so that the next change it applies is b's new folder.
    let mut epoch = a.epoch();
    loop {
        std::thread::sleep(Duration::from_millis(400));
        if a.epoch() == epoch {
            break;
        }
        epoch = a.epoch();
    }
    b.mkdir(docs_b.ino, OsStr::new("sub"), 0o755)
        .expect("mkdir");
    b.fsyncdir().expect("fsyncdir");
    assert!(
        wait_until(Duration::from_secs(5), || a.epoch() != epoch),
        "the change never reached a"
    );

    assert!(a.start_sender().is_some(), "the sender starts");
    a.fsyncdir().expect("fsyncdir");
    assert_eq!(
        a.getattr(docs).expect("getattr").nlink,
        4,
        "a still shows the folder as it was before b's change"
    );
    assert!(a.lookup(docs, OsStr::new("sub")).is_ok());
    assert!(a.lookup(docs, OsStr::new("mine")).is_ok());
    // What a made is still found, in a folder it made (names dropped at the drain are
    // asked for again, not answered 'no such file' from an incomplete listing).
    let new = a.lookup(docs, OsStr::new("new")).expect("new");
    assert!(a.lookup(new.ino, OsStr::new("f")).is_ok(), "f is lost");
}

/// A kernel cache that drops nothing (the core's own caches are under test).
struct NoKernel;

impl shelf::core::coherence::KernelCache for NoKernel {
    fn inval_inode(&self, _ino: u64, _data: bool) {}
    fn inval_entry(&self, _parent: u64, _name: &str) {}
}

/// The names of a folder, as a listing shows them.
fn listed(core: &FsCore, dir: u64) -> Vec<String> {
    let fh = core.opendir(dir).expect("opendir");
    let names = core
        .readdir(fh, 0)
        .expect("readdir")
        .into_iter()
        .map(|(_, item)| item.name)
        .filter(|n| n != "." && n != "..")
        .collect();
    core.releasedir(fh);
    names
}

#[test]
fn listings_answered_from_what_the_mount_knows_stay_complete() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dir = tempfile::tempdir().expect("tempdir");
    // Following the feed (a listing known in full may then be answered without the
    // server); changes wait (no sender yet).
    let a = core_alone(&server, &dir.path().join("a"), "a", false);
    a.set_kernel_cache(Box::new(NoKernel));
    a.start_events("a".to_string()).expect("subscribe");
    let files = lookup_path(&a, "files");
    let (_, o) = a
        .create(files, OsStr::new("queued"), 0o644, libc::O_WRONLY)
        .expect("create");
    a.release(o.fh).expect("release");
    // Listed from the server while the create is still queued here: the server does not
    // have it yet, the listing shows it all the same.
    assert!(listed(&a, files).contains(&"queued".to_string()));
    assert!(a.start_sender().is_some(), "the sender starts");
    a.fsyncdir().expect("fsyncdir");
    // Listed again (now from what the mount knows): still there.
    assert!(
        listed(&a, files).contains(&"queued".to_string()),
        "lost after the drain"
    );

    // A file moved into a folder known in full is listed there; gone from where it was.
    let work = lookup_path(&a, "files/work");
    assert!(listed(&a, work).is_empty());
    a.rename(
        files,
        OsStr::new("queued"),
        work,
        OsStr::new("moved"),
        shelf_protocol::RenameMode::Replace,
    )
    .expect("rename");
    assert_eq!(listed(&a, work), ["moved"]);
    assert!(!listed(&a, files).contains(&"queued".to_string()));
    a.fsyncdir().expect("fsyncdir");
    assert_eq!(listed(&a, work), ["moved"]);

    // Another device's file shows in a listing here once the feed brought it.
    let b = core_for(&server, &dir.path().join("b"), "b");
    let work_b = lookup_path(&b, "files/work");
    let (_, o) = b
        .create(work_b, OsStr::new("from-b"), 0o644, libc::O_WRONLY)
        .expect("create");
    b.release(o.fh).expect("release");
    b.fsyncdir().expect("fsyncdir");
    assert!(
        wait_until(Duration::from_secs(5), || listed(&a, work)
            == ["from-b", "moved"]),
        "{:?}",
        listed(&a, work)
    );
}

/// What `tar x` as root does to each file (create, write, close, chown, chmod, set times),
/// queued while the sender waits and then sent in batches (the attribute changes of one
/// file in a row go as one request), reaches another device exactly; attribute changes of
/// different files in between are not folded together.
#[test]
fn owners_modes_and_times_set_while_queued_reach_another_device() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = core_alone(&server, &dir.path().join("a"), "a", false);
    let files = lookup_path(&a, "files");
    let t = |secs: i64| shelf_protocol::Timestamp { secs, nanos: 7 };
    let n = 40u32;
    let mut inos = Vec::new();
    for i in 0..n {
        let (st, o) = a
            .create(files, OsStr::new(&format!("f{i}")), 0o600, libc::O_WRONLY)
            .expect("create");
        a.write(o.fh, 0, format!("file {i}").as_bytes())
            .expect("write");
        a.release(o.fh).expect("release");
        let set = |s: SetAttr| a.setattr(st.ino, s).expect("setattr");
        set(SetAttr {
            uid: Some(1000 + i),
            gid: Some(2000 + i),
            ..SetAttr::default()
        });
        set(SetAttr {
            mode: Some(0o640 + (i % 8)),
            ..SetAttr::default()
        });
        set(SetAttr {
            atime: Some(t(1_000_000 + i64::from(i))),
            mtime: Some(t(2_000_000 + i64::from(i))),
            ..SetAttr::default()
        });
        inos.push(st.ino);
    }
    // Interleaved: f0, f1, f0 again (not in a row: each applies in order).
    let mode = |m: u32| SetAttr {
        mode: Some(m),
        ..SetAttr::default()
    };
    a.setattr(inos[0], mode(0o604)).expect("chmod");
    a.setattr(inos[1], mode(0o606)).expect("chmod");
    a.setattr(inos[0], mode(0o600)).expect("chmod");
    assert!(a.start_sender().is_some(), "the sender starts");
    a.fsyncdir().expect("fsyncdir");

    let b = core_for(&server, &dir.path().join("b"), "b");
    for i in 0..n {
        let st = b
            .getattr(lookup_path(&b, &format!("files/f{i}")))
            .expect("getattr");
        let want_mode = match i {
            0 => 0o600,
            1 => 0o606,
            _ => 0o640 + (i % 8),
        };
        let at = |secs: u32| std::time::UNIX_EPOCH + Duration::new(u64::from(secs), 7);
        assert_eq!(
            (st.uid, st.gid, u32::from(st.perm), st.mtime, st.atime),
            (
                1000 + i,
                2000 + i,
                want_mode,
                at(2_000_000 + i),
                at(1_000_000 + i)
            ),
            "f{i}"
        );
    }
}

#[test]
fn a_large_file_is_sent_while_written_and_committed_as_last_written() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = core_for(&server, &dir.path().join("a"), "a");
    let threads = a.start_background(1);
    let files = lookup_path(&a, "files");
    let (stat, o) = a
        .create(files, OsStr::new("big"), 0o644, libc::O_RDWR)
        .expect("create");
    let mut data = pseudo_random(40 << 20, 11);
    for (i, piece) in data.chunks(1 << 20).enumerate() {
        a.write(o.fh, (i << 20) as u64, piece).expect("write");
    }
    // Still open, never fsynced: its first chunks reach the server anyway, and no version
    // is made.
    let mut ids = Vec::new();
    shelf::chunker::chunk_stream(&data[..8 << 20], |r, _| {
        ids.push(r.id);
        Ok(())
    })
    .expect("chunk");
    ids.truncate(ids.len() - 1);
    let (probe, _) = server.connect("alice", "pw", "probe");
    let node = stat.ino;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let missing = probe
            .submit_have_chunks(node, ids.clone())
            .wait()
            .expect("have-chunks");
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} chunks of the open file still not on the server",
            missing.len(),
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let attr = probe
        .ask_attr("getattr", shelf_protocol::Request::GetAttr { node })
        .expect("getattr");
    assert_eq!(attr.version, 0, "write-behind committed a version");
    // Rewritten below what was sent (in the middle of it: the upload keeps the chunks sent
    // before the change and chunks from there), and grown: what is committed is what was
    // written last.
    let middle = pseudo_random(1 << 20, 12);
    data[4 << 20..5 << 20].copy_from_slice(&middle);
    a.write(o.fh, 4 << 20, &middle).expect("rewrite");
    let tail = pseudo_random(3 << 20, 13);
    a.write(o.fh, data.len() as u64, &tail).expect("append");
    data.extend_from_slice(&tail);
    a.fsync(o.fh).expect("fsync");
    a.release(o.fh).expect("release");
    a.stop_background();
    for t in threads {
        t.join().expect("thread");
    }

    let b = core_for(&server, &dir.path().join("b"), "b");
    let o = b
        .open(lookup_path(&b, "files/big"), libc::O_RDONLY)
        .expect("open");
    let mut got = Vec::new();
    loop {
        let part = b.read(o.fh, got.len() as u64, 1 << 20).expect("read");
        if part.is_empty() {
            break;
        }
        got.extend_from_slice(&part);
    }
    b.release(o.fh).expect("release");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the committed content is not the last written");
}

#[test]
fn small_files_ride_with_their_creates_and_big_ones_wait_for_an_uploader() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dir = tempfile::tempdir().expect("tempdir");
    // No uploader runs: only the namespace sender.
    let a = core_alone(&server, &dir.path().join("a"), "a", false);
    let files = lookup_path(&a, "files");
    let t = |secs: i64| shelf_protocol::Timestamp { secs, nanos: 0 };
    let n = 60u32;
    // As `tar x` makes each file: create, write, close, chown, chmod, utimens.
    for i in 0..n {
        let (st, o) = a
            .create(files, OsStr::new(&format!("f{i}")), 0o600, libc::O_WRONLY)
            .expect("create");
        a.write(
            o.fh,
            0,
            &pseudo_random(1000 + 50 * i as usize, u64::from(i)),
        )
        .expect("write");
        a.release(o.fh).expect("release");
        for s in [
            SetAttr {
                uid: Some(1000 + i),
                gid: Some(1000),
                ..SetAttr::default()
            },
            SetAttr {
                mode: Some(0o644),
                ..SetAttr::default()
            },
            SetAttr {
                atime: Some(t(1_000_000)),
                mtime: Some(t(2_000_000 + i64::from(i))),
                ..SetAttr::default()
            },
        ] {
            a.setattr(st.ino, s).expect("setattr");
        }
    }
    let big = pseudo_random(1 << 20, 99);
    let (_, o) = a
        .create(files, OsStr::new("big"), 0o644, libc::O_WRONLY)
        .expect("create big");
    a.write(o.fh, 0, &big).expect("write big");
    a.release(o.fh).expect("release big");
    assert!(a.start_sender().is_some(), "the sender starts");
    a.fsyncdir().expect("fsyncdir");
    // Every small file's content went with the namespace changes; the big one waits.
    assert_eq!(a.drain(Duration::from_secs(2)), 1, "files left to upload");

    let b = core_for(&server, &dir.path().join("b"), "b");
    for i in 0..n {
        let node = lookup_path(&b, &format!("files/f{i}"));
        let st = b.getattr(node).expect("getattr");
        let at = |secs: u32| std::time::UNIX_EPOCH + Duration::from_secs(u64::from(secs));
        assert_eq!(
            (st.uid, u32::from(st.perm), st.mtime, st.size),
            (1000 + i, 0o644, at(2_000_000 + i), 1000 + 50 * u64::from(i)),
            "f{i}"
        );
        let o = b.open(node, libc::O_RDONLY).expect("open");
        let got = b.read(o.fh, 0, 1 << 20).expect("read");
        assert!(
            got[..] == pseudo_random(1000 + 50 * i as usize, u64::from(i))[..],
            "f{i}: content differs"
        );
        b.release(o.fh).expect("release");
    }
    let st = b
        .getattr(lookup_path(&b, "files/big"))
        .expect("getattr big");
    assert_eq!(st.size, 0, "the big file was committed without an uploader");
}

/// The set-ID rules the kernel leaves to the mount (FUSE_HANDLE_KILLPRIV_V2), as Linux
/// applies them: a chown clears set-user-ID, and set-group-ID when the group may execute;
/// a truncation or a write by someone other than root clears them too, root's do not; a
/// folder keeps its bits.
#[test]
fn chown_and_unprivileged_writes_clear_set_id_bits() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = core_for(&server, &dir.path().join("a"), "a");
    let files = lookup_path(&a, "files");
    let file = |name: &str, mode: u32| {
        let (st, o) = a
            .create(files, OsStr::new(name), 0o600, libc::O_WRONLY)
            .expect("create");
        a.release(o.fh).expect("release");
        chmod(&a, st.ino, mode);
        st.ino
    };
    let perm = |ino| u32::from(a.getattr(ino).expect("getattr").perm);
    let chown = |ino, uid| {
        a.setattr(
            ino,
            SetAttr {
                uid: Some(uid),
                ..SetAttr::default()
            },
        )
        .expect("chown");
    };
    let truncate = |ino, unprivileged| {
        a.setattr(
            ino,
            SetAttr {
                size: Some(0),
                unprivileged,
                ..SetAttr::default()
            },
        )
        .expect("truncate");
    };

    let suid = file("suid", 0o6755);
    chown(suid, 1000);
    assert_eq!(
        perm(suid),
        0o755,
        "chown clears both when the group may execute"
    );
    let sgid = file("sgid", 0o2745);
    chown(sgid, 1000);
    assert_eq!(
        perm(sgid),
        0o2745,
        "set-group-ID without group execute stays"
    );
    chmod(&a, suid, 0o4755);
    truncate(suid, None);
    assert_eq!(perm(suid), 0o4755, "root's truncation keeps them");
    truncate(suid, Some(0));
    assert_eq!(perm(suid), 0o755, "another user's truncation clears them");
    chmod(&a, sgid, 0o2745);
    a.drop_set_ids(sgid, 0).expect("open for writing");
    assert_eq!(
        perm(sgid),
        0o2745,
        "a writer in the file's group keeps set-group-ID"
    );
    a.drop_set_ids(sgid, 4242).expect("open for writing");
    assert_eq!(perm(sgid), 0o745, "a writer outside it does not");
    let folder = a
        .mkdir(files, OsStr::new("shared-group"), 0o2775)
        .expect("mkdir")
        .ino;
    chown(folder, 1000);
    assert_eq!(perm(folder), 0o2775, "a folder keeps set-group-ID");
}

fn chmod(core: &FsCore, ino: u64, mode: u32) {
    core.setattr(
        ino,
        SetAttr {
            mode: Some(mode),
            ..SetAttr::default()
        },
    )
    .expect("chmod");
}

/// A queued unlink shows at once in what the file's other names and open descriptors see:
/// one link less and a new status-change time (pjdfstest's unlink and link cases), before
/// the server has the change.
#[test]
fn a_queued_unlink_shows_in_the_link_count_of_what_is_left() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = core_for(&server, &dir.path().join("a"), "a");
    let files = lookup_path(&a, "files");
    let (st, o) = a
        .create(files, OsStr::new("one"), 0o644, libc::O_WRONLY)
        .expect("create");
    a.release(o.fh).expect("release");
    a.link(st.ino, files, OsStr::new("two")).expect("link");
    a.fsyncdir().expect("fsyncdir");

    // A device whose changes stay queued (no sender).
    let b = core_alone(&server, &dir.path().join("b"), "b", false);
    let one = lookup_path(&b, "files/one");
    let before = b.getattr(one).expect("getattr");
    assert_eq!(before.nlink, 2);
    std::thread::sleep(Duration::from_millis(20));
    // (The kernel looks a name up before it unlinks it.)
    assert_eq!(lookup_path(&b, "files/two"), one);
    b.unlink(lookup_path(&b, "files"), OsStr::new("two"))
        .expect("unlink");
    assert_eq!(b.pending_changes(), 1, "the unlink is queued");
    let after = b.getattr(one).expect("getattr");
    assert_eq!(after.nlink, 1, "one link less");
    assert!(after.ctime > before.ctime, "a status change");

    let bfiles = lookup_path(&b, "files");
    let (open, o) = b
        .create(bfiles, OsStr::new("open"), 0o644, libc::O_RDWR)
        .expect("create");
    b.write(o.fh, 0, b"still here").expect("write");
    b.unlink(bfiles, OsStr::new("open")).expect("unlink");
    assert_eq!(
        b.getattr(open.ino).expect("fstat").nlink,
        0,
        "an unlinked open file"
    );
    assert_eq!(&*b.read(o.fh, 0, 100).expect("read"), b"still here");
    b.release(o.fh).expect("release");
}

/// A call that needs the server to know every change first (a hard link) fails at once
/// while the server is down, and works as soon as it is back: the sender is told to try
/// again then, instead of the caller trusting its last failure (git clone links its objects
/// and copies them all after the first link that fails).
#[test]
fn a_link_works_as_soon_as_the_server_is_back() {
    let mut server = Server::start(&[("alice", "pw", "user")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = core_for(&server, &dir.path().join("a"), "a");
    let files = lookup_path(&a, "files");
    let (st, o) = a
        .create(files, OsStr::new("one"), 0o644, libc::O_WRONLY)
        .expect("create");
    a.release(o.fh).expect("release");
    a.fsyncdir().expect("fsyncdir");

    server.stop();
    a.mkdir(files, OsStr::new("made offline"), 0o755)
        .expect("mkdir is queued");
    let t = std::time::Instant::now();
    assert!(a.link(st.ino, files, OsStr::new("two")).is_err());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "an offline link fails within a connection attempt, took {:?}",
        t.elapsed()
    );

    server.start_again();
    a.link(st.ino, files, OsStr::new("two"))
        .expect("a link once the server is back");
    assert_eq!(a.getattr(st.ino).expect("getattr").nlink, 2);
    assert_eq!(a.pending_changes(), 0, "the mkdir went first");
}

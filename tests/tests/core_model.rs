//! Model-based test of the filesystem core: random sequences of writes, truncates, renames,
//! unlinks, fsyncs, reads and client restarts (journal replay) run against `FsCore` and a
//! real server, and against a `BTreeMap` of expected contents. After every sequence a second
//! device must see exactly the model. Shrunk failures belong in `core.rs` as named tests.
//!
//! It runs twice: with relayed I/O (every read and write through the core) and with local
//! I/O, where, as the kernel does with passthrough, reads and writes go straight to the
//! staging file the core hands out at open, and the core only sees flush, release, fsync.

use proptest::prelude::*;
use shelf::cache::CacheDir;
use shelf::core::{CoreOptions, FsCore, SetAttr};
use shelf_tests::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Clone, Debug)]
enum Op {
    Write {
        file: usize,
        offset: u32,
        len: u32,
        byte: u8,
    },
    Truncate {
        file: usize,
        len: u32,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Unlink {
        file: usize,
    },
    Fsync {
        file: usize,
    },
    Check {
        file: usize,
    },
    /// The client stops without finishing uploads and a new one replays the journal.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let file = 0..NAMES.len();
    prop_oneof![
        6 => (file.clone(), 0u32..300_000, 1u32..200_000, any::<u8>())
            .prop_map(|(file, offset, len, byte)| Op::Write { file, offset, len, byte }),
        2 => (file.clone(), 0u32..400_000).prop_map(|(file, len)| Op::Truncate { file, len }),
        2 => (file.clone(), file.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => file.clone().prop_map(|file| Op::Unlink { file }),
        1 => file.clone().prop_map(|file| Op::Fsync { file }),
        2 => file.prop_map(|file| Op::Check { file }),
        1 => Just(Op::Restart),
    ]
}

struct Client {
    core: Arc<FsCore>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(server: &Server, cache: &Path, device: &str, local: bool) -> Client {
        let (remote, root) = server.connect("alice", "pw", device);
        let core = FsCore::new(
            Arc::new(remote),
            root,
            CacheDir::open(cache).expect("cache"),
            CoreOptions {
                uid: 0,
                gid: 0,
                read_only: false,
                chunk_cache_bytes: 512 << 10, // small: eviction runs
                passthrough: local,
                device: device.to_string(),
            },
        )
        .expect("core");
        let threads = core.start_background(1);
        Client { core, threads }
    }

    fn stop(self) {
        self.core.stop_background();
        for t in self.threads {
            t.join().expect("background thread");
        }
    }
}

fn lookup(core: &FsCore, dir: u64, name: &str) -> Option<u64> {
    core.lookup(dir, OsStr::new(name)).ok().map(|s| s.ino)
}

fn dir_of(core: &FsCore, case: &str) -> u64 {
    let files = lookup(core, 1, "files").expect("files");
    lookup(core, files, case).expect("case dir")
}

fn read_all(core: &FsCore, ino: u64) -> Vec<u8> {
    let o = core.open(ino, libc::O_RDONLY).expect("open");
    let mut out = Vec::new();
    loop {
        let part = match &o.local {
            Some(file) => {
                let mut buf = vec![0; 128 << 10];
                let n = file
                    .read_at(&mut buf, out.len() as u64)
                    .expect("local read");
                buf.truncate(n);
                buf
            }
            None => core
                .read(o.fh, out.len() as u64, 128 << 10)
                .expect("read")
                .to_vec(),
        };
        if part.is_empty() {
            break;
        }
        out.extend_from_slice(&part);
    }
    core.release(o.fh).expect("release");
    out
}

fn run(server: &Server, ops: Vec<Op>, local: bool) {
    static CASE: AtomicUsize = AtomicUsize::new(0);
    let case = format!("m{}", CASE.fetch_add(1, Ordering::Relaxed));
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path().join("cache");
    let mut client = Client::start(server, &cache, "a", local);
    let files = lookup(&client.core, 1, "files").expect("files");
    client
        .core
        .mkdir(files, OsStr::new(&case), 0o755)
        .expect("mkdir");
    let mut model: BTreeMap<&str, Vec<u8>> = BTreeMap::new();

    for op in ops {
        let core = client.core.clone();
        let dir = dir_of(&core, &case);
        match op {
            Op::Write {
                file,
                offset,
                len,
                byte,
            } => {
                let name = NAMES[file];
                let opened = match lookup(&core, dir, name) {
                    Some(ino) => core.open(ino, libc::O_RDWR).expect("open"),
                    None => {
                        core.create(dir, OsStr::new(name), 0o644, libc::O_RDWR)
                            .expect("create")
                            .1
                    }
                };
                assert_eq!(opened.local.is_some(), local, "writers get local I/O");
                let data = vec![byte; len as usize];
                match &opened.local {
                    Some(file) => file
                        .write_all_at(&data, u64::from(offset))
                        .expect("local write"),
                    None => {
                        core.write(opened.fh, u64::from(offset), &data)
                            .expect("write");
                    }
                }
                core.flush(opened.fh).expect("flush");
                core.release(opened.fh).expect("release");
                let m = model.entry(name).or_default();
                let end = (offset + len) as usize;
                if m.len() < end {
                    m.resize(end, 0);
                }
                m[offset as usize..end].copy_from_slice(&data);
                // Read-after-write: right after the close, while its upload may be under
                // way, the file reads back as written.
                let ino = lookup(&core, dir, name).expect("just written");
                assert_eq!(
                    core.getattr(ino).expect("getattr").size,
                    m.len() as u64,
                    "{name} size right after close"
                );
                assert!(
                    read_all(&core, ino) == *m,
                    "{name} content right after close"
                );
            }
            Op::Truncate { file, len } => {
                let name = NAMES[file];
                if let Some(ino) = lookup(&core, dir, name) {
                    core.setattr(
                        ino,
                        SetAttr {
                            size: Some(u64::from(len)),
                            ..SetAttr::default()
                        },
                    )
                    .expect("truncate");
                    model
                        .get_mut(name)
                        .expect("in model")
                        .resize(len as usize, 0);
                }
            }
            Op::Rename { from, to } => {
                let (from, to) = (NAMES[from], NAMES[to]);
                if from != to && model.contains_key(from) {
                    core.rename(
                        dir,
                        OsStr::new(from),
                        dir,
                        OsStr::new(to),
                        shelf_protocol::RenameMode::Replace,
                    )
                    .expect("rename");
                    let content = model.remove(from).expect("in model");
                    model.insert(to, content);
                }
            }
            Op::Unlink { file } => {
                let name = NAMES[file];
                if model.remove(name).is_some() {
                    core.unlink(dir, OsStr::new(name)).expect("unlink");
                }
            }
            Op::Fsync { file } => {
                if let Some(ino) = lookup(&core, dir, NAMES[file]) {
                    let o = core.open(ino, libc::O_RDONLY).expect("open");
                    core.fsync(o.fh).expect("fsync");
                    core.release(o.fh).expect("release");
                }
            }
            Op::Check { file } => {
                let name = NAMES[file];
                match (lookup(&core, dir, name), model.get(name)) {
                    (Some(ino), Some(want)) => {
                        assert_eq!(
                            core.getattr(ino).expect("getattr").size,
                            want.len() as u64,
                            "{name} size"
                        );
                        assert!(read_all(&core, ino) == *want, "{name} content");
                    }
                    (None, None) => {}
                    (found, want) => {
                        panic!("{name}: mount has {found:?}, model has {}", want.is_some())
                    }
                }
            }
            Op::Restart => {
                drop(core);
                client.stop();
                client = Client::start(server, &cache, "a", local);
            }
        }
    }
    assert_eq!(
        client.core.drain(Duration::from_secs(60)),
        0,
        "every upload finished"
    );
    client.stop();

    // Another device sees exactly the model.
    let other = Client::start(server, &tmp.path().join("other"), "b", local);
    let dir = dir_of(&other.core, &case);
    for name in NAMES {
        match (lookup(&other.core, dir, name), model.get(name)) {
            (Some(ino), Some(want)) => assert!(
                read_all(&other.core, ino) == *want,
                "{name} on the other device"
            ),
            (None, None) => {}
            (found, want) => panic!(
                "{name} on the other device: {found:?} vs model {}",
                want.is_some()
            ),
        }
    }
    other.stop();
}

#[test]
fn core_matches_a_model_with_relayed_io() {
    check_model(false);
}

#[test]
fn core_matches_a_model_with_local_io() {
    check_model(true);
}

fn check_model(local: bool) {
    // The server belongs to this test (not a static), so it is stopped when the test ends.
    let server = Server::start(&[("alice", "pw", "user")]);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 16,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..25), |ops| {
        run(&server, ops, local);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

//! End-to-end: read-only is enforced at the call. Every call that could change something
//! is tried on four kinds of target — a viewer's (read-write share, but the account is a
//! viewer), a read-only share, a read-write share, the user's own folder — as root and as
//! an ordinary user (`nobody`, the mount has `allow_other`), in both file I/O modes. On
//! read-only targets each call fails at once with the errno a read-only filesystem gives
//! (EROFS; EACCES or EPERM where the kernel's permission check comes first for an
//! ordinary user, as the files show no write bits), and nothing is left in the cache
//! folder or the queues; on writable targets each call succeeds.

use shelf_tests::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Each call, run by `python3` in a fixture folder holding `doc.txt`, `del.txt`,
/// `mv.txt`, `a.txt`, `b.txt`, `deldir/`; prints `NAME ERRNO` (0: it succeeded).
const CALLS: &str = r#"
import ctypes, errno, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def renameat2(a, b, flags):
    AT_FDCWD = -100
    if libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
def opened(flags, then=None):
    fd = os.open("doc.txt", flags)
    try:
        if then: then(fd)
    finally:
        os.close(fd)
def mapped(fd):
    m = mmap.mmap(fd, 4, mmap.MAP_SHARED, mmap.PROT_WRITE | mmap.PROT_READ)
    m[0:1] = b"X"
    m.close()
me = (os.getuid(), os.getgid())
calls = [
    ("open_wronly", lambda: opened(os.O_WRONLY)),
    ("open_rdwr", lambda: opened(os.O_RDWR)),
    ("open_append", lambda: opened(os.O_WRONLY | os.O_APPEND, lambda fd: os.write(fd, b"x"))),
    ("open_trunc", lambda: opened(os.O_RDONLY | os.O_TRUNC)),
    ("write", lambda: opened(os.O_WRONLY, lambda fd: os.pwrite(fd, b"x", 0))),
    ("truncate", lambda: os.truncate("doc.txt", 1)),
    ("ftruncate", lambda: opened(os.O_WRONLY, lambda fd: os.ftruncate(fd, 2))),
    ("fallocate", lambda: opened(os.O_WRONLY, lambda fd: os.posix_fallocate(fd, 0, 8192))),
    ("mmap_shared_write", lambda: opened(os.O_RDWR, mapped)),
    ("chmod", lambda: os.chmod("doc.txt", 0o600)),
    ("chown", lambda: os.chown("doc.txt", *me)),
    ("utimens_now", lambda: os.utime("doc.txt")),
    ("utimens_set", lambda: os.utime("doc.txt", (1000000000, 1000000000))),
    ("setxattr", lambda: os.setxattr("doc.txt", "user.k", b"v")),
    ("removexattr", lambda: os.removexattr("doc.txt", "user.gone")),
    ("create", lambda: os.close(os.open("new.txt", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))),
    ("mkdir", lambda: os.mkdir("newdir")),
    ("symlink", lambda: os.symlink("doc.txt", "newlink")),
    ("link", lambda: os.link("doc.txt", "newhard")),
    ("mknod_fifo", lambda: os.mkfifo("newfifo")),
    ("rename", lambda: os.rename("mv.txt", "mv2.txt")),
    ("rename_exchange", lambda: renameat2("a.txt", "b.txt", 2)),
    ("unlink", lambda: os.unlink("del.txt")),
    ("rmdir", lambda: os.rmdir("deldir")),
]
for name, call in calls:
    try:
        call()
        print(name, 0)
    except OSError as e:
        # removexattr of a name that is not there: the change was allowed.
        print(name, 0 if (name == "removexattr" and e.errno == errno.ENODATA) else e.errno)
"#;

/// The fixture every target holds (made by its owner).
const FIXTURE: &str = "mkdir -p fx/deldir && cd fx && echo doc > doc.txt && echo del > del.txt \
                       && echo mv > mv.txt && echo a > a.txt && echo b > b.txt";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Viewer,
    ReadOnlyShare,
    ReadWriteShare,
    Own,
}

/// The errno each call must give (0: success) for `target`, as root or as `nobody`.
fn expected(target: Target, call: &str, root: bool) -> i32 {
    match target {
        // Hard links stay out of shared folders.
        Target::ReadWriteShare if call == "link" => libc::EXDEV,
        Target::ReadWriteShare | Target::Own => 0,
        Target::Viewer | Target::ReadOnlyShare if root => libc::EROFS,
        // An ordinary user meets the kernel's permission check first: no write bits on
        // files and folders, and only an owner may chmod, chown or set explicit times.
        // (fs.protected_hardlinks: no link to a file one may not write.)
        Target::Viewer | Target::ReadOnlyShare => match call {
            "chmod" | "chown" | "utimens_set" | "link" => libc::EPERM,
            _ => libc::EACCES,
        },
    }
}

fn run_calls(dir: &Path, root: bool) -> BTreeMap<String, i32> {
    let mut cmd = std::process::Command::new("setpriv");
    if !root {
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    }
    let out = cmd
        .args(["/usr/bin/python3", "-c", CALLS])
        .current_dir(dir)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "calls in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (name, errno) = l.split_once(' ').expect("NAME ERRNO");
            (name.to_string(), errno.parse().expect("errno"))
        })
        .collect()
}

/// Staging files in a device's cache folders (one per account and server).
fn staged(device: &Device) -> usize {
    let mut n = 0;
    for account in std::fs::read_dir(device.cache()).expect("cache").flatten() {
        if let Ok(files) = std::fs::read_dir(account.path().join("staging")) {
            n += files.count();
        }
    }
    n
}

fn assert_nothing_pending(device: &Device, staged_before: usize, what: &str) {
    let status = device.run(&["status"]);
    assert!(
        status.contains("pending:  0 file(s) waiting for upload, 0 change(s)"),
        "{what}: {status}"
    );
    assert!(!status.contains("ALERT"), "{what}: {status}");
    assert_eq!(staged(device), staged_before, "{what}: staging files");
}

#[test]
fn every_change_is_refused_at_the_call_on_read_only_targets() {
    let server = Server::start(&[
        ("erin", "pw", "user"),
        ("frank", "pw", "user"),
        ("vic", "pw", "viewer"),
    ]);
    let erin = Device::new();
    erin.login(&server, "erin", "pw", "laptop");
    let e = erin.mount();
    for share in ["ro", "rw", "vw"] {
        e.sh(&format!(
            "mkdir files/personal/{share} && cd files/personal/{share} && {FIXTURE}"
        ));
    }
    e.sh("sync");
    erin.run(&[
        "share",
        &e.path.join("files/personal/ro").display().to_string(),
        "--with",
        "frank",
    ]);
    erin.run(&[
        "share",
        &e.path.join("files/personal/rw").display().to_string(),
        "--with",
        "frank",
        "--write",
    ]);
    // Read-write for a viewer: the account's role still makes it read-only.
    erin.run(&[
        "share",
        &e.path.join("files/personal/vw").display().to_string(),
        "--with",
        "vic",
        "--write",
    ]);

    let frank = Device::new();
    frank.login(&server, "frank", "pw", "pc");
    let vic = Device::new();
    vic.login(&server, "vic", "pw", "phone");

    for (mode_args, mode) in [
        (&[][..], "local"),
        (&["-o", "nopassthrough"][..], "relayed"),
    ] {
        let args: Vec<&str> = mode_args
            .iter()
            .copied()
            .chain(["-o", "allow_other"])
            .collect();
        let f = frank.mount_full(&args, &[]);
        let v = vic.mount_full(&args, &[]);
        assert!(frank
            .run(&["status"])
            .contains(&format!("file I/O: {mode}")));
        assert!(wait_until(Duration::from_secs(5), || f
            .sh("ls shared/erin")
            == "ro\nrw\n"));
        // Read-only targets show no write bits.
        assert_eq!(
            f.sh("stat -c %A shared/erin/ro/fx/doc.txt shared/erin/ro/fx"),
            "-r--r--r--\ndr-xr-xr-x\n"
        );
        assert_eq!(v.sh("stat -c %A shared/erin/vw/fx/doc.txt"), "-r--r--r--\n");

        for root in [true, false] {
            let who = if root { "root" } else { "nobody" };
            // Fresh fixtures on the writable targets, owned by whoever runs the calls.
            let chown = if root {
                String::new()
            } else {
                "&& chown -R 65534:65534 fx".into()
            };
            f.sh(&format!(
                "cd shared/erin/rw && rm -rf fx && {FIXTURE} && cd .. {chown}"
            ));
            f.sh(&format!(
                "mkdir -p files/personal/own && cd files/personal/own && rm -rf fx && {FIXTURE} && cd .. {chown}"
            ));
            if !root {
                // So that nobody can reach the fixtures through the folders above them.
                f.sh("chmod 755 files files/personal files/personal/own");
            }
            f.sh("sync");
            if root {
                assert_eq!(f.sh("stat -c %A shared/erin/rw/fx/doc.txt"), "-rw-r--r--\n");
            }
            let targets = [
                (Target::Viewer, &v, &vic, v.path.join("shared/erin/vw/fx")),
                (
                    Target::ReadOnlyShare,
                    &f,
                    &frank,
                    f.path.join("shared/erin/ro/fx"),
                ),
                (
                    Target::ReadWriteShare,
                    &f,
                    &frank,
                    f.path.join("shared/erin/rw/fx"),
                ),
                (
                    Target::Own,
                    &f,
                    &frank,
                    f.path.join("files/personal/own/fx"),
                ),
            ];
            for (target, _mount, device, dir) in targets {
                let before = staged(device);
                let got = run_calls(&dir, root);
                assert_eq!(got.len(), 24, "{got:?}");
                let mismatches: Vec<String> = got
                    .iter()
                    .filter(|(call, errno)| **errno != expected(target, call, root))
                    .map(|(call, errno)| {
                        format!(
                            "{call}: errno {errno}, want {}",
                            expected(target, call, root)
                        )
                    })
                    .collect();
                assert!(
                    mismatches.is_empty(),
                    "{target:?} as {who} with {mode} I/O:\n{}",
                    mismatches.join("\n")
                );
                if matches!(target, Target::Viewer | Target::ReadOnlyShare) {
                    assert_nothing_pending(device, before, &format!("{target:?} as {who}"));
                }
            }
        }
        // The owner's files are unchanged.
        assert_eq!(
            e.sh("cat files/personal/ro/fx/doc.txt files/personal/vw/fx/doc.txt"),
            "doc\ndoc\n"
        );
        f.unmount();
        v.unmount();
    }
    e.unmount();
}

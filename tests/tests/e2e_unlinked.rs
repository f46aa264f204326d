//! End-to-end: POSIX behaviour of names and open files. A descriptor opened before its
//! file's last name goes keeps reading and writing the file until it is closed (in both
//! file I/O modes, for a file with a local copy and for one read from the server), and
//! the content written meanwhile is uploaded under no name: it is in the deleted file's
//! history. `rename` updates the renamed node's ctime and both folders' mtime and ctime.

use shelf_tests::*;

const OPEN_UNLINKED: &str = r#"
import os, sys, time
p = 'files/personal/u.txt'
fd = os.open(p, os.O_RDWR)
os.unlink(p)
assert not os.path.exists(p)
assert os.pread(fd, 100, 0) == b'v1\n', os.pread(fd, 100, 0)
os.pwrite(fd, b'v2 longer\n', 0)
assert os.pread(fd, 100, 0) == b'v2 longer\n'
st = os.fstat(fd)
assert st.st_nlink == 0 and st.st_size == 10, st
time.sleep(1.2)  # past the attribute cache: asked again
st = os.fstat(fd)
assert st.st_nlink == 0 and st.st_size == 10, st
assert os.pread(fd, 100, 0) == b'v2 longer\n'
os.close(fd)

# A file read from the server (no local copy), opened read-only, then unlinked.
q = 'files/personal/remote.txt'
fd = os.open(q, os.O_RDONLY)
os.unlink(q)
time.sleep(1.2)
assert os.pread(fd, 100, 0) == b'from the server\n'
assert os.fstat(fd).st_nlink == 0
os.close(fd)
print('ok')
"#;

const RENAME_TIMES: &str = r#"
import os, time
os.makedirs('files/work/a', exist_ok=True)
os.makedirs('files/work/b', exist_ok=True)
with open('files/work/a/f', 'w') as f:
    f.write('x')
before = os.stat('files/work/a/f').st_ctime_ns
da, db = os.stat('files/work/a'), os.stat('files/work/b')
time.sleep(0.05)
os.rename('files/work/a/f', 'files/work/b/g')
after = os.stat('files/work/b/g')
assert after.st_ctime_ns > before, (before, after.st_ctime_ns)
for old, path in ((da, 'files/work/a'), (db, 'files/work/b')):
    new = os.stat(path)
    assert new.st_mtime_ns > old.st_mtime_ns and new.st_ctime_ns > old.st_ctime_ns, (path, old, new)
print('ok')
"#;

fn open_files_outlive_their_names(mount_args: &[&str]) {
    let server = Server::start(&[("una", "pw", "user")]);
    let d = Device::new();
    d.login(&server, "una", "pw", "laptop");
    let m = d.mount_full(mount_args, &[]);
    m.sh("printf 'v1\\n' > files/personal/u.txt && printf 'from the server\\n' > files/personal/remote.txt");
    m.sh("python3 -c \"import os; [os.fsync(os.open(p, os.O_RDONLY)) for p in ('files/personal/u.txt', 'files/personal/remote.txt')]\"");
    m.unmount();
    // A fresh mount has no local copies: both files are read from the server.
    let m = d.mount_full(mount_args, &[]);
    m.sh("cat files/personal/u.txt > /dev/null"); // u.txt is read once, remote.txt never
    assert_eq!(
        m.sh(&format!("python3 - <<'PY'\n{OPEN_UNLINKED}\nPY")),
        "ok\n"
    );
    assert_eq!(m.sh("ls files/personal"), "");
    // Uploaded under no name: the deleted file's history has the last content.
    let uploaded = wait_until(std::time::Duration::from_secs(10), || {
        d.run(&["status"]).contains("pending:  0 file(s)")
    });
    assert!(uploaded, "{}\n{}", d.run(&["status"]), d.run(&["events"]));
    let versions = m.sh("ls files/personal/.versions/");
    assert!(versions.contains("u.txt.v02"), "{versions}");
    assert_eq!(
        m.sh("cat files/personal/.versions/u.txt.v02"),
        "v2 longer\n"
    );
    assert_eq!(
        m.sh(&format!("python3 - <<'PY'\n{RENAME_TIMES}\nPY")),
        "ok\n"
    );
    m.unmount();
}

#[test]
fn open_files_outlive_their_names_with_local_io() {
    open_files_outlive_their_names(&[]);
}

#[test]
fn open_files_outlive_their_names_with_relayed_io() {
    open_files_outlive_their_names(&["-o", "nopassthrough"]);
}

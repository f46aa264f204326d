//! End-to-end: ordinary shell tools on a real mount against a real server, compared with the
//! same script run on a local folder; the data survives unmount + mount on another device and
//! a server restart.

use shelf_tests::*;

/// Builds a tree with the tools users run. Deterministic so that its digest can be compared
/// with the same script run on a local folder.
const WORKLOAD: &str = r#"
cd files/work
mkdir -p proj/src/deep
printf 'hello\n' > proj/README
cp /etc/services proj/services.txt
cat proj/README proj/services.txt > proj/both.txt
mv proj/both.txt proj/src/both.txt
head -c 3000000 /dev/zero | tr '\0' 'a' > big.bin
dd if=/dev/zero of=big.bin bs=1 seek=1000000 count=5 conv=notrunc status=none
truncate -s 2500000 big.bin
truncate -s 100 proj/services.txt
chmod 640 proj/README
chmod 700 proj/src
touch -d '2021-03-04 05:06:07' proj/README
mkdir tarsrc && printf 'one\n' > tarsrc/1 && printf 'two\n' > tarsrc/2 && mkdir tarsrc/sub && printf 'three\n' > tarsrc/sub/3
tar -cf /tmp/shelf-e2e-$$.tar tarsrc && rm -r tarsrc && mkdir untar && tar -xf /tmp/shelf-e2e-$$.tar -C untar && rm /tmp/shelf-e2e-$$.tar
rsync -a untar/ synced/
mkdir repo && cd repo && git init -q && printf 'code\n' > main.rs && git add main.rs \
  && git -c user.email=t@e -c user.name=t commit -qm first && printf 'more\n' >> main.rs \
  && git -c user.email=t@e -c user.name=t commit -qam second && git log --oneline | wc -l > ../commits && cd ..
rm -rf repo/.git
ln -s proj/README link
mkdir -p gone/a/b && printf 'x\n' > gone/a/b/f && rm -r gone
mv proj/src proj/source
"#;

#[test]
fn shell_tools_match_a_local_folder_across_remount_and_server_restart() {
    shell_tools_match(&[], "local");
}

/// The same with every read and write relayed through the client (as for a user without
/// CAP_SYS_ADMIN, where the kernel refuses passthrough).
#[test]
fn shell_tools_match_with_relayed_io() {
    shell_tools_match(&["-o", "nopassthrough"], "relayed");
}

fn shell_tools_match(mount_args: &[&str], io_mode: &str) {
    let mut server = Server::start(&[("alice", "pw-alice", "user")]);
    let laptop = Device::new();
    laptop.login(&server, "alice", "pw-alice", "laptop");
    let mount = laptop.mount_full(mount_args, &[]);
    let status = laptop.run(&["status"]);
    assert!(
        status.contains(&format!("file I/O: {io_mode}")),
        "status: {status}"
    );

    // The same workload on a local folder with the same category layout.
    let local = tempfile::tempdir().expect("tempdir");
    sh_in(local.path(), "mkdir -p files/work");
    sh_in(local.path(), WORKLOAD);
    mount.sh(WORKLOAD);

    let want = tree_digest(&local.path().join("files/work"));
    assert_eq!(tree_digest(&mount.path.join("files/work")), want);
    assert_eq!(mount.sh("cat files/work/commits").trim(), "2");
    assert_eq!(mount.sh("readlink files/work/link").trim(), "proj/README");
    assert_eq!(
        mount.sh("stat -c %Y files/work/proj/README").trim(),
        sh_in(local.path(), "stat -c %Y files/work/proj/README").trim()
    );
    let found = mount.sh("find files/work/synced -type f | sort");
    assert_eq!(
        found,
        "files/work/synced/tarsrc/1\nfiles/work/synced/tarsrc/2\nfiles/work/synced/tarsrc/sub/3\n"
    );
    mount.unmount();

    // Another device sees the same tree.
    let desktop = Device::new();
    desktop.login(&server, "alice", "pw-alice", "desktop");
    let m2 = desktop.mount_full(mount_args, &[]);
    assert_eq!(tree_digest(&m2.path.join("files/work")), want);
    m2.unmount();

    // And so it is after a server restart.
    server.restart();
    let m3 = desktop.mount_full(mount_args, &[]);
    assert_eq!(tree_digest(&m3.path.join("files/work")), want);
    assert_eq!(
        m3.sh("stat -c %Y files/work/proj/README").trim(),
        sh_in(local.path(), "stat -c %Y files/work/proj/README").trim()
    );
    m3.unmount();
}

#[test]
fn new_account_has_the_category_folders() {
    let server = Server::start(&[("bob", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "bob", "pw", "phone");
    let m = dev.mount();
    let listing = m.sh("find . -mindepth 1 -type d | LC_ALL=C sort");
    let mut want = vec!["./shared".to_string()];
    for c in ["files", "photos", "videos"] {
        want.push(format!("./{c}"));
        for s in ["personal", "projects", "work"] {
            want.push(format!("./{c}/{s}"));
        }
    }
    want.sort();
    assert_eq!(listing.lines().collect::<Vec<_>>(), want);
    // A user adds a sub-category with plain mkdir.
    m.sh("mkdir photos/work/WebProject && test -d photos/work/WebProject");
    m.unmount();
}

#[test]
fn extended_attributes_and_statfs() {
    let server = Server::start(&[("carol", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "carol", "pw", "laptop");
    let m = dev.mount();
    m.sh(r#"printf data > files/a
python3 - <<'PY'
import os, errno
os.setxattr('files/a', 'user.colour', b'blue')
assert os.getxattr('files/a', 'user.colour') == b'blue'
assert 'user.colour' in os.listxattr('files/a')
try:
    os.setxattr('files/a', 'user.colour', b'red', os.XATTR_CREATE)
    raise SystemExit('XATTR_CREATE replaced an existing attribute')
except OSError as e:
    assert e.errno == errno.EEXIST, e
os.removexattr('files/a', 'user.colour')
try:
    os.getxattr('files/a', 'user.colour')
    raise SystemExit('removed attribute still there')
except OSError as e:
    assert e.errno == errno.ENODATA, e
try:
    os.setxattr('files/a', 'trusted.x', b'1')
    raise SystemExit('non-user namespace accepted')
except OSError as e:
    assert e.errno in (errno.EOPNOTSUPP, errno.EPERM), e
# Labels are not stored: "not supported", so `ls -l` stops asking after one file.
for name in ('security.selinux', 'trusted.x'):
    try:
        os.getxattr('files/a', name, follow_symlinks=False)
        raise SystemExit(name + ' answered')
    except OSError as e:
        assert e.errno == errno.EOPNOTSUPP, (name, e)
# No ACLs: on a mount without allow_other the kernel does none, and "not supported"
# lets `ls -l` stop asking after one file too.
try:
    os.getxattr('files/a', 'system.posix_acl_access')
    raise SystemExit('an ACL answered')
except OSError as e:
    assert e.errno == errno.EOPNOTSUPP, e
st = os.statvfs('.')
assert st.f_blocks > 0 and st.f_bsize == 4096 and st.f_namemax == 255
PY"#);
    m.unmount();
}

#[test]
fn special_files_and_ownership_survive_like_on_a_local_disk() {
    let server = Server::start(&[("dave", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "dave", "pw", "laptop");
    let m = dev.mount();
    m.sh(r#"cd files
mkfifo pipe
mknod null c 1 3
printf x > owned
chown 1234:2345 owned
python3 -c "import socket; s=socket.socket(socket.AF_UNIX); s.bind('sock')"
"#);
    let stat = "cd files && stat -c '%n|%F|%t:%T|%u:%g' pipe null owned sock";
    let want = "pipe|fifo|0:0|0:0\nnull|character special file|1:3|0:0\nowned|regular file|0:0|1234:2345\nsock|socket|0:0|0:0\n";
    assert_eq!(m.sh(stat), want);
    m.unmount();
    let other = Device::new();
    other.login(&server, "dave", "pw", "desktop");
    let m2 = other.mount();
    assert_eq!(m2.sh(stat), want);
    m2.unmount();
}

#[test]
fn another_devices_new_file_appears_within_the_cache_ttl() {
    let server = Server::start(&[("erin", "pw", "user")]);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "erin", "pw", "laptop");
    b.login(&server, "erin", "pw", "desktop");
    let (ma, mb) = (a.mount(), b.mount());
    // B looks first: "not found" is now cached by B's kernel.
    assert!(!mb.path.join("files/new.txt").exists());
    ma.sh("printf 'from laptop\\n' > files/new.txt");
    // Close returned on A; its upload lands within moments. B's cached answers expire
    // after the 1 s entry/attribute TTL.
    let seen = wait_until(std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(mb.path.join("files/new.txt")).is_ok_and(|t| t == "from laptop\n")
    });
    assert!(seen, "B sees A's file");
    ma.unmount();
    mb.unmount();
}

#[test]
fn a_local_copy_is_replaced_when_another_device_changes_the_file() {
    let server = Server::start(&[("fay", "pw", "user")]);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "fay", "pw", "laptop");
    b.login(&server, "fay", "pw", "desktop");
    let (ma, mb) = (a.mount(), b.mount());
    // B writes the file, so B keeps a local copy that the kernel reads directly.
    mb.sh("printf 'old text from B\\n' > files/shared.txt && sync files/shared.txt");
    assert_eq!(mb.sh("cat files/shared.txt"), "old text from B\n");
    let seen = wait_until(std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(ma.path.join("files/shared.txt"))
            .is_ok_and(|t| t.starts_with("old"))
    });
    assert!(seen, "A sees B's file");
    ma.sh("printf 'new from A\\n' > files/shared.txt && sync files/shared.txt");
    // B's next open after its attribute cache expires finds the newer version and drops
    // its local copy instead of serving old bytes.
    let seen = wait_until(std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(mb.path.join("files/shared.txt")).is_ok_and(|t| t == "new from A\n")
    });
    assert!(seen, "B reads A's new content");
    ma.unmount();
    mb.unmount();
}

#[test]
fn memory_mapped_writes_reach_other_devices() {
    for args in [&[][..], &["-o", "nopassthrough"][..]] {
        let server = Server::start(&[("gus", "pw", "user")]);
        let (a, b) = (Device::new(), Device::new());
        a.login(&server, "gus", "pw", "laptop");
        b.login(&server, "gus", "pw", "desktop");
        let ma = a.mount_full(args, &[]);
        ma.sh("head -c 200000 /dev/zero > files/mapped.bin");
        ma.sh(r#"python3 -c "
import mmap
with open('files/mapped.bin', 'r+b') as f:
    m = mmap.mmap(f.fileno(), 0)
    m[1000:1005] = b'HELLO'
    m[199995:200000] = b'WORLD'
    m.flush()
    m.close()
""#);
        ma.unmount();
        let mb = b.mount_full(args, &[]);
        let data = std::fs::read(mb.path.join("files/mapped.bin")).expect("read");
        assert_eq!(data.len(), 200_000, "{args:?}");
        assert_eq!(&data[1000..1005], b"HELLO", "{args:?}");
        assert_eq!(&data[199_995..], b"WORLD", "{args:?}");
        mb.unmount();
    }
}

/// tar, make and rsync compare stat results: the upload of a file must not change its
/// size, mtime or ctime as the mount shows them.
#[test]
fn uploads_do_not_change_what_stat_shows() {
    let server = Server::start(&[("hal", "pw", "user")]);
    let d = Device::new();
    d.login(&server, "hal", "pw", "laptop");
    let m = d.mount();
    m.sh(r#"python3 - <<'PY'
import os, time
with open('files/s.txt', 'w') as f:
    f.write('content\n')
    f.flush()
    time.sleep(0.05)
    before = os.stat('files/s.txt')
    os.fsync(f.fileno())       # committed on the server while still open
time.sleep(1.2)                # past the attribute cache
after = os.stat('files/s.txt')
for field in ('st_size', 'st_mtime_ns', 'st_ctime_ns'):
    assert getattr(before, field) == getattr(after, field), (field, before, after)
PY"#);
    m.unmount();
}

/// The kernel leaves clearing set-ID bits to the mount (FUSE_HANDLE_KILLPRIV_V2, which
/// spares a round trip per chown): on a real mount, in both file I/O modes, chown, and an
/// ordinary user's write or truncation, clear them as on a local disk; root's write does not.
#[test]
fn set_id_bits_are_cleared_as_on_a_local_disk() {
    let server = Server::start(&[("sid", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "sid", "pw", "laptop");
    for mode_args in [&[][..], &["-o", "nopassthrough"][..]] {
        let args: Vec<&str> = mode_args
            .iter()
            .copied()
            .chain(["-o", "allow_other"])
            .collect();
        let m = dev.mount_full(&args, &[]);
        let dir = m.path.join("files");
        let as_nobody = |script: &str| {
            let out = std::process::Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "sh",
                    "-c",
                    script,
                ])
                .current_dir(&dir)
                .output()
                .expect("setpriv");
            assert!(
                out.status.success(),
                "{script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        m.sh("cd files && rm -f f && printf x > f && chmod 6755 f && chown 1234 f");
        assert_eq!(m.sh("stat -c %a files/f"), "755\n", "chown {mode_args:?}");
        m.sh("cd files && chmod 6777 f && printf y >> f");
        assert_eq!(
            m.sh("stat -c %a files/f"),
            "6777\n",
            "root's write {mode_args:?}"
        );
        as_nobody("printf z >> f");
        assert_eq!(
            m.sh("stat -c %a files/f"),
            "777\n",
            "nobody's write {mode_args:?}"
        );
        m.sh("chmod 4777 files/f");
        as_nobody("truncate -s 1 f");
        assert_eq!(
            m.sh("stat -c %a files/f"),
            "777\n",
            "nobody's truncate {mode_args:?}"
        );
        assert_eq!(m.sh("cat files/f"), "x");
        m.unmount();
    }
}

//! End-to-end: the durability contract of SEMANTICS.md.
//!
//! * once `close` returns, a killed client loses nothing: the next mount uploads it;
//! * `fsync` returns only once the version is committed on the server;
//! * a killed client leaves no dead mount point behind (auto-unmount).

use shelf_tests::*;
use std::time::Duration;

#[test]
fn closed_files_survive_a_killed_client() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let laptop = Device::new();
    laptop.login(&server, "alice", "pw", "laptop");
    // Hold background uploads so the files are only journaled when the client dies.
    let mut m = laptop.mount_with(&[("SHELF_TEST_HOLD_UPLOADS", "1")]);
    m.sh(r#"
for i in $(seq 1 20); do head -c $((i * 7919)) /dev/urandom > files/personal/f$i; done
printf 'edited\n' > files/personal/f3
"#);
    let sums = m.sh("md5sum files/personal/f*");
    let account_cache = laptop
        .cache()
        .read_dir()
        .expect("cache folder")
        .next()
        .expect("an account cache")
        .expect("entry")
        .path();
    assert_eq!(
        shelf::cache::pending_uploads(&account_cache),
        20,
        "every closed file is in the journal"
    );
    let path = m.path.clone();
    m.kill_client();
    // auto_unmount: no "Transport endpoint is not connected" left behind.
    assert!(
        wait_until(Duration::from_secs(10), || !is_mounted(&path)),
        "mount went away with the client"
    );
    drop(m);

    // The next mount replays the journal.
    let m = laptop.mount();
    m.unmount(); // waits for the uploads
    let desktop = Device::new();
    desktop.login(&server, "alice", "pw", "desktop");
    let d = desktop.mount();
    assert_eq!(d.sh("md5sum files/personal/f*"), sums);
    assert_eq!(d.sh("cat files/personal/f3"), "edited\n");
    d.unmount();
}

#[test]
fn fsync_means_committed_on_the_server() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let laptop = Device::new();
    laptop.login(&server, "alice", "pw", "laptop");
    let mut m = laptop.mount_with(&[("SHELF_TEST_HOLD_UPLOADS", "1")]);
    m.sh("head -c 3000000 /dev/urandom > /tmp/shelf-fsync-$PPID; dd if=/tmp/shelf-fsync-$PPID of=files/work/synced.bin bs=1M conv=fsync status=none");
    let want = m.sh("md5sum < files/work/synced.bin");
    m.sh("rm -f /tmp/shelf-fsync-*");
    // Kill the client right after fsync: nothing is journaled-only; the server has it.
    m.kill_client();
    drop(m);
    let desktop = Device::new();
    desktop.login(&server, "alice", "pw", "desktop");
    let d = desktop.mount();
    assert_eq!(d.sh("md5sum < files/work/synced.bin"), want);
    d.unmount();
}

#[test]
fn a_killed_server_keeps_every_fsynced_file() {
    let mut server = Server::start(&[("alice", "pw", "user")]);
    let laptop = Device::new();
    laptop.login(&server, "alice", "pw", "laptop");
    let m = laptop.mount();
    m.sh("for i in 1 2 3; do head -c 500000 /dev/urandom > files/s$i; python3 -c \"import os; f=os.open('files/s$i', os.O_RDONLY); os.fsync(f)\"; done");
    let want = m.sh("md5sum files/s1 files/s2 files/s3");
    m.unmount();
    server.kill();
    server.start_again();
    let desktop = Device::new();
    desktop.login(&server, "alice", "pw", "desktop");
    let d = desktop.mount();
    assert_eq!(d.sh("md5sum files/s1 files/s2 files/s3"), want);
    d.unmount();
}

#[test]
fn forced_umount_keeps_pending_uploads_for_the_next_mount() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let laptop = Device::new();
    laptop.login(&server, "alice", "pw", "laptop");
    let m = laptop.mount_with(&[("SHELF_TEST_HOLD_UPLOADS", "1")]);
    m.sh("for i in 1 2 3; do printf 'pending %s\\n' $i > files/p$i; done");
    let start = std::time::Instant::now();
    let out = laptop
        .shelf()
        .args(["umount", "--force"])
        .arg(&m.path)
        .output()
        .expect("umount");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "forced umount does not wait for uploads"
    );
    assert!(!is_mounted(&m.path));
    let status = laptop.shelf().arg("status").output().expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("pending:  3 file(s)"), "{text}");
    drop(m);
    // The next mount uploads them; a plain `shelf umount` waits for that.
    laptop.mount().unmount();
    let desktop = Device::new();
    desktop.login(&server, "alice", "pw", "desktop");
    let d = desktop.mount();
    assert_eq!(
        d.sh("cat files/p1 files/p2 files/p3"),
        "pending 1\npending 2\npending 3\n"
    );
    d.unmount();
}

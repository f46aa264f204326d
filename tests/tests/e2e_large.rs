//! End-to-end: files over 4 GiB (sparse, so the test stays quick) write, read at any
//! offset, truncate and keep versions like small ones.

use shelf_tests::*;

#[test]
fn files_over_4_gib_work_end_to_end() {
    let server = Server::start(&[("lou", "pw", "user")]);
    let a = Device::new();
    a.login(&server, "lou", "pw", "laptop");
    let m = a.mount();
    let gib: u64 = 1 << 30;
    m.sh(&format!(
        "cd files && truncate -s {size} big.img \
         && printf MID | dd of=big.img bs=1 seek={mid} conv=notrunc status=none \
         && printf END | dd of=big.img bs=1 seek={end} conv=notrunc status=none \
         && sync big.img",
        size = 5 * gib,
        mid = 4 * gib + 7,
        end = 5 * gib - 3,
    ));
    m.unmount();

    // Another device reads only what it needs, at offsets past 4 GiB.
    let b = Device::new();
    b.login(&server, "lou", "pw", "desktop");
    let m2 = b.mount();
    assert_eq!(
        m2.sh("stat -c %s files/big.img").trim(),
        (5 * gib).to_string()
    );
    assert_eq!(m2.sh("tail -c 3 files/big.img"), "END");
    assert_eq!(
        m2.sh(&format!(
            "dd if=files/big.img bs=1 skip={} count=3 status=none",
            4 * gib + 7
        )),
        "MID"
    );
    // Truncate below 4 GiB and past it again: a new version each, the old one intact.
    m2.sh(&format!(
        "truncate -s {} files/big.img && sync files/big.img",
        4 * gib + 10
    ));
    assert_eq!(
        m2.sh("stat -c %s files/big.img").trim(),
        (4 * gib + 10).to_string()
    );
    assert_eq!(m2.sh("tail -c 3 files/big.img"), "MID");
    let ok = wait_until(std::time::Duration::from_secs(5), || {
        m2.sh("ls files/.versions") == "big.img.v01\nbig.img.v02\n"
    });
    assert!(ok, "two versions");
    assert_eq!(
        m2.sh("stat -c %s files/.versions/big.img.v01").trim(),
        (5 * gib).to_string()
    );
    assert_eq!(m2.sh("tail -c 3 files/.versions/big.img.v01"), "END");
    m2.unmount();
}

/// The kernel gives a FUSE mount a 128 KiB read-ahead window whatever the mount asks for;
/// a mount run by root widens it to 1 MiB, so a cold sequential read goes to the server
/// in 1 MiB requests, not 128 KiB ones.
#[test]
fn a_root_mount_reads_ahead_a_mebibyte() {
    let server = Server::start(&[("lou", "pw", "user")]);
    let a = Device::new();
    a.login(&server, "lou", "pw", "laptop");
    let m = a.mount();
    m.sh("head -c 20000000 /dev/urandom > files/film.bin && sync files/film.bin");
    let want = m.sh("sha256sum < files/film.bin");
    let b = Device::new();
    b.login(&server, "lou", "pw", "desktop");
    let m2 = b.mount();
    let device = m2.sh("mountpoint -d .");
    let window = std::fs::read_to_string(format!("/sys/class/bdi/{}/read_ahead_kb", device.trim()))
        .expect("the mount's read-ahead setting");
    assert_eq!(
        window.trim(),
        "1024",
        "read-ahead of the mount {}",
        device.trim()
    );
    assert_eq!(m2.sh("sha256sum < files/film.bin"), want);
    m2.unmount();
    m.unmount();
}

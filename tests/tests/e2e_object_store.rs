//! End-to-end: chunk bodies in a real S3 server — Garage, started by the test on loopback
//! ports — behind a real `shelf-server`, with real mounts on two devices.

use shelf_tests::garage::Garage;
use shelf_tests::*;
use std::time::Duration;

/// What `sha256sum` prints for the files under `dir` of a mount, sorted.
fn digests(m: &Mount, dir: &str) -> String {
    m.sh(&format!(
        "cd {dir} && find . -type f | sort | xargs sha256sum"
    ))
}

/// Files written on one device come back byte for byte on another after the server was
/// killed (SIGKILL) and started again; the bucket holds only sealed bytes, and nothing
/// goes to the server's local pack files.
#[test]
fn a_store_on_garage_keeps_every_byte_across_a_killed_server() {
    let garage = Garage::start();
    let env = garage.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = Server::start_with_env(&[("ann", "pw", "user")], &env);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "ann", "pw", "laptop");
    b.login(&server, "ann", "pw", "desktop");
    let ma = a.mount();
    ma.sh(
        "mkdir -p files/work/notes && head -c 25165824 /dev/urandom > files/work/big.bin \
         && for i in $(seq 1 200); do echo \"plaintext-marker-$i\" > files/work/notes/n$i.txt; done",
    );
    // fsync: committed on the server (and so in the bucket) before it answers.
    ma.sh(
        "python3 -c \"import os,sys\nfor p in sys.argv[1:]:\n fd = os.open(p, os.O_RDONLY); os.fsync(fd); os.close(fd)\" \
         files/work/big.bin files/work/notes/*",
    );
    let written = digests(&ma, "files/work");
    assert_eq!(written.lines().count(), 201);
    ma.unmount();

    assert!(
        garage.stored_bytes() >= 24 << 20,
        "the bodies are in the bucket: {} bytes",
        garage.stored_bytes()
    );
    let local: u64 = std::fs::read_dir(server.data.join("packs"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(local, 0, "no chunk in local pack files");
    let plain = std::process::Command::new("grep")
        .args(["-r", "-l", "plaintext-marker"])
        .arg(&garage.data_dir)
        .output()
        .expect("grep");
    assert!(
        plain.stdout.is_empty(),
        "plain text in the bucket: {}",
        String::from_utf8_lossy(&plain.stdout)
    );

    server.kill();
    server.start_again();
    let mb = b.mount();
    assert!(wait_until(Duration::from_secs(10), || mb
        .path
        .join("files/work/big.bin")
        .exists()));
    assert_eq!(digests(&mb, "files/work"), written, "every byte, read cold");
    mb.unmount();
}

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
    let env = env_refs(&env);
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

/// Three Garage nodes, each holding every object: one is killed (SIGKILL) while a 1 GiB
/// file is being written through a mount, the write still completes (`dd conv=fsync`),
/// and a second device reads every byte.
#[test]
fn a_garage_node_killed_during_a_large_upload_loses_nothing() {
    let mut garage = Garage::cluster(3);
    let env = garage.env();
    let env = env_refs(&env);
    let server = Server::start_with_env(&[("ann", "pw", "user")], &env);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "ann", "pw", "laptop");
    b.login(&server, "ann", "pw", "desktop");
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("big.bin");
    let sha = |path: &std::path::Path| {
        let out = std::process::Command::new("sha256sum")
            .arg(path)
            .output()
            .expect("sha256sum");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 1073741824 /dev/urandom > {}",
            src.display()
        ))
        .status()
        .expect("sh");
    assert!(made.success());
    let want = sha(&src);
    let ma = a.mount();
    let mut dd = std::process::Command::new("dd")
        .arg(format!("if={}", src.display()))
        .arg(format!(
            "of={}",
            ma.path.join("files/work/big.bin").display()
        ))
        .args(["bs=1M", "conv=fsync", "status=none"])
        .spawn()
        .expect("dd");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        dd.try_wait().expect("dd").is_none(),
        "the upload is still under way when the node dies"
    );
    garage.kill_node(2);
    assert!(dd.wait().expect("dd ends").success(), "the write completes");
    std::fs::remove_file(&src).expect("rm");
    ma.unmount();

    let mb = b.mount();
    let there = mb.path.join("files/work/big.bin");
    assert!(wait_until(Duration::from_secs(10), || std::fs::metadata(
        &there
    )
    .is_ok_and(|m| m.len() == 1 << 30)));
    assert_eq!(sha(&there), want, "every byte, from the two nodes left");
    mb.unmount();
}

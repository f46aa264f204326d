//! Faults on the wire: a proxy between client and server drops, stalls and slow-drips the
//! connection during a 1 GiB upload; the upload completes intact, as one version.

use shelf_tests::proxy::FaultProxy;
use shelf_tests::*;
use std::time::Duration;

#[test]
fn an_upload_survives_dropped_stalled_and_slow_connections() {
    let server = Server::start(&[("flo", "pw", "user")]);
    let proxy = FaultProxy::start(&server.addr);
    let laptop = Device::new();
    let out = laptop
        .shelf()
        .args(["login", &proxy.addr, "--user", "flo", "--device", "laptop"])
        .args(["--fingerprint", &server.fingerprint])
        .env("SHELF_PASSWORD", "pw")
        .output()
        .expect("login through the proxy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = laptop.mount();
    let src = tempfile::tempdir().expect("tempdir");
    let data = src.path().join("big");
    sh_in(src.path(), "head -c 1073741824 /dev/urandom > big");
    let want = sh_in(src.path(), "sha256sum < big");

    // Faults while dd writes and fsyncs 1 GiB through the proxy.
    let faults = std::thread::spawn({
        let proxy = std::sync::Arc::new(proxy);
        let p = proxy.clone();
        move || {
            std::thread::sleep(Duration::from_millis(700));
            p.drop_connections();
            std::thread::sleep(Duration::from_millis(500));
            p.stall();
            std::thread::sleep(Duration::from_secs(2));
            p.drip();
            std::thread::sleep(Duration::from_secs(2));
            p.pass();
            std::thread::sleep(Duration::from_millis(300));
            p.drop_connections();
            proxy
        }
    });
    m.sh(&format!(
        "dd if={} of=files/big bs=1M conv=fsync status=none",
        data.display()
    ));
    let proxy = faults.join().expect("fault thread");
    m.unmount();

    // Another device, straight to the server: the content is whole, and one version.
    let desktop = Device::new();
    desktop.login(&server, "flo", "pw", "desktop");
    let d = desktop.mount();
    assert_eq!(d.sh("sha256sum < files/big"), want);
    let versions = desktop.run(&["versions", "files/big"]);
    assert!(versions.contains("big: 1 version(s)"), "{versions}");
    d.unmount();
    drop(proxy);
}

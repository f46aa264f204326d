//! End-to-end: every `shelf-server` admin command works while `shelf-server run` serves
//! the data folder (over its owner-only control socket), with devices connected: a new
//! account can log in at once, a password reset signs the account's devices out, a quota
//! applies to the next upload; a user who does not own the data folder is refused with one
//! clear line.

use shelf_protocol::{ErrorCode, Request};
use shelf_tests::*;
use std::process::Command;

fn admin(server: &Server, args: &[&str], password: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(server_bin());
    cmd.args(args).arg("--data").arg(&server.data);
    if let Some(p) = password {
        cmd.env("SHELF_PASSWORD", p);
    }
    cmd.output().expect("shelf-server")
}

fn admin_ok(server: &Server, args: &[&str], password: Option<&str>) -> String {
    let out = admin(server, args, password);
    assert!(
        out.status.success(),
        "shelf-server {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn admin_commands_work_on_a_running_server_with_devices_connected() {
    let mut server = Server::start(&[("ivy", "pw", "user"), ("root", "pw", "admin")]);
    let laptop = Device::new();
    laptop.login(&server, "ivy", "pw", "laptop");
    let m = laptop.mount();
    m.sh("echo before > files/personal/a.txt && sync");
    // A live protocol connection of the account, as a mount holds one.
    let (remote, root) = server.connect("ivy", "pw", "phone");
    assert!(remote.call(Request::GetAttr { node: root.node }).is_ok());

    // Accounts.
    assert_eq!(
        admin_ok(&server, &["user", "add", "newbie"], Some("pw-new")),
        "added newbie (user)\n"
    );
    let fresh = Device::new();
    fresh.login(&server, "newbie", "pw-new", "pc");
    let listed = admin_ok(&server, &["user", "list"], None);
    assert!(listed.contains("newbie\tuser"), "{listed}");
    assert_eq!(
        admin_ok(&server, &["user", "role", "newbie", "viewer"], None),
        "newbie is now viewer\n"
    );
    // Refusals are one clear line.
    let out = admin(&server, &["user", "del", "nobody-here"], None);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "shelf-server: no user nobody-here"
    );
    assert_eq!(
        admin_ok(&server, &["user", "del", "newbie"], None),
        "deleted newbie and everything it stored\n"
    );

    // Policies and maintenance.
    assert!(admin_ok(&server, &["retention", "ivy", "--all-days", "5"], None).starts_with("ivy: "));
    assert_eq!(
        admin_ok(&server, &["conflicts", "ivy", "--last-writer-wins"], None),
        "ivy: conflicts: last writer wins (the other version stays in the history)\n"
    );
    assert!(admin_ok(&server, &["prune"], None).starts_with("removed "));
    assert!(admin_ok(&server, &["scrub"], None).contains(": 0 failed"));
    let audit = admin_ok(&server, &["audit", "--last", "20"], None);
    assert!(audit.contains("newbie"), "{audit}");
    assert_eq!(
        admin_ok(&server, &["fingerprint"], None).trim(),
        server.fingerprint
    );

    // A quota applies to the next upload: fsync reports it.
    assert_eq!(
        admin_ok(&server, &["user", "quota", "ivy", "--gib", "0.00001"], None),
        "ivy: quota 10737 bytes\n"
    );
    let err = sh_fails(
        &m.path,
        "head -c 200000 /dev/urandom > files/personal/big.bin && python3 -c \"import os; os.fsync(os.open('files/personal/big.bin', os.O_RDONLY))\"",
    );
    assert!(err.contains("Disk quota exceeded"), "{err}");
    // Not retried forever: over quota, the content is kept on this device, and said so.
    let kept = wait_until(std::time::Duration::from_secs(10), || {
        laptop
            .run(&["status"])
            .contains("kept:     1 file(s) the server refused")
    });
    assert!(kept, "{}", laptop.run(&["status"]));
    let events = laptop.run(&["events"]);
    assert!(
        events.contains("upload refused (over quota): kept on this device as "),
        "{events}"
    );
    let kept_dir = std::fs::read_dir(laptop.cache())
        .expect("cache")
        .flatten()
        .map(|e| e.path().join("kept"))
        .find(|p| p.is_dir())
        .expect("a kept folder");
    let copies: Vec<_> = std::fs::read_dir(&kept_dir)
        .expect("kept")
        .flatten()
        .collect();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].metadata().expect("stat").len(), 200_000);
    assert!(!laptop.run(&["status"]).contains("ALERT"));
    admin_ok(&server, &["user", "quota", "ivy", "--none"], None);

    // A password reset signs the account's devices out at once.
    assert!(
        admin_ok(&server, &["user", "passwd", "ivy"], Some("pw2")).contains("must log in again")
    );
    match remote.call(Request::GetAttr { node: root.node }) {
        Err(shelf::remote::RemoteError::Server(w)) => {
            assert_eq!(w.code, ErrorCode::SessionExpired, "{w:?}")
        }
        other => panic!("a session survived the password reset: {other:?}"),
    }
    let again = Device::new();
    again.login(&server, "ivy", "pw2", "tablet");

    // The master key rotates under a running server, which keeps serving; an account made
    // afterwards and the old data both open after a restart with the new key alone.
    let rotated = admin_ok(&server, &["rotate-master-key"], None);
    assert!(
        rotated.starts_with("re-wrapped ") && rotated.contains(" data key(s): master key "),
        "{rotated}"
    );
    admin_ok(&server, &["user", "add", "late"], Some("pw-late"));
    let (remote, root) = server.connect("late", "pw-late", "pc");
    assert!(remote.call(Request::GetAttr { node: root.node }).is_ok());
    drop(m);
    server.restart();
    let t = again.mount();
    assert_eq!(t.sh("cat files/personal/a.txt"), "before\n");
    t.unmount();
    Device::new().login(&server, "late", "pw-late", "pc2");

    // Only root and the data folder's owner reach the socket: the socket's mode keeps
    // others out, and were it opened up, the server checks who is calling.
    let home = tempfile::tempdir().expect("tempdir");
    let bin = home.path().join("shelf-server");
    std::fs::copy(server_bin(), &bin).expect("copy");
    let open_up = |p: &std::path::Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    open_up(home.path(), 0o755);
    open_up(server.data.parent().expect("server folder"), 0o755);
    open_up(&server.data, 0o755);
    let as_nobody = || {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(["user", "list", "--data"])
            .arg(&server.data)
            .output()
            .expect("setpriv");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    let err = as_nobody();
    assert!(err.contains("only root and the owner of"), "{err}");
    open_up(&server.data.join("control.sock"), 0o666);
    let err = as_nobody();
    assert!(
        err.contains("only the data folder's owner may administer this server"),
        "{err}"
    );
}

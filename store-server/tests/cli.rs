//! The `shelf-server` binary's command-line contract (also makes cargo build the binary for
//! the end-to-end tests in `tests/`).

use std::process::Command;

fn server() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shelf-server"))
}

#[test]
fn init_prints_fingerprint_and_refuses_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    let out = server()
        .args(["init", "--data"])
        .arg(&data)
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let fp = text
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .expect("fingerprint line");
    assert_eq!(fp.split(':').count(), 32, "SHA-256 is 32 bytes: {fp}");
    use std::os::unix::fs::PermissionsExt;
    for secret in ["tls/key.pem", "master.key"] {
        let mode = std::fs::metadata(data.join(secret))
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }
    let again = server()
        .args(["init", "--data"])
        .arg(&data)
        .output()
        .expect("run");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already initialised"));
}

#[test]
fn user_add_validates_names_and_roles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    assert!(server()
        .args(["init", "--data"])
        .arg(&data)
        .output()
        .expect("run")
        .status
        .success());
    let add = |name: &str, role: &str| {
        server()
            .args(["user", "add", name, "--role", role, "--data"])
            .arg(&data)
            .env("SHELF_PASSWORD", "pw")
            .output()
            .expect("run")
    };
    assert!(add("alice", "admin").status.success());
    assert!(!add("alice", "user").status.success(), "duplicate refused");
    assert!(!add("bad/name", "user").status.success());
    let bad_role = add("bob", "superuser");
    assert!(!bad_role.status.success());
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("admin, user or viewer"));
    let list = server()
        .args(["user", "list", "--data"])
        .arg(&data)
        .output()
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).trim(),
        "alice\tadmin\t0 bytes stored\tno quota"
    );
}

#[test]
fn run_on_uninitialised_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = server()
        .args(["run", "--data"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shelf-server init"));
}

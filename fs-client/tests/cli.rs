//! The `shelf` binary's command-line contract (also makes cargo build the binary for the
//! end-to-end tests in `tests/`).

use std::process::Command;

#[test]
fn help_explains_every_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_shelf"))
        .arg("--help")
        .output()
        .expect("run shelf");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for cmd in ["login", "mount", "umount", "status", "up", "down"] {
        assert!(text.contains(cmd), "--help lacks {cmd}: {text}");
    }
}

#[test]
fn status_without_login_says_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_shelf"))
        .arg("status")
        .env("SHELF_CONFIG_DIR", dir.path())
        .output()
        .expect("run shelf");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not logged in") && err.contains("shelf login"),
        "{err}"
    );
}

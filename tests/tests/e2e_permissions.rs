//! Permissions on a mount its owner alone uses (no `allow_other`): the kernel leaves the
//! checks to the mount there (no `default_permissions`), and an ordinary user who mounts
//! their store meets the rules of a local disk, through real shell tools.

use shelf_tests::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const NOBODY: u32 = 65534;

/// Lets `nobody` open /dev/fuse (group and mode) while it lives, as a distribution that
/// leaves /dev/fuse open to every user does; puts the device back as it was.
struct FuseOpenToNobody {
    mode: u32,
    gid: u32,
}

impl FuseOpenToNobody {
    fn new() -> FuseOpenToNobody {
        let meta = std::fs::metadata("/dev/fuse").expect("/dev/fuse");
        let guard = FuseOpenToNobody {
            mode: meta.mode() & 0o7777,
            gid: meta.gid(),
        };
        if guard.mode & 0o006 != 0o006 {
            std::os::unix::fs::chown("/dev/fuse", None, Some(NOBODY)).expect("chgrp /dev/fuse");
            std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o660))
                .expect("chmod /dev/fuse");
        }
        guard
    }
}

impl Drop for FuseOpenToNobody {
    fn drop(&mut self) {
        let _ = std::os::unix::fs::chown("/dev/fuse", None, Some(self.gid));
        let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(self.mode));
    }
}

/// A mount made by `nobody`, unmounted (by root) and its client waited for on drop.
struct NobodysMount {
    path: PathBuf,
    pid: Option<i32>,
}

impl Drop for NobodysMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        if let Some(pid) = self.pid {
            let gone = wait_until(Duration::from_secs(30), || {
                // SAFETY: signal 0 only asks whether the process this test started lives.
                unsafe { libc::kill(pid, 0) != 0 }
            });
            if !gone {
                // SAFETY: the client this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Runs `script` as nobody in `dir` (entered as nobody: root may not enter a mount that
/// is not open to other users).
fn as_nobody(dir: &Path, script: &str) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "bash",
            "-c",
            &format!("cd \"$DIR\" && {script}"),
        ])
        .current_dir("/")
        .env("DIR", dir)
        .env("HOME", "/")
        .output()
        .expect("setpriv")
}

/// Runs `script` as nobody in `dir`; panics unless it succeeds.
fn ok(dir: &Path, script: &str) -> String {
    let out = as_nobody(dir, script);
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `script` as nobody in `dir`; panics unless it fails with `error` on stderr.
fn refused(dir: &Path, script: &str, error: &str) {
    let out = as_nobody(dir, script);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(error),
        "{script}: wanted {error:?}, got {:?} {err}",
        out.status
    );
}

#[test]
fn an_ordinary_users_own_mount_keeps_the_rules_of_a_local_disk() {
    let server = Server::start(&[("ann", "pw", "user")]);
    let d = Device::new();
    let home = d.config.parent().expect("device folder").to_path_buf();
    let bin = home.join("shelf");
    std::fs::copy(shelf_bin(), &bin).expect("copy shelf");
    let mnt = home.join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    assert!(Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&home)
        .status()
        .expect("chown")
        .success());
    let shelf = |args: &str| {
        format!(
            "SHELF_CONFIG_DIR={} SHELF_PASSWORD=pw {} {args}",
            d.config.display(),
            bin.display()
        )
    };
    ok(
        &home,
        &shelf(&format!(
            "login {} --user ann --device pc --fingerprint {}",
            server.addr, server.fingerprint
        )),
    );
    let _fuse = FuseOpenToNobody::new();
    let out = ok(&home, &shelf(&format!("mount {}", mnt.display())));
    let mut mount = NobodysMount {
        path: mnt.clone(),
        pid: out
            .split("(pid ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok()),
    };
    assert!(is_mounted(&mnt), "{out}");
    let options = std::fs::read_to_string("/proc/mounts").expect("mounts");
    let line = options
        .lines()
        .find(|l| l.contains(&*mnt.to_string_lossy()))
        .expect("the mount is listed");
    assert!(
        !line.contains("default_permissions"),
        "the mount checks permissions itself: {line}"
    );
    let files = mnt.join("files");

    // A read-only file: readable, not writable, but its folder lets its owner remove it.
    ok(&files, "echo one > ro && chmod 444 ro && cat ro");
    refused(&files, "echo two > ro", "Permission denied");
    refused(&files, "echo two >> ro", "Permission denied");
    refused(&files, "truncate -s 0 ro", "Permission denied");
    ok(&files, "test -r ro && ! test -w ro && ! test -x ro");
    assert_eq!(ok(&files, "cat ro"), "one\n");
    ok(&files, "rm -f ro && ! test -e ro");

    // A folder without write permission takes no new names and loses none.
    ok(
        &files,
        "mkdir -p locked && touch locked/kept && chmod 555 locked",
    );
    refused(&files, "touch locked/new", "Permission denied");
    refused(&files, "mkdir locked/sub", "Permission denied");
    refused(&files, "rm locked/kept", "Permission denied");
    refused(&files, "mv locked/kept moved", "Permission denied");
    refused(&files, "ln -s x locked/link", "Permission denied");
    ok(&files, "ls locked | grep -qx kept");
    // Nor one without search permission lets anyone through it, nor one without read
    // permission list its names.
    ok(&files, "chmod 644 locked");
    refused(&files, "cat locked/kept", "Permission denied");
    refused(&files, "cd locked", "Permission denied");
    ok(&files, "chmod 311 locked");
    refused(&files, "ls locked", "Permission denied");
    ok(&files, "test -e locked/kept");
    ok(
        &files,
        "chmod 755 locked && touch locked/new && rm -r locked",
    );

    // Earlier versions stay readable by the file's owner, and read-only.
    ok(&files, "echo v1 > doc && sleep 0.1 && echo v2 > doc");
    assert!(
        wait_until(Duration::from_secs(10), || as_nobody(
            &files,
            "grep -qx v1 .versions/doc.v01"
        )
        .status
        .success()),
        "{}",
        ok(&files, "ls -la .versions")
    );
    refused(&files, "echo x > .versions/doc.v01", "");

    // Only root gives a file away; its owner sets its times and mode.
    ok(
        &files,
        "echo x > mine && touch -d 2001-02-03 mine && chmod 600 mine",
    );
    refused(&files, "chown 0 mine", "Operation not permitted");
    refused(&files, "chgrp 0 mine", "Operation not permitted");
    assert_eq!(
        ok(&files, "stat -c '%a %u %y' mine")[..14],
        *"600 65534 2001"
    );
    // A script runs once it may be executed.
    ok(&files, "printf '#!/bin/sh\\necho ran\\n' > s.sh");
    refused(&files, "./s.sh", "Permission denied");
    ok(&files, "chmod +x s.sh && ./s.sh | grep -qx ran");

    // Extended attributes follow the file's read and write permission; ACLs are not
    // supported here, and `ls -l` is not troubled by that.
    ok(&files, "setfattr -n user.note -v hi mine 2>/dev/null || python3 -c \"import os; os.setxattr('mine','user.note',b'hi')\"");
    ok(&files, "chmod 400 mine");
    refused(
        &files,
        "python3 -c \"import os; os.setxattr('mine','user.note',b'no')\"",
        "Permission denied",
    );
    ok(&files, "ls -l mine | grep -q '^-r-------- '");

    assert!(
        Command::new("umount")
            .arg(&mnt)
            .status()
            .expect("umount")
            .success(),
        "umount"
    );
    if let Some(pid) = mount.pid.take() {
        // SAFETY: signal 0 only asks whether the client this test started lives.
        let gone = wait_until(Duration::from_secs(30), || unsafe {
            libc::kill(pid, 0) != 0
        });
        assert!(gone, "the client exits once unmounted");
    }
    assert!(!is_mounted(&mnt));
}

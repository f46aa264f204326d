//! End-to-end: bad input gets a clear message or the right errno, never a panic or a hang.

use shelf_tests::*;
use std::time::Duration;

#[test]
fn wrong_password_and_unknown_user_are_refused_clearly() {
    let server = Server::start(&[("alice", "right", "user")]);
    let dev = Device::new();
    for (user, pw) in [("alice", "wrong"), ("mallory", "right")] {
        let out = dev.login_output(&server, user, pw, "laptop");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("wrong user name or password"), "{err}");
    }
    assert!(
        !dev.config.join("login").exists(),
        "nothing saved on failure"
    );
    // The login record holds a token, never the password, and is private.
    dev.login(&server, "alice", "right", "laptop");
    let record = std::fs::read_to_string(dev.config.join("login")).expect("login record");
    assert!(!record.contains("right"), "{record}");
    assert!(record.contains("token="));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dev.config.join("login"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_changed_certificate_is_refused() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dev = Device::new();
    let out = dev
        .shelf()
        .args(["login", &server.addr, "--user", "alice", "--device", "d"])
        .args(["--fingerprint", "00:11:22:33"])
        .env("SHELF_PASSWORD", "pw")
        .output()
        .expect("shelf login");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("certificate changed"));
    // Without a pin and without a terminal, login refuses to guess.
    let out = dev
        .shelf()
        .args(["login", &server.addr, "--user", "alice", "--device", "d"])
        .env("SHELF_PASSWORD", "pw")
        .output()
        .expect("shelf login");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--accept-fingerprint"));
}

#[test]
fn dead_server_at_mount_time_is_a_clear_error() {
    let mut server = Server::start(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    server.stop();
    let dir = tempfile::tempdir().expect("tempdir");
    let start = std::time::Instant::now();
    let out = dev
        .shelf()
        .arg("mount")
        .arg(dir.path())
        .output()
        .expect("shelf mount");
    assert!(start.elapsed() < Duration::from_secs(15), "no hang");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the server"), "{err}");
    assert!(!is_mounted(dir.path()));
}

#[test]
fn invalid_names_get_the_right_errno() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    m.sh(r#"python3 - <<'PY'
import errno, os
def fails(f, code):
    try:
        f()
    except OSError as e:
        assert e.errno == code, (e, code)
        return
    raise SystemExit(f'{f} did not fail')
long = 'x' * 256
fails(lambda: open('files/' + long, 'w'), errno.ENAMETOOLONG)
fails(lambda: os.mkdir('files/' + long), errno.ENAMETOOLONG)
open('files/' + 'y' * 255, 'w').write('ok')           # 255 bytes is fine
# .versions is every directory's (virtual, read-only) history folder.
fails(lambda: os.mkdir('files/.versions'), errno.EEXIST)
fails(lambda: os.rename('files/' + 'y' * 255, 'files/.versions'), errno.EISDIR)
fails(lambda: os.rmdir('files/.versions'), errno.EROFS)
fails(lambda: os.rename('files/.versions', 'files/hist'), errno.EROFS)
fails(lambda: os.rmdir('files'), errno.ENOTEMPTY)
fails(lambda: os.mkdir('files'), errno.EEXIST)
fails(lambda: os.unlink('files'), errno.EISDIR)
fails(lambda: os.rmdir('files/' + 'y' * 255), errno.ENOTDIR)
fails(lambda: os.rename('files', 'files/work/inside'), errno.EINVAL)
fails(lambda: open('files/missing'), errno.ENOENT)
fails(lambda: os.link('files', 'files/work/dirlink'), errno.EPERM)   # folders: no links
fails(lambda: os.link('files/' + 'y' * 255, 'files/' + 'z' * 256), errno.ENAMETOOLONG)
fails(lambda: os.link('files/' + 'y' * 255, 'files/.versions'), errno.EEXIST)
fails(lambda: os.link('files/missing', 'files/hard'), errno.ENOENT)
PY"#);
    m.unmount();
}

#[test]
fn full_cache_disk_is_enospc_and_loses_nothing_already_closed() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    // Put the device's cache on a 4 MiB tmpfs.
    let cache = dev.cache();
    std::fs::create_dir_all(&cache).expect("mkdir");
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "shelf-test-cache"])
        .arg(&cache)
        .status()
        .expect("mount tmpfs");
    assert!(ok.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(cache.clone());
    {
        let m = dev.mount();
        m.sh("printf 'small and safe\\n' > files/kept.txt");
        let err = sh_fails(&m.path, "head -c 8000000 /dev/zero > files/huge.bin");
        assert!(err.contains("No space left on device"), "{err}");
        // The mount still works and the earlier file is intact.
        m.sh("rm -f files/huge.bin; test \"$(cat files/kept.txt)\" = 'small and safe'");
        m.unmount();
    }
    let other = Device::new();
    other.login(&server, "alice", "pw", "desktop");
    let m = other.mount();
    assert_eq!(m.sh("cat files/kept.txt"), "small and safe\n");
    m.unmount();
}

/// An upload that keeps failing (here: the server went away after the file was opened) is
/// an alert in `shelf status`, not only a log line; it clears once the upload succeeds.
#[test]
fn uploads_that_keep_failing_raise_an_alert_in_status() {
    use std::io::{BufRead, Write};
    let mut server = Server::start(&[("al", "pw", "user")]);
    let d = Device::new();
    d.login(&server, "al", "pw", "laptop");
    let m = d.mount();
    m.sh("printf first > files/x.txt && sync files/x.txt");
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys\nf = open('files/x.txt', 'r+')\nprint('open', flush=True)\nsys.stdin.readline()\nf.write('second')\nf.close()\n",
        ])
        .current_dir(&m.path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("opened");
    server.stop();
    writeln!(child.stdin.take().expect("stdin"), "go").expect("go");
    assert!(
        child.wait().expect("python").success(),
        "close works offline"
    );
    let alerted = wait_until(std::time::Duration::from_secs(20), || {
        d.run(&["status"])
            .contains("ALERT:    1 file(s) keep failing to upload")
    });
    assert!(alerted, "status: {}", d.run(&["status"]));
    // `shelf events` has a line for it (the server's feed itself is unreachable: an error).
    let out = d
        .shelf()
        .args(["events", "--last", "20"])
        .output()
        .expect("events");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("failed      files/x.txt  (this device: upload: "),
        "{text}"
    );
    assert!(!out.status.success());
    server.start_again();
    let cleared = wait_until(std::time::Duration::from_secs(30), || {
        let s = d.run(&["status"]);
        !s.contains("ALERT") && s.contains("pending:  0 file(s)")
    });
    assert!(cleared, "status: {}", d.run(&["status"]));
    assert_eq!(m.sh("cat files/x.txt"), "second");
    m.unmount();
}

/// With the server gone, what the mount has seen stays readable: listings, attributes,
/// file contents it read or wrote. A file it never read is a clear EIO, not a hang.
#[test]
fn seen_files_stay_readable_while_the_server_is_away() {
    let mut server = Server::start(&[("ola", "pw", "user")]);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "ola", "pw", "laptop");
    b.login(&server, "ola", "pw", "phone");
    let ma = a.mount();
    ma.sh("mkdir files/trip && printf 'day one\\n' > files/trip/notes.txt && head -c 300000 /dev/urandom > files/trip/photo.jpg && printf 'never read\\n' > files/trip/unread.txt && sync files/trip/*");
    let want = ma.sh("sha256sum < files/trip/photo.jpg");
    ma.unmount();
    let mb = b.mount();
    // B reads two of the three files.
    assert_eq!(mb.sh("cat files/trip/notes.txt"), "day one\n");
    assert_eq!(mb.sh("sha256sum < files/trip/photo.jpg"), want);
    assert_eq!(mb.sh("ls files/trip"), "notes.txt\nphoto.jpg\nunread.txt\n");
    server.stop();
    std::thread::sleep(std::time::Duration::from_millis(1200)); // past the cache time
    assert_eq!(mb.sh("ls files/trip"), "notes.txt\nphoto.jpg\nunread.txt\n");
    assert_eq!(mb.sh("cat files/trip/notes.txt"), "day one\n");
    assert_eq!(mb.sh("sha256sum < files/trip/photo.jpg"), want);
    assert_eq!(mb.sh("stat -c %s files/trip/photo.jpg").trim(), "300000");
    let err = sh_fails(&mb.path, "cat files/trip/unread.txt");
    assert!(err.contains("Input/output error"), "{err}");
    assert!(b.run(&["status"]).contains("store:    offline"));
    server.start_again();
    assert_eq!(mb.sh("cat files/trip/unread.txt"), "never read\n");
    mb.unmount();
}

/// `shelf … | head` ends quietly when the reader goes away, as other command-line tools
/// do, instead of panicking about a broken pipe.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    // The reader is gone before the command starts (closing it after the spawn raced the
    // command's write into the pipe's buffer).
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let child = std::process::Command::new(shelf_bin())
        .arg("--help")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("shelf");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

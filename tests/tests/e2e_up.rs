//! End-to-end: the newcomer's command. `shelf up` in an empty home starts a local server,
//! creates the account, mounts ~/Shelf with the category folders; running it again is a
//! no-op; `shelf down` uploads, unmounts and stops the server; data is there after `up` again.

use shelf_tests::*;
use std::process::Command;

fn shelf(home: &std::path::Path) -> Command {
    let mut c = Command::new(shelf_bin());
    c.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("SHELF_CONFIG_DIR")
        .env_remove("SHELF_CACHE_DIR")
        .env_remove("SHELF_PASSWORD")
        .env("SHELF_LISTEN", "127.0.0.1:0")
        .stdin(std::process::Stdio::null());
    c
}

struct Down(std::path::PathBuf);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = shelf(&self.0).arg("down").output();
        let mnt = self.0.join("Shelf");
        if is_mounted(&mnt) {
            let _ = Command::new("fusermount3").arg("-uz").arg(&mnt).status();
        }
    }
}

#[test]
fn shelf_up_sets_everything_up_and_down_stops_it() {
    let home = tempfile::tempdir().expect("tempdir");
    let _down = Down(home.path().to_path_buf());
    let out = shelf(home.path()).arg("up").output().expect("shelf up");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Shelf is up") && text.contains("shelf down"),
        "{text}"
    );
    let mnt = home.path().join("Shelf");
    assert!(is_mounted(&mnt));
    for cat in ["photos/work", "files/personal", "videos/projects", "shared"] {
        assert!(mnt.join(cat).is_dir(), "{cat}");
    }
    sh_in(&mnt, "printf 'kept\\n' > files/personal/note.txt");
    // The local server serves the web app too, and `shelf up` says where.
    let url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("- in a browser: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no web address in {text}"));
    let page = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{url}login"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&page.stdout), "200", "{url}");

    let again = shelf(home.path()).arg("up").output().expect("shelf up");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already mounted"));

    let down = shelf(home.path()).arg("down").output().expect("shelf down");
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(!is_mounted(&mnt));

    let up = shelf(home.path()).arg("up").output().expect("shelf up");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert_eq!(sh_in(&mnt, "cat files/personal/note.txt"), "kept\n");
    let status = shelf(home.path()).arg("status").output().expect("status");
    let s = String::from_utf8_lossy(&status.stdout);
    assert!(s.contains("online") && s.contains("pending:  0"), "{s}");
}

/// `shelf up` never loses the password it generated: it is shown and saved (0600) before
/// anything can fail; after a failed mount, the next `shelf up` uses it and mounts.
#[test]
fn a_failed_first_up_keeps_the_generated_password() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().expect("tempdir");
    let _down = Down(home.path().to_path_buf());
    // The mount point is a file: the mount fails after the account was made.
    let blocker = home.path().join("not-a-folder");
    std::fs::write(&blocker, "x").expect("write");
    let out = shelf(home.path())
        .arg("up")
        .arg("--dir")
        .arg(&blocker)
        .output()
        .expect("shelf up");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let shown = err
        .split("has the password ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("the password was not shown: {err}"))
        .to_string();
    let file = home.path().join(".config/shelf/initial-password");
    let meta = std::fs::metadata(&file).expect("password file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let saved = std::fs::read_to_string(&file).expect("read");
    assert!(saved.contains(&format!("password={shown}\n")), "{saved}");

    // The next `shelf up` logs in with it and mounts.
    let again = shelf(home.path()).arg("up").output().expect("shelf up");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let told = String::from_utf8_lossy(&again.stdout);
    assert!(told.contains("the password made for"), "{told}");
    assert!(told.contains("initial-password"), "{told}");
    assert!(is_mounted(&home.path().join("Shelf")));
    // It is the account's password: another device logs in with it.
    let other = Device::new();
    let addr = std::fs::read_to_string(home.path().join(".local/share/shelf/server/server.addr"))
        .expect("server address");
    let out = other
        .shelf()
        .args(["login", addr.trim(), "--user"])
        .arg(whoami())
        .args(["--device", "other", "--accept-fingerprint"])
        .env("SHELF_PASSWORD", &shown)
        .output()
        .expect("login");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().expect("id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A mount that fails because FUSE is not usable says what to do.
#[test]
fn a_mount_without_access_to_dev_fuse_says_what_to_do() {
    let nobody_can_open = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "test",
            "-r",
            "/dev/fuse",
            "-a",
            "-w",
            "/dev/fuse",
        ])
        .status()
        .expect("setpriv")
        .success();
    if nobody_can_open {
        eprintln!("/dev/fuse is open to every user here: nothing to check");
        return;
    }
    let server = Server::start(&[("nat", "pw", "user")]);
    let d = Device::new();
    // The device's folders belong to the ordinary user who runs it.
    let chown = |p: &std::path::Path| {
        assert!(Command::new("chown")
            .arg("-R")
            .arg("65534:65534")
            .arg(p)
            .status()
            .expect("chown")
            .success());
    };
    // A copy of the client the ordinary user can run wherever the checkout lives.
    let bin = d.config.parent().expect("device folder").join("shelf");
    std::fs::copy(shelf_bin(), &bin).expect("copy shelf");
    chown(d.config.parent().expect("device folder"));
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(args)
            .env("SHELF_CONFIG_DIR", &d.config)
            .env("SHELF_PASSWORD", "pw")
            .env("HOME", d.config.parent().expect("home"));
        c.output().expect("shelf")
    };
    let login = as_nobody(&[
        "login",
        &server.addr,
        "--user",
        "nat",
        "--device",
        "pc",
        "--fingerprint",
        &server.fingerprint,
    ]);
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let mnt = d.config.parent().expect("home").join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    chown(&mnt);
    let out = as_nobody(&["mount", &mnt.display().to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/dev/fuse is not open to this user"), "{err}");
    assert!(!is_mounted(&mnt));
}

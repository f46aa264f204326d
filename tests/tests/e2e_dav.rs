//! End-to-end: WebDAV under `/dav/` of a real `shelf-server --web`, driven by real clients
//! (curl for each method, rclone's webdav backend for trees), signed in with app passwords.
//! Files go in and out through a real mount of the same account, so what a WebDAV client
//! does is what devices see.

use shelf_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A WebDAV client: curl with the account's user name and an app password.
struct Dav {
    base: String,
    auth: String,
}

impl Dav {
    fn new(server: &Server, user: &str, secret: &str) -> Dav {
        Dav {
            base: format!("{}dav", server.web.clone().expect("web")),
            auth: format!("{user}:{secret}"),
        }
    }

    /// `(status, body)` of one request.
    fn call(&self, method: &str, path: &str, extra: &[&str]) -> (u16, Vec<u8>) {
        let out = Command::new("curl")
            .args([
                "-sk",
                "-u",
                &self.auth,
                "-X",
                method,
                "-w",
                "\n%{http_code}",
            ])
            .args(extra)
            .arg(format!("{}{path}", self.base))
            .output()
            .expect("curl");
        let mut body = out.stdout;
        let at = body.iter().rposition(|b| *b == b'\n').unwrap_or(0);
        let status = String::from_utf8_lossy(&body[at + 1..])
            .parse()
            .unwrap_or(0);
        body.truncate(at);
        (status, body)
    }

    fn put(&self, path: &str, file: &Path) -> u16 {
        let data = format!("@{}", file.display());
        self.call("PUT", path, &["--data-binary", &data, "-H", "Expect:"])
            .0
    }
}

fn app_password(dev: &Device, name: &str) -> String {
    dev.run(&["app-password", "add", name]).trim().to_string()
}

#[test]
fn webdav_methods_reach_the_store_with_app_passwords_only() {
    let server = Server::start_web(&[("alice", "pw", "user"), ("vic", "pw", "viewer")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    let secret = app_password(&dev, "phone");
    let dav = Dav::new(&server, "alice", &secret);
    let tmp = tempfile::tempdir().expect("tmp");

    // Sign-in: the app password works; the account's own password and wrong ones do not.
    assert_eq!(dav.call("PROPFIND", "/", &["-H", "Depth: 0"]).0, 207);
    for auth in ["alice:pw", "alice:wrong", "nobody:x"] {
        let out = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-u", auth])
            .arg(format!("{}/", dav.base))
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "401", "{auth}");
    }

    // PROPFIND depth 1 lists the categories.
    let (status, body) = dav.call("PROPFIND", "/", &["-H", "Depth: 1"]);
    let listing = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 207);
    for name in ["photos/", "files/", "videos/"] {
        assert!(
            listing.contains(&format!("<D:href>/dav/{name}</D:href>")),
            "{listing}"
        );
    }

    // PUT of 30 MB, read back whole and by range; the mount sees it (the change feed).
    let data: Vec<u8> = (0..30_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let file = tmp.path().join("big.bin");
    std::fs::write(&file, &data).expect("write");
    assert_eq!(dav.put("/files/work/big.bin", &file), 201);
    let (status, got) = dav.call("GET", "/files/work/big.bin", &[]);
    assert_eq!(status, 200);
    assert!(got == data, "GET returned other bytes");
    let (status, part) = dav.call("GET", "/files/work/big.bin", &["-r", "1000-1999"]);
    assert_eq!((status, &part[..]), (206, &data[1000..2000]));
    let on_mount = m.path.join("files/work/big.bin");
    assert!(wait_until(Duration::from_secs(5), || std::fs::read(
        &on_mount
    )
    .is_ok_and(|d| d == data)));
    // The etag changes with the content; a second PUT is a new version in .versions/.
    let etag = |d: &Dav| {
        let (_, b) = d.call("PROPFIND", "/files/work/big.bin", &["-H", "Depth: 0"]);
        let t = String::from_utf8_lossy(&b).into_owned();
        t.split("<D:getetag>")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .map(str::to_string)
    };
    let before = etag(&dav).expect("an etag");
    let mut changed = data.clone();
    changed[12_345_678] ^= 0xff;
    std::fs::write(&file, &changed).expect("write");
    assert_eq!(dav.put("/files/work/big.bin", &file), 204);
    assert_ne!(etag(&dav).expect("an etag"), before);
    assert!(wait_until(Duration::from_secs(5), || m
        .sh("ls files/work/.versions 2>/dev/null")
        .contains("big.bin.v01")));

    // A file written in the mount shows over WebDAV.
    m.sh("echo from the laptop > files/work/note.txt");
    m.sh(
        "python3 -c \"import os; fd = os.open('files/work/note.txt', os.O_RDONLY); os.fsync(fd)\"",
    );
    assert_eq!(
        dav.call("GET", "/files/work/note.txt", &[]),
        (200, b"from the laptop\n".to_vec())
    );

    // MKCOL, COPY, MOVE, DELETE; what they leave is what the mount shows.
    assert_eq!(dav.call("MKCOL", "/files/work/Dir", &[]).0, 201);
    assert_eq!(dav.call("MKCOL", "/files/work/Dir", &[]).0, 405, "exists");
    let dest = |p: &str| format!("Destination: {}{p}", dav.base);
    assert_eq!(
        dav.call(
            "COPY",
            "/files/work/note.txt",
            &["-H", &dest("/files/work/Dir/copy.txt")]
        )
        .0,
        201
    );
    assert_eq!(
        dav.call(
            "MOVE",
            "/files/work/big.bin",
            &["-H", &dest("/files/work/Dir/big.bin")]
        )
        .0,
        201
    );
    assert!(wait_until(Duration::from_secs(5), || {
        m.sh("ls files/work/Dir 2>/dev/null") == "big.bin\ncopy.txt\n"
            && !m.path.join("files/work/big.bin").exists()
    }));
    assert_eq!(
        std::fs::read(m.path.join("files/work/Dir/big.bin")).expect("moved"),
        changed
    );
    assert_eq!(dav.call("DELETE", "/files/work/Dir", &[]).0, 204);
    assert!(wait_until(Duration::from_secs(5), || !m
        .path
        .join("files/work/Dir")
        .exists()));
    // Paths with . or .. (also percent-encoded) are refused before anything resolves them.
    for path in [
        "/files/../../etc/passwd",
        "/files/%2e%2e/%2E%2E/etc/passwd",
        "/files/./work/",
    ] {
        assert_eq!(dav.call("GET", path, &["--path-as-is"]).0, 400, "{path}");
    }

    // A viewer's app password reads but changes nothing.
    let viewer = Device::new();
    viewer.login(&server, "vic", "pw", "tablet");
    let vdav = Dav::new(&server, "vic", &app_password(&viewer, "dav"));
    assert_eq!(vdav.call("PROPFIND", "/files/", &["-H", "Depth: 1"]).0, 207);
    assert_eq!(vdav.put("/files/work/x.txt", &file), 403);
    assert_eq!(vdav.call("MKCOL", "/files/work/x", &[]).0, 403);

    // Revoked: refused from the next request.
    dev.run(&["app-password", "revoke", "phone"]);
    assert_eq!(dav.call("PROPFIND", "/", &["-H", "Depth: 0"]).0, 401);
    m.unmount();
}

#[test]
fn rclone_copies_a_tree_in_and_out_byte_for_byte() {
    let server = Server::start_web(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let secret = app_password(&dev, "rclone");
    let tmp = tempfile::tempdir().expect("tmp");
    let tree = tmp.path().join("tree");
    // 5,000 files in 50 folders, 0 to 10 KiB each.
    for d in 0..50 {
        std::fs::create_dir_all(tree.join(format!("d{d}"))).expect("mkdir");
        for f in 0..100u32 {
            let body: Vec<u8> = (0..(f * 97 + d * 13) as usize)
                .map(|i| (i * 31 + f as usize) as u8)
                .collect();
            std::fs::write(tree.join(format!("d{d}/f{f}.bin")), body).expect("write");
        }
    }
    let obscured = Command::new("rclone")
        .args(["obscure", &secret])
        .output()
        .expect("rclone obscure");
    let pass = String::from_utf8_lossy(&obscured.stdout).trim().to_string();
    let rclone = |args: &[&str]| {
        let out = Command::new("rclone")
            .args(args)
            .args(["--no-check-certificate", "--config", "/dev/null"])
            .env("RCLONE_CONFIG_SHELF_TYPE", "webdav")
            .env(
                "RCLONE_CONFIG_SHELF_URL",
                format!("{}dav/", server.web.clone().expect("web")),
            )
            .env("RCLONE_CONFIG_SHELF_VENDOR", "other")
            .env("RCLONE_CONFIG_SHELF_USER", "alice")
            .env("RCLONE_CONFIG_SHELF_PASS", &pass)
            .output()
            .expect("rclone");
        assert!(
            out.status.success(),
            "rclone {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    rclone(&["copy", &tree.display().to_string(), "shelf:files/work/tree"]);
    let back = tmp.path().join("back");
    rclone(&["copy", "shelf:files/work/tree", &back.display().to_string()]);
    let diff = Command::new("diff")
        .arg("-r")
        .arg(&tree)
        .arg(&back)
        .output()
        .expect("diff");
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    // And on a mount of the same account.
    let m = dev.mount();
    let diff = Command::new("diff")
        .arg("-r")
        .arg(&tree)
        .arg(m.path.join("files/work/tree"))
        .output()
        .expect("diff");
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    m.unmount();
}

/// The litmus WebDAV suite (Debian's `litmus`): basic, copymove, props, locks, http — every
/// test passes. Its warnings are listed in SEMANTICS.md.
#[test]
fn the_litmus_suite_passes() {
    let server = Server::start_web(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let secret = app_password(&dev, "litmus");
    let url = format!("{}dav/files/work/", server.web.clone().expect("web"));
    let out = Command::new("litmus")
        .args(["-k", &url, "alice", &secret])
        .env("TESTS", "basic copymove props locks http")
        .current_dir(tempfile::tempdir().expect("tmp").path())
        .output()
        .expect("litmus (apt install litmus; scripts/test-deps does)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let summaries: Vec<&str> = text.lines().filter(|l| l.contains("summary for")).collect();
    assert_eq!(summaries.len(), 5, "{text}");
    for s in &summaries {
        assert!(s.contains(" 0 failed"), "{s}\n{text}");
    }
    assert!(out.status.success(), "{text}");
}

/// A davfs2 mount (Debian's `davfs2`), unmounted on drop.
struct DavfsMount {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl DavfsMount {
    fn new(server: &Server, user: &str, secret: &str) -> DavfsMount {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("mountpoint");
        let web = server.web.clone().expect("web");
        // davfs2 checks the certificate's name: the server's is made for localhost.
        let url = web.replace("127.0.0.1", "localhost") + "dav/";
        let secrets = dir.path().join("secrets");
        std::fs::write(&secrets, format!("{url} {user} {secret}\n")).expect("secrets");
        std::fs::set_permissions(
            &secrets,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod");
        let conf = dir.path().join("davfs2.conf");
        std::fs::write(
            &conf,
            format!(
                "trust_server_cert {}\nsecrets {}\nuse_locks 1\ndelay_upload 0\n\
                 # Linux 6.16 and later need larger reads of directories (davfs2 issue 22).\n\
                 buf_size 64\n",
                server.data.join("tls/cert.pem").display(),
                secrets.display()
            ),
        )
        .expect("conf");
        let out = Command::new("mount")
            .args(["-t", "davfs", &url])
            .arg(&path)
            .arg("-o")
            .arg(format!("conf={}", conf.display()))
            .output()
            .expect("mount.davfs (apt install davfs2; scripts/test-deps does)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        DavfsMount { path, _dir: dir }
    }

    fn sh(&self, script: &str) -> String {
        let out = Command::new("sh")
            .args(["-c", script])
            .current_dir(&self.path)
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Unmounts (davfs2 uploads what it still holds first).
    fn unmount(&self) -> bool {
        Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for DavfsMount {
    fn drop(&mut self) {
        if std::fs::read_to_string("/proc/mounts")
            .is_ok_and(|m| m.contains(&self.path.display().to_string()))
        {
            let _ = self.unmount();
        }
    }
}

#[test]
fn davfs2_mounts_it_and_cp_mv_rm_work() {
    let server = Server::start_web(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let secret = app_password(&dev, "davfs2");
    let tmp = tempfile::tempdir().expect("tmp");
    let tree = tmp.path().join("tree");
    for d in 0..3 {
        std::fs::create_dir_all(tree.join(format!("d{d}/sub"))).expect("mkdir");
        for f in 0..10u32 {
            let body: Vec<u8> = (0..(f * 1000 + d * 7) as usize)
                .map(|i| (i * 13 + f as usize) as u8)
                .collect();
            std::fs::write(tree.join(format!("d{d}/f{f}.bin")), &body).expect("write");
            std::fs::write(
                tree.join(format!("d{d}/sub/g{f}.txt")),
                format!("{d} {f}\n"),
            )
            .expect("write");
        }
    }
    let dav = DavfsMount::new(&server, "alice", &secret);
    assert!(dav.sh("ls").contains("files"));
    dav.sh(&format!("cp -r {} files/work/tree", tree.display()));
    dav.sh("mv files/work/tree/d0 files/work/tree/moved");
    dav.sh("rm -r files/work/tree/d1");
    assert!(dav.unmount(), "umount.davfs");
    // What davfs2 did is what a mount of the same account shows.
    let m = dev.mount();
    let work = m.path.join("files/work/tree");
    assert_eq!(m.sh("ls files/work/tree"), "d2\nmoved\n");
    for (ours, theirs) in [("d0", "moved"), ("d2", "d2")] {
        let diff = Command::new("diff")
            .arg("-r")
            .arg(tree.join(ours))
            .arg(work.join(theirs))
            .output()
            .expect("diff");
        assert!(
            diff.status.success(),
            "{}",
            String::from_utf8_lossy(&diff.stdout)
        );
    }
    m.unmount();
}

/// Each account's paths are its own, locks included: alice's lock on her
/// `/files/work/a.txt` does not lock bob's; her own second client is refused.
#[test]
fn locks_are_per_account_and_exclusive_within_one() {
    let server = Server::start_web(&[("alice", "pw", "user"), ("bob", "pw", "user")]);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "alice", "pw", "laptop");
    b.login(&server, "bob", "pw", "laptop");
    let alice = Dav::new(&server, "alice", &app_password(&a, "one"));
    let alice2 = Dav::new(&server, "alice", &app_password(&a, "two"));
    let bob = Dav::new(&server, "bob", &app_password(&b, "one"));
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("a.txt");
    std::fs::write(&file, b"text\n").expect("write");
    for d in [&alice, &bob] {
        assert_eq!(d.put("/files/work/a.txt", &file), 201);
    }
    let lock = r#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>test</D:owner></D:lockinfo>"#;
    let take = |d: &Dav| {
        d.call(
            "LOCK",
            "/files/work/a.txt",
            &[
                "-H",
                "Content-Type: application/xml",
                "-H",
                "Timeout: Second-60",
                "--data",
                lock,
            ],
        )
        .0
    };
    assert_eq!(take(&alice), 200);
    assert_eq!(take(&bob), 200, "bob's file is another file");
    assert_eq!(take(&alice2), 423, "alice's own file is locked");
    // Without the lock token, a PUT to the locked file is refused.
    assert_eq!(alice2.put("/files/work/a.txt", &file), 423);
}

const EXCLUSIVE: &str = r#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>test</D:owner></D:lockinfo>"#;

/// `(status, lock token)` of an exclusive `LOCK` of `path`.
fn lock(dav: &Dav, path: &str) -> (u16, String) {
    let (status, body) = dav.call(
        "LOCK",
        path,
        &[
            "-H",
            "Content-Type: application/xml",
            "-H",
            "Timeout: Second-120",
            "--data",
            EXCLUSIVE,
        ],
    );
    let text = String::from_utf8_lossy(&body);
    let token = text
        .split("<D:locktoken><D:href>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or_default()
        .to_string();
    (status, token)
}

/// Whether `flock -n` on the mount gets `path` at once.
fn flock_free(m: &Mount, path: &str) -> bool {
    Command::new("flock")
        .arg("-n")
        .arg(m.path.join(path))
        .arg("true")
        .status()
        .is_ok_and(|s| s.success())
}

/// A WebDAV lock is a lease in the store, the one a mount's flock takes: while a WebDAV
/// client holds a file locked a mounted device cannot lock it, and a file a device holds
/// locked answers WebDAV's `LOCK` with 423.
#[test]
fn webdav_locks_and_mount_locks_exclude_each_other() {
    let server = Server::start_web(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let dav = Dav::new(&server, "alice", &app_password(&dev, "dav"));
    let m = dev.mount();
    m.sh("printf x > files/work/a.txt && sync files/work/a.txt");

    let (status, token) = lock(&dav, "/files/work/a.txt");
    assert_eq!(status, 200);
    assert!(token.starts_with("urn:uuid:"), "{token}");
    assert!(!flock_free(&m, "files/work/a.txt"), "WebDAV holds it");
    let unlock = dav.call(
        "UNLOCK",
        "/files/work/a.txt",
        &["-H", &format!("Lock-Token: <{token}>")],
    );
    assert_eq!(unlock.0, 204);
    assert!(flock_free(&m, "files/work/a.txt"), "unlocked");

    // A LOCK of an unmapped URL makes an empty file, locked for the mount too.
    let (status, token) = lock(&dav, "/files/work/new.txt");
    assert_eq!(status, 201);
    assert!(wait_until(Duration::from_secs(5), || m
        .path
        .join("files/work/new.txt")
        .exists()));
    assert_eq!(m.sh("stat -c %s files/work/new.txt").trim(), "0");
    assert!(
        !flock_free(&m, "files/work/new.txt"),
        "WebDAV holds the new file"
    );
    // Its holder writes with the token; deleting it with the token lets the lease go.
    let tmp = tempfile::tempdir().expect("tmp");
    let body = tmp.path().join("body");
    std::fs::write(&body, b"locked write\n").expect("write");
    let if_header = format!("If: (<{token}>)");
    let put = dav.call(
        "PUT",
        "/files/work/new.txt",
        &[
            "--data-binary",
            &format!("@{}", body.display()),
            "-H",
            "Expect:",
            "-H",
            &if_header,
        ],
    );
    assert_eq!(put.0, 204);
    assert!(wait_until(Duration::from_secs(5), || std::fs::read(
        m.path.join("files/work/new.txt")
    )
    .is_ok_and(|d| d == b"locked write\n")));

    // A device holding the file locked: WebDAV's LOCK is refused until it lets go.
    let mut holder = Command::new("flock")
        .arg(m.path.join("files/work/a.txt"))
        .args(["-c", "echo held; sleep 3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flock on the mount");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("holder output");
    assert_eq!(line.trim(), "held");
    assert_eq!(
        lock(&dav, "/files/work/a.txt").0,
        423,
        "the device holds it"
    );
    assert!(holder.wait().expect("flock ends").success());
    assert!(wait_until(Duration::from_secs(5), || lock(
        &dav,
        "/files/work/a.txt"
    )
    .0 == 200));
    m.unmount();
}

/// `DIR/.versions/` over WebDAV is the mount's: `NAME.vNN` of each changed file, readable
/// (ranges too) and copied out to restore, never changed; not listed in DIR.
#[test]
fn versions_are_reachable_read_only() {
    let server = Server::start_web(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let dav = Dav::new(&server, "alice", &app_password(&dev, "dav"));
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("doc.txt");
    for text in ["first\n", "second\n", "third\n"] {
        std::fs::write(&file, text).expect("write");
        assert!(matches!(dav.put("/files/work/doc.txt", &file), 201 | 204));
    }
    let m = dev.mount();
    let on_mount = m.sh("ls files/work/.versions");
    let (status, listing) = dav.call("PROPFIND", "/files/work/.versions/", &["-H", "Depth: 1"]);
    assert_eq!(status, 207);
    let listing = String::from_utf8_lossy(&listing).into_owned();
    for name in on_mount.lines() {
        assert!(
            listing.contains(&format!("/.versions/{name}<")),
            "{name}: {listing}"
        );
    }
    assert!(on_mount.contains("doc.txt.v01"), "{on_mount}");
    let (_, dir) = dav.call("PROPFIND", "/files/work/", &["-H", "Depth: 1"]);
    assert!(
        !String::from_utf8_lossy(&dir).contains(".versions"),
        "not listed"
    );

    // Read, as in the mount.
    let v1 = m.sh("cat files/work/.versions/doc.txt.v01");
    assert_eq!(
        dav.call("GET", "/files/work/.versions/doc.txt.v01", &[]),
        (200, v1.clone().into_bytes())
    );
    assert_eq!(
        dav.call("GET", "/files/work/.versions/doc.txt.v01", &["-r", "1-3"]),
        (206, v1.as_bytes()[1..4].to_vec())
    );
    assert_eq!(
        dav.call("GET", "/files/work/.versions/doc.txt.v99", &[]).0,
        404
    );
    // Never changed: PUT, DELETE, MKCOL, MOVE out, PROPPATCH are refused.
    assert_eq!(dav.put("/files/work/.versions/doc.txt.v01", &file), 403);
    assert_eq!(dav.put("/files/work/.versions/new.txt", &file), 403);
    assert_eq!(
        dav.call("DELETE", "/files/work/.versions/doc.txt.v01", &[])
            .0,
        403
    );
    assert_eq!(dav.call("MKCOL", "/files/work/.versions/x", &[]).0, 403);
    let dest = |p: &str| format!("Destination: {}{p}", dav.base);
    assert_eq!(
        dav.call(
            "MOVE",
            "/files/work/.versions/doc.txt.v01",
            &["-H", &dest("/files/work/moved.txt")]
        )
        .0,
        403
    );
    assert_eq!(
        m.sh("ls files/work/.versions"),
        on_mount,
        "nothing in history changed"
    );
    // Copied out: a restore, as `cp` from the mount's .versions/ is.
    assert_eq!(
        dav.call(
            "COPY",
            "/files/work/.versions/doc.txt.v01",
            &["-H", &dest("/files/work/restored.txt")]
        )
        .0,
        201
    );
    assert_eq!(
        dav.call("GET", "/files/work/restored.txt", &[]),
        (200, v1.into_bytes())
    );
    m.unmount();
}

/// A `PUT` whose body is cut off part way (the client died) commits nothing: the file it
/// named keeps its last whole version.
#[test]
fn a_put_cut_off_commits_nothing() {
    let server = Server::start_web(&[("alice", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let secret = app_password(&dev, "dav");
    let dav = Dav::new(&server, "alice", &secret);
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("a.txt");
    std::fs::write(&file, b"whole\n").expect("write");
    assert_eq!(dav.put("/files/work/a.txt", &file), 201);
    // 8 MiB of a promised 32 MiB, then the connection closes.
    let web = server.web.clone().expect("web");
    let hostport = web
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let script = format!(
        r#"
import base64, socket, ssl
host, port = "{hostport}".rsplit(":", 1)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
auth = base64.b64encode(b"alice:{secret}").decode()
for path in ["/dav/files/work/a.txt", "/dav/files/work/new.bin"]:
    s = ctx.wrap_socket(socket.create_connection((host, int(port))))
    s.sendall(f"PUT {{path}} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {{auth}}\r\nContent-Length: {{32 << 20}}\r\n\r\n".encode())
    for _ in range(8):
        s.sendall(bytes(1 << 20))
    s.close()
"#
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    let (status, body) = dav.call("GET", "/files/work/a.txt", &[]);
    assert!(
        status == 200 && body == b"whole\n",
        "a.txt: {status}, {} bytes",
        body.len()
    );
    assert_eq!(dav.call("GET", "/files/work/new.bin", &[]).0, 404);
    let m = dev.mount();
    assert_eq!(m.sh("cat files/work/a.txt"), "whole\n");
    assert!(!m.path.join("files/work/new.bin").exists());
    m.unmount();
}

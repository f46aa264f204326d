//! End-to-end: file history through the mount. Every committed change is a version in the
//! directory's virtual `.versions/` folder, which tools that walk trees never see, which is
//! read-only, and from which `cp` and `shelf restore` bring old content back.

use shelf_tests::*;
use std::time::Duration;

/// Waits until `ls DIR/.versions` (run in the mount) prints exactly `want`: the listing is
/// cached for the 1 s attribute TTL.
fn wait_listing(m: &Mount, dir: &str, want: &str) {
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(5), || {
        last = m.sh(&format!("ls {dir}/.versions"));
        last == want
    });
    assert!(ok, "ls {dir}/.versions: got\n{last}want\n{want}");
}

#[test]
fn edits_make_versions_that_cp_and_shelf_restore_bring_back() {
    let server = Server::start(&[("vic", "pw", "user")]);
    let laptop = Device::new();
    laptop.login(&server, "vic", "pw", "laptop");
    let m = laptop.mount();

    // Three committed edits (sync = fsync: each is committed before the next).
    m.sh("cd files/work && printf 'draft\\n' > report.txt && sync report.txt");
    m.sh("cd files/work && printf 'second draft\\n' > report.txt && sync report.txt");
    m.sh("cd files/work && printf 'final\\n' >> report.txt && sync report.txt");
    wait_listing(
        &m,
        "files/work",
        "report.txt.v01\nreport.txt.v02\nreport.txt.v03\n",
    );
    assert_eq!(m.sh("cat files/work/.versions/report.txt.v01"), "draft\n");
    assert_eq!(
        m.sh("cat files/work/.versions/report.txt.v03"),
        "second draft\nfinal\n"
    );
    assert_eq!(
        m.sh("stat -c '%s %A' files/work/.versions/report.txt.v02"),
        "13 -r--r--r--\n"
    );

    // Reachable by name, hidden from listings and tree walkers.
    assert_eq!(m.sh("cd files/work/.versions && ls | wc -l").trim(), "3");
    assert!(!m.sh("ls -a files/work").contains(".versions"));
    assert!(!m.sh("find files").contains(".versions"));
    let copy = tempfile::tempdir().expect("tempdir");
    m.sh(&format!(
        "rsync -a files/ {0}/rs/ && cp -r files {0}/cp",
        copy.path().display()
    ));
    assert!(!sh_in(copy.path(), "find . -name '*.v0*' -o -name .versions").contains('.'));

    // Read-only: every kind of change is EROFS.
    for change in [
        "touch files/work/.versions/new",
        "printf x > files/work/.versions/report.txt.v01",
        "rm files/work/.versions/report.txt.v01",
        "mkdir files/work/.versions/d",
        "mv files/work/report.txt files/work/.versions/",
        "chmod 600 files/work/.versions/report.txt.v01",
        "truncate -s 0 files/work/.versions/report.txt.v01",
    ] {
        let err = sh_fails(&m.path, change);
        assert!(err.contains("Read-only file system"), "{change}: {err}");
    }

    // Restore by copying: a new version with the old content.
    m.sh("cd files/work && cp .versions/report.txt.v01 report.txt && sync report.txt");
    assert_eq!(m.sh("cat files/work/report.txt"), "draft\n");
    wait_listing(
        &m,
        "files/work",
        "report.txt.v01\nreport.txt.v02\nreport.txt.v03\nreport.txt.v04\n",
    );

    // Restore with the CLI, by a path inside the mount.
    let out = laptop.run(&[
        "restore",
        m.path
            .join("files/work/report.txt")
            .to_str()
            .expect("utf-8"),
        "--version",
        "2",
    ]);
    assert!(
        out.contains("v02 restored as the newest version v05"),
        "{out}"
    );
    let ok = wait_until(Duration::from_secs(5), || {
        m.sh("cat files/work/report.txt") == "second draft\n"
    });
    assert!(ok, "the mount shows the restored content");
    let listed = laptop.run(&["versions", "files/work/report.txt"]);
    assert!(listed.contains("5 version(s)"), "{listed}");
    assert!(listed.contains("laptop"), "{listed}");

    // Unknown versions are a clear error.
    let out = laptop
        .shelf()
        .args(["restore", "files/work/report.txt", "--version", "9"])
        .output()
        .expect("shelf");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no version 9"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.unmount();
}

#[test]
fn deleted_files_and_editor_saves_keep_their_history() {
    let server = Server::start(&[("wes", "pw", "user")]);
    let laptop = Device::new();
    laptop.login(&server, "wes", "pw", "laptop");
    let m = laptop.mount();

    // An editor's save: write a temporary file, rename it over the original.
    m.sh("cd files && printf 'v1\\n' > notes.md && sync notes.md");
    m.sh("cd files && printf 'v2\\n' > .notes.md.tmp && sync .notes.md.tmp && mv .notes.md.tmp notes.md");
    wait_listing(&m, "files", "notes.md.v01\nnotes.md.v02\n");

    // Deleted: the versions stay, and the file comes back with shelf restore.
    m.sh("rm files/notes.md");
    wait_listing(&m, "files", "notes.md.v01\nnotes.md.v02\n");
    assert_eq!(m.sh("cat files/.versions/notes.md.v02"), "v2\n");
    let listed = laptop.run(&["versions", "files/notes.md"]);
    assert!(listed.contains("deleted"), "{listed}");
    laptop.run(&["restore", "files/notes.md", "--version", "1"]);
    let ok = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(m.path.join("files/notes.md")).is_ok_and(|t| t == "v1\n")
    });
    assert!(ok, "the deleted file is back");
    wait_listing(&m, "files", "notes.md.v01\nnotes.md.v02\nnotes.md.v03\n");
    m.unmount();

    // Another device sees the same history.
    let phone = Device::new();
    phone.login(&server, "wes", "pw", "phone");
    let m2 = phone.mount();
    wait_listing(&m2, "files", "notes.md.v01\nnotes.md.v02\nnotes.md.v03\n");
    assert_eq!(m2.sh("cat files/.versions/notes.md.v02"), "v2\n");
    m2.unmount();
}

#[test]
fn retention_prunes_old_versions_and_frees_their_space() {
    let mut server = Server::start(&[("yan", "pw", "user")]);
    let laptop = Device::new();
    laptop.login(&server, "yan", "pw", "laptop");
    let m = laptop.mount();
    // Five versions of 1 MiB of distinct random data each, all committed today.
    for _ in 0..5 {
        m.sh("head -c 1048576 /dev/urandom > files/photo.raw && sync files/photo.raw");
    }
    m.sh("printf 'gone\\n' > files/old.txt && sync files/old.txt && rm files/old.txt");
    wait_listing(
        &m,
        "files",
        "old.txt.v01\nphoto.raw.v01\nphoto.raw.v02\nphoto.raw.v03\nphoto.raw.v04\nphoto.raw.v05\n",
    );
    let status = laptop.run(&["status"]);
    assert!(status.contains("held only by 5 old version(s)"), "{status}");
    m.unmount();

    // Pruning now keeps everything (all younger than 30 days).
    server.stop();
    let prune = |now: Option<i64>| {
        let mut cmd = std::process::Command::new(server_bin());
        cmd.arg("prune").arg("--data").arg(&server.data);
        if let Some(n) = now {
            cmd.arg("--now").arg(n.to_string());
        }
        let out = cmd.output().expect("shelf-server prune");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = prune(None);
    assert!(
        out.starts_with("removed 0 old version(s) and 0 expired"),
        "{out}"
    );
    // 40 days on: the five versions share a day and a week; only the newest stays, and the
    // deleted file (over 30 days) goes with its history.
    let in_40_days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
        + 40 * 86_400;
    let out = prune(Some(in_40_days));
    // Four old 1 MiB versions of photo.raw and the 5 bytes of old.txt, and the pack space.
    assert!(
        out.starts_with("removed 5 old version(s) and 1 expired deleted file(s)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("{} bytes (", 4 * 1_048_576 + 5)),
        "{out}"
    );
    let disk: u64 = out
        .rsplit("bytes (")
        .next()
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("disk figure");
    assert!(disk >= 4 * 1_048_576, "{out}");
    server.start_again();

    let m = laptop.mount();
    wait_listing(&m, "files", "photo.raw.v05\n");
    let status = laptop.run(&["status"]);
    assert!(status.contains("held only by 0 old version(s)"), "{status}");
    assert_eq!(m.sh("stat -c %s files/photo.raw").trim(), "1048576");
    assert_eq!(
        m.sh("cmp files/photo.raw files/.versions/photo.raw.v05 && echo same"),
        "same\n"
    );
    m.unmount();
}

/// Bytes the mount has (sent, received) so far, from `shelf status` (updated twice a
/// second, so it waits a little first).
fn traffic(d: &Device) -> (u64, u64) {
    std::thread::sleep(Duration::from_millis(1200));
    let status = d.run(&["status"]);
    let line = status
        .lines()
        .find(|l| l.starts_with("traffic:"))
        .unwrap_or_else(|| panic!("no traffic line in {status}"));
    let figures = line
        .rsplit('(')
        .next()
        .and_then(|s| s.strip_suffix(" bytes)"))
        .unwrap_or_else(|| panic!("cannot read {line}"));
    let (sent, received) = figures.split_once(" / ").expect("sent / received");
    (
        sent.parse().expect("sent"),
        received.parse().expect("received"),
    )
}

fn sent(d: &Device) -> u64 {
    traffic(d).0
}

#[test]
fn only_changed_chunks_cross_the_network() {
    let server = Server::start(&[("zoe", "pw", "user")]);
    let d = Device::new();
    d.login(&server, "zoe", "pw", "laptop");
    let m = d.mount();
    m.sh("head -c 20971520 /dev/urandom > files/data.bin && sync files/data.bin");
    let s0 = sent(&d);
    // A 4 KiB edit in the middle of 20 MiB: about one chunk (≤ 256 KiB) and the manifest.
    m.sh("head -c 4096 /dev/urandom | dd of=files/data.bin bs=4096 seek=2560 conv=notrunc,fsync status=none");
    let s1 = sent(&d);
    assert!(s1 - s0 < 512 << 10, "a 4 KiB edit sent {} bytes", s1 - s0);
    // A copy costs no chunk bodies: the server has them all.
    m.sh("cp files/data.bin files/copy.bin && sync files/copy.bin");
    let s2 = sent(&d);
    assert!(s2 - s1 < 256 << 10, "a copy sent {} bytes", s2 - s1);
    assert_eq!(
        m.sh("cmp files/data.bin files/copy.bin && echo same"),
        "same\n"
    );
    // Stored space: 20 MiB plus about one chunk for the edit, nothing for the copy.
    let status = d.run(&["status"]);
    let stored: f64 = status
        .split(" stored after dedup")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|s| s.strip_suffix(" MiB"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stored figure in {status}"));
    assert!((20.0..20.5).contains(&stored), "{status}");
    m.unmount();
}

/// Bytes in the chunk caches under a device's cache folder.
fn chunk_cache_bytes(d: &Device) -> u64 {
    let out = sh_in(
        &d.cache(),
        "find . -path '*/chunks/*' -type f -printf '%s\\n' | awk '{s+=$1} END {print s+0}'",
    );
    out.trim().parse().expect("a number")
}

fn received(d: &Device) -> u64 {
    traffic(d).1
}

#[test]
fn pinned_files_stay_cached_beyond_the_cache_budget() {
    let server = Server::start(&[("pam", "pw", "user")]);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "pam", "pw", "laptop");
    b.login(&server, "pam", "pw", "phone");
    let ma = a.mount();
    ma.sh("head -c 3145728 /dev/urandom > files/keep.bin && head -c 3145728 /dev/urandom > files/other.bin \
           && mkdir files/album && printf 1 > files/album/1.jpg && printf 2 > files/album/2.jpg && sync");
    let want = ma.sh("sha256sum < files/keep.bin");
    ma.unmount();

    // B has a 1 MiB cache budget: pinning keeps all 3 MiB of keep.bin anyway.
    let mb = b.mount_full(&["--cache-size-mib", "1"], &[]);
    let out = b.run(&[
        "pin",
        mb.path.join("files/keep.bin").to_str().expect("utf-8"),
    ]);
    assert!(out.contains("pinned"), "{out}");
    assert!(
        chunk_cache_bytes(&b) >= 3 << 20,
        "pinned chunks are on disk"
    );
    // Other reads cycle through the budget without evicting them.
    mb.sh("cat files/other.bin > /dev/null");
    let r0 = received(&b);
    assert_eq!(mb.sh("sha256sum < files/keep.bin"), want);
    let r1 = received(&b);
    assert!(
        r1 - r0 < 64 << 10,
        "reading the pinned file received {} bytes",
        r1 - r0
    );
    assert!(b
        .run(&["status"])
        .contains("pinned:   1 file(s), 0 folder(s)"));

    // A folder pins what is in it.
    b.run(&["pin", mb.path.join("files/album").to_str().expect("utf-8")]);
    assert!(b
        .run(&["status"])
        .contains("pinned:   3 file(s), 1 folder(s)"));
    // Each download is a line in `shelf events`.
    let events = b.run(&["events", "--last", "100"]);
    for (file, bytes) in [
        ("keep.bin", 3145728),
        ("album/1.jpg", 1),
        ("album/2.jpg", 1),
    ] {
        let want =
            format!("downloaded  files/{file}  (this device: pinned, {bytes} bytes fetched)");
        assert!(events.contains(&want), "{want} in:\n{events}");
    }
    // The pin shows as an attribute of the file, and is never listed or stored.
    mb.sh(r#"python3 -c "
import os, errno
assert os.getxattr('files/keep.bin', 'user.shelf.pin') == b'1'
try:
    os.getxattr('files/other.bin', 'user.shelf.pin'); raise SystemExit('other is not pinned')
except OSError as e:
    assert e.errno == errno.ENODATA, e
assert 'user.shelf.pin' not in os.listxattr('files/keep.bin')
""#);

    // Unpinned, the chunks are ordinary cache entries again and the budget applies.
    b.run(&[
        "unpin",
        mb.path.join("files/keep.bin").to_str().expect("utf-8"),
    ]);
    mb.sh("cat files/other.bin > /dev/null");
    assert!(chunk_cache_bytes(&b) < 2 << 20, "the budget applies again");
    mb.unmount();
}

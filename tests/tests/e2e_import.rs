//! Import, categories and backup against a real server and a real mount: files land in the
//! right category byte for byte with their mtimes and modes, names are never overwritten,
//! a second run sends no chunk, an interrupted import resumes, and backup runs send exactly
//! the new and changed files.

use shelf_tests::{sh_in, wait_until, Device, Server};
use std::path::Path;
use std::time::Duration;

const JPEG: &[u8] = b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02";
const MP4: &[u8] = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41\x00\x00\x00\x08free";
const MKV: &[u8] = b"\x1A\x45\xDF\xA3\x9F\x42\x86\x81\x01\x42\x82\x88matroska";

/// Writes `header` followed by `len` pseudo-random bytes.
fn write(dir: &Path, rel: &str, header: &[u8], len: usize, seed: u64) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("test step")).expect("test step");
    let mut data = header.to_vec();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.push(x as u8);
    }
    std::fs::write(path, data).expect("test step");
}

/// The generated tree: (source path, where it must land under `--into work`).
fn make_tree(src: &Path) -> Vec<(&'static str, &'static str)> {
    write(src, "WebProject/a.jpg", JPEG, 40_000, 1);
    write(src, "WebProject/logo.png", PNG, 9_000, 2);
    write(src, "WebProject/demo.mp4", MP4, 3_000_000, 3);
    write(src, "Holiday/film.mkv", MKV, 500_000, 4);
    write(src, "Holiday/IMG_0002", PNG, 1_000, 5);
    write(src, "docs/report.pdf", b"%PDF-1.7\n", 20_000, 6);
    write(src, "docs/notes.txt", b"plain notes\n", 100, 7);
    // Misleading extensions: content decides.
    write(src, "docs/scan.txt", JPEG, 30_000, 8);
    write(src, "docs/fake.jpg", b"this is text, not a JPEG\n", 10, 9);
    write(src, "docs/movie.jpg", MP4, 50_000, 10);
    write(src, "a/b/c/deep.bin", b"", 300_000, 11);
    write(src, "top.txt", b"top\n", 0, 12);
    std::fs::write(src.join("run.sh"), "#!/bin/sh\necho hi\n").expect("test step");
    sh_in(
        src,
        "chmod 755 run.sh && chmod 600 docs/notes.txt && \
         find . -type f -exec touch -d '2021-03-04 05:06:07.123456789' {} + && \
         touch -d '2019-01-02 03:04:05' WebProject/a.jpg && ln -s top.txt link && \
         chmod 700 docs && touch -d '2020-02-02 02:02:02.5' docs WebProject",
    );
    vec![
        ("WebProject/a.jpg", "photos/work/WebProject/a.jpg"),
        ("WebProject/logo.png", "photos/work/WebProject/logo.png"),
        ("WebProject/demo.mp4", "videos/work/WebProject/demo.mp4"),
        ("Holiday/film.mkv", "videos/work/Holiday/film.mkv"),
        ("Holiday/IMG_0002", "photos/work/Holiday/IMG_0002"),
        ("docs/report.pdf", "files/work/docs/report.pdf"),
        ("docs/notes.txt", "files/work/docs/notes.txt"),
        ("docs/scan.txt", "photos/work/docs/scan.txt"),
        ("docs/fake.jpg", "files/work/docs/fake.jpg"),
        ("docs/movie.jpg", "videos/work/docs/movie.jpg"),
        ("a/b/c/deep.bin", "files/work/a/b/c/deep.bin"),
        ("top.txt", "files/work/top.txt"),
        ("run.sh", "files/work/run.sh"),
    ]
}

/// (mode, mtime with nanoseconds, size) of a file, as `stat` shows them.
fn stat(path: &Path) -> String {
    let out = std::process::Command::new("stat")
        .args(["-c", "%a %.9Y %s"])
        .arg(path)
        .output()
        .expect("test step");
    assert!(out.status.success(), "stat {}", path.display());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The number after `sent ` in a report line, in bytes.
fn sent_bytes(report: &str) -> u64 {
    let line = report
        .lines()
        .find(|l| l.contains("; sent "))
        .unwrap_or_else(|| panic!("no sent figure in {report}"));
    let figure = line.rsplit("; sent ").next().expect("test step").trim();
    let (num, unit) = figure.split_once(' ').expect("test step");
    let num: f64 = num.parse().expect("test step");
    let mul = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other}"),
    };
    (num * mul) as u64
}

fn xattr(path: &Path, name: &str) -> String {
    sh_in(
        Path::new("/"),
        &format!(
            "python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], \"{name}\").decode())' '{}'",
            path.display()
        ),
    )
    .trim()
    .to_string()
}

#[test]
fn import_sorts_by_content_keeps_times_and_never_overwrites() {
    let server = Server::start(&[("ann", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "ann", "pw", "laptop");
    let m = dev.mount();
    let src_dir = tempfile::tempdir().expect("test step");
    let src = src_dir.path().join("Desk");
    std::fs::create_dir(&src).expect("test step");
    let expected = make_tree(&src);
    // Something else already has one of the names.
    m.sh("mkdir -p photos/work/WebProject && printf 'older photo\\n' > photos/work/WebProject/a.jpg && sync photos/work/WebProject/a.jpg");

    // A dry run sends nothing and says where everything would go.
    let plan = dev.run(&[
        "import",
        src.to_str().expect("test step"),
        "--into",
        "work",
        "--dry-run",
    ]);
    assert!(
        plan.contains("docs/scan.txt -> photos/work/docs/scan.txt"),
        "{plan}"
    );
    assert!(plan.contains("photos/: 4 files"), "{plan}");
    assert!(plan.contains("videos/: 3 files"), "{plan}");
    assert!(plan.contains("files/: 6 files"), "{plan}");
    assert!(plan.contains("skipped  link: symbolic link"), "{plan}");
    assert!(!m.path.join("videos/work/WebProject").exists());

    let report = dev.run(&["import", src.to_str().expect("test step"), "--into", "work"]);
    assert!(report.contains("13 new, 0 changed"), "{report}");
    assert!(
        report.contains("name taken: WebProject/a.jpg -> photos/work/WebProject/a (2).jpg"),
        "{report}"
    );
    // The mount on the same device sees the import within moments (it is another agent's
    // change, pushed to the mount like another device's): every file, files being imported
    // in parallel.
    let dest_of = |rel: &str, dest: &'static str| match rel {
        "WebProject/a.jpg" => "photos/work/WebProject/a (2).jpg",
        _ => dest,
    };
    let ok = wait_until(Duration::from_secs(3), || {
        expected
            .iter()
            .all(|(rel, dest)| m.path.join(dest_of(rel, dest)).exists())
    });
    assert!(
        ok,
        "the mount does not show the import: {}",
        m.sh("find . -type f | sort")
    );
    assert_eq!(
        m.sh("cat photos/work/WebProject/a.jpg"),
        "older photo\n",
        "overwritten"
    );
    for (rel, dest) in &expected {
        let dest = dest_of(rel, dest);
        let (a, b) = (src.join(rel), m.path.join(dest));
        assert!(
            b.exists(),
            "{rel} is not at {dest}: {}",
            m.sh("find . -type f | sort")
        );
        assert!(
            std::fs::read(&a).expect("test step") == std::fs::read(&b).expect("test step"),
            "content of {dest}"
        );
        assert_eq!(stat(&a), stat(&b), "mode/mtime/size of {dest}");
    }
    // Folders keep their modes and mtimes too, in every kind they were sorted into.
    for dir in ["files/work/docs", "photos/work/docs", "videos/work/docs"] {
        assert_eq!(
            stat(&m.path.join(dir)).rsplit_once(' ').expect("stat").0,
            stat(&src.join("docs")).rsplit_once(' ').expect("stat").0,
            "{dir}"
        );
    }
    assert_eq!(
        stat(&m.path.join("videos/work/WebProject"))
            .split(' ')
            .nth(1),
        stat(&src.join("WebProject")).split(' ').nth(1)
    );
    // Flat category names, as in the original plan.
    assert_eq!(
        xattr(
            &m.path.join("photos/work/WebProject/logo.png"),
            "user.shelf.category"
        ),
        "photo.01work.02WebProject"
    );
    assert_eq!(
        xattr(&m.path.join("files/work/a/b/c"), "user.shelf.category"),
        "file.01work.02a.03b.04c"
    );
    assert!(m
        .sh("python3 -c 'import os; print(os.listxattr(\"videos/work\"))'")
        .contains("user.shelf.category"));

    // Again: nothing to send.
    let again = dev.run(&["import", src.to_str().expect("test step"), "--into", "work"]);
    assert!(
        again.contains("0 new, 0 changed (new versions), 13 unchanged"),
        "{again}"
    );
    assert!(sent_bytes(&again) < 16 << 10, "{again}");
    // Without the index (another machine, or a lost config): the store's copies are
    // recognised by content and adopted; no chunk is sent, no duplicate made.
    std::fs::remove_dir_all(dev.config.join("ingest")).expect("test step");
    let fresh = dev.run(&["import", src.to_str().expect("test step"), "--into", "work"]);
    assert!(
        fresh.contains("0 new, 0 changed (new versions), 0 unchanged, 13 already in the store"),
        "{fresh}"
    );
    assert!(sent_bytes(&fresh) < 64 << 10, "{fresh}");
    assert_eq!(
        m.sh("find . -name '* (3)*' -o -name 'demo (2)*'"),
        "",
        "duplicates were made"
    );

    // Categories: add, list with counts and sizes.
    dev.run(&["category", "add", "photos/personal/Family"]);
    m.sh("mkdir videos/projects/Film");
    let list = dev.run(&["category", "list"]);
    assert!(list.contains("Family/"), "{list}");
    assert!(list.contains("photo.01personal.02Family"), "{list}");
    let web = list
        .lines()
        .find(|l| l.trim_start().starts_with("WebProject/") && l.contains("photo."))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(web.contains(" 3 files"), "{web}");
    assert!(list.contains("video.01projects.02Film"), "{list}");
    let err = dev
        .shelf()
        .args(["category", "add", "music/rock"])
        .output()
        .expect("test step");
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("photos/, files/ or videos/"));
    m.unmount();
}

#[test]
fn an_interrupted_import_continues_where_it_stopped() {
    let server = Server::start(&[("bo", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "bo", "pw", "laptop");
    let src_dir = tempfile::tempdir().expect("test step");
    let src = src_dir.path();
    for i in 0..400 {
        write(
            src,
            &format!("d{}/f{i}.txt", i % 7),
            b"",
            2_000 + i,
            i as u64,
        );
    }
    write(src, "big/huge.bin", b"", 40 << 20, 99);
    // Stop the import part-way, as a killed process or a lost laptop lid would.
    let mut child = dev
        .shelf()
        .args([
            "import",
            src.to_str().expect("test step"),
            "--into",
            "personal",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("test step");
    let index_dir = dev.config.join("ingest");
    wait_until(Duration::from_secs(20), || {
        std::fs::read_dir(&index_dir).is_ok_and(|mut d| d.next().is_some())
    });
    child.kill().expect("test step");
    child.wait().expect("test step");

    let report = dev.run(&[
        "import",
        src.to_str().expect("test step"),
        "--into",
        "personal",
    ]);
    let new: usize = report
        .lines()
        .find_map(|l| l.trim().split_once(" new, ").map(|(n, _)| n.to_string()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{report}"));
    assert!(new < 401, "nothing was resumed: {report}");
    println!("resumed: {new} of 401 files sent by the second run");
    let m = dev.mount();
    let listing = m.sh("find files/personal -type f | sort");
    let extra: Vec<&str> = listing
        .lines()
        .filter(|l| !l.contains("/d") || l.contains("("))
        .collect();
    assert_eq!(listing.lines().count(), 401, "{extra:?}");
    assert!(!listing.contains(" (2)"), "duplicates: {listing}");
    let digest = |d: &Path| {
        sh_in(
            d,
            "find . -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum",
        )
    };
    assert_eq!(digest(src), digest(&m.path.join("files/personal")));
    m.unmount();
}

#[test]
fn backup_runs_send_exactly_what_changed_and_keep_deleted_files() {
    let server = Server::start(&[("cy", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "cy", "pw", "laptop");
    let m = dev.mount();
    let src_dir = tempfile::tempdir().expect("test step");
    let src = src_dir.path().join("Documents");
    for i in 0..6 {
        write(&src, &format!("doc{i}.txt"), b"", 1_000_000, i);
    }
    let added = dev.run(&[
        "backup",
        "add",
        src.to_str().expect("test step"),
        "--into",
        "personal",
    ]);
    assert!(added.contains("backup job Documents"), "{added}");
    assert!(added.contains("03:00"), "{added}");
    let first = dev.run(&["backup", "run", "Documents"]);
    assert!(first.contains("6 new, 0 changed"), "{first}");

    // Change 3 files (a small edit each), add 2, delete 1.
    sh_in(
        &src,
        "for f in doc0 doc1 doc2; do printf 'edited' | dd of=$f.txt bs=1 seek=500000 conv=notrunc status=none; done
         printf 'new one\\n' > new1.txt && printf 'new two\\n' > new2.txt && rm doc5.txt",
    );
    let second = dev.run(&["backup", "run", "Documents"]);
    assert!(
        second.contains("2 new, 3 changed (new versions), 2 unchanged"),
        "{second}"
    );
    assert!(
        second.contains("deleted from the source, kept in the store: doc5.txt"),
        "{second}"
    );
    // Only the changed chunks went: far less than the three 1 MB files.
    let sent = sent_bytes(&second);
    assert!(sent < 3 * 300_000, "sent {sent} bytes: {second}");
    // Exactly three new versions; the deleted file is still there.
    let ok = wait_until(Duration::from_secs(3), || {
        m.path.join("files/personal/new2.txt").exists()
    });
    assert!(ok, "the mount does not show the backup");
    let versions = m.sh("ls files/personal/.versions/");
    for f in ["doc0", "doc1", "doc2"] {
        assert!(versions.contains(&format!("{f}.txt.v02")), "{versions}");
    }
    assert!(!versions.contains("doc3.txt.v02"), "{versions}");
    assert!(!versions.contains("doc4.txt.v02"), "{versions}");
    assert!(m.path.join("files/personal/doc5.txt").exists());
    assert!(
        std::fs::read(src.join("doc1.txt")).expect("test step")
            == std::fs::read(m.path.join("files/personal/doc1.txt")).expect("test step"),
        "doc1.txt in the store is not the edited one"
    );

    // Nothing changed: nothing sent.
    let third = dev.run(&["backup", "run", "Documents"]);
    assert!(
        third.contains("0 new, 0 changed (new versions), 7 unchanged"),
        "{third}"
    );
    assert!(sent_bytes(&third) < 16 << 10, "{third}");
    // A touched but unchanged file is hashed, not sent.
    sh_in(&src, "touch doc3.txt");
    let fourth = dev.run(&["backup", "run", "Documents"]);
    assert!(fourth.contains("0 new, 0 changed"), "{fourth}");
    assert!(sent_bytes(&fourth) < 32 << 10, "{fourth}");

    let list = dev.run(&["backup", "list"]);
    assert!(list.contains("Documents"), "{list}");
    assert!(list.contains("schedule \"0 3 * * SUN#1\""), "{list}");
    assert!(list.contains(" ok: 0 new, 0 changed"), "{list}");
    assert!(list.contains("next run "), "{list}");
    let events = dev.run(&["events", "--last", "200"]);
    assert!(
        events.contains("backup") && events.contains("2 new, 3 changed"),
        "{events}"
    );

    // Changed in the store and in the source since the last run: both kept.
    m.sh(
        "printf 'edited in the store\\n' > files/personal/doc4.txt && sync files/personal/doc4.txt",
    );
    sh_in(&src, "printf 'more' >> doc4.txt");
    let fifth = dev.run(&["backup", "run", "Documents"]);
    assert!(
        fifth.contains(
            "changed in the store too, both kept: doc4.txt -> files/personal/doc4 (conflicted copy "
        ) && fifth.contains(" from laptop backup).txt"),
        "{fifth}"
    );
    assert_eq!(m.sh("cat files/personal/doc4.txt"), "edited in the store\n");

    // A failing run raises an alert the user sees.
    std::fs::remove_dir_all(&src).expect("test step");
    let out = dev
        .shelf()
        .args(["backup", "run", "Documents"])
        .output()
        .expect("test step");
    assert!(!out.status.success());
    let ok = wait_until(Duration::from_secs(3), || {
        dev.run(&["events", "--last", "50"]).contains("alert")
    });
    assert!(ok, "no alert: {}", dev.run(&["events", "--last", "50"]));
    assert!(dev.run(&["backup", "list"]).contains("FAILED"));
    m.unmount();
}

#[test]
fn install_timer_writes_units_systemd_accepts() {
    let server = Server::start(&[("di", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "di", "pw", "laptop");
    let src = tempfile::tempdir().expect("test step");
    dev.run(&[
        "backup",
        "add",
        src.path().to_str().expect("test step"),
        "--into",
        "work",
        "--name",
        "w",
    ]);
    let xdg = tempfile::tempdir().expect("test step");
    let out = dev
        .shelf()
        .env("XDG_CONFIG_HOME", xdg.path())
        .args(["backup", "install-timer"])
        .output()
        .expect("test step");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let units = xdg.path().join("systemd/user");
    let timer = std::fs::read_to_string(units.join("shelf-backup.timer")).expect("test step");
    let service = std::fs::read_to_string(units.join("shelf-backup.service")).expect("test step");
    assert!(
        timer.contains("OnCalendar=Sun *-*-01..07 03:00:00"),
        "{timer}"
    );
    assert!(timer.contains("Persistent=true"), "{timer}");
    assert!(service.contains(" backup run --due"), "{service}");
    assert!(service.contains("SHELF_CONFIG_DIR="), "{service}");
    // systemd's own reading of the calendar: the first Sunday of a month, 03:00.
    if let Ok(cal) = std::process::Command::new("systemd-analyze")
        .args(["calendar", "--iterations", "3", "Sun *-*-01..07 03:00:00"])
        .output()
    {
        let text = String::from_utf8_lossy(&cal.stdout);
        for line in text.lines().filter(|l| l.contains("elapse")) {
            let date = line.split_whitespace().nth(3).unwrap_or_default();
            let day: u32 = date.rsplit('-').next().unwrap_or("0").parse().unwrap_or(0);
            assert!((1..=7).contains(&day) && line.contains("Sun "), "{line}");
        }
    }
    // `--due` with nothing due runs nothing.
    assert!(dev
        .run(&["backup", "run", "--due"])
        .contains("no backup job is due"));
}

/// A job whose run was missed while the machine was off runs once when the mounted client
/// starts, and not again until its next date.
#[test]
fn the_mount_catches_up_a_missed_backup_run_once() {
    let server = Server::start(&[("ed", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "ed", "pw", "laptop");
    let src = tempfile::tempdir().expect("source");
    std::fs::write(src.path().join("a.txt"), "first\n").expect("write");
    dev.run(&[
        "backup",
        "add",
        src.path().to_str().expect("utf-8"),
        "--into",
        "projects",
        "--name",
        "p",
    ]);
    // As if it was added on 1 March 2026 and the machine was off since: the runs of
    // 1 March, 5 April, … were all missed.
    let jobs = dev.config.join("backup/jobs");
    let text = std::fs::read_to_string(&jobs).expect("jobs file");
    let (head, line) = text.split_once('\n').expect("header");
    let mut fields: Vec<String> = line.trim_end().split('\t').map(String::from).collect();
    fields[4] = "1772323200".into(); // 2026-03-01 00:00 UTC
    std::fs::write(&jobs, format!("{head}\n{}\n", fields.join("\t"))).expect("rewrite");
    assert!(dev.run(&["backup", "list"]).contains("last run never"));

    let m = dev.mount_with(&[("SHELF_BACKUP_CHECK_SECS", "1")]);
    let ok = wait_until(Duration::from_secs(15), || {
        m.path.join("files/projects/a.txt").exists()
    });
    assert!(
        ok,
        "the missed run did not happen: {}",
        dev.run(&["backup", "list"])
    );
    // Several checks later it has still run once.
    std::thread::sleep(Duration::from_secs(3));
    let events = dev.run(&["events", "--last", "100"]);
    let runs = events
        .lines()
        .filter(|l| l.contains("backup  ") && l.contains(" p  "))
        .count();
    assert_eq!(runs, 1, "{events}");
    let list = dev.run(&["backup", "list"]);
    assert!(list.contains(" ok: 1 new"), "{list}");
    m.unmount();
}

/// Bad input and refusals are clear errors that leave nothing half done.
#[test]
fn import_errors_are_clear() {
    let server = Server::start(&[("vi", "pw", "viewer"), ("ur", "pw", "user")]);
    let viewer = Device::new();
    viewer.login(&server, "vi", "pw", "phone");
    let src = tempfile::tempdir().expect("source");
    for i in 0..50 {
        std::fs::write(src.path().join(format!("f{i}.txt")), "x").expect("write");
    }
    let fails = |dev: &Device, args: &[&str]| -> String {
        let out = dev.shelf().args(args).output().expect("run shelf");
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let s = src.path().to_str().expect("utf-8");
    // A viewer may not write: one clear refusal, not fifty.
    let err = fails(&viewer, &["import", s, "--into", "work"]);
    assert!(
        err.contains("stopped after") && err.contains("read-only"),
        "{err}"
    );
    assert!(err.lines().count() <= 3, "{err}");
    let user = Device::new();
    user.login(&server, "ur", "pw", "laptop");
    let err = fails(&user, &["import", "/no/such/folder", "--into", "work"]);
    assert!(
        err.contains("/no/such/folder") && err.contains("No such file"),
        "{err}"
    );
    let err = fails(&user, &["import", s, "--into", "holidays"]);
    assert!(err.contains("personal, work or projects"), "{err}");
    let err = fails(
        &user,
        &[
            "backup",
            "add",
            s,
            "--into",
            "work",
            "--schedule",
            "0 3 * * SUN#9",
        ],
    );
    assert!(err.contains("# takes 1 to 5"), "{err}");
    let err = fails(&user, &["backup", "run", "nothing-here"]);
    assert!(err.contains("no backup job called nothing-here"), "{err}");
    let m = user.mount();
    assert_eq!(
        m.sh("ls files/work photos/work videos/work"),
        "files/work:\n\nphotos/work:\n\nvideos/work:\n"
    );
    m.unmount();
}

/// A source folder with hard links: every name is imported as its own file with the
/// shared content (the server stores the content once).
#[test]
fn hard_linked_source_files_are_imported_under_every_name() {
    let server = Server::start(&[("hal", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "hal", "pw", "laptop");
    let src = tempfile::tempdir().expect("source");
    write(src.path(), "notes/a.txt", b"shared text\n", 5_000, 11);
    std::fs::create_dir(src.path().join("more")).expect("mkdir");
    std::fs::hard_link(
        src.path().join("notes/a.txt"),
        src.path().join("more/b.txt"),
    )
    .expect("link");
    dev.run(&[
        "import",
        src.path().to_str().expect("utf-8"),
        "--into",
        "personal",
    ]);
    let m = dev.mount();
    let want = std::fs::read(src.path().join("notes/a.txt")).expect("read");
    for name in ["files/personal/notes/a.txt", "files/personal/more/b.txt"] {
        assert_eq!(
            std::fs::read(m.path.join(name)).expect(name),
            want,
            "{name}"
        );
    }
    let status = dev.run(&["status"]);
    assert!(status.contains("2 files"), "{status}");
    assert!(
        status.contains("bytes:    10024 current, 5012 stored"),
        "{status}"
    );
    m.unmount();
}

//! End-to-end: a device whose server is unreachable keeps working. Creates, writes,
//! renames, deletes and chmods are applied in the mount at once, journaled, shown by
//! `shelf status` as "offline, N changes pending", and replayed in order when the server is
//! back; a device that was offline while another edited the same files loses nothing.

use shelf_tests::proxy::FaultProxy;
use shelf_tests::*;
use std::time::Duration;

/// `(what, path)` of each line of `shelf events` made by `device`.
fn feed(dev: &Device, device: &str) -> Vec<(String, String)> {
    dev.run(&["events", "--last", "2000"])
        .lines()
        .filter(|l| l.ends_with(&format!("({device})")))
        .filter_map(|l| {
            let mut parts = l.split("  ").map(str::trim).filter(|p| !p.is_empty());
            let _time = parts.next()?;
            let what = parts.next()?.to_string();
            let path = parts.next()?.to_string();
            Some((what, path))
        })
        .collect()
}

fn pending(dev: &Device) -> String {
    dev.run(&["status"])
        .lines()
        .find(|l| l.starts_with("pending:"))
        .unwrap_or_default()
        .to_string()
}

fn settled(dev: &Device) -> bool {
    pending(dev).contains(" 0 file(s) waiting for upload, 0 change(s)")
}

#[test]
fn a_hundred_changes_made_offline_arrive_in_order() {
    let mut server = Server::start(&[("dee", "pw", "user")]);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "dee", "pw", "laptop");
    b.login(&server, "dee", "pw", "desktop");
    let ma = a.mount();
    ma.sh("mkdir files/pre && for i in $(seq 0 9); do printf \"p$i\" > files/pre/p$i; done; sync files/pre/p9; ls -l files files/pre > /dev/null");
    assert!(wait_until(Duration::from_secs(10), || settled(&a)));

    server.stop();
    // 100 changes while the server is away, each applied in the mount at once.
    let mut expected: Vec<(String, String)> = Vec::new();
    let mut script = String::from("cd files\nmkdir trip\n");
    expected.push(("created".into(), "files/trip".into()));
    for i in 0..40 {
        script += &format!("printf 'n{i}' > trip/n{i}.txt\n");
        expected.push(("created".into(), format!("files/trip/n{i}.txt")));
    }
    for i in 0..20 {
        script += &format!("mv trip/n{i}.txt trip/m{i}.txt\n");
        expected.push((
            "moved".into(),
            format!("files/trip/m{i}.txt (was n{i}.txt)"),
        ));
    }
    for i in 20..30 {
        script += &format!("rm trip/n{i}.txt\n");
        expected.push(("deleted".into(), format!("files/trip/n{i}.txt")));
    }
    script += "mkdir trip/sub\n";
    expected.push(("created".into(), "files/trip/sub".into()));
    for i in 0..10 {
        script += &format!("mv trip/m{i}.txt trip/sub/\n");
        expected.push((
            "moved".into(),
            format!("files/trip/sub/m{i}.txt (was m{i}.txt)"),
        ));
    }
    for i in 30..38 {
        script += &format!("chmod 600 trip/n{i}.txt\n");
        expected.push(("attributes".into(), format!("files/trip/n{i}.txt")));
    }
    for i in 0..5 {
        script += &format!("rm pre/p{i}\n");
        expected.push(("deleted".into(), format!("files/pre/p{i}")));
    }
    for i in 5..10 {
        script += &format!("mv pre/p{i} pre/q{i}\n");
        expected.push(("moved".into(), format!("files/pre/q{i} (was p{i})")));
    }
    assert_eq!(expected.len(), 100);
    ma.sh(&script);

    // The mount shows its own changes while they wait.
    let view = |m: &Mount| {
        m.sh("cd files && find trip pre -printf '%p %m %s\\n' | sort && cat trip/n35.txt trip/sub/m3.txt pre/q7")
    };
    let offline_view = view(&ma);
    assert!(
        offline_view.contains("trip/n35.txt 600 3\n"),
        "{offline_view}"
    );
    assert!(
        offline_view.contains("trip/sub/m3.txt 644 2\n"),
        "{offline_view}"
    );
    assert!(!offline_view.contains("trip/n25.txt"), "{offline_view}");
    assert!(!offline_view.contains("pre/p2"), "{offline_view}");
    assert!(offline_view.ends_with("n35n3p7"), "{offline_view}");
    let status = a.run(&["status"]);
    let line = status
        .lines()
        .find(|l| l.contains("offline, "))
        .unwrap_or_else(|| panic!("status does not say offline:\n{status}"));
    let n: usize = line
        .split("offline, ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line}"));
    assert!(
        n >= 100,
        "{n} changes pending (100 namespace changes, plus uploads)"
    );
    // No fsync while offline: it would wait for the server (SEMANTICS.md).

    server.start_again();
    assert!(
        wait_until(Duration::from_secs(60), || settled(&a)),
        "the journal did not drain: {}",
        pending(&a)
    );
    // Everything arrived: another device sees exactly the offline view.
    let mb = b.mount();
    assert_eq!(view(&mb), offline_view);
    assert_eq!(view(&ma), offline_view);
    // In order: the server's feed holds the 100 changes as they were made.
    let made: Vec<(String, String)> = feed(&b, "laptop")
        .into_iter()
        .filter(|(what, path)| {
            what != "changed" && (path.starts_with("files/trip") || path.starts_with("files/pre/"))
        })
        .skip(10) // the ten files made online before
        .collect();
    assert_eq!(made, expected);
    ma.unmount();
    mb.unmount();
}

#[test]
fn edits_on_a_device_that_was_offline_conflict_without_losing_either() {
    let server = Server::start(&[("eve", "pw", "user")]);
    let proxy = FaultProxy::start(&server.addr);
    let (a, b) = (Device::new(), Device::new());
    let out = a.login_at(&server, &proxy.addr, "eve", "pw", "laptop");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.login(&server, "eve", "pw", "desktop");
    let (ma, mb) = (a.mount(), b.mount());
    ma.sh("cd files && printf base > doc.txt && printf other > other.txt && printf g > gone.txt && mkdir -p album && sync doc.txt other.txt gone.txt && ls -l . album > /dev/null");
    assert!(wait_until(Duration::from_secs(5), || mb
        .sh("cat files/doc.txt files/other.txt 2>/dev/null || true")
        == "baseother"));

    proxy.offline();
    // A, offline: edit, delete, create, rename, and a folder B creates too.
    ma.sh("cd files && printf 'from laptop' > doc.txt && rm other.txt && printf new > new.txt && mv gone.txt renamed.txt && mkdir album/trip && printf a > album/trip/a.jpg");
    assert!(
        a.run(&["status"]).contains("offline, "),
        "{}",
        a.run(&["status"])
    );
    // B, online: edits the same file, the file A deleted, and makes the same folder.
    mb.sh("cd files && printf 'from desktop' > doc.txt && printf 'desktop edit' > other.txt && mkdir album/trip && printf b > album/trip/b.jpg && sync doc.txt other.txt album/trip/b.jpg");

    proxy.pass();
    assert!(
        wait_until(Duration::from_secs(60), || settled(&a)),
        "A did not catch up: {}",
        pending(&a)
    );
    let tree = |m: &Mount| {
        m.sh("cd files && for f in $(find . -type f | sort | tr ' ' '?'); do printf '%s=' \"$f\"; cat \"$f\"; echo; done")
    };
    let want_prefix = "./album/trip/a.jpg=a\n./album/trip/b.jpg=b\n";
    let on_b = tree(&mb);
    assert!(
        wait_until(Duration::from_secs(5), || tree(&ma) == tree(&mb)),
        "A:\n{}\nB:\n{}",
        tree(&ma),
        tree(&mb)
    );
    let on_b = if on_b == tree(&mb) { on_b } else { tree(&mb) };
    // Both edits of doc.txt survive: B's (committed first) under the name, A's as a
    // conflicted copy; B's edit of the file A deleted is kept; A's other changes arrived;
    // the folder both made is one folder holding both files.
    assert!(on_b.starts_with(want_prefix), "{on_b}");
    assert!(on_b.contains("./doc.txt=from desktop\n"), "{on_b}");
    let copy = on_b
        .lines()
        .find(|l| l.starts_with("./doc (conflicted copy ") && l.contains(" from laptop).txt="))
        .unwrap_or_else(|| panic!("no conflicted copy of doc.txt:\n{on_b}"));
    assert!(copy.ends_with("=from laptop"), "{copy}");
    assert!(on_b.contains("./other.txt=desktop edit\n"), "{on_b}");
    assert!(on_b.contains("./new.txt=new\n"), "{on_b}");
    assert!(on_b.contains("./renamed.txt=g\n"), "{on_b}");
    assert!(!on_b.contains("./gone.txt"), "{on_b}");
    assert_eq!(on_b.lines().count(), 7, "{on_b}");
    // The conflict is news to both devices; the delete A could not apply is in its events.
    assert!(b.run(&["events", "--last", "50"]).contains("conflict "));
    let on_a = a.run(&["events", "--last", "50"]);
    assert!(
        on_a.contains("failed      other.txt  (this device: delete made offline not applied"),
        "{on_a}"
    );
    ma.unmount();
    mb.unmount();
}

/// `fsync` while the server is away waits for it (for `SHELF_FSYNC_PATIENCE_SECS`, 60 s by
/// default): if it comes back in time, fsync succeeds with the file committed; if not, EIO,
/// and the file stays in the mount and is uploaded later.
#[test]
fn fsync_offline_waits_for_the_server_then_reports_eio() {
    let mut server = Server::start(&[("fay", "pw", "user")]);
    let a = Device::new();
    a.login(&server, "fay", "pw", "laptop");
    let ma = a.mount_with(&[("SHELF_FSYNC_PATIENCE_SECS", "8")]);
    ma.sh("ls files > /dev/null");
    server.stop();
    let fsync = "python3 -c \"
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, sys.argv[2].encode())
try:
    os.fsync(fd)
    print('synced')
except OSError as e:
    print(os.strerror(e.errno))
os.close(fd)
\"";
    // Nobody brings the server back: EIO after the patience, the file stays.
    let t0 = std::time::Instant::now();
    let out = ma.sh(&format!("{fsync} files/late.txt late"));
    assert_eq!(out.trim(), "Input/output error");
    assert!(t0.elapsed() >= Duration::from_secs(7), "{:?}", t0.elapsed());
    assert_eq!(ma.sh("cat files/late.txt"), "late");
    // The server comes back while fsync waits: it succeeds, committed. (The server is
    // started from this thread: a child dies with the thread that started it.)
    let path = ma.path.clone();
    let script = format!("{fsync} files/soon.txt soon");
    let waiting = std::thread::spawn(move || sh_in(&path, &script));
    std::thread::sleep(Duration::from_millis(1500));
    server.start_again();
    let out = waiting.join().expect("fsync");
    assert_eq!(out.trim(), "synced");
    let b = Device::new();
    b.login(&server, "fay", "pw", "desktop");
    let mb = b.mount();
    assert_eq!(mb.sh("cat files/soon.txt"), "soon");
    assert!(wait_until(Duration::from_secs(30), || mb
        .sh("cat files/late.txt 2>/dev/null || true")
        == "late"));
    ma.unmount();
    mb.unmount();
}

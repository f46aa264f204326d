//! End-to-end: two devices of one account mount the same store; the server pushes each
//! change, and the other device's kernel caches are invalidated at once.

use shelf_tests::*;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `seen` until it holds, returns how long that took (panics after 5 s).
fn until(what: &str, seen: impl Fn() -> bool) -> Duration {
    let t0 = Instant::now();
    while !seen() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{what}: not seen in 5 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = t0.elapsed();
    if took > Duration::from_millis(200) {
        eprintln!("slow: {what} took {took:?}");
    }
    took
}

fn content(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

#[test]
fn changes_on_one_device_show_on_the_other_within_a_second() {
    let server = Server::start(&[("ann", "pw", "user")]);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "ann", "pw", "laptop");
    b.login(&server, "ann", "pw", "desktop");
    let (ma, mb) = (a.mount(), b.mount());
    let (da, db) = (ma.path.join("files"), mb.path.join("files"));
    // B looks first, so it has (negative) entries cached that a push must drop; it lists
    // the folder too, so it answers "no such file" from its own listing.
    assert!(std::fs::read_dir(&db).expect("list").count() >= 3);
    for i in 0..34 {
        assert!(!db.join(format!("f{i}")).exists());
    }

    let mut times = Vec::new();
    for i in 0..34 {
        // A new file with content.
        let (fa, fb) = (da.join(format!("f{i}")), db.join(format!("f{i}")));
        let text = format!("version {i}\n");
        std::fs::write(&fa, &text).expect("write on A");
        times.push(until("new file", || content(&fb).as_deref() == Some(&text)));
        // Its content changes.
        let text2 = format!("changed {i}\n");
        std::fs::write(&fa, &text2).expect("rewrite on A");
        times.push(until("changed content", || {
            content(&fb).as_deref() == Some(&text2)
        }));
        // Renamed, then (every other one) deleted.
        let (ga, gb) = (da.join(format!("g{i}")), db.join(format!("g{i}")));
        std::fs::rename(&fa, &ga).expect("rename on A");
        times.push(until("rename", || gb.exists() && !fb.exists()));
        if i % 2 == 0 {
            std::fs::remove_file(&ga).expect("delete on A");
            times.push(until("delete", || !gb.exists()));
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    let worst = *times.last().expect("some");
    println!(
        "propagation over {} changes: median {:?}, worst {:?}",
        times.len(),
        median,
        worst
    );
    assert!(times.len() >= 100);
    assert!(worst < Duration::from_secs(1), "worst {worst:?}");
    // Far below the 1 s cache time: B's caches were invalidated by the push, not by expiry.
    assert!(median < Duration::from_millis(300), "median {median:?}");
    ma.unmount();
    mb.unmount();
}

#[test]
fn shelf_events_prints_every_devices_changes() {
    use std::io::BufRead;
    let server = Server::start(&[("eve", "pw", "user")]);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "eve", "pw", "laptop");
    b.login(&server, "eve", "pw", "phone");
    let ma = a.mount();
    ma.sh("printf one > files/work/a.txt && sync files/work/a.txt && mv files/work/a.txt files/work/b.txt && rm files/work/b.txt && sync files/work");
    let past = b.run(&["events", "--last", "4"]);
    let lines: Vec<&str> = past.lines().collect();
    assert_eq!(lines.len(), 4, "{past}");
    assert!(
        lines[0].contains("created") && lines[0].contains("files/work/a.txt  (laptop)"),
        "{past}"
    );
    assert!(
        lines[1].contains("changed") && lines[1].contains("files/work/a.txt"),
        "{past}"
    );
    assert!(
        lines[2].contains("moved") && lines[2].contains("files/work/b.txt (was a.txt)"),
        "{past}"
    );
    assert!(
        lines[3].contains("deleted") && lines[3].contains("files/work/b.txt"),
        "{past}"
    );

    // --follow prints changes as they happen.
    let mut child = b
        .shelf()
        .args(["events", "--follow", "--last", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("shelf events --follow");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    std::thread::sleep(Duration::from_millis(300));
    ma.sh("mkdir files/photos_2026");
    let mut l = String::new();
    out.read_line(&mut l).expect("a line");
    // Stop only the process this test started.
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        l.contains("created") && l.contains("files/photos_2026  (laptop)"),
        "{l}"
    );
    ma.unmount();
}

/// Both devices edit the same file while one of them cannot upload (its uploads are held,
/// as when offline): after it reconnects both contents exist, and both devices see the same
/// tree. An edit of a file the other device deleted brings the file back.
#[test]
fn conflicting_edits_keep_both_and_deletes_keep_the_edit() {
    let server = Server::start(&[("cy", "pw", "user")]);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "cy", "pw", "laptop");
    b.login(&server, "cy", "pw", "desktop");
    let ma = a.mount();
    ma.sh("printf 'base\\n' > files/plan.txt && printf 'keep me\\n' > files/gone.txt && sync files/plan.txt files/gone.txt");

    // B edits both, but its uploads wait (journaled).
    let mut mb = b.mount_with(&[("SHELF_TEST_HOLD_UPLOADS", "1")]);
    mb.sh("printf 'from desktop\\n' > files/plan.txt && printf 'edited on desktop\\n' > files/gone.txt");
    // Meanwhile A changes one and deletes the other.
    ma.sh("printf 'from laptop\\n' > files/plan.txt && sync files/plan.txt && rm files/gone.txt");
    mb.kill_client();
    drop(mb);

    // B comes back: its journal replays against versions that moved on.
    let mb = b.mount();
    let listing = |m: &Mount| m.sh("cd files && ls | grep -v '^[a-z]*$' | sort");
    let ok = wait_until(Duration::from_secs(10), || {
        listing(&ma).lines().count() == 3
    });
    assert!(ok, "A sees three files: {}", listing(&ma));
    let on_a = listing(&ma);
    let copy = on_a
        .lines()
        .find(|l| l.starts_with("plan (conflicted copy ") && l.ends_with(" from desktop).txt"))
        .unwrap_or_else(|| panic!("no conflicted copy in {on_a}"))
        .to_string();
    assert_eq!(ma.sh("cat files/plan.txt"), "from laptop\n");
    assert_eq!(ma.sh(&format!("cat 'files/{copy}'")), "from desktop\n");
    assert_eq!(ma.sh("cat files/gone.txt"), "edited on desktop\n");
    // Both devices see the same tree.
    let ok = wait_until(Duration::from_secs(5), || listing(&mb) == on_a);
    assert!(ok, "B: {} A: {on_a}", listing(&mb));
    assert_eq!(mb.sh("cat files/plan.txt"), "from laptop\n");
    assert!(a
        .run(&["events", "--last", "50"])
        .contains(&format!("conflict    files/{copy}")));
    ma.unmount();
    mb.unmount();
}

/// Waits until a lock holder started with `echo held` in its script says it holds the lock.
fn held(child: &mut std::process::Child) {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("holder stdout"))
        .read_line(&mut line)
        .expect("holder output");
    assert_eq!(line.trim(), "held", "the holder took the lock");
}

fn try_flock(m: &Mount) -> bool {
    std::process::Command::new("flock")
        .args(["-n"])
        .arg(m.path.join("files/lockfile"))
        .arg("true")
        .status()
        .is_ok_and(|s| s.success())
}

/// flock and fcntl locks exclude holders on other devices; a dead device's lease expires.
#[test]
fn locks_hold_across_devices_and_expire_with_a_dead_device() {
    let server = Server::start_with_env(&[("lu", "pw", "user")], &[("SHELF_LEASE_SECS", "2")]);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "lu", "pw", "laptop");
    b.login(&server, "lu", "pw", "desktop");
    let mut ma = a.mount();
    let mb = b.mount();
    ma.sh("printf x > files/lockfile && sync files/lockfile");

    // flock held on A: flock -n on B fails; released, B succeeds.
    let mut holder = std::process::Command::new("flock")
        .arg(ma.path.join("files/lockfile"))
        .args(["-c", "echo held; sleep 1.5"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flock on A");
    held(&mut holder);
    // flock -n exits 1 without a message when the lock is taken.
    let busy = sh_fails(&mb.path, "flock -n files/lockfile true");
    assert!(!busy.contains("No such"), "{busy}");
    assert!(holder.wait().expect("flock ends").success());
    // The kernel sends the release after the holder exits: it arrives shortly.
    assert!(wait_until(Duration::from_secs(3), || try_flock(&mb)));

    // fcntl (POSIX) write lock on B: A's non-blocking attempt gets EAGAIN / EACCES.
    let lock_script = r#"python3 - <<'PY'
import fcntl, time, sys
f = open('files/lockfile', 'r+')
fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
print('held', flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 1.5)
PY"#;
    let mut posix = std::process::Command::new("bash")
        .args(["-c", lock_script])
        .current_dir(&mb.path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("lockf on B");
    held(&mut posix);
    let err = sh_fails(
        &ma.path,
        r#"python3 -c "
import fcntl
f = open('files/lockfile', 'r+')
fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
""#,
    );
    assert!(
        err.contains("Resource temporarily unavailable") || err.contains("Permission denied"),
        "{err}"
    );
    assert!(posix.wait().expect("lockf ends").success());

    // A takes a lock and dies: once the lease period passes, B may lock.
    // (B's lockf holder above may still be releasing.)
    let mut dead_holder = std::process::Command::new("flock")
        .arg(ma.path.join("files/lockfile"))
        .args(["-c", "echo held; sleep 30"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flock on A");
    held(&mut dead_holder);
    sh_fails(&mb.path, "flock -n files/lockfile true");
    ma.kill_client();
    let freed = wait_until(Duration::from_secs(10), || try_flock(&mb));
    // Stop only the process this test started.
    let _ = dead_holder.kill();
    let _ = dead_holder.wait();
    assert!(freed, "the dead device's lease expired");
    drop(ma);
    mb.unmount();
}

/// Leases are records in the store's database: a lock held on one device still excludes
/// another after the server was restarted, and goes when its holder lets it go.
#[test]
fn a_lock_outlives_a_server_restart() {
    let mut server = Server::start(&[("lu", "pw", "user")]);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "lu", "pw", "laptop");
    b.login(&server, "lu", "pw", "desktop");
    let ma = a.mount();
    let mb = b.mount();
    ma.sh("printf x > files/lockfile && sync files/lockfile");
    let mut holder = std::process::Command::new("flock")
        .arg(ma.path.join("files/lockfile"))
        .args(["-c", "echo held; sleep 600"])
        .stdout(std::process::Stdio::piped())
        // Its own process group: the shell's sleep holds the descriptor too.
        .process_group(0)
        .spawn()
        .expect("flock on A");
    held(&mut holder);
    server.restart();
    // B is connected again (it lists the folder), and the lock still holds.
    assert!(wait_until(Duration::from_secs(15), || mb
        .path
        .join("files/lockfile")
        .exists()));
    assert!(!try_flock(&mb), "A's lock outlived the restart");
    // SAFETY: kill(2) on the process group of the holder this test started.
    unsafe { libc::kill(-(holder.id() as i32), libc::SIGKILL) };
    let _ = holder.wait();
    assert!(
        wait_until(Duration::from_secs(10), || try_flock(&mb)),
        "released, B may lock"
    );
    ma.unmount();
    mb.unmount();
}

/// A read-only descriptor's close is not reported to the mount (FOPEN_NOFLUSH saves a
/// round trip per close), yet a POSIX lock taken through it still goes when it is closed,
/// while the process that took it lives on.
#[test]
fn a_lock_taken_through_a_read_only_descriptor_goes_at_its_close() {
    use std::io::{BufRead, Write};
    let server = Server::start(&[("lr", "pw", "user")]);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "lr", "pw", "laptop");
    b.login(&server, "lr", "pw", "desktop");
    let ma = a.mount();
    let mb = b.mount();
    ma.sh("printf x > files/lockfile && sync files/lockfile");
    assert!(wait_until(Duration::from_secs(5), || mb
        .path
        .join("files/lockfile")
        .exists()));
    // Holds a shared lock through a read-only descriptor, closes it on its first line of
    // input, and stays alive until its input ends.
    let script = "import fcntl, sys\nf = open('files/lockfile', 'r')\n\
                  fcntl.lockf(f, fcntl.LOCK_SH | fcntl.LOCK_NB)\nprint('held', flush=True)\n\
                  sys.stdin.readline()\nf.close()\nprint('closed', flush=True)\nsys.stdin.read()\n";
    let mut holder = std::process::Command::new("python3")
        .args(["-c", script])
        .current_dir(&ma.path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("holder");
    let mut out = std::io::BufReader::new(holder.stdout.take().expect("holder stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("holder output");
    assert_eq!(line.trim(), "held");
    let exclusive = "python3 -c \"import fcntl\nf = open('files/lockfile', 'r+')\n\
                     fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\"";
    let err = sh_fails(&mb.path, exclusive);
    assert!(
        err.contains("Resource temporarily unavailable") || err.contains("Permission denied"),
        "{err}"
    );
    let mut stdin = holder.stdin.take().expect("holder stdin");
    stdin.write_all(b"close\n").expect("tell the holder");
    line.clear();
    out.read_line(&mut line).expect("holder output");
    assert_eq!(line.trim(), "closed");
    let freed = wait_until(Duration::from_secs(3), || {
        std::process::Command::new("bash")
            .args(["-c", exclusive])
            .current_dir(&mb.path)
            .status()
            .is_ok_and(|s| s.success())
    });
    drop(stdin);
    let _ = holder.wait();
    assert!(freed, "the lock went with the read-only descriptor's close");
    mb.unmount();
    ma.unmount();
}

/// A process waiting for a lock (`F_SETLKW`) holds up neither the mount's other requests nor
/// the unlock it waits for, sent through the same mount: only one FUSE thread waits for the
/// kernel's requests at a time, and a thread about to wait hands that job on.
#[test]
fn a_process_waiting_for_a_lock_holds_up_nothing() {
    let server = Server::start(&[("lw", "pw", "user")]);
    let d = Device::new();
    d.login(&server, "lw", "pw", "laptop");
    let m = d.mount();
    m.sh("printf x > files/lockfile && printf hello > files/other && sync files/lockfile");
    let lock = |wait: &str| {
        format!(
            "import fcntl, sys\nf = open('files/lockfile', 'r+')\n\
             fcntl.lockf(f, fcntl.LOCK_EX{wait})\nprint('held', flush=True)\nsys.stdin.read()\n"
        )
    };
    // The holder keeps the lock until its stdin closes.
    let mut holder = std::process::Command::new("python3")
        .args(["-c", &lock(" | fcntl.LOCK_NB")])
        .current_dir(&m.path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("holder");
    held(&mut holder);
    let mut waiters: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new("python3")
                .args(["-c", &lock("")])
                .current_dir(&m.path)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("waiter")
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for w in waiters.iter_mut() {
        if let Some(status) = w.try_wait().expect("waiter") {
            let mut out = String::new();
            let _ = std::io::Read::read_to_string(&mut w.stdout.take().unwrap(), &mut out);
            panic!("a waiter ended before the holder let go: {status} {out}");
        }
    }
    // Meanwhile the mount answers everything else at once.
    let t0 = Instant::now();
    let out = m.sh("cat files/other; mkdir files/new; echo hi > files/new/f; ls files/new");
    assert_eq!(out, "hellof\n");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // The holder lets go (its unlock goes through the same mount): each waiter gets the lock
    // in turn and ends, releasing it.
    drop(holder.stdin.take());
    assert!(holder.wait().expect("holder ends").success());
    for mut w in waiters {
        held(&mut w);
        assert!(w.wait().expect("waiter ends").success());
    }
    m.unmount();
}

/// Both devices overwrite one file at the same moment and fsync it: the server keeps one
/// edit as the file and the other as a conflicted copy, each once. (The device whose
/// commit lost held the file open for its fsync; it used to send the same content again
/// as the file's newest version, hiding the other edit in `.versions/`.)
#[test]
fn edits_made_at_once_on_two_devices_keep_each_once() {
    let server = Server::start(&[("di", "pw", "user")]);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "di", "pw", "laptop");
    b.login(&server, "di", "pw", "desktop");
    let (ma, mb) = (a.mount(), b.mount());
    for round in 0..3 {
        let f = format!("files/plan{round}.txt");
        ma.sh(&format!("printf 'base\\n' > {f} && sync {f}"));
        assert!(wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(mb.path.join(&f)).is_ok_and(|t| t == "base\n")
        }));
        let edit = |m: &Mount, who: &'static str| {
            let (dir, f) = (m.path.clone(), f.clone());
            std::thread::spawn(move || {
                sh_in(&dir, &format!("printf 'from {who}\\n' > {f} && sync {f}"))
            })
        };
        let (ta, tb) = (edit(&ma, "laptop"), edit(&mb, "desktop"));
        ta.join().expect("edit on A");
        tb.join().expect("edit on B");
        // Both edits are kept, each once: as the file and a conflicted copy (the edits
        // crossed), or as the file's last two versions (one device saw the other's edit
        // before it wrote: no conflict). Never the same edit twice with the other only in
        // `.versions/`.
        let state = |m: &Mount| {
            m.sh(&format!(
                "cd files && echo files: $(for f in plan{round}*; do cat \"$f\"; done | sort | tr '\\n' ,); \
                 echo versions: $(for v in .versions/plan{round}.txt.v*; do cat \"$v\"; done | tr '\\n' ,)"
            ))
        };
        let kept_once = |s: &str| {
            s == "files: from desktop,from laptop,\nversions: base,from desktop,\n"
                || s == "files: from desktop,from laptop,\nversions: base,from laptop,\n"
                || s == "files: from laptop,\nversions: base,from desktop,from laptop,\n"
                || s == "files: from desktop,\nversions: base,from laptop,from desktop,\n"
        };
        for m in [&ma, &mb] {
            assert!(
                wait_until(Duration::from_secs(10), || kept_once(&state(m))),
                "round {round}: each edit kept once: {}",
                state(m)
            );
        }
    }
    ma.unmount();
    mb.unmount();
}

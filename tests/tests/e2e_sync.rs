//! End-to-end: two devices of one account mount the same store; the server pushes each
//! change, and the other device's kernel caches are invalidated at once.

use shelf_tests::*;
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
    // B looks first, so it has (negative) entries cached that a push must drop.
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
    ma.sh("printf one > files/work/a.txt && sync files/work/a.txt && mv files/work/a.txt files/work/b.txt && rm files/work/b.txt");
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

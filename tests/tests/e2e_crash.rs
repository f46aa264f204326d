//! Crash safety: SIGKILL of the client at random points of a workload of writes, renames
//! and deletes, 50 times over; then every operation whose close (or rename, unlink) had
//! returned must be on the server, and no file torn.

use shelf_tests::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

/// How many lines of its own name the workload writes into `name`.
fn lines(name: &str) -> usize {
    let n: usize = name.bytes().map(usize::from).sum();
    200 + n * 37 % 3000
}

/// The content the workload writes to `name` (recomputed by the checker).
fn content(name: &str) -> String {
    format!("{name}\n").repeat(lines(name))
}

/// One round's operations, in order: (op, a, b).
fn ops(round: usize) -> Vec<(char, String, String)> {
    let mut v = Vec::new();
    for k in 0..40 {
        let name = format!("r{round}_{k}");
        v.push(('w', name.clone(), String::new()));
        if k % 4 == 3 {
            let prev = format!("r{round}_{}", k - 1);
            v.push(('m', prev.clone(), format!("{prev}_moved")));
        }
        if k % 5 == 4 {
            v.push(('d', format!("r{round}_{}", k - 2), String::new()));
        }
    }
    v
}

/// A bash script doing `ops`, appending each to `log` once the call returned.
fn script(round: usize, log: &std::path::Path) -> String {
    let mut s = String::from("set -e\ncd files/crash\n");
    for (op, a, b) in ops(round) {
        match op {
            'w' => s.push_str(&format!(
                "yes {a} | head -n {} > {a}; echo 'w {a}' >> {log}\n",
                lines(&a),
                log = log.display()
            )),
            'm' => s.push_str(&format!(
                "mv {a} {b}; echo 'm {a} {b}' >> {log}\n",
                log = log.display()
            )),
            _ => s.push_str(&format!(
                "rm -f {a}; echo 'd {a}' >> {log}\n",
                log = log.display()
            )),
        }
    }
    s
}

#[test]
fn killing_the_client_at_random_points_loses_nothing_that_returned() {
    let server = Server::start(&[("kit", "pw", "user")]);
    let laptop = Device::new();
    laptop.login(&server, "kit", "pw", "laptop");
    let work = tempfile::tempdir().expect("tempdir");
    {
        let m = laptop.mount();
        m.sh("mkdir files/crash");
        m.unmount();
    }
    // Expected names → content, and the names an unfinished operation may have touched.
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    let mut unsure: Vec<String> = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..50 {
        let mut m = laptop.mount();
        let log = work.path().join(format!("log{round}"));
        std::fs::File::create(&log).expect("log");
        let script_file = work.path().join(format!("work{round}.sh"));
        std::fs::write(&script_file, script(round, &log)).expect("script");
        let mut child = std::process::Command::new("bash")
            .arg(&script_file)
            .current_dir(&m.path)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("workload");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(20 + seed % 400));
        m.kill_client();
        let _ = child.wait();
        drop(m);
        // Apply what returned; the next operation may or may not have happened.
        let done: Vec<String> = std::fs::read_to_string(&log)
            .expect("log")
            .lines()
            .map(str::to_string)
            .collect();
        for line in &done {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts[0] {
                "w" => {
                    want.insert(parts[1].into(), content(parts[1]));
                }
                "m" => {
                    if let Some(c) = want.remove(parts[1]) {
                        want.insert(parts[2].into(), c);
                    }
                }
                _ => {
                    want.remove(parts[1]);
                }
            }
        }
        if let Some((_, a, b)) = ops(round).get(done.len()) {
            unsure.push(a.clone());
            unsure.push(b.clone());
        }
    }
    // The last mount replays the journal; umount waits for the uploads.
    let m = laptop.mount();
    m.unmount();

    // Another device sees exactly what returned, and nothing torn.
    let desktop = Device::new();
    desktop.login(&server, "kit", "pw", "desktop");
    let d = desktop.mount();
    let dir = d.path.join("files/crash");
    let mut report = std::io::stderr();
    let mut lost = Vec::new();
    for (name, c) in &want {
        if unsure.contains(name) {
            continue;
        }
        match std::fs::read_to_string(dir.join(name)) {
            Ok(got) if got == *c => {}
            Ok(got) => lost.push(format!("{name}: {} bytes, want {}", got.len(), c.len())),
            Err(e) => lost.push(format!("{name}: {e}")),
        }
    }
    for entry in std::fs::read_dir(&dir).expect("list") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if !want.contains_key(&name) && !unsure.contains(&name) {
            lost.push(format!("{name}: present but deleted or never written"));
        }
    }
    let _ = writeln!(
        report,
        "{} files checked after 50 kills, {} unsure",
        want.len(),
        unsure.len()
    );
    assert!(lost.is_empty(), "after 50 client kills: {lost:#?}");
    d.unmount();
}

/// SIGKILL of the server while files are being uploaded, 20 times: every file whose fsync
/// returned is there after the restart, every file whose close returned is uploaded once
/// the server is back, and every committed version is whole (all its chunks readable).
#[test]
fn killing_the_server_during_uploads_loses_nothing_and_commits_nothing_half() {
    let mut server = Server::start(&[("sid", "pw", "user")]);
    let laptop = Device::new();
    laptop.login(&server, "sid", "pw", "laptop");
    let m = laptop.mount();
    m.sh("mkdir files/srv");
    let work = tempfile::tempdir().expect("tempdir");
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..20 {
        let log = work.path().join(format!("log{round}"));
        std::fs::File::create(&log).expect("log");
        // Larger files (so uploads are in flight), every third one fsynced.
        let mut script = String::from("set -e\ncd files/srv\n");
        for k in 0..12 {
            let name = format!("s{round}_{k}");
            let n = lines(&name) * 40;
            let sync = if k % 3 == 0 {
                format!(" && sync {name}")
            } else {
                String::new()
            };
            script.push_str(&format!(
                "yes {name} | head -n {n} > {name}{sync}; echo '{name} {n}' >> {}\n",
                log.display()
            ));
        }
        let script_file = work.path().join(format!("srv{round}.sh"));
        std::fs::write(&script_file, script).expect("script");
        let mut child = std::process::Command::new("bash")
            .arg(&script_file)
            .current_dir(&m.path)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("workload");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(50 + seed % 300));
        server.kill();
        // Back after a moment, while the workload goes on: what it did meanwhile was queued
        // (creates) or waits (fsync) and must arrive too.
        std::thread::sleep(Duration::from_millis(300));
        server.start_again();
        let _ = child.wait();
        for line in std::fs::read_to_string(&log).expect("log").lines() {
            let (name, n) = line.split_once(' ').expect("name and lines");
            let n: usize = n.parse().expect("a number");
            want.insert(name.to_string(), format!("{name}\n").repeat(n));
        }
    }
    // The client retries what the dead server did not commit; umount waits for it.
    m.unmount();
    let desktop = Device::new();
    desktop.login(&server, "sid", "pw", "desktop");
    let d = desktop.mount();
    let dir = d.path.join("files/srv");
    let mut bad = Vec::new();
    for (name, c) in &want {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(got) if got == *c => {}
            Ok(got) => bad.push(format!("{name}: {} bytes, want {}", got.len(), c.len())),
            Err(e) => bad.push(format!("{name}: {e}")),
        }
    }
    eprintln!("{} files checked after 20 server kills", want.len());
    assert!(bad.is_empty(), "after 20 server kills: {bad:#?}");
    assert!(want.len() >= 20, "the workload got somewhere");
    d.unmount();
}

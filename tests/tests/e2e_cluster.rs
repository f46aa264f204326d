//! End-to-end: one store served by three `shelf-server` processes at once — metadata on a
//! real PostgreSQL 15, chunks in a real Garage bucket, all started by the test on loopback
//! ports — behind a real HAProxy, with two devices' mounts connected through it to
//! different servers.

use shelf_tests::garage::Garage;
use shelf_tests::haproxy::{connections_to, Haproxy};
use shelf_tests::postgres::Postgres;
use shelf_tests::*;
use std::time::{Duration, Instant};

/// Which of `servers` have connections now.
fn in_use(servers: &[&Server]) -> Vec<usize> {
    (0..servers.len())
        .filter(|&i| connections_to(&servers[i].addr) > 0)
        .collect()
}

/// Three servers, two devices on different ones: a change on one device shows on the other
/// within a second; edits of one file made at once on both are both kept; the server one
/// device uploads through is killed (SIGKILL) mid-copy, the device goes on through
/// another, and every byte arrives.
#[test]
fn three_servers_behind_haproxy_serve_two_devices_as_one_store() {
    let pg = Postgres::start();
    let garage = Garage::start();
    let mut env = pg.env();
    env.extend(garage.env());
    let env = env_refs(&env);
    let s1 = Server::start_with_env(&[("ann", "pw", "user")], &env);
    let (s2, s3) = (s1.join(), s1.join());
    let lb = Haproxy::start(&[&s1.addr, &s2.addr, &s3.addr]);

    let (a, b) = (Device::new(), Device::new());
    for (d, name) in [(&a, "laptop"), (&b, "desktop")] {
        let out = d.login_at(&s1, &lb.addr, "ann", "pw", name);
        assert!(
            out.status.success(),
            "login through the balancer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The balancer gives each new connection to the server with the fewest: A's mount
    // takes one, B's another.
    let servers = [&s1, &s2, &s3];
    assert!(wait_until(Duration::from_secs(5), || in_use(&servers).is_empty()));
    let ma = a.mount();
    assert!(wait_until(Duration::from_secs(5), || !in_use(&servers).is_empty()));
    let a_on = in_use(&servers);
    let mb = b.mount();
    assert!(
        wait_until(Duration::from_secs(5), || in_use(&servers).len()
            > a_on.len()),
        "B's mount is on a server A's is not on (A on {a_on:?}, now {:?})",
        in_use(&servers)
    );

    // Propagation across servers.
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let path = format!("files/work/p{i}.txt");
        ma.sh(&format!("echo 'note {i}' > {path}"));
        let start = Instant::now();
        let seen = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(mb.path.join(&path)).is_ok_and(|t| t == format!("note {i}\n"))
        });
        let took = start.elapsed();
        assert!(seen, "{path} reaches the other device");
        worst = worst.max(took);
    }
    eprintln!("propagation across servers: worst of 5 {worst:?}");
    assert!(
        worst <= Duration::from_secs(1),
        "a change shows on a device on another server within a second (worst {worst:?})"
    );

    // Concurrent edits of one file on both devices: both contents are kept.
    ma.sh("printf 'base\\n' > files/plan.txt && sync files/plan.txt");
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(mb.path.join("files/plan.txt")).is_ok_and(|t| t == "base\n")
    }));
    let (pa, pb) = (ma.path.clone(), mb.path.clone());
    let ta = std::thread::spawn(move || {
        sh_in(
            &pa,
            "printf 'from laptop\\n' > files/plan.txt && sync files/plan.txt",
        )
    });
    let tb = std::thread::spawn(move || {
        sh_in(
            &pb,
            "printf 'from desktop\\n' > files/plan.txt && sync files/plan.txt",
        )
    });
    ta.join().expect("edit on A");
    tb.join().expect("edit on B");
    let contents = |m: &Mount| {
        let mut all: Vec<String> = m
            .sh("cd files && for f in plan*; do cat \"$f\"; done")
            .lines()
            .map(str::to_string)
            .collect();
        all.sort();
        all
    };
    let both = vec!["from desktop".to_string(), "from laptop".to_string()];
    for m in [&ma, &mb] {
        assert!(
            wait_until(Duration::from_secs(15), || contents(m) == both),
            "both edits are kept, on both devices: {:?}\n{}",
            contents(m),
            m.sh("cd files && ls -la && ls -la .versions && for f in .versions/plan*; do echo \"$f: $(cat \"$f\")\"; done")
        );
    }

    // A copies a tree; the server A's mount is on is killed in the middle of it.
    let src = tempfile::tempdir().expect("tempdir");
    sh_in(
        src.path(),
        "mkdir tree && cd tree && for d in $(seq 1 20); do mkdir d$d; \
         for f in $(seq 1 10); do head -c $((d * 1000 + f)) /dev/urandom > d$d/f$f; done; done \
         && head -c 48000000 /dev/urandom > big.bin",
    );
    let want = tree_digest(&src.path().join("tree"));
    let victim = in_use(&servers)
        .into_iter()
        .find(|i| a_on.contains(i))
        .unwrap_or(a_on[0]);
    let (from, to) = (src.path().join("tree"), ma.path.join("files/work/tree"));
    let copy = std::thread::spawn(move || {
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&from)
            .arg(&to)
            .status()
            .expect("cp")
    });
    std::thread::sleep(Duration::from_millis(700));
    let mut servers_owned = [s1, s2, s3];
    servers_owned[victim].kill();
    assert!(copy.join().expect("cp").success(), "cp -a finishes");
    let there = mb.path.join("files/work/tree");
    assert!(
        wait_until(Duration::from_secs(90), || tree_digest(&there) == want),
        "every file arrives whole on the other device after the server was killed"
    );
    assert_eq!(tree_digest(&ma.path.join("files/work/tree")), want);
    ma.unmount();
    mb.unmount();
    drop(lb);
}

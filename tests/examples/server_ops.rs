//! Server throughput for namespace changes (issue 13): N devices, one connection each,
//! create empty files as fast as they can for a few seconds, first one request per change
//! (each acknowledged only once it is on disk; concurrent ones share flushes), then in
//! batches of 64 (what a mount's sender sends). Prints changes per second.
//!
//! `cargo run --release -p shelf-tests --example server_ops -- [--devices 1,8,64] [--secs 5]`
//! (run by `scripts/bench-server`; needs `cargo build --release` first for the server).

use shelf_protocol::{Request, Response};
use shelf_tests::Server;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let mut devices = vec![1usize, 8, 64];
    let mut secs = 5u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--devices" => {
                let v = args.next().unwrap_or_default();
                devices = v
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|e| anyhow::anyhow!("--devices {v}: {e}"))?;
            }
            "--secs" => secs = args.next().unwrap_or_default().parse()?,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let server = Server::start(&[("bench", "pw", "user")]);
    println!("| devices | one change per request (changes/s) | batches of 64 (changes/s) |");
    println!("|---|---|---|");
    for n in devices {
        let mut row = Vec::new();
        for batch in [1usize, 64] {
            let conns: Vec<_> = (0..n)
                .map(|i| server.connect("bench", "pw", &format!("n{n}b{batch}d{i}")))
                .collect();
            let done = AtomicU64::new(0);
            let start = Instant::now();
            let deadline = start + Duration::from_secs(secs);
            std::thread::scope(|s| {
                for (i, (remote, root)) in conns.iter().enumerate() {
                    let done = &done;
                    s.spawn(move || {
                        let files = match remote.call(Request::Lookup {
                            parent: root.node,
                            name: "files".into(),
                        }) {
                            Ok(Response::Attr(a)) => a.node,
                            other => panic!("files: {other:?}"),
                        };
                        let dir = match remote.call(Request::Mkdir {
                            parent: files,
                            name: format!("n{n}-b{batch}-d{i}"),
                            mode: 0o755,
                            id: None,
                        }) {
                            Ok(Response::Attr(a)) => a.node,
                            other => panic!("mkdir: {other:?}"),
                        };
                        let mut k = 0u64;
                        while Instant::now() < deadline {
                            let mut reqs: Vec<Request> = (0..batch)
                                .map(|j| Request::Create {
                                    parent: dir,
                                    name: format!("f{}", k + j as u64),
                                    mode: 0o644,
                                    exclusive: true,
                                    id: None,
                                })
                                .collect();
                            k += batch as u64;
                            let answer = match batch {
                                1 => remote.call(reqs.pop().expect("one")),
                                _ => remote.call(Request::Batch(
                                    reqs.into_iter()
                                        .map(|req| shelf_protocol::Stamped {
                                            at: shelf_protocol::Timestamp::now(),
                                            req,
                                        })
                                        .collect(),
                                )),
                            };
                            match answer {
                                Ok(Response::Batch(r)) if r.iter().all(|r| r.is_ok()) => {}
                                Ok(Response::Attr(_)) => {}
                                other => panic!("create: {other:?}"),
                            }
                            done.fetch_add(batch as u64, Ordering::Relaxed);
                        }
                    });
                }
            });
            let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
            row.push(format!("{rate:.0}"));
        }
        println!("| {n} | {} | {} |", row[0], row[1]);
    }
    Ok(())
}

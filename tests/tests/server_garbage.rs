//! End-to-end: no byte sequence on the wire takes the server down. More than 10,000 random,
//! mutated, truncated and oversized frames go to a running `shelf-server` (before the hello,
//! after it, and inside a logged-in session, where mutated requests reach the handler);
//! afterwards the server is still up, has logged no panic, and serves a normal client.

use shelf_protocol::{ClientFrame, Request, MAGIC, PROTOCOL_VERSION};
use shelf_tests::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn encode(f: &ClientFrame) -> Vec<u8> {
    frame(&postcard::to_stdvec(f).expect("encode"))
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Sends `bytes`, then reads whatever the server answers until it closes or goes quiet.
/// Write errors are expected (the server hangs up on a bad frame).
fn send_and_drain(mut s: Tls, bytes: &[u8]) {
    let _ = s.write_all(bytes);
    let _ = s.flush();
    let _ = s.sock.shutdown(std::net::Shutdown::Write);
    let mut buf = [0u8; 16 << 10];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// Reads one frame's body.
fn read_frame(s: &mut Tls) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

/// Says hello and logs in, waiting for both answers (requests sent before the login's
/// answer would run before it, unauthenticated).
fn log_in(s: &mut Tls, hello: &[u8], login: &[u8]) -> bool {
    let mut both = hello.to_vec();
    both.extend_from_slice(login);
    if s.write_all(&both).and_then(|_| s.flush()).is_err() {
        return false;
    }
    read_frame(s).is_some() && read_frame(s).is_some()
}

/// Valid requests to mutate: they decode, so flipped bytes land in every field.
fn seeds(root: u64) -> Vec<Vec<u8>> {
    let reqs = vec![
        Request::GetAttr { node: root },
        Request::Lookup {
            parent: root,
            name: "files".into(),
        },
        Request::ReadDir {
            dir: root,
            after: None,
            limit: 100,
        },
        Request::Mkdir {
            parent: root,
            name: "fuzz-dir".into(),
            mode: 0o755,
            id: None,
        },
        Request::Create {
            parent: root,
            name: "fuzz-file".into(),
            mode: 0o644,
            exclusive: false,
            id: None,
        },
        Request::Rename {
            parent: root,
            name: "fuzz-file".into(),
            new_parent: root,
            new_name: "fuzz-moved".into(),
            mode: shelf_protocol::RenameMode::Replace,
            expect: None,
        },
        Request::HaveChunks {
            node: root,
            ids: vec![shelf_protocol::ChunkId([7; 32]); 3],
        },
        Request::GetChunks {
            node: root,
            ids: vec![shelf_protocol::ChunkId([7; 32])],
        },
        Request::ListVersions { dir: root },
        Request::Status,
        Request::StatFs,
    ];
    reqs.into_iter()
        .enumerate()
        .map(|(i, body)| {
            postcard::to_stdvec(&ClientFrame::Request {
                id: i as u64 + 1,
                body,
            })
            .expect("encode")
        })
        .collect()
}

#[test]
fn ten_thousand_bad_frames_do_not_take_the_server_down() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let (remote, root) = server.connect("alice", "pw", "probe");
    drop(remote);
    let hello = encode(&ClientFrame::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        client: "garbage".into(),
    });
    let login = encode(&ClientFrame::Request {
        id: 1,
        body: Request::Login {
            user: "alice".into(),
            password: "pw".into(),
            device: "fuzz".into(),
        },
    });
    let seeds = Arc::new(seeds(root.node));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Two senders at once (the machine has two cores).
    let workers: Vec<_> = (0..2u64)
        .map(|w| {
            let (seeds, sent) = (seeds.clone(), sent.clone());
            let (hello, login) = (hello.clone(), login.clone());
            let server_addr = (server.addr.clone(), server.fingerprint.clone());
            std::thread::spawn(move || {
                let server = ServerRef(server_addr);
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w + 1));
                let mut frames = 0usize;
                while frames < 5_100 {
                    let Some(conn) = server.open() else {
                        continue;
                    };
                    let mut bytes = Vec::new();
                    match rng.below(6) {
                        // Random bytes instead of a hello.
                        0 => {
                            let n = rng.below(300) as usize;
                            bytes.extend(rng.bytes(n));
                            frames += 1;
                        }
                        // A frame of random bytes after the hello.
                        1 => {
                            bytes.extend(&hello);
                            let n = rng.below(2_000) as usize;
                            bytes.extend(frame(&rng.bytes(n)));
                            frames += 2;
                        }
                        // A truncated frame: the length promises more than comes.
                        2 => {
                            bytes.extend(&hello);
                            let n = 1 + rng.below(5_000) as usize;
                            let mut f = frame(&rng.bytes(n));
                            f.truncate(rng.below(f.len() as u64) as usize);
                            bytes.extend(f);
                            frames += 2;
                        }
                        // A length over the cap (or a huge one).
                        3 => {
                            bytes.extend(&hello);
                            let len = [u32::MAX, (8 << 20) + 1, 0x7fff_ffff][rng.below(3) as usize];
                            bytes.extend(len.to_be_bytes());
                            bytes.extend(rng.bytes(64));
                            frames += 2;
                        }
                        // Logged in, then mutated requests reach the handler.
                        _ => {
                            let mut conn = conn;
                            if !log_in(&mut conn, &hello, &login) {
                                continue;
                            }
                            frames += 2;
                            for _ in 0..30 {
                                let mut body =
                                    seeds[rng.below(seeds.len() as u64) as usize].clone();
                                for _ in 0..1 + rng.below(4) {
                                    let at = rng.below(body.len() as u64) as usize;
                                    body[at] = rng.next() as u8;
                                }
                                if rng.below(8) == 0 {
                                    body.truncate(rng.below(body.len() as u64) as usize);
                                }
                                bytes.extend(frame(&body));
                                frames += 1;
                            }
                            send_and_drain(conn, &bytes);
                            continue;
                        }
                    }
                    send_and_drain(conn, &bytes);
                }
                sent.fetch_add(frames, std::sync::atomic::Ordering::SeqCst);
            })
        })
        .collect();
    for w in workers {
        w.join().expect("sender");
    }
    let sent = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent >= 10_000, "{sent} frames");
    eprintln!("sent {sent} frames");

    // The mutated requests did reach the handler: some of them created entries.
    let (remote, root) = server.connect("alice", "pw", "check");
    let shelf_protocol::Response::DirPage { entries, .. } = remote
        .call(Request::ReadDir {
            dir: root.node,
            after: None,
            limit: 1000,
        })
        .expect("readdir")
    else {
        panic!("readdir answered something else");
    };
    let made: Vec<_> = entries
        .iter()
        .filter(|e| !["photos", "files", "videos", "shared"].contains(&e.name.as_str()))
        .map(|e| e.name.clone())
        .collect();
    assert!(!made.is_empty(), "no fuzzed request was carried out");
    eprintln!("entries the fuzzed requests made: {made:?}");
    drop(remote);

    // Still up, no panic logged, and a normal client is served.
    let log = server.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    let dev = Device::new();
    dev.login(&server, "alice", "pw", "laptop");
    let m = dev.mount();
    m.sh("echo after > files/after.txt");
    assert_eq!(m.sh("cat files/after.txt"), "after\n");
    m.unmount();
    assert!(!server.log().contains("panicked"));
}

/// What a sender thread needs of the server (the `Server` itself stays on the main thread,
/// which started it).
struct ServerRef((String, String));

impl ServerRef {
    fn open(&self) -> Option<Tls> {
        let verifier = shelf::remote::tls::PinnedVerifier::new(Some(self.0 .1.clone()));
        let config = shelf::remote::tls::client_config(verifier).expect("tls config");
        let name = rustls::pki_types::ServerName::try_from("shelf").expect("name");
        let conn = rustls::ClientConnection::new(config, name).expect("tls client");
        let tcp = TcpStream::connect(&self.0 .0).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        tcp.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
        Some(rustls::StreamOwned::new(conn, tcp))
    }
}

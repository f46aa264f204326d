//! The wire against a real server: hostile frames get the connection closed (never a panic
//! or a hang), a version mismatch is a clear error, and one account cannot reach another's
//! nodes or chunks — they are "not found", revealing nothing.

use shelf::remote::{tls, Endpoint, Remote, RemoteError};
use shelf_protocol::*;
use shelf_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn raw_tls(server: &Server) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(&server.addr)
        .await
        .expect("connect");
    let config = tls::client_config(tls::PinnedVerifier::new(Some(server.fingerprint.clone())))
        .expect("tls config");
    tokio_rustls::TlsConnector::from(config)
        .connect(
            rustls::pki_types::ServerName::try_from("shelf").expect("name"),
            tcp,
        )
        .await
        .expect("tls")
}

async fn hello(
    stream: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin),
    version: u32,
) -> ServerFrame {
    let body = frame::encode(&ClientFrame::Hello {
        magic: MAGIC,
        version,
        client: "test".into(),
    })
    .expect("encode");
    stream
        .write_all(&(body.len() as u32).to_be_bytes())
        .await
        .expect("write");
    stream.write_all(&body).await.expect("write");
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.expect("read");
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).await.expect("read");
    postcard::from_bytes(&buf).expect("decode")
}

/// Reads (an alert at most) until EOF: the server must close the connection.
async fn closed(stream: &mut (impl AsyncReadExt + Unpin)) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn login(server: &Server, user: &str) -> (Remote, Attr) {
    server.connect(user, "pw", "d")
}

#[test]
fn hostile_frames_close_the_connection_and_the_server_lives_on() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // Oversized length after the hello.
        let mut s = raw_tls(&server).await;
        assert!(matches!(
            hello(&mut s, PROTOCOL_VERSION).await,
            ServerFrame::Hello { .. }
        ));
        s.write_all(&(u32::MAX).to_be_bytes()).await.expect("write");
        s.flush().await.expect("flush");
        assert!(
            closed(&mut s).await,
            "oversized frame closes the connection"
        );

        // Garbage body.
        let mut s = raw_tls(&server).await;
        assert!(matches!(
            hello(&mut s, PROTOCOL_VERSION).await,
            ServerFrame::Hello { .. }
        ));
        s.write_all(&8u32.to_be_bytes()).await.expect("write");
        s.write_all(&[0xff; 8]).await.expect("write");
        s.flush().await.expect("flush");
        assert!(
            closed(&mut s).await,
            "malformed frame closes the connection"
        );

        // A request before the hello.
        let mut s = raw_tls(&server).await;
        let body = frame::encode(&ClientFrame::Request {
            id: 1,
            body: Request::StatFs,
        })
        .expect("encode");
        s.write_all(&(body.len() as u32).to_be_bytes())
            .await
            .expect("write");
        s.write_all(&body).await.expect("write");
        s.flush().await.expect("flush");
        assert!(closed(&mut s).await, "no hello, no service");

        // A different protocol version is told so, clearly.
        let mut s = raw_tls(&server).await;
        match hello(&mut s, PROTOCOL_VERSION + 1).await {
            ServerFrame::HelloRejected { message, .. } => {
                assert!(message.contains("protocol"), "{message}")
            }
            other => panic!("expected HelloRejected, got {other:?}"),
        }

        // Plain TCP without TLS: the handshake fails, the server goes on.
        let mut tcp = tokio::net::TcpStream::connect(&server.addr)
            .await
            .expect("connect");
        tcp.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .await
            .expect("write");
        assert!(closed(&mut tcp).await);
    });
    // Still serving.
    let (remote, alice_root) = login(&server, "alice");
    assert!(matches!(
        remote.call(Request::StatFs),
        Ok(Response::StatFs { .. })
    ));
    // Requests need a session.
    let anon = Remote::new(
        Endpoint {
            addr: server.addr.clone(),
            fingerprint: Some(server.fingerprint.clone()),
            ca: None,
        },
        None,
    )
    .expect("remote");
    let err = anon.call(Request::StatFs).expect_err("no session");
    assert_eq!(err.code(), Some(ErrorCode::AuthRequired));
    // The client refuses to send an oversized request, with a clear error.
    let big = remote
        .call(Request::PutChunks {
            node: alice_root.node,
            chunks: vec![ChunkBody {
                id: ChunkId([0; 32]),
                data: vec![0; MAX_FRAME + 1],
            }],
        })
        .expect_err("too large");
    assert_eq!(big.code(), Some(ErrorCode::TooLarge));
    // A chunk whose body does not match its id is refused.
    let bad = remote
        .call(Request::PutChunks {
            node: alice_root.node,
            chunks: vec![ChunkBody {
                id: ChunkId([1; 32]),
                data: b"not that".to_vec(),
            }],
        })
        .expect_err("mismatch");
    assert_eq!(bad.code(), Some(ErrorCode::Corrupt));
}

#[test]
fn one_account_cannot_reach_another_accounts_nodes_or_chunks() {
    let server = Server::start(&[
        ("alice", "pw", "user"),
        ("bob", "pw", "user"),
        ("vic", "pw", "viewer"),
    ]);
    let (alice, alice_root) = login(&server, "alice");
    let (bob, bob_root) = login(&server, "bob");
    let Ok(Response::Attr(secret)) = alice.call(Request::Create {
        parent: alice_root.node,
        name: "secret.txt".into(),
        mode: 0o600,
        exclusive: true,
        id: None,
    }) else {
        panic!("create")
    };
    let data = b"alice's secret".to_vec();
    let id = shelf::chunker::chunk_id(&data);
    alice
        .call(Request::PutChunks {
            node: secret.node,
            chunks: vec![ChunkBody {
                id,
                data: data.clone(),
            }],
        })
        .expect("put");
    alice
        .call(Request::Commit {
            node: secret.node,
            base_version: 0,
            chunks: vec![ChunkRef {
                id,
                len: data.len() as u32,
            }],
            inline: Vec::new(),
            mtime: Timestamp::now(),
            durable: false,
        })
        .expect("commit");

    // The owner gets a small file's bodies with its chunk list in one answer; over `max`,
    // the list alone.
    let small = alice
        .get_small_file(secret.node, 1 << 20)
        .expect("small file");
    assert_eq!((small.size, small.bodies.len()), (data.len() as u64, 1));
    assert_eq!(small.bodies[0].data, data);
    let over = alice.get_small_file(secret.node, 4).expect("over max");
    assert!(over.bodies.is_empty() && over.chunks.len() == 1);

    let not_found = |r: Result<Response, RemoteError>| {
        assert_eq!(
            r.expect_err("must be refused").code(),
            Some(ErrorCode::NotFound)
        )
    };
    not_found(bob.call(Request::GetAttr { node: secret.node }));
    not_found(bob.call(Request::GetManifest { node: secret.node }));
    not_found(bob.call(Request::GetSmallFile {
        node: secret.node,
        max: 1 << 20,
    }));
    not_found(bob.call(Request::GetChunks {
        node: secret.node,
        ids: vec![id],
    }));
    // Naming a file of his own does not open Alice's chunks either.
    not_found(bob.call(Request::GetChunks {
        node: bob_root.node,
        ids: vec![id],
    }));
    not_found(bob.call(Request::Lookup {
        parent: alice_root.node,
        name: "secret.txt".into(),
    }));
    not_found(bob.call(Request::ReadDir {
        dir: alice_root.node,
        after: None,
        limit: 10,
    }));
    not_found(bob.call(Request::Unlink {
        parent: alice_root.node,
        name: "secret.txt".into(),
        expect: None,
    }));
    not_found(bob.call(Request::SetAttr {
        node: secret.node,
        mode: Some(0o777),
        uid: None,
        gid: None,
        atime: None,
        mtime: None,
    }));
    // Bob cannot commit Alice's chunk into his own file either: chunks are per account.
    assert!(
        matches!(bob.call(Request::HaveChunks { node: bob_root.node, ids: vec![id] }), Ok(Response::Missing(m)) if m == vec![0])
    );

    // A viewer reads but never writes.
    let (vic, vic_root) = login(&server, "vic");
    assert!(vic
        .call(Request::ReadDir {
            dir: vic_root.node,
            after: None,
            limit: 10
        })
        .is_ok());
    let ro = vic
        .call(Request::Mkdir {
            parent: vic_root.node,
            name: "x".into(),
            mode: 0o755,
            id: None,
        })
        .expect_err("viewer write");
    assert_eq!(ro.code(), Some(ErrorCode::ReadOnly));
}

#[test]
fn names_the_store_cannot_hold_are_refused_and_nothing_is_written() {
    let server = Server::start(&[("alice", "pw", "user")]);
    let (alice, root) = login(&server, "alice");
    let listing = |remote: &Remote| match remote.call(Request::ReadDir {
        dir: root.node,
        after: None,
        limit: 100,
    }) {
        Ok(Response::DirPage { entries, .. }) => {
            entries.into_iter().map(|e| e.name).collect::<Vec<_>>()
        }
        other => panic!("readdir: {other:?}"),
    };
    let before = listing(&alice);
    let long = "x".repeat(256);
    for (name, code) in [
        ("a/b", ErrorCode::InvalidName),
        ("a\0b", ErrorCode::InvalidName),
        ("", ErrorCode::InvalidName),
        (".", ErrorCode::InvalidName),
        ("..", ErrorCode::InvalidName),
        (".versions", ErrorCode::Reserved),
        (long.as_str(), ErrorCode::NameTooLong),
    ] {
        for req in [
            Request::Create {
                parent: root.node,
                name: name.into(),
                mode: 0o644,
                exclusive: true,
                id: None,
            },
            Request::Mkdir {
                parent: root.node,
                name: name.into(),
                mode: 0o755,
                id: None,
            },
            Request::Symlink {
                parent: root.node,
                name: name.into(),
                target: "t".into(),
                id: None,
            },
            Request::Rename {
                parent: root.node,
                name: "files".into(),
                new_parent: root.node,
                new_name: name.into(),
                mode: RenameMode::Replace,
                expect: None,
            },
        ] {
            let err = alice.call(req).expect_err("bad name accepted");
            assert_eq!(err.code(), Some(code), "{name:?}");
        }
    }
    assert_eq!(listing(&alice), before, "nothing was written");
}

fn lookup_attr(r: &Remote, parent: NodeId, name: &str) -> Attr {
    match r
        .call(Request::Lookup {
            parent,
            name: name.into(),
        })
        .expect("lookup")
    {
        Response::Attr(a) => a,
        other => panic!("lookup answered {other:?}"),
    }
}

/// The feed pushes every change of the account to subscribers, in order, and a client that
/// lost its connection (here: the server restarted) resumes where it stopped.
#[test]
fn the_feed_pushes_changes_and_resumes_after_a_reconnect() {
    use std::time::Duration;
    let mut server = Server::start(&[("al", "pw", "user"), ("bo", "pw", "user")]);
    let (x, root) = server.connect("al", "pw", "x");
    let events = x.subscribe().expect("subscribe");
    let (y, _) = server.connect("al", "pw", "y");
    let files = lookup_attr(&y, root.node, "files").node;
    let create = |r: &Remote, name: &str| {
        r.call(Request::Create {
            parent: files,
            name: name.into(),
            mode: 0o644,
            exclusive: true,
            id: None,
        })
        .expect("create");
    };
    create(&y, "one");
    y.call(Request::Rename {
        parent: files,
        name: "one".into(),
        new_parent: files,
        new_name: "two".into(),
        mode: RenameMode::Replace,
        expect: None,
    })
    .expect("rename");
    let next = || {
        events
            .recv_timeout(Duration::from_secs(5))
            .expect("an event")
    };
    let c1 = next();
    assert_eq!(
        (&c1.kind, c1.name.as_str(), c1.parent, c1.device.as_str()),
        (&ChangeKind::Created, "one", files, "y")
    );
    let c2 = next();
    assert_eq!(
        c2.kind,
        ChangeKind::Moved {
            from_parent: files,
            from_name: "one".into()
        }
    );
    assert!(c2.seq > c1.seq, "in order");
    // Another account's changes never arrive here.
    let (z, zroot) = server.connect("bo", "pw", "z");
    let zfiles = lookup_attr(&z, zroot.node, "files").node;
    z.call(Request::Mkdir {
        parent: zfiles,
        name: "private".into(),
        mode: 0o755,
        id: None,
    })
    .expect("mkdir");

    // The server restarts; changes made meanwhile reach x once it reconnects.
    server.restart();
    let (y2, _) = server.connect("al", "pw", "y");
    create(&y2, "three");
    x.call(Request::GetAttr { node: root.node })
        .expect("x reconnects");
    let c3 = next();
    assert_eq!(
        (&c3.kind, c3.name.as_str()),
        (&ChangeKind::Created, "three")
    );
    assert!(c3.seq > c2.seq);
    assert!(
        events.recv_timeout(Duration::from_millis(300)).is_err(),
        "nothing else"
    );
}

/// A batch of namespace changes is one transaction: changes that build on each other in
/// the same batch (a folder and a file in it) apply together; the first refused change
/// ends the batch with everything before it committed and announced, nothing after it
/// applied or announced; a batch refused at its first change changes nothing.
#[test]
fn a_batch_applies_in_one_transaction_up_to_its_first_refusal() {
    use std::time::Duration;
    let server = Server::start(&[("al", "pw", "user")]);
    let (x, root) = server.connect("al", "pw", "x");
    let events = x.subscribe().expect("subscribe");
    let (y, _) = server.connect("al", "pw", "y");
    let files = lookup_attr(&y, root.node, "files").node;
    let shared = lookup_attr(&y, root.node, "shared").node;
    let dir = CLIENT_NODE_IDS.start + 77;
    let file = CLIENT_NODE_IDS.start + 78;
    let stamped = |reqs: Vec<Request>| {
        Request::Batch(
            reqs.into_iter()
                .map(|req| Stamped {
                    at: Timestamp::now(),
                    req,
                })
                .collect(),
        )
    };
    let create = |parent: NodeId, name: &str, id: Option<NodeId>| Request::Create {
        parent,
        name: name.into(),
        mode: 0o644,
        exclusive: true,
        id,
    };
    let answer = y
        .call(stamped(vec![
            Request::Mkdir {
                parent: files,
                name: "album".into(),
                mode: 0o755,
                id: Some(dir),
            },
            create(dir, "a.jpg", Some(file)),
            Request::SetAttr {
                node: file,
                mode: Some(0o600),
                uid: Some(1000),
                gid: None,
                atime: None,
                mtime: None,
            },
            // Numbered by the server, inside the batch's transaction.
            create(files, "numbered", None),
            create(files, "numbered too", None),
            Request::Unlink {
                parent: dir,
                name: "a.jpg".into(),
                expect: Some(Expect {
                    node: file,
                    version: Some(0),
                }),
            },
            create(dir, "a.jpg", Some(file + 1)),
            Request::Rmdir {
                parent: files,
                name: "no such folder".into(),
                expect: None,
            },
            create(files, "after the refusal", None),
        ]))
        .expect("batch");
    let Response::Batch(results) = answer else {
        panic!("batch answered {answer:?}");
    };
    assert_eq!(results.len(), 8, "{results:?}");
    assert!(results[..7].iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(
        results[7].as_ref().map_err(|e| e.code),
        Err(ErrorCode::NotFound)
    );
    let numbered = |name: &str| lookup_attr(&y, files, name).node;
    assert_ne!(numbered("numbered"), numbered("numbered too"));
    assert_eq!(lookup_attr(&y, dir, "a.jpg").node, file + 1);
    assert!(
        y.call(Request::Lookup {
            parent: files,
            name: "after the refusal".into()
        })
        .is_err(),
        "a change after the refusal was applied"
    );
    // Announced once committed, in order, and only what was committed.
    let mut seen = Vec::new();
    while let Ok(c) = events.recv_timeout(Duration::from_secs(2)) {
        seen.push((c.kind, c.name));
    }
    let names: Vec<&str> = seen.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "album",
            "a.jpg",
            "",
            "numbered",
            "numbered too",
            "a.jpg",
            "a.jpg"
        ],
        "{seen:?}"
    );
    assert_eq!(seen[2].0, ChangeKind::Attr);
    assert_eq!(seen[5].0, ChangeKind::Removed);

    // Refused at its first change (nothing may be made in `shared/`): nothing applies.
    let answer = y
        .call(stamped(vec![
            create(shared, "not here", None),
            create(files, "nor here", None),
        ]))
        .expect("batch");
    let Response::Batch(results) = answer else {
        panic!("batch answered {answer:?}");
    };
    assert_eq!(results.len(), 1);
    assert_eq!(
        results[0].as_ref().map_err(|e| e.code),
        Err(ErrorCode::ReadOnly)
    );
    assert!(y
        .call(Request::Lookup {
            parent: files,
            name: "nor here".into()
        })
        .is_err());
    assert!(
        events.recv_timeout(Duration::from_millis(300)).is_err(),
        "a refused batch was announced"
    );
}

/// A commit of `data` (one inline chunk) on `base`.
fn commit_of(node: NodeId, base_version: u64, data: &[u8]) -> Request {
    Request::Commit {
        node,
        base_version,
        chunks: vec![ChunkRef {
            id: shelf::chunker::chunk_id(data),
            len: data.len() as u32,
        }],
        inline: vec![ChunkBody {
            id: shelf::chunker::chunk_id(data),
            data: data.to_vec(),
        }],
        mtime: Timestamp::now(),
        durable: false,
    }
}

fn new_file(r: &Remote, parent: NodeId, name: &str) -> Attr {
    match r.call(Request::Create {
        parent,
        name: name.into(),
        mode: 0o644,
        exclusive: true,
        id: None,
    }) {
        Ok(Response::Attr(a)) => a,
        other => panic!("create {name}: {other:?}"),
    }
}

fn content_id(r: &Remote, node: NodeId) -> (u64, Vec<ChunkId>) {
    let m = r.get_manifest(node).expect("manifest");
    (m.version, m.chunks.iter().map(|c| c.id).collect())
}

#[test]
fn commits_ride_in_a_batch_up_to_the_first_refused() {
    let server = Server::start(&[("al", "pw", "user")]);
    let (y, root) = server.connect("al", "pw", "y");
    let files = lookup_attr(&y, root.node, "files").node;
    let [a, b, c] = ["a", "b", "c"].map(|n| new_file(&y, files, n).node);
    let batch = |reqs: Vec<Request>| {
        let stamped = reqs
            .into_iter()
            .map(|req| Stamped {
                at: Timestamp::now(),
                req,
            })
            .collect();
        match y.call(Request::Batch(stamped)).expect("batch") {
            Response::Batch(results) => results,
            other => panic!("batch answered {other:?}"),
        }
    };
    // b is not at version 5: the batch stops there, c is not reached.
    let results = batch(vec![
        commit_of(a, 0, b"first"),
        commit_of(b, 5, b"second"),
        commit_of(c, 0, b"third"),
    ]);
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(matches!(&results[0], Ok(Response::Attr(at)) if at.version == 1 && at.size == 5));
    assert_eq!(
        results[1].as_ref().map_err(|e| e.code),
        Err(ErrorCode::Conflict)
    );
    assert_eq!(
        content_id(&y, a),
        (1, vec![shelf::chunker::chunk_id(b"first")])
    );
    assert_eq!(content_id(&y, b).0, 0);
    assert_eq!(content_id(&y, c).0, 0);
    // A small file's content rides with its create: the batch makes the file, sets its
    // mode and commits its content (a second transaction, since a commit is checked against
    // its file before its transaction); a file made after the commit is another's.
    let made_here = CLIENT_NODE_IDS.start + 5;
    let create = |name: &str, id: NodeId| Request::Create {
        parent: files,
        name: name.into(),
        mode: 0o644,
        exclusive: true,
        id: Some(id),
    };
    let results = batch(vec![
        commit_of(c, 0, b"third"),
        create("d", made_here),
        Request::SetAttr {
            node: made_here,
            mode: Some(0o600),
            uid: None,
            gid: None,
            atime: None,
            mtime: None,
        },
        commit_of(made_here, 0, b"fourth"),
        commit_of(made_here + 1, 0, b"fifth"),
        create("e", made_here + 1),
    ]);
    assert_eq!(results.len(), 5, "{results:?}");
    assert!(results[..4].iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(
        results[4].as_ref().map_err(|e| e.code),
        Err(ErrorCode::NotFound)
    );
    assert_eq!(content_id(&y, c).0, 1);
    let d = lookup_attr(&y, files, "d");
    assert_eq!((d.version, d.size, d.mode & 0o777), (1, 6, 0o600));
    assert_eq!(
        content_id(&y, made_here),
        (1, vec![shelf::chunker::chunk_id(b"fourth")])
    );
    assert!(
        y.call(Request::Lookup {
            parent: files,
            name: "e".into()
        })
        .is_err(),
        "the batch went on after a refused commit"
    );
    let Request::Commit {
        node,
        base_version,
        chunks,
        mut inline,
        mtime,
        durable,
    } = commit_of(b, 0, b"tampered")
    else {
        unreachable!()
    };
    inline[0].data = b"not that".to_vec();
    let results = batch(vec![
        commit_of(made_here, 1, b"fourth, again"),
        Request::Commit {
            node,
            base_version,
            chunks,
            inline,
            mtime,
            durable,
        },
    ]);
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results[0].is_ok());
    assert_eq!(
        results[1].as_ref().map_err(|e| e.code),
        Err(ErrorCode::Corrupt)
    );
    assert_eq!(content_id(&y, b).0, 0);
}

#[test]
fn concurrent_commits_go_together_and_a_conflicting_one_is_still_resolved() {
    let server = Server::start(&[("al", "pw", "user")]);
    let (x, root) = server.connect("al", "pw", "x");
    let (y, _) = server.connect("al", "pw", "y");
    let files = lookup_attr(&y, root.node, "files").node;
    let nodes: Vec<NodeId> = (0..32)
        .map(|i| new_file(&y, files, &format!("f{i}")).node)
        .collect();
    // Another device changed f7 first: y's commit on version 0 conflicts.
    match x.commit(commit_of(nodes[7], 0, b"x was first")) {
        Ok(shelf::remote::calls::Committed::Made(a)) => assert_eq!(a.version, 1),
        Ok(_) => panic!("x's commit was kept elsewhere"),
        Err(e) => panic!("x's commit: {e}"),
    }
    let y = std::sync::Arc::new(y);
    let threads: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, &node)| {
            let y = y.clone();
            std::thread::spawn(move || {
                let data = format!("content of f{i}").into_bytes();
                (i, y.commit(commit_of(node, 0, &data)))
            })
        })
        .collect();
    for t in threads {
        let (i, result) = t.join().expect("thread");
        match (i, result) {
            (7, Ok(shelf::remote::calls::Committed::KeptElsewhere { name, .. })) => {
                // Nothing lost: y's content is beside x's.
                let copy = lookup_attr(&y, files, &name).node;
                assert_eq!(
                    content_id(&y, copy).1,
                    vec![shelf::chunker::chunk_id(b"content of f7")]
                );
            }
            (7, other) => panic!("f7: {:?}", other.map(|_| ())),
            (i, Ok(shelf::remote::calls::Committed::Made(a))) => {
                assert_eq!(a.version, 1, "f{i}");
                assert_eq!(
                    content_id(&y, nodes[i]).1,
                    vec![shelf::chunker::chunk_id(
                        format!("content of f{i}").as_bytes()
                    )]
                );
            }
            (i, other) => panic!("f{i}: {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(
        content_id(&y, nodes[7]).1,
        vec![shelf::chunker::chunk_id(b"x was first")]
    );
}

//! Property tests: every message variant survives encode → frame → decode unchanged, and no
//! byte string makes the decoder panic.

use proptest::prelude::*;
use shelf_protocol::*;

fn ts() -> impl Strategy<Value = Timestamp> {
    (any::<i64>(), 0u32..1_000_000_000).prop_map(|(secs, nanos)| Timestamp { secs, nanos })
}

fn chunk_id() -> impl Strategy<Value = ChunkId> {
    any::<[u8; 32]>().prop_map(ChunkId)
}

fn name() -> impl Strategy<Value = String> {
    "[^/\u{0}]{1,40}"
}

fn kind() -> impl Strategy<Value = NodeKind> {
    prop_oneof![
        Just(NodeKind::File),
        Just(NodeKind::Dir),
        Just(NodeKind::Symlink),
        Just(NodeKind::Fifo),
        Just(NodeKind::Socket),
        Just(NodeKind::CharDevice),
        Just(NodeKind::BlockDevice),
    ]
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Admin), Just(Role::User), Just(Role::Viewer)]
}

fn attr() -> impl Strategy<Value = Attr> {
    (
        any::<u64>(),
        kind(),
        any::<u32>(),
        any::<u64>(),
        ts(),
        ts(),
        ts(),
        (any::<u32>(), any::<u64>()),
        (
            any::<u32>(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
        ),
    )
        .prop_map(
            |(node, kind, mode, size, mtime, ctime, atime, (nlink, version), (rdev, uid, gid))| {
                Attr {
                    node,
                    kind,
                    mode,
                    size,
                    mtime,
                    ctime,
                    atime,
                    nlink,
                    version,
                    rdev,
                    uid,
                    gid,
                    read_only: nlink % 2 == 0,
                }
            },
        )
}

fn expect() -> impl Strategy<Value = Option<Expect>> {
    proptest::option::of(
        (any::<u64>(), any::<Option<u64>>()).prop_map(|(node, version)| Expect { node, version }),
    )
}

fn chunk_bodies() -> impl Strategy<Value = Vec<ChunkBody>> {
    prop::collection::vec(
        (chunk_id(), prop::collection::vec(any::<u8>(), 0..256))
            .prop_map(|(id, data)| ChunkBody { id, data }),
        0..4,
    )
}

fn chunk_refs() -> impl Strategy<Value = Vec<ChunkRef>> {
    prop::collection::vec(
        (chunk_id(), any::<u32>()).prop_map(|(id, len)| ChunkRef { id, len }),
        0..20,
    )
}

fn request() -> impl Strategy<Value = Request> {
    let rename_mode = prop_oneof![
        Just(RenameMode::Replace),
        Just(RenameMode::NoReplace),
        Just(RenameMode::Exchange)
    ];
    let xattr_mode = prop_oneof![
        Just(XattrMode::Set),
        Just(XattrMode::Create),
        Just(XattrMode::Replace)
    ];
    prop_oneof![
        (name(), name(), name()).prop_map(|(user, password, device)| Request::Login {
            user,
            password,
            device
        }),
        name().prop_map(|token| Request::Resume { token }),
        Just(Request::Logout),
        (any::<u64>(), name()).prop_map(|(parent, name)| Request::Lookup { parent, name }),
        any::<u64>().prop_map(|node| Request::GetAttr { node }),
        (
            any::<u64>(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(ts()),
            proptest::option::of(ts())
        )
            .prop_map(|(node, mode, uid, gid, atime, mtime)| Request::SetAttr {
                node,
                mode,
                uid,
                gid,
                atime,
                mtime
            }),
        (any::<u64>(), proptest::option::of(name()), any::<u32>())
            .prop_map(|(dir, after, limit)| Request::ReadDir { dir, after, limit }),
        (any::<u64>(), name(), any::<u32>(), any::<Option<u64>>()).prop_map(
            |(parent, name, mode, id)| Request::Mkdir {
                parent,
                name,
                mode,
                id
            }
        ),
        (
            any::<u64>(),
            name(),
            any::<u32>(),
            any::<bool>(),
            any::<Option<u64>>()
        )
            .prop_map(|(parent, name, mode, exclusive, id)| Request::Create {
                parent,
                name,
                mode,
                exclusive,
                id
            }),
        (any::<u64>(), name(), name(), any::<Option<u64>>()).prop_map(
            |(parent, name, target, id)| Request::Symlink {
                parent,
                name,
                target,
                id
            }
        ),
        any::<u64>().prop_map(|node| Request::ReadLink { node }),
        (any::<u64>(), name(), expect()).prop_map(|(parent, name, expect)| Request::Unlink {
            parent,
            name,
            expect
        }),
        (any::<u64>(), name(), expect()).prop_map(|(parent, name, expect)| Request::Rmdir {
            parent,
            name,
            expect
        }),
        (
            any::<u64>(),
            name(),
            any::<u64>(),
            name(),
            rename_mode,
            any::<Option<u64>>()
        )
            .prop_map(|(parent, name, new_parent, new_name, mode, expect)| {
                Request::Rename {
                    parent,
                    name,
                    new_parent,
                    new_name,
                    mode,
                    expect,
                }
            }),
        (
            any::<u64>(),
            name(),
            prop::collection::vec(any::<u8>(), 0..64),
            xattr_mode
        )
            .prop_map(|(node, name, value, mode)| Request::SetXattr {
                node,
                name,
                value,
                mode
            }),
        (any::<u64>(), name()).prop_map(|(node, name)| Request::GetXattr { node, name }),
        any::<u64>().prop_map(|node| Request::ListXattr { node }),
        (any::<u64>(), name()).prop_map(|(node, name)| Request::RemoveXattr { node, name }),
        Just(Request::StatFs),
        (any::<u64>(), prop::collection::vec(chunk_id(), 0..10))
            .prop_map(|(node, ids)| Request::HaveChunks { node, ids }),
        (any::<u64>(), chunk_bodies())
            .prop_map(|(node, chunks)| Request::PutChunks { node, chunks }),
        (any::<u64>(), prop::collection::vec(chunk_id(), 0..5))
            .prop_map(|(node, ids)| Request::GetChunks { node, ids }),
        any::<u64>().prop_map(|node| Request::GetManifest { node }),
        (
            any::<u64>(),
            any::<u64>(),
            chunk_refs(),
            chunk_bodies(),
            ts(),
            any::<bool>()
        )
            .prop_map(|(node, base_version, chunks, inline, mtime, durable)| {
                Request::Commit {
                    node,
                    base_version,
                    chunks,
                    inline,
                    mtime,
                    durable,
                }
            }),
        Just(Request::Status),
        (
            any::<u64>(),
            name(),
            kind(),
            any::<u32>(),
            any::<u32>(),
            any::<Option<u64>>()
        )
            .prop_map(|(parent, name, kind, mode, rdev, id)| Request::Mknod {
                parent,
                name,
                kind,
                mode,
                rdev,
                id
            }),
        any::<u64>().prop_map(|dir| Request::ListVersions { dir }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(node, version)| Request::GetVersion { node, version }),
        (any::<u64>(), name(), any::<u64>()).prop_map(|(dir, name, number)| Request::Restore {
            dir,
            name,
            number
        }),
        proptest::option::of(any::<u64>()).prop_map(|after| Request::Subscribe { after }),
        (any::<[u64; 4]>(), lock_kind()).prop_map(|(n, kind)| Request::Lock {
            node: n[0],
            owner: n[1],
            kind,
            start: n[2],
            end: n[3],
        }),
        (any::<[u64; 4]>(), lock_kind()).prop_map(|(n, kind)| Request::TestLock {
            node: n[0],
            owner: n[1],
            kind,
            start: n[2],
            end: n[3],
        }),
        Just(Request::RenewLocks),
    ]
}

fn lock_kind() -> impl Strategy<Value = LockKind> {
    prop_oneof![
        Just(LockKind::Read),
        Just(LockKind::Write),
        Just(LockKind::Unlock)
    ]
}

fn change() -> impl Strategy<Value = Change> {
    let kind = prop_oneof![
        Just(ChangeKind::Created),
        Just(ChangeKind::Content),
        Just(ChangeKind::Attr),
        Just(ChangeKind::Removed),
        (any::<u64>(), name()).prop_map(|(from_parent, from_name)| ChangeKind::Moved {
            from_parent,
            from_name
        }),
        Just(ChangeKind::Resync),
        Just(ChangeKind::Conflicted),
    ];
    (any::<[u64; 3]>(), kind, name(), name(), name(), ts()).prop_map(
        |(n, kind, name, device, path, at)| Change {
            seq: n[0],
            kind,
            node: n[1],
            parent: n[2],
            name,
            device,
            path,
            at,
        },
    )
}

fn version_info() -> impl Strategy<Value = VersionInfo> {
    (name(), any::<[u64; 4]>(), ts(), ts(), name(), any::<bool>()).prop_map(
        |(name, n, mtime, created, device, deleted)| VersionInfo {
            name,
            number: n[0],
            node: n[1],
            version: n[2],
            size: n[3],
            mtime,
            created,
            device,
            deleted,
        },
    )
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::NotFound),
        Just(ErrorCode::Exists),
        Just(ErrorCode::NotEmpty),
        Just(ErrorCode::NotDir),
        Just(ErrorCode::IsDir),
        Just(ErrorCode::PermissionDenied),
        Just(ErrorCode::ReadOnly),
        Just(ErrorCode::QuotaExceeded),
        Just(ErrorCode::NoSpace),
        Just(ErrorCode::InvalidName),
        Just(ErrorCode::NameTooLong),
        Just(ErrorCode::Reserved),
        Just(ErrorCode::InvalidArgument),
        Just(ErrorCode::AuthFailed),
        Just(ErrorCode::AuthRequired),
        Just(ErrorCode::SessionExpired),
        Just(ErrorCode::Locked),
        Just(ErrorCode::VersionMismatch),
        Just(ErrorCode::TooLarge),
        Just(ErrorCode::Conflict),
        Just(ErrorCode::NoAttribute),
        Just(ErrorCode::Unsupported),
        Just(ErrorCode::Busy),
        Just(ErrorCode::Corrupt),
        Just(ErrorCode::MissingChunk),
        Just(ErrorCode::WouldBlock),
        Just(ErrorCode::Internal),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        Just(Response::Ok),
        (name(), name(), role(), attr()).prop_map(|(token, user, role, root)| {
            Response::Session {
                token,
                user,
                role,
                root,
            }
        }),
        attr().prop_map(Response::Attr),
        (
            prop::collection::vec(
                (name(), attr()).prop_map(|(name, attr)| DirEntry { name, attr }),
                0..5
            ),
            any::<bool>()
        )
            .prop_map(|(entries, more)| Response::DirPage { entries, more }),
        name().prop_map(Response::Target),
        prop::collection::vec(any::<u8>(), 0..128).prop_map(Response::Bytes),
        prop::collection::vec(name(), 0..5).prop_map(Response::Names),
        prop::collection::vec(any::<u32>(), 0..5).prop_map(Response::Missing),
        (any::<u64>(), any::<u64>(), chunk_refs()).prop_map(|(version, size, chunks)| {
            Response::Manifest {
                version,
                size,
                chunks,
            }
        }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(used_bytes, free_bytes, files)| {
            Response::StatFs {
                used_bytes,
                free_bytes,
                files,
            }
        }),
        (name(), name(), role(), any::<[u64; 6]>()).prop_map(|(server_version, user, role, n)| {
            Response::Status(ServerStatus {
                server_version,
                user,
                role,
                files: n[0],
                dirs: n[1],
                logical_bytes: n[2],
                stored_bytes: n[3],
                old_versions: n[4],
                history_bytes: n[5],
                quota: (n[0] % 2 == 0).then_some(n[1]),
                alerts: Vec::new(),
            })
        }),
        proptest::option::of(any::<u64>()).prop_map(Response::Removed),
        chunk_bodies().prop_map(Response::Chunks),
        prop::collection::vec(version_info(), 0..4).prop_map(Response::Versions),
        (any::<bool>(), any::<u64>())
            .prop_map(|(trimmed, head)| Response::Subscribed { trimmed, head }),
        (attr(), name()).prop_map(|(attr, name)| Response::KeptElsewhere { attr, name }),
        proptest::option::of((lock_kind(), any::<u64>(), any::<u64>()))
            .prop_map(Response::LockHolder),
    ]
}

fn round_trip<T>(value: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        w.send(value).await.expect("send");
        r.read::<T>().await.expect("read").expect("a frame")
    })
}

proptest! {
    #[test]
    fn requests_round_trip(id in any::<u64>(), body in request()) {
        let f = ClientFrame::Request { id, body };
        prop_assert_eq!(round_trip(&f), f);
    }

    #[test]
    fn responses_round_trip(id in any::<u64>(), resp in response()) {
        let f = ServerFrame::Response { id, result: Ok(resp) };
        prop_assert_eq!(round_trip(&f), f);
    }

    #[test]
    fn errors_round_trip(id in any::<u64>(), code in error_code(), message in ".{0,40}") {
        let f = ServerFrame::Response { id, result: Err(WireError::new(code, message)) };
        prop_assert_eq!(round_trip(&f), f);
    }

    #[test]
    fn hellos_round_trip(version in any::<u32>(), s in ".{0,20}") {
        let c = ClientFrame::Hello { magic: MAGIC, version, client: s.clone() };
        prop_assert_eq!(round_trip(&c), c);
        let h = ServerFrame::Hello { version, server: s.clone() };
        prop_assert_eq!(round_trip(&h), h);
        let r = ServerFrame::HelloRejected { version, message: s };
        prop_assert_eq!(round_trip(&r), r);
    }

    #[test]
    fn events_round_trip(change in change()) {
        let f = ServerFrame::Event(change);
        prop_assert_eq!(round_trip(&f), f);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = postcard::from_bytes::<ClientFrame>(&bytes);
        let _ = postcard::from_bytes::<ServerFrame>(&bytes);
    }

    #[test]
    fn timestamps_convert(secs in -4_000_000_000i64..4_000_000_000, nanos in 0u32..1_000_000_000) {
        let t = Timestamp { secs, nanos };
        prop_assert_eq!(Timestamp::from_system(t.to_system()), t);
    }
}

#[test]
fn hello_is_variant_zero_forever() {
    // Older and newer peers must be able to read the hello; postcard encodes the variant index
    // first, so Hello must stay variant 0 of both frame enums.
    let c = postcard::to_stdvec(&ClientFrame::Hello {
        magic: MAGIC,
        version: 1,
        client: String::new(),
    })
    .expect("encode");
    assert_eq!(c[0], 0);
    let s = postcard::to_stdvec(&ServerFrame::Hello {
        version: 1,
        server: String::new(),
    })
    .expect("encode");
    assert_eq!(s[0], 0);
}

//! Two servers of one store, as two `Store`s in this process over one real PostgreSQL 15
//! (started by the test): what one writes, the other's subscribers get, once each and in
//! order; grants one makes, the other's authorisation sees; a job one runs, the other is
//! refused. (The same with real processes and mounts behind HAProxy: `e2e_cluster`.)

use shelf_protocol::{Change, ChangeKind, NodeKind, Role};
use shelf_server::chunkstore::PackStore;
use shelf_server::crypto::MasterKey;
use shelf_server::kv::pg::{PgConfig, PgKv};
use shelf_server::kv::Db;
use shelf_server::store::namespace::NewNode;
use shelf_server::store::{Ctx, Store};
use shelf_server::StoreError;
use shelf_tests::postgres::Postgres;
use shelf_tests::wait_until;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A server's store over the test's database (same master key for both, as `init --join`
/// gives), hearing the other servers.
fn server(pg: &Postgres, dir: &std::path::Path, name: &str) -> Arc<Store> {
    let db = Db::Pg(PgKv::connect(&PgConfig { url: pg.url() }).expect("connect"));
    let chunks = Arc::new(PackStore::open(dir.join(name), &db).expect("packs"));
    let store = Arc::new(
        Store::with_parts(db, chunks, vec![MasterKey::from_bytes(&[7u8; 32])]).expect("store"),
    );
    store.hear_other_servers().expect("listener");
    store
}

fn folder(name: &str) -> NewNode<'static> {
    let _ = name;
    NewNode {
        kind: NodeKind::Dir,
        mode: 0o755,
        target: None,
        exclusive: true,
        rdev: 0,
        id: None,
    }
}

/// Receives what arrives within `within`.
fn drain(
    rx: &mut tokio::sync::broadcast::Receiver<Change>,
    want: usize,
    within: Duration,
) -> Vec<Change> {
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < want && start.elapsed() < within {
        match rx.try_recv() {
            Ok(c) => got.push(c),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    while let Ok(c) = rx.try_recv() {
        got.push(c);
    }
    got
}

#[test]
fn changes_made_on_either_server_reach_subscribers_on_both_once_and_in_order() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (server(&pg, dir.path(), "a"), server(&pg, dir.path(), "b"));
    a.add_user("ann", "pw", Role::User).expect("user");
    let (_, on_a) = a.login("ann", "pw", "laptop").expect("login on a");
    let (_, on_b) = b.login("ann", "pw", "desktop").expect("login on b");
    let files = a.lookup(&on_a, on_a.root, "files").expect("files").node;
    let (mut live_a, mut live_b) = (a.subscribe(on_a.account), b.subscribe(on_b.account));
    let (_, _, start) = b.changes_since(on_b.account, None).expect("head");

    // 100 folders made on each server at once.
    let make = |store: Arc<Store>, ctx: Ctx, tag: &'static str| {
        std::thread::spawn(move || {
            for i in 0..100 {
                store
                    .create_node(&ctx, files, &format!("{tag}{i}"), folder(tag))
                    .expect("mkdir");
            }
        })
    };
    let made = Instant::now();
    let (ta, tb) = (
        make(a.clone(), on_a.clone(), "a"),
        make(b.clone(), on_b.clone(), "b"),
    );
    ta.join().expect("a");
    tb.join().expect("b");
    let wrote = made.elapsed();
    for (name, live) in [("a", &mut live_a), ("b", &mut live_b)] {
        let got = drain(live, 200, Duration::from_secs(1));
        let seqs: Vec<u64> = got.iter().map(|c| c.seq).collect();
        let want: Vec<u64> = (start + 1..=start + 200).collect();
        assert_eq!(
            seqs, want,
            "server {name}'s subscriber gets every position once, in order, within a second \
             of the last write ({wrote:?} of writing)"
        );
        let mut names: Vec<&str> = got
            .iter()
            .filter(|c| c.kind == ChangeKind::Created)
            .map(|c| c.name.as_str())
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 200, "every folder, from both servers");
    }
    // The feed read back from either server is the same.
    let (from_a, _, head_a) = a.changes_since(on_a.account, Some(start)).expect("feed a");
    let (from_b, _, head_b) = b.changes_since(on_b.account, Some(start)).expect("feed b");
    assert_eq!(head_a, start + 200);
    assert_eq!(head_a, head_b);
    assert_eq!(from_a, from_b);
    // A rename on one server shows in the paths the other one writes (its cache of
    // places was dropped when it heard of the move).
    let a0 = a.lookup(&on_a, files, "a0").expect("a0").node;
    b.create_node(&on_b, a0, "inside", folder("x"))
        .expect("mkdir in a0 on b");
    a.rename(
        &on_a,
        (files, "a0"),
        (files, "renamed"),
        shelf_protocol::RenameMode::Replace,
        None,
    )
    .expect("rename on a");
    assert!(wait_until(Duration::from_secs(2), || {
        b.changes_since(on_b.account, Some(start + 200))
            .is_ok_and(|(c, _, _)| c.iter().any(|c| c.path == "files/renamed"))
    }));
    std::thread::sleep(Duration::from_millis(300));
    b.create_node(&on_b, a0, "later", folder("x"))
        .expect("mkdir in the renamed folder on b");
    let (recent, _, _) = a
        .changes_since(on_a.account, Some(start + 200))
        .expect("feed");
    assert_eq!(
        recent.last().map(|c| c.path.as_str()),
        Some("files/renamed/later"),
        "paths written on b follow the rename made on a"
    );
}

#[test]
fn a_share_made_on_one_server_opens_on_the_other_and_jobs_run_on_one_at_a_time() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (server(&pg, dir.path(), "a"), server(&pg, dir.path(), "b"));
    a.add_user("ann", "pw", Role::User).expect("ann");
    a.add_user("bob", "pw", Role::User).expect("bob");
    let (_, ann) = a.login("ann", "pw", "laptop").expect("ann on a");
    let (_, bob) = b.login("bob", "pw", "phone").expect("bob on b");
    let files = a.lookup(&ann, ann.root, "files").expect("files").node;
    let plans = a
        .create_node(&ann, files, "plans", folder("plans"))
        .expect("mkdir")
        .node;
    assert!(b.getattr(&bob, plans).is_err(), "not shared yet");
    a.share(&ann, plans, "bob", false).expect("share");
    assert!(
        wait_until(Duration::from_secs(1), || b.getattr(&bob, plans).is_ok()),
        "bob, on the other server, opens the share within a second"
    );
    a.unshare(&ann, plans, Some("bob")).expect("unshare");
    assert!(
        wait_until(Duration::from_secs(1), || b.getattr(&bob, plans).is_err()),
        "and is shut out again within a second once it is withdrawn"
    );

    // Prune runs on one server at a time.
    let held = a.job_lock("prune").expect("a takes the prune lock");
    match b.prune(b.now()) {
        Err(e @ StoreError::JobElsewhere(_)) => {
            assert!(e.to_string().contains("another server"), "{e}")
        }
        other => panic!("b pruned while a held the lock: {other:?}"),
    }
    drop(held);
    b.prune(b.now()).expect("b prunes once a is done");
}

/// A garbage collection on one server waits for a commit under way on the other (which
/// has checked its chunks and is about to name them), and that server's next commit waits
/// for the collection.
#[test]
fn garbage_collection_waits_for_commits_on_every_server() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (server(&pg, dir.path(), "a"), server(&pg, dir.path(), "b"));
    a.add_user("ann", "pw", Role::User).expect("ann");
    let in_use = b.chunks_in_use().expect("b commits");
    let started = Instant::now();
    let collector = {
        let a = a.clone();
        std::thread::spawn(move || {
            a.collect_garbage().expect("collect");
            Instant::now()
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !collector.is_finished(),
        "the collection waits while a commit is under way on the other server"
    );
    let released = Instant::now();
    drop(in_use);
    let done = collector.join().expect("collector");
    assert!(done >= released, "it ran only after the commit ended");
    assert!(done - started < Duration::from_secs(30));
    // Both servers commit again afterwards.
    assert!(wait_until(Duration::from_secs(5), || {
        b.gc_lock.try_read().is_ok() && a.gc_lock.try_read().is_ok()
    }));
}

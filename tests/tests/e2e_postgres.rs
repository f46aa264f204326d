//! End-to-end: a store's metadata on a real PostgreSQL 15 (started by the test in a temp
//! folder on a loopback port) behind a real `shelf-server`, with real mounts, and
//! `shelf-server migrate` moving a store from sled to PostgreSQL and back.

use shelf_tests::postgres::Postgres;
use shelf_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// A tree of 300 small files in 30 folders and one 3 MiB file, made under `root`.
fn make_tree(m: &Mount, root: &str) {
    m.sh(&format!(
        "mkdir -p {root} && cd {root} && for d in $(seq 1 30); do mkdir d$d; \
         for f in $(seq 1 10); do echo \"file $d/$f\" > d$d/f$f.txt; done; done \
         && head -c 3145728 /dev/urandom > big.bin"
    ));
}

fn out_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Two devices on a store whose metadata is in PostgreSQL: creates, renames, deletes,
/// overwrites (with their `.versions/`) reach the other device byte for byte, also after
/// the server was killed (SIGKILL); the data folder holds no sled database.
#[test]
fn a_store_on_postgresql_serves_two_devices_and_survives_a_killed_server() {
    let pg = Postgres::start();
    let env = pg.env();
    let env = env_refs(&env);
    let mut server = Server::start_with_env(&[("ann", "pw", "user")], &env);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "ann", "pw", "laptop");
    b.login(&server, "ann", "pw", "desktop");
    let ma = a.mount();
    make_tree(&ma, "files/work/src");
    ma.sh(
        "cd files/work/src && mv d1 d1-renamed && rm -r d2 && echo more >> d3/f1.txt \
         && echo again >> d3/f1.txt && ln -s d3/f1.txt link",
    );
    let want = tree_digest(&ma.path.join("files/work"));
    ma.unmount();

    let mb = b.mount();
    let there = mb.path.join("files/work");
    assert!(
        wait_until(Duration::from_secs(20), || tree_digest(&there) == want),
        "the other device sees the same tree"
    );
    mb.unmount();
    server.kill();
    server.start_again();
    let mb = b.mount();
    assert_eq!(
        tree_digest(&mb.path.join("files/work")),
        want,
        "the same after a killed server"
    );
    let versions = mb.sh("ls files/work/src/d3/.versions/");
    assert!(
        versions.contains("f1.txt.v01") && versions.contains("f1.txt.v02"),
        "versions of the overwritten file: {versions}"
    );
    mb.unmount();

    assert!(
        !server.data.join("db").exists(),
        "no sled database in the data folder"
    );
    let nodes: u64 = pg
        .psql("SELECT count(*) FROM kv_nodes")
        .parse()
        .expect("a count");
    assert!(nodes > 300, "the nodes are rows in PostgreSQL: {nodes}");
}

/// `shelf-server migrate` copies a store to PostgreSQL (refused while the server runs,
/// with a plain error for a database it cannot reach), the server then serves it from
/// there, and a second migrate copies it back to sled with the changes made meanwhile.
#[test]
fn migrate_moves_a_store_to_postgresql_and_back() {
    let pg = Postgres::start();
    let mut server = Server::start(&[("ann", "pw", "user")]);
    let (a, b) = (Device::new(), Device::new());
    a.login(&server, "ann", "pw", "laptop");
    b.login(&server, "ann", "pw", "desktop");
    let ma = a.mount();
    make_tree(&ma, "files/work/src");
    ma.sh("echo v2 >> files/work/src/d4/f4.txt");
    let before = tree_digest(&ma.path.join("files/work"));
    ma.unmount();

    let url = pg.url();
    let busy = server.admin(&["migrate", "--to", "postgres", "--url", &url]);
    assert!(!busy.status.success());
    assert!(
        out_text(&busy).contains("a server is running"),
        "{}",
        out_text(&busy)
    );
    server.stop();
    let dead = server.admin(&[
        "migrate",
        "--to",
        "postgres",
        "--url",
        "host=127.0.0.1 port=1 user=shelf dbname=shelf connect_timeout=5",
    ]);
    assert!(!dead.status.success());
    assert!(
        out_text(&dead).contains("cannot connect to PostgreSQL"),
        "{}",
        out_text(&dead)
    );

    let moved = server.admin(&["migrate", "--to", "postgres", "--url", &url]);
    let text = out_text(&moved);
    assert!(moved.status.success(), "{text}");
    assert!(
        text.contains("both databases hold the same records"),
        "{text}"
    );
    let config = server.data.join("postgres.json");
    let mode = std::fs::metadata(&config)
        .expect("postgres.json")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the connection string is private");
    assert!(server.data.join("db.migrated").exists() && !server.data.join("db").exists());
    let again = server.admin(&["migrate", "--to", "postgres", "--url", &url]);
    assert!(!again.status.success(), "a second copy is refused");

    // Served from PostgreSQL: the same tree, and changes go there.
    server.start_again();
    let mb = b.mount();
    let there = mb.path.join("files/work");
    assert!(
        wait_until(Duration::from_secs(20), || tree_digest(&there) == before),
        "the copy serves the same tree"
    );
    assert!(mb
        .sh("ls files/work/src/d4/.versions/")
        .contains("f4.txt.v01"));
    mb.sh("echo new > files/work/new.txt && echo v3 >> files/work/src/d4/f4.txt && rm -r files/work/src/d5");
    let after = tree_digest(&there);
    mb.unmount();
    server.stop();
    let nodes: u64 = pg
        .psql("SELECT count(*) FROM kv_nodes")
        .parse()
        .expect("a count");
    assert!(nodes > 300, "{nodes} nodes in PostgreSQL");

    let back = server.admin(&["migrate", "--to", "sled"]);
    let text = out_text(&back);
    assert!(back.status.success(), "{text}");
    assert!(
        text.contains("both databases hold the same records"),
        "{text}"
    );
    assert!(!config.exists() && server.data.join("postgres.json.migrated").exists());
    server.start_again();
    let ma = a.mount();
    let here = ma.path.join("files/work");
    assert!(
        wait_until(Duration::from_secs(20), || tree_digest(&here) == after),
        "back on sled with the changes made on PostgreSQL"
    );
    assert!(ma
        .sh("ls files/work/src/d4/.versions/")
        .contains("f4.txt.v02"));
    ma.unmount();
}

//! The store's key-value interface behaves the same on both engines: sled (embedded) and a
//! real PostgreSQL 15 server the test starts. Every check runs on each.

use shelf_server::kv::{self, Batch, ConflictableTransactionError, Db, TransactionError};
use shelf_tests::postgres::Postgres;

fn on_both(check: impl Fn(&Db)) {
    check(&Db::temporary().expect("sled"));
    let pg = Postgres::start();
    let db = Db::Pg(kv::pg::PgKv::connect(&kv::pg::PgConfig { url: pg.url() }).expect("connect"));
    check(&db);
}

fn keys(it: impl Iterator<Item = kv::Result<(kv::IVec, kv::IVec)>>) -> Vec<Vec<u8>> {
    it.map(|r| r.expect("row").0.to_vec()).collect()
}

#[test]
fn single_keys_read_back_what_was_written_and_return_the_old_value() {
    on_both(|db| {
        let t = db.open_tree("things").expect("tree");
        assert_eq!(t.get(b"a").expect("get"), None);
        assert_eq!(t.insert(b"a", &b"one"[..]).expect("insert"), None);
        assert_eq!(
            t.insert(b"a", &b"two"[..]).expect("insert").as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(t.get(b"a").expect("get").as_deref(), Some(&b"two"[..]));
        assert!(t.contains_key(b"a").expect("contains"));
        assert_eq!(
            t.remove(b"a").expect("remove").as_deref(),
            Some(&b"two"[..])
        );
        assert_eq!(t.remove(b"a").expect("remove"), None);
        // Empty values and binary keys are values like any other.
        t.insert([0u8, 0xff, 0], &b""[..]).expect("insert");
        assert_eq!(
            t.get([0u8, 0xff, 0]).expect("get").as_deref(),
            Some(&b""[..])
        );
        // Another tree of the same database is another key space.
        let other = db.open_tree("others").expect("tree");
        assert_eq!(other.get([0u8, 0xff, 0]).expect("get"), None);
    });
}

#[test]
fn scans_are_in_bytewise_key_order_from_either_end_across_many_pages() {
    on_both(|db| {
        let t = db.open_tree("scan").expect("tree");
        let mut batch = Batch::default();
        // 10,000 keys under prefix 7 (more than the largest page), some around it.
        for i in 0u32..10_000 {
            let mut k = vec![7u8];
            k.extend_from_slice(&i.to_be_bytes());
            batch.insert(k, i.to_le_bytes().to_vec());
        }
        for k in [
            vec![6u8, 0xff, 0xff],
            vec![8u8],
            vec![7u8],
            vec![0xffu8, 0xff],
        ] {
            batch.insert(k, b"x".to_vec());
        }
        t.apply_batch(batch).expect("batch");
        let under: Vec<Vec<u8>> = keys(t.scan_prefix([7u8]));
        assert_eq!(under.len(), 10_001, "the prefix itself and its 10,000 keys");
        assert!(under.windows(2).all(|w| w[0] < w[1]), "ascending bytewise");
        let back: Vec<Vec<u8>> = keys(t.scan_prefix([7u8])).into_iter().rev().collect();
        assert_eq!(
            keys(t.scan_prefix([7u8]).rev()),
            back,
            "the same, from the end"
        );
        assert_eq!(keys(t.scan_prefix([0xffu8])), vec![vec![0xffu8, 0xff]]);
        // Ranges: inclusive and exclusive ends.
        let lo = [7u8, 0, 0, 0, 10];
        let hi = [7u8, 0, 0, 0, 20];
        assert_eq!(keys(t.range(lo..hi)).len(), 10);
        assert_eq!(keys(t.range(lo..=hi)).len(), 11);
        assert_eq!(keys(t.range(lo..=hi).rev())[0], hi.to_vec());
        // Both ends of one scan meet in the middle without repeating a key.
        let mut it = t.range(lo..=hi);
        let mut seen = Vec::new();
        loop {
            match (it.next(), it.next_back()) {
                (None, None) => break,
                (a, b) => seen.extend(a.into_iter().chain(b).map(|r| r.expect("row").0.to_vec())),
            }
        }
        seen.sort();
        assert_eq!(seen, keys(t.range(lo..=hi)));
        assert_eq!(t.len(), 10_004);
        assert!(!t.is_empty());
        assert!(db.open_tree("empty").expect("tree").is_empty());
    });
}

#[test]
fn compare_and_swap_and_batches_are_atomic() {
    on_both(|db| {
        let t = db.open_tree("cas").expect("tree");
        assert!(t
            .compare_and_swap(b"k", None::<&[u8]>, Some(&b"1"[..]))
            .expect("cas")
            .is_ok());
        let lost = t
            .compare_and_swap(b"k", None::<&[u8]>, Some(&b"2"[..]))
            .expect("cas")
            .expect_err("already there");
        assert_eq!(lost.current.as_deref(), Some(&b"1"[..]));
        assert!(t
            .compare_and_swap(b"k", Some(b"1"), Some(&b"3"[..]))
            .expect("cas")
            .is_ok());
        assert!(t
            .compare_and_swap(b"k", Some(b"1"), None::<&[u8]>)
            .expect("cas")
            .is_err());
        assert!(t
            .compare_and_swap(b"k", Some(b"3"), None::<&[u8]>)
            .expect("cas")
            .is_ok());
        assert_eq!(t.get(b"k").expect("get"), None);
        // In a batch the last change of a key wins.
        let mut b = Batch::default();
        b.insert(b"x".to_vec(), b"1".to_vec());
        b.remove(b"x".to_vec());
        b.insert(b"y".to_vec(), b"2".to_vec());
        t.apply_batch(b).expect("batch");
        assert_eq!(t.get(b"x").expect("get"), None);
        assert_eq!(t.get(b"y").expect("get").as_deref(), Some(&b"2"[..]));
    });
}

#[test]
fn transactions_commit_everything_or_nothing_and_see_their_own_writes() {
    on_both(|db| {
        let (a, b) = (
            db.open_tree("ta").expect("tree"),
            db.open_tree("tb").expect("tree"),
        );
        let out = db.transaction([&a, &b], |[a, b]| {
            a.insert(b"k", &b"1"[..])?;
            b.insert(b"k", &b"2"[..])?;
            assert_eq!(a.get(b"k")?.as_deref(), Some(&b"1"[..]), "its own write");
            b.remove(b"k")?;
            assert_eq!(b.get(b"k")?, None, "its own removal");
            Ok::<_, ConflictableTransactionError<String>>(7)
        });
        assert_eq!(out.expect("commits"), 7);
        assert_eq!(a.get(b"k").expect("get").as_deref(), Some(&b"1"[..]));
        assert_eq!(b.get(b"k").expect("get"), None);
        let out = db.transaction([&a, &b], |[a, b]| {
            a.insert(b"k", &b"changed"[..])?;
            b.insert(b"new", &b"x"[..])?;
            kv::abort::<(), _>("no".to_string())
        });
        assert!(matches!(out, Err(TransactionError::Abort(s)) if s == "no"));
        assert_eq!(
            a.get(b"k").expect("get").as_deref(),
            Some(&b"1"[..]),
            "nothing written"
        );
        assert_eq!(b.get(b"new").expect("get"), None);
    });
}

/// Two threads incrementing one counter 200 times each in transactions end at 400: the
/// engines serialise them (retrying the loser of a conflict), nothing is lost.
#[test]
fn concurrent_transactions_are_serializable() {
    on_both(|db| {
        let t = db.open_tree("counter").expect("tree");
        let log = db.open_tree("log").expect("tree");
        let run = |me: u8| {
            for i in 0..200u32 {
                db.transaction([&t, &log], |[t, log]| {
                    let n = t
                        .get(b"n")?
                        .map(|v| u32::from_be_bytes(v.as_ref().try_into().expect("4 bytes")))
                        .unwrap_or(0);
                    t.insert(b"n", &(n + 1).to_be_bytes()[..])?;
                    log.insert([me, (i >> 8) as u8, i as u8], &(n + 1).to_be_bytes()[..])?;
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .expect("commits");
            }
        };
        std::thread::scope(|s| {
            s.spawn(|| run(1));
            s.spawn(|| run(2));
        });
        let n = t.get(b"n").expect("get").expect("counter");
        assert_eq!(u32::from_be_bytes(n.as_ref().try_into().expect("4")), 400);
        // Every committed increment saw a different count.
        let mut counts: Vec<Vec<u8>> = log.iter().map(|r| r.expect("row").1.to_vec()).collect();
        counts.sort();
        counts.dedup();
        assert_eq!(counts.len(), 400);
    });
}

#[test]
fn ids_never_repeat_and_can_be_raised_above_copied_ones() {
    on_both(|db| {
        let mut seen = std::collections::HashSet::new();
        let mut last = db.generate_id().expect("id");
        for _ in 0..3000 {
            let id = db.generate_id().expect("id");
            assert!(id > last, "monotonic");
            assert!(seen.insert(id));
            last = id;
        }
        assert!(db.last_id().expect("bound") >= last);
        db.raise_ids(last + 1_000_000).expect("raise");
        assert!(db.generate_id().expect("id") > last + 1_000_000);
        db.flush().expect("flush");
        db.open_tree("named")
            .expect("tree")
            .insert(b"k", &b"v"[..])
            .expect("insert");
        let names = db.tree_names().expect("names");
        assert!(names.iter().any(|n| n == "named"), "{names:?}");
    });
}

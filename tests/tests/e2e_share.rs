//! End-to-end: sharing between users. Alice shares a folder with Bob: he sees it under
//! `shared/alice/`, read-only until she grants write; his edits reach her devices with
//! versions as her own do; he cannot pass it on; revoking takes effect at once; Carol sees
//! nothing of it.

use shelf_tests::*;
use std::time::Duration;

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    assert!(wait_until(Duration::from_secs(5), &mut f), "{what}");
}

fn shelf_ok(dev: &Device, args: &[&str]) -> String {
    let out = dev.shelf().args(args).output().expect("shelf");
    assert!(
        out.status.success(),
        "shelf {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn shelf_err(dev: &Device, args: &[&str]) -> String {
    let out = dev.shelf().args(args).output().expect("shelf");
    assert!(!out.status.success(), "shelf {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_shared_folder_read_only_then_read_write_then_revoked() {
    let server = Server::start(&[
        ("alice", "pw", "user"),
        ("bob", "pw", "user"),
        ("carol", "pw", "user"),
    ]);
    let alice = Device::new();
    alice.login(&server, "alice", "pw", "laptop");
    let a = alice.mount();
    a.sh("mkdir files/work/Project && echo v1 > files/work/Project/doc.txt && echo mine > files/work/private.txt && sync");
    a.sh(r#"python3 -c "import os; f = os.open('files/work/Project/doc.txt', os.O_RDONLY); os.fsync(f)""#);

    let bob = Device::new();
    bob.login(&server, "bob", "pw", "pc");
    let b = bob.mount();
    assert_eq!(b.sh("ls shared"), "");
    assert!(
        shelf_ok(&alice, &["share", "files/work/Project", "--with", "bob"]).contains("read-only")
    );

    // Bob sees the folder, and only it, read-only.
    eventually("bob sees shared/alice", || b.sh("ls shared") == "alice\n");
    assert_eq!(b.sh("ls shared/alice"), "Project\n");
    assert_eq!(b.sh("cat shared/alice/Project/doc.txt"), "v1\n");
    let err = sh_fails(&b.path, "echo x > shared/alice/Project/new.txt");
    assert!(err.contains("Read-only file system"), "{err}");
    let err = sh_fails(&b.path, "rm shared/alice/Project/doc.txt");
    assert!(err.contains("Read-only file system"), "{err}");
    let err = sh_fails(&b.path, "mkdir shared/mine");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(shelf_ok(&bob, &["shares"]).contains("shared/alice/Project  from alice  (read-only)"));
    // He cannot pass it on.
    let err = shelf_err(&bob, &["share", "shared/alice/Project", "--with", "carol"]);
    assert!(err.contains("only its owner"), "{err}");

    // Alice's edit reaches Bob.
    a.sh("echo v2 > files/work/Project/doc.txt");
    eventually("bob reads alice's v2", || {
        b.sh("cat shared/alice/Project/doc.txt") == "v2\n"
    });

    // Read-write: Bob's edits and new files reach Alice, with versions.
    shelf_ok(
        &alice,
        &["share", "files/work/Project", "--with", "bob", "--write"],
    );
    eventually("bob may write", || {
        std::process::Command::new("bash")
            .arg("-c")
            .arg("echo bob-edit >> shared/alice/Project/doc.txt")
            .current_dir(&b.path)
            .status()
            .is_ok_and(|s| s.success())
    });
    b.sh("echo hi > shared/alice/Project/from-bob.txt");
    b.sh(r#"python3 -c "import os; f = os.open('shared/alice/Project/doc.txt', os.O_RDONLY); os.fsync(f)""#);
    b.sh(r#"python3 -c "import os; f = os.open('shared/alice/Project/from-bob.txt', os.O_RDONLY); os.fsync(f)""#);
    eventually("alice sees bob's file", || {
        a.sh("cat files/work/Project/from-bob.txt 2>/dev/null || true") == "hi\n"
    });
    eventually("alice sees bob's edit", || {
        a.sh("cat files/work/Project/doc.txt") == "v2\nbob-edit\n"
    });
    let versions = a.sh("ls files/work/Project/.versions");
    assert!(versions.contains("doc.txt.v03"), "{versions}");
    let events = shelf_ok(&alice, &["events"]);
    assert!(events.contains("bob:pc"), "{events}");
    // Moving out of the share into his own files works as across devices (copy, delete).
    b.sh("mv shared/alice/Project/from-bob.txt files/personal/");
    assert_eq!(b.sh("cat files/personal/from-bob.txt"), "hi\n");
    eventually("the move left alice's folder", || {
        !a.sh("ls files/work/Project").contains("from-bob.txt")
    });

    // Carol sees nothing; Alice's other files stay hers.
    let carol = Device::new();
    carol.login(&server, "carol", "pw", "phone");
    let c = carol.mount();
    assert_eq!(c.sh("ls shared"), "");
    c.unmount();
    assert!(sh_fails(&b.path, "ls shared/alice/private.txt").contains("No such file"));

    // Revoked: gone at once.
    shelf_ok(&alice, &["unshare", "files/work/Project", "--with", "bob"]);
    eventually("bob lost access", || {
        std::process::Command::new("bash")
            .arg("-c")
            .arg("cat shared/alice/Project/doc.txt")
            .current_dir(&b.path)
            .output()
            .is_ok_and(|o| !o.status.success())
    });
    eventually("shared/ is empty again", || b.sh("ls shared").is_empty());
    a.unmount();
    b.unmount();
}

/// A refusal that cannot heal is not retried forever: Frank's edits in Erin's read-write
/// share wait for upload while Erin makes the share read-only (and ends another one); when
/// the server refuses them, Frank's content becomes a file in his own `files/`, `shelf
/// events` says where, `shelf status` shows no alert and nothing pending, Erin's files are
/// unchanged.
#[test]
fn refused_uploads_are_kept_in_your_own_files_not_retried() {
    let server = Server::start(&[("erin", "pw", "user"), ("frank", "pw", "user")]);
    let erin = Device::new();
    erin.login(&server, "erin", "pw", "laptop");
    let e = erin.mount();
    e.sh("mkdir files/work/Plan files/work/Gone && echo erin > files/work/Plan/doc.txt && echo erin > files/work/Gone/old.txt && sync");
    e.sh(r#"python3 -c "import os; [os.fsync(os.open(p, os.O_RDONLY)) for p in ('files/work/Plan/doc.txt', 'files/work/Gone/old.txt')]""#);
    for dir in ["Plan", "Gone"] {
        let path = e.path.join("files/work").join(dir).display().to_string();
        shelf_ok(&erin, &["share", &path, "--with", "frank", "--write"]);
    }

    let frank = Device::new();
    frank.login(&server, "frank", "pw", "pc");
    let mut f = frank.mount_with(&[("SHELF_TEST_HOLD_UPLOADS", "1")]);
    eventually("frank sees the shares", || {
        f.sh("ls shared/erin") == "Gone\nPlan\n"
    });
    f.sh("echo frank-edit > shared/erin/Plan/doc.txt && echo frank-too > shared/erin/Gone/old.txt");
    // Killed before the uploads: the edits are journaled on frank's device.
    f.kill_client();
    drop(f);

    let plan = e.path.join("files/work/Plan").display().to_string();
    shelf_ok(&erin, &["share", &plan, "--with", "frank"]); // read-only now
    let gone = e.path.join("files/work/Gone").display().to_string();
    shelf_ok(&erin, &["unshare", &gone, "--with", "frank"]);

    let f = frank.mount();
    let kept_both = wait_until(Duration::from_secs(10), || {
        f.sh("ls files")
            .lines()
            .filter(|l| l.contains("(not saved - "))
            .count()
            == 2
    });
    assert!(
        kept_both,
        "both edits are kept in frank's own files: {}\n{}\n{}",
        f.sh("ls files"),
        frank.run(&["status"]),
        frank.run(&["events"])
    );
    let kept = f.sh("cd files && cat *'(not saved - read-only'*.txt *'(not saved - no longer shared or deleted'*.txt");
    assert_eq!(kept, "frank-edit\nfrank-too\n");
    assert!(
        wait_until(Duration::from_secs(10), || frank
            .run(&["status"])
            .contains("pending:  0 file(s) waiting for upload, 0 change(s)")),
        "{}",
        frank.run(&["status"])
    );
    let status = frank.run(&["status"]);
    assert!(!status.contains("ALERT"), "{status}");
    let events = frank.run(&["events"]);
    assert!(
        events.contains("upload refused (read-only): kept as files/doc (not saved - read-only"),
        "{events}"
    );
    assert!(
        events
            .contains("upload refused (no longer shared or deleted): kept as files/old (not saved"),
        "{events}"
    );
    // The server has frank's copies (a second device of his sees them); erin's are as before.
    f.unmount();
    let again = Device::new();
    again.login(&server, "frank", "pw", "tablet");
    let g = again.mount();
    assert_eq!(g.sh("cat files/*'(not saved - read-only'*"), "frank-edit\n");
    g.unmount();
    assert_eq!(
        e.sh("cat files/work/Plan/doc.txt files/work/Gone/old.txt"),
        "erin\nerin\n"
    );
    e.unmount();
}

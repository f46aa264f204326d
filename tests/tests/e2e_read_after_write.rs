//! End-to-end: read-after-write on a real mount while uploads, the change feed and
//! attribute refreshes run. `git clone --no-hardlinks` of a local repository with 5,000
//! loose objects writes each object file, closes it, and reads it back moments later (the
//! checkout): any file that reads as empty for a moment fails the clone ("object file …
//! is empty"). Repeated, in both file I/O modes.

use shelf_tests::*;

/// A repository of 5,000 small files in 50 folders, every object loose (as a fresh
/// `git add` leaves them), built once per test in `dir`.
fn make_repo(dir: &std::path::Path) {
    sh_in(
        dir,
        r#"
mkdir src && cd src && git init -q
python3 - <<'PY'
import os
for d in range(50):
    os.makedirs(f"d{d:02}", exist_ok=True)
    for f in range(100):
        with open(f"d{d:02}/f{f:03}.txt", "w") as out:
            out.write(f"file {d} {f}\n" * (1 + (d * 100 + f) % 60))
PY
git add -A && git -c user.email=t@e -c user.name=t commit -qm all
test "$(find .git/objects -type f | wc -l)" -gt 5000
"#,
    );
}

fn clones_read_back(mount_args: &[&str], io_mode: &str) {
    let server = Server::start(&[("ivy", "pw", "user")]);
    let work = tempfile::tempdir().expect("tempdir");
    make_repo(work.path());
    let src = work.path().join("src");
    let d = Device::new();
    d.login(&server, "ivy", "pw", "laptop");
    let m = d.mount_full(mount_args, &[]);
    assert!(d.run(&["status"]).contains(&format!("file I/O: {io_mode}")));
    for run in 0..2 {
        let out = m.sh(&format!(
            "cd files/projects && git clone -q --no-hardlinks {src} c{run} 2>&1 \
             && git -C c{run} status --porcelain | wc -l && git -C c{run} ls-files | wc -l \
             && echo cloned",
            src = src.display()
        ));
        assert_eq!(out, "0\n5000\ncloned\n", "clone {run} in {io_mode} mode");
        // Every checked-out file has its content, compared with the source.
        let diff = m.sh(&format!(
            "diff -r -q --exclude=.git {src} files/projects/c{run} && echo same",
            src = src.display()
        ));
        assert_eq!(diff, "same\n", "clone {run} content");
    }
    m.unmount();
}

#[test]
fn git_clone_reads_back_every_object_with_local_io() {
    clones_read_back(&[], "local");
}

#[test]
fn git_clone_reads_back_every_object_with_relayed_io() {
    clones_read_back(&["-o", "nopassthrough"], "relayed");
}

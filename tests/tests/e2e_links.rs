//! End-to-end: hard links. `ln` works inside the account's own files (EXDEV into a share);
//! `nlink` is right on every device; a write through one name shows through every name;
//! removing one name keeps the others; each name's `.versions/` lists the file's versions;
//! `git clone` of a local repository (which hard-links its objects) works in the mount.

use shelf_tests::*;
use std::time::Duration;

#[test]
fn hard_links_share_content_count_names_and_stay_out_of_shares() {
    let server = Server::start(&[("lin", "pw", "user"), ("ola", "pw", "user")]);
    let laptop = Device::new();
    laptop.login(&server, "lin", "pw", "laptop");
    let m = laptop.mount();
    m.sh("mkdir files/work/a files/work/b && printf 'one\\n' > files/work/a/f");
    m.sh("ln files/work/a/f files/work/b/g");
    assert_eq!(m.sh("stat -c %h files/work/a/f files/work/b/g"), "2\n2\n");
    assert_eq!(
        m.sh("stat -c %i files/work/a/f").trim(),
        m.sh("stat -c %i files/work/b/g").trim()
    );
    // A write through one name shows through the other, and is versioned once.
    m.sh("printf 'two\\n' >> files/work/b/g && sync");
    assert_eq!(m.sh("cat files/work/a/f"), "one\ntwo\n");
    m.sh("python3 -c \"import os; os.fsync(os.open('files/work/a/f', os.O_RDONLY))\"");
    assert_eq!(
        m.sh("ls files/work/a/.versions/ | grep -c '^f.v'").trim(),
        "2"
    );
    assert_eq!(
        m.sh("ls files/work/b/.versions/ | grep -c '^g.v'").trim(),
        "2"
    );

    // Another device sees both names, the count and the content.
    let desk = Device::new();
    desk.login(&server, "lin", "pw", "desk");
    let d = desk.mount();
    assert_eq!(d.sh("stat -c %h files/work/a/f files/work/b/g"), "2\n2\n");
    assert_eq!(d.sh("cat files/work/b/g"), "one\ntwo\n");

    // Removing the first name keeps the file under the other, on both devices.
    m.sh("rm files/work/a/f");
    assert_eq!(m.sh("stat -c %h files/work/b/g"), "1\n");
    assert_eq!(m.sh("cat files/work/b/g"), "one\ntwo\n");
    assert!(wait_until(Duration::from_secs(5), || {
        d.sh("stat -c %h files/work/b/g 2>&1; ls files/work/a") == "1\n"
    }));
    // Renaming one name of a linked file moves only that name; rename onto another name of
    // the same file does nothing.
    m.sh("ln files/work/b/g files/work/b/h && mv files/work/b/h files/work/a/h");
    assert_eq!(
        m.sh("ls files/work/a files/work/b"),
        "files/work/a:\nh\n\nfiles/work/b:\ng\n"
    );
    m.sh("python3 -c \"import os; os.rename('files/work/a/h', 'files/work/b/g')\"");
    assert_eq!(
        m.sh("ls files/work/a files/work/b"),
        "files/work/a:\nh\n\nfiles/work/b:\ng\n"
    );
    assert_eq!(m.sh("stat -c %h files/work/b/g"), "2\n");

    // Not into or out of a shared folder: EXDEV.
    m.sh("mkdir files/work/S && echo s > files/work/S/s.txt");
    let s = m.path.join("files/work/S").display().to_string();
    laptop.run(&["share", &s, "--with", "ola"]);
    let err = sh_fails(&m.path, "ln files/work/b/g files/work/S/g");
    assert!(err.contains("Invalid cross-device link"), "{err}");
    let err = sh_fails(&m.path, "ln files/work/S/s.txt files/work/b/s");
    assert!(err.contains("Invalid cross-device link"), "{err}");
    // Directories cannot be linked.
    let err = sh_fails(&m.path, "ln files/work/a files/work/dirlink");
    assert!(err.contains("hard link not allowed for directory"), "{err}");
    d.unmount();
    m.unmount();
}

#[test]
fn git_clone_with_hard_links_inside_the_mount() {
    let server = Server::start(&[("gil", "pw", "user")]);
    let dev = Device::new();
    dev.login(&server, "gil", "pw", "laptop");
    let m = dev.mount();
    let out = m.sh("cd files/projects && mkdir src && cd src && git init -q \
         && for i in $(seq 1 50); do echo line $i > f$i.txt; done \
         && git add -A && git -c user.email=t@e -c user.name=t commit -qm one && cd .. \
         && git clone -q src copy 2>&1 && git -C copy fsck 2>&1 | tail -1; \
         for f in $(find src/.git/objects -type f -links 1 | head -3); do \
           stat -c 'one link: %h %i %n' $f copy/.git/objects/${f#src/.git/objects/} 2>&1; done; \
         find src/.git/objects -type f -links 2 | wc -l; git -C copy ls-files | wc -l");
    let lines: Vec<&str> = out.lines().collect();
    // git copies every object after the first link that fails: the mount's log says why.
    let log = sh_in(
        &dev.cache(),
        "find . -name shelf.log -exec grep -h link {} + | tail -5 || true",
    );
    assert!(
        lines[lines.len() - 2].trim().parse::<u32>().unwrap_or(0) > 50,
        "{out}\n--- the mount's log about links\n{log}"
    );
    assert_eq!(lines[lines.len() - 1].trim(), "50", "{out}");
    m.unmount();
}

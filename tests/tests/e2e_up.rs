//! End-to-end: the newcomer's command. `shelf up` in an empty home starts a local server,
//! creates the account, mounts ~/Shelf with the category folders; running it again is a
//! no-op; `shelf down` uploads, unmounts and stops the server; data is there after `up` again.

use shelf_tests::*;
use std::process::Command;

fn shelf(home: &std::path::Path) -> Command {
    let mut c = Command::new(shelf_bin());
    c.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("SHELF_CONFIG_DIR")
        .env_remove("SHELF_CACHE_DIR")
        .env_remove("SHELF_PASSWORD")
        .env("SHELF_LISTEN", "127.0.0.1:0")
        .stdin(std::process::Stdio::null());
    c
}

struct Down(std::path::PathBuf);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = shelf(&self.0).arg("down").output();
        let mnt = self.0.join("Shelf");
        if is_mounted(&mnt) {
            let _ = Command::new("fusermount3").arg("-uz").arg(&mnt).status();
        }
    }
}

#[test]
fn shelf_up_sets_everything_up_and_down_stops_it() {
    let home = tempfile::tempdir().expect("tempdir");
    let _down = Down(home.path().to_path_buf());
    let out = shelf(home.path()).arg("up").output().expect("shelf up");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Shelf is up") && text.contains("shelf down"),
        "{text}"
    );
    let mnt = home.path().join("Shelf");
    assert!(is_mounted(&mnt));
    for cat in ["photos/work", "files/personal", "videos/projects", "shared"] {
        assert!(mnt.join(cat).is_dir(), "{cat}");
    }
    sh_in(&mnt, "printf 'kept\\n' > files/personal/note.txt");

    let again = shelf(home.path()).arg("up").output().expect("shelf up");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already mounted"));

    let down = shelf(home.path()).arg("down").output().expect("shelf down");
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(!is_mounted(&mnt));

    let up = shelf(home.path()).arg("up").output().expect("shelf up");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert_eq!(sh_in(&mnt, "cat files/personal/note.txt"), "kept\n");
    let status = shelf(home.path()).arg("status").output().expect("status");
    let s = String::from_utf8_lossy(&status.stdout);
    assert!(s.contains("online") && s.contains("pending:  0"), "{s}");
}

//! Power cut of the client's cache disk: the cache folder is on an XFS loop image that is
//! shut down with `xfs_io -x -c shutdown` (nothing more reaches the disk, as when power
//! goes), then recovered. Every file closed more than a second before the cut is uploaded
//! after the restart; a file closed later is either whole or still empty, never torn.

use shelf_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An XFS filesystem on a loop device, mounted; unmounted and detached on drop.
struct XfsDisk {
    image: PathBuf,
    loopdev: String,
    dir: PathBuf,
}

impl XfsDisk {
    fn new(base: &Path) -> XfsDisk {
        let image = base.join("cache.img");
        let dir = base.join("cachefs");
        std::fs::create_dir_all(&dir).expect("mkdir");
        run(Command::new("truncate").arg("-s").arg("600M").arg(&image));
        run(Command::new("mkfs.xfs").arg("-q").arg(&image));
        let loopdev = run(Command::new("losetup").args(["-f", "--show"]).arg(&image));
        let disk = XfsDisk {
            image,
            loopdev,
            dir,
        };
        disk.mount();
        disk
    }

    fn mount(&self) {
        run(Command::new("mount").arg(&self.loopdev).arg(&self.dir));
    }

    /// Cuts the power: the filesystem stops writing at once.
    fn cut(&self) {
        run(Command::new("xfs_io")
            .args(["-x", "-c", "shutdown"])
            .arg(&self.dir));
    }

    /// Unmounts and mounts again (XFS replays its log, as after a reboot).
    fn recover(&self) {
        run(Command::new("umount").arg(&self.dir));
        self.mount();
    }
}

impl Drop for XfsDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(&self.loopdev)
            .status();
        let _ = std::fs::remove_file(&self.image);
    }
}

#[test]
fn a_power_cut_of_the_cache_disk_loses_only_the_last_second() {
    let server = Server::start(&[("pat", "pw", "user")]);
    let laptop = Device::new();
    laptop.login(&server, "pat", "pw", "laptop");
    let base = tempfile::tempdir().expect("tempdir");
    let disk = XfsDisk::new(base.path());
    let cache = disk.dir.join("cache");
    let cache_arg = cache.to_str().expect("utf-8").to_string();
    let script = |prefix: &str, n: usize| {
        format!(
            "for i in $(seq 1 {n}); do head -c $((i * 5003)) /dev/urandom > files/{prefix}$i; done; \
             for i in $(seq 1 {n}); do printf '%s ' {prefix}$i; sha256sum < files/{prefix}$i; done"
        )
    };
    // Uploads held: the content lives only in the cache when the power goes.
    let mut m = laptop.mount_full(
        &["--cache", &cache_arg],
        &[("SHELF_TEST_HOLD_UPLOADS", "1")],
    );
    let old = m.sh(&script("old", 20));
    std::thread::sleep(Duration::from_millis(1500));
    let new = m.sh(&script("new", 5));
    disk.cut();
    m.kill_client();
    drop(m);
    disk.recover();

    // Back up: the journal replays; umount waits for the uploads.
    let m = laptop.mount_full(&["--cache", &cache_arg], &[]);
    m.unmount();
    let desktop = Device::new();
    desktop.login(&server, "pat", "pw", "desktop");
    let d = desktop.mount();
    let sum = |name: &str| d.sh(&format!("sha256sum < files/{name}"));
    for line in old.lines() {
        let (name, want) = line.split_once(' ').expect("name and sum");
        assert_eq!(
            sum(name).trim(),
            want.trim(),
            "{name}, closed 1.5 s before the cut"
        );
    }
    let empty = d.sh("sha256sum < /dev/null");
    for line in new.lines() {
        let (name, want) = line.split_once(' ').expect("name and sum");
        if d.path.join("files").join(name).exists() {
            let got = sum(name);
            assert!(
                got.trim() == want.trim() || got == empty,
                "{name}, closed just before the cut, is torn"
            );
        }
    }
    d.unmount();
    drop(disk);
}

//! Who may do what, for mounts where the kernel leaves permission checks to the filesystem.
//!
//! A mount that only its owner and root can reach (no `allow_other`) runs without the
//! kernel's `default_permissions`: the kernel then checks nothing itself and, above all,
//! fetches no attributes first. With them it forgot a folder's attributes at every change
//! in it and asked for them again before the next one, so `rm -r` and `tar x` cost two round
//! trips per file instead of one. The fuser adapter asks these checks instead, with the
//! POSIX rules a local disk applies (owner, group or other class; root may do anything but
//! execute a file that has no execute bit; the sticky bit; who may chmod, chown and set
//! times). Mounts with `allow_other` keep `default_permissions`: there the kernel checks,
//! with its own cache of every name, for every user.

use super::{FsCore, FsError, Stat};
use shelf_protocol::NodeKind;

/// The process a request comes from.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The calling thread, whose supplementary groups are read when they matter.
    pub pid: u32,
}

/// Read, write and execute (search, for a folder) bits, as in a mode's "other" class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access(u32);

impl Access {
    pub const READ: Access = Access(4);
    pub const WRITE: Access = Access(2);
    pub const EXEC: Access = Access(1);
    /// What a change of a folder's entries needs of the folder.
    pub const CHANGE_ENTRIES: Access = Access(3);
    pub const NONE: Access = Access(0);

    /// From access(2)'s mask (`R_OK | W_OK | X_OK`, the same bits).
    pub fn from_mask(mask: i32) -> Access {
        Access(mask as u32 & 7)
    }

    /// What opening with `flags` needs of the file.
    pub fn of_open(flags: i32) -> Access {
        let mut a = match flags & libc::O_ACCMODE {
            libc::O_WRONLY => Access::WRITE.0,
            libc::O_RDWR => Access::READ.0 | Access::WRITE.0,
            _ => Access::READ.0,
        };
        if flags & libc::O_TRUNC != 0 {
            a |= Access::WRITE.0;
        }
        Access(a)
    }
}

impl std::ops::BitOr for Access {
    type Output = Access;
    fn bitor(self, o: Access) -> Access {
        Access(self.0 | o.0)
    }
}

/// Whether `caller` (in supplementary `groups`, read only if needed) may `want` on `st`.
pub fn allows(caller: &Caller, groups: impl FnOnce() -> Vec<u32>, st: &Stat, want: Access) -> bool {
    let mode = u32::from(st.perm);
    if caller.uid == 0 {
        // Root reads and writes anything, searches any folder, and executes a file that
        // someone may execute.
        return want.0 & Access::EXEC.0 == 0 || st.kind == NodeKind::Dir || mode & 0o111 != 0;
    }
    let class = if caller.uid == st.uid {
        mode >> 6
    } else if caller.gid == st.gid || groups().contains(&st.gid) {
        mode >> 3
    } else {
        mode
    };
    class & want.0 == want.0
}

/// The supplementary groups of thread `pid` (empty when they cannot be read).
pub fn groups_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

fn denied() -> FsError {
    FsError::Denied
}

impl FsCore {
    /// `Ok` when `caller` may `want` on inode `ino`, else EACCES.
    pub fn permit(&self, caller: &Caller, ino: u64, want: Access) -> Result<(), FsError> {
        if want == Access::NONE || (caller.uid == 0 && want.0 & Access::EXEC.0 == 0) {
            return Ok(());
        }
        let st = self.getattr(ino)?;
        match allows(caller, || groups_of(caller.pid), &st, want) {
            true => Ok(()),
            false => Err(denied()),
        }
    }

    /// Whether `caller` may remove `name` from folder `dir` (or rename it away): write and
    /// search permission on the folder, and in a sticky folder (`/tmp`'s mode) only the
    /// owner of the entry or of the folder, or root (EPERM otherwise).
    pub fn permit_removal(
        &self,
        caller: &Caller,
        dir: u64,
        name: &std::ffi::OsStr,
    ) -> Result<(), FsError> {
        if caller.uid == 0 {
            return Ok(());
        }
        let d = self.getattr(dir)?;
        if !allows(caller, || groups_of(caller.pid), &d, Access::CHANGE_ENTRIES) {
            return Err(denied());
        }
        if u32::from(d.perm) & libc::S_ISVTX != 0 && d.uid != caller.uid {
            let entry = self.lookup(dir, name)?;
            if entry.uid != caller.uid {
                return Err(FsError::NotPermitted);
            }
        }
        Ok(())
    }

    /// Whether `caller` may make the change of a setattr on `ino` (`by_handle`: through a
    /// descriptor open for writing, as ftruncate). Returns the change to make: a mode set
    /// by an owner outside the file's group loses set-group-ID, as on a local disk.
    pub fn permit_setattr(
        &self,
        caller: &Caller,
        ino: u64,
        mut change: super::SetAttr,
        by_handle: bool,
        times_now: bool,
    ) -> Result<super::SetAttr, FsError> {
        if caller.uid == 0 {
            return Ok(change);
        }
        let st = self.getattr(ino)?;
        let owner = st.uid == caller.uid;
        let groups = std::cell::OnceCell::new();
        let in_group = |gid: u32| {
            gid == caller.gid || groups.get_or_init(|| groups_of(caller.pid)).contains(&gid)
        };
        if change.uid.is_some_and(|u| u != st.uid) {
            return Err(FsError::NotPermitted);
        }
        if let Some(g) = change.gid {
            if g != st.gid && !(owner && in_group(g)) {
                return Err(FsError::NotPermitted);
            }
        }
        if let Some(mode) = change.mode {
            if !owner {
                return Err(FsError::NotPermitted);
            }
            let gid = change.gid.unwrap_or(st.gid);
            if st.kind != NodeKind::Dir && !in_group(gid) {
                change.mode = Some(mode & !libc::S_ISGID);
            }
        }
        if change.size.is_some()
            && !by_handle
            && !allows(caller, || groups_of(caller.pid), &st, Access::WRITE)
        {
            return Err(denied());
        }
        if (change.atime.is_some() || change.mtime.is_some()) && !owner {
            // Anyone who may write may set both times to now (touch); other times are the
            // owner's to set.
            if !times_now {
                return Err(FsError::NotPermitted);
            }
            if !allows(caller, || groups_of(caller.pid), &st, Access::WRITE) {
                return Err(denied());
            }
        }
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn st(kind: NodeKind, perm: u16, uid: u32, gid: u32) -> Stat {
        Stat {
            ino: 2,
            kind,
            perm,
            size: 0,
            blocks: 0,
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            nlink: 1,
            uid,
            gid,
            rdev: 0,
        }
    }

    fn caller(uid: u32, gid: u32) -> Caller {
        Caller { uid, gid, pid: 0 }
    }

    #[test]
    fn the_owner_group_and_other_classes_apply_in_turn() {
        let f = st(NodeKind::File, 0o640, 1000, 100);
        let none = Vec::new;
        assert!(allows(
            &caller(1000, 1000),
            none,
            &f,
            Access::READ | Access::WRITE
        ));
        assert!(!allows(&caller(1000, 1000), none, &f, Access::EXEC));
        assert!(allows(&caller(1001, 100), none, &f, Access::READ));
        assert!(!allows(&caller(1001, 100), none, &f, Access::WRITE));
        assert!(!allows(&caller(1001, 1001), none, &f, Access::READ));
        // A supplementary group counts as the group.
        assert!(allows(
            &caller(1001, 1001),
            || vec![7, 100],
            &f,
            Access::READ
        ));
        // The owner class decides for the owner, even when "other" would allow more.
        let odd = st(NodeKind::File, 0o007, 1000, 100);
        assert!(!allows(&caller(1000, 1000), none, &odd, Access::READ));
    }

    #[test]
    fn root_may_do_anything_but_execute_a_file_no_one_may_execute() {
        let none = Vec::new;
        let f = st(NodeKind::File, 0o000, 1000, 100);
        assert!(allows(
            &caller(0, 0),
            none,
            &f,
            Access::READ | Access::WRITE
        ));
        assert!(!allows(&caller(0, 0), none, &f, Access::EXEC));
        let x = st(NodeKind::File, 0o001, 1000, 100);
        assert!(allows(&caller(0, 0), none, &x, Access::EXEC));
        let d = st(NodeKind::Dir, 0o000, 1000, 100);
        assert!(allows(
            &caller(0, 0),
            none,
            &d,
            Access::EXEC | Access::WRITE
        ));
    }

    #[test]
    fn what_an_open_needs() {
        assert_eq!(Access::of_open(libc::O_RDONLY), Access::READ);
        assert_eq!(Access::of_open(libc::O_WRONLY), Access::WRITE);
        assert_eq!(Access::of_open(libc::O_RDWR), Access::READ | Access::WRITE);
        assert_eq!(
            Access::of_open(libc::O_RDONLY | libc::O_TRUNC),
            Access::READ | Access::WRITE
        );
    }

    #[test]
    fn supplementary_groups_are_read_from_proc() {
        let mine = groups_of(std::process::id());
        let out = std::process::Command::new("id")
            .arg("-G")
            .output()
            .expect("id");
        let want: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect();
        // `id -G` lists the primary group too; /proc lists only supplementary ones.
        assert!(mine.iter().all(|g| want.contains(g)), "{mine:?} {want:?}");
        assert!(groups_of(u32::MAX).is_empty());
    }
}

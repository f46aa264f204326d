//! The registered backup jobs (`shelf backup add`), one line each in `CONFIG/backup/jobs`:
//! name, source folder, destination category, schedule, when it was added, and its last
//! run (start time, success, summary). Changes take an exclusive lock on the file, so the
//! daemon, the mount and a command line can share it.

use super::schedule::{Schedule, Zone};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub name: String,
    pub src: PathBuf,
    pub into: String,
    pub schedule: String,
    /// Unix seconds.
    pub added: i64,
    pub last_run: Option<LastRun>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastRun {
    /// When it started (Unix seconds).
    pub at: i64,
    pub ok: bool,
    pub summary: String,
}

impl Job {
    /// When the job runs next, after its last run (or after it was added).
    pub fn next_run(&self, zone: &impl Zone) -> Option<i64> {
        let s = Schedule::parse(&self.schedule).ok()?;
        s.next_after(self.last_run.as_ref().map_or(self.added, |r| r.at), zone)
    }

    /// Whether it should run at `now` (a missed run is caught up once).
    pub fn is_due(&self, now: i64, zone: &impl Zone) -> bool {
        self.next_run(zone).is_some_and(|t| t <= now)
    }
}

pub fn jobs_path() -> PathBuf {
    crate::config::config_dir().join("backup").join("jobs")
}

fn clean(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

fn parse(text: &str) -> Vec<Job> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let last_run = match (f.get(5), f.get(6), f.get(7)) {
                (Some(at), Some(ok), summary) if !at.is_empty() => Some(LastRun {
                    at: at.parse().ok()?,
                    ok: *ok == "ok",
                    summary: summary.unwrap_or(&"").to_string(),
                }),
                _ => None,
            };
            Some(Job {
                name: f.first()?.to_string(),
                src: PathBuf::from(f.get(1)?),
                into: f.get(2)?.to_string(),
                schedule: f.get(3)?.to_string(),
                added: f.get(4)?.parse().ok()?,
                last_run,
            })
        })
        .collect()
}

fn render(jobs: &[Job]) -> String {
    let mut out = String::from(
        "# shelf backup jobs: name, source, into, schedule, added, last run, result, summary\n",
    );
    for j in jobs {
        let (at, ok, summary) = match &j.last_run {
            Some(r) => (
                r.at.to_string(),
                if r.ok { "ok" } else { "failed" },
                clean(&r.summary),
            ),
            None => (String::new(), "", String::new()),
        };
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{at}\t{ok}\t{summary}\n",
            j.name,
            j.src.display(),
            j.into,
            j.schedule,
            j.added
        ));
    }
    out
}

/// Reads the jobs.
pub fn load(path: &Path) -> std::io::Result<Vec<Job>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(parse(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Changes the jobs under an exclusive lock; `change` returns what to hand back.
pub fn update<T>(
    path: &Path,
    change: impl FnOnce(&mut Vec<Job>) -> Result<T, String>,
) -> std::io::Result<Result<T, String>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // SAFETY: flock on a descriptor we own; released when `f` closes.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    let mut jobs = parse(&text);
    let out = match change(&mut jobs) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    f.set_len(0)?;
    f.rewind()?;
    f.write_all(render(&jobs).as_bytes())?;
    f.sync_all()?;
    Ok(Ok(out))
}

/// Whether `s` can be stored in a jobs line.
pub fn is_storable(s: &str) -> bool {
    !s.contains(['\t', '\n', '\r'])
}

/// Holds a job's run lock (`CONFIG/backup/NAME.lock`) while alive: one run of a job at a
/// time, whoever starts it.
pub struct RunLock(#[allow(dead_code)] std::fs::File);

impl RunLock {
    /// `None` when another process is running the job.
    pub fn try_take(name: &str) -> std::io::Result<Option<RunLock>> {
        let path = jobs_path().with_file_name(format!("{name}.lock"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // SAFETY: as above.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(RunLock(f)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::schedule::{Civil, Utc, FIRST_SUNDAY};
    use super::*;

    #[test]
    fn jobs_round_trip_and_know_when_they_are_due() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("jobs");
        let added = Utc.instant(Civil {
            year: 2026,
            month: 11,
            day: 22,
            hour: 12,
            minute: 0,
        });
        update(&path, |jobs| {
            jobs.push(Job {
                name: "pictures".into(),
                src: "/home/a/Pictures".into(),
                into: "personal".into(),
                schedule: FIRST_SUNDAY.into(),
                added,
                last_run: None,
            });
            Ok(())
        })
        .unwrap()
        .unwrap();
        let jobs = load(&path).unwrap();
        assert_eq!(jobs.len(), 1);
        let next = jobs[0].next_run(&Utc).unwrap();
        assert_eq!(Utc.civil(next).day, 6); // 6 December 2026, 03:00
        assert!(!jobs[0].is_due(next - 1, &Utc));
        assert!(jobs[0].is_due(next + 86_400 * 90, &Utc));
        update(&path, |jobs| {
            jobs[0].last_run = Some(LastRun {
                at: next + 60,
                ok: true,
                summary: "3 changed\t2 new".into(),
            });
            Ok(())
        })
        .unwrap()
        .unwrap();
        let jobs = load(&path).unwrap();
        assert_eq!(
            jobs[0].last_run.as_ref().unwrap().summary,
            "3 changed 2 new"
        );
        assert!(!jobs[0].is_due(next + 120, &Utc));
    }
}

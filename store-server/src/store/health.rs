//! How the server is doing, for the admin console and the metrics: uptime, connections,
//! devices online, disk, packs and garbage, deduplication, and the last run of each
//! periodic job (retention, scrub), which [`Store::record_job`] keeps in the `prefs` tree
//! (account 0) so a restart does not forget it.

use super::retention::Retention;
use super::{decode, Store};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use shelf_protocol::{JobRun, NodeKind, RetentionPolicy, ServerHealth};

/// The periodic jobs whose last run is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    Prune,
    Scrub,
}

impl Job {
    fn key(self) -> Vec<u8> {
        let mut k = 0u64.to_be_bytes().to_vec();
        k.extend_from_slice(match self {
            Job::Prune => b"job-prune",
            Job::Scrub => b"job-scrub",
        });
        k
    }
}

#[derive(Serialize, Deserialize)]
struct JobRec {
    format: u8,
    run: JobRun,
}

impl From<Retention> for RetentionPolicy {
    fn from(r: Retention) -> RetentionPolicy {
        RetentionPolicy {
            keep_all: r.keep_all,
            all_days: r.all_days,
            daily_days: r.daily_days,
            deleted_days: r.deleted_days,
        }
    }
}

impl From<RetentionPolicy> for Retention {
    fn from(p: RetentionPolicy) -> Retention {
        Retention {
            format: super::FORMAT,
            keep_all: p.keep_all,
            all_days: p.all_days,
            daily_days: p.daily_days,
            deleted_days: p.deleted_days,
        }
    }
}

/// Free (for unprivileged users) and total bytes of the file system holding `path`.
pub fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into a zeroed struct we own; path is a valid C string.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) != 0 {
            return None;
        }
        st
    };
    let unit = st.f_frsize as u64;
    Some((
        (st.f_bavail as u64).saturating_mul(unit),
        (st.f_blocks as u64).saturating_mul(unit),
    ))
}

impl Store {
    /// Keeps the last run of `job`, which started at `at` and took `took`.
    pub fn record_job(
        &self,
        job: Job,
        at: shelf_protocol::Timestamp,
        took: std::time::Duration,
        summary: String,
    ) {
        let run = JobRun {
            at,
            millis: took.as_millis().min(u128::from(u64::MAX)) as u64,
            summary,
        };
        crate::metrics::global().job_ran(job, took);
        let rec = JobRec {
            format: super::FORMAT,
            run,
        };
        let stored = postcard::to_stdvec(&rec)
            .map_err(crate::error::StoreError::from)
            .and_then(|v| Ok(self.prefs.insert(job.key(), v).map(|_| ())?));
        if let Err(e) = stored {
            tracing::error!(error = %e, ?job, "cannot record a job's run");
        }
    }

    /// The last run of `job`, if any.
    pub fn last_job(&self, job: Job) -> Result<Option<JobRun>> {
        Ok(match self.prefs.get(job.key())? {
            Some(v) => Some(decode::<JobRec>(&v)?.run),
            None => None,
        })
    }

    /// Bytes of every account's current files.
    fn logical_bytes(&self) -> Result<u64> {
        let mut total = 0u64;
        for item in self.nodes.iter() {
            let (k, v) = item?;
            let id = u64::from_be_bytes(k.as_ref().try_into().unwrap_or_default());
            let rec = self.open_node(id, &v)?;
            if rec.kind == NodeKind::File && rec.deleted.is_none() {
                total += rec.size;
            }
        }
        Ok(total)
    }

    /// How the server is doing now (reads every node and chunk record: for the admin
    /// console, not for every request).
    pub fn health(&self) -> Result<ServerHealth> {
        let disk = self.chunks.disk()?;
        let (database_bytes, stored_bytes) = self.sizes();
        let (disk_free, disk_total) = self
            .data_root
            .as_deref()
            .and_then(disk_space)
            .unwrap_or((0, 0));
        let garbage_bytes = disk.bytes.saturating_sub(disk.live_bytes);
        crate::metrics::global()
            .garbage_bytes
            .set(garbage_bytes as i64);
        Ok(ServerHealth {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            connections: crate::metrics::global().open_connections(),
            devices_online: self.subscribers.online() as u64,
            disk_free,
            disk_total,
            pack_files: disk.files,
            pack_bytes: disk.bytes,
            garbage_bytes,
            database_bytes,
            logical_bytes: self.logical_bytes()?,
            stored_bytes,
            last_prune: self.last_job(Job::Prune)?,
            last_scrub: self.last_job(Job::Scrub)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_runs_are_kept_and_the_disk_is_measured() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = crate::datadir::DataDir::new(tmp.path());
        dir.init(&["localhost".to_string()]).unwrap();
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.last_job(Job::Scrub).unwrap(), None);
        store
            .add_user("ann", "pw", shelf_protocol::Role::User)
            .unwrap();
        let report = store.scrub().unwrap();
        let run = store.last_job(Job::Scrub).unwrap().expect("recorded");
        assert!(
            run.summary.contains(&format!("{} chunks", report.checked)),
            "{}",
            run.summary
        );
        let h = store.health().unwrap();
        assert!(h.disk_total > 0 && h.disk_free > 0 && h.disk_free <= h.disk_total);
        assert_eq!(h.last_scrub, Some(run));
        assert_eq!(h.last_prune, None);
        drop(store);
        // sled lets go of its lock file when its own flusher thread has ended, a moment
        // after the last handle is dropped.
        let started = std::time::Instant::now();
        let store = loop {
            match Store::open(&dir) {
                Ok(s) => break s,
                Err(e) if started.elapsed() < std::time::Duration::from_secs(10) => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        assert!(
            store.last_job(Job::Scrub).unwrap().is_some(),
            "kept across a restart"
        );
    }
}

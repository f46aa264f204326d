//! The upload journal: one small record per file whose `close` has returned but whose new
//! version is not yet committed on the server. A record is written to a temporary file and
//! renamed into place, so it is either the old or the new one, never torn; the syncer makes a
//! batch of them durable about once a second. On mount, every record is replayed: its staging
//! file is uploaded again.

use serde::{Deserialize, Serialize};
use shelf_protocol::{NodeId, Timestamp};
use std::path::{Path, PathBuf};

const FORMAT: u8 = 1;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Record {
    pub format: u8,
    pub node: NodeId,
    /// The server version the staging content was derived from.
    pub base_version: u64,
    /// Modification time to commit with.
    pub mtime: Timestamp,
    /// Size of the staging file when the record was written.
    pub size: u64,
}

impl Record {
    pub fn new(node: NodeId, base_version: u64, mtime: Timestamp, size: u64) -> Record {
        Record {
            format: FORMAT,
            node,
            base_version,
            mtime,
            size,
        }
    }
}

pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn new(dir: PathBuf) -> Journal {
        Journal { dir }
    }

    fn path(&self, node: NodeId) -> PathBuf {
        self.dir.join(node.to_string())
    }

    pub fn write(&self, rec: &Record) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{}.tmp", rec.node));
        let bytes = postcard::to_stdvec(rec).map_err(std::io::Error::other)?;
        let written =
            std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, self.path(rec.node)));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    pub fn remove(&self, node: NodeId) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(node)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every record, oldest first. Unreadable records are reported and skipped.
    pub fn load(&self) -> std::io::Result<Vec<Record>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            match read_record(&path) {
                Ok(rec) => out.push((entry.metadata()?.modified()?, rec)),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable journal record")
                }
            }
        }
        out.sort_by_key(|(t, _)| *t);
        Ok(out.into_iter().map(|(_, r)| r).collect())
    }
}

fn read_record(path: &Path) -> std::io::Result<Record> {
    let bytes = std::fs::read(path)?;
    let rec: Record = postcard::from_bytes(&bytes).map_err(std::io::Error::other)?;
    if rec.format != FORMAT {
        return Err(std::io::Error::other(format!(
            "record format {}",
            rec.format
        )));
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path().to_path_buf());
        let r = Record::new(300, 2, Timestamp { secs: 5, nanos: 6 }, 10);
        j.write(&r).unwrap();
        std::fs::write(dir.path().join("301.tmp"), b"torn").unwrap();
        assert_eq!(j.load().unwrap(), vec![r]);
        assert!(!dir.path().join("301.tmp").exists());
        j.remove(300).unwrap();
        j.remove(300).unwrap();
        assert!(j.load().unwrap().is_empty());
    }
}

//! The upload journal: which files' `close` has returned while their new version is not yet
//! committed on the server.
//!
//! One append-only log, `CACHE/journal/log`. Each entry is `length (u32 BE) ‖ postcard
//! Entry`: an `Upsert` when a close records a file, a `Done` when its upload is committed.
//! Appending costs one `write(2)` per close — no file created, renamed or removed per file,
//! which on ext4 made directory lookups the client's biggest cost when many small files are
//! written. The syncer makes a batch of appends durable about once a second.
//!
//! Reading replays the log in order; a torn last entry (the client was killed mid-append) is
//! ignored, because its close had not returned. Opening compacts: the live entries are
//! written to a new log which replaces the old one atomically; the log is compacted again
//! while running once most of it is dead.

use crate::sync::LockOrRecover;
use serde::{Deserialize, Serialize};
use shelf_protocol::{NodeId, Timestamp};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const FORMAT: u8 = 1;
/// Compact while running once this many dead entries have piled up (and outnumber live ones).
const COMPACT_DEAD: usize = 10_000;

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

#[derive(Serialize, Deserialize, Debug)]
enum Entry {
    Upsert(Record),
    Done(NodeId),
    /// Where a journaled file was when it was closed (for messages, and for keeping
    /// content the server refuses after a restart, when the mount has not seen its name).
    Path(NodeId, String),
}

struct Log {
    file: File,
    live: BTreeMap<NodeId, Record>,
    /// Paths of live records, where known.
    paths: BTreeMap<NodeId, String>,
    /// Entries in the log that no longer describe a live record.
    dead: usize,
}

pub struct Journal {
    dir: PathBuf,
    log: Mutex<Log>,
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("log")
}

/// One log entry as written: `length (u32 BE) ‖ postcard body`.
pub(crate) fn frame<T: Serialize>(entry: &T) -> std::io::Result<Vec<u8>> {
    let body = postcard::to_stdvec(entry).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The entries of a log in order, up to a torn tail (whose append never returned).
pub(crate) fn entries<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Vec<T> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 4 <= bytes.len() {
        let len =
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let Some(body) = bytes.get(at + 4..at + 4 + len) else {
            break;
        };
        match postcard::from_bytes::<T>(body) {
            Ok(e) => out.push(e),
            Err(_) => break, // torn or damaged tail
        }
        at += 4 + len;
    }
    out
}

/// Replays a log: the live records in node order, and how many entries are dead.
type Paths = BTreeMap<NodeId, String>;

fn replay(bytes: &[u8]) -> (BTreeMap<NodeId, Record>, Paths, usize) {
    let mut live = BTreeMap::new();
    let mut paths = BTreeMap::new();
    let mut entries = 0usize;
    for entry in self::entries::<Entry>(bytes) {
        match entry {
            Entry::Upsert(rec) if rec.format == FORMAT => {
                live.insert(rec.node, rec);
            }
            Entry::Done(node) => {
                live.remove(&node);
                paths.remove(&node);
            }
            Entry::Path(node, path) => {
                paths.insert(node, path);
            }
            Entry::Upsert(rec) => {
                tracing::error!(
                    node = rec.node,
                    format = rec.format,
                    "journal record of unknown format"
                );
            }
        }
        entries += 1;
    }
    paths.retain(|node, _| live.contains_key(node));
    let dead = entries.saturating_sub(live.len() + paths.len());
    (live, paths, dead)
}

/// Appends one framed entry to a log opened for appending. A write that fails part way (a
/// full disk) is cut off again, so the entries after it stay readable.
pub(crate) fn append_whole(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    match file.write(bytes) {
        // The usual case: one write(2) took it all.
        Ok(n) if n == bytes.len() => Ok(()),
        first => {
            let written = first.as_ref().map_or(0, |n| *n);
            let len = file.metadata()?.len() - written as u64;
            match first.and_then(|_| file.write_all(&bytes[written..])) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = file.set_len(len);
                    Err(e)
                }
            }
        }
    }
}

/// Replaces the log at `path` with `bytes` atomically (synced before the rename) and opens
/// it for appending.
pub(crate) fn replace_log(path: &Path, bytes: &[u8]) -> std::io::Result<File> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    OpenOptions::new().append(true).open(path)
}

/// The bytes of the log at `path` (none if it does not exist yet).
pub(crate) fn read_log(path: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Writes `live` as a fresh log and puts it in place atomically.
fn rewrite(dir: &Path, live: &BTreeMap<NodeId, Record>, paths: &Paths) -> std::io::Result<File> {
    let mut bytes = Vec::new();
    for rec in live.values() {
        bytes.extend(frame(&Entry::Upsert(rec.clone()))?);
    }
    for (node, path) in paths {
        bytes.extend(frame(&Entry::Path(*node, path.clone()))?);
    }
    replace_log(&log_path(dir), &bytes)
}

impl Journal {
    /// Opens the journal in `dir`, replaying and compacting the log.
    pub fn open(dir: PathBuf) -> std::io::Result<Journal> {
        let bytes = read_log(&log_path(&dir))?;
        let (live, paths, _) = replay(&bytes);
        let file = rewrite(&dir, &live, &paths)?;
        Ok(Journal {
            dir,
            log: Mutex::new(Log {
                file,
                live,
                paths,
                dead: 0,
            }),
        })
    }

    fn append(&self, entry: Entry) -> std::io::Result<()> {
        let bytes = frame(&entry)?;
        let mut log = self.log.lock_or_recover();
        // One write(2) of the whole entry; O_APPEND keeps entries whole and in order.
        append_whole(&mut log.file, &bytes)?;
        match entry {
            Entry::Upsert(rec) => {
                if log.live.insert(rec.node, rec).is_some() {
                    log.dead += 1;
                }
            }
            Entry::Done(node) => {
                if log.live.remove(&node).is_some() {
                    log.dead += 2; // the upsert and this entry
                } else {
                    log.dead += 1;
                }
                if log.paths.remove(&node).is_some() {
                    log.dead += 1;
                }
            }
            Entry::Path(node, path) => {
                if log.paths.insert(node, path).is_some() {
                    log.dead += 1;
                }
            }
        }
        if log.dead >= COMPACT_DEAD && log.dead > 2 * log.live.len() {
            log.file = rewrite(&self.dir, &log.live, &log.paths)?;
            log.dead = 0;
        }
        Ok(())
    }

    /// Records (or re-records) a closed file.
    pub fn write(&self, rec: &Record) -> std::io::Result<()> {
        self.append(Entry::Upsert(rec.clone()))
    }

    /// Records that a file's upload is committed (or that it no longer needs one).
    pub fn remove(&self, node: NodeId) -> std::io::Result<()> {
        let known = self.log.lock_or_recover().live.contains_key(&node);
        if !known {
            return Ok(());
        }
        self.append(Entry::Done(node))
    }

    /// Records where a journaled file is (once per file: see [`Journal::path`]).
    pub fn set_path(&self, node: NodeId, path: &str) -> std::io::Result<()> {
        self.append(Entry::Path(node, path.to_string()))
    }

    /// Where a journaled file was when it was closed, if recorded.
    pub fn path(&self, node: NodeId) -> Option<String> {
        self.log.lock_or_recover().paths.get(&node).cloned()
    }

    /// Every live record, in node order.
    pub fn records(&self) -> Vec<Record> {
        self.log.lock_or_recover().live.values().cloned().collect()
    }
}

/// Number of live records in the journal folder `dir` (read-only; for `shelf status` and
/// `shelf umount`, which run beside the mount process).
pub fn count(dir: &Path) -> usize {
    std::fs::read(log_path(dir))
        .map(|b| replay(&b).0.len())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(node: NodeId) -> Record {
        Record::new(node, 2, Timestamp { secs: 5, nanos: 6 }, 10)
    }

    #[test]
    fn paths_survive_a_reopen_and_go_with_their_record() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path().to_path_buf()).unwrap();
        j.write(&rec(7)).unwrap();
        j.set_path(7, "shared/erin/doc.txt").unwrap();
        j.write(&rec(8)).unwrap();
        j.set_path(8, "files/a").unwrap();
        j.remove(8).unwrap();
        drop(j);
        let j = Journal::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(j.path(7).as_deref(), Some("shared/erin/doc.txt"));
        assert_eq!(j.path(8), None);
        assert_eq!(count(dir.path()), 1);
    }

    #[test]
    fn write_remove_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path().to_path_buf()).unwrap();
        j.write(&rec(300)).unwrap();
        j.write(&rec(301)).unwrap();
        j.write(&Record {
            size: 99,
            ..rec(300)
        })
        .unwrap();
        j.remove(301).unwrap();
        j.remove(301).unwrap();
        assert_eq!(count(dir.path()), 1);
        drop(j);
        let j = Journal::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(
            j.records(),
            vec![Record {
                size: 99,
                ..rec(300)
            }]
        );
        // Opening compacted the log to its one live entry.
        let len = std::fs::metadata(dir.path().join("log")).unwrap().len() as usize;
        assert_eq!(
            len,
            frame(&Entry::Upsert(Record {
                size: 99,
                ..rec(300)
            }))
            .unwrap()
            .len()
        );
    }

    #[test]
    fn torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path().to_path_buf()).unwrap();
        j.write(&rec(1)).unwrap();
        j.write(&rec(2)).unwrap();
        drop(j);
        let path = dir.path().join("log");
        let full = std::fs::read(&path).unwrap();
        for cut in 1..full.len() / 2 {
            std::fs::write(&path, &full[..full.len() - cut]).unwrap();
            assert_eq!(count(dir.path()), 1, "cut {cut}");
        }
        let j = Journal::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(j.records(), vec![rec(1)]);
    }

    #[test]
    fn compacts_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path().to_path_buf()).unwrap();
        for n in 0..(COMPACT_DEAD as u64) {
            j.write(&rec(n)).unwrap();
            j.remove(n).unwrap();
        }
        j.write(&rec(7)).unwrap();
        let len = std::fs::metadata(dir.path().join("log")).unwrap().len() as usize;
        assert!(len < 1000, "log was compacted ({len} bytes)");
        assert_eq!(count(dir.path()), 1);
    }
}

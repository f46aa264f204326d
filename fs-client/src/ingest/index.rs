//! What an import or backup of one source folder has sent: for each file (by its path
//! relative to the source) the store file it became and the size, mtime and content hash it
//! had then. A later run skips files whose size and mtime are unchanged, hashes the others,
//! and sends only those whose content changed, as new versions of the same store file. The
//! index is saved every few seconds during a run, so an interrupted import continues where
//! it stopped.
//!
//! Kept in `CONFIG/ingest/ID.index` (postcard), one per source folder and destination;
//! written atomically (temporary file, fsync, rename).

use serde::{Deserialize, Serialize};
use shelf_protocol::{ChunkRef, NodeId, Timestamp};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const FORMAT: u8 = 1;

/// One file sent from the source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// Its path in the store (`photos/work/WebProject/a.jpg`).
    pub dest: String,
    pub node: NodeId,
    /// The version that run made (or found): the base of the next one, so a file changed
    /// in the store meanwhile is a conflict (both kept), not overwritten.
    pub version: u64,
    pub size: u64,
    pub mtime: Timestamp,
    /// [`content_hash`] of what was sent.
    pub hash: [u8; 32],
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Index {
    format: u8,
    /// Source-relative path → what it became.
    pub files: BTreeMap<String, Sent>,
}

/// A hash of a file's content computed from its chunk list (chunking is deterministic, so
/// equal content gives equal lists): comparable with the server's manifest without
/// downloading anything.
pub fn content_hash(chunks: &[ChunkRef]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for c in chunks {
        h.update(&c.id.0);
        h.update(&c.len.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

/// The index file of source `src` sent into `dest` (a store path such as `work/Trip`).
pub fn path_for(src: &Path, dest: &str) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(src.as_os_str().as_encoded_bytes());
    h.update(b"\0");
    h.update(dest.as_bytes());
    let id = hex::encode(&h.finalize().as_bytes()[..12]);
    crate::config::config_dir()
        .join("ingest")
        .join(format!("{id}.index"))
}

impl Index {
    /// Loads an index; a missing one is empty. A damaged one is an error (it would make
    /// the next run send everything again, which is safe but should not be silent).
    pub fn load(path: &Path) -> std::io::Result<Index> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Index::default()),
            Err(e) => return Err(e),
        };
        let index: Index = postcard::from_bytes(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is damaged ({e}); remove it to send the whole folder again",
                    path.display()
                ),
            )
        })?;
        if index.format != FORMAT {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} was written by another version of shelf", path.display()),
            ));
        }
        Ok(index)
    }

    /// Writes the index atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let bytes = postcard::to_allocvec(&IndexRef {
            format: FORMAT,
            files: &self.files,
        })
        .map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

#[derive(Serialize)]
struct IndexRef<'a> {
    format: u8,
    files: &'a BTreeMap<String, Sent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        assert!(Index::load(&path).unwrap().files.is_empty());
        let mut index = Index::default();
        index.files.insert(
            "a/b.jpg".into(),
            Sent {
                dest: "photos/work/a/b.jpg".into(),
                node: 7,
                version: 2,
                size: 3,
                mtime: Timestamp { secs: 5, nanos: 6 },
                hash: [1; 32],
            },
        );
        index.save(&path).unwrap();
        assert_eq!(Index::load(&path).unwrap().files, index.files);
        std::fs::write(&path, b"\xff\xff garbage").unwrap();
        assert!(Index::load(&path).is_err());
    }
}

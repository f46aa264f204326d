//! Copying a store's metadata between engines (sled ↔ PostgreSQL) record for record, and
//! the digest that proves the copy: BLAKE3 over every non-empty tree's name and every
//! record's key and value, in key order.
//!
//! Records are copied as stored (sealed values stay sealed under the same data keys, and
//! the chunk index still points at the same packs or objects), so the copy serves exactly
//! what the original did once the data folder names the new engine.

use crate::kv::{Batch, Db, KvError};

/// Records written per batch.
const BATCH: usize = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("the destination already holds {records} records in tree {tree}; copy only into an empty database")]
    NotEmpty { tree: String, records: usize },
    #[error("the copy differs from the original (digest {copy} against {original})")]
    Differs { original: String, copy: String },
}

/// What a database holds, in short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Non-empty trees.
    pub trees: usize,
    pub records: u64,
    /// BLAKE3, hex.
    pub hash: String,
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records in {} trees, digest {}",
            self.records, self.trees, self.hash
        )
    }
}

fn hash_field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// The digest of every record of `db`.
pub fn digest(db: &Db) -> Result<Digest, MigrateError> {
    let mut names = db.tree_names()?;
    names.sort();
    let mut h = blake3::Hasher::new();
    let (mut trees, mut records) = (0, 0);
    for name in names {
        let tree = db.open_tree(&name)?;
        let mut first = true;
        for item in tree.iter() {
            let (k, v) = item?;
            if first {
                trees += 1;
                hash_field(&mut h, name.as_bytes());
                first = false;
            }
            hash_field(&mut h, &k);
            hash_field(&mut h, &v);
            records += 1;
        }
    }
    Ok(Digest {
        trees,
        records,
        hash: h.finalize().to_hex().to_string(),
    })
}

/// How many records `db` holds (for a progress bar).
pub fn count(db: &Db) -> Result<u64, MigrateError> {
    let mut n = 0;
    for name in db.tree_names()? {
        n += db.open_tree(&name)?.len() as u64;
    }
    Ok(n)
}

/// Copies every record of `from` into `to` (which must be empty), raises `to`'s ids above
/// every id `from` handed out, makes the copy durable, and checks both digests agree.
/// `progress` hears how many records were copied so far.
pub fn copy(from: &Db, to: &Db, progress: impl Fn(u64)) -> Result<Digest, MigrateError> {
    let names = from.tree_names()?;
    for name in &names {
        let there = to.open_tree(name)?;
        if !there.is_empty() {
            return Err(MigrateError::NotEmpty {
                tree: name.clone(),
                records: there.len(),
            });
        }
    }
    let mut copied = 0;
    for name in &names {
        let (src, dst) = (from.open_tree(name)?, to.open_tree(name)?);
        let mut batch = Batch::default();
        let mut in_batch = 0;
        for item in src.iter() {
            let (k, v) = item?;
            batch.insert(k, v);
            in_batch += 1;
            if in_batch == BATCH {
                dst.apply_batch(std::mem::take(&mut batch))?;
                copied += in_batch as u64;
                in_batch = 0;
                progress(copied);
            }
        }
        if in_batch > 0 {
            dst.apply_batch(batch)?;
            copied += in_batch as u64;
            progress(copied);
        }
    }
    to.raise_ids(from.last_id()?)?;
    to.flush()?;
    let (original, copy) = (digest(from)?, digest(to)?);
    if original != copy {
        return Err(MigrateError::Differs {
            original: original.to_string(),
            copy: copy.to_string(),
        });
    }
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_has_the_same_digest_and_ids_continue_above_the_original() {
        let (a, b) = (Db::temporary().unwrap(), Db::temporary().unwrap());
        let t = a.open_tree("nodes").unwrap();
        for i in 0u32..12_000 {
            t.insert(i.to_be_bytes(), i.to_le_bytes().to_vec()).unwrap();
        }
        a.open_tree("feed")
            .unwrap()
            .insert(b"k", &b"v"[..])
            .unwrap();
        a.open_tree("empty").unwrap();
        let top = (0..50).map(|_| a.generate_id().unwrap()).max().unwrap();
        let seen = std::cell::Cell::new(0);
        let d = copy(&a, &b, |n| seen.set(n)).unwrap();
        assert_eq!(d.records, 12_001);
        assert_eq!(d.trees, 2);
        assert_eq!(seen.get(), 12_001);
        assert_eq!(digest(&a).unwrap(), digest(&b).unwrap());
        assert!(b.generate_id().unwrap() > top);
        // One changed value changes the digest.
        b.open_tree("feed")
            .unwrap()
            .insert(b"k", &b"w"[..])
            .unwrap();
        assert_ne!(digest(&a).unwrap(), digest(&b).unwrap());
        // And a second copy into a database that holds records is refused.
        assert!(matches!(
            copy(&a, &b, |_| ()),
            Err(MigrateError::NotEmpty { .. })
        ));
    }
}

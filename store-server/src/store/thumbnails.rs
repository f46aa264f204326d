//! The thumbnail cache: the small JPEG the web app shows for a photo, made once per file
//! version and kept sealed with the owner's key like everything else at rest.
//!
//! | tree     | key  | value |
//! |----------|------|-------|
//! | `thumbs` | node | version (BE) ‖ sealed JPEG |
//!
//! One entry per file: a newer version's thumbnail replaces the older one, and the entry
//! goes with the account. Callers have already read the file through the one authorisation
//! function (the web door reads its attributes as the session first); the cache itself
//! only ever answers for the version asked.

use super::sealed::node_owner;
use super::{node_key, Store};
use crate::error::Result;
use shelf_protocol::NodeId;

/// Largest thumbnail kept (bytes).
pub const MAX_THUMBNAIL: usize = 256 << 10;

fn place(node: NodeId, version: u64) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&node.to_be_bytes());
    p[8..].copy_from_slice(&version.to_be_bytes());
    p
}

impl Store {
    fn owner_of_node(&self, node: NodeId) -> Result<Option<u64>> {
        match self.nodes.get(node_key(node))? {
            Some(v) => Ok(Some(node_owner(&v)?)),
            None => Ok(None),
        }
    }

    /// The cached thumbnail of `node` at `version`, if one was made.
    pub fn thumbnail(&self, node: NodeId, version: u64) -> Result<Option<Vec<u8>>> {
        let Some(v) = self.thumbs.get(node_key(node))? else {
            return Ok(None);
        };
        if v.len() < 8 || v[..8] != version.to_be_bytes() {
            return Ok(None);
        }
        let Some(owner) = self.owner_of_node(node)? else {
            return Ok(None);
        };
        let plain: Vec<u8> = self.open_rec(owner, b"thumb", &place(node, version), &v[8..])?;
        Ok(Some(plain))
    }

    /// Keeps the thumbnail of `node` at `version` (replacing an older version's).
    pub fn keep_thumbnail(&self, node: NodeId, version: u64, jpeg: &[u8]) -> Result<()> {
        if jpeg.len() > MAX_THUMBNAIL {
            return Ok(());
        }
        let Some(owner) = self.owner_of_node(node)? else {
            return Ok(());
        };
        let mut value = version.to_be_bytes().to_vec();
        value.extend(self.seal_rec(owner, b"thumb", &place(node, version), &jpeg.to_vec())?);
        self.thumbs.insert(node_key(node), value)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkstore::PackStore;
    use shelf_protocol::Role;
    use std::sync::Arc;

    #[test]
    fn thumbnails_are_sealed_kept_per_version_and_go_with_the_account() {
        let tmp = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::temporary().unwrap();
        let chunks = Arc::new(PackStore::open(tmp.path().join("packs"), &db).unwrap());
        let store = Store::with_chunk_store(db, chunks).unwrap();
        store.add_user("ann", "pw", Role::User).unwrap();
        store.add_user("boss", "pw", Role::Admin).unwrap();
        let (_, ctx) = store.login("ann", "pw", "d").unwrap();
        let node = store.lookup(&ctx, ctx.root, "photos").unwrap().node;
        let jpeg = b"\xff\xd8\xff\xe0 a small picture of a cat".repeat(20);
        store.keep_thumbnail(node, 3, &jpeg).unwrap();
        assert_eq!(
            store.thumbnail(node, 3).unwrap().as_deref(),
            Some(&jpeg[..])
        );
        // Another version's is not this one's.
        assert_eq!(store.thumbnail(node, 4).unwrap(), None);
        // Sealed: the bytes at rest are not the picture's.
        let raw = store.thumbs.get(node_key(node)).unwrap().unwrap();
        assert!(!raw.windows(12).any(|w| w == &b"picture of a"[..]));
        store.keep_thumbnail(node, 4, b"newer").unwrap();
        assert_eq!(store.thumbnail(node, 3).unwrap(), None);
        store.delete_user("ann", "boss").unwrap();
        assert!(store.thumbs.is_empty());
    }
}

//! [`SealedChunks`]: a [`ChunkStore`] that seals every chunk body with its account's data key
//! before the inner store (pack files, later an object store) sees it, and opens it on the
//! way out. The associated data is the account and the chunk id, so a body copied to another
//! account's index or under another id fails authentication — reported as corruption, never
//! returned as data.

use crate::chunkstore::ChunkStore;
use crate::crypto::{aad, CryptoError, Keyring, NONCE_LEN, OVERHEAD};
use crate::error::{Result, StoreError};
use shelf_protocol::ChunkId;
use std::sync::Arc;

pub struct SealedChunks {
    inner: Arc<dyn ChunkStore>,
    keys: Arc<Keyring>,
}

fn chunk_aad(account: u64, id: &ChunkId) -> Vec<u8> {
    aad(b"chunk", account, &id.0)
}

impl SealedChunks {
    pub fn new(inner: Arc<dyn ChunkStore>, keys: Arc<Keyring>) -> SealedChunks {
        SealedChunks { inner, keys }
    }
}

impl ChunkStore for SealedChunks {
    fn contains(&self, account: u64, id: &ChunkId) -> Result<bool> {
        self.inner.contains(account, id)
    }

    fn put(&self, account: u64, id: &ChunkId, data: &[u8]) -> Result<bool> {
        if self.inner.contains(account, id)? {
            return Ok(false);
        }
        let sealed = self
            .keys
            .data_key(account)?
            .seal(&chunk_aad(account, id), data)?;
        self.inner.put(account, id, &sealed)
    }

    fn get_split(&self, account: u64, id: &ChunkId, head: &mut [u8]) -> Result<Vec<u8>> {
        let mut body = self.get(account, id)?;
        if body.len() < head.len() {
            return Err(StoreError::Corrupt(format!(
                "chunk {} of account {account} is shorter than asked",
                hex::encode(&id.0[..8])
            )));
        }
        head.copy_from_slice(&body[..head.len()]);
        body.drain(..head.len());
        Ok(body)
    }

    fn get(&self, account: u64, id: &ChunkId) -> Result<Vec<u8>> {
        // The nonce is read apart, so the body is decrypted where the read put it.
        let mut nonce = [0u8; NONCE_LEN];
        let rest = self.inner.get_split(account, id, &mut nonce)?;
        self.keys
            .data_key(account)?
            .open_split(&chunk_aad(account, id), &nonce, rest)
            .map_err(|e| match e {
                CryptoError::Tampered => StoreError::Corrupt(format!(
                    "chunk {} of account {account} failed authentication",
                    hex::encode(&id.0[..8])
                )),
                other => other.into(),
            })
    }

    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    fn share_written(&self) -> Result<()> {
        self.inner.share_written()
    }

    /// Plaintext bytes (what the account stored), not counting the seals.
    fn usage(&self, account: u64) -> Result<(u64, u64)> {
        let (bytes, count) = self.inner.usage(account)?;
        Ok((bytes.saturating_sub(count * OVERHEAD as u64), count))
    }

    fn ids(&self, account: u64) -> Result<Vec<(ChunkId, u32)>> {
        Ok(self
            .inner
            .ids(account)?
            .into_iter()
            .map(|(id, len)| (id, len.saturating_sub(OVERHEAD as u32)))
            .collect())
    }

    fn remove(&self, account: u64, id: &ChunkId) -> Result<Option<u32>> {
        Ok(self
            .inner
            .remove(account, id)?
            .map(|len| len.saturating_sub(OVERHEAD as u32)))
    }

    fn compact(&self) -> Result<u64> {
        self.inner.compact()
    }

    fn disk(&self) -> Result<crate::chunkstore::DiskUse> {
        self.inner.disk()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkstore::PackStore;
    use crate::crypto::MasterKey;

    #[test]
    fn a_sealed_body_moved_to_another_account_or_id_does_not_open() {
        let tmp = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::temporary().unwrap();
        let packs: Arc<dyn ChunkStore> =
            Arc::new(PackStore::open(tmp.path().join("packs"), &db).unwrap());
        let keys = Arc::new(Keyring::new(&db, vec![MasterKey::generate().unwrap().0]).unwrap());
        let sealed = SealedChunks::new(packs.clone(), keys);
        let body = b"a private photo".to_vec();
        let id = ChunkId(*blake3::hash(&body).as_bytes());
        assert!(sealed.put(1, &id, &body).unwrap());
        assert_eq!(sealed.get(1, &id).unwrap(), body);
        let raw = packs.get(1, &id).unwrap();
        assert!(!raw.windows(7).any(|w| w == b"private"), "sealed on disk");
        assert_eq!(sealed.ids(1).unwrap(), vec![(id, body.len() as u32)]);
        assert_eq!(sealed.usage(1).unwrap(), (body.len() as u64, 1));

        // The same sealed bytes filed for account 2, or under another id of account 1.
        packs.put(2, &id, &raw).unwrap();
        assert!(matches!(sealed.get(2, &id), Err(StoreError::Corrupt(_))));
        let other = ChunkId([9; 32]);
        packs.put(1, &other, &raw).unwrap();
        assert!(matches!(sealed.get(1, &other), Err(StoreError::Corrupt(_))));
    }
}

//! Encryption at rest: AES-256-GCM envelope encryption.
//!
//! A *master key* (32 random bytes in a 0600 file, `DIR/master.key` by default) wraps one
//! random *data key* per account, kept in the `keys` tree. A data key seals everything of its
//! account that could reveal content or names: chunk bodies, node records (symlink targets,
//! extended attributes), file and folder names, feed entries, audit entries. Every sealed
//! value is `nonce (12, fresh random) ‖ ciphertext ‖ tag (16)`, bound by associated data to
//! its account and place ([`aad`]), so a value copied to another account or another key
//! fails authentication instead of being read.
//!
//! Directory entries are found by a *name token* — a BLAKE3 keyed hash of the name under a
//! key derived from the data key — so lookups need no plaintext name on disk.
//!
//! Rotation ([`Keyring::rewrap_all`]) re-wraps the data keys under a new master key; the
//! data itself is not re-encrypted. Each wrapped key names its master key by an 8-byte id,
//! so a rotation interrupted half way is finished by running it again.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};

/// Bytes a sealed value has beyond its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
pub const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_FORMAT: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The value was changed, truncated, or sealed for another account or place.
    #[error("authentication failed: the data was altered or belongs elsewhere")]
    Tampered,
    #[error("no randomness available: {0}")]
    Random(String),
    #[error("master key: {0}")]
    MasterKey(String),
    #[error(
        "the data key of account {account} is wrapped by master key {id}, which is not loaded"
    )]
    UnknownMaster { account: u64, id: String },
    #[error("key database: {0}")]
    Db(#[from] crate::kv::KvError),
    #[error("key record: {0}")]
    Record(#[from] postcard::Error),
}

type Result<T, E = CryptoError> = std::result::Result<T, E>;

/// Fills `buf` with random bytes from the operating system.
pub fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::getrandom(buf).map_err(|e| CryptoError::Random(e.to_string()))
}

/// Associated data for a sealed value: what it is (`kind`) and whose and where it is.
pub fn aad(kind: &[u8], account: u64, place: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(kind.len() + 9 + place.len());
    a.extend_from_slice(kind);
    a.push(0);
    a.extend_from_slice(&account.to_be_bytes());
    a.extend_from_slice(place);
    a
}

/// One AES-256-GCM key.
struct Sealer(Aes256Gcm);

impl Sealer {
    fn new(key: &[u8; 32]) -> Sealer {
        Sealer(Aes256Gcm::new(key.into()))
    }

    fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce)?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .0
            .encrypt_inout_detached(&Nonce::from(nonce), aad, (&mut out[NONCE_LEN..]).into())
            .map_err(|_| CryptoError::Tampered)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < OVERHEAD {
            return Err(CryptoError::Tampered);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Tampered)?;
        self.open_in_place(aad, &nonce, rest.to_vec())
    }

    /// Opens a sealed value whose nonce was read apart: `rest` is the ciphertext and its
    /// tag, decrypted where it lies.
    fn open_in_place(
        &self,
        aad: &[u8],
        nonce: &[u8; NONCE_LEN],
        mut rest: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let Some(body_len) = rest.len().checked_sub(TAG_LEN) else {
            return Err(CryptoError::Tampered);
        };
        let tag: [u8; TAG_LEN] = rest[body_len..]
            .try_into()
            .map_err(|_| CryptoError::Tampered)?;
        rest.truncate(body_len);
        self.0
            .decrypt_inout_detached(
                &Nonce::from(*nonce),
                aad,
                rest.as_mut_slice().into(),
                &tag.into(),
            )
            .map_err(|_| CryptoError::Tampered)?;
        Ok(rest)
    }
}

/// An account's data key: seals its values and makes its name tokens.
pub struct DataKey {
    sealer: Sealer,
    index: [u8; 32],
}

impl DataKey {
    fn new(raw: &[u8; 32]) -> DataKey {
        DataKey {
            sealer: Sealer::new(raw),
            index: blake3::derive_key("shelf 2026 name index", raw),
        }
    }

    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        self.sealer.seal(aad, plain)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        self.sealer.open(aad, sealed)
    }

    /// [`DataKey::open`] of a value whose first [`NONCE_LEN`] bytes were read into `nonce`
    /// and the rest into `rest`, decrypted in place.
    pub fn open_split(
        &self,
        aad: &[u8],
        nonce: &[u8; NONCE_LEN],
        rest: Vec<u8>,
    ) -> Result<Vec<u8>> {
        self.sealer.open_in_place(aad, nonce, rest)
    }

    /// The token under which a name is filed in a directory (the same name always gives
    /// the same token; without the key, tokens say nothing about names).
    pub fn name_token(&self, name: &str) -> [u8; 16] {
        let h = blake3::keyed_hash(&self.index, name.as_bytes());
        let mut t = [0u8; 16];
        t.copy_from_slice(&h.as_bytes()[..16]);
        t
    }
}

/// The key that wraps data keys.
pub struct MasterKey {
    sealer: Sealer,
    id: [u8; 8],
}

impl MasterKey {
    pub fn from_bytes(raw: &[u8; 32]) -> MasterKey {
        let h = blake3::derive_key("shelf 2026 master key id", raw);
        let mut id = [0u8; 8];
        id.copy_from_slice(&h[..8]);
        MasterKey {
            sealer: Sealer::new(raw),
            id,
        }
    }

    /// A fresh random key and its bytes (for writing to a file).
    pub fn generate() -> Result<(MasterKey, [u8; 32])> {
        let mut raw = [0u8; 32];
        random(&mut raw)?;
        Ok((MasterKey::from_bytes(&raw), raw))
    }

    /// Reads a key file: exactly 32 bytes, readable by its owner only.
    pub fn load(path: &Path) -> Result<MasterKey> {
        use std::os::unix::fs::PermissionsExt;
        let what = |e: std::io::Error| CryptoError::MasterKey(format!("{}: {e}", path.display()));
        let meta = std::fs::metadata(path).map_err(what)?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(CryptoError::MasterKey(format!(
                "{} is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            )));
        }
        let bytes = std::fs::read(path).map_err(what)?;
        let raw: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            CryptoError::MasterKey(format!(
                "{} holds {} bytes, a master key is 32",
                path.display(),
                bytes.len()
            ))
        })?;
        Ok(MasterKey::from_bytes(&raw))
    }

    /// A short public name of the key (not secret: a hash).
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }
}

/// A data key as stored: sealed by a master key.
#[derive(Serialize, Deserialize)]
struct WrappedKey {
    format: u8,
    master: [u8; 8],
    sealed: Vec<u8>,
}

fn wrap_aad(account: u64) -> Vec<u8> {
    aad(b"data key", account, &[])
}

/// Every account's data key, unwrapped on first use and kept in memory.
pub struct Keyring {
    /// The current master key first; older ones may follow after a rotation.
    masters: RwLock<Vec<Arc<MasterKey>>>,
    tree: crate::kv::Tree,
    cache: RwLock<HashMap<u64, Arc<DataKey>>>,
}

impl Keyring {
    /// `masters[0]` wraps new data keys; any of them may unwrap existing ones.
    pub fn new(db: &crate::kv::Db, masters: Vec<MasterKey>) -> Result<Keyring> {
        if masters.is_empty() {
            return Err(CryptoError::MasterKey("no master key".into()));
        }
        Ok(Keyring {
            masters: RwLock::new(masters.into_iter().map(Arc::new).collect()),
            tree: db.open_tree("keys")?,
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// The data key of `account`, made (and stored, wrapped) on first use.
    pub fn data_key(&self, account: u64) -> Result<Arc<DataKey>> {
        if let Some(k) = self
            .cache
            .read()
            .ok()
            .and_then(|c| c.get(&account).cloned())
        {
            return Ok(k);
        }
        let key = match self.tree.get(account.to_be_bytes())? {
            Some(bytes) => Arc::new(DataKey::new(&self.unwrap_key(account, &bytes)?)),
            None => self.create(account)?,
        };
        if let Ok(mut c) = self.cache.write() {
            c.insert(account, key.clone());
        }
        Ok(key)
    }

    fn create(&self, account: u64) -> Result<Arc<DataKey>> {
        let mut raw = [0u8; 32];
        random(&mut raw)?;
        let master = self.current()?;
        let wrapped = self.wrap(&master, account, &raw)?;
        // Two threads making the first key of one account: the first one stored wins.
        match self
            .tree
            .compare_and_swap(account.to_be_bytes(), None::<&[u8]>, Some(wrapped))?
        {
            Ok(()) => {
                self.tree.flush()?;
                Ok(Arc::new(DataKey::new(&raw)))
            }
            Err(current) => {
                let bytes = current.current.ok_or(CryptoError::Tampered)?;
                Ok(Arc::new(DataKey::new(&self.unwrap_key(account, &bytes)?)))
            }
        }
    }

    fn wrap(&self, master: &MasterKey, account: u64, raw: &[u8; 32]) -> Result<Vec<u8>> {
        let rec = WrappedKey {
            format: KEY_FORMAT,
            master: master.id,
            sealed: master.sealer.seal(&wrap_aad(account), raw)?,
        };
        Ok(postcard::to_stdvec(&rec)?)
    }

    fn unwrap_key(&self, account: u64, bytes: &[u8]) -> Result<[u8; 32]> {
        let rec: WrappedKey = postcard::from_bytes(bytes)?;
        if rec.format != KEY_FORMAT {
            return Err(CryptoError::MasterKey(format!(
                "wrapped key of account {account} has format {}",
                rec.format
            )));
        }
        let master = self
            .masters
            .read()
            .map_err(|_| CryptoError::MasterKey("the master key list was poisoned".into()))?
            .iter()
            .find(|m| m.id == rec.master)
            .cloned()
            .ok_or_else(|| CryptoError::UnknownMaster {
                account,
                id: hex::encode(rec.master),
            })?;
        let raw = master.sealer.open(&wrap_aad(account), &rec.sealed)?;
        raw.as_slice().try_into().map_err(|_| CryptoError::Tampered)
    }

    /// The master key that wraps new data keys.
    fn current(&self) -> Result<Arc<MasterKey>> {
        self.masters
            .read()
            .map_err(|_| CryptoError::MasterKey("the master key list was poisoned".into()))?
            .first()
            .cloned()
            .ok_or_else(|| CryptoError::MasterKey("no master key".into()))
    }

    /// Makes `new` the master key of this (running) keyring — the old ones still unwrap —
    /// and re-wraps every data key under it. Returns how many were re-wrapped.
    pub fn rotate_to(&self, new: MasterKey) -> Result<usize> {
        {
            let mut m = self
                .masters
                .write()
                .map_err(|_| CryptoError::MasterKey("the master key list was poisoned".into()))?;
            if m.first().map(|k| k.id) != Some(new.id) {
                m.insert(0, Arc::new(new));
            }
        }
        self.rewrap_all()
    }

    /// Re-wraps every data key not yet under `masters[0]` with it, and flushes. Returns
    /// how many were re-wrapped.
    pub fn rewrap_all(&self) -> Result<usize> {
        let current = &self.current()?;
        let mut done = 0;
        for item in self.tree.iter() {
            let (k, v) = item?;
            let rec: WrappedKey = postcard::from_bytes(&v)?;
            if rec.master == current.id {
                continue;
            }
            let account = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| CryptoError::Tampered)?;
            let raw = self.unwrap_key(account, &v)?;
            self.tree.insert(k, self.wrap(current, account, &raw)?)?;
            done += 1;
        }
        self.tree.flush()?;
        Ok(done)
    }

    /// Unwraps every stored data key and keeps it in memory, so a wrong master key is a
    /// clear error at start rather than a failure at some later request — and no later
    /// lookup of a key reads the database (namespace transactions cannot).
    pub fn check_all(&self) -> Result<usize> {
        let mut n = 0;
        for item in self.tree.iter() {
            let (k, v) = item?;
            let account = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| CryptoError::Tampered)?;
            let raw = self.unwrap_key(account, &v).map_err(|e| match e {
                CryptoError::Tampered => CryptoError::MasterKey(format!(
                    "the data key of account {account} does not open with the loaded master key"
                )),
                other => other,
            })?;
            if let Ok(mut c) = self.cache.write() {
                c.insert(account, Arc::new(DataKey::new(&raw)));
            }
            n += 1;
        }
        Ok(n)
    }

    /// Destroys an account's data key: what it sealed can never be opened again.
    pub fn forget(&self, account: u64) -> Result<()> {
        self.tree.remove(account.to_be_bytes())?;
        self.tree.flush()?;
        if let Ok(mut c) = self.cache.write() {
            c.remove(&account);
        }
        Ok(())
    }

    /// How many data keys are wrapped by each master key id.
    pub fn wrapped_by(&self) -> Result<HashMap<String, usize>> {
        let mut out = HashMap::new();
        for item in self.tree.iter() {
            let (_, v) = item?;
            let rec: WrappedKey = postcard::from_bytes(&v)?;
            *out.entry(hex::encode(rec.master)).or_default() += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(masters: Vec<MasterKey>) -> (Keyring, crate::kv::Db) {
        let db = crate::kv::Db::temporary().unwrap();
        (Keyring::new(&db, masters).unwrap(), db)
    }

    #[test]
    fn sealed_values_open_only_with_their_aad() {
        let (keys, _db) = ring(vec![MasterKey::generate().unwrap().0]);
        let k = keys.data_key(7).unwrap();
        let a = aad(b"chunk", 7, b"id");
        let sealed = k.seal(&a, b"holiday photo").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"holiday"));
        assert_eq!(k.open(&a, &sealed).unwrap(), b"holiday photo");
        // Another place, another account, another key: all refused.
        assert!(k.open(&aad(b"chunk", 7, b"other"), &sealed).is_err());
        assert!(k.open(&aad(b"chunk", 8, b"id"), &sealed).is_err());
        let other = keys.data_key(8).unwrap();
        assert!(other.open(&a, &sealed).is_err());
        // A flipped bit or a cut is refused.
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(k.open(&a, &bad).is_err());
        assert!(k.open(&a, &sealed[..sealed.len() - 1]).is_err());
        assert!(k.open(&a, &sealed[..5]).is_err());
        // Fresh nonces: the same plaintext seals differently.
        assert_ne!(sealed, k.seal(&a, b"holiday photo").unwrap());
        assert_eq!(k.name_token("a.txt"), k.name_token("a.txt"));
        assert_ne!(k.name_token("a.txt"), other.name_token("a.txt"));
    }

    #[test]
    fn rotation_rewraps_and_the_old_master_key_is_no_longer_needed() {
        let (old, old_raw) = MasterKey::generate().unwrap();
        let db = crate::kv::Db::temporary().unwrap();
        let a = aad(b"x", 1, b"");
        let sealed = {
            let keys = Keyring::new(&db, vec![old]).unwrap();
            keys.data_key(1).unwrap().seal(&a, b"secret").unwrap()
        };
        let (new, new_raw) = MasterKey::generate().unwrap();
        let keys = Keyring::new(&db, vec![new, MasterKey::from_bytes(&old_raw)]).unwrap();
        assert_eq!(keys.rewrap_all().unwrap(), 1);
        assert_eq!(
            keys.rewrap_all().unwrap(),
            0,
            "a second run has nothing left"
        );
        let only_new = Keyring::new(&db, vec![MasterKey::from_bytes(&new_raw)]).unwrap();
        assert_eq!(
            only_new.data_key(1).unwrap().open(&a, &sealed).unwrap(),
            b"secret"
        );
        let only_old = Keyring::new(&db, vec![MasterKey::from_bytes(&old_raw)]).unwrap();
        assert!(matches!(
            only_old.data_key(1),
            Err(CryptoError::UnknownMaster { .. })
        ));
    }
}

//! The layout of a server data folder:
//!
//! ```text
//! DIR/db/            sled database
//! DIR/packs/         append-only chunk pack files
//! DIR/object-store.json  (optional, 0600) the S3 bucket chunk packs go to instead
//! DIR/tls/cert.pem   self-signed certificate (its SHA-256 fingerprint is what clients pin)
//! DIR/tls/key.pem    its private key (0600)
//! DIR/master.key     32 random bytes (0600): wraps every account's data key (the path can
//!                    be set with --master-key / SHELF_MASTER_KEY, e.g. to keep it on
//!                    another disk than the data)
//! DIR/master.key.new the next master key while a rotation is under way
//! DIR/postgres.json  (optional, 0600) the PostgreSQL database the metadata is in instead
//! ```
//!
//! Several servers of one store (metadata on PostgreSQL, chunks in a bucket) each have a
//! data folder of their own, made with `init --join` ([`DataDir::join`]): the same
//! certificate, master key and settings; nothing else in it is shared.

use crate::crypto::{CryptoError, Keyring, MasterKey};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct DataDir {
    pub root: PathBuf,
    /// Where the master key is, if not `DIR/master.key`.
    pub master_key_path: Option<PathBuf>,
}

/// What a master key rotation did.
pub struct Rotation {
    pub old_id: String,
    pub new_id: String,
    pub rewrapped: usize,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir {
            root: root.into(),
            master_key_path: None,
        }
    }

    /// The same folder with its master key kept at `path` (None: `DIR/master.key`).
    pub fn with_master_key(mut self, path: Option<PathBuf>) -> DataDir {
        self.master_key_path = path;
        self
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }
    pub fn packs(&self) -> PathBuf {
        self.root.join("packs")
    }
    /// Where chunk bodies go when not in `packs/`: an S3 bucket ([`crate::object_packs`]).
    pub fn object_store(&self) -> PathBuf {
        self.root.join("object-store.json")
    }
    /// Where the metadata goes when not in `db/`: a PostgreSQL database ([`crate::kv::pg`]).
    pub fn postgres(&self) -> PathBuf {
        self.root.join("postgres.json")
    }
    pub fn cert(&self) -> PathBuf {
        self.root.join("tls").join("cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.root.join("tls").join("key.pem")
    }
    pub fn master_key(&self) -> PathBuf {
        self.master_key_path
            .clone()
            .unwrap_or_else(|| self.root.join("master.key"))
    }

    /// Where the next master key waits while a rotation is under way.
    pub fn next_master_key(&self) -> PathBuf {
        let mut p = self.master_key().into_os_string();
        p.push(".new");
        PathBuf::from(p)
    }

    /// The master keys to open the store with: the current one, and the next one when a
    /// rotation was interrupted (data keys may be wrapped by either).
    pub fn master_keys(&self) -> Result<Vec<MasterKey>, CryptoError> {
        let mut keys = vec![MasterKey::load(&self.master_key())?];
        if self.next_master_key().exists() {
            keys.push(MasterKey::load(&self.next_master_key())?);
        }
        Ok(keys)
    }

    /// Re-wraps every data key under a new master key, then replaces the key file. The
    /// server must be stopped. Safe to interrupt: the new key is written (and synced)
    /// first as `master.key.new`, and a second run finishes with that same key.
    pub fn rotate_master_key(&self) -> anyhow::Result<Rotation> {
        self.rotate_master_key_with(None)
    }

    /// [`DataDir::rotate_master_key`], by a running server on its own open `keys` when
    /// given (the server keeps serving; new data keys are wrapped by the new master key).
    pub fn rotate_master_key_with(&self, keys: Option<&Keyring>) -> anyhow::Result<Rotation> {
        let old = MasterKey::load(&self.master_key())?;
        let next = self.next_master_key();
        let new = if next.exists() {
            MasterKey::load(&next)?
        } else {
            let (key, raw) = MasterKey::generate()?;
            write_private(&next, &raw)?;
            key
        };
        let (old_id, new_id) = (old.id(), new.id());
        let rewrapped = match keys {
            Some(running) => running.rotate_to(new)?,
            None => {
                let db = crate::store::open_db(self)?;
                let keys = Keyring::new(&db, vec![new, old])?;
                let n = keys.rewrap_all()?;
                db.flush()?;
                n
            }
        };
        std::fs::rename(&next, self.master_key())?;
        if let Some(parent) = self.master_key().parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(Rotation {
            old_id,
            new_id,
            rewrapped,
        })
    }
    pub fn is_initialised(&self) -> bool {
        self.cert().exists() && self.key().exists()
    }

    /// Creates the folder, certificate and keys. Refuses to overwrite an existing one.
    /// Returns the certificate's SHA-256 fingerprint.
    pub fn init(&self, hostnames: &[String]) -> anyhow::Result<String> {
        if self.is_initialised() {
            anyhow::bail!(
                "{} is already initialised (fingerprint {})",
                self.root.display(),
                crate::tls::fingerprint_of_file(&self.cert())?
            );
        }
        std::fs::create_dir_all(self.root.join("tls"))?;
        std::fs::create_dir_all(self.packs())?;
        let (cert_pem, key_pem) = crate::tls::generate(hostnames)?;
        write_private(&self.key(), key_pem.as_bytes())?;
        std::fs::write(self.cert(), cert_pem.as_bytes())?;
        if self.master_key().exists() {
            // A key kept elsewhere and made beforehand: check it, keep it.
            MasterKey::load(&self.master_key())?;
        } else {
            if let Some(parent) = self.master_key().parent() {
                std::fs::create_dir_all(parent)?;
            }
            let (_, raw) = MasterKey::generate()?;
            write_private(&self.master_key(), &raw)?;
        }
        crate::tls::fingerprint_of_file(&self.cert())
    }
}

impl DataDir {
    /// Makes this folder a data folder for one more server of the store `existing` serves:
    /// the same certificate (clients pin one fingerprint, whichever server answers behind
    /// a balancer), the same master key, and the same database and bucket settings. Only
    /// a store whose metadata is on PostgreSQL and whose chunks are in a bucket can have
    /// several servers. Returns the fingerprint.
    pub fn join(&self, existing: &DataDir) -> anyhow::Result<String> {
        if !existing.is_initialised() {
            anyhow::bail!("{} is not a data folder", existing.root.display());
        }
        if self.is_initialised() {
            anyhow::bail!("{} is already initialised", self.root.display());
        }
        let shared_db = crate::store::postgres_config(existing)?.is_some();
        let shared_chunks = crate::object_packs::S3Config::from_file(&existing.object_store())?
            .is_some()
            || crate::object_packs::S3Config::from_env().is_some();
        if !shared_db || !shared_chunks {
            anyhow::bail!(
                "{} keeps its {} on its own disk: several servers need the metadata on \
                 PostgreSQL (`shelf-server migrate --to postgres`) and the chunks in an S3 \
                 bucket (object-store.json)",
                existing.root.display(),
                match (shared_db, shared_chunks) {
                    (false, false) => "metadata and chunks",
                    (false, true) => "metadata",
                    _ => "chunks",
                }
            );
        }
        std::fs::create_dir_all(self.root.join("tls"))?;
        std::fs::write(self.cert(), std::fs::read(existing.cert())?)?;
        write_private(&self.key(), &std::fs::read(existing.key())?)?;
        if !self.master_key().exists() {
            let key = std::fs::read(existing.master_key())?;
            if let Some(parent) = self.master_key().parent() {
                std::fs::create_dir_all(parent)?;
            }
            write_private(&self.master_key(), &key)?;
        }
        MasterKey::load(&self.master_key())?;
        for (from, to) in [
            (existing.postgres(), self.postgres()),
            (existing.object_store(), self.object_store()),
        ] {
            if from.exists() {
                write_private(&to, &std::fs::read(&from)?)?;
            }
        }
        crate::tls::fingerprint_of_file(&self.cert())
    }
}

/// Writes a file readable only by its owner, replacing any old one atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

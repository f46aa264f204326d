//! The layout of a server data folder:
//!
//! ```text
//! DIR/db/            sled database
//! DIR/packs/         append-only chunk pack files
//! DIR/tls/cert.pem   self-signed certificate (its SHA-256 fingerprint is what clients pin)
//! DIR/tls/key.pem    its private key (0600)
//! DIR/master.key     32 random bytes (0600) for encryption at rest
//! ```

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }
    pub fn packs(&self) -> PathBuf {
        self.root.join("packs")
    }
    pub fn cert(&self) -> PathBuf {
        self.root.join("tls").join("cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.root.join("tls").join("key.pem")
    }
    pub fn master_key(&self) -> PathBuf {
        self.root.join("master.key")
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
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        write_private(&self.master_key(), &key)?;
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

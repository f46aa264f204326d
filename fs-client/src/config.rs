//! Where the client keeps things, and the login record.
//!
//! * Config folder: `SHELF_CONFIG_DIR`, else `$XDG_CONFIG_HOME/shelf`, else `~/.config/shelf`.
//!   It holds `login` (mode 0600): server address, pinned fingerprint, user, device and the
//!   session token — never the password.
//! * Cache folder: `--cache`, else `SHELF_CACHE_DIR`, else `<config folder>/cache` when
//!   `SHELF_CONFIG_DIR` is set (so each test device is self-contained), else
//!   `$XDG_CACHE_HOME/shelf` or `~/.cache/shelf`.
//! * Data folder of the local server `shelf up` runs: `$XDG_DATA_HOME/shelf/server` or
//!   `~/.local/share/shelf/server`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "not logged in: run `shelf login HOST:PORT --user NAME --device NAME` (or `shelf up`)"
    )]
    NotLoggedIn,
    #[error("the login record {path} is damaged: {why}")]
    Damaged { path: PathBuf, why: String },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHELF_CONFIG_DIR") {
        return PathBuf::from(d);
    }
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".config"))
        .join("shelf")
}

pub fn cache_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(d) = std::env::var_os("SHELF_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("SHELF_CONFIG_DIR") {
        return PathBuf::from(d).join("cache");
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache"))
        .join("shelf")
}

pub fn data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".local").join("share"))
        .join("shelf")
}

/// What `shelf login` stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub server: String,
    pub fingerprint: String,
    pub user: String,
    pub device: String,
    pub token: String,
    /// A CA certificate file the server's certificate must chain to (instead of the pinned
    /// fingerprint), when logged in with `--ca-file`.
    pub ca: Option<PathBuf>,
}

impl Login {
    pub fn path() -> PathBuf {
        config_dir().join("login")
    }

    pub fn load() -> Result<Login, ConfigError> {
        let path = Login::path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotLoggedIn)
            }
            Err(source) => return Err(ConfigError::Io { path, source }),
        };
        let get = |key: &str| -> Result<String, ConfigError> {
            text.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .map(|v| v.trim().to_string())
                .ok_or_else(|| ConfigError::Damaged {
                    path: path.clone(),
                    why: format!("missing {key}"),
                })
        };
        Ok(Login {
            server: get("server")?,
            fingerprint: get("fingerprint")?,
            user: get("user")?,
            device: get("device")?,
            token: get("token")?,
            ca: get("ca").ok().map(PathBuf::from),
        })
    }

    /// Writes the record with mode 0600, atomically.
    pub fn save(&self) -> Result<(), ConfigError> {
        let dir = config_dir();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ConfigError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = Login::path();
        let tmp = dir.join("login.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        write!(
            f,
            "# Shelf login record: a session token, never a password.\nserver={}\nfingerprint={}\nuser={}\ndevice={}\ntoken={}\n",
            self.server, self.fingerprint, self.user, self.device, self.token
        )
        .and_then(|_| match &self.ca {
            Some(ca) => writeln!(f, "ca={}", ca.display()),
            None => Ok(()),
        })
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }
}

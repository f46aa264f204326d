//! Garage (the distributed S3-compatible store, crates.io `garage`) as tests run it: one
//! node on loopback ports in a temporary folder, a bucket and a key made with its own CLI,
//! stopped by PID. `.ci/run` installs the binary into `~/.cache/shelf-tools/garage`
//! (`SHELF_GARAGE` names another one).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The garage binary.
pub fn garage_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SHELF_GARAGE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let p = home.join(".cache/shelf-tools/garage/bin/garage");
    assert!(
        p.exists(),
        "{} missing: `cargo install garage --locked --root ~/.cache/shelf-tools/garage` (.ci/run does)",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One Garage node with a bucket `shelf` and a key allowed to use it.
pub struct Garage {
    child: Option<Child>,
    config: PathBuf,
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    /// Where the node keeps object data (uncompressed, so tests can look inside).
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Garage {
    pub fn start() -> Garage {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rpc, s3) = (free_port(), free_port());
        let mut secret = [0u8; 32];
        getrandom_fill(&mut secret);
        let rpc_secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let config = dir.path().join("garage.toml");
        let data_dir = dir.path().join("data");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\ncompression_level = \"none\"\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{rpc_secret}\"\n\n[s3_api]\ns3_region = \"garage\"\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n",
                meta = dir.path().join("meta").display(),
                data = data_dir.display(),
            ),
        )
        .expect("garage.toml");
        let log = std::fs::File::create(dir.path().join("garage.log")).expect("log");
        let mut cmd = Command::new(garage_bin());
        cmd.arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl only sets this child's parent-death signal.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start garage");
        let mut g = Garage {
            child: Some(child),
            config,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: "shelf".into(),
            key_id: String::new(),
            secret: String::new(),
            data_dir,
            _dir: dir,
        };
        let start = Instant::now();
        let id = loop {
            let out = g.cli(&["node", "id", "-q"]);
            if out.0 {
                break out.1.trim().chars().take(16).collect::<String>();
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "garage did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        g.ok(&["layout", "assign", "-z", "dc1", "-c", "1G", &id]);
        g.ok(&["layout", "apply", "--version", "1"]);
        g.ok(&["bucket", "create", "shelf"]);
        let key = g.ok(&["key", "create", "shelf-key"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                .expect("garage key create prints the key")
        };
        g.key_id = field("Key ID:");
        g.secret = field("Secret key:");
        g.ok(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "shelf",
            "--key",
            "shelf-key",
        ]);
        g
    }

    /// `(success, stdout)` of a garage CLI command against this node.
    fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("garage");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.cli(args);
        assert!(ok, "garage {args:?}: {out}");
        out
    }

    /// The environment that points a `shelf-server` at the bucket.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SHELF_S3_ENDPOINT", self.endpoint.clone()),
            ("SHELF_S3_BUCKET", self.bucket.clone()),
            ("SHELF_S3_REGION", "garage".into()),
            ("SHELF_S3_ACCESS_KEY_ID", self.key_id.clone()),
            ("SHELF_S3_SECRET_ACCESS_KEY", self.secret.clone()),
        ]
    }

    /// Bytes of object data the node holds.
    pub fn stored_bytes(&self) -> u64 {
        fn walk(p: &std::path::Path) -> u64 {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| match e.file_type() {
                            Ok(t) if t.is_dir() => walk(&e.path()),
                            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.data_dir)
    }
}

fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("random bytes");
}

impl Drop for Garage {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

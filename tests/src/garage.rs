//! Garage (the distributed S3-compatible store, crates.io `garage`) as tests run it: one
//! node, or a cluster of several, on loopback ports in a temporary folder, a bucket and a
//! key made with its own CLI, stopped by PID. `scripts/test-deps` builds the binary into
//! `~/.cache/shelf-tools/garage` (`SHELF_GARAGE` names another one).

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
        "{} missing: run `scripts/test-deps` (it builds garage there)",
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

/// One node of a cluster: its process, configuration and RPC port.
struct Node {
    child: Option<Child>,
    config: PathBuf,
    rpc: u16,
}

/// A Garage cluster (one node, or several with every object on each) with a bucket
/// `shelf` and a key allowed to use it; clients talk to the first node's S3 API.
pub struct Garage {
    nodes: Vec<Node>,
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    /// Where the first node keeps object data (uncompressed, so tests can look inside).
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Garage {
    /// One node.
    pub fn start() -> Garage {
        Garage::cluster(1)
    }

    /// `n` nodes on loopback ports, each holding a copy of every object (replication
    /// factor `n`), each in its own zone.
    pub fn cluster(n: usize) -> Garage {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut secret = [0u8; 32];
        getrandom_fill(&mut secret);
        let rpc_secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let mut nodes = Vec::new();
        let mut endpoint = String::new();
        for i in 0..n {
            let (rpc, s3) = (free_port(), free_port());
            let here = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&here).expect("node folder");
            let config = here.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
                     replication_factor = {n}\ncompression_level = \"none\"\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_secret = \"{rpc_secret}\"\n\n[s3_api]\ns3_region = \"garage\"\n\
                     api_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n",
                    meta = here.join("meta").display(),
                    data = here.join("data").display(),
                ),
            )
            .expect("garage.toml");
            if i == 0 {
                endpoint = format!("http://127.0.0.1:{s3}");
            }
            let log = std::fs::File::create(here.join("garage.log")).expect("log");
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
            nodes.push(Node {
                child: Some(child),
                config,
                rpc,
            });
        }
        let mut g = Garage {
            nodes,
            endpoint,
            bucket: "shelf".into(),
            key_id: String::new(),
            secret: String::new(),
            data_dir: dir.path().join("node0/data"),
            _dir: dir,
        };
        let ids: Vec<String> = (0..n).map(|i| g.node_id(i)).collect();
        for (i, id) in ids.iter().enumerate().skip(1) {
            let peer = format!("{id}@127.0.0.1:{}", g.nodes[i].rpc);
            g.ok(&["node", "connect", &peer]);
        }
        for (i, id) in ids.iter().enumerate() {
            let short: String = id.chars().take(16).collect();
            g.ok(&[
                "layout",
                "assign",
                "-z",
                &format!("dc{i}"),
                "-c",
                "1G",
                &short,
            ]);
        }
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

    /// The full id of node `i`, once it answers.
    fn node_id(&self, i: usize) -> String {
        let start = Instant::now();
        loop {
            let out = Command::new(garage_bin())
                .arg("-c")
                .arg(&self.nodes[i].config)
                .args(["node", "id", "-q"])
                .output()
                .expect("garage");
            if out.status.success() {
                let id = String::from_utf8_lossy(&out.stdout);
                return id.trim().split('@').next().unwrap_or_default().to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "garage did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills node `i` (SIGKILL, by PID).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `(success, stdout)` of a garage CLI command against this node.
    fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.nodes[0].config)
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
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}

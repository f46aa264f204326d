//! HAProxy (Debian `haproxy`) as tests run it: a TCP balancer on a loopback port in front of
//! several `shelf-server`s (TLS passes through: every server shows the same certificate),
//! sending each new connection to the server with the fewest, checking them every 200 ms
//! and sending a connection that cannot reach one to another. Started in the foreground
//! from a temporary folder, stopped by PID.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Haproxy {
    /// Where clients connect.
    pub addr: String,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Haproxy {
    /// Balances over `servers` (HOST:PORT each).
    pub fn start(servers: &[&str]) -> Haproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut config = format!(
            "global\n  maxconn 4000\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 1h\n  timeout server 1h\n  \
             retries 3\n  option redispatch\n\
             frontend shelf\n  bind 127.0.0.1:{port}\n  default_backend servers\n\
             backend servers\n  balance leastconn\n"
        );
        for (i, s) in servers.iter().enumerate() {
            config.push_str(&format!(
                "  server s{i} {s} check inter 200ms fall 1 rise 2\n"
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("haproxy.cfg");
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("haproxy (apt install haproxy)");
        let addr = format!("127.0.0.1:{port}");
        let up = crate::wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        let hp = Haproxy {
            addr,
            child: Some(child),
            _dir: dir,
        };
        assert!(up, "haproxy listens");
        hp
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Established connections to the local TCP port of `addr` (HOST:PORT), as `ss` counts
/// them: which servers a balancer is using.
pub fn connections_to(addr: &str) -> usize {
    let port = addr.rsplit(':').next().unwrap_or_default();
    let out = Command::new("ss")
        .args(["-tnH", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

//! PostgreSQL 15 (Debian's) as tests run it: `initdb` and `pg_ctl` as user `postgres` in a
//! temporary folder, listening on a free loopback port (and a socket in that folder), a
//! database `shelf`, stopped by the PID in its `postmaster.pid`. `scripts/test-deps`
//! installs the package.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = "/usr/lib/postgresql/15/bin";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs a PostgreSQL program as user `postgres`.
fn as_postgres(program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--reset-env",
    ])
    .arg(Path::new(BIN).join(program));
    c
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running PostgreSQL server with an empty database `shelf`.
pub struct Postgres {
    pub port: u16,
    data: PathBuf,
    stopped: bool,
    _dir: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> Postgres {
        assert!(
            Path::new(BIN).join("initdb").exists(),
            "PostgreSQL 15 missing: run `scripts/test-deps` (it installs postgresql-15)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(chown.success(), "chown the folder to postgres");
        let data = dir.path().join("data");
        let mut init = as_postgres("initdb");
        init.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(init, "initdb");
        // A free port can be taken by another test between the check and the start (tests
        // run in parallel): a failed start tries another port, and reports its log.
        let log = dir.path().join("log");
        let mut port = 0;
        for attempt in 1..=3 {
            port = free_port();
            let mut start = as_postgres("pg_ctl");
            start
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .arg("-o")
                .arg(format!(
                    "-p {port} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200",
                    dir.path().display()
                ))
                .args(["-w", "start"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if start.status().is_ok_and(|s| s.success()) {
                break;
            }
            assert!(
                attempt < 3,
                "pg_ctl start failed 3 times; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let pg = Postgres {
            port,
            data,
            stopped: false,
            _dir: dir,
        };
        pg.psql("CREATE DATABASE shelf");
        pg
    }

    /// The connection string Shelf takes (`SHELF_POSTGRES_URL`, `postgres.json`).
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=shelf",
            self.port
        )
    }

    /// The environment that points `shelf-server` at this database.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("SHELF_POSTGRES_URL", self.url())]
    }

    /// Runs SQL in database `shelf` (or `postgres` for CREATE DATABASE); returns its output.
    pub fn psql(&self, sql: &str) -> String {
        let db = if sql.starts_with("CREATE DATABASE") {
            "postgres"
        } else {
            "shelf"
        };
        let out = Command::new(Path::new(BIN).join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The postmaster's PID, from its PID file.
    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let mut stop = as_postgres("pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let stopped = stop.status().is_ok_and(|s| s.success());
        if !stopped {
            if let Some(pid) = self.pid() {
                // SAFETY: kill(2) on the postmaster this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

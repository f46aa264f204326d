//! Test harness for the end-to-end suite: a real `shelf-server` process on a free loopback
//! port, real `shelf` logins in separate config folders (one per device), and real FUSE
//! mounts. Every guard cleans up on drop — mounts are unmounted and processes stopped by the
//! PID this harness started, never by name — so a failing test leaves nothing behind.
//!
//! The binaries come from the target folder: run the suite with `cargo test --workspace`
//! (as README.md says), which rebuilds `shelf` and `shelf-server` first; `cargo test -p
//! shelf-tests` alone would drive whatever binaries were built last.

pub mod garage;
pub mod haproxy;
pub mod postgres;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the built `shelf` and `shelf-server` binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/e2e-xxxx → target/debug; target/release/shelf-load → target/release
    let dir = exe.parent().expect("target dir");
    match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().expect("target dir").to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

pub fn shelf_bin() -> PathBuf {
    let p = bin_dir().join("shelf");
    assert!(
        p.exists(),
        "{} missing: run `cargo test --workspace`",
        p.display()
    );
    p
}

pub fn server_bin() -> PathBuf {
    let p = bin_dir().join("shelf-server");
    assert!(
        p.exists(),
        "{} missing: run `cargo test --workspace`",
        p.display()
    );
    p
}

/// A running `shelf-server` with its own data folder.
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub fingerprint: String,
    pub data: PathBuf,
    /// The web app's URL (`https://127.0.0.1:PORT/`) when started with [`Server::start_web`].
    pub web: Option<String>,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Initialises a data folder, adds `users` as (name, password, role), and starts serving.
    pub fn start(users: &[(&str, &str, &str)]) -> Server {
        Server::start_with_env(users, &[])
    }

    /// [`Server::start`] with extra environment for the server process (e.g. a short
    /// `SHELF_LEASE_SECS`).
    pub fn start_with_env(users: &[(&str, &str, &str)], env: &[(&str, &str)]) -> Server {
        Server::start_full(users, env, false)
    }

    /// [`Server::start`] with the web app on a free loopback port too (`--web`).
    pub fn start_web(users: &[(&str, &str, &str)]) -> Server {
        Server::start_full(users, &[], true)
    }

    /// One more server of this server's store (`init --join`): its own data folder and
    /// port, the same certificate, master key, database and bucket (and environment).
    pub fn join(&self) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let out = Command::new(server_bin())
            .args(["init", "--data"])
            .arg(&data)
            .arg("--join")
            .arg(&self.data)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("shelf-server init --join");
        assert!(
            out.status.success(),
            "init --join: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fingerprint = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("fingerprint ").map(str::to_string))
            .expect("init prints the fingerprint");
        assert_eq!(fingerprint, self.fingerprint, "the same certificate");
        let mut s = Server {
            child: None,
            addr: "127.0.0.1:0".into(),
            fingerprint,
            data,
            web: None,
            env: self.env.clone(),
            _dir: dir,
        };
        s.run();
        s
    }

    fn start_full(users: &[(&str, &str, &str)], env: &[(&str, &str)], web: bool) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let out = Command::new(server_bin())
            .args(["init", "--data"])
            .arg(&data)
            .envs(env.iter().copied())
            .output()
            .expect("shelf-server init");
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fingerprint = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("fingerprint ").map(str::to_string))
            .expect("init prints the fingerprint");
        for (name, password, role) in users {
            let out = Command::new(server_bin())
                .args(["user", "add", name, "--role", role, "--data"])
                .arg(&data)
                .env("SHELF_PASSWORD", password)
                .envs(env.iter().copied())
                .output()
                .expect("shelf-server user add");
            assert!(
                out.status.success(),
                "user add: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut s = Server {
            child: None,
            addr: "127.0.0.1:0".into(),
            fingerprint,
            data,
            web: web.then(String::new),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _dir: dir,
        };
        s.run();
        s
    }

    fn run(&mut self) {
        let mut cmd = Command::new(server_bin());
        cmd.args(["run", "--data"])
            .arg(&self.data)
            .args(["--listen", &self.addr])
            .args(match self.web {
                Some(_) => &["--web", "127.0.0.1:0"][..],
                None => &[],
            })
            .env("SHELF_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(self.log_file());
        // If the test process dies without running Drop (killed), the server goes too.
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start shelf-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| {
                l.strip_prefix("shelf-server listening on ")
                    .map(str::to_string)
            })
            .expect("the server prints its address");
        if self.web.is_some() {
            self.web = lines
                .next()
                .and_then(Result::ok)
                .and_then(|l| l.strip_prefix("web app on ").map(str::to_string));
            assert!(self.web.is_some(), "the server prints the web app's URL");
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.addr = addr;
        self.child = Some(child);
    }

    /// Where the server's log goes (beside, not inside, its data folder); a failing test
    /// prints its tail.
    pub fn log_path(&self) -> PathBuf {
        self._dir.path().join("server.log")
    }

    fn log_file(&self) -> Stdio {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
        {
            Ok(f) => Stdio::from(f),
            Err(_) => Stdio::inherit(),
        }
    }

    /// The server process's id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the server (SIGTERM to the PID we started, then wait).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling a child process we spawned and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL: the server gets no chance to flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same address and data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// A logged-in protocol connection without a mount, for tests below the FUSE layer.
    /// Returns it with the account's root attributes.
    pub fn connect(
        &self,
        user: &str,
        password: &str,
        device: &str,
    ) -> (shelf::remote::Remote, shelf_protocol::Attr) {
        self.connect_at(&self.addr, user, password, device)
    }

    /// [`Server::connect`] through `addr` (a proxy in front of this server).
    pub fn connect_at(
        &self,
        addr: &str,
        user: &str,
        password: &str,
        device: &str,
    ) -> (shelf::remote::Remote, shelf_protocol::Attr) {
        use shelf_protocol::{Request, Response};
        let remote = shelf::remote::Remote::new(
            shelf::remote::Endpoint {
                addr: addr.to_string(),
                fingerprint: Some(self.fingerprint.clone()),
                ca: None,
            },
            None,
        )
        .expect("client runtime");
        let Response::Session { token, root, .. } = remote
            .call(Request::Login {
                user: user.into(),
                password: password.into(),
                device: device.into(),
            })
            .expect("login")
        else {
            panic!("login answered without a session");
        };
        remote.set_token(Some(token));
        (remote, root)
    }

    /// Runs `shelf-server ARGS --data DATA` (an admin command) with the server's
    /// environment; returns its output.
    pub fn admin(&self, args: &[&str]) -> std::process::Output {
        Command::new(server_bin())
            .args(args)
            .arg("--data")
            .arg(&self.data)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("shelf-server")
    }

    /// Replaces the server's extra environment (for its next start).
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none());
        self.run();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!("--- shelf-server log (last 60 lines)\n{tail}\n---");
        }
        self.kill();
    }
}

/// One device: its own config (and cache) folder.
pub struct Device {
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Device {
    pub fn new() -> Device {
        let dir = tempfile::tempdir().expect("tempdir");
        Device {
            config: dir.path().join("config"),
            _dir: dir,
        }
    }

    pub fn shelf(&self) -> Command {
        let mut c = Command::new(shelf_bin());
        c.env("SHELF_CONFIG_DIR", &self.config)
            .env_remove("SHELF_CACHE_DIR")
            .env_remove("SHELF_PASSWORD")
            .stdin(Stdio::null());
        c
    }

    /// Runs `shelf ARGS` and returns its standard output; panics if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.shelf().args(args).output().expect("run shelf");
        assert!(
            out.status.success(),
            "shelf {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn login_output(
        &self,
        server: &Server,
        user: &str,
        password: &str,
        device: &str,
    ) -> Output {
        self.login_at(server, &server.addr, user, password, device)
    }

    /// Logs in through `addr` (a proxy in front of `server`).
    pub fn login_at(
        &self,
        server: &Server,
        addr: &str,
        user: &str,
        password: &str,
        device: &str,
    ) -> Output {
        self.shelf()
            .args(["login", addr, "--user", user, "--device", device])
            .args(["--fingerprint", &server.fingerprint])
            .env("SHELF_PASSWORD", password)
            .output()
            .expect("shelf login")
    }

    pub fn login(&self, server: &Server, user: &str, password: &str, device: &str) {
        let out = self.login_output(server, user, password, device);
        assert!(
            out.status.success(),
            "login: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Mounts at a fresh folder; the guard unmounts.
    pub fn mount(&self) -> Mount {
        self.mount_with(&[])
    }

    pub fn mount_with(&self, env: &[(&str, &str)]) -> Mount {
        self.mount_full(&[], env)
    }

    /// Mounts with extra `shelf mount` arguments (e.g. `-o nopassthrough`) and environment.
    pub fn mount_full(&self, args: &[&str], env: &[(&str, &str)]) -> Mount {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("mkdir");
        let mut cmd = self.shelf();
        cmd.arg("mount").arg(&path).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("shelf mount");
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let pid = text
            .split("(pid ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok());
        Mount {
            path,
            pid,
            config: self.config.clone(),
            _dir: dir,
        }
    }

    pub fn cache(&self) -> PathBuf {
        self.config.join("cache")
    }
}

impl Default for Device {
    fn default() -> Self {
        Device::new()
    }
}

/// A live mount. Dropping it unmounts (forcing if needed) and stops the client by PID.
pub struct Mount {
    pub path: PathBuf,
    pub pid: Option<i32>,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn is_mounted(path: &Path) -> bool {
    let p = path.to_string_lossy();
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&*p))
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Owned `(name, value)` pairs (e.g. `Garage::env`, `Postgres::env`) as
/// [`Server::start_with_env`] takes them.
pub fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

impl Mount {
    /// Runs a bash script in the mount (`set -euo pipefail`); panics with its output on failure.
    pub fn sh(&self, script: &str) -> String {
        sh_in(&self.path, script)
    }

    /// `shelf umount`: waits for uploads, unmounts, waits for the client to exit.
    pub fn unmount(mut self) {
        self.unmount_inner();
    }

    /// `shelf umount --force`: at once, pending uploads stay journaled.
    pub fn unmount_forced(mut self) {
        let out = Command::new(shelf_bin())
            .env("SHELF_CONFIG_DIR", &self.config)
            .args(["umount", "--force"])
            .arg(&self.path)
            .output()
            .expect("shelf umount --force");
        assert!(
            out.status.success(),
            "umount --force: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.unmount_inner();
    }

    fn unmount_inner(&mut self) {
        if is_mounted(&self.path) {
            let out = Command::new(shelf_bin())
                .env("SHELF_CONFIG_DIR", &self.config)
                .arg("umount")
                .arg(&self.path)
                .output()
                .expect("shelf umount");
            assert!(
                out.status.success(),
                "umount: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some(pid) = self.pid.take() {
            assert!(
                wait_until(Duration::from_secs(30), || !alive(pid)),
                "client {pid} did not exit"
            );
        }
    }

    /// SIGKILL the client process.
    pub fn kill_client(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: the PID of the client this guard started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait_until(Duration::from_secs(10), || !alive(pid));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.path)
                .status();
            if is_mounted(&self.path) {
                let _ = Command::new("umount").arg("-l").arg(&self.path).status();
            }
        }
        if let Some(pid) = self.pid.take() {
            if !wait_until(Duration::from_secs(10), || !alive(pid)) {
                // SAFETY: the PID of the client this guard started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Runs a bash script in `dir` with `set -euo pipefail`; returns stdout, panics on failure.
pub fn sh_in(dir: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "script failed in {}:\n{script}\n--- stdout\n{}\n--- stderr\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a script expected to fail; returns its stderr.
pub fn sh_fails(dir: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("bash");
    assert!(!out.status.success(), "expected failure of {script}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A listing of a tree for comparisons: path, type, permission bits, size (not of
/// directories: that is filesystem-specific) and content hash.
pub fn tree_digest(dir: &Path) -> String {
    sh_in(
        dir,
        r#"find . -mindepth 1 \( -type d -printf '%P %y %m\n' \) -o -printf '%P %y %m %s\n' | LC_ALL=C sort
           find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r md5sum"#,
    )
}

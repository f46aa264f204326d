//! `shelf up` and `shelf down`: the newcomer's path. `up` initialises and starts a local
//! `shelf-server` under the XDG data folder (found beside the `shelf` binary or on PATH),
//! creates an admin account for the current user, logs in, and mounts ~/Shelf. Each step is
//! skipped when already done, so running `up` again is safe.

use super::{account, mount};
use anyhow::{bail, Context};
use shelf::config::{self, ConfigError, Login};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn server_binary() -> anyhow::Result<PathBuf> {
    if let Ok(exe) = std::env::current_exe() {
        let beside = exe.with_file_name("shelf-server");
        if beside.exists() {
            return Ok(beside);
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("shelf-server");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("shelf-server not found beside shelf or on PATH (build it with `cargo build --release`)")
}

fn default_mountpoint() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join("Shelf")
}

fn sanitize(s: &str) -> String {
    let s: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    if s.is_empty() || s.starts_with('.') {
        "me".into()
    } else {
        s
    }
}

/// The current user's login name from the password database.
fn login_name() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy the name out
    // at once and this CLI is single-threaded here.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return "me".into();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| sanitize(h.trim()))
        .unwrap_or_else(|_| "this-device".into())
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .trim_start_matches("Error: ")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn server_pid(data: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(data.join("server.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("shelf-server")
        .then_some(pid)
}

/// Where the local server's web app should listen (`SHELF_WEB`, else 127.0.0.1:8443).
fn preferred_web() -> String {
    std::env::var("SHELF_WEB").unwrap_or_else(|_| "127.0.0.1:8443".into())
}

/// Starts the local server in the background with its web app (on the preferred address,
/// else on a free port); returns the address it listens on. The web app's URL is kept in
/// `DATA/server.web`.
fn start_server(bin: &Path, data: &Path, listen: &str) -> anyhow::Result<String> {
    match start_server_with(bin, data, listen, &preferred_web()) {
        Ok(a) => Ok(a),
        Err(_) => start_server_with(bin, data, listen, "127.0.0.1:0"),
    }
}

/// The local server's web app URL, when it runs.
fn web_url(data: &Path) -> Option<String> {
    server_pid(data)?;
    std::fs::read_to_string(data.join("server.web"))
        .ok()
        .map(|u| u.trim().to_string())
}

fn start_server_with(bin: &Path, data: &Path, listen: &str, web: &str) -> anyhow::Result<String> {
    let out_path = data.join("server.out");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("server.log"))?;
    let out = std::fs::File::create(&out_path)?;
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--data"])
        .arg(data)
        .args(["--listen", listen, "--web", web])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the server outlives this command.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting shelf-server")?;
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        let addr = text
            .lines()
            .find_map(|l| l.strip_prefix("shelf-server listening on "));
        let url = text.lines().find_map(|l| l.strip_prefix("web app on "));
        if let (Some(addr), Some(url)) = (addr, url) {
            std::fs::write(data.join("server.pid"), child.id().to_string())?;
            std::fs::write(data.join("server.addr"), addr)?;
            std::fs::write(data.join("server.web"), url)?;
            return Ok(addr.to_string());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "shelf-server exited ({status}); see {}",
                data.join("server.log").display()
            );
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            bail!("shelf-server did not start within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where `shelf up` keeps the password it generated (mode 0600), until the user deletes it.
fn password_file() -> PathBuf {
    config::config_dir().join("initial-password")
}

/// The password `shelf up` made for `user`: the one saved by an earlier run that did not
/// finish, or a new one — saved (0600) and shown before anything that can fail, so a
/// failed mount never loses it.
fn generated_password(user: &str) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = password_file();
    if let Ok(saved) = std::fs::read_to_string(&path) {
        if let Some(p) = saved.lines().find_map(|l| l.strip_prefix("password=")) {
            eprintln!(
                "shelf: using the password saved for {user} in {} by an earlier `shelf up`",
                path.display()
            );
            return Ok(p.trim().to_string());
        }
    }
    let mut raw = [0u8; 12];
    getrandom::getrandom(&mut raw).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let password = hex::encode(raw);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| {
            writeln!(
                f,
                "# The password `shelf up` made for the account {user}. Keep it somewhere safe\n# (you need it to log in from other devices), then delete this file.\nuser={user}\npassword={password}"
            )
        })
        .with_context(|| format!("saving the new password in {}", path.display()))?;
    eprintln!(
        "shelf: your new account {user} has the password {password} (saved in {}, readable only by you; keep it, then delete the file)",
        path.display()
    );
    Ok(password)
}

pub fn up(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let mountpoint = dir.unwrap_or_else(default_mountpoint);
    let data = config::data_dir().join("server");
    let mut notes = Vec::new();
    let login = match Login::load() {
        Ok(login) => {
            let local = std::fs::read_to_string(data.join("server.addr")).ok();
            if local.as_deref() == Some(login.server.as_str()) && server_pid(&data).is_none() {
                start_server(&server_binary()?, &data, &login.server)?;
                notes.push(format!("started the local server on {}", login.server));
            }
            login
        }
        Err(ConfigError::NotLoggedIn) => {
            let bin = server_binary()?;
            std::fs::create_dir_all(&data)?;
            if !data.join("tls").join("cert.pem").exists() {
                run(Command::new(&bin).args(["init", "--data"]).arg(&data))?;
                notes.push(format!(
                    "created a server data folder in {}",
                    data.display()
                ));
            }
            let user = sanitize(&std::env::var("USER").unwrap_or_else(|_| login_name()));
            let (password, generated) = match std::env::var("SHELF_PASSWORD") {
                Ok(p) => (p, false),
                Err(_) => (generated_password(&user)?, true),
            };
            if server_pid(&data).is_none() {
                let users = run(Command::new(&bin)
                    .args(["user", "list", "--data"])
                    .arg(&data))?;
                if !users
                    .lines()
                    .any(|l| l.split('\t').next() == Some(user.as_str()))
                {
                    run(Command::new(&bin)
                        .args(["user", "add", &user, "--role", "admin", "--data"])
                        .arg(&data)
                        .env("SHELF_PASSWORD", &password))?;
                    notes.push(format!("created the account {user} (admin)"));
                } else if generated && !password_file().exists() {
                    bail!("the account {user} exists already: set SHELF_PASSWORD to its password and run `shelf up` again");
                }
            }
            let addr = match std::fs::read_to_string(data.join("server.addr")) {
                Ok(a) if server_pid(&data).is_some() => a,
                _ => {
                    let preferred =
                        std::env::var("SHELF_LISTEN").unwrap_or_else(|_| "127.0.0.1:7443".into());
                    match start_server(&bin, &data, &preferred) {
                        Ok(a) => a,
                        Err(_) => start_server(&bin, &data, "127.0.0.1:0")?,
                    }
                }
            };
            notes.push(format!("started the local server on {addr}"));
            let fp = run(Command::new(&bin)
                .args(["fingerprint", "--data"])
                .arg(&data))?;
            let login = account::login(
                &addr,
                &user,
                &hostname(),
                Some(fp.trim().to_string()),
                false,
                Some(password),
                None,
            )?;
            notes.push(format!("logged in as {user} on device {}", login.device));
            login
        }
        Err(e) => return Err(e.into()),
    };
    if password_file().exists() {
        notes.push(format!(
            "the password made for {} is in {} (readable only by you): keep it, then delete the file",
            login.user,
            password_file().display()
        ));
    }
    std::fs::create_dir_all(&mountpoint)
        .with_context(|| format!("creating {}", mountpoint.display()))?;
    let canonical = std::fs::canonicalize(&mountpoint)?;
    if mount::shelf_mounts()
        .iter()
        .any(|m| Path::new(m) == canonical)
    {
        notes.push(format!("{} was already mounted", canonical.display()));
    } else {
        mount::mount(mount::MountArgs {
            dir: canonical.clone(),
            options: Vec::new(),
            foreground: false,
            cache: None,
            cache_bytes: 2048 << 20,
        })?;
    }
    println!("Shelf is up.");
    for n in notes {
        println!("  - {n}");
    }
    println!(
        "  - your store: {} (photos/ files/ videos/ shared/)",
        canonical.display()
    );
    println!(
        "  - server {} as {}; `shelf status` shows more",
        login.server, login.user
    );
    if let Some(url) = web_url(&data) {
        println!(
            "  - in a browser: {url} (sign in as {}; the browser will ask you to accept the server's own certificate)",
            login.user
        );
    }
    println!("To stop: `shelf down` (unmounts after uploading, and stops the local server).");
    Ok(())
}

pub fn down(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let mountpoint = dir.unwrap_or_else(default_mountpoint);
    if let Ok(canonical) = std::fs::canonicalize(&mountpoint) {
        if mount::shelf_mounts()
            .iter()
            .any(|m| Path::new(m) == canonical)
        {
            mount::umount(&canonical, false)?;
        }
    }
    let data = config::data_dir().join("server");
    if let Some(pid) = server_pid(&data) {
        // SAFETY: plain kill(2) of the server this tool started (pid from its pid file).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        while server_pid(&data).is_some() && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(data.join("server.pid"));
        println!("stopped the local server (pid {pid})");
    }
    Ok(())
}

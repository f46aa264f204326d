//! `shelf mount` and `shelf umount`.
//!
//! `shelf mount DIR` starts itself again with `--foreground` in a new session, waits for the
//! child to say the mount is ready on a pipe, and returns; the child's log goes to
//! `CACHE/shelf.log`. The mount uses fusermount3's auto_unmount, so a killed client leaves no
//! dead mount point behind. After the kernel unmounts (`umount`), the client finishes the
//! uploads that are still queued before it exits.

use super::account;
use anyhow::{bail, Context};
use shelf::cache::{pending_uploads, CacheDir};
use shelf::config::Login;
use shelf::core::{CoreOptions, FsCore};

/// Uploader threads: small files are one commit each, and concurrent commits share the
/// server's flushes (group commit), so more of them keep up with a `tar x`.
const UPLOADERS: usize = 8;
/// FUSE threads: one waits in the kernel's queue at a time ([`shelf::blocking`]); the others
/// take over while it waits for the network, so up to this many slow requests run at once.
const FUSE_THREADS: usize = 8;
use shelf::fuse::ShelfFs;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long `shelf umount` waits for a pending-upload count that does not move.
const STALL_LIMIT: Duration = Duration::from_secs(60);

pub struct MountArgs {
    pub dir: PathBuf,
    pub options: Vec<String>,
    pub foreground: bool,
    pub cache: Option<PathBuf>,
    pub cache_bytes: u64,
}

/// The cache folder of an account: one per server and user.
/// Why FUSE cannot be used here, with what to do about it, when that is the reason a
/// mount failed.
fn fuse_unavailable(uid: u32) -> Option<String> {
    if !std::path::Path::new("/dev/fuse").exists() {
        return Some(
            "/dev/fuse does not exist: load the fuse module (`modprobe fuse`), or in a container start it with --device /dev/fuse".into(),
        );
    }
    let access = std::ffi::CString::new("/dev/fuse").ok()?;
    // SAFETY: access(2) on a NUL-terminated path we own.
    if unsafe { libc::access(access.as_ptr(), libc::R_OK | libc::W_OK) } != 0 {
        return Some(format!(
            "/dev/fuse is not open to this user (uid {uid}): ask an administrator to make it usable (mode 0666, as Debian's fuse3 package sets it) or to add you to the group that owns it"
        ));
    }
    let on_path = |name: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain([std::path::PathBuf::from("/bin"), "/usr/bin".into()])
            .any(|d| d.join(name).exists())
    };
    if uid != 0 && !on_path("fusermount3") {
        return Some(
            "fusermount3 is not installed: install the fuse3 package (`apt install fuse3`)".into(),
        );
    }
    if uid == 0 && !on_path("fusermount3") && !on_path("fusermount") {
        return Some("fusermount3 is not installed (needed to unmount when the client dies): install the fuse3 package (`apt install fuse3`)".into());
    }
    None
}

pub fn account_cache(login: &Login, explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let server: String = login
        .server
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    shelf::config::cache_dir(None).join(format!("{}@{server}", login.user))
}

/// Mount points of every Shelf mount on this machine.
pub fn shelf_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "fuse.shelf").then(|| f[1].replace("\\040", " "))
        })
        .collect()
}

fn is_mounted(dir: &Path) -> bool {
    let d = dir.to_string_lossy();
    shelf_mounts().iter().any(|m| *m == d)
}

struct Parsed {
    read_only: bool,
    allow_other: bool,
    /// Let the kernel read and write local copies directly (FUSE passthrough).
    passthrough: bool,
    fsname: String,
}

fn parse_options(options: &[String]) -> anyhow::Result<Parsed> {
    let mut p = Parsed {
        read_only: false,
        allow_other: false,
        passthrough: true,
        fsname: "shelf".into(),
    };
    for opt in options.iter().flat_map(|o| o.split(',')) {
        match opt {
            "" | "rw" | "auto_unmount" | "default_permissions" => {}
            "ro" => p.read_only = true,
            "allow_other" | "allow_root" => p.allow_other = true,
            "passthrough" => p.passthrough = true,
            "nopassthrough" => p.passthrough = false,
            o if o.starts_with("fsname=") => p.fsname = o["fsname=".len()..].to_string(),
            other => {
                bail!("unknown mount option {other:?} (known: ro, rw, allow_other, fsname=NAME, nopassthrough)")
            }
        }
    }
    Ok(p)
}

pub fn mount(args: MountArgs) -> anyhow::Result<()> {
    let dir = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("mount point {}", args.dir.display()))?;
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    if is_mounted(&dir) {
        bail!("{} is already a Shelf mount", dir.display());
    }
    parse_options(&args.options)?;
    let login = Login::load()?;
    let cache = account_cache(&login, args.cache.as_deref());
    if args.foreground {
        return run_foreground(&dir, &args, &login, &cache);
    }
    std::fs::create_dir_all(&cache).with_context(|| format!("cache folder {}", cache.display()))?;
    let log_path = cache.join("shelf.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("log file {}", log_path.display()))?;
    let log_start = log.metadata()?.len();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("mount").arg(&dir).arg("--foreground");
    for o in &args.options {
        cmd.arg("-o").arg(o);
    }
    cmd.arg("--cache")
        .arg(&cache)
        .arg("--cache-size-mib")
        .arg((args.cache_bytes >> 20).to_string())
        .env("SHELF_MOUNT_NOTIFY", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from our terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the mount process")?;
    let stdout = child
        .stdout
        .take()
        .context("no pipe to the mount process")?;
    let mut line = String::new();
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    if line.trim() == "ready" {
        println!(
            "mounted {} (pid {}, log {})",
            dir.display(),
            child.id(),
            log_path.display()
        );
        return Ok(());
    }
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail = text.get(log_start as usize..).unwrap_or("").trim();
    let last = tail
        .lines()
        .rev()
        .find(|l| l.starts_with("shelf: "))
        .map(|l| l.trim_start_matches("shelf: ").to_string())
        .unwrap_or_else(|| tail.lines().last().unwrap_or("unknown error").to_string());
    bail!("mounting {} failed: {last}", dir.display())
}

/// The mount keeps a descriptor per open file and a stock of open staging files: lift the
/// soft limit on open descriptors to the hard one (often 1,024 against 500,000+).
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let before = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(limit = before, "cannot raise the open-file limit");
            }
        }
    }
}

fn run_foreground(
    dir: &Path,
    args: &MountArgs,
    login: &Login,
    cache_root: &Path,
) -> anyhow::Result<()> {
    let opts = parse_options(&args.options)?;
    raise_open_file_limit();
    let (remote, root) = account::connect(login)?;
    let cache = CacheDir::open(cache_root)?;
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let core = FsCore::new(
        Arc::new(remote),
        root,
        cache,
        CoreOptions {
            uid,
            gid,
            read_only: opts.read_only,
            chunk_cache_bytes: args.cache_bytes,
            passthrough: opts.passthrough,
            device: login.device.clone(),
        },
    )?;
    let threads = core.start_background(UPLOADERS);

    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(opts.fsname.clone()),
        fuser::MountOption::Subtype("shelf".into()),
        fuser::MountOption::NoAtime,
    ];
    // Other users reach the mount only with allow_other: then the kernel checks every
    // caller's permissions (default_permissions). Otherwise its owner and root are the only
    // callers, and the mount checks them itself, which spares the kernel's attribute fetch
    // before every change (see `shelf::core::permission`).
    let checks = !opts.allow_other;
    if !checks {
        config
            .mount_options
            .push(fuser::MountOption::DefaultPermissions);
    }
    if opts.read_only {
        config.mount_options.push(fuser::MountOption::RO);
    }
    // auto_unmount needs fusermount3's allow_other, which root (or user_allow_other) has.
    let may_allow_other = uid == 0
        || std::fs::read_to_string("/etc/fuse.conf")
            .map(|t| t.lines().any(|l| l.trim() == "user_allow_other"))
            .unwrap_or(false);
    if may_allow_other {
        config.mount_options.push(fuser::MountOption::AutoUnmount);
        config.acl = if opts.allow_other {
            fuser::SessionACL::All
        } else {
            fuser::SessionACL::RootAndOwner
        };
    } else {
        tracing::warn!("auto_unmount needs user_allow_other in /etc/fuse.conf; a killed client will leave the mount point to be unmounted by hand");
        if opts.allow_other {
            bail!("allow_other needs user_allow_other in /etc/fuse.conf");
        }
    }
    config.n_threads = Some(FUSE_THREADS);

    let mut session = match fuser::Session::new(
        ShelfFs::new(core.clone(), FUSE_THREADS, checks),
        dir,
        &config,
    ) {
        Ok(s) => s,
        Err(e) => match fuse_unavailable(uid) {
            Some(what_to_do) => bail!("mounting {}: {e}; {what_to_do}", dir.display()),
            None => return Err(e).with_context(|| format!("mounting {}", dir.display())),
        },
    };
    if let Err(e) = shelf::fuse::widen_readahead(dir) {
        tracing::debug!(error = %e, "kernel read-ahead stays at its default");
    }
    // Other devices' changes reach this mount as they happen.
    core.set_kernel_cache(Box::new(shelf::fuse::Notifications(session.notifier())));
    if let Err(e) = core.start_events(login.device.clone()) {
        tracing::warn!(error = %e, "cannot follow the server's changes; other devices' changes show after the 1 s cache time");
    }
    // Backup jobs of this machine run from the mounted client when they are due.
    static BACKUP_STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    std::thread::Builder::new()
        .name("backup".into())
        .spawn(|| super::backup::daemon_loop(&BACKUP_STOP))?;
    let pid_file = cache_root.join("mount.pid");
    std::fs::write(
        &pid_file,
        format!("{}\n{}\n", std::process::id(), dir.display()),
    )?;
    // SIGINT/SIGTERM while mounted unmounts (pending uploads still finish); once unmounted
    // (or on a second signal) it stops waiting for uploads: they stay journaled for the
    // next mount. SIGUSR1 (sent by `shelf umount --force`) stops waiting at any time.
    let mut unmounter = session.unmount_callable();
    let signalled = core.clone();
    let serving = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let still_serving = serving.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut usr1)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::user_defined1()),
            ) else {
                return;
            };
            for round in 0.. {
                let forced = tokio::select! {
                    _ = tokio::signal::ctrl_c() => false,
                    _ = term.recv() => false,
                    _ = usr1.recv() => true,
                };
                if !forced && round == 0 && still_serving.load(std::sync::atomic::Ordering::Acquire)
                {
                    tracing::info!("signal received: unmounting");
                    let _ = unmounter.unmount();
                } else {
                    tracing::warn!("signal received again: leaving pending uploads journaled");
                    signalled.stop_background();
                    return;
                }
            }
        });
    });
    if std::env::var_os("SHELF_MOUNT_NOTIFY").is_some() {
        println!("ready");
        std::io::stdout().flush()?;
        // Close the pipe so the parent returns; later prints go nowhere.
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            use std::os::unix::io::AsRawFd;
            // SAFETY: dup2 onto stdout with a valid fd.
            unsafe { libc::dup2(null.as_raw_fd(), 1) };
        }
    }
    tracing::info!(dir = %dir.display(), "mounted");
    let run = session.run();
    serving.store(false, std::sync::atomic::Ordering::Release);
    BACKUP_STOP.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("unmounted; finishing pending uploads");
    let left = core.drain(Duration::from_secs(300));
    if left > 0 {
        tracing::warn!(
            left,
            "uploads still pending; they stay journaled for the next mount"
        );
    }
    core.stop_background();
    for t in threads {
        let _ = t.join();
    }
    let _ = std::fs::remove_file(&pid_file);
    run.context("serving the mount")?;
    Ok(())
}

/// Asks this login's running mount (another process) to send the server every namespace
/// change made in it so far: an fsync of its root folder returns once they are committed.
/// Best effort: without a running mount there is nothing to wait for.
pub fn settle_running_mount(login: &Login) {
    let cache = account_cache(login, None);
    let Ok(text) = std::fs::read_to_string(cache.join("mount.pid")) else {
        return;
    };
    let mut lines = text.lines();
    let (Some(Ok(pid)), Some(dir)) = (lines.next().map(str::parse::<i32>), lines.next()) else {
        return;
    };
    if pid == std::process::id() as i32
        || !alive(pid)
        || !is_mounted(Path::new(dir))
        || shelf::cache::pending_changes(&cache) == 0
    {
        return;
    }
    // The mount answers at once while the server is away (the command then says so
    // itself), and within 10 s otherwise.
    let (Ok(p), Ok(name)) = (
        std::ffi::CString::new(dir),
        std::ffi::CString::new(shelf::core::pins::SYNC_XATTR),
    ) else {
        return;
    };
    // SAFETY: valid NUL-terminated strings and a 1-byte value that outlives the call.
    let rc = unsafe { libc::setxattr(p.as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        tracing::debug!(error = %e, "the mount did not confirm its changes are sent");
    }
}

fn mount_pid(cache: &Path, dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(cache.join("mount.pid")).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.parse().ok()?;
    (lines.next()? == dir.to_string_lossy()).then_some(pid)
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

pub fn umount(dir: &Path, force: bool) -> anyhow::Result<()> {
    let dir = std::fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
    if !is_mounted(&dir) {
        bail!("{} is not a Shelf mount", dir.display());
    }
    let cache = Login::load().ok().map(|l| account_cache(&l, None));
    let pid = cache.as_deref().and_then(|c| mount_pid(c, &dir));
    if !force {
        if let Some(cache) = &cache {
            let mut last = usize::MAX;
            let mut progress = Instant::now();
            loop {
                let n = pending_uploads(cache) + shelf::cache::pending_changes(cache);
                if n == 0 || pid.is_some_and(|p| !alive(p)) {
                    break;
                }
                if n != last {
                    eprint!("\rsending {n} pending change(s) and upload(s) before unmounting…   ");
                    last = n;
                    progress = Instant::now();
                }
                if progress.elapsed() > STALL_LIMIT {
                    eprintln!();
                    bail!(
                        "uploads made no progress for {} s (is the server reachable? see {}); \
                         `shelf umount --force` unmounts now and keeps them for the next mount",
                        STALL_LIMIT.as_secs(),
                        cache.join("shelf.log").display()
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            if last != usize::MAX {
                eprintln!("\ruploads done.                               ");
            }
        }
    }
    let status = Command::new("fusermount3").arg("-u").arg(&dir).status();
    if force {
        if let Some(pid) = pid {
            // SIGUSR1: the client stops waiting for uploads (they stay journaled).
            // SAFETY: kill(2) of the client recorded in this account's pid file.
            unsafe { libc::kill(pid, libc::SIGUSR1) };
        }
    }
    if !status.map(|s| s.success()).unwrap_or(false) {
        let status = Command::new("umount").arg(&dir).status()?;
        if !status.success() {
            bail!("could not unmount {}", dir.display());
        }
    }
    if let Some(pid) = pid {
        let start = Instant::now();
        while alive(pid) && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            println!(
                "unmounted {}; the client (pid {pid}) is still finishing uploads \
                 (`kill {pid}` leaves them journaled for the next mount)",
                dir.display()
            );
            return Ok(());
        }
    }
    println!("unmounted {}", dir.display());
    Ok(())
}

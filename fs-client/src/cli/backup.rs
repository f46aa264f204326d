//! `shelf backup add|list|run|remove|daemon|install-timer`: folders on this machine sent to
//! the store on a schedule (by default the first Sunday of every month at 03:00). A run
//! sends new files and new versions of changed ones, skips unchanged ones, and keeps what
//! was deleted from the folder. Due jobs run from the mounted client, `shelf backup
//! daemon`, or a systemd user timer (`install-timer`); a run missed while the machine was
//! off is caught up once.

use super::import::{connect_as, print_report, run_with_progress, summary};
use clap::Subcommand;
use shelf::ingest::jobs::{self, Job, LastRun, RunLock};
use shelf::ingest::run::{self, Options};
use shelf::ingest::schedule::{Local, Schedule, Zone, FIRST_SUNDAY};
use shelf::ingest::{index, schedule};
use shelf_protocol::Request;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Register a folder to back up into a category (personal, work or projects, or a
    /// sub-category such as work/WebProject).
    Add {
        /// The local folder to back up.
        src: PathBuf,
        /// personal, work or projects, or a sub-category below one (work/WebProject):
        /// files go to photos/INTO/, videos/INTO/ or files/INTO/ by their content.
        #[arg(long)]
        into: String,
        /// When to run, as cron's five fields in local time (minute hour day-of-month
        /// month day-of-week; DOW#N is the N-th such weekday of the month).
        #[arg(long, default_value = FIRST_SUNDAY)]
        schedule: String,
        /// A name for the job (default: the folder's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Each job: source, destination, schedule, last run and its result, next run.
    List,
    /// Run jobs now: NAME, or all of them (--due: only those whose time has come).
    Run {
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        due: bool,
    },
    /// Forget a job (what it sent stays in the store).
    Remove { name: String },
    /// Stay in the foreground and run jobs when they are due (the mounted client does the
    /// same while it runs).
    Daemon,
    /// Write a systemd user service and timer that run due jobs (for people who prefer
    /// systemd to the daemon), and say how to enable them.
    InstallTimer,
}

pub fn backup(cmd: BackupCommand) -> anyhow::Result<()> {
    match cmd {
        BackupCommand::Add {
            src,
            into,
            schedule,
            name,
        } => add(&src, &into, &schedule, name),
        BackupCommand::List => list(),
        BackupCommand::Run { name, due } => {
            let failed = run_jobs(name.as_deref(), due, false)?;
            if failed > 0 {
                anyhow::bail!("{failed} backup job(s) failed (see above and `shelf events`)");
            }
            Ok(())
        }
        BackupCommand::Remove { name } => {
            jobs::update(&jobs::jobs_path(), |jobs| {
                let before = jobs.len();
                jobs.retain(|j| j.name != name);
                if jobs.len() == before {
                    return Err(format!("no backup job called {name}"));
                }
                Ok(())
            })?
            .map_err(anyhow::Error::msg)?;
            println!("removed backup job {name}; what it sent stays in the store");
            Ok(())
        }
        BackupCommand::Daemon => {
            let stop = AtomicBool::new(false);
            println!("running backup jobs when they are due (Ctrl-C to stop)");
            daemon_loop(&stop);
            Ok(())
        }
        BackupCommand::InstallTimer => install_timer(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM` in local time.
fn local(secs: i64) -> String {
    let c = Local.civil(secs);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute
    )
}

fn add(src: &Path, into: &str, schedule: &str, name: Option<String>) -> anyhow::Result<()> {
    let src = std::fs::canonicalize(src)
        .map_err(|e| anyhow::anyhow!("cannot use {}: {e}", src.display()))?;
    if !src.is_dir() {
        anyhow::bail!("{} is not a folder", src.display());
    }
    let parsed = Schedule::parse(schedule)?;
    let name = name.unwrap_or_else(|| {
        src.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into())
    });
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || "._-".contains(c))
    {
        anyhow::bail!("a job name takes letters, digits, . _ and - (use --name)");
    }
    let into = into.trim_matches('/').to_string();
    // The same check the run makes, now rather than on the first Sunday.
    run::validate_into(&into)?;
    let Some(src_text) = src.to_str() else {
        anyhow::bail!("{} is not a UTF-8 path; a job needs one", src.display());
    };
    if !jobs::is_storable(src_text) || !jobs::is_storable(&into) {
        anyhow::bail!("the folder's path contains a tab or a line break");
    }
    let job = Job {
        name: name.clone(),
        src: src.clone(),
        into: into.clone(),
        schedule: parsed.to_string(),
        added: now(),
        last_run: None,
    };
    let next = job.next_run(&Local);
    jobs::update(&jobs::jobs_path(), |jobs| {
        if jobs.iter().any(|j| j.name == name) {
            return Err(format!(
                "a backup job called {name} exists; choose another --name"
            ));
        }
        jobs.push(job);
        Ok(())
    })?
    .map_err(anyhow::Error::msg)?;
    println!(
        "backup job {name}: {} -> {into}, schedule \"{schedule}\", next run {}",
        src.display(),
        next.map_or("never".into(), local)
    );
    Ok(())
}

fn list() -> anyhow::Result<()> {
    let jobs = jobs::load(&jobs::jobs_path())?;
    if jobs.is_empty() {
        println!("no backup jobs (add one with `shelf backup add SRC --into CATEGORY`)");
        return Ok(());
    }
    for j in &jobs {
        let last = match &j.last_run {
            Some(r) => format!(
                "{} {}: {}",
                local(r.at),
                if r.ok { "ok" } else { "FAILED" },
                r.summary
            ),
            None => "never".into(),
        };
        let next = j.next_run(&Local).map_or("never".into(), local);
        println!(
            "{}\n  {} -> {}\n  schedule \"{}\"\n  last run {last}\n  next run {next}",
            j.name,
            j.src.display(),
            j.into,
            j.schedule
        );
    }
    Ok(())
}

/// Runs the jobs named (or all, or the due ones). Returns how many failed. `quiet`: no
/// progress or report on the terminal (daemon and mount), only logs and events.
pub fn run_jobs(name: Option<&str>, due_only: bool, quiet: bool) -> anyhow::Result<usize> {
    let all = jobs::load(&jobs::jobs_path())?;
    if let Some(n) = name {
        if !all.iter().any(|j| j.name == n) {
            anyhow::bail!("no backup job called {n} (see `shelf backup list`)");
        }
    }
    let at = now();
    let chosen: Vec<Job> = all
        .into_iter()
        .filter(|j| name.is_none_or(|n| j.name == n))
        .filter(|j| !due_only || j.is_due(at, &Local))
        .collect();
    if chosen.is_empty() && !quiet {
        println!("no backup job is due");
    }
    let mut failed = 0;
    for job in chosen {
        let Some(_lock) = RunLock::try_take(&job.name)? else {
            tracing::info!(job = %job.name, "already running elsewhere");
            if !quiet {
                println!("{}: already running", job.name);
            }
            continue;
        };
        // Another process may have run it between the listing and the lock.
        if due_only {
            let fresh = jobs::load(&jobs::jobs_path())?;
            if !fresh
                .iter()
                .any(|j| j.name == job.name && j.is_due(now(), &Local))
            {
                continue;
            }
        }
        let started = now();
        let result = run_job(&job, quiet);
        // The events log `shelf events` reads (this device's cache folder for the account).
        let cache = shelf::config::Login::load()
            .map(|l| super::mount::account_cache(&l, None))
            .unwrap_or_else(|_| shelf::config::cache_dir(None));
        let last = match &result {
            Ok(summary) => {
                shelf::cache::append_event(&cache, "backup", &job.name, summary);
                tracing::info!(job = %job.name, %summary, "backup run done");
                LastRun {
                    at: started,
                    ok: true,
                    summary: summary.clone(),
                }
            }
            Err(e) => {
                failed += 1;
                let why = format!("{e:#}");
                shelf::cache::append_event(&cache, "failed", &job.name, &format!("backup: {why}"));
                tracing::warn!(job = %job.name, error = %why, "backup run failed");
                if !quiet {
                    eprintln!("backup {} failed: {why}", job.name);
                }
                // An alert for the account (and its admins), when the server can be told.
                if let Ok((_, remote, _)) = connect_as("backup") {
                    let _ = remote.call(Request::ReportSyncFailure {
                        path: format!("backup {}", job.name),
                        error: why.clone(),
                    });
                }
                LastRun {
                    at: started,
                    ok: false,
                    summary: why,
                }
            }
        };
        jobs::update(&jobs::jobs_path(), |jobs| {
            if let Some(j) = jobs.iter_mut().find(|j| j.name == job.name) {
                j.last_run = Some(last);
            }
            Ok(())
        })?
        .map_err(anyhow::Error::msg)?;
    }
    Ok(failed)
}

/// One run of a job; its summary line.
fn run_job(job: &Job, quiet: bool) -> anyhow::Result<String> {
    let (_login, remote, root) = connect_as("backup")?;
    let report = if quiet {
        let src = std::fs::canonicalize(&job.src)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", job.src.display()))?;
        let none = |_, _| {};
        let opts = Options {
            src: &src,
            into: &job.into,
            dry_run: false,
            scanned: &none,
            progress: &none,
        };
        run::run(&remote, root, &opts, &index::path_for(&src, &job.into))?
    } else {
        println!("backup {}: {} -> {}", job.name, job.src.display(), job.into);
        let r = run_with_progress(&remote, root, &job.src, &job.into, false, &job.name)?;
        print_report(&job.src, &job.into, &r, false);
        r
    };
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{} of {} files failed, first: {}: {}",
            report.failed.len(),
            report.files,
            report.failed[0].0,
            report.failed[0].1
        );
    }
    Ok(summary(&report))
}

/// How often due jobs are looked for (`SHELF_BACKUP_CHECK_SECS` for tests).
fn check_interval() -> Duration {
    let secs = std::env::var("SHELF_BACKUP_CHECK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// Runs due jobs until `stop` is set: at once (catching up what was missed while the
/// machine was off), then every minute.
pub fn daemon_loop(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if jobs::jobs_path().exists() {
            if let Err(e) = run_jobs(None, true, true) {
                tracing::warn!(error = %format!("{e:#}"), "backup jobs could not run");
            }
        }
        let until = std::time::Instant::now() + check_interval();
        while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The `OnCalendar=` of the timer: the default schedule exactly when every job uses it,
/// else hourly (each run starts only the jobs that are due).
pub fn timer_calendar(jobs: &[Job]) -> &'static str {
    if !jobs.is_empty() && jobs.iter().all(|j| j.schedule == schedule::FIRST_SUNDAY) {
        "Sun *-*-01..07 03:00:00"
    } else {
        "hourly"
    }
}

fn install_timer() -> anyhow::Result<()> {
    let jobs = jobs::load(&jobs::jobs_path())?;
    let exe = std::env::current_exe()?;
    let dir = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".config")
        })
        .join("systemd/user");
    std::fs::create_dir_all(&dir)?;
    let mut env = String::new();
    if let Some(c) = std::env::var_os("SHELF_CONFIG_DIR") {
        env = format!("Environment=SHELF_CONFIG_DIR={}\n", Path::new(&c).display());
    }
    let service = format!(
        "[Unit]\nDescription=Shelf backup: run the backup jobs that are due\n\n[Service]\nType=oneshot\n{env}ExecStart={} backup run --due\n",
        exe.display()
    );
    let timer = format!(
        "[Unit]\nDescription=Shelf backup jobs (see `shelf backup list`)\n\n[Timer]\nOnCalendar={}\n# A run missed while the machine was off starts at the next boot.\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n",
        timer_calendar(&jobs)
    );
    std::fs::write(dir.join("shelf-backup.service"), service)?;
    std::fs::write(dir.join("shelf-backup.timer"), timer)?;
    println!(
        "wrote {0}/shelf-backup.service and {0}/shelf-backup.timer\nenable them with: systemctl --user daemon-reload && systemctl --user enable --now shelf-backup.timer",
        dir.display()
    );
    Ok(())
}

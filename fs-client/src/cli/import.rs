//! `shelf import SRC --into personal|work|projects [--dry-run]`: the first 1:1 copy of a
//! local folder into the store, sorted into categories. Also the progress display and the
//! report that backup runs share.

use super::account;
use super::history::human;
use shelf::config::Login;
use shelf::ingest::index;
use shelf::ingest::run::{self, Options, Report};
use shelf::remote::Remote;
use shelf::sync::LockOrRecover;
use shelf_protocol::Request;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

/// Connects for an import or backup run: the changes are published as made by
/// `DEVICE AGENT`, so this device's mount picks them up.
pub fn connect_as(agent: &str) -> anyhow::Result<(Login, Remote, shelf_protocol::NodeId)> {
    let login = Login::load()?;
    let (remote, root) = account::connect(&login)?;
    remote
        .call(Request::SetAgent {
            agent: agent.to_string(),
        })
        .map_err(account::server_error)?;
    Ok((login, remote, root.node))
}

/// A progress display: a bar on a terminal, a plain line every few seconds otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total_files: std::sync::atomic::AtomicU64,
    last_line: std::sync::Mutex<Instant>,
    started: Instant,
}

impl Progress {
    pub fn new(verb: &str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_message(format!("{verb}: scanning"));
            b
        });
        Progress {
            bar,
            total_files: 0.into(),
            last_line: std::sync::Mutex::new(Instant::now()),
            started: Instant::now(),
        }
    }

    /// Sets the totals once the source is scanned.
    pub fn totals(&self, files: u64, bytes: u64) {
        self.total_files
            .store(files, std::sync::atomic::Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(bytes);
        }
    }

    pub fn update(&self, files: u64, bytes: u64) {
        let total = self.total_files.load(std::sync::atomic::Ordering::Relaxed);
        match &self.bar {
            Some(b) => {
                b.set_position(bytes);
                b.set_message(format!("{files}/{total} files"));
            }
            None => {
                let mut last = self.last_line.lock_or_recover();
                if last.elapsed() >= Duration::from_secs(5) {
                    *last = Instant::now();
                    let secs = self.started.elapsed().as_secs_f64().max(0.001);
                    eprintln!(
                        "{files}/{total} files, {} at {}/s",
                        human(bytes),
                        human((bytes as f64 / secs) as u64)
                    );
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Runs one import/backup of `src` into `into` with a progress display.
pub fn run_with_progress(
    remote: &Remote,
    root: shelf_protocol::NodeId,
    src: &Path,
    into: &str,
    dry_run: bool,
    verb: &str,
) -> anyhow::Result<Report> {
    let src = std::fs::canonicalize(src)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", src.display()))?;
    let progress = Progress::new(verb);
    let scanned = |files, bytes| progress.totals(files, bytes);
    let update = |files, bytes| progress.update(files, bytes);
    let opts = Options {
        src: &src,
        into: into.trim_matches('/'),
        dry_run,
        scanned: &scanned,
        progress: &update,
    };
    let result = run::run(remote, root, &opts, &index::path_for(&src, opts.into));
    progress.finish();
    Ok(result?)
}

/// One summary line of a run (for `shelf backup list` and events).
pub fn summary(r: &Report) -> String {
    let mut s = format!(
        "{} new, {} changed, {} unchanged, sent {}",
        r.new.len(),
        r.modified.len() + r.conflicts.len(),
        r.unchanged + r.already_there,
        human(r.bytes_sent)
    );
    if !r.deleted.is_empty() {
        s.push_str(&format!(
            ", {} deleted from the source (kept)",
            r.deleted.len()
        ));
    }
    if !r.failed.is_empty() {
        s.push_str(&format!(", {} failed", r.failed.len()));
    }
    s
}

/// Prints what a run did.
pub fn print_report(src: &Path, into: &str, r: &Report, dry_run: bool) {
    let secs = r.elapsed.as_secs_f64().max(0.001);
    if dry_run {
        println!(
            "would import {} into {into}: {} files, {}",
            src.display(),
            r.files,
            human(r.bytes)
        );
        for (rel, dest) in &r.new {
            println!("  new      {rel} -> {dest}");
        }
        for (rel, dest) in &r.modified {
            println!("  changed  {rel} -> {dest} (a new version)");
        }
        for (kind, (files, bytes)) in &r.per_kind {
            println!("  {kind}/: {files} files, {}", human(*bytes));
        }
        println!(
            "  {} unchanged; nothing was sent (dry run)",
            r.unchanged + r.already_there
        );
    } else {
        println!(
            "{} {} into {into}: {} files ({}) in {:.1} s, {}/s",
            if r.failed.is_empty() {
                "copied"
            } else {
                "partly copied"
            },
            src.display(),
            r.files,
            human(r.bytes),
            secs,
            human((r.bytes_read as f64 / secs) as u64),
        );
        println!(
            "  {} new, {} changed (new versions), {} unchanged, {} already in the store; sent {}",
            r.new.len(),
            r.modified.len(),
            r.unchanged,
            r.already_there,
            human(r.bytes_sent)
        );
        for (rel, dest) in &r.modified {
            println!("  changed  {rel} -> {dest}");
        }
    }
    for (rel, dest) in &r.renamed {
        println!("  name taken: {rel} -> {dest}");
    }
    for (rel, dest) in &r.conflicts {
        println!("  changed in the store too, both kept: {rel} -> {dest}");
    }
    for (rel, dest) in &r.deleted {
        println!("  deleted from the source, kept in the store: {rel} ({dest})");
    }
    for (rel, why) in &r.skipped {
        println!("  skipped  {rel}: {why}");
    }
    for (rel, why) in &r.failed {
        println!("  FAILED   {rel}: {why}");
    }
}

pub fn import(src: &Path, into: &str, dry_run: bool) -> anyhow::Result<()> {
    let (login, remote, root) = connect_as("import")?;
    let report = run_with_progress(&remote, root, src, into, dry_run, "import")?;
    print_report(src, into, &report, dry_run);
    if !dry_run {
        shelf::cache::append_event(
            &super::mount::account_cache(&login, None),
            "imported",
            &src.display().to_string(),
            &summary(&report),
        );
    }
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{} files could not be copied; run the same command again to retry them",
            report.failed.len()
        );
    }
    Ok(())
}

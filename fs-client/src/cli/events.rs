//! `shelf events [--follow]`: the account's changes, one line each, for people and scripts
//! (`TIME  WHAT  PATH  (DEVICE)`), straight from the server's change feed, merged with this
//! device's own events from its cache folder (`failed` uploads, `downloaded` pinned files,
//! changes made offline that could not be applied: `(this device: DETAIL)`).

use super::account;
use shelf::config::Login;
use shelf_protocol::{Change, ChangeKind};
use std::io::Write;

fn line(c: &Change) -> String {
    let what = match &c.kind {
        ChangeKind::Created => "created",
        ChangeKind::Content => "changed",
        ChangeKind::Attr => "attributes",
        ChangeKind::Removed => "deleted",
        ChangeKind::Moved { .. } => "moved",
        ChangeKind::Conflicted => "conflict",
        ChangeKind::Resync => {
            return format!(
                "{}  (changes were missed; devices check their caches again)",
                super::history::utc(c.at.secs)
            )
        }
        ChangeKind::Alert(class) => {
            return format!(
                "{}  {:<10}  {}: {}",
                super::history::utc(c.at.secs),
                "alert",
                class,
                c.path
            )
        }
    };
    let from = match &c.kind {
        ChangeKind::Moved { from_name, .. } => format!(" (was {from_name})"),
        _ => String::new(),
    };
    format!(
        "{}  {what:<10}  {}{from}  ({})",
        super::history::utc(c.at.secs),
        c.path,
        c.device
    )
}

/// A line for one of this device's own events (see `shelf::cache::append_event`).
fn local_line(e: &shelf::cache::LocalEvent) -> String {
    format!(
        "{}  {:<10}  {}  (this device: {})",
        super::history::utc(e.at),
        e.what,
        e.path,
        e.detail
    )
}

pub fn events(follow: bool, last: usize) -> anyhow::Result<()> {
    let login = Login::load()?;
    let cache = super::mount::account_cache(&login, None);
    // This device's own events (failed uploads, downloads, offline changes not applied).
    let (local, mut local_pos) = shelf::cache::local_events(&cache, 0);
    let mut lines: Vec<(i64, String)> = local.iter().map(|e| (e.at, local_line(e))).collect();
    let (remote, _) = match account::connect(&login) {
        Ok(c) => c,
        Err(e) => {
            for (_, l) in lines.iter().rev().take(last).rev() {
                println!("{l}");
            }
            return Err(e.context("the server's change feed is unreachable"));
        }
    };
    let (rx, head) = remote
        .subscribe_after(Some(0))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The backlog first: the last `last` lines of it and of this device's own events.
    if head > 0 {
        while let Ok(c) = rx.recv_timeout(std::time::Duration::from_secs(10)) {
            let done = c.seq >= head;
            lines.push((c.at.secs, line(&c)));
            if done {
                break;
            }
        }
    }
    lines.sort_by_key(|(at, _)| *at);
    let mut out = std::io::stdout().lock();
    let skip = lines.len().saturating_sub(last);
    for (_, l) in lines.into_iter().skip(skip) {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    if !follow {
        return Ok(());
    }
    drop(out);
    // Reconnects resubscribe from the last position by themselves; a dead connection is
    // noticed by asking the server something now and then.
    let mut asked = std::time::Instant::now();
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(500)) {
            Ok(c) => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", line(&c))?;
                out.flush()?;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if asked.elapsed() > std::time::Duration::from_secs(15) {
                    asked = std::time::Instant::now();
                    if let Err(e) = remote.call(shelf_protocol::Request::Status) {
                        eprintln!("shelf: the server is unreachable ({e}); retrying");
                    }
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
        let (new, pos) = shelf::cache::local_events(&cache, local_pos);
        local_pos = pos;
        if !new.is_empty() {
            let mut out = std::io::stdout().lock();
            for e in &new {
                writeln!(out, "{}", local_line(e))?;
            }
            out.flush()?;
        }
    }
}

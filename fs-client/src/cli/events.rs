//! `shelf events [--follow]`: the account's changes, one line each, for people and scripts
//! (`TIME  WHAT  PATH  (DEVICE)`), straight from the server's change feed.

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

pub fn events(follow: bool, last: usize) -> anyhow::Result<()> {
    let login = Login::load()?;
    let (remote, _) = account::connect(&login)?;
    let (rx, head) = remote
        .subscribe_after(Some(0))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The backlog first: keep the last `last` lines of it.
    let mut backlog = std::collections::VecDeque::new();
    if head > 0 {
        while let Ok(c) = rx.recv_timeout(std::time::Duration::from_secs(10)) {
            let done = c.seq >= head;
            backlog.push_back(line(&c));
            if backlog.len() > last {
                backlog.pop_front();
            }
            if done {
                break;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    for l in backlog {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    if !follow {
        return Ok(());
    }
    drop(out);
    // Reconnects resubscribe from the last position by themselves; a dead connection is
    // noticed by asking the server something now and then.
    loop {
        match rx.recv_timeout(std::time::Duration::from_secs(15)) {
            Ok(c) => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", line(&c))?;
                out.flush()?;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = remote.call(shelf_protocol::Request::Status) {
                    eprintln!("shelf: the server is unreachable ({e}); retrying");
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

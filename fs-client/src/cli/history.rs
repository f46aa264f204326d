//! `shelf versions PATH` and `shelf restore PATH --version N`: a file's history, straight
//! from the server (no mount needed; a path inside a mount works too).

use super::account;
use anyhow::{bail, Context};
use shelf::config::Login;
use shelf::remote::{Remote, RemoteError};
use shelf_protocol::{NodeId, Request, VersionInfo};
use std::path::{Component, Path};

/// The store path of `path`: relative to its mount point when it lies in a mounted store
/// (the file itself may be deleted), else taken as a path in the store (`files/a.txt`).
fn store_path(path: &Path) -> anyhow::Result<Vec<String>> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    if let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) {
        if let Ok(parent) = std::fs::canonicalize(parent) {
            for m in super::mount::shelf_mounts() {
                if let Ok(rest) = parent.strip_prefix(&m) {
                    return parts(&rest.join(name));
                }
            }
        }
    }
    parts(path)
}

fn parts(path: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(
                s.to_str()
                    .with_context(|| format!("{} is not valid UTF-8", path.display()))?
                    .to_string(),
            ),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                bail!(
                    "{}: use a path inside the store, without ..",
                    path.display()
                )
            }
        }
    }
    if out.is_empty() {
        bail!("{}: name a file", path.display());
    }
    Ok(out)
}

pub(super) fn remote_error(e: RemoteError) -> anyhow::Error {
    match e {
        RemoteError::Server(w) => anyhow::anyhow!("{}", w.message),
        other => anyhow::anyhow!("{other}"),
    }
}

/// The directory holding the file, and the file's name.
pub(super) fn locate(
    remote: &Remote,
    root: NodeId,
    path: &Path,
) -> anyhow::Result<(NodeId, String)> {
    let mut parts = store_path(path)?;
    let name = parts.pop().unwrap_or_default();
    let mut dir = root;
    for p in &parts {
        let a = remote
            .lookup(dir, p)
            .map_err(|e| remote_error(e).context(format!("folder {p:?}")))?;
        dir = a.node;
    }
    Ok((dir, name))
}

fn history(remote: &Remote, dir: NodeId, name: &str) -> anyhow::Result<Vec<VersionInfo>> {
    let all = remote.list_versions(dir).map_err(remote_error)?;
    Ok(all.into_iter().filter(|v| v.name == name).collect())
}

pub fn versions(path: &Path) -> anyhow::Result<()> {
    let login = Login::load()?;
    let (remote, root) = account::connect(&login)?;
    let (dir, name) = locate(&remote, root.node, path)?;
    let list = history(&remote, dir, &name)?;
    if list.is_empty() {
        bail!("{} has no versions", path.display());
    }
    let deleted = list.last().is_some_and(|v| v.deleted);
    println!(
        "{name}: {} version(s){}",
        list.len(),
        if deleted { ", deleted" } else { "" }
    );
    println!("  {:<5} {:<19}  {:>10}  device", "", "saved (UTC)", "size");
    for v in &list {
        println!(
            "  {:<5} {:<19}  {:>10}  {}",
            format!("v{:02}", v.number),
            utc(v.created.secs),
            human(v.size),
            v.device
        );
    }
    println!(
        "restore one with: shelf restore {} --version N",
        path.display()
    );
    Ok(())
}

pub fn restore(path: &Path, number: u64) -> anyhow::Result<()> {
    // As an agent of this device: the mount applies the restore like another device's
    // change (it skips its own, which it already knows).
    let (_login, remote, root) = super::import::connect_as("restore")?;
    let (dir, name) = locate(&remote, root, path)?;
    let list = history(&remote, dir, &name)?;
    if !list.iter().any(|v| v.number == number) {
        let known: Vec<String> = list.iter().map(|v| format!("{}", v.number)).collect();
        if known.is_empty() {
            bail!("{} has no versions", path.display());
        }
        bail!(
            "{} has no version {number} (it has {})",
            path.display(),
            known.join(", ")
        );
    }
    let restore = Request::Restore {
        dir,
        name: name.clone(),
        number,
    };
    let attr = remote.ask_attr("restore", restore).map_err(remote_error)?;
    let now = history(&remote, dir, &name)?
        .last()
        .map(|v| v.number)
        .unwrap_or(0);
    println!(
        "{name}: version v{number:02} restored as the newest version v{now:02} ({})",
        human(attr.size)
    );
    Ok(())
}

pub(super) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub(super) fn utc(secs: i64) -> String {
    let [y, m, d, hh, mm, ss] = shelf_protocol::Timestamp { secs, nanos: 0 }.utc();
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_795_305_600 + 3_723), "2026-11-22 01:02:03");
    }

    #[test]
    fn store_paths() {
        assert_eq!(
            parts(Path::new("files/work/a.txt")).unwrap(),
            ["files", "work", "a.txt"]
        );
        assert!(parts(Path::new("../x")).is_err());
        assert!(parts(Path::new("/")).is_err());
    }
}

//! `shelf category add PATH` and `shelf category list`: the category tree
//! (`photos/ files/ videos/` × `personal/ work/ projects/` and sub-categories), with the
//! number of files and bytes under each and its flat name (`photo.01work.02WebProject`,
//! also the `user.shelf.category` attribute of everything inside it).

use super::account;
use super::history::human;
use anyhow::bail;
use shelf::config::Login;
use shelf::remote::Remote;
use shelf_protocol::category::{flat_name, AREAS, KINDS};
use shelf_protocol::names::validate_name;
use shelf_protocol::{Attr, ErrorCode, NodeId, NodeKind, Request};

fn lookup(remote: &Remote, parent: NodeId, name: &str) -> anyhow::Result<Option<Attr>> {
    match remote.lookup(parent, name) {
        Ok(a) => Ok(Some(a)),
        Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(None),
        Err(e) => Err(account::server_error(e)),
    }
}

/// `mkdir -p` of `parts` below `root`; whether the last folder is new.
fn make_path(remote: &Remote, root: NodeId, parts: &[&str]) -> anyhow::Result<bool> {
    let mut at = root;
    let mut created = false;
    for (i, part) in parts.iter().enumerate() {
        created = false;
        let attr = match lookup(remote, at, part)? {
            Some(a) => a,
            None => {
                created = true;
                let mkdir = Request::Mkdir {
                    parent: at,
                    name: part.to_string(),
                    mode: 0o755,
                    id: None,
                };
                remote
                    .ask_attr("mkdir", mkdir)
                    .map_err(account::server_error)?
            }
        };
        if attr.kind != NodeKind::Dir {
            bail!("{} is a file, not a category", parts[..=i].join("/"));
        }
        at = attr.node;
    }
    Ok(created)
}

/// PATH is `photos/work/WebProject`, or `work/WebProject` for all three kinds.
pub fn add(path: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for p in &parts {
        if validate_name(p).is_err() {
            bail!("{p:?} cannot be a category name");
        }
    }
    let kinds: Vec<&str> = match parts.first() {
        Some(k) if KINDS.contains(k) => vec![*k],
        Some(a) if AREAS.contains(a) => KINDS.to_vec(),
        _ => bail!(
            "a category lies under photos/, files/ or videos/ and then personal/, work/ or projects/ \
             (for example photos/work/WebProject, or work/WebProject for all three)"
        ),
    };
    let rest = if KINDS.contains(&parts[0]) {
        &parts[1..]
    } else {
        &parts[..]
    };
    if rest.first().is_none_or(|a| !AREAS.contains(a)) {
        bail!("below {} come personal/, work/ or projects/", parts[0]);
    }
    let login = Login::load()?;
    let (remote, root) = account::connect(&login)?;
    for kind in kinds {
        let mut full = vec![kind];
        full.extend_from_slice(rest);
        let created = make_path(&remote, root.node, &full)?;
        println!(
            "{} {}/ ({})",
            if created { "added" } else { "exists:" },
            full.join("/"),
            flat_name(&full).unwrap_or_default()
        );
    }
    Ok(())
}

/// Files and bytes under a folder, and its sub-folders' own totals, in name order.
struct Tree {
    name: String,
    files: u64,
    bytes: u64,
    children: Vec<Tree>,
}

fn walk(remote: &Remote, dir: NodeId, name: &str) -> anyhow::Result<Tree> {
    let mut tree = Tree {
        name: name.to_string(),
        files: 0,
        bytes: 0,
        children: Vec::new(),
    };
    let mut after = None;
    loop {
        let shelf::remote::calls::DirPage { entries, more } = remote
            .read_dir(dir, after.clone(), 1000)
            .map_err(account::server_error)?;
        for e in &entries {
            match e.attr.kind {
                NodeKind::Dir => {
                    let child = walk(remote, e.attr.node, &e.name)?;
                    tree.files += child.files;
                    tree.bytes += child.bytes;
                    tree.children.push(child);
                }
                NodeKind::File => {
                    tree.files += 1;
                    tree.bytes += e.attr.size;
                }
                _ => {}
            }
        }
        after = entries.last().map(|e| e.name.clone());
        if !more || after.is_none() {
            break;
        }
    }
    tree.children.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tree)
}

fn print(tree: &Tree, path: &mut Vec<String>) {
    path.push(tree.name.clone());
    let depth = path.len() - 1;
    let label = format!("{}{}/", "  ".repeat(depth), tree.name);
    println!(
        "{label:<40} {:>7} files {:>11}   {}",
        tree.files,
        human(tree.bytes),
        flat_name(path).unwrap_or_default()
    );
    for c in &tree.children {
        print(c, path);
    }
    path.pop();
}

pub fn list() -> anyhow::Result<()> {
    let login = Login::load()?;
    let (remote, root) = account::connect(&login)?;
    for kind in KINDS {
        let Some(attr) = lookup(&remote, root.node, kind)? else {
            continue;
        };
        let tree = walk(&remote, attr.node, kind)?;
        print(&tree, &mut Vec::new());
    }
    Ok(())
}

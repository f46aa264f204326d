//! Hard links: a file may have several names (directory entries) in its account's tree.
//!
//! The node record keeps its first name where it always has (`parent`, and the history's
//! name for it); the other names are listed in the record's internal attribute
//! [`LINKS`] (never shown as an extended attribute), and `nlink` counts them all. Removing
//! or renaming one name changes only that name; when the first name goes, the next one
//! takes its place. A file's versions belong to the node, so every name's `.versions/`
//! lists them.
//!
//! Links stay inside one account's own tree and outside shared folders: a share's access
//! is decided by walking up from a node's first name, so a second name elsewhere would
//! change what a share covers (EXDEV, as across filesystems).

use super::history::HistoryTx;
use super::namespace::{abort, tx, TxResult};
use super::{node_key, Ctx, NodeRec, Store};
use crate::authz::Action;
use crate::error::Result;
use shelf_protocol::names::validate_name;
use shelf_protocol::{Attr, ChangeKind, ErrorCode, NodeId, NodeKind, Timestamp};

/// The record's internal attribute that lists a file's names after the first.
pub(crate) const LINKS: &str = "shelf.links";

/// The names of `rec` after its first one.
pub(crate) fn other_names(rec: &NodeRec) -> Vec<(NodeId, String)> {
    rec.xattrs
        .get(LINKS)
        .and_then(|b| postcard::from_bytes(b).ok())
        .unwrap_or_default()
}

fn set_other_names(rec: &mut NodeRec, names: &[(NodeId, String)]) -> TxResult<()> {
    if names.is_empty() {
        rec.xattrs.remove(LINKS);
    } else {
        let bytes = postcard::to_stdvec(names).map_err(|e| {
            crate::kv::ConflictableTransactionError::Abort(crate::StoreError::Corrupt(
                e.to_string(),
            ))
        })?;
        rec.xattrs.insert(LINKS.to_string(), bytes);
    }
    Ok(())
}

/// Whether an extended attribute name is internal to the store (never listed or served).
pub(crate) fn is_internal_xattr(name: &str) -> bool {
    name.starts_with("shelf.")
}

/// `(parent, name)` of `id` stops naming it. Returns false when it is the file's only
/// name (the caller then unlinks the node as before); otherwise the record is updated and
/// written — the next name becomes the first when the first goes — and true is returned.
pub(crate) fn tx_drop_name(
    history: &HistoryTx<'_>,
    id: NodeId,
    rec: &mut NodeRec,
    (parent, name): (NodeId, &str),
    now: Timestamp,
) -> TxResult<bool> {
    if rec.kind == NodeKind::Dir || rec.nlink <= 1 {
        return Ok(false);
    }
    let mut others = other_names(rec);
    if others.is_empty() {
        return Ok(false);
    }
    match others.iter().position(|(p, n)| *p == parent && n == name) {
        Some(i) => {
            others.remove(i);
        }
        None => {
            // The first name goes: the next one takes its place.
            let (p, n) = others.remove(0);
            rec.parent = p;
            history.set_name(id, p, &n)?;
        }
    }
    set_other_names(rec, &others)?;
    rec.nlink -= 1;
    rec.ctime = now;
    history.store.tx_put(history.nodes, id, rec)?;
    Ok(true)
}

/// A rename of `from` to `to`, when `from` is one of the file's later names: only that
/// entry changes (returns true). False: `from` is its first name (the caller moves it).
pub(crate) fn tx_rename_other_name(
    rec: &mut NodeRec,
    from: (NodeId, &str),
    to: (NodeId, &str),
) -> TxResult<bool> {
    let mut others = other_names(rec);
    let Some(i) = others.iter().position(|(p, n)| *p == from.0 && n == from.1) else {
        return Ok(false);
    };
    others[i] = (to.0, to.1.to_string());
    set_other_names(rec, &others)?;
    Ok(true)
}

impl Store {
    /// link(2): gives the file `node` the new name `new_name` in `new_parent`.
    pub fn link(
        &self,
        ctx: &Ctx,
        node: NodeId,
        new_parent: NodeId,
        new_name: &str,
    ) -> Result<Attr> {
        validate_name(new_name)?;
        self.refuse_in_shared_view(ctx, new_parent)?;
        let now = self.now();
        // Authorised first (so a refusal tells nothing about other accounts' nodes), then
        // only inside the account's own tree, and outside shared folders.
        self.authorized_node(ctx, node, Action::Write)?;
        self.authorized_node(ctx, new_parent, Action::Write)?;
        if self.shared_scope(ctx, node)? || self.shared_scope(ctx, new_parent)? {
            return Err(ErrorCode::CrossDevice.into());
        }
        let attr = self
            .db
            .transaction([&self.nodes, &self.dirents], |[nodes, dirents]| {
                let mut dir = self.tx_node(ctx, nodes, new_parent, Action::Write)?;
                if dir.kind != NodeKind::Dir {
                    return abort(ErrorCode::NotDir);
                }
                let mut rec = self.tx_node(ctx, nodes, node, Action::Write)?;
                if rec.deleted.is_some() {
                    return abort(ErrorCode::NotFound);
                }
                if rec.kind == NodeKind::Dir {
                    return abort(ErrorCode::PermissionDenied);
                }
                if rec.owner != ctx.account || dir.owner != ctx.account {
                    return abort(ErrorCode::CrossDevice);
                }
                let key = tx(self.dirent_key(dir.owner, new_parent, new_name))?;
                if dirents.get(&key)?.is_some() {
                    return abort(ErrorCode::Exists);
                }
                dirents.insert(
                    key.clone(),
                    tx(self.dirent_value(dir.owner, &key, node, new_name))?,
                )?;
                let mut others = other_names(&rec);
                others.push((new_parent, new_name.to_string()));
                set_other_names(&mut rec, &others)?;
                rec.nlink += 1;
                rec.ctime = now;
                self.tx_put(nodes, node, &rec)?;
                dir.entries += 1;
                dir.mtime = now;
                dir.ctime = now;
                self.tx_put(nodes, new_parent, &dir)?;
                Ok(rec.attr(node))
            })
            .map_err(super::namespace::tx_error)?;
        self.publish(ctx, ChangeKind::Created, node, new_parent, new_name);
        Ok(attr)
    }

    /// Whether `id` is a shared node or inside one (for anyone).
    fn shared_scope(&self, ctx: &Ctx, id: NodeId) -> Result<bool> {
        let mut cur = id;
        for _ in 0..1024 {
            if self.is_shared_node(cur)? {
                return Ok(true);
            }
            let Some(bytes) = self.nodes.get(node_key(cur))? else {
                return Ok(false);
            };
            let rec = self.open_node(cur, &bytes)?;
            if rec.parent == cur || cur == ctx.root {
                return Ok(false);
            }
            cur = rec.parent;
        }
        Ok(false)
    }
}

//! The namespace: lookups, listings, creates, removes, renames, attributes, extended
//! attributes and file versions. Every change is one sled transaction over the trees it
//! touches, and every node it reads or changes passes [`authorize`].

use super::batch_tx::NsTrees;
use super::history::HistoryTx;
use super::sealed::{dirent_child, node_owner};
use super::{check_format, decode, node_key, version_key, Ctx, NodeRec, Store, VersionRec, FORMAT};
use crate::authz::{authorize, Action};
use crate::error::{Result, StoreError};
use crate::kv::{ConflictableTransactionError, TransactionError, TxTree};
use shelf_protocol::names::{validate_name, validate_symlink_target};
use shelf_protocol::{
    Attr, ChangeKind, ChunkRef, DirEntry, ErrorCode, Expect, NodeId, NodeKind, RenameMode,
    ServerStatus, Timestamp, XattrMode, CLIENT_NODE_IDS, SHARED_OWNER_DIRS,
};
use std::collections::BTreeMap;
use std::ops::Bound;

pub(crate) type TxResult<T> = std::result::Result<T, ConflictableTransactionError<StoreError>>;

/// Internal attribute of a deleted file's record: the device that deleted it.
pub(crate) const DELETED_BY: &str = "shelf.deleted-by";

/// Whether the session's own device deleted `rec` (a deleted file keeps who deleted it).
fn deleted_by(rec: &NodeRec, ctx: &Ctx) -> bool {
    rec.deleted.is_some()
        && rec
            .xattrs
            .get(DELETED_BY)
            .is_some_and(|d| d.as_slice() == ctx.device.as_bytes())
}

/// Largest total size of one node's extended attributes.
pub const MAX_XATTR_BYTES: usize = 64 << 10;
/// Largest page of a directory listing.
pub const MAX_DIR_PAGE: u32 = 4096;

/// What [`Store::create_node`] makes.
pub struct NewNode<'a> {
    pub kind: NodeKind,
    pub mode: u32,
    /// Symlink target.
    pub target: Option<&'a str>,
    /// Fail on an existing name (O_EXCL; always for directories and symlinks).
    pub exclusive: bool,
    /// Device number of a device node.
    pub rdev: u32,
    /// The id the client chose (in [`CLIENT_NODE_IDS`]); `None`: the store numbers it.
    pub id: Option<NodeId>,
}

pub(crate) fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Db(e),
    }
}

pub(crate) fn abort<T>(code: ErrorCode) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(code.into()))
}

pub(crate) fn tx_decode<T: for<'de> serde::Deserialize<'de>>(bytes: &[u8]) -> TxResult<T> {
    decode(bytes).map_err(ConflictableTransactionError::Abort)
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> TxResult<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| ConflictableTransactionError::Abort(e.into()))
}

/// A store result inside a transaction.
pub(crate) fn tx<T>(r: Result<T>) -> TxResult<T> {
    r.map_err(ConflictableTransactionError::Abort)
}

impl Store {
    /// The history records of `owner`'s nodes, for a change `ctx` makes in a namespace
    /// transaction.
    fn history_tx<'a>(&'a self, ctx: &'a Ctx, owner: u64, trees: &'a NsTrees) -> HistoryTx<'a> {
        let (nodes, _, lineage, graves, names, _) = trees;
        HistoryTx {
            store: self,
            owner,
            nodes,
            lineage,
            graves,
            names,
            device: &ctx.device,
        }
    }

    /// Reads a node inside a transaction and authorises `action` on it.
    pub(crate) fn tx_node(
        &self,
        ctx: &Ctx,
        nodes: &TxTree,
        id: NodeId,
        action: Action,
    ) -> TxResult<NodeRec> {
        let Some(bytes) = nodes.get(node_key(id))? else {
            return abort(ErrorCode::NotFound);
        };
        let rec = tx(self.open_node(id, &bytes))?;
        if rec.format != FORMAT {
            return Err(ConflictableTransactionError::Abort(StoreError::Corrupt(
                "node record of unknown format".into(),
            )));
        }
        authorize(ctx, action, Some(self.target_in(ctx, id, &rec, nodes))).or_else(abort)?;
        Ok(rec)
    }

    pub(crate) fn tx_put(&self, nodes: &TxTree, id: NodeId, rec: &NodeRec) -> TxResult<()> {
        nodes.insert(node_key(id), tx(self.seal_node(id, rec))?)?;
        Ok(())
    }

    fn tx_dir(&self, ctx: &Ctx, nodes: &TxTree, id: NodeId, action: Action) -> TxResult<NodeRec> {
        let rec = self.tx_node(ctx, nodes, id, action)?;
        if rec.kind != NodeKind::Dir {
            return abort(ErrorCode::NotDir);
        }
        Ok(rec)
    }
}

fn child_of(v: &[u8]) -> TxResult<NodeId> {
    tx(dirent_child(v))
}

fn check_name(name: &str) -> Result<()> {
    validate_name(name).map_err(StoreError::from)
}

impl Store {
    /// [`Store::node`] for other modules.
    pub(crate) fn authorized_node(&self, ctx: &Ctx, id: NodeId, action: Action) -> Result<NodeRec> {
        self.node(ctx, id, action)
    }

    fn node(&self, ctx: &Ctx, id: NodeId, action: Action) -> Result<NodeRec> {
        let Some(bytes) = self.nodes.get(node_key(id))? else {
            return Err(ErrorCode::NotFound.into());
        };
        let rec = self.open_node(id, &bytes)?;
        check_format(rec.format, "node")?;
        authorize(ctx, action, Some(self.target(ctx, id, &rec)))?;
        if rec.deleted.is_some() {
            return Err(ErrorCode::NotFound.into());
        }
        Ok(rec)
    }

    /// The file a commit writes to: a live one, or one this very device deleted while it
    /// still had the file open (its last content is kept in the deleted file's history,
    /// "uploaded under no name", restorable like any deleted file's).
    fn node_to_commit(&self, ctx: &Ctx, id: NodeId) -> Result<NodeRec> {
        let Some(bytes) = self.nodes.get(node_key(id))? else {
            return Err(ErrorCode::NotFound.into());
        };
        let rec = self.open_node(id, &bytes)?;
        check_format(rec.format, "node")?;
        authorize(ctx, Action::Write, Some(self.target(ctx, id, &rec)))?;
        if rec.deleted.is_some() && !deleted_by(&rec, ctx) {
            return Err(ErrorCode::NotFound.into());
        }
        Ok(rec)
    }

    pub fn getattr(&self, ctx: &Ctx, id: NodeId) -> Result<Attr> {
        if let Some(attr) = self.shared_owner_attr(ctx, id)? {
            return Ok(attr);
        }
        let rec = self.node(ctx, id, Action::Read)?;
        // What the session may do with the node, from the one authorisation function.
        let writable = authorize(ctx, Action::Write, Some(self.target(ctx, id, &rec))).is_ok()
            // `shared/` itself takes no new entries (see `refuse_in_shared_view`).
            && !(rec.parent == ctx.root && self.shared_dir(ctx.account, ctx.root).ok() == Some(id));
        Ok(match writable {
            true => rec.attr(id),
            false => rec.read_only_attr(id),
        })
    }

    /// Nothing is created, removed or renamed in `shared/` or `shared/OWNER/` (they show
    /// what others share; the shared nodes themselves are below them).
    pub(crate) fn refuse_in_shared_view(&self, ctx: &Ctx, dir: NodeId) -> Result<()> {
        let shared = match super::batch_tx::in_batch() {
            true => {
                let key = self.dirent_key(ctx.account, ctx.root, super::accounts::SHARED)?;
                self.ns_tx(|(_, dirents, ..)| Ok(dirents.get(&key)?))?
                    .and_then(|v| dirent_child(&v).ok())
            }
            false => self.shared_dir(ctx.account, ctx.root).ok(),
        };
        if SHARED_OWNER_DIRS.contains(&dir) || shared == Some(dir) {
            return Err(ErrorCode::ReadOnly.into());
        }
        Ok(())
    }

    pub fn lookup(&self, ctx: &Ctx, parent: NodeId, name: &str) -> Result<Attr> {
        if let Some(entries) = self.shared_listing(ctx, parent)? {
            return entries
                .into_iter()
                .find(|e| e.name == name)
                .map(|e| e.attr)
                .ok_or_else(|| ErrorCode::NotFound.into());
        }
        let dir = self.node(ctx, parent, Action::Read)?;
        if dir.kind != NodeKind::Dir {
            return Err(ErrorCode::NotDir.into());
        }
        check_name(name)?;
        let Some(child) = self
            .dirents
            .get(self.dirent_key(dir.owner, parent, name)?)?
        else {
            return Err(ErrorCode::NotFound.into());
        };
        self.getattr(ctx, dirent_child(&child)?)
    }

    pub fn readdir(
        &self,
        ctx: &Ctx,
        dir: NodeId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<DirEntry>, bool)> {
        let limit = limit.clamp(1, MAX_DIR_PAGE) as usize;
        if let Some(entries) = self.shared_listing(ctx, dir)? {
            let mut rest: Vec<DirEntry> = entries
                .into_iter()
                .filter(|e| after.is_none_or(|a| e.name.as_str() > a))
                .collect();
            let more = rest.len() > limit;
            rest.truncate(limit);
            return Ok((rest, more));
        }
        let rec = self.node(ctx, dir, Action::Read)?;
        if rec.kind != NodeKind::Dir {
            return Err(ErrorCode::NotDir.into());
        }
        let prefix = dir.to_be_bytes();
        let lo = match after {
            Some(name) => Bound::Excluded(self.dirent_key(rec.owner, dir, name)?),
            None => Bound::Included(prefix.to_vec()),
        };
        let hi = Bound::Excluded((dir + 1).to_be_bytes().to_vec());
        let mut entries = Vec::new();
        let mut more = false;
        for item in self.dirents.range::<Vec<u8>, _>((lo, hi)) {
            let (k, v) = item?;
            if entries.len() == limit {
                more = true;
                break;
            }
            let name = self.dirent_name(rec.owner, &k, &v)?;
            let attr = self.getattr(ctx, dirent_child(&v)?)?;
            entries.push(DirEntry { name, attr });
        }
        Ok((entries, more))
    }

    /// Creates a directory, empty file or symlink named `name` in `parent`.
    pub fn create_node(
        &self,
        ctx: &Ctx,
        parent: NodeId,
        name: &str,
        new: NewNode<'_>,
    ) -> Result<Attr> {
        let NewNode {
            kind,
            mode,
            target,
            exclusive,
            rdev,
            id: chosen,
        } = new;
        check_name(name)?;
        self.refuse_in_shared_view(ctx, parent)?;
        if let Some(t) = target {
            validate_symlink_target(t)?;
        }
        let id = match chosen {
            Some(id) if CLIENT_NODE_IDS.contains(&id) => id,
            Some(_) => return Err(ErrorCode::InvalidArgument.into()),
            None => self.new_node_id()?,
        };
        let now = self.now();
        let rec = NodeRec {
            format: FORMAT,
            owner: ctx.account,
            parent,
            kind,
            mode: match kind {
                NodeKind::Symlink => 0o777,
                _ => mode & 0o7777,
            },
            size: target.map(|t| t.len() as u64).unwrap_or(0),
            mtime: now,
            ctime: now,
            atime: now,
            nlink: if kind == NodeKind::Dir { 2 } else { 1 },
            version: 0,
            entries: 0,
            target: target.map(str::to_string),
            rdev,
            uid: None,
            gid: None,
            xattrs: BTreeMap::new(),
            deleted: None,
        };
        self.ns_tx(|trees @ (nodes, dirents, ..)| {
            let mut dir = self.tx_dir(ctx, nodes, parent, Action::Write)?;
            let history = self.history_tx(ctx, dir.owner, trees);
            let key = tx(self.dirent_key(dir.owner, parent, name))?;
            if chosen.is_some() {
                if let Some(bytes) = nodes.get(node_key(id))? {
                    // This create was applied before (its answer was lost): the node
                    // is the answer, wherever it is now. Another account's node of
                    // that id (a collision of random ids) is refused without detail.
                    if tx(node_owner(&bytes))? != dir.owner {
                        return abort(ErrorCode::InvalidArgument);
                    }
                    let old = self.tx_node(ctx, nodes, id, Action::Read)?;
                    if old.deleted.is_some() {
                        return abort(ErrorCode::NotFound);
                    }
                    return Ok((old.attr(id), false));
                }
            }
            if let Some(existing) = dirents.get(&key)? {
                // O_CREAT without O_EXCL on an existing file opens it.
                let existing = child_of(&existing)?;
                let old = self.tx_node(ctx, nodes, existing, Action::Read)?;
                if exclusive || kind != NodeKind::File || old.kind != NodeKind::File {
                    return abort(ErrorCode::Exists);
                }
                return Ok((old.attr(existing), false));
            }
            dirents.insert(
                key.clone(),
                tx(self.dirent_value(dir.owner, &key, id, name))?,
            )?;
            dir.entries += 1;
            if kind == NodeKind::Dir {
                dir.nlink += 1;
            }
            dir.mtime = now;
            dir.ctime = now;
            self.tx_put(nodes, parent, &dir)?;
            // A node belongs to the account that owns its folder (a shared folder's
            // owner, when someone it is shared with creates it).
            let rec = NodeRec {
                owner: dir.owner,
                ..rec.clone()
            };
            self.tx_put(nodes, id, &rec)?;
            history.set_name(id, parent, name)?;
            if kind == NodeKind::File {
                history.take_grave(parent, name, id)?;
            }
            Ok((rec.attr(id), true))
        })
        .map(|(attr, created)| {
            if created {
                self.publish(ctx, ChangeKind::Created, attr.node, parent, name);
            }
            attr
        })
    }

    pub fn readlink(&self, ctx: &Ctx, id: NodeId) -> Result<String> {
        let rec = self.node(ctx, id, Action::Read)?;
        rec.target.ok_or_else(|| ErrorCode::InvalidArgument.into())
    }

    /// Removes a name: a file or symlink (`want_dir == false`) or an empty directory.
    /// Removes a name; returns the node it named and whether the node keeps other names
    /// (a hard-linked file).
    pub fn remove(
        &self,
        ctx: &Ctx,
        parent: NodeId,
        name: &str,
        want_dir: bool,
    ) -> Result<(NodeId, bool)> {
        self.remove_expecting(ctx, parent, name, want_dir, None)
    }

    /// The newest version of `node` if every version after `seen` was made by the asking
    /// device (its own uploads, which may overtake its queued delete), else `seen`: only
    /// another device's edit makes a delete a conflict.
    fn own_versions_since(
        &self,
        ctx: &Ctx,
        (nodes, versions): (&TxTree, &TxTree),
        node: NodeId,
        seen: u64,
    ) -> TxResult<u64> {
        let rec = match self.tx_node(ctx, nodes, node, Action::Read) {
            Ok(rec) if rec.deleted.is_none() => rec,
            Ok(_) | Err(ConflictableTransactionError::Abort(_)) => return Ok(seen),
            Err(e) => return Err(e),
        };
        for v in seen + 1..=rec.version {
            let by_this_device = versions
                .get(version_key(node, v))?
                .and_then(|b| decode::<VersionRec>(&b).ok())
                .is_some_and(|r| r.device == ctx.device);
            if !by_this_device {
                return Ok(seen);
            }
        }
        Ok(rec.version.max(seen))
    }

    /// [`Store::remove`], but only if the name still holds the node (and, for a file, the
    /// content version) the client saw; `Conflict` otherwise, with nothing removed.
    pub fn remove_expecting(
        &self,
        ctx: &Ctx,
        parent: NodeId,
        name: &str,
        want_dir: bool,
        expect: Option<Expect>,
    ) -> Result<(NodeId, bool)> {
        check_name(name)?;
        self.refuse_in_shared_view(ctx, parent)?;
        let now = self.now();
        self.ns_tx(|trees @ (nodes, dirents, .., versions)| {
            let expect = match expect {
                Some(Expect {
                    node,
                    version: Some(v),
                }) => Some(Expect {
                    node,
                    version: Some(self.own_versions_since(ctx, (nodes, versions), node, v)?),
                }),
                other => other,
            };
            let mut dir = self.tx_dir(ctx, nodes, parent, Action::Write)?;
            let history = self.history_tx(ctx, dir.owner, trees);
            let key = tx(self.dirent_key(dir.owner, parent, name))?;
            let Some(child) = dirents.get(&key)? else {
                return abort(ErrorCode::NotFound);
            };
            let child = child_of(&child)?;
            let mut rec = self.tx_node(ctx, nodes, child, Action::Write)?;
            if let Some(e) = expect {
                let edited = e.version.is_some_and(|v| v != rec.version);
                if e.node != child || edited {
                    return abort(ErrorCode::Conflict);
                }
            }
            match (want_dir, rec.kind == NodeKind::Dir) {
                (true, false) => return abort(ErrorCode::NotDir),
                (false, true) => return abort(ErrorCode::IsDir),
                (true, true) if rec.entries > 0 => return abort(ErrorCode::NotEmpty),
                _ => {}
            }
            dirents.remove(key.clone())?;
            dir.entries = dir.entries.saturating_sub(1);
            if rec.kind == NodeKind::Dir {
                dir.nlink = dir.nlink.saturating_sub(1);
            }
            dir.mtime = now;
            dir.ctime = now;
            self.tx_put(nodes, parent, &dir)?;
            if super::links::tx_drop_name(&history, child, &mut rec, (parent, name), now)? {
                return Ok((child, true));
            }
            Self::tx_unlink_node(&history, child, &mut rec, now, Some((parent, name)))?;
            Ok((child, false))
        })
        .inspect(|&(child, _)| {
            self.publish(ctx, ChangeKind::Removed, child, parent, name);
            // The node only: names stay out of the log an admin reads.
            let ctx = ctx.clone();
            self.after_commit(move |store| {
                store.audit(
                    ctx.account,
                    super::audit::AuditKind::Deleted,
                    &ctx.user,
                    &ctx.device,
                    &format!("node {child}"),
                )
            });
        })
    }

    /// Drops a node's last name: files with history keep their record (marked deleted) so
    /// their versions stay restorable, buried under `grave` (their last name) unless another
    /// file took their history over; other nodes go.
    fn tx_unlink_node(
        history: &HistoryTx<'_>,
        id: NodeId,
        rec: &mut NodeRec,
        now: Timestamp,
        grave: Option<(NodeId, &str)>,
    ) -> TxResult<()> {
        if history.has_history(id, rec)? {
            rec.nlink = 0;
            rec.deleted = Some(now);
            rec.ctime = now;
            // Who deleted it decides whether a late edit brings it back (conflicts.rs).
            rec.xattrs
                .insert(DELETED_BY.to_string(), history.device.as_bytes().to_vec());
            history.store.tx_put(history.nodes, id, rec)?;
            if let Some((parent, name)) = grave {
                history.bury(parent, name, id, now)?;
            }
            Ok(())
        } else {
            history.nodes.remove(node_key(id))?;
            history.forget(id)
        }
    }

    pub fn rename(
        &self,
        ctx: &Ctx,
        (parent, name): (NodeId, &str),
        (new_parent, new_name): (NodeId, &str),
        mode: RenameMode,
        expect: Option<NodeId>,
    ) -> Result<Option<NodeId>> {
        check_name(name)?;
        check_name(new_name)?;
        self.refuse_in_shared_view(ctx, parent)?;
        self.refuse_in_shared_view(ctx, new_parent)?;
        let now = self.now();
        self.ns_tx(|trees @ (nodes, dirents, ..)| {
            let mut src_dir = self.tx_dir(ctx, nodes, parent, Action::Write)?;
            let history = self.history_tx(ctx, src_dir.owner, trees);
            let from_key = tx(self.dirent_key(src_dir.owner, parent, name))?;
            let to_key = tx(self.dirent_key(src_dir.owner, new_parent, new_name))?;
            let Some(src) = dirents.get(&from_key)? else {
                return abort(ErrorCode::NotFound);
            };
            let src = child_of(&src)?;
            if expect.is_some_and(|e| e != src) {
                return abort(ErrorCode::Conflict);
            }
            let mut src_rec = self.tx_node(ctx, nodes, src, Action::Write)?;
            let same_dir = parent == new_parent;
            let mut dst_dir = if same_dir {
                None
            } else {
                Some(self.tx_dir(ctx, nodes, new_parent, Action::Write)?)
            };
            // Names are filed under their folder owner's key: a move between two
            // accounts' trees (into or out of a share) is a copy, as across devices.
            if dst_dir.as_ref().is_some_and(|d| d.owner != src_dir.owner) {
                return abort(ErrorCode::CrossDevice);
            }
            if from_key == to_key {
                return Ok((None, None, None));
            }
            let is_dir = i64::from(src_rec.kind == NodeKind::Dir);
            // A directory may not move into itself or below itself.
            if is_dir == 1 && !same_dir {
                let mut cur = new_parent;
                loop {
                    if cur == src {
                        return abort(ErrorCode::Busy);
                    }
                    let r = self.tx_node(ctx, nodes, cur, Action::Read)?;
                    if r.parent == cur {
                        break;
                    }
                    cur = r.parent;
                }
            }
            // (entries, nlink) changes of the source and destination directories.
            let (mut src_delta, mut dst_delta) = ((0i64, 0i64), (0i64, 0i64));
            let mut replaced = None;
            let mut exchanged = None;
            let existing = dirents.get(&to_key)?.map(|v| child_of(&v)).transpose()?;
            match (existing, mode) {
                (Some(_), RenameMode::NoReplace) => return abort(ErrorCode::Exists),
                (None, RenameMode::Exchange) => return abort(ErrorCode::NotFound),
                (Some(dst), RenameMode::Exchange) => {
                    let mut dst_rec = self.tx_node(ctx, nodes, dst, Action::Write)?;
                    let dst_is_dir = i64::from(dst_rec.kind == NodeKind::Dir);
                    dirents.insert(
                        from_key.clone(),
                        tx(self.dirent_value(src_dir.owner, &from_key, dst, name))?,
                    )?;
                    dirents.insert(
                        to_key.clone(),
                        tx(self.dirent_value(src_dir.owner, &to_key, src, new_name))?,
                    )?;
                    src_delta.1 = dst_is_dir - is_dir;
                    dst_delta.1 = is_dir - dst_is_dir;
                    dst_rec.parent = parent;
                    dst_rec.ctime = now;
                    self.tx_put(nodes, dst, &dst_rec)?;
                    history.set_name(dst, parent, name)?;
                    exchanged = Some(dst);
                }
                // Two names of one file: nothing to do (rename(2)).
                (Some(dst), RenameMode::Replace) if dst == src => {
                    return Ok((None, None, None));
                }
                (Some(dst), RenameMode::Replace) => {
                    let mut dst_rec = self.tx_node(ctx, nodes, dst, Action::Write)?;
                    let dst_is_dir = i64::from(dst_rec.kind == NodeKind::Dir);
                    match (is_dir, dst_is_dir) {
                        (1, 0) => return abort(ErrorCode::NotDir),
                        (0, 1) => return abort(ErrorCode::IsDir),
                        (1, 1) if dst_rec.entries > 0 => return abort(ErrorCode::NotEmpty),
                        _ => {}
                    }
                    dirents.remove(from_key.clone())?;
                    dirents.insert(
                        to_key.clone(),
                        tx(self.dirent_value(src_dir.owner, &to_key, src, new_name))?,
                    )?;
                    if super::links::tx_drop_name(
                        &history,
                        dst,
                        &mut dst_rec,
                        (new_parent, new_name),
                        now,
                    )? {
                        // A file with other names only loses this one.
                    } else {
                        // Saving by rename over the old file continues its history.
                        let inherited = src_rec.kind == NodeKind::File
                            && history.has_history(dst, &dst_rec)?
                            && history.inherit(src, dst)?;
                        let grave = (!inherited).then_some((new_parent, new_name));
                        Self::tx_unlink_node(&history, dst, &mut dst_rec, now, grave)?;
                        replaced = Some(dst);
                    }
                    src_delta = (-1, -is_dir);
                    dst_delta = (0, is_dir - dst_is_dir);
                }
                (None, _) => {
                    dirents.remove(from_key.clone())?;
                    dirents.insert(
                        to_key.clone(),
                        tx(self.dirent_value(src_dir.owner, &to_key, src, new_name))?,
                    )?;
                    src_delta = (-1, -is_dir);
                    dst_delta = (1, is_dir);
                    if src_rec.kind == NodeKind::File {
                        history.take_grave(new_parent, new_name, src)?;
                    }
                }
            }
            // A later name of a linked file moves alone; the first name is the node's.
            if !super::links::tx_rename_other_name(
                &mut src_rec,
                (parent, name),
                (new_parent, new_name),
            )? {
                history.set_name(src, new_parent, new_name)?;
                src_rec.parent = new_parent;
            }
            src_rec.ctime = now;
            self.tx_put(nodes, src, &src_rec)?;
            let apply = |dir: &mut NodeRec, (entries, nlink): (i64, i64)| {
                dir.entries = (dir.entries as i64 + entries).max(0) as u64;
                dir.nlink = (i64::from(dir.nlink) + nlink).max(2) as u32;
                dir.mtime = now;
                dir.ctime = now;
            };
            match dst_dir.as_mut() {
                None => apply(
                    &mut src_dir,
                    (src_delta.0 + dst_delta.0, src_delta.1 + dst_delta.1),
                ),
                Some(d) => {
                    apply(&mut src_dir, src_delta);
                    apply(d, dst_delta);
                    self.tx_put(nodes, new_parent, d)?;
                }
            }
            self.tx_put(nodes, parent, &src_dir)?;
            Ok((replaced, Some(src), exchanged))
        })
        .map(|(replaced, src, exchanged)| {
            if let Some(src) = src {
                let moved = ChangeKind::Moved {
                    from_parent: parent,
                    from_name: name.to_string(),
                };
                self.publish(ctx, moved, src, new_parent, new_name);
            }
            if let Some(dst) = exchanged {
                let moved = ChangeKind::Moved {
                    from_parent: new_parent,
                    from_name: new_name.to_string(),
                };
                self.publish(ctx, moved, dst, parent, name);
            }
            if let Some(dst) = replaced {
                self.publish(ctx, ChangeKind::Removed, dst, new_parent, new_name);
                // Saved by rename over a shared file: the new file is shared as the
                // old one was.
                if let Some(src) = src {
                    self.after_commit(move |store| {
                        if let Err(e) = store.move_shares(dst, src) {
                            tracing::warn!(error = %e, "could not carry shares over a replace");
                        }
                    });
                }
            }
            replaced
        })
    }

    pub fn setattr(
        &self,
        ctx: &Ctx,
        id: NodeId,
        mode: Option<u32>,
        owner: (Option<u32>, Option<u32>),
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<Attr> {
        self.update_node(ctx, id, |rec| {
            if let Some(m) = mode {
                rec.mode = m & 0o7777;
            }
            if let Some(u) = owner.0 {
                rec.uid = Some(u);
            }
            if let Some(g) = owner.1 {
                rec.gid = Some(g);
            }
            if let Some(t) = atime {
                rec.atime = t;
            }
            if let Some(t) = mtime {
                rec.mtime = t;
            }
            rec.ctime = self.now();
            Ok(())
        })
    }

    fn update_node(
        &self,
        ctx: &Ctx,
        id: NodeId,
        f: impl Fn(&mut NodeRec) -> std::result::Result<(), ErrorCode>,
    ) -> Result<Attr> {
        self.ns_tx(|(nodes, ..)| {
            let mut rec = self.tx_node(ctx, nodes, id, Action::Write)?;
            if rec.deleted.is_some() {
                return abort(ErrorCode::NotFound);
            }
            f(&mut rec).or_else(abort)?;
            self.tx_put(nodes, id, &rec)?;
            Ok((rec.attr(id), rec.parent))
        })
        .map(|(attr, parent)| {
            self.publish(ctx, ChangeKind::Attr, id, parent, "");
            attr
        })
    }

    pub fn set_xattr(
        &self,
        ctx: &Ctx,
        id: NodeId,
        name: &str,
        value: &[u8],
        mode: XattrMode,
    ) -> Result<()> {
        if !name.starts_with("user.") || name.len() > 255 || name.len() <= 5 {
            return Err(ErrorCode::Unsupported.into());
        }
        self.update_node(ctx, id, |rec| {
            let exists = rec.xattrs.contains_key(name);
            match (mode, exists) {
                (XattrMode::Create, true) => return Err(ErrorCode::Exists),
                (XattrMode::Replace, false) => return Err(ErrorCode::NoAttribute),
                _ => {}
            }
            let total: usize = rec
                .xattrs
                .iter()
                .filter(|(k, _)| k.as_str() != name)
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
                + name.len()
                + value.len();
            if total > MAX_XATTR_BYTES {
                return Err(ErrorCode::TooLarge);
            }
            rec.xattrs.insert(name.to_string(), value.to_vec());
            rec.ctime = self.now();
            Ok(())
        })?;
        Ok(())
    }

    pub fn get_xattr(&self, ctx: &Ctx, id: NodeId, name: &str) -> Result<Vec<u8>> {
        let rec = self.node(ctx, id, Action::Read)?;
        if name == super::categories::CATEGORY_XATTR {
            return self
                .category_of(id, &rec)?
                .map(String::into_bytes)
                .ok_or_else(|| ErrorCode::NoAttribute.into());
        }
        rec.xattrs
            .get(name)
            .filter(|_| !super::links::is_internal_xattr(name))
            .cloned()
            .ok_or_else(|| ErrorCode::NoAttribute.into())
    }

    pub fn list_xattr(&self, ctx: &Ctx, id: NodeId) -> Result<Vec<String>> {
        let rec = self.node(ctx, id, Action::Read)?;
        let mut names: Vec<String> = rec
            .xattrs
            .keys()
            .filter(|k| !super::links::is_internal_xattr(k))
            .cloned()
            .collect();
        if self.category_of(id, &rec)?.is_some() {
            names.push(super::categories::CATEGORY_XATTR.to_string());
        }
        Ok(names)
    }

    pub fn remove_xattr(&self, ctx: &Ctx, id: NodeId, name: &str) -> Result<()> {
        self.update_node(ctx, id, |rec| {
            rec.xattrs.remove(name).ok_or(ErrorCode::NoAttribute)?;
            rec.ctime = self.now();
            Ok(())
        })?;
        Ok(())
    }

    /// The chunk list of a file's current version.
    pub fn manifest(&self, ctx: &Ctx, id: NodeId) -> Result<(u64, u64, Vec<ChunkRef>)> {
        let rec = self.node(ctx, id, Action::Read)?;
        if rec.kind != NodeKind::File {
            return Err(ErrorCode::IsDir.into());
        }
        if rec.version == 0 {
            return Ok((0, 0, Vec::new()));
        }
        let Some(bytes) = self.versions.get(version_key(id, rec.version))? else {
            return Err(StoreError::Corrupt(format!(
                "node {id} lacks its current version"
            )));
        };
        let v: VersionRec = decode(&bytes)?;
        check_format(v.format, "version")?;
        Ok((rec.version, v.size, v.chunks))
    }

    /// Records a new version of a file from chunks the account already holds.
    pub fn commit(
        &self,
        ctx: &Ctx,
        id: NodeId,
        base: u64,
        chunks: Vec<ChunkRef>,
        mtime: Timestamp,
    ) -> Result<Attr> {
        // No chunk this commit checks may be collected before the version names it.
        let _shared = self.chunks_in_use()?;
        self.check_commit(ctx, id, &chunks)?;
        self.commit_checked(ctx, id, base, chunks, mtime)
    }

    /// Holds off garbage collection while held: chunks checked present stay present.
    pub fn chunks_in_use(&self) -> Result<std::sync::RwLockReadGuard<'_, ()>> {
        self.gc_lock
            .read()
            .map_err(|_| StoreError::Corrupt("the GC lock was poisoned".into()))
    }

    /// What a commit of `chunks` to `id` needs before its transaction (outside any: it
    /// reads the database directly): the session may write the file, it is a file, and its
    /// owner holds every chunk. Call it under [`Store::chunks_in_use`].
    pub fn check_commit(&self, ctx: &Ctx, id: NodeId, chunks: &[ChunkRef]) -> Result<()> {
        // Authorise before looking at chunks, so nothing is learnt about other accounts.
        let rec = self.node_to_commit(ctx, id)?;
        if rec.kind != NodeKind::File {
            return Err(ErrorCode::IsDir.into());
        }
        for c in chunks {
            // The file's owner holds its chunks (the committer may be a share recipient).
            if !self.chunks.contains(rec.owner, &c.id)? {
                return Err(ErrorCode::MissingChunk.into());
            }
        }
        Ok(())
    }

    /// Records the version a [`Store::check_commit`]ed commit makes, if the file is still
    /// at `base` (else `Conflict`): in the current batch's transaction or its own.
    pub fn commit_checked(
        &self,
        ctx: &Ctx,
        id: NodeId,
        base: u64,
        chunks: Vec<ChunkRef>,
        mtime: Timestamp,
    ) -> Result<Attr> {
        let size: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
        let now = self.now();
        let body = postcard::to_stdvec(&VersionRec {
            format: FORMAT,
            size,
            mtime,
            created: now,
            device: ctx.device.clone(),
            base,
            chunks,
        })?;
        self.ns_tx(|(nodes, .., versions)| {
            let mut rec = self.tx_node(ctx, nodes, id, Action::Write)?;
            if rec.kind != NodeKind::File {
                return abort(ErrorCode::IsDir);
            }
            if rec.deleted.is_some() && !deleted_by(&rec, ctx) {
                return abort(ErrorCode::NotFound);
            }
            if rec.version != base {
                return abort(ErrorCode::Conflict);
            }
            rec.version += 1;
            rec.size = size;
            rec.mtime = mtime;
            // The content changed when it was written (its mtime), not when the upload
            // landed: the client already showed that ctime, and tar compares it.
            rec.ctime = rec.ctime.max(mtime);
            versions.insert(version_key(id, rec.version), body.clone())?;
            self.tx_put(nodes, id, &rec)?;
            Ok((rec.attr(id), rec.parent, rec.deleted.is_some()))
        })
        .map(|(attr, parent, unnamed)| {
            if !unnamed {
                self.publish(ctx, ChangeKind::Content, id, parent, "");
            }
            attr
        })
    }

    pub fn status(&self, ctx: &Ctx) -> Result<ServerStatus> {
        let (mut files, mut dirs, mut logical) = (0u64, 0u64, 0u64);
        // Chunks of current versions, and of old versions (with their sizes).
        let mut current = std::collections::HashSet::new();
        let mut old: BTreeMap<shelf_protocol::ChunkId, u32> = BTreeMap::new();
        let mut old_versions = 0u64;
        for item in self.nodes.iter() {
            let (k, v) = item?;
            if node_owner(&v)? != ctx.account {
                continue;
            }
            let id = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("node key".into()))?;
            let rec = self.open_node(id, &v)?;
            if rec.kind == NodeKind::File {
                for item in self.versions.scan_prefix(node_key(id)) {
                    let (vk, vv) = item?;
                    let version = super::version_of_key(&vk)?;
                    let v: VersionRec = decode(&vv)?;
                    if rec.deleted.is_none() && version == rec.version {
                        current.extend(v.chunks.iter().map(|c| c.id));
                    } else {
                        old_versions += 1;
                        old.extend(v.chunks.iter().map(|c| (c.id, c.len)));
                    }
                }
            }
            if rec.deleted.is_some() {
                continue;
            }
            match rec.kind {
                NodeKind::Dir => dirs += 1,
                NodeKind::File => {
                    files += 1;
                    logical += rec.size;
                }
                NodeKind::Symlink
                | NodeKind::Fifo
                | NodeKind::Socket
                | NodeKind::CharDevice
                | NodeKind::BlockDevice => {}
            }
        }
        let history_bytes = old
            .iter()
            .filter(|(id, _)| !current.contains(*id))
            .map(|(_, len)| u64::from(*len))
            .sum();
        Ok(ServerStatus {
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            user: ctx.user.clone(),
            role: ctx.role,
            files,
            dirs,
            logical_bytes: logical,
            stored_bytes: self.chunks.stored_bytes(ctx.account)?,
            old_versions,
            history_bytes,
            quota: self.quota(ctx.account)?,
            alerts: self.recent_alerts(ctx.account, RECENT_ALERTS)?,
        })
    }
}

/// Alerts [`Store::status`] reports.
const RECENT_ALERTS: usize = 20;

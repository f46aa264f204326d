//! Sharing: an owner grants another user read or read-write access to a file or folder.
//!
//! | tree        | key                   | value |
//! |-------------|-----------------------|-------|
//! | `shares`    | node ‖ recipient      | [`ShareRec`] |
//! | `shares_in` | recipient ‖ node      | owner (BE) |
//!
//! A share covers the node and everything below it: [`Store::target`] walks from a node up
//! to its owner's root looking for a share with the session's account (in an in-memory
//! index of the grants, kept with the tree: the walk runs inside namespace transactions,
//! where sled allows no other reads), so revoking takes effect on the very next request. A recipient sees what is shared with it under
//! `shared/OWNER/NAME`: the `shared` folder of its own tree lists one synthetic folder per
//! owner ([`SHARED_OWNER_DIRS`]), which lists the shared nodes by their names; below them
//! everything is the owner's real nodes. Only the owner shares (a recipient cannot pass on
//! access, let alone more than it got); a recipient may drop its own access only.

use super::audit::AuditKind;
use super::sealed::node_owner;
use super::{decode, node_key, Ctx, NodeRec, Store, FORMAT};
use crate::authz::{Access, Target};
use crate::error::{Result, StoreError};
use serde::{Deserialize, Serialize};
use shelf_protocol::sync::{LockOrRecover, RwLockOrRecover};
use shelf_protocol::{
    Attr, ChangeKind, ChunkId, DirEntry, ErrorCode, NodeId, NodeKind, ShareInfo, Timestamp,
    SHARED_OWNER_DIRS,
};
use std::collections::HashMap;

/// Which account's chunks a chunk request for a file uses, and — for a share recipient —
/// which of them it may learn about: those of the file's own history.
pub struct ChunkScope {
    pub account: u64,
    pub only: Option<std::sync::Arc<std::collections::HashSet<ChunkId>>>,
}

impl ChunkScope {
    pub fn covers(&self, id: &ChunkId) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(id))
    }
}

/// Reads a node record (raw), in or outside a transaction.
type NodeReader<'a> = dyn Fn(NodeId) -> Result<Option<crate::kv::IVec>> + 'a;

/// History chunk sets kept for recipients' chunk requests.
const MAX_CACHED_HISTORIES: usize = 64;

/// Folders walked up from a node looking for a share (a guard against a damaged chain).
const MAX_DEPTH: usize = 1024;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ShareRec {
    pub format: u8,
    pub owner: u64,
    pub node: NodeId,
    pub recipient: u64,
    pub access: Access,
    pub created: Timestamp,
}

fn share_key(node: NodeId, recipient: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&node.to_be_bytes());
    k[8..].copy_from_slice(&recipient.to_be_bytes());
    k
}

fn in_key(recipient: u64, node: NodeId) -> [u8; 16] {
    share_key(recipient, node)
}

/// The synthetic folder `shared/OWNER` of `owner`.
pub fn owner_dir(owner: u64) -> NodeId {
    SHARED_OWNER_DIRS.start + owner
}

impl Store {
    /// What authorisation needs to know of `rec` (node `id`) for `ctx`.
    pub(crate) fn target(&self, ctx: &Ctx, id: NodeId, rec: &NodeRec) -> Target {
        self.target_with(ctx, id, rec, &|n| Ok(self.nodes.get(node_key(n))?))
    }

    /// [`Store::target`] inside a transaction over `nodes`, whose reads must go through it.
    pub(crate) fn target_in(
        &self,
        ctx: &Ctx,
        id: NodeId,
        rec: &NodeRec,
        nodes: &crate::kv::TxTree,
    ) -> Target {
        self.target_with(ctx, id, rec, &|n| {
            nodes
                .get(node_key(n))
                .map_err(|e| StoreError::Corrupt(format!("reading a folder: {e:?}")))
        })
    }

    fn target_with(&self, ctx: &Ctx, id: NodeId, rec: &NodeRec, read: &NodeReader<'_>) -> Target {
        let grant = if rec.owner == ctx.account {
            None
        } else {
            self.grant(ctx.account, id, rec, read).unwrap_or(None)
        };
        Target {
            owner: rec.owner,
            grant,
        }
    }

    /// The strongest access `account` was granted on `id` or a folder above it.
    fn grant(
        &self,
        account: u64,
        id: NodeId,
        rec: &NodeRec,
        read: &NodeReader<'_>,
    ) -> Result<Option<Access>> {
        let mut best: Option<Access> = None;
        let (mut cur, mut parent) = (id, rec.parent);
        // The in-memory index: no database read here, as this runs inside transactions.
        let index = self.share_index.read_or_recover();
        if index.is_empty() {
            return Ok(None);
        }
        for _ in 0..MAX_DEPTH {
            if let Some(grants) = index.get(&cur) {
                for (r, a) in grants {
                    if *r == account {
                        best = best.max(Some(*a));
                    }
                }
                if best == Some(Access::Write) {
                    break;
                }
            }
            if parent == cur {
                break;
            }
            cur = parent;
            parent = match read(cur)? {
                Some(v) => self.open_node(cur, &v)?.parent,
                None => break,
            };
        }
        Ok(best)
    }

    /// Whether anyone was granted access to `id` itself.
    pub(crate) fn is_shared_node(&self, id: NodeId) -> Result<bool> {
        let index = self.share_index.read_or_recover();
        Ok(index.get(&id).is_some_and(|g| !g.is_empty()))
    }

    /// The chunk scope of a request about file `node`: its owner's chunks, limited for a
    /// share recipient to the file's history. Reads may name a deleted file's node (its
    /// versions); writes need a live file.
    pub fn chunk_scope(
        &self,
        ctx: &Ctx,
        node: NodeId,
        action: crate::authz::Action,
    ) -> Result<ChunkScope> {
        let Some(v) = self.nodes.get(node_key(node))? else {
            return Err(ErrorCode::NotFound.into());
        };
        let rec = self.open_node(node, &v)?;
        crate::authz::authorize(ctx, action, Some(self.target(ctx, node, &rec)))?;
        // An owner's late edit of a deleted file is resolved by the commit (the edit stays,
        // conflicts.rs); a recipient cannot write to a file its owner deleted.
        if action == crate::authz::Action::Write
            && rec.deleted.is_some()
            && rec.owner != ctx.account
        {
            return Err(ErrorCode::NotFound.into());
        }
        if rec.owner == ctx.account {
            return Ok(ChunkScope {
                account: ctx.account,
                only: None,
            });
        }
        let key = (node, rec.version, rec.deleted.is_some());
        if let Some(set) = self.history_chunks.lock_or_recover().get(&key).cloned() {
            return Ok(ChunkScope {
                account: rec.owner,
                only: Some(set),
            });
        }
        let (steps, _) = self.walk_history(node, None)?;
        let set: std::collections::HashSet<ChunkId> = steps
            .iter()
            .flat_map(|s| s.rec.chunks.iter().map(|c| c.id))
            .collect();
        let set = std::sync::Arc::new(set);
        {
            let mut c = self.history_chunks.lock_or_recover();
            if c.len() >= MAX_CACHED_HISTORIES {
                c.clear();
            }
            c.insert(key, set.clone());
        }
        Ok(ChunkScope {
            account: rec.owner,
            only: Some(set),
        })
    }

    /// Every share that covers `id` (on it or a folder above), with the node it is on.
    pub(crate) fn covering_shares(&self, id: NodeId) -> Result<Vec<ShareRec>> {
        let mut out = Vec::new();
        // The in-memory index says which nodes are shared (most stores: none).
        let index = self.share_index.read_or_recover();
        if index.is_empty() {
            return Ok(out);
        }
        let mut cur = id;
        for _ in 0..MAX_DEPTH {
            if index.get(&cur).is_some_and(|g| !g.is_empty()) {
                for item in self.shares.scan_prefix(cur.to_be_bytes()) {
                    out.push(decode::<ShareRec>(&item?.1)?);
                }
            }
            let Some(v) = self.nodes.get(node_key(cur))? else {
                break;
            };
            let parent = self.open_node(cur, &v)?.parent;
            if parent == cur {
                break;
            }
            cur = parent;
        }
        Ok(out)
    }

    fn account_by_name(&self, name: &str) -> Result<super::AccountRec> {
        self.account(name)?
            .ok_or_else(|| StoreError::Refused(ErrorCode::NotFound))
    }

    fn account_name(&self, id: u64) -> String {
        self.list_users()
            .ok()
            .and_then(|u| u.into_iter().find(|a| a.id == id))
            .map_or_else(|| format!("#{id}"), |a| a.name)
    }

    /// The owner shares `node` with `with`. Sharing again changes the access.
    pub fn share(&self, ctx: &Ctx, node: NodeId, with: &str, write: bool) -> Result<()> {
        let Some(v) = self.nodes.get(node_key(node))? else {
            return Err(ErrorCode::NotFound.into());
        };
        let rec = self.open_node(node, &v)?;
        let target = self.target(ctx, node, &rec);
        // Only the owner shares: a recipient cannot pass access on (whatever it was given).
        if rec.owner != ctx.account && target.grant.is_some() {
            return Err(ErrorCode::PermissionDenied.into());
        }
        crate::authz::authorize(ctx, crate::authz::Action::Write, Some(target))?;
        if rec.deleted.is_some() {
            return Err(ErrorCode::NotFound.into());
        }
        if rec.parent == node {
            return Err(ErrorCode::InvalidArgument.into()); // the whole store
        }
        let to = self
            .account_by_name(with)
            .map_err(|_| StoreError::Refused(ErrorCode::InvalidArgument))?;
        if to.id == ctx.account {
            return Err(ErrorCode::InvalidArgument.into());
        }
        let share = ShareRec {
            format: FORMAT,
            owner: ctx.account,
            node,
            recipient: to.id,
            access: if write { Access::Write } else { Access::Read },
            created: self.now(),
        };
        self.shares
            .insert(share_key(node, to.id), postcard::to_stdvec(&share)?)?;
        self.shares_in
            .insert(in_key(to.id, node), &ctx.account.to_be_bytes())?;
        self.index_share(node, to.id, Some(share.access));
        self.audit(
            ctx.account,
            AuditKind::Shared,
            &ctx.user,
            &ctx.device,
            &format!(
                "node {node} with {with} ({})",
                if write { "read-write" } else { "read-only" }
            ),
        );
        self.tell_recipient(to.id, ctx, node, ChangeKind::Created);
        Ok(())
    }

    /// Ends shares of `node`: the owner's for `with` (None: everyone), or a recipient's own.
    pub fn unshare(&self, ctx: &Ctx, node: NodeId, with: Option<&str>) -> Result<usize> {
        let Some(v) = self.nodes.get(node_key(node))? else {
            return Err(ErrorCode::NotFound.into());
        };
        let owner = node_owner(&v)?;
        let recipients: Vec<u64> = if owner == ctx.account {
            match with {
                Some(name) => vec![
                    self.account_by_name(name)
                        .map_err(|_| StoreError::Refused(ErrorCode::NotFound))?
                        .id,
                ],
                None => self
                    .shares
                    .scan_prefix(node.to_be_bytes())
                    .filter_map(|i| i.ok())
                    .filter_map(|(_, v)| decode::<ShareRec>(&v).ok())
                    .map(|s| s.recipient)
                    .collect(),
            }
        } else {
            // A recipient drops its own access, and nobody else's.
            if !self.shares.contains_key(share_key(node, ctx.account))? {
                return Err(ErrorCode::NotFound.into());
            }
            if with.is_some_and(|w| w != ctx.user) {
                return Err(ErrorCode::PermissionDenied.into());
            }
            vec![ctx.account]
        };
        let mut removed = 0;
        for r in recipients {
            if self.shares.remove(share_key(node, r))?.is_some() {
                self.shares_in.remove(in_key(r, node))?;
                self.index_share(node, r, None);
                removed += 1;
                self.audit(
                    owner,
                    AuditKind::Unshared,
                    &ctx.user,
                    &ctx.device,
                    &format!("node {node} from {}", self.account_name(r)),
                );
                self.tell_recipient(r, ctx, node, ChangeKind::Removed);
            }
        }
        if removed == 0 {
            return Err(ErrorCode::NotFound.into());
        }
        Ok(removed)
    }

    /// Tells a recipient's devices that its `shared/` view changed.
    fn tell_recipient(&self, recipient: u64, ctx: &Ctx, node: NodeId, kind: ChangeKind) {
        let Ok(Some(acc)) = self
            .list_users()
            .map(|u| u.into_iter().find(|a| a.id == recipient))
        else {
            return;
        };
        let Ok(shared_dir) = self.shared_dir(acc.id, acc.root) else {
            return;
        };
        let owner_name = &ctx.user;
        for (node, parent, name) in [
            (owner_dir(ctx.account), shared_dir, owner_name.clone()),
            (node, owner_dir(ctx.account), String::new()),
        ] {
            let change = shelf_protocol::Change {
                seq: 0, // drawn when recorded
                kind: kind.clone(),
                node,
                parent,
                name,
                device: ctx.device.clone(),
                path: format!("shared/{owner_name}"),
                at: self.now(),
            };
            let _ = self.record_change(recipient, change);
        }
    }

    /// The node of an account's own `shared` folder.
    pub(crate) fn shared_dir(&self, account: u64, root: NodeId) -> Result<NodeId> {
        if account >= super::public_links::PRINCIPALS {
            return Err(ErrorCode::NotFound.into()); // a public link's visitor
        }
        let key = self.dirent_key(account, root, super::accounts::SHARED)?;
        match self.dirents.get(key)? {
            Some(v) => super::sealed::dirent_child(&v),
            None => Err(ErrorCode::NotFound.into()),
        }
    }

    /// Shares with `account`: (owner, share) for every one.
    fn shares_with(&self, account: u64) -> Result<Vec<ShareRec>> {
        let mut out = Vec::new();
        for item in self.shares_in.scan_prefix(account.to_be_bytes()) {
            let (k, _) = item?;
            let node = u64::from_be_bytes(k[8..16].try_into().unwrap_or([0; 8]));
            if let Some(v) = self.shares.get(share_key(node, account))? {
                out.push(decode::<ShareRec>(&v)?);
            }
        }
        Ok(out)
    }

    fn owner_dir_attr(&self, owner: u64, at: Timestamp) -> Attr {
        Attr {
            node: owner_dir(owner),
            kind: NodeKind::Dir,
            mode: 0o555,
            size: 0,
            mtime: at,
            ctime: at,
            atime: at,
            nlink: 2,
            version: 0,
            rdev: 0,
            uid: None,
            gid: None,
            read_only: true,
        }
    }

    /// The entries of `shared/` (one folder per owner) or of `shared/OWNER/` (the shared
    /// nodes, by name; a second node of the same name gets " (2)"), or None when `dir` is
    /// neither.
    pub(crate) fn shared_listing(&self, ctx: &Ctx, dir: NodeId) -> Result<Option<Vec<DirEntry>>> {
        if ctx.link.is_some() {
            return Ok(None); // a public link's visitor has no `shared/`
        }
        let in_owner_dir = SHARED_OWNER_DIRS.contains(&dir);
        if !in_owner_dir && dir != self.shared_dir(ctx.account, ctx.root)? {
            return Ok(None);
        }
        let shares = self.shares_with(ctx.account)?;
        let mut out: Vec<DirEntry> = Vec::new();
        if !in_owner_dir {
            let mut owners: Vec<(u64, Timestamp)> = Vec::new();
            for s in &shares {
                match owners.iter_mut().find(|(o, _)| *o == s.owner) {
                    Some(o) => o.1 = o.1.max(s.created),
                    None => owners.push((s.owner, s.created)),
                }
            }
            for (owner, at) in owners {
                out.push(DirEntry {
                    name: self.account_name(owner),
                    attr: self.owner_dir_attr(owner, at),
                });
            }
        } else {
            let owner = dir - SHARED_OWNER_DIRS.start;
            for s in shares.iter().filter(|s| s.owner == owner) {
                let Ok(attr) = self.getattr(ctx, s.node) else {
                    continue; // deleted by its owner
                };
                let base = self
                    .place_of(owner, s.node)?
                    .map_or_else(|| format!("#{}", s.node), |(_, n)| n);
                let mut name = base.clone();
                let mut n = 2;
                while out.iter().any(|e| e.name == name) {
                    name = format!("{base} ({n})");
                    n += 1;
                }
                out.push(DirEntry { name, attr });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(out))
    }

    /// The attributes of a `shared/OWNER` folder, if `node` is one the session may see.
    pub(crate) fn shared_owner_attr(&self, ctx: &Ctx, node: NodeId) -> Result<Option<Attr>> {
        if !SHARED_OWNER_DIRS.contains(&node) {
            return Ok(None);
        }
        let owner = node - SHARED_OWNER_DIRS.start;
        let at = self
            .shares_with(ctx.account)?
            .iter()
            .filter(|s| s.owner == owner)
            .map(|s| s.created)
            .max();
        match at {
            Some(at) => Ok(Some(self.owner_dir_attr(owner, at))),
            None => Err(ErrorCode::NotFound.into()),
        }
    }

    /// Shares of the account and with it.
    pub fn list_shares(&self, ctx: &Ctx) -> Result<Vec<ShareInfo>> {
        let mut out = Vec::new();
        for item in self.shares.iter() {
            let (_, v) = item?;
            let s: ShareRec = decode(&v)?;
            if s.owner == ctx.account {
                out.push(ShareInfo {
                    node: s.node,
                    owner: ctx.user.clone(),
                    recipient: self.account_name(s.recipient),
                    write: s.access == Access::Write,
                    path: self.path_of(s.owner, s.node),
                });
            }
        }
        for s in self.shares_with(ctx.account)? {
            let owner = self.account_name(s.owner);
            let name = self
                .place_of(s.owner, s.node)?
                .map_or_else(|| format!("#{}", s.node), |(_, n)| n);
            out.push(ShareInfo {
                node: s.node,
                path: format!("shared/{owner}/{name}"),
                owner,
                recipient: ctx.user.clone(),
                write: s.access == Access::Write,
            });
        }
        Ok(out)
    }

    /// A file saved by renaming a new one over it keeps its shares.
    pub(crate) fn move_shares(&self, from: NodeId, to: NodeId) -> Result<()> {
        for item in self.shares.scan_prefix(from.to_be_bytes()) {
            let (k, v) = item?;
            let mut s: ShareRec = decode(&v)?;
            s.node = to;
            self.shares
                .insert(share_key(to, s.recipient), postcard::to_stdvec(&s)?)?;
            self.shares.remove(k)?;
            self.shares_in.remove(in_key(s.recipient, from))?;
            self.shares_in
                .insert(in_key(s.recipient, to), &s.owner.to_be_bytes())?;
            self.index_share(from, s.recipient, None);
            self.index_share(to, s.recipient, Some(s.access));
        }
        Ok(())
    }

    /// Sets (or with `None` removes) a grant in the in-memory index, and tells the other
    /// servers of the store to read theirs again.
    pub(crate) fn index_share(&self, node: NodeId, recipient: u64, access: Option<Access>) {
        set_grant(
            &mut self.share_index.write_or_recover(),
            node,
            recipient,
            access,
        );
        self.tell_servers(super::cluster::CacheChange::Grants);
    }

    /// Reads the index of grants again from the `shares` and `public_links` trees (at open,
    /// and when another server changed them).
    pub(crate) fn reload_grants(&self) -> Result<()> {
        let mut index = HashMap::new();
        for item in self.shares.iter() {
            let s: ShareRec = decode(&item?.1)?;
            set_grant(&mut index, s.node, s.recipient, Some(s.access));
        }
        for (node, principal, access) in self.link_grants()? {
            set_grant(&mut index, node, principal, Some(access));
        }
        *self.share_index.write_or_recover() = index;
        Ok(())
    }
}

/// Sets (or with `None` removes) `recipient`'s grant on `node` in `index`.
fn set_grant(
    index: &mut HashMap<NodeId, Vec<(u64, Access)>>,
    node: NodeId,
    recipient: u64,
    access: Option<Access>,
) {
    let grants = index.entry(node).or_default();
    grants.retain(|(r, _)| *r != recipient);
    if let Some(a) = access {
        grants.push((recipient, a));
    }
    if grants.is_empty() {
        index.remove(&node);
    }
}

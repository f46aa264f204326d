//! The category a node lies in, as the flat name of the original plan
//! (`photo.01work.02WebProject`), read through the extended attribute
//! [`CATEGORY_XATTR`]. It is derived from where the node is, never stored: moving a file to
//! another folder changes it.

use super::{node_key, NodeRec, Result, Store};
use shelf_protocol::category::flat_name;
pub use shelf_protocol::category::CATEGORY_XATTR;
use shelf_protocol::{NodeId, NodeKind};

/// Folders deeper than this are not walked for a category name.
const MAX_DEPTH: usize = 4096;

impl Store {
    /// The flat category name of `id` (already authorised as `rec`): its folder's for a
    /// file, its own for a folder; `None` outside the category folders.
    pub(crate) fn category_of(&self, id: NodeId, rec: &NodeRec) -> Result<Option<String>> {
        let mut folders = Vec::new();
        let mut at = id;
        if rec.kind != NodeKind::Dir {
            match self.place_of(rec.owner, id)? {
                Some((parent, _)) => at = parent,
                None => return Ok(None),
            }
        }
        while let Some((parent, name)) = self.place_of(rec.owner, at)? {
            folders.push(name);
            if folders.len() > MAX_DEPTH || self.nodes.get(node_key(parent))?.is_none() {
                return Ok(None);
            }
            at = parent;
        }
        folders.reverse();
        Ok(flat_name(&folders))
    }
}

//! How records are sealed in the database ([`crate::crypto`] does the cryptography).
//!
//! | tree      | key                          | value |
//! |-----------|------------------------------|-------|
//! | `nodes`   | node id                      | owner (BE, plain: whose key) ‖ sealed [`NodeRec`] |
//! | `dirents` | parent ‖ name token (16)     | child id (BE) ‖ sealed name |
//! | `graves`  | parent ‖ name token (16)     | sealed [`super::history::GraveRec`] (which holds the name) |
//! | `names`   | node id                      | parent (BE) ‖ sealed name |
//! | `feed`    | account ‖ seq                | sealed [`shelf_protocol::Change`] |
//!
//! Names and directory entries are sealed with the key of the account that owns the
//! directory; the associated data names the tree and the place, so a sealed value moved to
//! another key, account or place does not open.

use super::{decode, node_key, NodeRec, Store};
use crate::crypto::{aad, DataKey};
use crate::error::{Result, StoreError};
use shelf_protocol::NodeId;
use std::sync::Arc;

/// Length of a name token in a key.
pub const TOKEN_LEN: usize = 16;

/// The node id at the start of a `dirents` value.
pub(crate) fn dirent_child(value: &[u8]) -> Result<NodeId> {
    value
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("directory entry".into()))
}

/// The owning account at the start of a `nodes` value.
pub(crate) fn node_owner(value: &[u8]) -> Result<u64> {
    dirent_child(value).map_err(|_| StoreError::Corrupt("node record".into()))
}

impl Store {
    /// The data key of an account.
    pub(crate) fn key_of(&self, account: u64) -> Result<Arc<DataKey>> {
        Ok(self.keys.data_key(account)?)
    }

    /// Seals any record of `account` filed at `place` of tree `kind`.
    pub(crate) fn seal_rec<T: serde::Serialize>(
        &self,
        account: u64,
        kind: &[u8],
        place: &[u8],
        rec: &T,
    ) -> Result<Vec<u8>> {
        let plain = postcard::to_stdvec(rec)?;
        Ok(self
            .key_of(account)?
            .seal(&aad(kind, account, place), &plain)?)
    }

    /// Opens what [`Store::seal_rec`] sealed.
    pub(crate) fn open_rec<T: for<'de> serde::Deserialize<'de>>(
        &self,
        account: u64,
        kind: &[u8],
        place: &[u8],
        sealed: &[u8],
    ) -> Result<T> {
        let plain = self
            .key_of(account)?
            .open(&aad(kind, account, place), sealed)?;
        decode(&plain)
    }

    pub(crate) fn seal_node(&self, id: NodeId, rec: &NodeRec) -> Result<Vec<u8>> {
        let mut out = rec.owner.to_be_bytes().to_vec();
        out.extend(self.seal_rec(rec.owner, b"node", &node_key(id), rec)?);
        Ok(out)
    }

    pub(crate) fn open_node(&self, id: NodeId, value: &[u8]) -> Result<NodeRec> {
        let owner = node_owner(value)?;
        let rec: NodeRec = self.open_rec(owner, b"node", &node_key(id), &value[8..])?;
        if rec.owner != owner {
            return Err(StoreError::Corrupt(format!("node {id} names two owners")));
        }
        Ok(rec)
    }

    /// The `dirents`/`graves` key of `name` in directory `parent` of account `owner`.
    pub(crate) fn dirent_key(&self, owner: u64, parent: NodeId, name: &str) -> Result<Vec<u8>> {
        let mut k = Vec::with_capacity(8 + TOKEN_LEN);
        k.extend_from_slice(&parent.to_be_bytes());
        k.extend_from_slice(&self.key_of(owner)?.name_token(name));
        Ok(k)
    }

    /// The `dirents` value under `key`: the child and the sealed name.
    pub(crate) fn dirent_value(
        &self,
        owner: u64,
        key: &[u8],
        child: NodeId,
        name: &str,
    ) -> Result<Vec<u8>> {
        let mut v = child.to_be_bytes().to_vec();
        v.extend(
            self.key_of(owner)?
                .seal(&aad(b"dirent", owner, key), name.as_bytes())?,
        );
        Ok(v)
    }

    /// The name in a `dirents` value.
    pub(crate) fn dirent_name(&self, owner: u64, key: &[u8], value: &[u8]) -> Result<String> {
        let sealed = value
            .get(8..)
            .ok_or_else(|| StoreError::Corrupt("directory entry".into()))?;
        let plain = self
            .key_of(owner)?
            .open(&aad(b"dirent", owner, key), sealed)?;
        String::from_utf8(plain).map_err(|_| StoreError::Corrupt("directory entry name".into()))
    }

    /// The `names` value of `node`: its parent and its sealed name.
    pub(crate) fn name_value(
        &self,
        owner: u64,
        node: NodeId,
        parent: NodeId,
        name: &str,
    ) -> Result<Vec<u8>> {
        let mut v = parent.to_be_bytes().to_vec();
        v.extend(
            self.key_of(owner)?
                .seal(&aad(b"name", owner, &node_key(node)), name.as_bytes())?,
        );
        Ok(v)
    }

    /// Where `node` of account `owner` is (or last was): its parent and name.
    pub(crate) fn place_of(&self, owner: u64, node: NodeId) -> Result<Option<(NodeId, String)>> {
        Ok(self
            .place(owner, node)?
            .map(|(parent, name)| (parent, name.to_string())))
    }

    /// [`Store::place_of`], from the cache of places when it has it.
    pub(crate) fn place(&self, owner: u64, node: NodeId) -> Result<Option<(NodeId, Arc<str>)>> {
        if let Some(place) = self.places.get(node) {
            return Ok(Some(place));
        }
        let generation = self.places.generation();
        let Some(v) = self.names.get(node_key(node))? else {
            return Ok(None);
        };
        let parent = dirent_child(&v)?;
        let plain = self
            .key_of(owner)?
            .open(&aad(b"name", owner, &node_key(node)), &v[8..])?;
        let name: Arc<str> = String::from_utf8(plain)
            .map_err(|_| StoreError::Corrupt("names entry".into()))?
            .into();
        self.places.put(generation, node, parent, name.clone());
        Ok(Some((parent, name)))
    }
}

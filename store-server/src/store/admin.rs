//! Managing accounts: passwords, roles, quotas, deletion — for `shelf-server user …` on the
//! server and for admins over the protocol (`shelf admin …`). Every change is audited.
//!
//! Deleting an account removes its records and chunk index entries (compaction reclaims
//! the pack space) and, last, its data key: whatever is left of its data on disk can no
//! longer be opened by anyone.

use super::audit::AuditKind;
use super::sealed::node_owner;
use super::{AccountRec, SessionRec, Store};
use crate::error::{Result, StoreError};
use shelf_protocol::{ErrorCode, Role};

impl Store {
    fn existing(&self, name: &str) -> Result<AccountRec> {
        self.account(name)?
            .ok_or_else(|| ErrorCode::NotFound.into())
    }

    fn put_account(&self, rec: &AccountRec) -> Result<()> {
        self.accounts
            .insert(rec.name.as_bytes(), postcard::to_stdvec(rec)?)?;
        Ok(())
    }

    /// Ends every session of `name` (all devices must log in again).
    fn end_sessions(&self, name: &str) -> Result<usize> {
        let mut doomed = Vec::new();
        for item in self.sessions.iter() {
            let (k, v) = item?;
            if super::decode::<SessionRec>(&v).is_ok_and(|s| s.user == name) {
                doomed.push(k);
            }
        }
        for k in &doomed {
            self.sessions.remove(k)?;
        }
        self.sessions_changed();
        Ok(doomed.len())
    }

    /// Sets a new password; every device of the account must log in again.
    pub fn set_password(&self, name: &str, password: &str, by: &str) -> Result<()> {
        if password.is_empty() {
            return Err(ErrorCode::InvalidArgument.into());
        }
        let mut rec = self.existing(name)?;
        rec.pw_hash = super::accounts::hash_password(password)?;
        self.put_account(&rec)?;
        self.end_sessions(name)?;
        self.logins.remove(name)?;
        self.db.flush()?;
        self.audit(rec.id, AuditKind::PasswordChanged, name, by, "");
        Ok(())
    }

    /// Changes a role. The last admin cannot stop being one.
    pub fn set_role(&self, name: &str, role: Role, by: &str) -> Result<()> {
        let mut rec = self.existing(name)?;
        if rec.role == Role::Admin && role != Role::Admin && self.admins()? <= 1 {
            return Err(StoreError::Refused(ErrorCode::InvalidArgument));
        }
        let old = rec.role;
        rec.role = role;
        self.put_account(&rec)?;
        self.sessions_changed();
        self.db.flush()?;
        self.audit(
            rec.id,
            AuditKind::RoleChanged,
            name,
            by,
            &format!("{old} -> {role}"),
        );
        Ok(())
    }

    fn admins(&self) -> Result<usize> {
        Ok(self
            .list_users()?
            .iter()
            .filter(|a| a.role == Role::Admin)
            .count())
    }

    /// Deletes an account and everything it stored. The last admin cannot be deleted.
    pub fn delete_user(&self, name: &str, by: &str) -> Result<()> {
        let rec = self.existing(name)?;
        if rec.role == Role::Admin && self.admins()? <= 1 {
            return Err(StoreError::Refused(ErrorCode::InvalidArgument));
        }
        let id = rec.id;
        // No more logins or requests first.
        self.accounts.remove(name.as_bytes())?;
        self.sessions_changed();
        self.end_sessions(name)?;
        self.logins.remove(name)?;
        let mut owned = Vec::new();
        for item in self.nodes.iter() {
            let (k, v) = item?;
            if node_owner(&v)? == id {
                owned.push(k);
            }
        }
        for k in &owned {
            for tree in [&self.dirents, &self.graves, &self.versions] {
                for item in tree.scan_prefix(k) {
                    tree.remove(item?.0)?;
                }
            }
            self.lineage.remove(k)?;
            self.names.remove(k)?;
            self.thumbs.remove(k)?;
            self.nodes.remove(k)?;
        }
        for (chunk, _) in self.chunks.ids(id)? {
            self.chunks.remove(id, &chunk)?;
        }
        for tree in [&self.feed, &self.prefs] {
            for item in tree.scan_prefix(id.to_be_bytes()) {
                tree.remove(item?.0)?;
            }
        }
        self.retention.remove(id.to_be_bytes())?;
        self.drop_links_of(id)?;
        self.drop_app_passwords_of(id)?;
        self.keys.forget(id)?;
        self.places.clear();
        self.sync()?;
        self.audit(0, AuditKind::UserDeleted, name, by, "");
        Ok(())
    }
}

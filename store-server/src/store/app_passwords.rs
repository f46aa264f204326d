//! App passwords: secrets for programs that sign in with a user name and password on every
//! request (WebDAV clients: Finder, Explorer, davfs2, rclone, phones), so the account's own
//! password is never stored in one. Each is named by its owner, shown once when made, and
//! revocable on its own.
//!
//! | tree                 | key                  | value |
//! |----------------------|----------------------|-------|
//! | `app_passwords`      | BLAKE3(secret)       | [`AppPasswordRec`] |
//! | `app_password_names` | account ‖ name       | BLAKE3(secret) |
//!
//! A secret is 140 random bits (28 characters from an unambiguous alphabet of 32, shown in
//! groups of 4),
//! so a fast hash stands in for argon2id (which would cost every WebDAV request 19 MiB and
//! tens of milliseconds) as it does for session tokens: nobody can guess one, only steal
//! the database. A wrong app password counts as a failed login of the account and the
//! address ([`super::guard`]), like a wrong password.

use super::accounts::validate_account_name;
use super::{decode, Ctx, Store, FORMAT};
use crate::error::{Result, StoreError};
use serde::{Deserialize, Serialize};
use shelf_protocol::{AppPasswordInfo, ErrorCode, Timestamp};
use std::net::IpAddr;

/// Characters of a secret (no 0/O, 1/l/I).
const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
/// Characters in a secret (5 bits each: 140 bits).
const SECRET_CHARS: usize = 28;
/// Most app passwords one account keeps.
pub const MAX_APP_PASSWORDS: usize = 100;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct AppPasswordRec {
    pub format: u8,
    pub account: u64,
    pub user: String,
    pub name: String,
    pub created: Timestamp,
}

fn secret_key(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.trim().as_bytes()).as_bytes()
}

fn name_key(account: u64, name: &str) -> Vec<u8> {
    let mut k = account.to_be_bytes().to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// A new secret: 28 characters of 5 bits (140 bits), shown as `abcd-efgh-…`.
fn new_secret() -> Result<String> {
    let mut raw = [0u8; SECRET_CHARS];
    getrandom::getrandom(&mut raw).map_err(|e| StoreError::Hash(e.to_string()))?;
    let chars: Vec<char> = raw
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    Ok(chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-"))
}

impl Store {
    /// Makes the app password `name` for `ctx`'s account; answers its secret (shown once).
    pub fn add_app_password(&self, ctx: &Ctx, name: &str) -> Result<String> {
        validate_account_name(name).map_err(StoreError::from)?;
        if ctx.link.is_some() {
            return Err(ErrorCode::PermissionDenied.into());
        }
        let key = name_key(ctx.account, name);
        if self.app_password_names.contains_key(&key)? {
            return Err(ErrorCode::Exists.into());
        }
        if self
            .app_password_names
            .scan_prefix(ctx.account.to_be_bytes())
            .count()
            >= MAX_APP_PASSWORDS
        {
            return Err(ErrorCode::InvalidArgument.into());
        }
        let secret = new_secret()?;
        let rec = AppPasswordRec {
            format: FORMAT,
            account: ctx.account,
            user: ctx.user.clone(),
            name: name.to_string(),
            created: self.now(),
        };
        self.app_passwords
            .insert(secret_key(&secret), postcard::to_stdvec(&rec)?)?;
        self.app_password_names
            .insert(key, &secret_key(&secret)[..])?;
        self.audit(
            ctx.account,
            super::audit::AuditKind::AppPasswordAdded,
            &ctx.user,
            &ctx.device,
            name,
        );
        Ok(secret)
    }

    /// The account's app passwords (never their secrets).
    pub fn list_app_passwords(&self, ctx: &Ctx) -> Result<Vec<AppPasswordInfo>> {
        let mut out = Vec::new();
        for item in self
            .app_password_names
            .scan_prefix(ctx.account.to_be_bytes())
        {
            let (_, hash) = item?;
            if let Some(v) = self.app_passwords.get(&hash)? {
                let rec: AppPasswordRec = decode(&v)?;
                out.push(AppPasswordInfo {
                    name: rec.name,
                    created: rec.created,
                });
            }
        }
        Ok(out)
    }

    /// Ends the app password `name`: programs using it are refused from their next request.
    pub fn revoke_app_password(&self, ctx: &Ctx, name: &str) -> Result<()> {
        let key = name_key(ctx.account, name);
        let Some(hash) = self.app_password_names.remove(&key)? else {
            return Err(ErrorCode::NotFound.into());
        };
        self.app_passwords.remove(&hash)?;
        self.audit(
            ctx.account,
            super::audit::AuditKind::AppPasswordRevoked,
            &ctx.user,
            &ctx.device,
            name,
        );
        Ok(())
    }

    /// Signs a program in with `user` and an app password, from `addr`: the account's
    /// context, as the device `app NAME`. Locked accounts and blocked addresses are refused
    /// first; a wrong secret counts as a failed login.
    pub fn app_login(&self, user: &str, secret: &str, addr: Option<IpAddr>) -> Result<Ctx> {
        self.check_login_allowed(user, addr)?;
        let found = match self.app_passwords.get(secret_key(secret))? {
            Some(v) => Some(decode::<AppPasswordRec>(&v)?),
            None => None,
        };
        let account = self.account(user)?;
        let rec = match (found, &account) {
            (Some(rec), Some(acc)) if rec.account == acc.id => rec,
            _ => {
                self.login_failed(user, account.map(|a| a.id), addr);
                return Err(ErrorCode::AuthFailed.into());
            }
        };
        let Some(account) = account else {
            return Err(ErrorCode::AuthFailed.into());
        };
        Ok(super::accounts::ctx_of(
            &account,
            &format!("app-{}", rec.name),
        ))
    }

    /// The context of an app password already checked by [`Store::app_login`] in this
    /// request, for each store call it makes: still there, its account still there.
    pub fn resume_app_password(&self, secret: &str) -> Result<Ctx> {
        let Some(v) = self.app_passwords.get(secret_key(secret))? else {
            return Err(ErrorCode::SessionExpired.into());
        };
        let rec: AppPasswordRec = decode(&v)?;
        match self.account(&rec.user)? {
            Some(acc) if acc.id == rec.account => {
                Ok(super::accounts::ctx_of(&acc, &format!("app-{}", rec.name)))
            }
            _ => Err(ErrorCode::SessionExpired.into()),
        }
    }

    /// Drops every app password of a deleted account.
    pub(crate) fn drop_app_passwords_of(&self, account: u64) -> Result<()> {
        for item in self.app_password_names.scan_prefix(account.to_be_bytes()) {
            let (k, hash) = item?;
            self.app_passwords.remove(&hash)?;
            self.app_password_names.remove(k)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkstore::PackStore;
    use shelf_protocol::Role;
    use std::sync::Arc;

    fn store() -> (Store, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::temporary().unwrap();
        let chunks = Arc::new(PackStore::open(tmp.path().join("packs"), &db).unwrap());
        (Store::with_chunk_store(db, chunks).unwrap(), tmp)
    }

    #[test]
    fn an_app_password_signs_in_until_revoked_and_only_for_its_account() {
        let (store, _tmp) = store();
        store.add_user("ann", "pw", Role::User).unwrap();
        store.add_user("bob", "pw", Role::User).unwrap();
        store.add_user("boss", "pw", Role::Admin).unwrap();
        let (_, ann) = store.login("ann", "pw", "laptop").unwrap();
        let secret = store.add_app_password(&ann, "phone").unwrap();
        assert_eq!(secret.len(), 34, "{secret}");
        assert!(secret.bytes().all(|b| b == b'-' || ALPHABET.contains(&b)));
        assert_eq!(
            store
                .add_app_password(&ann, "phone")
                .err()
                .map(|e| e.code()),
            Some(ErrorCode::Exists)
        );
        // Not stored in the clear.
        for tree in [&store.app_passwords, &store.app_password_names] {
            for item in tree.iter() {
                let (k, v) = item.unwrap();
                assert!(!k
                    .windows(8)
                    .any(|w| secret.as_bytes().windows(8).any(|s| s == w)));
                assert!(!v
                    .windows(8)
                    .any(|w| secret.as_bytes().windows(8).any(|s| s == w)));
            }
        }
        let ctx = store.app_login("ann", &secret, None).unwrap();
        assert_eq!(
            (ctx.account, ctx.device.as_str()),
            (ann.account, "app-phone")
        );
        // Another user's name with ann's secret, or the account password: refused.
        assert_eq!(
            store
                .app_login("bob", &secret, None)
                .err()
                .map(|e| e.code()),
            Some(ErrorCode::AuthFailed)
        );
        assert_eq!(
            store.app_login("ann", "pw", None).err().map(|e| e.code()),
            Some(ErrorCode::AuthFailed)
        );
        let listed = store.list_app_passwords(&ann).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "phone");
        store.revoke_app_password(&ann, "phone").unwrap();
        assert_eq!(
            store
                .app_login("ann", &secret, None)
                .err()
                .map(|e| e.code()),
            Some(ErrorCode::AuthFailed)
        );
        // Gone with the account.
        let again = store.add_app_password(&ann, "tablet").unwrap();
        store.delete_user("ann", "boss").unwrap();
        assert!(store.app_login("ann", &again, None).is_err());
        assert!(store.app_passwords.is_empty() && store.app_password_names.is_empty());
    }

    #[test]
    fn wrong_app_passwords_lock_the_account_like_wrong_passwords() {
        let (store, _tmp) = store();
        store.add_user("ann", "pw", Role::User).unwrap();
        let (_, ann) = store.login("ann", "pw", "laptop").unwrap();
        let secret = store.add_app_password(&ann, "dav").unwrap();
        for _ in 0..super::super::guard::MAX_FAILURES {
            assert!(store.app_login("ann", "guess-guess", None).is_err());
        }
        assert_eq!(
            store
                .app_login("ann", &secret, None)
                .err()
                .map(|e| e.code()),
            Some(ErrorCode::Locked)
        );
    }
}

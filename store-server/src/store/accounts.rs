//! Accounts and sessions: argon2id password hashes (OWASP parameters: 19 MiB, 2 passes),
//! random 256-bit session tokens of which only the BLAKE3 hash is stored, and the initial
//! tree every new account gets (nine category folders and `shared/`).

use super::{check_format, decode, AccountRec, Ctx, NodeRec, SessionRec, Store, FORMAT};
use crate::error::{Result, StoreError};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use shelf_protocol::{ErrorCode, NodeKind, Role, Timestamp};
use std::collections::BTreeMap;

/// The category folders of every account: `photos|files|videos` × `personal|work|projects`.
pub const CATEGORIES: [&str; 3] = ["photos", "files", "videos"];
pub const SUBCATEGORIES: [&str; 3] = ["personal", "work", "projects"];
pub const SHARED: &str = "shared";

/// How long a session token is valid.
pub const SESSION_LIFETIME_SECS: i64 = 90 * 24 * 3600;

fn argon2() -> Argon2<'static> {
    // OWASP password storage cheat sheet: argon2id, m=19 MiB, t=2, p=1.
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| StoreError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| StoreError::Hash(e.to_string()))?;
    Ok(argon2()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| StoreError::Hash(e.to_string()))?
        .to_string())
}

pub(crate) fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => argon2().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// Validates an account or device name: 1–64 characters of `[A-Za-z0-9._-]`.
pub fn validate_account_name(name: &str) -> Result<(), ErrorCode> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::InvalidName)
    }
}

fn token_key(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

fn dir_rec(owner: u64, parent: u64, now: Timestamp) -> NodeRec {
    NodeRec {
        format: FORMAT,
        owner,
        parent,
        kind: NodeKind::Dir,
        mode: 0o755,
        size: 0,
        mtime: now,
        ctime: now,
        atime: now,
        nlink: 2,
        version: 0,
        entries: 0,
        target: None,
        rdev: 0,
        uid: None,
        gid: None,
        xattrs: BTreeMap::new(),
        deleted: None,
    }
}

impl Store {
    /// Creates an account with its root, the nine category folders and `shared/`.
    pub fn add_user(&self, name: &str, password: &str, role: Role) -> Result<AccountRec> {
        validate_account_name(name)?;
        if password.is_empty() {
            return Err(ErrorCode::InvalidArgument.into());
        }
        if self.accounts.contains_key(name)? {
            return Err(ErrorCode::Exists.into());
        }
        let pw_hash = hash_password(password)?;
        let now = Timestamp::now();
        let account_id = self.db.generate_id()? + 1;
        let root = self.new_node_id()?;
        // Build the initial tree in memory, then write it in one transaction.
        let mut nodes: Vec<(u64, NodeRec)> = Vec::new();
        // (parent, name, child)
        let mut dirents: Vec<(u64, &str, u64)> = Vec::new();
        let mut root_rec = dir_rec(account_id, root, now);
        for cat in CATEGORIES {
            let cat_id = self.new_node_id()?;
            let mut cat_rec = dir_rec(account_id, root, now);
            for sub in SUBCATEGORIES {
                let sub_id = self.new_node_id()?;
                nodes.push((sub_id, dir_rec(account_id, cat_id, now)));
                dirents.push((cat_id, sub, sub_id));
                cat_rec.entries += 1;
                cat_rec.nlink += 1;
            }
            nodes.push((cat_id, cat_rec));
            dirents.push((root, cat, cat_id));
            root_rec.entries += 1;
            root_rec.nlink += 1;
        }
        let shared_id = self.new_node_id()?;
        nodes.push((shared_id, dir_rec(account_id, root, now)));
        dirents.push((root, SHARED, shared_id));
        root_rec.entries += 1;
        root_rec.nlink += 1;
        nodes.push((root, root_rec));

        let account = AccountRec {
            format: FORMAT,
            id: account_id,
            name: name.to_string(),
            role,
            pw_hash,
            root,
            created: now,
        };
        let account_bytes = postcard::to_stdvec(&account)?;
        let mut encoded_nodes = Vec::new();
        for (id, rec) in &nodes {
            encoded_nodes.push((*id, self.seal_node(*id, rec)?));
        }
        let mut encoded_dirents = Vec::new();
        for (parent, name, child) in &dirents {
            let key = self.dirent_key(account_id, *parent, name)?;
            let value = self.dirent_value(account_id, &key, *child, name)?;
            let place = self.name_value(account_id, *child, *parent, name)?;
            encoded_dirents.push((key, value, *child, place));
        }
        let trees = [&self.accounts, &self.nodes, &self.dirents, &self.names];
        self.db
            .transaction(trees, |[accounts, tnodes, tdirents, tnames]| {
                if accounts.get(name)?.is_some() {
                    return crate::kv::abort(StoreError::from(ErrorCode::Exists));
                }
                accounts.insert(name, account_bytes.clone())?;
                for (id, bytes) in &encoded_nodes {
                    tnodes.insert(super::node_key(*id), bytes.clone())?;
                }
                for (key, value, child, place) in &encoded_dirents {
                    tdirents.insert(key.clone(), value.clone())?;
                    tnames.insert(super::node_key(*child), place.clone())?;
                }
                Ok(())
            })
            .map_err(super::namespace::tx_error)?;
        self.db.flush()?;
        Ok(account)
    }

    pub fn account(&self, name: &str) -> Result<Option<AccountRec>> {
        match self.accounts.get(name)? {
            None => Ok(None),
            Some(bytes) => {
                let rec: AccountRec = decode(&bytes)?;
                check_format(rec.format, "account")?;
                Ok(Some(rec))
            }
        }
    }

    pub fn list_users(&self) -> Result<Vec<AccountRec>> {
        let mut out = Vec::new();
        for item in self.accounts.iter() {
            let (_, v) = item?;
            out.push(decode::<AccountRec>(&v)?);
        }
        Ok(out)
    }

    /// Checks a password and opens a session for `device`. Returns the token and the context.
    pub fn login(&self, user: &str, password: &str, device: &str) -> Result<(String, Ctx)> {
        self.login_from(user, password, device, None)
    }

    /// [`Store::login`] from a network address: locked accounts and blocked addresses are
    /// refused, failures counted ([`super::guard`]).
    pub fn login_from(
        &self,
        user: &str,
        password: &str,
        device: &str,
        addr: Option<std::net::IpAddr>,
    ) -> Result<(String, Ctx)> {
        validate_account_name(device).map_err(|_| StoreError::from(ErrorCode::InvalidArgument))?;
        self.check_login_allowed(user, addr)?;
        let account = self.account(user).ok().flatten();
        let ok = match &account {
            Some(acc) => verify_password(password, &acc.pw_hash),
            None => {
                // Spend the same time as a real check, so timing does not reveal which
                // user names exist.
                let _ = hash_password(password);
                false
            }
        };
        let Some(account) = account.filter(|_| ok) else {
            self.login_failed(user, self.account(user).ok().flatten().map(|a| a.id), addr);
            return Err(ErrorCode::AuthFailed.into());
        };
        self.login_succeeded(&account.name, account.id, device);
        let mut raw = [0u8; 32];
        getrandom::getrandom(&mut raw).map_err(|e| StoreError::Hash(e.to_string()))?;
        let token = hex::encode(raw);
        let now = Timestamp::now();
        let rec = SessionRec {
            format: FORMAT,
            user: account.name.clone(),
            device: device.to_string(),
            created: now,
            expires: Timestamp {
                secs: now.secs + SESSION_LIFETIME_SECS,
                nanos: 0,
            },
        };
        self.sessions
            .insert(token_key(&token), postcard::to_stdvec(&rec)?)?;
        self.db.flush()?;
        Ok((token, ctx_of(&account, device)))
    }

    /// The context of a still-valid session token.
    pub fn resume(&self, token: &str) -> Result<Ctx> {
        let Some(bytes) = self.sessions.get(token_key(token))? else {
            return Err(ErrorCode::SessionExpired.into());
        };
        let rec: SessionRec = decode(&bytes)?;
        check_format(rec.format, "session")?;
        if rec.expires < Timestamp::now() {
            self.sessions.remove(token_key(token))?;
            return Err(ErrorCode::SessionExpired.into());
        }
        let Some(account) = self.account(&rec.user)? else {
            return Err(ErrorCode::SessionExpired.into());
        };
        Ok(ctx_of(&account, &rec.device))
    }

    /// Whether `token` still opens a session (not revoked, not expired).
    pub fn session_valid(&self, token: &str) -> bool {
        self.resume(token).is_ok()
    }

    /// The devices signed in to `ctx`'s account.
    pub fn devices(&self, ctx: &Ctx) -> Result<Vec<shelf_protocol::DeviceInfo>> {
        let mut by_device: BTreeMap<String, shelf_protocol::DeviceInfo> = BTreeMap::new();
        let now = Timestamp::now();
        for item in self.sessions.iter() {
            let (_, v) = item?;
            let rec: SessionRec = decode(&v)?;
            if rec.user != ctx.user || rec.expires < now {
                continue;
            }
            let e = by_device
                .entry(rec.device.clone())
                .or_insert(shelf_protocol::DeviceInfo {
                    device: rec.device.clone(),
                    created: rec.created,
                    expires: rec.expires,
                    sessions: 0,
                    current: rec.device == ctx.device,
                });
            e.sessions += 1;
            if rec.created > e.created {
                e.created = rec.created;
                e.expires = rec.expires;
            }
        }
        Ok(by_device.into_values().collect())
    }

    /// Ends every session of `device` of `ctx`'s account. Returns how many.
    pub fn revoke_device(&self, ctx: &Ctx, device: &str) -> Result<usize> {
        let mut doomed = Vec::new();
        for item in self.sessions.iter() {
            let (k, v) = item?;
            let rec: SessionRec = decode(&v)?;
            if rec.user == ctx.user && rec.device == device {
                doomed.push(k);
            }
        }
        if doomed.is_empty() {
            return Err(ErrorCode::NotFound.into());
        }
        for k in &doomed {
            self.sessions.remove(k)?;
        }
        self.sessions_changed();
        self.db.flush()?;
        self.audit(
            ctx.account,
            super::audit::AuditKind::DeviceRevoked,
            &ctx.user,
            &ctx.device,
            device,
        );
        Ok(doomed.len())
    }

    pub fn logout(&self, token: &str) -> Result<()> {
        self.sessions.remove(token_key(token))?;
        self.sessions_changed();
        Ok(())
    }
}

pub(crate) fn ctx_of(account: &AccountRec, device: &str) -> Ctx {
    Ctx {
        account: account.id,
        user: account.name.clone(),
        role: account.role,
        device: device.to_string(),
        root: account.root,
        link: None,
    }
}

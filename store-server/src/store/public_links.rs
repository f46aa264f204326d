//! Public links: an owner hands out a URL that opens one file or folder of theirs to anyone
//! holding it, without an account — to download, or (for a folder) only to add files.
//!
//! | tree                 | key                 | value |
//! |----------------------|---------------------|-------|
//! | `public_links`       | owner ‖ id          | [`LinkRec`] sealed with the owner's key |
//! | `public_link_tokens` | BLAKE3(token)       | owner ‖ id |
//!
//! A link acts as a share with a principal of its own ([`principal`], an account number no
//! account has): opening it gives a [`Ctx`] for that principal, and the grant in the share
//! index (read for downloads, read-write for uploads) makes the one authorisation function
//! decide every node it touches, exactly as for a user a folder is shared with. Such a
//! context is made only here and used only by the web door, which offers an upload link no
//! route that reads. Tokens are 192 random bits; unknown tokens and wrong passwords count
//! against the caller's address like failed logins ([`super::guard`]), so guessing is
//! throttled; each opening, good or bad, is audited in the owner's log (by link and node
//! number: admins read the log, and they do not see users' file names). Revoking and
//! expiry take effect on the very next request: every request opens the link again.

use super::accounts::{hash_password, verify_password};
use super::audit::AuditKind;
use super::sealed::node_owner;
use super::{node_key, Ctx, Store, FORMAT};
use crate::authz::Access;
use crate::error::{Result, StoreError};
use serde::{Deserialize, Serialize};
use shelf_protocol::{ErrorCode, LinkAccess, LinkInfo, NodeId, NodeKind, Role, Timestamp};
use std::net::IpAddr;

/// Link principals are numbered from here (accounts never are).
pub const PRINCIPALS: u64 = 1 << 62;
/// Random bytes in a link's token.
const TOKEN_BYTES: usize = 24;
/// Most links one account keeps.
pub const MAX_LINKS: usize = 10_000;
/// Longest password a link may have.
const MAX_PASSWORD: usize = 1024;

/// The principal a link's visitors act as.
pub fn principal(id: u64) -> u64 {
    PRINCIPALS + id
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct LinkRec {
    pub format: u8,
    pub id: u64,
    pub owner: u64,
    pub node: NodeId,
    pub access: LinkAccess,
    /// argon2id PHC string.
    pub password: Option<String>,
    pub expires: Option<Timestamp>,
    pub created: Timestamp,
    pub token: String,
}

/// How a visitor opening a link proves what the link asks.
pub enum Key<'a> {
    /// Nothing given (enough for a link without a password).
    None,
    /// The password typed in.
    Password(&'a str),
    /// The door already checked the password for this browser.
    Unlocked,
}

/// An opened link: the visitor's context and what the link is.
pub struct Opened {
    pub ctx: Ctx,
    pub info: LinkInfo,
}

fn link_key(owner: u64, id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&owner.to_be_bytes());
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}

fn token_key(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

fn grant_of(access: LinkAccess) -> Access {
    match access {
        LinkAccess::Download => Access::Read,
        LinkAccess::Upload => Access::Write,
    }
}

/// Whether a token is shaped like one this server makes (checked before any lookup).
fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_BYTES * 2 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Store {
    /// The owner makes a public link to `node`.
    pub fn create_link(
        &self,
        ctx: &Ctx,
        node: NodeId,
        access: LinkAccess,
        password: Option<&str>,
        expires: Option<Timestamp>,
    ) -> Result<LinkInfo> {
        let Some(v) = self.nodes.get(node_key(node))? else {
            return Err(ErrorCode::NotFound.into());
        };
        let rec = self.open_node(node, &v)?;
        let target = self.target(ctx, node, &rec);
        // Only the owner hands out links, as only the owner shares: a recipient cannot
        // pass access on (whatever it was given).
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
        match (access, rec.kind) {
            (LinkAccess::Upload, NodeKind::Dir) | (LinkAccess::Download, _) => {}
            (LinkAccess::Upload, _) => return Err(ErrorCode::NotDir.into()),
        }
        if expires.is_some_and(|e| e <= self.now()) {
            return Err(ErrorCode::InvalidArgument.into());
        }
        let password = match password {
            None | Some("") => None,
            Some(p) if p.len() > MAX_PASSWORD => return Err(ErrorCode::InvalidArgument.into()),
            Some(p) => Some(hash_password(p)?),
        };
        if self
            .public_links
            .scan_prefix(ctx.account.to_be_bytes())
            .count()
            >= MAX_LINKS
        {
            return Err(ErrorCode::InvalidArgument.into());
        }
        let mut raw = [0u8; TOKEN_BYTES];
        getrandom::getrandom(&mut raw).map_err(|e| StoreError::Hash(e.to_string()))?;
        let link = LinkRec {
            format: FORMAT,
            id: self.db.generate_id()? + 1,
            owner: ctx.account,
            node,
            access,
            password,
            expires,
            created: self.now(),
            token: hex::encode(raw),
        };
        let key = link_key(link.owner, link.id);
        self.public_links
            .insert(key, self.seal_rec(link.owner, b"link", &key, &link)?)?;
        self.public_link_tokens
            .insert(token_key(&link.token), &key[..])?;
        self.index_share(node, principal(link.id), Some(grant_of(access)));
        let info = self.link_info(&link, rec.kind);
        self.audit(
            ctx.account,
            AuditKind::LinkCreated,
            &ctx.user,
            &ctx.device,
            &format!("link {} to node {node} ({})", link.id, describe(&info)),
        );
        Ok(info)
    }

    /// The account's public links, oldest first.
    pub fn list_links(&self, ctx: &Ctx) -> Result<Vec<LinkInfo>> {
        let mut out = Vec::new();
        for item in self.public_links.scan_prefix(ctx.account.to_be_bytes()) {
            let (k, v) = item?;
            let link: LinkRec = self.open_rec(ctx.account, b"link", &k, &v)?;
            let kind = self.node_kind(link.node).unwrap_or(NodeKind::File);
            out.push(self.link_info(&link, kind));
        }
        Ok(out)
    }

    /// The owner ends link `id`.
    pub fn revoke_link(&self, ctx: &Ctx, id: u64) -> Result<()> {
        let key = link_key(ctx.account, id);
        let Some(v) = self.public_links.get(key)? else {
            return Err(ErrorCode::NotFound.into());
        };
        let link: LinkRec = self.open_rec(ctx.account, b"link", &key, &v)?;
        self.forget_link(&link)?;
        self.audit(
            ctx.account,
            AuditKind::LinkRevoked,
            &ctx.user,
            &ctx.device,
            &format!("link {id}"),
        );
        Ok(())
    }

    /// Opens a link for a visitor from `addr`: the visitor's context, or why not. Unknown
    /// tokens and wrong passwords count as failed logins of the address.
    /// With `audit`, the opening goes in the owner's audit log (pages and downloads; not
    /// each piece of an upload).
    pub fn open_link(
        &self,
        token: &str,
        key: Key<'_>,
        addr: Option<IpAddr>,
        audit: bool,
    ) -> Result<Opened> {
        self.check_address_allowed(addr)?;
        let link = match self.find_link(token) {
            Ok(link) => link,
            Err(e) => {
                if matches!(e, StoreError::Refused(ErrorCode::NotFound)) {
                    self.address_failed(addr, "unknown public link");
                }
                return Err(e);
            }
        };
        let from = addr.map_or_else(|| "local".to_string(), |a| a.to_string());
        if let Some(hash) = &link.password {
            match key {
                Key::Unlocked => {}
                Key::None => return Err(ErrorCode::AuthRequired.into()),
                Key::Password(p) => {
                    if p.len() > MAX_PASSWORD || !verify_password(p, hash) {
                        self.audit(
                            link.owner,
                            AuditKind::LinkRefused,
                            "",
                            &from,
                            &format!("link {}: wrong password", link.id),
                        );
                        self.address_failed(addr, "wrong public link password");
                        return Err(ErrorCode::AuthFailed.into());
                    }
                }
            }
        }
        let opened = self.link_session(&link)?;
        if !audit {
            return Ok(opened);
        }
        self.audit(
            link.owner,
            AuditKind::LinkOpened,
            "",
            &from,
            &format!("link {}", link.id),
        );
        Ok(opened)
    }

    /// The context of a link already opened (every request of its visitor), without a
    /// password check or an audit entry: the link must still exist and not have expired.
    pub fn resume_link(&self, token: &str) -> Result<Ctx> {
        let link = self.find_link(token).map_err(|e| match e {
            StoreError::Refused(_) => StoreError::Refused(ErrorCode::SessionExpired),
            other => other,
        })?;
        Ok(self.link_session(&link)?.ctx)
    }

    /// Records something a visitor did through a link in its owner's audit log.
    pub fn audit_link(&self, ctx: &Ctx, from: IpAddr, what: &str) {
        let Some(id) = ctx.account.checked_sub(PRINCIPALS) else {
            return;
        };
        let owner = self.node_owner_of(ctx.root).unwrap_or(0);
        self.audit(
            owner,
            AuditKind::LinkOpened,
            "",
            &from.to_string(),
            &format!("link {id}: {what}"),
        );
    }

    /// Drops every link of a deleted account.
    pub(crate) fn drop_links_of(&self, account: u64) -> Result<()> {
        for item in self.public_links.scan_prefix(account.to_be_bytes()) {
            let (k, v) = item?;
            if let Ok(link) = self.open_rec::<LinkRec>(account, b"link", &k, &v) {
                self.public_link_tokens.remove(token_key(&link.token))?;
                self.index_share(link.node, principal(link.id), None);
            }
            self.public_links.remove(k)?;
        }
        Ok(())
    }

    /// Every link's grant — node, the link's principal, access — for the share index.
    pub(crate) fn link_grants(&self) -> Result<Vec<(NodeId, u64, crate::authz::Access)>> {
        let mut out = Vec::new();
        for item in self.public_links.iter() {
            let (k, v) = item?;
            let owner = u64::from_be_bytes(k[..8].try_into().unwrap_or_default());
            let link: LinkRec = self.open_rec(owner, b"link", &k, &v)?;
            out.push((link.node, principal(link.id), grant_of(link.access)));
        }
        Ok(out)
    }

    fn find_link(&self, token: &str) -> Result<LinkRec> {
        if !well_formed(token) {
            return Err(ErrorCode::NotFound.into());
        }
        let Some(key) = self.public_link_tokens.get(token_key(token))? else {
            return Err(ErrorCode::NotFound.into());
        };
        if key.len() != 16 {
            return Err(StoreError::Corrupt("public link token index".into()));
        }
        let owner = u64::from_be_bytes(key[..8].try_into().unwrap_or_default());
        let Some(v) = self.public_links.get(&key)? else {
            return Err(ErrorCode::NotFound.into());
        };
        let link: LinkRec = self.open_rec(owner, b"link", &key, &v)?;
        // Constant-time would not matter here: the lookup was by the token's hash.
        if link.token != token {
            return Err(ErrorCode::NotFound.into());
        }
        if link.expires.is_some_and(|e| e <= self.now()) {
            return Err(ErrorCode::SessionExpired.into());
        }
        Ok(link)
    }

    fn forget_link(&self, link: &LinkRec) -> Result<()> {
        self.public_link_tokens.remove(token_key(&link.token))?;
        self.public_links.remove(link_key(link.owner, link.id))?;
        self.index_share(link.node, principal(link.id), None);
        Ok(())
    }

    /// The visitor's context for `link`: its principal, on the link's node.
    fn link_session(&self, link: &LinkRec) -> Result<Opened> {
        let Some(v) = self.nodes.get(node_key(link.node))? else {
            return Err(ErrorCode::NotFound.into());
        };
        let rec = self.open_node(link.node, &v)?;
        if rec.deleted.is_some() || rec.owner != link.owner {
            return Err(ErrorCode::NotFound.into());
        }
        let ctx = Ctx {
            account: principal(link.id),
            user: format!("link-{}", link.id),
            role: match link.access {
                LinkAccess::Download => Role::Viewer,
                LinkAccess::Upload => Role::User,
            },
            device: format!("public link {}", link.id),
            root: link.node,
            link: Some(link.access),
        };
        Ok(Opened {
            ctx,
            info: self.link_info(link, rec.kind),
        })
    }

    fn link_info(&self, link: &LinkRec, kind: NodeKind) -> LinkInfo {
        LinkInfo {
            id: link.id,
            token: link.token.clone(),
            node: link.node,
            kind,
            path: self.path_of(link.owner, link.node),
            access: link.access,
            password: link.password.is_some(),
            expires: link.expires,
            created: link.created,
        }
    }

    fn node_kind(&self, node: NodeId) -> Option<NodeKind> {
        let v = self.nodes.get(node_key(node)).ok()??;
        Some(self.open_node(node, &v).ok()?.kind)
    }

    fn node_owner_of(&self, node: NodeId) -> Option<u64> {
        let v = self.nodes.get(node_key(node)).ok()??;
        node_owner(&v).ok()
    }
}

fn describe(info: &LinkInfo) -> String {
    let mut s = match info.access {
        LinkAccess::Download => "download".to_string(),
        LinkAccess::Upload => "upload only".to_string(),
    };
    if info.password {
        s.push_str(", password");
    }
    if let Some(e) = info.expires {
        s.push_str(&format!(", expires at {}", e.secs));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkstore::PackStore;
    use crate::store::guard::MAX_ADDR_FAILURES;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    fn store_at(clock: Arc<AtomicI64>) -> (Store, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::temporary().unwrap();
        let chunks = Arc::new(PackStore::open(tmp.path().join("packs"), &db).unwrap());
        let mut store = Store::with_chunk_store(db, chunks).unwrap();
        store.clock = Arc::new(move || Timestamp {
            secs: clock.load(Ordering::SeqCst),
            nanos: 0,
        });
        (store, tmp)
    }

    fn code<T>(r: Result<T>) -> Option<ErrorCode> {
        r.err().map(|e| e.code())
    }

    fn files(store: &Store, ctx: &Ctx) -> NodeId {
        store.lookup(ctx, ctx.root, "files").unwrap().node
    }

    #[test]
    fn a_link_opens_with_its_password_until_it_expires() {
        let clock = Arc::new(AtomicI64::new(1_800_000_000));
        let (store, _tmp) = store_at(clock.clone());
        store.add_user("ann", "pw", Role::User).unwrap();
        let (_, ctx) = store.login("ann", "pw", "d").unwrap();
        let dir = files(&store, &ctx);
        let day = Timestamp {
            secs: 1_800_000_000 + 86_400,
            nanos: 0,
        };
        // An expiry in the past, a file request on a file, the whole store: refused.
        let past = Timestamp {
            secs: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(
            code(store.create_link(&ctx, dir, LinkAccess::Download, None, Some(past))),
            Some(ErrorCode::InvalidArgument)
        );
        assert_eq!(
            code(store.create_link(&ctx, ctx.root, LinkAccess::Download, None, None)),
            Some(ErrorCode::InvalidArgument)
        );
        let link = store
            .create_link(&ctx, dir, LinkAccess::Download, Some("s3cret"), Some(day))
            .unwrap();
        assert_eq!(link.token.len(), 48, "192 bits, hex");
        assert!(link.password);
        assert_eq!(link.path, "files");
        // The token is stored, but not as a key: the index holds only its hash.
        assert!(store
            .public_link_tokens
            .get(link.token.as_bytes())
            .unwrap()
            .is_none());

        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(
            code(store.open_link(&link.token, Key::None, Some(ip), true)),
            Some(ErrorCode::AuthRequired)
        );
        assert_eq!(
            code(store.open_link(&link.token, Key::Password("nope"), Some(ip), true)),
            Some(ErrorCode::AuthFailed)
        );
        let opened = store
            .open_link(&link.token, Key::Password("s3cret"), Some(ip), true)
            .unwrap();
        assert_eq!(opened.ctx.root, dir);
        assert_eq!(opened.ctx.link, Some(LinkAccess::Download));
        assert!(opened.ctx.account >= PRINCIPALS);
        // Each opening and each refusal is in the owner's log.
        let log = store.audit_log(Some(ctx.account), 100).unwrap();
        assert!(log.iter().any(|e| e.kind == AuditKind::LinkCreated));
        assert!(log.iter().any(|e| e.kind == AuditKind::LinkOpened));
        assert!(log
            .iter()
            .any(|e| e.kind == AuditKind::LinkRefused && e.from == "192.0.2.9"));

        // The last second of its life, then gone.
        clock.store(day.secs - 1, Ordering::SeqCst);
        assert!(store.resume_link(&link.token).is_ok());
        clock.store(day.secs, Ordering::SeqCst);
        assert_eq!(
            code(store.open_link(&link.token, Key::Unlocked, Some(ip), true)),
            Some(ErrorCode::SessionExpired)
        );
        assert_eq!(
            code(store.resume_link(&link.token)),
            Some(ErrorCode::SessionExpired)
        );
    }

    #[test]
    fn guessing_tokens_blocks_the_address_and_raises_an_alert() {
        let clock = Arc::new(AtomicI64::new(1_800_000_000));
        let (store, _tmp) = store_at(clock.clone());
        store.add_user("ann", "pw", Role::User).unwrap();
        let (_, ctx) = store.login("ann", "pw", "d").unwrap();
        let dir = files(&store, &ctx);
        let link = store
            .create_link(&ctx, dir, LinkAccess::Download, None, None)
            .unwrap();
        let guesser: IpAddr = "198.51.100.1".parse().unwrap();
        let other: IpAddr = "198.51.100.2".parse().unwrap();
        for i in 0..MAX_ADDR_FAILURES {
            let guess = format!("{:048x}", i);
            assert_eq!(
                code(store.open_link(&guess, Key::None, Some(guesser), false)),
                Some(ErrorCode::NotFound)
            );
        }
        // Blocked now, even with the right token; another address is not.
        assert_eq!(
            code(store.open_link(&link.token, Key::None, Some(guesser), false)),
            Some(ErrorCode::Locked)
        );
        assert!(store
            .open_link(&link.token, Key::None, Some(other), false)
            .is_ok());
        let log = store.audit_log(None, 1000).unwrap();
        assert!(log.iter().any(|e| e.kind
            == AuditKind::Alert(shelf_protocol::AlertClass::Security)
            && e.detail.contains("198.51.100.1")));
        // The block ends with the lockout time.
        clock.fetch_add(crate::store::guard::LOCKOUT_SECS, Ordering::SeqCst);
        assert!(store
            .open_link(&link.token, Key::None, Some(guesser), false)
            .is_ok());
    }

    #[test]
    fn links_survive_a_restart_and_go_with_their_account() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = crate::datadir::DataDir::new(tmp.path());
        dir.init(&["localhost".to_string()]).unwrap();
        let token = {
            let store = Store::open(&dir).unwrap();
            store.add_user("ann", "pw", Role::User).unwrap();
            store.add_user("boss", "pw", Role::Admin).unwrap();
            let (_, ctx) = store.login("ann", "pw", "d").unwrap();
            let files = files(&store, &ctx);
            let t = store
                .create_link(&ctx, files, LinkAccess::Upload, None, None)
                .unwrap()
                .token;
            store.sync().unwrap();
            t
        };
        let store = Store::open(&dir).unwrap();
        let opened = store.open_link(&token, Key::None, None, false).unwrap();
        // The grant came back with the link: the visitor may make a file in the folder.
        assert!(store
            .create_node(
                &opened.ctx,
                opened.ctx.root,
                "sent.txt",
                crate::store::namespace::NewNode {
                    kind: NodeKind::File,
                    mode: 0o644,
                    target: None,
                    exclusive: true,
                    rdev: 0,
                    id: None,
                },
            )
            .is_ok());
        store.delete_user("ann", "boss").unwrap();
        assert!(store.open_link(&token, Key::None, None, false).is_err());
        assert!(store.public_links.is_empty());
        assert!(store.public_link_tokens.is_empty());
    }
}

//! WebDAV locks that mounts see: every `LOCK` is kept twice — in the `dav-server` crate's
//! in-memory lock table (which answers WebDAV's questions: `If` headers, lock discovery,
//! depth, shared or exclusive) and as a lease in the store ([`crate::store::locks`]), the
//! same leases a mount's `flock` and `fcntl` take. So a file locked by a WebDAV client
//! cannot be locked on a mounted device, and a file a device holds locked answers a
//! WebDAV `LOCK` with 423.
//!
//! The lease lasts as long as the WebDAV lock (its timeout, at most 10 minutes for an
//! exclusive lock and a day for a shared one; a refresh extends both) and is held by the
//! account's WebDAV holder with the lock token as owner, so any of the account's clients
//! that has the token may unlock it. An exclusive lock is a write lease over the whole
//! file, a shared one a read lease. A lock on a folder leases the folder only.

use super::dav::Creds;
use super::pages::resolve;
use super::Web;
use crate::store::locks::LockSpec;
use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use futures_util::FutureExt;
use shelf_protocol::sync::LockOrRecover;
use shelf_protocol::{LockKind, NodeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use xmltree::Element;

/// A lock asked for without a timeout (or `Infinite` on refresh) gets this one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The WebDAV locks of one account: the protocol's table and the leases behind them.
#[derive(Clone)]
pub struct AccountLocks {
    table: dav_server::memls::MemLs,
    held: Arc<Mutex<HashMap<String, Held>>>,
}

/// The lease behind one lock token.
#[derive(Clone)]
struct Held {
    node: NodeId,
    /// The locked path (`/files/a.txt`), for a `DELETE` or `MOVE` of it or above it.
    path: Vec<u8>,
    shared: bool,
    until: Instant,
}

impl Default for AccountLocks {
    fn default() -> AccountLocks {
        AccountLocks {
            table: *dav_server::memls::MemLs::new(),
            held: Default::default(),
        }
    }
}

impl AccountLocks {
    fn table(&self) -> &dav_server::memls::MemLs {
        &self.table
    }
}

/// The lock system of one request: the account's locks, acting as the signed-in session.
#[derive(Clone)]
pub struct LeasedLs {
    locks: AccountLocks,
    web: Weak<Web>,
    session: Creds,
}

impl std::fmt::Debug for LeasedLs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LeasedLs({})", self.session.user)
    }
}

/// The lease owner standing for a lock token.
fn owner_of(token: &str) -> u64 {
    let h = blake3::hash(token.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// The lease holder standing for an account's WebDAV clients.
fn holder_of(account: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"shelf webdav locks");
    h.update(&account.to_le_bytes());
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// Whether `path` is `at` or below it.
fn at_or_below(path: &[u8], at: &[u8]) -> bool {
    let at = at.strip_suffix(b"/").unwrap_or(at);
    path.strip_prefix(at)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
}

impl LeasedLs {
    pub fn new(locks: AccountLocks, web: Weak<Web>, session: Creds) -> LeasedLs {
        LeasedLs {
            locks,
            web,
            session,
        }
    }

    /// Takes (`Some(shared)`) or drops (`None`) the lease of `token` on `node` for `period`.
    fn lease(&self, node: NodeId, token: &str, shared: Option<bool>, period: Duration) -> bool {
        let (Some(web), Some(ctx)) = (self.web.upgrade(), self.session.session.ctx()) else {
            return false;
        };
        let kind = match shared {
            None => LockKind::Unlock,
            Some(true) => LockKind::Read,
            Some(false) => LockKind::Write,
        };
        let spec = LockSpec {
            session: holder_of(ctx.account),
            node,
            owner: owner_of(token),
            kind,
            start: 0,
            end: u64::MAX,
        };
        web.store.lock_for(&ctx, spec, period).is_ok()
    }

    /// The node at `path`, if it is a stored one (not `.versions/`, not missing).
    fn node_at(&self, path: &DavPath) -> Option<NodeId> {
        let web = self.web.upgrade()?;
        let parts = super::dav::stored_parts(path)?;
        resolve(&web, &self.session, &parts).ok().map(|a| a.node)
    }

    /// Runs `f` on the blocking pool (it calls the store).
    fn blocking<'a, T: Default + Send + 'static>(
        &self,
        f: impl FnOnce(LeasedLs) -> T + Send + 'static,
    ) -> LsFuture<'a, T> {
        let me = self.clone();
        async move {
            tokio::task::spawn_blocking(move || f(me))
                .await
                .unwrap_or_default()
        }
        .boxed()
    }

    /// After a `LOCK` of an unmapped URL: makes the empty file it names (RFC 4918 7.3; the
    /// `dav-server` crate opens it but writes nothing) and takes its lease.
    pub async fn made_by_lock(&self, path: DavPath, token: String) {
        self.blocking(move |me| {
            let (Some(web), Some(parts)) = (me.web.upgrade(), super::dav::stored_parts(&path))
            else {
                return;
            };
            let node = match me.node_at(&path) {
                Some(node) => node,
                None => match super::dav::create_file(&web, &me.session, &parts) {
                    Ok(attr) => attr.node,
                    Err(e) => {
                        tracing::debug!(error = ?e.code, "a LOCK could not make its file");
                        return;
                    }
                },
            };
            let mut held = me.locks.held.lock_or_recover();
            if let Some(h) = held.get_mut(&token) {
                let period = h.until.saturating_duration_since(Instant::now());
                if h.node == 0 && me.lease(node, &token, Some(h.shared), period) {
                    h.node = node;
                }
            }
        })
        .await
    }

    /// Drops the leases of `tokens` (already gone from the table).
    fn release(&self, tokens: Vec<(String, Held)>) {
        for (token, h) in tokens {
            if h.node != 0 {
                self.lease(h.node, &token, None, DEFAULT_TIMEOUT);
            }
        }
    }
}

impl DavLockSystem for LeasedLs {
    fn lock(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let path = path.clone();
        let principal = principal.map(str::to_string);
        let owner = owner.cloned();
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        async move {
            let lock = self
                .locks
                .table()
                .lock(
                    &path,
                    principal.as_deref(),
                    owner.as_ref(),
                    Some(timeout),
                    shared,
                    deep,
                )
                .await?;
            let token = lock.token.clone();
            let taken = self
                .blocking(move |me| {
                    let now = Instant::now();
                    me.locks.held.lock_or_recover().retain(|_, h| h.until > now);
                    // A path with no file yet gets its lease once the `LOCK` made it.
                    let node = me.node_at(&path).unwrap_or(0);
                    if node != 0 && !me.lease(node, &token, Some(shared), timeout) {
                        return Some(false);
                    }
                    let held = Held {
                        node,
                        path: path.as_bytes().to_vec(),
                        shared,
                        until: now + timeout,
                    };
                    me.locks.held.lock_or_recover().insert(token, held);
                    Some(true)
                })
                .await;
            if taken == Some(true) {
                return Ok(lock);
            }
            // A device holds the file locked (or the store could not be asked).
            let _ = self.locks.table().unlock(&lock.path, &lock.token).await;
            Err(lock)
        }
        .boxed()
    }

    fn unlock(&'_ self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let path = path.clone();
        let token = token.to_string();
        async move {
            self.locks.table().unlock(&path, &token).await?;
            let gone = self.locks.held.lock_or_recover().remove(&token);
            if let Some(h) = gone {
                self.blocking(move |me| me.release(vec![(token, h)])).await;
            }
            Ok(())
        }
        .boxed()
    }

    fn refresh(
        &'_ self,
        path: &DavPath,
        token: &str,
        timeout: Option<Duration>,
    ) -> LsFuture<'_, Result<DavLock, ()>> {
        let path = path.clone();
        let token = token.to_string();
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        async move {
            let lock = self
                .locks
                .table()
                .refresh(&path, &token, Some(timeout))
                .await?;
            let renewed = self
                .blocking(move |me| {
                    let mut held = me.locks.held.lock_or_recover();
                    let Some(h) = held.get_mut(&token) else {
                        return Some(true);
                    };
                    h.until = Instant::now() + timeout;
                    Some(h.node == 0 || me.lease(h.node, &token, Some(h.shared), timeout))
                })
                .await;
            match renewed {
                Some(true) => Ok(lock),
                _ => Err(()),
            }
        }
        .boxed()
    }

    fn check(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        self.locks
            .table()
            .check(path, principal, ignore_principal, deep, submitted_tokens)
    }

    fn discover(&'_ self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        self.locks.table().discover(path)
    }

    fn delete(&'_ self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        let path = path.clone();
        async move {
            self.locks.table().delete(&path).await?;
            let gone: Vec<(String, Held)> = {
                let mut held = self.locks.held.lock_or_recover();
                let tokens: Vec<String> = held
                    .iter()
                    .filter(|(_, h)| at_or_below(&h.path, path.as_bytes()))
                    .map(|(t, _)| t.clone())
                    .collect();
                tokens
                    .into_iter()
                    .filter_map(|t| held.remove(&t).map(|h| (t, h)))
                    .collect()
            };
            if !gone.is_empty() {
                self.blocking(move |me| me.release(gone)).await;
            }
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_means_the_path_or_inside_it() {
        assert!(at_or_below(b"/files/a.txt", b"/files/a.txt"));
        assert!(at_or_below(b"/files/a/b.txt", b"/files/a/"));
        assert!(at_or_below(b"/files/a/b.txt", b"/files/a"));
        assert!(!at_or_below(b"/files/ab.txt", b"/files/a"));
        assert!(!at_or_below(b"/files", b"/files/a"));
    }

    #[test]
    fn holders_differ_by_account_and_owners_by_token() {
        assert_ne!(holder_of(1), holder_of(2));
        assert_ne!(owner_of("urn:uuid:1"), owner_of("urn:uuid:2"));
        assert_eq!(owner_of("urn:uuid:1"), owner_of("urn:uuid:1"));
    }
}

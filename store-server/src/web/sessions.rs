//! Browser sessions: a login from the web is a device login like a mount's (same password
//! check, lockout and alerts in the store), named `web-XXXXXXXX` (random), so it is listed
//! and revoked with the account's devices. The cookie holds the session's token; the server
//! keeps one [`Session`] per token (resumed after a restart, dropped when the store no
//! longer knows the token). Every change a page makes carries a CSRF token derived from the
//! session token with a key drawn at start, compared in constant time.

use crate::handler::{handle, Session};
use crate::store::Store;
use shelf_protocol::sync::LockOrRecover;
use shelf_protocol::{ErrorCode, NodeId, Request, Response, Role, WireError};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Name of the session cookie.
pub const COOKIE: &str = "shelf_session";
/// Sessions kept in memory at most (the oldest go first; they resume from their token).
const MAX_SESSIONS: usize = 4096;

/// One signed-in browser.
pub struct WebSession {
    pub session: Session,
    /// The store refused the token (revoked, expired): signed out at the next request.
    dead: std::sync::atomic::AtomicBool,
    pub token: String,
    pub user: String,
    pub role: Role,
    pub root: NodeId,
}

impl WebSession {
    /// The session of a program signed in with an app password (never kept: every
    /// request signs in again).
    pub fn for_app(peer: IpAddr, ctx: crate::store::Ctx, secret: &str) -> WebSession {
        WebSession {
            role: ctx.role,
            root: ctx.root,
            user: ctx.user.clone(),
            session: Session::for_app(peer, ctx, secret.to_string()),
            dead: Default::default(),
            token: secret.to_string(),
        }
    }

    /// The session of a public link's visitor (never kept: every request opens the link).
    pub fn for_link(
        peer: IpAddr,
        opened: crate::store::public_links::Opened,
        token: &str,
    ) -> WebSession {
        WebSession {
            role: opened.ctx.role,
            root: opened.ctx.root,
            user: String::new(),
            session: Session::for_link(peer, opened.ctx, token.to_string()),
            dead: Default::default(),
            token: token.to_string(),
        }
    }

    /// Runs one store request through the protocol handler (and so the one authorisation
    /// function) as this session.
    pub fn call(&self, store: &Store, req: Request) -> Result<Response, WireError> {
        let answer = handle(store, &self.session, req);
        if let Err(e) = &answer {
            if matches!(e.code, ErrorCode::SessionExpired | ErrorCode::AuthRequired) {
                self.dead.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        answer
    }
}

/// The sessions of every browser signed in to this server.
pub struct WebSessions {
    by_token: Mutex<HashMap<String, Arc<WebSession>>>,
    csrf_key: [u8; 32],
}

impl WebSessions {
    pub fn new() -> std::io::Result<WebSessions> {
        let mut csrf_key = [0u8; 32];
        getrandom::getrandom(&mut csrf_key).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(WebSessions {
            by_token: Mutex::new(HashMap::new()),
            csrf_key,
        })
    }

    /// Signs in; the error is the store's (wrong password, locked account, throttled).
    pub fn login(
        &self,
        store: &Store,
        peer: IpAddr,
        user: &str,
        password: &str,
    ) -> Result<Arc<WebSession>, WireError> {
        let session = Session::for_peer(peer);
        let mut tag = [0u8; 4];
        getrandom::getrandom(&mut tag).map_err(|_| WireError::from(ErrorCode::Internal))?;
        let answer = handle(
            store,
            &session,
            Request::Login {
                user: user.to_string(),
                password: password.to_string(),
                device: format!("web-{}", hex::encode(tag)),
            },
        )?;
        self.keep(session, answer)
    }

    /// The session a cookie names: kept here, or resumed from the store (after a restart).
    /// None when the token is unknown or revoked.
    pub fn get(&self, store: &Store, peer: IpAddr, token: &str) -> Option<Arc<WebSession>> {
        if let Some(s) = self.by_token.lock_or_recover().get(token) {
            if s.session.ctx().is_some() && !s.dead.load(std::sync::atomic::Ordering::Relaxed) {
                return Some(s.clone());
            }
        }
        let session = Session::for_peer(peer);
        let answer = handle(
            store,
            &session,
            Request::Resume {
                token: token.to_string(),
            },
        )
        .ok()?;
        self.keep(session, answer).ok()
    }

    fn keep(&self, session: Session, answer: Response) -> Result<Arc<WebSession>, WireError> {
        let Response::Session {
            token,
            user,
            role,
            root,
        } = answer
        else {
            return Err(WireError::from(ErrorCode::Internal));
        };
        let web = Arc::new(WebSession {
            session,
            dead: Default::default(),
            token: token.clone(),
            user,
            role,
            root: root.node,
        });
        let mut map = self.by_token.lock_or_recover();
        if map.len() >= MAX_SESSIONS {
            map.clear();
        }
        map.insert(token, web.clone());
        Ok(web)
    }

    /// Signs out: the token is revoked in the store and forgotten here.
    pub fn logout(&self, store: &Store, web: &WebSession) {
        let _ = web.call(store, Request::Logout);
        self.by_token.lock_or_recover().remove(&web.token);
    }

    /// The CSRF token of a session.
    pub fn csrf(&self, web: &WebSession) -> String {
        blake3::keyed_hash(&self.csrf_key, web.token.as_bytes()).to_hex()[..32].to_string()
    }

    /// Whether `given` is the session's CSRF token (constant time).
    pub fn csrf_ok(&self, web: &WebSession, given: &str) -> bool {
        same(&self.csrf(web), given)
    }

    /// The cookie value saying this browser gave the password of the link `token`.
    pub fn unlock_tag(&self, token: &str) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.csrf_key);
        h.update(b"unlocked link ");
        h.update(token.as_bytes());
        h.finalize().to_hex()[..32].to_string()
    }

    /// Whether `given` is the unlock cookie of link `token` (constant time).
    pub fn unlocked(&self, token: &str, given: &str) -> bool {
        same(&self.unlock_tag(token), given)
    }
}

/// Equal strings, compared in constant time.
fn same(want: &str, given: &str) -> bool {
    want.len() == given.len()
        && want
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

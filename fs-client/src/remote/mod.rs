//! The network client: one TLS connection to the server, multiplexed. Callers
//! [`Remote::submit`] requests (each gets an id) and later wait on the answers, so many
//! requests are in flight at once; [`Remote::call`] is submit-and-wait. A background tokio
//! runtime owns the socket: a writer task frames requests, a reader task routes responses by id.
//!
//! When the connection drops, every waiting call fails with [`RemoteError::Disconnected`] and
//! the next call reconnects (TLS, hello, resume with the session token). The filesystem core
//! decides what a failure means for the user (EIO now, or queued work retried later).

pub mod calls;
mod commit_group;
pub mod counted;
pub mod tls;

use crate::sync::LockOrRecover;
use shelf_protocol::{
    Change, ClientFrame, ErrorCode, FrameError, FrameReader, FrameWriter, Request, Response,
    ServerFrame, WireError, MAGIC, PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long connecting (TCP + TLS + hello) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may wait for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot reach the server at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("lost the connection to the server: {0}")]
    Disconnected(String),
    #[error("{0}")]
    Server(WireError),
    #[error("the server speaks another protocol version: {0}")]
    VersionMismatch(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("no answer from the server within {0:?}")]
    Timeout(Duration),
}

impl RemoteError {
    /// The protocol error code, when the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RemoteError::Server(e) => Some(e.code),
            _ => None,
        }
    }

    /// Whether the failure is about the connection (worth retrying later), not the request.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RemoteError::Unreachable { .. }
                | RemoteError::Disconnected(_)
                | RemoteError::Timeout(_)
        )
    }
}

/// Where to connect and how to authenticate.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: String,
    /// Pinned certificate fingerprint; `None` only during a first login.
    pub fingerprint: Option<String>,
    /// Trust a certificate that chains to this CA (PEM) and names the host, instead of the
    /// pinned fingerprint.
    pub ca: Option<std::path::PathBuf>,
}

type Reply = std::sync::mpsc::SyncSender<Result<Response, RemoteError>>;
type Pending = Arc<Mutex<HashMap<u64, Reply>>>;

struct Conn {
    tx: mpsc::UnboundedSender<ClientFrame>,
    pending: Pending,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

/// A handle on an in-flight request.
pub struct Ticket(std::sync::mpsc::Receiver<Result<Response, RemoteError>>);

pub struct Remote {
    rt: tokio::runtime::Runtime,
    endpoint: Endpoint,
    /// Session token used to resume after a reconnect.
    token: Mutex<Option<String>>,
    conn: Mutex<Option<Arc<Conn>>>,
    next_id: AtomicU64,
    /// The fingerprint the server presented on the last connect.
    pub seen_fingerprint: Mutex<Option<String>>,
    /// Bytes sent and received over every connection so far.
    pub traffic: Arc<counted::Traffic>,
    /// Where pushed changes go once [`Remote::subscribe`] was called.
    events: Arc<Mutex<Option<std::sync::mpsc::Sender<Change>>>>,
    /// The newest feed position seen (resubscribing after a reconnect starts there).
    last_seq: Arc<AtomicU64>,
    /// Commits waiting to go out together.
    commits: commit_group::CommitGroup,
}

impl Remote {
    pub fn new(endpoint: Endpoint, token: Option<String>) -> std::io::Result<Remote> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shelf-net")
            .enable_all()
            .build()?;
        Ok(Remote {
            rt,
            endpoint,
            token: Mutex::new(token),
            conn: Mutex::new(None),
            next_id: AtomicU64::new(1),
            seen_fingerprint: Mutex::new(None),
            traffic: Arc::new(counted::Traffic::default()),
            events: Arc::new(Mutex::new(None)),
            last_seq: Arc::new(AtomicU64::new(0)),
            commits: Default::default(),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn set_token(&self, token: Option<String>) {
        {
            let mut t = self.token.lock_or_recover();
            *t = token;
        }
    }

    /// Connects now (if not connected) so a dead server is reported at once.
    pub fn connect(&self) -> Result<(), RemoteError> {
        self.live_conn().map(|_| ())
    }

    fn live_conn(&self) -> Result<Arc<Conn>, RemoteError> {
        let mut guard = self.conn.lock_or_recover();
        if let Some(c) = guard.as_ref() {
            if c.alive.load(Ordering::Acquire) {
                return Ok(c.clone());
            }
        }
        *guard = None;
        crate::blocking::about_to_block();
        let conn = Arc::new(self.rt.block_on(self.open())?);
        // Resume the session on the fresh connection before anyone else may use it (a
        // request racing ahead of the resume would be refused as "not logged in").
        let token = self.token.lock_or_recover().clone();
        if let Some(token) = token {
            let t = self.submit_on(&conn, Request::Resume { token });
            t.wait()?;
        }
        // Resubscribe where the last connection stopped.
        if self.events.lock_or_recover().is_some() {
            let after = Some(self.last_seq.load(Ordering::Acquire));
            let answer = self.submit_on(&conn, Request::Subscribe { after }).wait()?;
            self.note_subscribed(&answer);
        }
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Starts receiving the account's changes from now on (and keeps receiving them across
    /// reconnects).
    pub fn subscribe(&self) -> Result<std::sync::mpsc::Receiver<Change>, RemoteError> {
        let after = match self.last_seq.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        };
        self.subscribe_after(after).map(|(r, _)| r)
    }

    /// Receives the account's changes after position `after` (all the feed still holds
    /// for `Some(0)`), then live ones. Also returns the newest position at the time.
    pub fn subscribe_after(
        &self,
        after: Option<u64>,
    ) -> Result<(std::sync::mpsc::Receiver<Change>, u64), RemoteError> {
        let (s, r) = std::sync::mpsc::channel();
        {
            let mut e = self.events.lock_or_recover();
            *e = Some(s);
        }
        let answer = self.call(Request::Subscribe { after })?;
        self.note_subscribed(&answer);
        let head = match answer {
            Response::Subscribed { head, .. } => head,
            _ => 0,
        };
        Ok((r, head))
    }

    fn note_subscribed(&self, answer: &Response) {
        let Response::Subscribed { trimmed, head } = answer else {
            return;
        };
        let before = self.last_seq.fetch_max(*head, Ordering::AcqRel);
        if *trimmed {
            if let Some(s) = self.events.lock_or_recover().clone() {
                let _ = s.send(Change::resync(before));
            }
        }
    }

    async fn open(&self) -> Result<Conn, RemoteError> {
        let addr = self.endpoint.addr.clone();
        let unreachable = |reason: String| RemoteError::Unreachable {
            addr: addr.clone(),
            reason,
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tcp = counted::Counted::new(tcp, self.traffic.clone());
        let verifier = match &self.endpoint.ca {
            Some(ca) => tls::PinnedVerifier::with_ca(ca).map_err(|e| unreachable(e.to_string()))?,
            None => tls::PinnedVerifier::new(self.endpoint.fingerprint.clone()),
        };
        let config =
            tls::client_config(verifier.clone()).map_err(|e| unreachable(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(&addr);
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
            rustls::pki_types::ServerName::try_from("shelf").expect("valid name")
        });
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| unreachable("TLS handshake timed out".into()))?;
        {
            let mut s = self.seen_fingerprint.lock_or_recover();
            *s = verifier.seen.lock_or_recover().clone();
        }
        let tls = tls.map_err(|e| unreachable(format!("TLS: {e}")))?;
        let (r, w) = tokio::io::split(tls);
        let mut reader = FrameReader::new(r);
        let mut writer = FrameWriter::new(w);
        let frame_err = |e: FrameError| unreachable(e.to_string());
        writer
            .send(&ClientFrame::Hello {
                magic: MAGIC,
                version: PROTOCOL_VERSION,
                client: format!("shelf {}", env!("CARGO_PKG_VERSION")),
            })
            .await
            .map_err(frame_err)?;
        match tokio::time::timeout(CONNECT_TIMEOUT, reader.read::<ServerFrame>())
            .await
            .map_err(|_| unreachable("no hello from the server".into()))?
            .map_err(frame_err)?
        {
            Some(ServerFrame::Hello { .. }) => {}
            Some(ServerFrame::HelloRejected { message, .. }) => {
                return Err(RemoteError::VersionMismatch(message))
            }
            _ => return Err(unreachable("the server did not answer the hello".into())),
        }

        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (tx, mut rx) = mpsc::unbounded_channel::<ClientFrame>();

        let fail_all = {
            let pending = pending.clone();
            let alive = alive.clone();
            move |why: String| {
                alive.store(false, Ordering::Release);
                {
                    let mut p = pending.lock_or_recover();
                    for (_, s) in p.drain() {
                        let _ = s.try_send(Err(RemoteError::Disconnected(why.clone())));
                    }
                }
            }
        };
        let fail_w = fail_all.clone();
        self.rt.spawn(async move {
            while let Some(frame) = rx.recv().await {
                let mut res = writer.write(&frame).await;
                while res.is_ok() {
                    match rx.try_recv() {
                        Ok(f) => res = writer.write(&f).await,
                        Err(_) => break,
                    }
                }
                if let Err(e) = res.and(writer.flush().await) {
                    fail_w(e.to_string());
                    return;
                }
            }
            let _ = writer.shutdown().await;
        });
        let pending_r = pending.clone();
        let (events, last_seq) = (self.events.clone(), self.last_seq.clone());
        self.rt.spawn(async move {
            loop {
                match reader.read::<ServerFrame>().await {
                    Ok(Some(ServerFrame::Response { id, result })) => {
                        let waiter = pending_r.lock_or_recover().remove(&id);
                        if let Some(w) = waiter {
                            let _ = w.try_send(result.map_err(RemoteError::Server));
                        }
                    }
                    Ok(Some(ServerFrame::Event(change))) => {
                        last_seq.fetch_max(change.seq, Ordering::AcqRel);
                        if let Some(s) = events.lock_or_recover().clone() {
                            let _ = s.send(change);
                        }
                    }
                    Ok(Some(_)) => {
                        fail_all("unexpected frame from the server".into());
                        return;
                    }
                    Ok(None) => {
                        fail_all("the server closed the connection".into());
                        return;
                    }
                    Err(e) => {
                        fail_all(e.to_string());
                        return;
                    }
                }
            }
        });
        Ok(Conn { tx, pending, alive })
    }

    fn submit_on(&self, conn: &Conn, body: Request) -> Ticket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (s, r) = std::sync::mpsc::sync_channel(1);
        {
            let mut p = conn.pending.lock_or_recover();
            p.insert(id, s);
        }
        // Refuse an oversized request here, with a clear error, rather than at the server.
        let frame = ClientFrame::Request { id, body };
        if let Err(e) = shelf_protocol::frame::checked_len(&frame) {
            if let Some(s) = conn.pending.lock_or_recover().remove(&id) {
                let _ = s.send(Err(RemoteError::Server(WireError::new(
                    ErrorCode::TooLarge,
                    e.to_string(),
                ))));
            }
        } else if conn.tx.send(frame).is_err() {
            if let Some(s) = conn.pending.lock_or_recover().remove(&id) {
                let _ = s.send(Err(RemoteError::Disconnected("connection closed".into())));
            }
        }
        if !conn.alive.load(Ordering::Acquire) {
            // The reader may have failed everything before our insert.
            if let Some(s) = conn.pending.lock_or_recover().remove(&id) {
                let _ = s.send(Err(RemoteError::Disconnected("connection closed".into())));
            }
        }
        Ticket(r)
    }

    /// Sends a request without waiting; reconnects first if needed.
    pub fn submit(&self, body: Request) -> Ticket {
        match self.live_conn() {
            Ok(conn) => self.submit_on(&conn, body),
            Err(e) => {
                let (s, r) = std::sync::mpsc::sync_channel(1);
                let _ = s.send(Err(e));
                Ticket(r)
            }
        }
    }

    /// Sends a request and waits for its answer.
    pub fn call(&self, body: Request) -> Result<Response, RemoteError> {
        self.submit(body).wait()
    }
}

impl Ticket {
    /// Blocks until the answer arrives.
    pub fn wait(self) -> Result<Response, RemoteError> {
        if let Ok(r) = self.0.try_recv() {
            return r;
        }
        crate::blocking::about_to_block();
        match self.0.recv_timeout(REQUEST_TIMEOUT) {
            Ok(r) => r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                Err(RemoteError::Timeout(REQUEST_TIMEOUT))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(RemoteError::Disconnected("request dropped".into()))
            }
        }
    }
}

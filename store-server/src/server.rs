//! The network side: a TCP listener, a TLS 1.3 handshake per connection (with a timeout), the
//! protocol hello, then a loop that reads request frames and runs each on the blocking pool,
//! so many requests of one connection are in flight at once. Responses go back through one
//! writer task per connection. Limits: connections (semaphore), requests in flight per
//! connection, frame size (in the protocol crate). Shutdown: a watch channel stops the
//! accept loop and every connection; the store is synced before `run` returns.

use crate::handler::{handle, subscribe, Session};
use crate::store::Store;
use shelf_protocol::{
    Change, ClientFrame, ErrorCode, FrameReader, FrameWriter, Request, ServerFrame, WireError,
    MAGIC, PROTOCOL_VERSION,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// Most simultaneous connections.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most requests of one connection being worked on at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Time a client has to finish the TLS handshake and send its hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often committed data is made durable in the background (pack files, then sled).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// Serves `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    store: Arc<Store>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let flusher = spawn_flusher(store.clone(), shutdown.clone());
    let pruner = spawn_pruner(store.clone(), shutdown.clone());
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.map_err(std::io::Error::other)?,
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(10);
                x
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let store = store.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(acceptor, tcp, peer.ip(), store, shutdown).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(permit);
        });
    }
    tracing::info!("shutting down");
    let _ = flusher.await;
    let _ = pruner.await;
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.sync())
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?;
    Ok(())
}

/// How often retention runs (`SHELF_PRUNE_INTERVAL_SECS`, default an hour; the first run
/// is one interval after the start).
fn prune_interval() -> Duration {
    std::env::var("SHELF_PRUNE_INTERVAL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(3600))
}

/// Applies the retention policies and collects unreferenced chunks, periodically.
fn spawn_pruner(
    store: Arc<Store>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let every = prune_interval();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            let s = store.clone();
            match tokio::task::spawn_blocking(move || {
                s.prune(s.now()).and_then(|r| s.sync().map(|()| r))
            })
            .await
            {
                Ok(Ok(r)) => tracing::info!(
                    versions = r.versions_removed,
                    expired_files = r.files_expired,
                    chunks = r.chunks_freed,
                    bytes = r.bytes_freed,
                    "retention ran"
                ),
                Ok(Err(e @ crate::error::StoreError::JobElsewhere(_))) => {
                    tracing::info!(reason = %e, "retention skipped")
                }
                Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
                Err(e) => tracing::error!(error = %e, "retention panicked"),
            }
        }
    })
}

fn spawn_flusher(
    store: Arc<Store>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.sync()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "background flush failed"),
                Err(e) => tracing::error!(error = %e, "background flush panicked"),
            }
        }
    })
}

async fn connection(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: std::net::IpAddr,
    store: Arc<Store>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await??;
    let _counted = crate::metrics::Connected::new("protocol");
    let (r, w) = tokio::io::split(stream);
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w);

    match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.read::<ClientFrame>()).await?? {
        Some(ClientFrame::Hello { magic, version, .. })
            if magic == MAGIC && version == PROTOCOL_VERSION =>
        {
            writer
                .send(&ServerFrame::Hello {
                    version: PROTOCOL_VERSION,
                    server: format!("shelf-server {}", env!("CARGO_PKG_VERSION")),
                })
                .await?;
        }
        Some(ClientFrame::Hello { version, .. }) => {
            writer
                .send(&ServerFrame::HelloRejected {
                    version: PROTOCOL_VERSION,
                    message: format!(
                        "this server speaks Shelf protocol {PROTOCOL_VERSION}, the client speaks {version}; \
                         upgrade the older side"
                    ),
                })
                .await?;
            let _ = writer.shutdown().await;
            anyhow::bail!("protocol version mismatch (client {version})");
        }
        _ => anyhow::bail!("connection did not start with a hello"),
    }

    let (tx, mut rx) = mpsc::channel::<ServerFrame>(MAX_IN_FLIGHT * 2);
    let write_task = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            writer.write(&frame).await?;
            while let Ok(frame) = rx.try_recv() {
                writer.write(&frame).await?;
            }
            writer.flush().await?;
        }
        let _ = writer.shutdown().await;
        Ok::<_, shelf_protocol::FrameError>(())
    });

    let session = Arc::new(Session::for_peer(peer));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // Ends the event forwarder of this connection (set when the connection ends or
    // subscribes again).
    let mut forwarder: Option<watch::Sender<bool>> = None;
    let result = loop {
        let frame = tokio::select! {
            f = reader.read::<ClientFrame>() => f,
            _ = shutdown.changed() => break Ok(()),
        };
        match frame {
            Ok(Some(ClientFrame::Request {
                id,
                body: Request::Subscribe { after },
            })) => {
                let (store2, session2) = (store.clone(), session.clone());
                let sub = tokio::task::spawn_blocking(move || subscribe(&store2, &session2, after))
                    .await
                    .unwrap_or_else(|_| Err(WireError::from(ErrorCode::Internal)));
                match sub {
                    Err(e) => {
                        let _ = tx.send(ServerFrame::Response { id, result: Err(e) }).await;
                    }
                    Ok(sub) => {
                        let _ = tx
                            .send(ServerFrame::Response {
                                id,
                                result: Ok(sub.response),
                            })
                            .await;
                        let (stop_tx, stop_rx) = watch::channel(false);
                        if let Some(old) = forwarder.replace(stop_tx) {
                            let _ = old.send(true);
                        }
                        let valid = {
                            let (store, session) = (store.clone(), session.clone());
                            move || {
                                session
                                    .token()
                                    .is_some_and(|t| session.resumed(&store, &t).is_ok())
                            }
                        };
                        tokio::spawn(forward_events(
                            sub.backlog,
                            sub.live,
                            tx.clone(),
                            stop_rx,
                            valid,
                        ));
                    }
                }
            }
            Ok(Some(ClientFrame::Request { id, body })) => {
                let permit = in_flight.clone().acquire_owned().await?;
                let (store, session, tx) = (store.clone(), session.clone(), tx.clone());
                tokio::spawn(async move {
                    let result =
                        tokio::task::spawn_blocking(move || handle(&store, &session, body))
                            .await
                            .unwrap_or_else(|e| {
                                tracing::error!(error = %e, "request handler panicked");
                                Err(WireError::from(ErrorCode::Internal))
                            });
                    let _ = tx.send(ServerFrame::Response { id, result }).await;
                    drop(permit);
                });
            }
            Ok(Some(ClientFrame::Hello { .. })) => break Err(anyhow::anyhow!("second hello")),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.into()),
        }
    };
    if let Some(stop) = forwarder.take() {
        let _ = stop.send(true);
    }
    drop(tx);
    let _ = write_task.await;
    result
}

/// Sends a subscription's backlog, then its live changes, until the connection ends or its
/// session is no longer `valid` (a revoked device hears nothing more). A subscriber that
/// falls too far behind is told to resync.
async fn forward_events(
    backlog: Vec<Change>,
    mut live: broadcast::Receiver<Change>,
    tx: mpsc::Sender<ServerFrame>,
    mut stop: watch::Receiver<bool>,
    valid: impl Fn() -> bool + Send + 'static,
) {
    let mut last = 0;
    for c in backlog {
        last = c.seq;
        if tx.send(ServerFrame::Event(c)).await.is_err() {
            return;
        }
    }
    loop {
        let next = tokio::select! {
            n = live.recv() => n,
            _ = stop.changed() => return,
        };
        let change = match next {
            Ok(c) if c.seq <= last => continue,
            Ok(c) => c,
            Err(broadcast::error::RecvError::Lagged(_)) => Change::resync(last),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        last = last.max(change.seq);
        if !valid() {
            return;
        }
        if change.kind != shelf_protocol::ChangeKind::Resync {
            crate::metrics::global().event_sent(change.at);
        }
        if tx.send(ServerFrame::Event(change)).await.is_err() {
            return;
        }
    }
}

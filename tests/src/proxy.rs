//! A fault-injecting TCP proxy for tests (the kernel here has no netem): it forwards between
//! a client and the server, and on command drops every connection, stalls them, or lets
//! bytes through slowly, or takes the server away (refusing connections).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASS: u8 = 0;
const STALL: u8 = 1;
const DRIP: u8 = 2;
const OFFLINE: u8 = 3;

pub struct FaultProxy {
    /// Where clients connect.
    pub addr: String,
    mode: Arc<AtomicU8>,
    /// Bumped to cut every open connection.
    cut: Arc<AtomicU64>,
    _rt: tokio::runtime::Runtime,
}

impl FaultProxy {
    /// Proxies to `upstream` (HOST:PORT).
    pub fn start(upstream: &str) -> FaultProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("proxy listen");
        let addr = listener.local_addr().expect("addr").to_string();
        let mode = Arc::new(AtomicU8::new(PASS));
        let cut = Arc::new(AtomicU64::new(0));
        let (m, c, up) = (mode.clone(), cut.clone(), upstream.to_string());
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if m.load(Ordering::SeqCst) == OFFLINE {
                    drop(client); // the server "cannot be reached"
                    continue;
                }
                let (m, c, up) = (m.clone(), c.clone(), up.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&up).await else {
                        return;
                    };
                    let born = c.load(Ordering::SeqCst);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let a = tokio::spawn(pump(cr, sw, m.clone(), c.clone(), born));
                    let b = tokio::spawn(pump(sr, cw, m, c, born));
                    let _ = tokio::join!(a, b);
                });
            }
        });
        FaultProxy {
            addr,
            mode,
            cut,
            _rt: rt,
        }
    }

    /// Closes every open connection (new ones are accepted).
    pub fn drop_connections(&self) {
        self.cut.fetch_add(1, Ordering::SeqCst);
    }

    /// Holds every byte until [`FaultProxy::pass`].
    pub fn stall(&self) {
        self.mode.store(STALL, Ordering::SeqCst);
    }

    /// Lets bytes through at about 100 KB/s.
    pub fn drip(&self) {
        self.mode.store(DRIP, Ordering::SeqCst);
    }

    /// Cuts every connection and refuses new ones until [`FaultProxy::pass`]: for the
    /// client, the server is gone.
    pub fn offline(&self) {
        self.mode.store(OFFLINE, Ordering::SeqCst);
        self.cut.fetch_add(1, Ordering::SeqCst);
    }

    pub fn pass(&self) {
        self.mode.store(PASS, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU8>,
    cut: Arc<AtomicU64>,
    born: u64,
) {
    let mut buf = vec![0u8; 64 << 10];
    let alive = || cut.load(Ordering::SeqCst) == born;
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if !alive() { return; }
                continue;
            }
        };
        let mut at = 0;
        while at < n {
            if !alive() {
                return;
            }
            match mode.load(Ordering::SeqCst) {
                STALL => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                DRIP => {
                    let end = (at + 512).min(n);
                    if to.write_all(&buf[at..end]).await.is_err() {
                        return;
                    }
                    at = end;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ => {
                    if to.write_all(&buf[at..n]).await.is_err() {
                        return;
                    }
                    at = n;
                }
            }
        }
    }
}

//! Prometheus metrics of the running server, exposed by `shelf-server run --metrics ADDR`
//! (plain HTTP `GET /metrics`; bind it to loopback or an admin network: it is the admin
//! address). One registry for the process: every request is counted and timed by kind
//! and result in [`crate::handler::handle`] (whichever door it came through), connections
//! by the listeners, sign-in failures by the handler, chunks stored and deduplicated by
//! the chunk upload path, feed lag where events leave for devices, job durations by the
//! jobs; sizes (database, stored, packs) and devices online are read from the store at
//! each scrape, garbage bytes as of the last retention run or health check.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DoorLabel {
    pub door: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job: &'static str,
}

/// Every metric the server keeps.
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<KindLabel, Histogram>,
    pub connections: Family<DoorLabel, Gauge>,
    pub logins: Family<OutcomeLabel, Counter>,
    pub chunk_bytes_in: Counter,
    pub chunk_bytes_out: Counter,
    pub database_bytes: Gauge,
    pub stored_bytes: Gauge,
    pub chunks_stored: Counter,
    pub chunks_deduplicated: Counter,
    pub pack_files: Gauge,
    pub pack_bytes: Gauge,
    pub garbage_bytes: Gauge,
    pub devices_online: Gauge,
    pub feed_lag: Histogram,
    pub job_seconds: Family<JobLabel, Histogram>,
    /// Open connections of every door (the gauges' sum, for the health page).
    open: std::sync::atomic::AtomicI64,
    registry: Registry,
}

fn job_histogram() -> Histogram {
    // 1 ms … ~4.6 hours.
    Histogram::new(exponential_buckets(0.001, 2.0, 24))
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Metrics {
    fn new() -> Metrics {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<KindLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let connections = Family::<DoorLabel, Gauge>::default();
        let logins = Family::<OutcomeLabel, Counter>::default();
        let chunk_bytes_in = Counter::default();
        let chunk_bytes_out = Counter::default();
        let database_bytes = Gauge::default();
        let stored_bytes = Gauge::default();
        let chunks_stored = Counter::default();
        let chunks_deduplicated = Counter::default();
        let pack_files = Gauge::default();
        let pack_bytes = Gauge::default();
        let garbage_bytes = Gauge::default();
        let devices_online = Gauge::default();
        // 1 ms … ~33 s.
        let feed_lag = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let job_seconds =
            Family::<JobLabel, Histogram>::new_with_constructor(job_histogram as fn() -> Histogram);
        let mut registry = Registry::with_prefix("shelf");
        registry.register(
            "requests",
            "Requests handled, by kind and result (ok or the error code)",
            requests.clone(),
        );
        registry.register(
            "request_seconds",
            "Time to handle a request, by kind (durable changes include the flush)",
            latency.clone(),
        );
        registry.register(
            "connections",
            "Open connections, by door (protocol, web)",
            connections.clone(),
        );
        registry.register(
            "logins",
            "Sign-ins by outcome (ok, failed, locked)",
            logins.clone(),
        );
        registry.register(
            "chunk_bytes_received",
            "Chunk bytes uploaded to the server",
            chunk_bytes_in.clone(),
        );
        registry.register(
            "chunk_bytes_sent",
            "Chunk bytes downloaded from the server",
            chunk_bytes_out.clone(),
        );
        registry.register(
            "database_bytes",
            "Size of the metadata database on disk",
            database_bytes.clone(),
        );
        registry.register(
            "stored_bytes",
            "Bytes of chunk bodies stored, all accounts (after deduplication)",
            stored_bytes.clone(),
        );
        registry.register(
            "chunks_stored",
            "Chunks uploaded that were new to their account",
            chunks_stored.clone(),
        );
        registry.register(
            "chunks_deduplicated",
            "Chunks uploaded that their account already had (not written again)",
            chunks_deduplicated.clone(),
        );
        registry.register("pack_files", "Pack files on disk", pack_files.clone());
        registry.register(
            "pack_bytes",
            "Bytes of the pack files on disk",
            pack_bytes.clone(),
        );
        registry.register(
            "garbage_bytes",
            "Bytes in packs no chunk uses (as of the last retention run or health check)",
            garbage_bytes.clone(),
        );
        registry.register(
            "devices_online",
            "Change feeds held open (mounts online, pages with live events)",
            devices_online.clone(),
        );
        registry.register(
            "feed_lag_seconds",
            "Time from a change being recorded to its event leaving for a device",
            feed_lag.clone(),
        );
        registry.register(
            "job_seconds",
            "Duration of periodic jobs (prune: retention and garbage collection; scrub)",
            job_seconds.clone(),
        );
        Metrics {
            requests,
            latency,
            connections,
            logins,
            chunk_bytes_in,
            chunk_bytes_out,
            database_bytes,
            stored_bytes,
            chunks_stored,
            chunks_deduplicated,
            pack_files,
            pack_bytes,
            garbage_bytes,
            devices_online,
            feed_lag,
            job_seconds,
            open: Default::default(),
            registry,
        }
    }

    /// Counts and times one handled request.
    pub fn request(&self, kind: &'static str, result: &'static str, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels { kind, result })
            .inc();
        self.latency
            .get_or_create(&KindLabel { kind })
            .observe(took.as_secs_f64());
    }

    /// Times a run of a periodic job.
    pub fn job_ran(&self, job: crate::store::health::Job, took: Duration) {
        let job = match job {
            crate::store::health::Job::Prune => "prune",
            crate::store::health::Job::Scrub => "scrub",
        };
        self.job_seconds
            .get_or_create(&JobLabel { job })
            .observe(took.as_secs_f64());
    }

    /// How long an event waited between being recorded (`at`) and leaving now.
    pub fn event_sent(&self, at: shelf_protocol::Timestamp) {
        let now = shelf_protocol::Timestamp::now();
        let lag = (now.secs - at.secs) as f64 + (f64::from(now.nanos) - f64::from(at.nanos)) / 1e9;
        self.feed_lag.observe(lag.max(0.0));
    }

    /// Open connections, every door.
    pub fn open_connections(&self) -> u64 {
        self.open.load(std::sync::atomic::Ordering::Relaxed).max(0) as u64
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Counts an open connection of `door` until dropped.
pub struct Connected(&'static str);

impl Connected {
    pub fn new(door: &'static str) -> Connected {
        global()
            .connections
            .get_or_create(&DoorLabel { door })
            .inc();
        global()
            .open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Connected(door)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        global()
            .connections
            .get_or_create(&DoorLabel { door: self.0 })
            .dec();
        global()
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` turns true; sizes are read from
/// `store` at each scrape.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: std::sync::Arc<crate::store::Store>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let store = store.clone();
            async move {
                let m = global();
                let sizes = tokio::task::spawn_blocking(move || {
                    let disk = store.chunks.disk().unwrap_or_default();
                    (store.sizes(), disk, store.subscribers.online())
                })
                .await;
                if let Ok(((db, stored), disk, online)) = sizes {
                    let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                    m.database_bytes.set(g(db));
                    m.stored_bytes.set(g(stored));
                    m.pack_files.set(g(disk.files));
                    m.pack_bytes.set(g(disk.bytes));
                    m.devices_online.set(g(online as u64));
                }
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await
}

//! Prometheus metrics of the running server, exposed by `shelf-server run --metrics ADDR`
//! (plain HTTP `GET /metrics`; bind it to loopback or an admin network: it is the admin
//! address). One registry for the process: every request is counted and timed by kind
//! and result in [`crate::handler::handle`] (whichever door it came through), connections
//! by the listeners, sign-in failures by the handler; sizes (database, packs, garbage) are
//! read from the store at each scrape.

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
    registry: Registry,
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
        Metrics {
            requests,
            latency,
            connections,
            logins,
            chunk_bytes_in,
            chunk_bytes_out,
            database_bytes,
            stored_bytes,
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
        Connected(door)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        global()
            .connections
            .get_or_create(&DoorLabel { door: self.0 })
            .dec();
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
                let sizes = tokio::task::spawn_blocking(move || store.sizes()).await;
                if let Ok((db, stored)) = sizes {
                    m.database_bytes.set(i64::try_from(db).unwrap_or(i64::MAX));
                    m.stored_bytes
                        .set(i64::try_from(stored).unwrap_or(i64::MAX));
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

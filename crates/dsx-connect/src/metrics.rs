//! Prometheus metrics (`GET /metrics`, text exposition format).

use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::error::ApiError;
use crate::state::SharedState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/…/connectors/unregister/{connector_uuid}`), never the raw path.
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    pub verdict: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub auth_failures: Family<CodeLabel, Counter>,
    pub break_glass_uses: Counter,
    pub registrations: Counter,
    pub credentials_minted: Counter,
    pub rate_limited: Counter,
    pub scans: Family<VerdictLabel, Counter>,
    pub scanner_seconds: Histogram,
    pub remediation_failures: Counter,
    /// Syslog events dropped because the delivery queue was full.
    pub syslog_dropped: Counter,
    queue_depth: Gauge,
    dead_letters: Gauge,
    store_file_bytes: Gauge,
    store_used_bytes: Gauge,
    store_round_trips: Gauge,
    inflight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dsxconnect");
        let m = Self {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            auth_failures: Family::default(),
            break_glass_uses: Counter::default(),
            registrations: Counter::default(),
            credentials_minted: Counter::default(),
            rate_limited: Counter::default(),
            scans: Family::default(),
            // 1 ms … ~33 s
            scanner_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            remediation_failures: Counter::default(),
            syslog_dropped: Counter::default(),
            queue_depth: Gauge::default(),
            dead_letters: Gauge::default(),
            store_file_bytes: Gauge::default(),
            store_round_trips: Gauge::default(),
            store_used_bytes: Gauge::default(),
            inflight: Gauge::default(),
        };
        registry.register("http_requests", "HTTP requests by route, method and status", m.requests.clone());
        registry.register(
            "auth_failures",
            "DSX-HMAC verification failures by code (replays included)",
            m.auth_failures.clone(),
        );
        registry.register(
            "break_glass_uses",
            "Enrollment tokens accepted in place of DSX-HMAC",
            m.break_glass_uses.clone(),
        );
        registry.register("registrations", "Successful registrations and refreshes", m.registrations.clone());
        registry.register("credentials_minted", "HMAC credentials issued", m.credentials_minted.clone());
        registry.register(
            "registrations_rate_limited",
            "Registrations refused by the rate limit",
            m.rate_limited.clone(),
        );
        registry.register("scans", "Stored scan results by verdict", m.scans.clone());
        registry.register("scanner_duration_seconds", "Time the scanner took per file", m.scanner_seconds.clone());
        registry.register(
            "remediation_failures",
            "Malicious items whose item action finally failed (dead-lettered, left in place)",
            m.remediation_failures.clone(),
        );
        registry.register(
            "syslog_dropped",
            "Syslog events dropped because the delivery queue was full (the syslog server is slow or away)",
            m.syslog_dropped.clone(),
        );
        registry.register("queue_depth", "Scan tasks waiting or in progress", m.queue_depth.clone());
        registry.register("dead_letters", "Scan tasks in the dead-letter queue", m.dead_letters.clone());
        registry.register(
            "store_file_bytes",
            "Size of the embedded store's file (0 on Redis)",
            m.store_file_bytes.clone(),
        );
        registry.register(
            "store_round_trips",
            "Requests this process sent to a networked store (Redis); a pipeline or script counts once",
            m.store_round_trips.clone(),
        );
        registry.register(
            "store_used_bytes",
            "Bytes of the embedded store's file that hold data; the rest is free pages, given back by compaction when idle",
            m.store_used_bytes.clone(),
        );
        registry.register("scans_in_flight", "Scan slots held across all workers", m.inflight.clone());
        *m.registry.lock().expect("registry lock") = registry;
        m
    }
}

impl Metrics {
    pub fn auth_failure(&self, code: &str) {
        self.auth_failures.get_or_create(&CodeLabel { code: code.to_owned() }).inc();
    }

    pub fn scanned(&self, verdict: &str) {
        self.scans.get_or_create(&VerdictLabel { verdict: verdict.to_owned() }).inc();
    }
}

/// Counts every request by its route template and status.
pub async fn track(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    let labels = RequestLabels { route, method, status: resp.status().as_u16() };
    state.metrics.requests.get_or_create(&labels).inc();
    resp
}

/// `GET /metrics` (operator when auth is on). Store-backed gauges are read at scrape time.
pub async fn render(State(state): State<SharedState>) -> Result<Response, ApiError> {
    let m = &state.metrics;
    m.queue_depth.set(state.store.scan_queue_len().await? as i64);
    m.dead_letters.set(state.store.dead_letter_count().await? as i64);
    m.inflight.set(state.store.slots_in_use().await? as i64);
    if let Some(usage) = state.store.disk_usage().await? {
        m.store_file_bytes.set(usage.file_bytes as i64);
        m.store_used_bytes.set(usage.used_bytes as i64);
    }
    if let Some(n) = state.store.round_trips() {
        m.store_round_trips.set(n as i64);
    }
    let mut body = String::new();
    encode(&mut body, &m.registry.lock().expect("registry lock"))
        .map_err(|_| ApiError::Internal("metrics_encoding"))?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response())
}

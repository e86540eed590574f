//! Router assembly and server start-up.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::Router;
use dsx_model::API_PREFIX;
use dsx_store::{EmbeddedStore, Namespace, RedisStore, SecretCodec, Store};
use secrecy::ExposeSecret;
use tower_http::trace::TraceLayer;

use crate::config::{ScannerKind, Settings, StoreSettings};
use crate::connector_client::ConnectorClient;
use crate::routes::system;
use crate::state::{AppState, SharedState};
use crate::tokens::LiveTokens;

/// How often token files are re-read (SIGHUP re-reads at once).
const TOKEN_RELOAD_EVERY: Duration = Duration::from_secs(5);

fn api(path: &str) -> String {
    format!("{API_PREFIX}/{path}")
}

pub fn router(state: SharedState) -> Router {
    // Every route, with its access layer, comes from the table in `api.rs`.
    crate::api::router(&state)
        .fallback(|| async { crate::error::ApiError::RouteNotFound })
        // One body limit: the guard reads connector bodies up to DSXCONNECT_MAX_BODY_BYTES and
        // answers 413 body_too_large beyond it; extractors must not cut in earlier (axum's
        // default is 2 MB, with a plain-text 413).
        .layer(axum::extract::DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(from_fn_with_state(state.clone(), crate::metrics::track))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Open the configured store.
pub fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let codec = match &settings.auth.secret_key {
        Some(key) => SecretCodec::from_key_text(key.expose_secret())?,
        None => SecretCodec::plain(),
    };
    let _ = crate::config::STORE_LOCATION.set(settings.store.location());
    Ok(match &settings.store {
        StoreSettings::Redis { url } => Arc::new(
            RedisStore::new(url, Namespace { env: settings.app_env.clone() }, codec)
                .with_context(|| format!("DSXCONNECT_REDIS_URL {}", settings.store.location()))?
                .with_job_retention(settings.job_retention),
        ),
        StoreSettings::Embedded { data_dir } => {
            let path = data_dir.join("dsx-connect.redb");
            Arc::new(
                EmbeddedStore::open(&path, codec)
                    .with_context(|| format!("embedded store at {}", path.display()))?
                    .with_job_retention(settings.job_retention),
            )
        }
    })
}

/// Build the shared state: validate settings, load tokens, open the store.
pub fn build_state(settings: Settings) -> anyhow::Result<SharedState> {
    build_state_for(settings, Role::All)
}

/// [`build_state`] for one role. A worker never checks an enrollment token, so it starts
/// without one; a process that serves the API refuses to (H2).
pub fn build_state_for(settings: Settings, role: Role) -> anyhow::Result<SharedState> {
    if role != Role::Worker {
        settings.validate()?;
    }
    let enrollment = LiveTokens::new("enrollment", settings.auth.enrollment.clone()).map_err(anyhow::Error::msg)?;
    let operators = LiveTokens::new("operator", settings.auth.operator.clone()).map_err(anyhow::Error::msg)?;
    if settings.auth.enabled && operators.is_empty() && role != Role::Worker {
        tracing::warn!("auth is enabled but no operator token is set (DSXCONNECT_AUTH__ADMIN_TOKENS): the operator API will refuse every call");
    }
    if settings.auth.break_glass {
        tracing::warn!("DSXCONNECT_AUTH__BREAK_GLASS is on: enrollment tokens are accepted in place of DSX-HMAC");
    }
    let store = open_store(&settings)?;
    let connectors = ConnectorClient::with_tls(
        Arc::clone(&store),
        settings.auth.enabled,
        settings.connector_urls.clone(),
        &settings.connectors_tls,
    )
    .map_err(|reason| anyhow::anyhow!("DSXCONNECT_CONNECTORS__CA_BUNDLE/TLS_CLIENT_*: {reason}"))?;
    if !settings.connectors_tls.verify {
        tracing::warn!("DSXCONNECT_CONNECTORS__VERIFY_TLS=false: connector certificates are not checked; anyone on the path can read file bytes and impersonate connectors");
    }
    if settings.syslog.as_ref().is_some_and(|s| s.transport == crate::syslog::Transport::Tls && !s.tls.verify) {
        tracing::warn!("DSXCONNECT_SYSLOG__TLS_INSECURE=true: the syslog server's certificate is not checked");
    }
    let server_tls = match &settings.tls {
        Some(files) => Some(
            dsx_service::ServerTls::load(files)
                .map_err(|reason| anyhow::anyhow!("DSXCONNECT_TLS_CERTFILE/KEYFILE/CLIENT_CA: {reason}"))?,
        ),
        None => None,
    };
    let scanner = build_scanner(&settings)?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let syslog = settings
        .syslog
        .clone()
        .map(|s| Arc::new(crate::syslog::Syslog::new(s).counting_drops(metrics.syslog_dropped.clone())));
    let breaker_threshold = settings.workers.breaker_threshold;
    Ok(Arc::new(AppState {
        settings,
        intake: dsx_store::GroupCommit::new(store.clone()),
        store,
        enrollment,
        operators,
        connectors,
        scanner,
        syslog,
        breaker: Arc::new(crate::worker::Breaker::new(breaker_threshold)),
        metrics,
        keys: Default::default(),
        server_tls,
    }))
}

/// Which parts of dsx-connect this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Api,
    Worker,
    All,
}

/// The scanner the workers use, from `DSXCONNECT_SCANNER__*`.
pub fn build_scanner(settings: &Settings) -> anyhow::Result<Arc<dyn dsx_scanner::Scanner>> {
    let s = &settings.scanner;
    Ok(match s.kind {
        ScannerKind::Builtin => {
            let engine = match &s.blocklist_file {
                Some(path) => dsx_scanner::BuiltinScanner::with_blocklist_file(path)?,
                None => dsx_scanner::BuiltinScanner::new(),
            };
            Arc::new(engine)
        }
        ScannerKind::Dsxa => {
            let config = dsx_scanner::DsxaConfig {
                auth_token: s.auth_token.as_ref().map(|t| t.expose_secret().to_owned()),
                timeout: s.timeout,
                verify_tls: s.verify_tls,
                ca_bundle: s.ca_bundle.clone(),
                ..dsx_scanner::DsxaConfig::new(s.base_url.clone().unwrap_or_default())
            };
            if !s.verify_tls {
                tracing::warn!("DSXCONNECT_SCANNER__VERIFY_TLS=false: the scanner's certificate is not checked");
            }
            Arc::new(dsx_scanner::DsxaClient::new(config)?)
        }
    })
}

/// A name for this worker in the consumer group: host and process id.
fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .unwrap_or_else(|| "dsx-connect".into());
    format!("{host}-{}", std::process::id())
}

/// Serve `role` until `shutdown` resolves. Workers run beside the API with `all`; a
/// `worker` process answers only health probes over HTTP.
pub async fn serve_role(
    state: SharedState,
    listener: tokio::net::TcpListener,
    role: Role,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Shutdown reaches the HTTP server and the workers; the workers drain (bounded by
    // DSXCONNECT_WORKERS__DRAIN_SECONDS) while the server finishes its requests.
    let drain_bound = state.settings.workers.drain + Duration::from_secs(5);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let stop_tx = Arc::new(stop_tx);
    let signal_tx = Arc::clone(&stop_tx);
    tokio::spawn(async move {
        shutdown.await;
        let _ = signal_tx.send(true);
    });
    let shutdown = async move {
        let _ = server_stop.wait_for(|stopping| *stopping).await;
    };
    let workers = if role == Role::Api {
        None
    } else {
        // The scanner built with the state serves every task of this process.
        let worker = Arc::new(crate::worker::Worker::from_state(&state, consumer_name()));
        Some(tokio::spawn(worker.run(stop_rx)))
    };
    let result = if role == Role::Worker {
        let health = Router::new()
            .route(&api("healthz"), get(system::healthz))
            .route(&api("readyz"), get(system::readyz))
            .with_state(Arc::clone(&state));
        tracing::info!(listen = %listener.local_addr()?, store = %state.settings.store.location(), "dsx-connect worker serving health probes");
        dsx_service::serve(listener, health, state.settings.server_limits, state.server_tls.clone(), shutdown)
            .await
            .map_err(anyhow::Error::from)
    } else {
        serve(state, listener, shutdown).await
    };
    if let Some(w) = workers {
        // The server may also have stopped on an error: make sure the workers stop too.
        let _ = stop_tx.send(true);
        if tokio::time::timeout(drain_bound, w).await.is_err() {
            tracing::warn!("scan workers did not stop in time");
        }
    }
    result
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    state: SharedState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    state.enrollment.spawn_reloader(TOKEN_RELOAD_EVERY);
    state.operators.spawn_reloader(TOKEN_RELOAD_EVERY);
    state.spawn_revocation_listener();
    tracing::info!(
        listen = %listener.local_addr()?,
        store = state.store.backend(),
        store_location = %state.settings.store.location(),
        auth = state.settings.auth.enabled,
        tls = state.server_tls.is_some(),
        mutual_tls = state.server_tls.as_ref().is_some_and(|t| t.verifies_clients()),
        enrollment_tokens = state.enrollment.len(),
        "dsx-connect {} serving", system::VERSION
    );
    let limits = state.settings.server_limits;
    let tls = state.server_tls.clone();
    dsx_service::serve(listener, router(state), limits, tls, shutdown).await?;
    Ok(())
}

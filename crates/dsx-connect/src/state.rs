//! Shared server state: settings, the store, live token sets, counters.

use std::sync::Arc;

use dsx_store::Store;

use crate::config::Settings;
use crate::connector_client::ConnectorClient;
use crate::tokens::LiveTokens;

pub type SharedState = Arc<AppState>;

pub struct AppState {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    /// Scan intake, committing concurrent requests together (docs/pipeline.md, "Intake").
    pub intake: dsx_store::GroupCommit,
    pub enrollment: Arc<LiveTokens>,
    pub operators: Arc<LiveTokens>,
    /// Signed calls to connectors (URL and key from the registry).
    pub connectors: ConnectorClient,
    /// The scanner the workers of this process use.
    pub scanner: Arc<dyn dsx_scanner::Scanner>,
    pub syslog: Option<Arc<crate::syslog::Syslog>>,
    /// The scanner circuit breaker of this process's workers (`readyz` reports it).
    pub breaker: Arc<crate::worker::Breaker>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Recently resolved DSX-HMAC keys (see `key_cache`).
    pub keys: crate::key_cache::KeyCache,
    /// The HTTPS listener's certificate (re-read while serving), when `DSXCONNECT_USE_TLS`.
    pub server_tls: Option<dsx_service::ServerTls>,
}

impl AppState {
    /// Drop a connector's keys from this replica's cache now, and tell the other replicas.
    pub async fn forget_keys_everywhere(&self, uuid: uuid::Uuid) {
        self.keys.forget_connector(uuid);
        if let Err(err) = self.store.publish(crate::routes::events::REVOCATIONS, &uuid.to_string()).await {
            // Their cache entries expire within a second anyway (key_cache).
            tracing::warn!(%uuid, error = %err, store = %self.settings.store.location(), "could not announce a revocation to other replicas");
        }
    }

    /// Follow revocations made on other replicas, so a revoked key stops working everywhere
    /// at once rather than when the cache entry expires.
    pub fn spawn_revocation_listener(self: &std::sync::Arc<Self>) {
        let state = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match state.store.subscribe(crate::routes::events::REVOCATIONS).await {
                    Ok(mut rx) => {
                        while let Some(message) = rx.recv().await {
                            if let Ok(uuid) = message.parse() {
                                state.keys.forget_connector(uuid);
                            }
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, store = %state.settings.store.location(), "cannot follow revocations yet; retrying")
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }
}

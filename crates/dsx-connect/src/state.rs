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
    pub enrollment: Arc<LiveTokens>,
    pub operators: Arc<LiveTokens>,
    /// Signed calls to connectors (URL and key from the registry).
    pub connectors: ConnectorClient,
    /// The scanner the workers of this process use.
    pub scanner: Arc<dyn dsx_scanner::Scanner>,
    pub syslog: Option<crate::syslog::Syslog>,
    pub metrics: crate::metrics::Metrics,
    /// Recently resolved DSX-HMAC keys (see `key_cache`).
    pub keys: crate::key_cache::KeyCache,
}

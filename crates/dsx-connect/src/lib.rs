//! dsx-connect server: the HTTP API that registers connectors, authenticates every
//! connector ↔ dsx-connect call with DSX-HMAC, and (with its workers) scans their files.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connector_client;
pub mod error;
pub mod metrics;
pub mod quickstart;
pub mod routes;
pub mod state;
pub mod syslog;
pub mod tokens;
pub mod worker;

pub use app::{build_state, router, serve};
pub use config::Settings;

/// Change a JSON document in place (results are kept as JSON text).
pub(crate) fn patch_json(json: &str, f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap_or(serde_json::Value::Null);
    f(&mut v);
    v.to_string()
}

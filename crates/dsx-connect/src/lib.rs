//! dsx-connect server: the HTTP API that registers connectors, authenticates every
//! connector ↔ dsx-connect call with DSX-HMAC, and (with its workers) scans their files.
//! The `dsx-connect` binary is the dsx-connect-cli package; this library uses no connector.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod connector_client;
pub mod error;
pub mod key_cache;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod syslog;
pub mod tokens;
pub mod ui;
pub mod url_policy;
pub mod worker;

pub use app::{build_state, router, serve};
pub use config::Settings;

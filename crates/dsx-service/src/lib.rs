//! Process plumbing shared by every binary of the project.

#![forbid(unsafe_code)]

pub mod http;
pub mod routes;
pub mod tls;

pub use http::{serve, ServerLimits};
pub use tls::{error_chain, http_client, ClientTls, ServerTls};

/// Logging to stderr: filter from `<PREFIX>_LOG_LEVEL` (else `RUST_LOG`, else `info`), JSON
/// lines when `<PREFIX>_LOG_FORMAT=json`.
pub fn init_logging(prefix: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env(format!("{prefix}_LOG_LEVEL"))
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var(format!("{prefix}_LOG_FORMAT")).is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // A log line that cannot be written (stderr redirected to a full disk) is dropped; by
    // default the subscriber would report that with `eprintln!`, which panics on the same
    // failure and takes down whatever thread was logging.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends before it kills a pod).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

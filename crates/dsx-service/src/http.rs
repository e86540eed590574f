//! The one HTTP server loop every binary uses (dsx-connect, its built-in scanner, every
//! connector), with the limits axum's plain `serve` lacks: a deadline for each request head
//! (slowloris; also closes keep-alive connections that sit idle), a cap on open connections,
//! TCP_NODELAY, and a bounded graceful shutdown. With a [`ServerTls`] it serves HTTPS: the
//! handshake holds a connection slot and must finish within the header-read deadline, so
//! the slowloris limits hold for TLS too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::connect_info::ConnectInfo;
use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::tls::{ServerTls, VerifiedClientCert};

/// Names of the variables that set [`ServerLimits`] for one binary, so each reads its own
/// prefix and the configuration reference can list them.
#[derive(Clone, Copy, Debug)]
pub struct LimitVars {
    pub header_read_timeout: &'static str,
    pub max_connections: &'static str,
    pub shutdown_grace: &'static str,
}

/// dsx-connect (API, worker health port) and `scanner serve`.
pub const DSXCONNECT_LIMITS: LimitVars = LimitVars {
    header_read_timeout: "DSXCONNECT_SERVER__HEADER_READ_TIMEOUT_SECONDS",
    max_connections: "DSXCONNECT_SERVER__MAX_CONNECTIONS",
    shutdown_grace: "DSXCONNECT_SERVER__SHUTDOWN_GRACE_SECONDS",
};

/// Every connector.
pub const DSXCONNECTOR_LIMITS: LimitVars = LimitVars {
    header_read_timeout: "DSXCONNECTOR_SERVER__HEADER_READ_TIMEOUT_SECONDS",
    max_connections: "DSXCONNECTOR_SERVER__MAX_CONNECTIONS",
    shutdown_grace: "DSXCONNECTOR_SERVER__SHUTDOWN_GRACE_SECONDS",
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// A connection must deliver each complete request head within this time, counted from
    /// when the server starts waiting for it: a new connection's first request, or the next
    /// request on a keep-alive connection (so idle connections are closed after it too).
    pub header_read_timeout: Duration,
    /// Open connections at most; further ones wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// On shutdown, how long requests in flight may take before their connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl ServerLimits {
    /// Read from the environment; an unparsable value is an error naming the variable.
    pub fn from_env(vars: LimitVars) -> Result<Self, String> {
        Self::from_lookup(vars, |k| std::env::var(k).ok())
    }

    pub fn from_lookup(vars: LimitVars, get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let default = Self::default();
        let num = |name: &str, fallback: u64| -> Result<u64, String> {
            let raw = get(name);
            match dsx_util::env::parse_num(name, raw.as_deref(), fallback) {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "{name}: expected a positive whole number, got {:?}",
                    dsx_util::env::non_blank(raw.as_deref()).unwrap_or_default()
                )),
            }
        };
        Ok(Self {
            header_read_timeout: Duration::from_secs(num(
                vars.header_read_timeout,
                default.header_read_timeout.as_secs(),
            )?),
            max_connections: num(vars.max_connections, default.max_connections as u64)? as usize,
            shutdown_grace: Duration::from_secs(num(vars.shutdown_grace, default.shutdown_grace.as_secs())?),
        })
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then drain for at most
/// `limits.shutdown_grace`. Handlers can read the peer address with `ConnectInfo<SocketAddr>`,
/// and over mutual TLS a [`VerifiedClientCert`] extension. With `tls` the certificate files
/// are re-read while serving.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    tls: Option<ServerTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let reloader = tls.as_ref().map(ServerTls::spawn_reloader);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let warned_at = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // Take a connection slot before accepting: at the cap, new connections queue in the
        // kernel's backlog instead of holding a file descriptor each.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = acquire(&slots, limits.max_connections, &warned_at, started) => permit,
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
        let app = app.clone();
        let service = move |client_cert: bool| {
            TowerToHyperService::new(app.clone().map_request(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                if client_cert {
                    req.extensions_mut().insert(VerifiedClientCert);
                }
                req
            }))
        };
        let Some(tls) = &tls else {
            let conn = graceful.watch(builder.serve_connection(TokioIo::new(tcp), service(false)));
            tokio::spawn(async move {
                if let Err(err) = conn.await {
                    tracing::debug!(%peer, error = %err, "connection closed with an error");
                }
                drop(permit);
            });
            continue;
        };
        let acceptor = tls.acceptor.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            // The handshake runs in the connection's task, holding its slot, under a deadline.
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let client_cert = stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
            let conn = watcher.watch(builder.serve_connection(TokioIo::new(stream), service(client_cert)));
            if let Err(err) = conn.await {
                tracing::debug!(%peer, error = %err, "connection closed with an error");
            }
            drop(permit);
        });
    }
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(open, grace = ?limits.shutdown_grace, "no longer accepting; draining connections");
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace = ?limits.shutdown_grace, "connections still open after the shutdown grace; dropping them");
    }
    Ok(())
}

async fn acquire(
    slots: &Arc<Semaphore>,
    max: usize,
    warned_at: &AtomicU64,
    started: Instant,
) -> tokio::sync::OwnedSemaphorePermit {
    if let Ok(permit) = Arc::clone(slots).try_acquire_owned() {
        return permit;
    }
    // One line per 10 s at most: the cap is hit exactly when logs would flood.
    let now = started.elapsed().as_secs() + 10;
    let last = warned_at.load(Ordering::Relaxed);
    if now >= last + 10 && warned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        tracing::warn!(max_connections = max, "connection limit reached; new connections wait until one closes");
    }
    Arc::clone(slots).acquire_owned().await.expect("semaphore never closed")
}

/// Peer address type handlers extract (re-exported for binaries' convenience).
pub type Peer = ConnectInfo<SocketAddr>;

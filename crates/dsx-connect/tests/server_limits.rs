//! Slowloris and shutdown against the real binaries: dsx-connect, its built-in scanner server
//! and the filesystem connector all close slow or idle connections, cap open connections with
//! a log line, and stop within the shutdown grace even with connections open.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use dsx_testkit::{free_port, workspace_bin, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn limits_env(prefix: &str, header: u64, max: usize) -> Vec<(&'static str, String)> {
    let (h, m, g): (&'static str, &'static str, &'static str) = if prefix == "DSXCONNECTOR" {
        (
            "DSXCONNECTOR_SERVER__HEADER_READ_TIMEOUT_SECONDS",
            "DSXCONNECTOR_SERVER__MAX_CONNECTIONS",
            "DSXCONNECTOR_SERVER__SHUTDOWN_GRACE_SECONDS",
        )
    } else {
        (
            "DSXCONNECT_SERVER__HEADER_READ_TIMEOUT_SECONDS",
            "DSXCONNECT_SERVER__MAX_CONNECTIONS",
            "DSXCONNECT_SERVER__SHUTDOWN_GRACE_SECONDS",
        )
    };
    vec![(h, header.to_string()), (m, max.to_string()), (g, "2".into())]
}

/// Open `n` connections that send half a request head and then nothing.
async fn half_open(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        if let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
            conns.push(s);
        }
    }
    conns
}

/// Every connection has been closed by the server within `limit`.
async fn all_closed(conns: Vec<TcpStream>, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut open = 0;
    for mut s in conns {
        let mut buf = [0u8; 256];
        let closed = loop {
            match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(_)) => continue,
                Err(_) => break false,
            }
        };
        if !closed {
            open += 1;
        }
    }
    open
}

async fn healthy(addr: SocketAddr, path: &str, limit: Duration) -> bool {
    let client = reqwest::Client::builder().timeout(limit).build().unwrap();
    client.get(format!("http://{addr}{path}")).send().await.is_ok_and(|r| r.status().is_success())
}

fn addr(svc: &Service) -> SocketAddr {
    svc.base_url().trim_start_matches("http://").parse().unwrap()
}

#[tokio::test]
async fn dsx_connect_closes_slow_connections_caps_them_and_stops_in_time() {
    let mut server = Server::start(Backend::Embedded, &limits_env("DSXCONNECT", 1, 64));
    let at = addr(&server.svc);
    let conns = half_open(at, 300).await;
    assert!(conns.len() >= 64, "opened {}", conns.len());
    // The service answers once the slow connections are cut off, and all of them are.
    assert!(healthy(at, &format!("{PREFIX}/healthz"), Duration::from_secs(8)).await, "server unusable");
    assert_eq!(all_closed(conns, Duration::from_secs(8)).await, 0, "slow connections left open");
    assert!(server.logs().contains("connection limit reached"), "the cap is logged");
    // SIGTERM with idle connections open: stops within the 2 s grace.
    let _idle = half_open(at, 20).await;
    let started = Instant::now();
    server.svc.signal("TERM");
    let code = server.svc.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", server.logs());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_built_in_scanner_server_closes_slow_connections() {
    let port = free_port();
    let mut svc = Service::spawn(
        workspace_bin("dsx-connect").to_str().unwrap(),
        &["scanner", "serve", "--listen", &format!("127.0.0.1:{port}")],
        &limits_env("DSXCONNECT", 1, 16),
        port,
    );
    svc.wait_http("/healthz", 200, Duration::from_secs(20));
    let conns = half_open(addr(&svc), 40).await;
    assert!(healthy(addr(&svc), "/healthz", Duration::from_secs(8)).await);
    assert_eq!(all_closed(conns, Duration::from_secs(8)).await, 0);
    assert!(svc.logs().contains("connection limit reached"));
}

#[tokio::test]
async fn the_filesystem_connector_closes_slow_connections() {
    let asset = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut env = limits_env("DSXCONNECTOR", 1, 16);
    env.extend([
        ("DSXCONNECTOR_ASSET", asset.path().display().to_string()),
        ("DSXCONNECTOR_DATA_DIR", data.path().display().to_string()),
        ("DSXCONNECTOR_DSX_CONNECT_URL", "http://127.0.0.1:9".to_owned()),
        ("DSXCONNECTOR_CONNECTOR_URL", format!("http://127.0.0.1:{port}")),
    ]);
    let bin = workspace_bin("filesystem-connector");
    let mut svc = Service::spawn(bin.to_str().unwrap(), &["--listen", &format!("127.0.0.1:{port}")], &env, port);
    svc.wait_http("/filesystem-connector/healthz", 200, Duration::from_secs(20));
    let conns = half_open(addr(&svc), 40).await;
    assert!(healthy(addr(&svc), "/filesystem-connector/healthz", Duration::from_secs(8)).await);
    assert_eq!(all_closed(conns, Duration::from_secs(8)).await, 0);
    assert!(svc.logs().contains("connection limit reached"));
}

#[tokio::test]
async fn the_connector_answers_503_until_enrolled_and_refuses_two_authorization_headers() {
    let server = Server::start(Backend::Embedded, &[]);
    let asset = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut env = vec![
        ("DSXCONNECTOR_ASSET", asset.path().display().to_string()),
        ("DSXCONNECTOR_DATA_DIR", data.path().display().to_string()),
        ("DSXCONNECTOR_DSX_CONNECT_URL", "http://127.0.0.1:9".to_owned()),
        ("DSXCONNECTOR_CONNECTOR_URL", format!("http://127.0.0.1:{port}")),
        ("DSXCONNECTOR_AUTH__ENABLED", "true".to_owned()),
        ("DSXCONNECT_ENROLLMENT_TOKEN", ENROLL.to_owned()),
    ];
    let bin = workspace_bin("filesystem-connector");
    // Without a key (dsx-connect unreachable): 503 with Retry-After, so callers come back.
    let mut svc = Service::spawn(bin.to_str().unwrap(), &["--listen", &format!("127.0.0.1:{port}")], &env, port);
    svc.wait_http("/filesystem-connector/healthz", 200, Duration::from_secs(20));
    let url = format!("{}/filesystem-connector/config", svc.base_url());
    let resp = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(detail(resp, reqwest::StatusCode::SERVICE_UNAVAILABLE).await, "not_enrolled");
    svc.kill();
    // Enrolled with a real dsx-connect: two Authorization headers are malformed.
    env.retain(|(k, _)| *k != "DSXCONNECTOR_DSX_CONNECT_URL");
    env.push(("DSXCONNECTOR_DSX_CONNECT_URL", server.svc.base_url()));
    let mut svc = Service::spawn(bin.to_str().unwrap(), &["--listen", &format!("127.0.0.1:{port}")], &env, port);
    svc.wait_http("/filesystem-connector/readyz", 200, Duration::from_secs(20));
    let client = reqwest::Client::new();
    let resp = client
        .get(&url)
        .header("Authorization", "DSX-HMAC key_id=AAAAAAAAAAAAAAAA, ts=1, nonce=AAAAAAAAAAAAAAAA, sig=AAAA")
        .header("Authorization", "Bearer x")
        .send()
        .await
        .unwrap();
    assert_eq!(detail(resp, reqwest::StatusCode::UNAUTHORIZED).await, "malformed_hmac");
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(detail(resp, reqwest::StatusCode::UNAUTHORIZED).await, "missing_hmac");
}

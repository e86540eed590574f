//! The shared server loop against real TCP clients on loopback: slow heads and idle
//! keep-alive connections are closed, the connection cap holds, shutdown is bounded.

use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use dsx_service::ServerLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

struct Running {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(limits: ServerLimits) -> Running {
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "late"
            }),
        )
        .route("/peer", get(|peer: dsx_service::http::Peer| async move { peer.0.ip().to_string() }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let done = tokio::spawn(dsx_service::serve(listener, app, limits, None, async {
        let _ = rx.await;
    }));
    Running { addr, stop: Some(tx), done }
}

fn limits(header_secs: u64, max: usize, grace_secs: u64) -> ServerLimits {
    ServerLimits {
        header_read_timeout: Duration::from_secs(header_secs),
        max_connections: max,
        shutdown_grace: Duration::from_secs(grace_secs),
    }
}

/// Read until the server closes the connection; how long that took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue, // e.g. a 408 before the close
            Err(_) => return None,
        }
    }
}

async fn get_ok(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off() {
    let server = start(limits(1, 64, 5)).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap(); // never finishes the head
    let took = closed_within(&mut slow, Duration::from_secs(5)).await.expect("closed");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
    // A connection that sends nothing at all is closed too.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await.is_some());
    assert!(get_ok(server.addr, "/").await.ends_with("ok"));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = start(limits(1, 64, 5)).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Kept alive, then closed once idle past the head deadline.
    let took = closed_within(&mut conn, Duration::from_secs(5)).await.expect("idle connection closed");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn the_connection_cap_holds_and_frees() {
    let server = start(limits(2, 4, 5)).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A fifth client is not served while four connections are open...
    let started = Instant::now();
    let fifth = tokio::spawn(get_ok(server.addr, "/"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!fifth.is_finished(), "served beyond the cap");
    // ...and is served once the idle ones are cut off by the head deadline.
    let body = tokio::time::timeout(Duration::from_secs(5), fifth).await.expect("served").unwrap();
    assert!(body.ends_with("ok"));
    assert!(started.elapsed() >= Duration::from_millis(1500), "{:?}", started.elapsed());
    // Handlers see the peer address.
    assert!(get_ok(server.addr, "/peer").await.ends_with("127.0.0.1"));
}

#[tokio::test]
async fn shutdown_is_bounded_by_the_grace() {
    let mut server = start(limits(10, 64, 1)).await;
    let addr = server.addr;
    let _slow = tokio::spawn(async move { get_ok(addr, "/slow").await });
    let _idle = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), &mut server.done).await.expect("stopped").unwrap().unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Nothing is accepted any more.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[test]
fn limits_are_read_from_the_binary_s_variables() {
    let vars = dsx_service::http::DSXCONNECTOR_LIMITS;
    let got = ServerLimits::from_lookup(vars, |k| (k == vars.max_connections).then(|| "7".to_owned())).unwrap();
    assert_eq!(got, ServerLimits { max_connections: 7, ..ServerLimits::default() });
    let err = ServerLimits::from_lookup(vars, |k| (k == vars.header_read_timeout).then(|| "0".to_owned())).unwrap_err();
    assert!(err.contains("DSXCONNECTOR_SERVER__HEADER_READ_TIMEOUT_SECONDS"), "{err}");
}

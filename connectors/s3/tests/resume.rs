//! A read interrupted mid-body resumes with a Range request on the same version: a loopback
//! proxy in front of moto cuts the first connection after part of the object.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use dsx_connector::Repository;
use dsx_model::ScanRequest;
use dsx_testkit::Moto;
use s3_connector::{S3Repo, S3Settings};

/// Forwards connections to `upstream`; the first one is cut after `cut_after` response bytes.
/// Records every request head it saw.
struct CuttingProxy {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl CuttingProxy {
    fn start(upstream: u16, cut_after: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (Arc::clone(&connections), Arc::clone(&requests));
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let seen = Arc::clone(&seen);
                thread::spawn(move || relay(client, upstream, (n == 0).then_some(cut_after), seen));
            }
        });
        Self { port, connections, requests }
    }
}

fn relay(mut client: TcpStream, upstream: u16, cut_after: Option<usize>, seen: Arc<Mutex<Vec<String>>>) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
    let (mut client_r, mut server_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = client_r.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).to_lowercase());
            if server_w.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let mut sent = 0usize;
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = server.read(&mut buf) {
        if n == 0 {
            break;
        }
        let n = match cut_after {
            Some(limit) => n.min(limit.saturating_sub(sent)),
            None => n,
        };
        if n == 0 || client.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    // Drop both sides: the client sees the body end early.
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = server.shutdown(std::net::Shutdown::Both);
}

#[tokio::test]
async fn an_interrupted_read_resumes_with_a_range_request() {
    let moto = Moto::get();
    let direct = support::fixture_on(moto, false, "", &[]).await;
    let content: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    direct.put("big.bin", &content).await;
    let item = direct.listed("big.bin").await;

    let upstream: u16 = direct.moto.endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = CuttingProxy::start(upstream, 200_000);
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let settings = S3Settings::from_lookup(&direct.bucket, "dsxconnect-quarantine", |k| match k {
        "DSXCONNECTOR_S3_ENDPOINT_URL" => Some(endpoint.clone()),
        "AWS_REGION" => Some("us-east-1".into()),
        _ => None,
    })
    .unwrap();
    let repo = S3Repo::new(settings).await.unwrap();
    let mut req = ScanRequest::new("big.bin", format!("{}/big.bin", direct.bucket));
    req.item_version = item.version.clone();
    let (body, size) = repo.open(&req).await.unwrap();
    assert_eq!(size, Some(content.len() as u64));
    let read = axum::body::to_bytes(body, usize::MAX).await.expect("the read completes despite the cut");
    assert!(read.as_ref() == content.as_slice(), "the bytes are the object's, in order ({} read)", read.len());
    assert!(proxy.connections.load(Ordering::SeqCst) >= 2, "a second connection resumed the read");
    let requests = proxy.requests.lock().unwrap().join("\n");
    assert!(requests.contains("range: bytes="), "the resume asked for the rest with Range: {requests}");
    assert!(requests.contains("if-match:"), "and stayed pinned to the ETag");
}

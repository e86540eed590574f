//! Drives `DsxaClient` against real HTTP servers on loopback: the built-in engine's router, and small axum
//! handlers that emulate DSXA failure modes.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use dsx_scanner::{
    router, BuiltinScanner, ByteStream, DsxaClient, DsxaConfig, ScanError, ScanInput, Scanner, ThreatType, VerdictKind,
    EICAR,
};
use serde_json::json;
use sha2::{Digest, Sha256};

const TOKEN: &str = "test-token";

async fn start(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn start_builtin(engine: BuiltinScanner) -> String {
    start(router(Arc::new(engine), Some(TOKEN.into()))).await
}

fn client(base: &str, token: Option<&str>) -> DsxaClient {
    let mut cfg = DsxaConfig::new(base);
    cfg.auth_token = token.map(str::to_string);
    DsxaClient::new(cfg).unwrap()
}

fn stream(data: &[u8], chunk: usize) -> ByteStream {
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        data.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Box::pin(futures_util::stream::iter(chunks))
}

fn input(location: &str) -> ScanInput {
    ScanInput {
        location: location.into(),
        metainfo: "meta".into(),
        connector_name: "filesystem-connector".into(),
        task_id: "task-1".into(),
        size: None,
        protected_entity: None,
    }
}

/// Emulates DSXA failure modes under distinct path prefixes (each client gets its own base URL).
async fn start_fake_dsxa() -> String {
    let path = "/scan/binary/v2";
    let app = Router::new()
        .route(&format!("/s503{path}"), post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "overloaded") }))
        .route(&format!("/s400{path}"), post(|| async { (StatusCode::BAD_REQUEST, "bad metadata") }))
        .route(&format!("/s403{path}"), post(|| async { StatusCode::FORBIDDEN }))
        .route(
            &format!("/init{path}"),
            post(|| async {
                Json(json!({"scanGuid": "g", "verdict": "Not Scanned",
                            "details": {"verdictDetails": {"reason": "Scanner is initializing, retry later"}}}))
            }),
        )
        .route(
            &format!("/camel{path}"),
            post(|| async {
                Json(json!({"scanGuid": "g2", "verdict": "Malicious", "scanDurationInMicroseconds": 9,
                            "details": {"verdictDetails": {"reason": "sig", "threatType": "WORM"},
                                        "fileInfo": {"fileSizeInBytes": 5, "fileHash": "ab"}}}))
            }),
        )
        .route(&format!("/scanning{path}"), post(|| async { Json(json!({"verdict": "Scanning"})) }))
        .route(&format!("/garbage{path}"), post(|| async { "<html>not json</html>" }))
        .route(
            &format!("/slow{path}"),
            post(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Json(json!({"verdict": "Benign"}))
            }),
        );
    start(app).await
}

#[tokio::test]
async fn benign_file() {
    let base = start_builtin(BuiltinScanner::new()).await;
    let c = client(&base, Some(TOKEN));
    let data = b"hello, world\n".repeat(1000);
    let v = c.scan(&input("/data/a.txt"), stream(&data, 4096)).await.unwrap();
    assert_eq!(v.verdict, VerdictKind::Benign);
    assert!(!v.is_malicious());
    assert_eq!(v.file_info.file_size_in_bytes, Some(data.len() as u64));
    assert_eq!(v.file_info.file_hash, Some(hex::encode(Sha256::digest(&data))));
    assert!(!v.scan_guid.is_empty());
    assert!(v.scan_duration_in_microseconds.is_some());
    assert_eq!(c.kind(), "dsxa");
    c.check().await.unwrap();
}

#[tokio::test]
async fn eicar_is_malicious() {
    let base = start_builtin(BuiltinScanner::new()).await;
    let c = client(&format!("{base}/scan/binary/v2"), Some(TOKEN));
    let mut data = b"preamble ".to_vec();
    data.extend_from_slice(EICAR);
    let v = c.scan(&input("/data/eicar.com"), stream(&data, 7)).await.unwrap();
    assert!(v.is_malicious());
    assert_eq!(v.verdict_details.threat_type, Some(ThreatType::Virus));
    assert_eq!(v.verdict_details.reason.as_deref(), Some("EICAR test file"));
}

#[tokio::test]
async fn blocklisted_hash_is_malicious() {
    let data = b"not a virus, but on the list".to_vec();
    let engine = BuiltinScanner::with_blocklist([Sha256::digest(&data).into()]);
    let base = start_builtin(engine).await;
    let c = client(&base, Some(TOKEN));
    let v = c.scan(&input("/data/listed.bin"), stream(&data, 5)).await.unwrap();
    assert!(v.is_malicious());
    assert_eq!(v.verdict_details.reason.as_deref(), Some("SHA-256 blocklist"));
    let other = c.scan(&input("/data/other.bin"), stream(b"different", 5)).await.unwrap();
    assert_eq!(other.verdict, VerdictKind::Benign);
}

#[tokio::test]
async fn wrong_or_missing_token_is_auth_error() {
    let base = start_builtin(BuiltinScanner::new()).await;
    for token in [Some("wrong"), None] {
        let c = client(&base, token);
        let err = c.scan(&input("/x"), stream(b"abc", 2)).await.unwrap_err();
        assert!(matches!(err, ScanError::Auth(_)), "{err:?}");
        assert!(!err.is_retryable());
        assert_eq!(err.class(), "scanner_auth");
        assert!(matches!(c.check().await, Err(ScanError::Auth(_))));
    }
    // Without a configured token the router accepts anything.
    let open = start(router(Arc::new(BuiltinScanner::new()), None)).await;
    client(&open, None).scan(&input("/x"), stream(b"abc", 2)).await.unwrap();
    let fake = start_fake_dsxa().await;
    let err = client(&format!("{fake}/s403"), Some(TOKEN)).scan(&input("/x"), stream(b"a", 1)).await.unwrap_err();
    assert!(matches!(err, ScanError::Auth(_)), "{err:?}");
}

#[tokio::test]
async fn server_and_client_errors_are_classified() {
    let fake = start_fake_dsxa().await;
    let err = client(&format!("{fake}/s503"), Some(TOKEN)).scan(&input("/x"), stream(b"abc", 2)).await.unwrap_err();
    assert!(matches!(&err, ScanError::Server(503, m) if m == "overloaded"), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.class(), "scanner_server");

    let err = client(&format!("{fake}/s400"), Some(TOKEN)).scan(&input("/x"), stream(b"abc", 2)).await.unwrap_err();
    assert!(matches!(&err, ScanError::Client(400, m) if m == "bad metadata"), "{err:?}");
    assert!(!err.is_retryable());

    // Unknown route on a live server: 404 is a client error too.
    let err = client(&format!("{fake}/nowhere"), None).scan(&input("/x"), stream(b"a", 1)).await.unwrap_err();
    assert!(matches!(err, ScanError::Client(404, _)), "{err:?}");

    let err = client(&format!("{fake}/garbage"), None).scan(&input("/x"), stream(b"a", 1)).await.unwrap_err();
    assert!(matches!(err, ScanError::Protocol(_)), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn connection_refused_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = client(&format!("http://{addr}"), None);
    let err = c.scan(&input("/x"), stream(b"abc", 2)).await.unwrap_err();
    assert!(matches!(err, ScanError::Unreachable(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(matches!(c.check().await, Err(ScanError::Unreachable(_))));
}

#[tokio::test]
async fn slow_scanner_times_out() {
    let fake = start_fake_dsxa().await;
    let mut cfg = DsxaConfig::new(format!("{fake}/slow"));
    cfg.timeout = Duration::from_millis(300);
    let err = DsxaClient::new(cfg).unwrap().scan(&input("/x"), stream(b"abc", 2)).await.unwrap_err();
    assert!(matches!(err, ScanError::Timeout(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn initializing_scanner_is_retryable_error() {
    let fake = start_fake_dsxa().await;
    let c = client(&format!("{fake}/init"), None);
    let err = c.scan(&input("/x"), stream(b"abc", 2)).await.unwrap_err();
    assert!(matches!(&err, ScanError::Initializing(m) if m.contains("initializing")), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.class(), "scanner_initializing");
    assert!(matches!(c.check().await, Err(ScanError::Initializing(_))));

    // `Scanning` is a verdict, folded into Not Scanned.
    let v = client(&format!("{fake}/scanning"), None).scan(&input("/x"), stream(b"a", 1)).await.unwrap();
    assert_eq!(v.verdict, VerdictKind::NotScanned);
}

#[tokio::test]
async fn camel_case_response_is_normalized() {
    let fake = start_fake_dsxa().await;
    let v = client(&format!("{fake}/camel"), None).scan(&input("/x"), stream(b"abcde", 2)).await.unwrap();
    assert!(v.is_malicious());
    assert_eq!(v.scan_guid, "g2");
    assert_eq!(v.verdict_details.threat_type, Some(ThreatType::Worm));
    assert_eq!(v.file_info.file_size_in_bytes, Some(5));
    assert_eq!(v.scan_duration_in_microseconds, Some(9));
    let out = serde_json::to_value(&v).unwrap();
    assert_eq!(out["file_info"]["file_hash"], "ab");
}

#[tokio::test]
async fn non_ascii_location_is_percent_encoded_and_echoed() {
    let base = start_builtin(BuiltinScanner::new()).await;
    let c = client(&base, Some(TOKEN));
    let mut inp = input("/données/résumé 2024.pdf");
    inp.protected_entity = Some("3".into());
    let v = c.scan(&inp, stream(b"x", 1)).await.unwrap();
    assert_eq!(
        v.x_custom_metadata.as_deref(),
        Some(
            "file-loc:/donn%C3%A9es/r%C3%A9sum%C3%A9 2024.pdf,file-meta:meta,dsx-connect:filesystem-connector,\
             scan_request_task_id:task-1"
        )
    );
    assert_eq!(v.protected_entity, Some(3));
}

#[tokio::test]
async fn failing_source_stream_is_connector_read_error() {
    let base = start_builtin(BuiltinScanner::new()).await;
    let body: ByteStream = Box::pin(futures_util::stream::iter(vec![
        Ok(Bytes::from(vec![b'a'; 100_000])),
        Err(std::io::Error::other("connector hung up")),
    ]));
    let err = client(&base, Some(TOKEN)).scan(&input("/x"), body).await.unwrap_err();
    assert!(matches!(&err, ScanError::Body(m) if m.contains("connector hung up")), "{err:?}");
    assert_eq!(err.class(), "connector_read");
}

#[tokio::test]
async fn healthz() {
    let base = start_builtin(BuiltinScanner::new()).await;
    let resp = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap(), json!({"status": "ok"}));
}

const BIG_CHUNK: usize = 64 * 1024;
const BIG_CHUNKS: usize = 800; // 50 MiB

fn big_chunk(i: usize) -> Bytes {
    let seed = (i as u32).wrapping_mul(2_654_435_761);
    Bytes::from((0..BIG_CHUNK as u32).map(|j| (seed.wrapping_add(j.wrapping_mul(31)) >> 3) as u8).collect::<Vec<_>>())
}

#[cfg(target_os = "linux")]
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn fifty_mib_stream_is_not_buffered() {
    let mut expected = Sha256::new();
    for i in 0..BIG_CHUNKS {
        expected.update(big_chunk(i));
    }
    let expected = hex::encode(expected.finalize());

    let base = start_builtin(BuiltinScanner::new()).await;
    #[cfg(target_os = "linux")]
    let before = peak_rss_kib();
    // Chunks are generated lazily, so only the pipeline's in-flight buffers are ever resident.
    let body: ByteStream = Box::pin(futures_util::stream::iter((0..BIG_CHUNKS).map(|i| Ok(big_chunk(i)))));
    let v = client(&base, Some(TOKEN)).scan(&input("/big.bin"), body).await.unwrap();
    assert_eq!(v.verdict, VerdictKind::Benign);
    assert_eq!(v.file_info.file_size_in_bytes, Some((BIG_CHUNK * BIG_CHUNKS) as u64));
    assert_eq!(v.file_info.file_hash.as_deref(), Some(expected.as_str()));
    #[cfg(target_os = "linux")]
    {
        // Buffering the file anywhere in client or server would add >= 50 MiB to the peak.
        let grown_mib = (peak_rss_kib() - before) / 1024;
        assert!(grown_mib < 25, "peak RSS grew by {grown_mib} MiB while streaming 50 MiB");
    }
}

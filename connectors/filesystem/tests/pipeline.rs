//! The scan pipeline end to end: real dsx-connect (API + workers), real filesystem-connector,
//! the built-in scanner (in-process or served over the DSXA HTTP API), real redis-server or
//! the embedded store. Auth is on everywhere.

mod harness;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dsx_testkit::free_port;
use harness::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Collect `data:` payloads of an SSE stream until `want` events of `kind` arrived.
fn collect_sse(resp: reqwest::Response, kind: &'static str, want: usize) -> tokio::task::JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut body = resp.bytes_stream();
        let (mut buf, mut events) = (String::new(), Vec::new());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while events.len() < want {
            let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, body.next()).await else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                for line in frame.lines().filter_map(|l| l.strip_prefix("data:")) {
                    if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                        if v["type"] == kind {
                            events.push(v);
                        }
                    }
                }
            }
        }
        events
    })
}

async fn full_scan_quarantines_eicar(redis: bool) {
    let job_e2e = dsx_testkit::unique_name("job-e2e-");
    // A syslog receiver: every result is also sent there (RFC 5424 over UDP).
    let syslog = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let syslog_env = [
        ("DSXCONNECT_SYSLOG__ENABLED", "true".to_owned()),
        ("DSXCONNECT_SYSLOG__HOST", "127.0.0.1".to_owned()),
        ("DSXCONNECT_SYSLOG__PORT", syslog.local_addr().unwrap().port().to_string()),
    ];
    let p = Pipeline::start(redis, 12, 3, "all", &syslog_env).await;
    let sse = p.operator(Method::GET, "subscribe/scan-result").await;
    assert_eq!(sse.status(), StatusCode::OK);
    assert!(sse.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = collect_sse(sse, "scan_result", 15);
    p.full_scan(&job_e2e, "").await;
    let job = p.wait_job(&job_e2e, Duration::from_secs(60), |j| j["status"] == "completed").await;
    assert_eq!((job["enqueued_count"].as_u64(), job["processed_count"].as_u64()), (Some(15), Some(15)));
    assert_eq!(job["succeeded_count"].as_u64(), Some(15));

    let results = p.results(&job_e2e).await;
    assert_eq!(results.len(), 15);
    let benign: Vec<_> = results.iter().filter(|r| verdict(r) == "Benign").collect();
    let malicious: Vec<_> = results.iter().filter(|r| verdict(r) == "Malicious").collect();
    assert_eq!((benign.len(), malicious.len()), (12, 3));
    assert!(benign.iter().all(|r| r["status"] == "scanned"));
    for r in &malicious {
        assert_eq!(r["status"], "action succeeded", "{r}");
        let original = PathBuf::from(location(r));
        assert!(!original.exists(), "{} still in place", original.display());
        // Python 1.x layout: the path relative to the asset is kept under the quarantine.
        let quarantined = p.root().join("dsxconnect-quarantine").join(original.strip_prefix(p.root()).unwrap());
        assert_eq!(std::fs::read(&quarantined).unwrap(), EICAR);
    }
    let stats = p.json("scan/stats").await;
    assert!(stats["malicious_count"].as_u64().unwrap() >= 3);
    let metrics = p.http.get(format!("{}/metrics", p.server.base_url())).bearer_auth(OPERATOR).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("dsxconnect_scans_total{verdict=\"Malicious\"}") && l.ends_with(" 3")),
        "{metrics}"
    );
    assert!(metrics.lines().any(|l| l == "dsxconnect_scanner_duration_seconds_count 15"), "{metrics}");
    // Every result carries the registered connector, not anything a body claimed.
    assert!(results.iter().all(|r| r["scan_request"]["connector"]["uuid"] == p.uuid.as_str()));
    // The SSE stream delivered one event per file.
    let events = events.await.unwrap();
    assert_eq!(events.len(), 15);
    let mut tasks: Vec<_> =
        events.iter().map(|e| e["scan_result"]["scan_request_task_id"].as_str().unwrap().to_owned()).collect();
    tasks.sort();
    tasks.dedup();
    assert_eq!(tasks.len(), 15, "one event per task");
    let mut lines = Vec::new();
    let mut buf = vec![0u8; 65536];
    while lines.len() < 15 {
        let n =
            tokio::time::timeout(Duration::from_secs(10), syslog.recv(&mut buf)).await.expect("syslog line").unwrap();
        lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(lines.iter().filter(|l| l.starts_with("<132>1 ")).count(), 3, "malicious results at warning severity");
    assert!(lines.iter().all(|l| l.contains(" dsx-connect ") && l.contains(" scan_result - {")));
}

#[tokio::test]
async fn full_scan_on_redis_scans_everything_and_quarantines_eicar() {
    full_scan_quarantines_eicar(true).await;
}

#[tokio::test]
async fn full_scan_on_the_embedded_store_in_one_process() {
    full_scan_quarantines_eicar(false).await;
}

#[tokio::test]
async fn scanner_down_dead_letters_with_reason_and_requeue_finishes() {
    let job_down = dsx_testkit::unique_name("job-down-");
    let scanner_port = free_port();
    let spawn_scanner = || spawn_scanner(scanner_port);
    let mut scanner = spawn_scanner();
    let p = Pipeline::start(
        true,
        6,
        2,
        "all",
        &[
            ("DSXCONNECT_SCANNER__KIND", "dsxa".into()),
            ("DSXCONNECT_SCANNER__BASE_URL", format!("http://127.0.0.1:{scanner_port}")),
            ("DSXCONNECT_WORKERS__SCAN_REQUEST_MAX_RETRIES", "2".into()),
            // The scanner breaker would keep the tasks waiting for the scanner (reliability.rs
            // tests that); off here, to test the dead-letter path.
            ("DSXCONNECT_SCANNER__BREAKER_THRESHOLD", "0".into()),
        ],
    )
    .await;
    scanner.kill();
    p.full_scan(&job_down, "").await;
    // Each item retries twice, then lands in the dead-letter queue with the reason.
    let job = p.wait_job(&job_down, Duration::from_secs(60), |j| j["status"] == "completed").await;
    assert_eq!(job["failed_count"].as_u64(), Some(8));
    let dlq = p.json("admin/dead-letter/items/scan_request?start=0&end=100").await;
    let items = dlq["items"].as_array().unwrap();
    assert_eq!(items.len(), 8);
    assert!(
        items.iter().all(|i| i["reason"].as_str().unwrap().starts_with("scanner_unreachable") && i["retry_count"] == 2),
        "{dlq}"
    );

    // The scanner comes back; requeueing finishes every file.
    scanner = spawn_scanner();
    let resp = p.operator(Method::POST, "admin/dead-letter/requeue").await;
    assert_eq!(resp.json::<Value>().await.unwrap()["requeued"], 8);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let results = p.results(&job_down).await;
        let scanned = results.iter().filter(|r| r["status"] == "scanned" || r["status"] == "action succeeded").count();
        if scanned == 8 {
            break;
        }
        assert!(Instant::now() < deadline, "requeued items did not finish: {scanned}/8");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(p.json("admin/dead-letter/stats").await["scan_request"], 0);
    drop(scanner);
}

#[tokio::test]
async fn the_in_flight_cap_holds_across_worker_replicas() {
    let job_cap = dsx_testkit::unique_name("job-cap-");
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // A real HTTP scanner on loopback that answers slowly and records its peak concurrency.
    let current = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (c, pk) = (Arc::clone(&current), Arc::clone(&peak));
    let app = axum::Router::new().route(
        "/scan/binary/v2",
        axum::routing::post(move |_body: axum::body::Bytes| {
            let (c, pk) = (Arc::clone(&c), Arc::clone(&pk));
            async move {
                let now = c.fetch_add(1, Ordering::SeqCst) + 1;
                pk.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(150)).await;
                c.fetch_sub(1, Ordering::SeqCst);
                axum::Json(serde_json::json!({ "scan_guid": "g", "verdict": "Benign" }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scanner_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut p = Pipeline::start(
        true,
        12,
        0,
        "api",
        &[
            ("DSXCONNECT_SCANNER__KIND", "dsxa".into()),
            ("DSXCONNECT_SCANNER__BASE_URL", scanner_url),
            ("DSXCONNECT_SCANNER__MAX_INFLIGHT", "2".into()),
        ],
    )
    .await;
    // Two worker replicas, each allowed 2 locally: 4 without a shared cap.
    p.workers.push(spawn_server(&p.server_env, "worker"));
    p.workers.push(spawn_server(&p.server_env, "worker"));
    p.full_scan(&job_cap, "").await;
    p.wait_job(&job_cap, Duration::from_secs(60), |j| j["status"] == "completed").await;
    assert_eq!(peak.load(Ordering::SeqCst), 2, "the scanner saw at most (and at some point exactly) 2 scans at once");
}

#[tokio::test]
async fn a_connector_killed_mid_scan_and_restarted_loses_nothing() {
    const FILES: usize = 1500;
    const EICARS: usize = 10;
    let job = dsx_testkit::unique_name("job-restart-");
    // Retries as shipped, not the fast ones of the other pipeline tests: a connector that is
    // gone for 8 s must not use up an item's attempts.
    // Scans take 20 ms or more, 16 at a time: the job lasts 1.9 s or more, so the kill lands
    // mid-scan on any machine.
    let (_scanner, mut env) = paced_scanner(Duration::from_millis(20)).await;
    env.push(("DSXCONNECT_WORKERS__RETRY_BASE_MS", "2000".into()));
    let mut p = Pipeline::start(true, FILES - EICARS, EICARS, "all", &env).await;
    p.full_scan(&job, "").await;
    p.wait_job(&job, Duration::from_secs(60), |j| {
        j["enqueue_done"] == true && j["processed_count"].as_u64().unwrap_or(0) >= 50
    })
    .await;
    p.connector.signal("KILL");
    p.connector.wait_exit(Duration::from_secs(10));
    let at_kill = p.json(&format!("scan/jobs/{job}")).await["processed_count"].as_u64().unwrap();
    assert!(at_kill < FILES as u64, "the scan finished before the kill; make it bigger");
    tokio::time::sleep(Duration::from_secs(8)).await;
    // Same uuid, same URL, no key: it re-enrolls (dsx-connect sees `503 not_enrolled` from
    // it, so the key check lets it), and serves 503 until then, never a permanent 401.
    p.connector = spawn_connector(&p.connector_env, p.connector_port);
    let done = p.wait_job(&job, Duration::from_secs(120), |j| j["status"] == "completed").await;
    assert_eq!(done["processed_count"].as_u64(), Some(FILES as u64), "{done}");
    assert_eq!(done["failed_count"].as_u64(), Some(0), "{done}");
    assert_eq!(p.json("admin/dead-letter/stats").await["scan_request"], 0, "no dead letters");
    let results = p.results(&job).await;
    assert_eq!(results.len(), FILES);
    let malicious = results.iter().filter(|r| verdict(r) == "Malicious").count();
    assert_eq!(malicious, EICARS);
    assert!(results.iter().filter(|r| verdict(r) == "Malicious").all(|r| r["status"] == "action succeeded"));
}

//! Reliability of the scan pipeline with real processes: a worker killed with `kill -9` or
//! stopped with SIGTERM, a paused job, a scanner outage, a syslog server that never answers.
//! Real dsx-connect (API and worker processes), real filesystem-connector, real redis-server,
//! everything on loopback.

mod harness;

use std::time::{Duration, Instant};

use dsx_testkit::{free_port, unique_name};
use harness::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;

async fn dead_letters(p: &Pipeline) -> u64 {
    p.json("admin/dead-letter/stats").await["scan_request"].as_u64().unwrap()
}

/// A `/metrics` sample of `server` (an API process).
async fn metric(p: &Pipeline, name: &str) -> Option<f64> {
    let text = p
        .http
        .get(format!("{}/metrics", p.server.base_url()))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

/// Every file has exactly one result, and no result says "not scanned".
async fn assert_all_scanned_once(p: &Pipeline, job: &str, files: usize) {
    let results = p.results(job).await;
    assert_eq!(results.len(), files, "one result per file");
    let mut locations: Vec<String> = results.iter().map(location).collect();
    locations.sort();
    locations.dedup();
    assert_eq!(locations.len(), files, "no file has two results");
    let unscanned: Vec<_> =
        results.iter().filter(|r| r["status"] != "scanned" && r["status"] != "action succeeded").collect();
    assert!(unscanned.is_empty(), "{} not scanned, e.g. {}", unscanned.len(), unscanned[0]);
}

/// A DSXA-API scanner on loopback whose answers take `delay_ms`; it records the scans in flight.
struct SlowScanner {
    url: String,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    peak: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SlowScanner {
    async fn start(delay_ms: u64) -> Self {
        use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
        use std::sync::Arc;
        let delay = Arc::new(AtomicU64::new(delay_ms));
        let current = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (d, c, pk) = (Arc::clone(&delay), Arc::clone(&current), Arc::clone(&peak));
        let app = axum::Router::new().route(
            "/scan/binary/v2",
            axum::routing::post(move |_body: axum::body::Bytes| {
                let (d, c, pk) = (Arc::clone(&d), Arc::clone(&c), Arc::clone(&pk));
                async move {
                    let now = c.fetch_add(1, Ordering::SeqCst) + 1;
                    pk.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(d.load(Ordering::SeqCst))).await;
                    c.fetch_sub(1, Ordering::SeqCst);
                    axum::Json(serde_json::json!({ "scan_guid": "g", "verdict": "Benign" }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, delay_ms: delay, current, peak }
    }
}

/// Fault 1: a worker killed with `kill -9` mid-scan, with the DEFAULT lease settings. Its tasks
/// and in-flight slots are held by a heartbeat, so they come back within one lease (15 s), not
/// after the old 900 s lease: another worker finishes all 2,000 files within 60 s of the kill.
#[tokio::test]
async fn killed_worker_with_default_leases_recovers_within_a_minute() {
    let job = unique_name("job-kill9-");
    const FILES: usize = 2000;
    const EICARS: usize = 20;
    // Default lease settings: nothing about leases in the environment. Scans take 20 ms or
    // more, 16 at a time: the job lasts 2.5 s or more, so the kill lands mid-scan on any machine.
    let (_scanner, scanner_env) = paced_scanner(Duration::from_millis(20)).await;
    let mut p = Pipeline::start(true, FILES - EICARS, EICARS, "api", &scanner_env).await;
    assert!(p.server_env.iter().all(|(k, _)| !k.contains("LEASE")));
    p.full_scan(&job, "&batch=true&batch_size=200").await;
    p.workers.push(spawn_server(&p.server_env, "worker"));
    p.wait_job(&job, Duration::from_secs(60), |j| j["processed_count"].as_u64().unwrap_or(0) >= 100).await;
    p.workers[0].signal("KILL");
    let killed_at = Instant::now();
    p.workers[0].wait_exit(Duration::from_secs(10));
    let processed_at_kill = p.json(&format!("scan/jobs/{job}")).await["processed_count"].as_u64().unwrap();
    assert!(processed_at_kill < FILES as u64, "the worker finished before it was killed; make the scan bigger");
    p.workers.push(spawn_server(&p.server_env, "worker"));

    let done = p.wait_job(&job, Duration::from_secs(90), |j| j["status"] == "completed").await;
    let recovered_in = killed_at.elapsed();
    eprintln!("kill -9 at {processed_at_kill}/{FILES} processed; job completed {recovered_in:?} after the kill");
    assert!(recovered_in < Duration::from_secs(60), "took {recovered_in:?} after the kill");
    assert_eq!(done["processed_count"].as_u64(), Some(FILES as u64), "{done}");
    let results = p.results(&job).await;
    assert_eq!(results.len(), FILES, "exactly one result per file");
    let mut locations: Vec<String> = results.iter().map(location).collect();
    locations.sort();
    locations.dedup();
    assert_eq!(locations.len(), FILES, "no file has two results");
    // Every EICAR copy is quarantined once: no `name.1.com` duplicates.
    let quarantine: Vec<_> = std::fs::read_dir(p.root().join("dsxconnect-quarantine/inbox"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(quarantine.len(), EICARS, "{quarantine:?}");
    assert!(quarantine.iter().all(|n| !n.to_string_lossy().contains(".1.")));
    // The dead worker's slots may outlive the job by a lease; they must be back within 30 s of
    // the kill (its tasks can finish before its slots expire).
    loop {
        let in_flight = metric(&p, "dsxconnect_scans_in_flight").await;
        if in_flight == Some(0.0) {
            break;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(30), "slots still taken 30 s after the kill: {in_flight:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Fault 1, SIGTERM: the worker stops claiming, gives its in-flight tasks the drain time, then
/// gives back what is left (slots released, tasks requeued) and exits within the bound. The next
/// worker gets the full in-flight cap at once.
#[tokio::test]
async fn sigterm_drains_within_the_bound_and_frees_every_slot() {
    use std::sync::atomic::Ordering;
    let job = unique_name("job-term-");
    const FILES: usize = 24;
    // Scans take 4 s, longer than the 1 s drain: the tasks in flight must be given back.
    let scanner = SlowScanner::start(4000).await;
    let mut p = Pipeline::start(
        true,
        FILES,
        0,
        "api",
        &[
            ("DSXCONNECT_SCANNER__KIND", "dsxa".into()),
            ("DSXCONNECT_SCANNER__BASE_URL", scanner.url.clone()),
            ("DSXCONNECT_SCANNER__MAX_INFLIGHT", "4".into()),
            ("DSXCONNECT_WORKERS__DRAIN_SECONDS", "1".into()),
        ],
    )
    .await;
    p.full_scan(&job, "").await;
    p.wait_job(&job, Duration::from_secs(30), |j| j["enqueued_count"].as_u64() == Some(FILES as u64)).await;
    p.workers.push(spawn_server(&p.server_env, "worker"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while scanner.current.load(Ordering::SeqCst) < 4 {
        assert!(Instant::now() < deadline, "the worker never filled its slots");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.workers[0].signal("TERM");
    let termed = Instant::now();
    let code = p.workers[0].wait_exit(Duration::from_secs(15));
    let exited_in = termed.elapsed();
    eprintln!("SIGTERM: exited with {code:?} after {exited_in:?}");
    assert!(exited_in < Duration::from_secs(4), "drain is 1 s; exited after {exited_in:?}");
    assert_eq!(metric(&p, "dsxconnect_scans_in_flight").await, Some(0.0), "every slot released");
    assert_eq!(dead_letters(&p).await, 0);

    // The next worker runs at the full cap right away (no slot waits for a lease to expire).
    scanner.delay_ms.store(300, Ordering::SeqCst);
    scanner.peak.store(0, Ordering::SeqCst);
    let started = Instant::now();
    p.workers.push(spawn_server(&p.server_env, "worker"));
    while scanner.peak.load(Ordering::SeqCst) < 4 {
        assert!(started.elapsed() < Duration::from_secs(5), "the next worker did not get the full cap");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.wait_job(&job, Duration::from_secs(60), |j| j["status"] == "completed").await;
    assert_all_scanned_once(&p, &job, FILES).await;
    assert_eq!(dead_letters(&p).await, 0);
}

/// Fault 2: tasks of a paused job wait (deferred without spending attempts) for as long as the
/// job stays paused, here far longer than the whole retry budget; after resume every item is
/// scanned and nothing is dead-lettered.
#[tokio::test]
async fn a_paused_job_waits_longer_than_the_retry_budget_without_dead_letters() {
    let job = unique_name("job-pause-");
    const FILES: usize = 30;
    let mut p = Pipeline::start(
        true,
        FILES,
        0,
        "api",
        &[
            ("DSXCONNECT_WORKERS__SCAN_REQUEST_MAX_RETRIES", "1".into()),
            ("DSXCONNECT_WORKERS__RETRY_BASE_MS", "100".into()),
        ],
    )
    .await;
    p.full_scan(&job, "").await;
    p.wait_job(&job, Duration::from_secs(30), |j| j["enqueue_done"] == true).await;
    let resp = p.operator(Method::POST, &format!("scan/jobs/{job}/pause")).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await.unwrap());
    p.workers.push(spawn_server(&p.server_env, "worker"));
    // The retry budget is ~0.1 s; the job stays paused for 6 s (each task is looked at again).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let paused = p.json(&format!("scan/jobs/{job}")).await;
    assert_eq!(paused["processed_count"].as_u64(), Some(0), "{paused}");
    assert_eq!(dead_letters(&p).await, 0, "paused tasks are not dead-lettered");
    let resp = p.operator(Method::POST, &format!("scan/jobs/{job}/resume")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    p.wait_job(&job, Duration::from_secs(60), |j| j["status"] == "completed").await;
    assert_all_scanned_once(&p, &job, FILES).await;
    assert_eq!(dead_letters(&p).await, 0);
}

/// Fault 3: the scanner (`dsx-connect scanner serve`) goes away mid-scan for longer than the
/// whole retry budget. The breaker opens (the worker's `readyz` answers 503
/// `scanner_unavailable`), the workers stop claiming and probe; when the scanner is back every
/// item is scanned and nothing is dead-lettered.
#[tokio::test]
async fn a_scanner_outage_longer_than_the_retry_budget_dead_letters_nothing() {
    let job = unique_name("job-outage-");
    const FILES: usize = 200;
    let scanner_port = free_port();
    let spawn_scanner = || spawn_scanner(scanner_port);
    let mut scanner = spawn_scanner();
    // The worker reaches the scanner through a relay that makes every scan take 50 ms, four at a
    // time: the job needs 2.5 s or more, so it is still running when the scanner goes away
    // after 20 results, on any machine (a fast one finished 400 direct scans before the kill).
    let relay_port = slow_relay(scanner_port, Duration::from_millis(50)).await;
    let mut p = Pipeline::start(
        true,
        FILES,
        0,
        "api",
        &[
            ("DSXCONNECT_SCANNER__KIND", "dsxa".into()),
            ("DSXCONNECT_SCANNER__BASE_URL", format!("http://127.0.0.1:{relay_port}")),
            ("DSXCONNECT_SCANNER__MAX_INFLIGHT", "4".into()),
            ("DSXCONNECT_WORKERS__SCAN_REQUEST_MAX_RETRIES", "1".into()),
            ("DSXCONNECT_WORKERS__RETRY_BASE_MS", "100".into()),
        ],
    )
    .await;
    p.workers.push(spawn_server(&p.server_env, "worker"));
    let worker_readyz = format!("{}{API}/readyz", p.workers[0].base_url());
    assert_eq!(p.http.get(&worker_readyz).send().await.unwrap().status(), StatusCode::OK);
    p.full_scan(&job, "").await;
    p.wait_job(&job, Duration::from_secs(60), |j| j["processed_count"].as_u64().unwrap_or(0) >= 20).await;
    scanner.kill();
    let down_at = Instant::now();
    // The breaker opens: readyz says why.
    loop {
        let resp = p.http.get(&worker_readyz).send().await.unwrap();
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["reason"], "scanner_unavailable", "{body}");
            break;
        }
        assert!(down_at.elapsed() < Duration::from_secs(15), "readyz never reported the scanner outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Down far longer than the retry budget (~0.1 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(p.http.get(&worker_readyz).send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    let during = p.json(&format!("scan/jobs/{job}")).await;
    assert!(during["processed_count"].as_u64().unwrap() < FILES as u64, "{during}");
    scanner = spawn_scanner();
    p.wait_job(&job, Duration::from_secs(90), |j| j["status"] == "completed").await;
    eprintln!("scanner outage: job completed {:?} after the scanner went down", down_at.elapsed());
    assert_all_scanned_once(&p, &job, FILES).await;
    assert_eq!(dead_letters(&p).await, 0, "no dead letters for a scanner outage");
    assert_eq!(p.http.get(&worker_readyz).send().await.unwrap().status(), StatusCode::OK);
    drop(scanner);
}

/// Fault 4: a TCP syslog server that never accepts (its accept queue is full, so every connect
/// hangs until the 5 s timeout). Syslog delivery runs off the scan path: scanning keeps its
/// speed, and events beyond the queue are dropped and counted.
#[tokio::test]
async fn a_silent_syslog_server_does_not_slow_scanning() {
    let job = unique_name("job-syslog-");
    const FILES: usize = 300;
    // A listener with a backlog of 1 that never accepts; fill its accept queue.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(err)) => panic!("connect: {err}"),
            Err(_) => break, // the accept queue is full: connects hang from now on
        }
        assert!(fillers.len() < 64, "the listener never stopped accepting connections");
    }
    let p = Pipeline::start(
        true,
        FILES,
        0,
        "all",
        &[
            ("DSXCONNECT_SYSLOG__ENABLED", "true".into()),
            ("DSXCONNECT_SYSLOG__HOST", "127.0.0.1".into()),
            ("DSXCONNECT_SYSLOG__PORT", addr.port().to_string()),
            ("DSXCONNECT_SYSLOG__TRANSPORT", "tcp".into()),
            ("DSXCONNECT_SYSLOG__QUEUE_SIZE", "50".into()),
        ],
    )
    .await;
    let started = Instant::now();
    p.full_scan(&job, "").await;
    p.wait_job(&job, Duration::from_secs(60), |j| j["status"] == "completed").await;
    let took = started.elapsed();
    eprintln!("{FILES} files with a hanging syslog server: {took:?}");
    // Holding a 5 s connect per result inside the scan path took minutes.
    assert!(took < Duration::from_secs(30), "scanning slowed down to {took:?}");
    assert_all_scanned_once(&p, &job, FILES).await;
    let dropped = metric(&p, "dsxconnect_syslog_dropped_total").await.unwrap_or(0.0);
    assert!(dropped > 0.0, "a full queue drops and counts");
    drop(listener);
    drop(fillers);
}

/// Fault 1, the store: Redis goes away for 3 s mid-scan (killed, restarted with its append-only
/// file, as the charts run it). API, workers and connector ride it out: the job completes with
/// every file scanned once, nothing dead-lettered, and no slot stays taken.
#[tokio::test]
async fn a_redis_restart_mid_scan_loses_nothing_and_stalls_nothing() {
    let job = unique_name("job-redis-blip-");
    const FILES: usize = 1500;
    let store = Store::PrivateRedis(dsx_testkit::RedisServer::start_durable());
    // Scans take 20 ms or more, 16 at a time: the job lasts 1.9 s or more, so Redis goes away
    // mid-scan on any machine.
    let (_scanner, scanner_env) = paced_scanner(Duration::from_millis(20)).await;
    let mut p = Pipeline::start_on(store, FILES, 0, "api", &scanner_env).await;
    p.workers.push(spawn_server(&p.server_env, "worker"));
    p.full_scan(&job, "").await;
    let before = p.wait_job(&job, Duration::from_secs(60), |j| j["processed_count"].as_u64().unwrap_or(0) >= 100).await;
    assert!(before["processed_count"].as_u64().unwrap() < FILES as u64 / 2, "Redis must go away mid-scan: {before}");
    p.private_redis.as_mut().unwrap().stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    p.private_redis.as_mut().unwrap().start_again();
    let back_at = Instant::now();
    let done = p.wait_job(&job, Duration::from_secs(90), |j| j["status"] == "completed").await;
    eprintln!("redis restart: job completed {:?} after Redis came back: {done}", back_at.elapsed());
    assert_all_scanned_once(&p, &job, FILES).await;
    assert_eq!(dead_letters(&p).await, 0, "a store blip dead-letters nothing");
    loop {
        let in_flight = metric(&p, "dsxconnect_scans_in_flight").await;
        if in_flight == Some(0.0) {
            break;
        }
        assert!(back_at.elapsed() < Duration::from_secs(30), "slots still taken 30 s after Redis came back");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The store goes away while the connector is still enqueueing a full scan, for longer than
/// a few retries: the connector keeps each request (with its intake key) until dsx-connect
/// takes it again, so every file is queued exactly once and scanned once.
#[tokio::test]
async fn a_store_outage_during_enumeration_loses_and_duplicates_nothing() {
    let job = unique_name("job-enqueue-outage-");
    const FILES: usize = 3000;
    let store = Store::PrivateRedis(dsx_testkit::RedisServer::start_durable());
    let mut p =
        Pipeline::start_on(store, FILES, 0, "all", &[("DSXCONNECTOR_FULL_SCAN_ENQUEUE_CONCURRENCY", "2".into())]).await;
    // One request per item, two at a time: enumeration takes a while.
    p.full_scan(&job, "&batch=false").await;
    let before = p.wait_job(&job, Duration::from_secs(30), |j| j["enqueued_count"].as_u64().unwrap_or(0) >= 50).await;
    eprintln!("store outage during enumeration: Redis stopped after {} of {FILES} enqueued", before["enqueued_count"]);
    assert!(before["enqueue_done"] != true, "Redis must go away mid-enumeration: {before}");
    p.private_redis.as_mut().unwrap().stop();
    tokio::time::sleep(Duration::from_secs(8)).await;
    p.private_redis.as_mut().unwrap().start_again();
    let done = p.wait_job(&job, Duration::from_secs(120), |j| j["status"] == "completed").await;
    assert_eq!(done["enqueued_count"].as_u64(), Some(FILES as u64), "{done}");
    assert_eq!(done["enumeration_errors"].as_u64(), Some(0), "{done}");
    assert_all_scanned_once(&p, &job, FILES).await;
    assert_eq!(dead_letters(&p).await, 0);
}

/// A crash of the single-process server on the embedded store (`kill -9` mid-scan), restarted
/// on the same data: every accepted task is still there and the job completes with each file
/// scanned once and nothing dead-lettered.
#[tokio::test]
async fn a_killed_single_process_server_on_the_embedded_store_finishes_after_a_restart() {
    let job = unique_name("job-crash-embedded-");
    const FILES: usize = 2000;
    // Scans take 20 ms or more, 16 at a time: the job lasts 2.5 s or more, so the crash lands
    // mid-scan on any machine.
    let (_scanner, scanner_env) = paced_scanner(Duration::from_millis(20)).await;
    let mut p = Pipeline::start(false, FILES, 0, "all", &scanner_env).await;
    p.full_scan(&job, "").await;
    let before = p.wait_job(&job, Duration::from_secs(60), |j| j["processed_count"].as_u64().unwrap_or(0) >= 100).await;
    assert!(before["processed_count"].as_u64().unwrap() < FILES as u64 / 2, "the crash must land mid-scan: {before}");
    p.server.signal("KILL");
    p.server.wait_exit(Duration::from_secs(10));
    let port = p.server.port;
    p.server = spawn_server_on(&p.server_env, "all", port);
    // The pooled connections went with the old process.
    p.http = reqwest::Client::new();
    let restarted_at = Instant::now();
    let done = p.wait_job(&job, Duration::from_secs(90), |j| j["status"] == "completed").await;
    eprintln!("embedded crash: job completed {:?} after the restart: {done}", restarted_at.elapsed());
    assert_all_scanned_once(&p, &job, FILES).await;
    assert_eq!(dead_letters(&p).await, 0, "a crash dead-letters nothing");
}

/// A small tmpfs mounted for one test (a disk that can really fill up); unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs a tmpfs it can fill (run it as root, as scripts/test.sh does in CI): mount said {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Write a file until the disk refuses (ENOSPC); returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 1 << 16];
        loop {
            match file.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => return path,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fault 5: the embedded store's disk fills up mid-scan. Readiness says so and why, calls that
/// write answer 503; once space is freed the same process reopens the file by itself (no
/// restart) and the job finishes with every file scanned once and nothing dead-lettered.
#[tokio::test]
async fn an_embedded_store_whose_disk_fills_recovers_without_a_restart() {
    let job = unique_name("job-diskfull-");
    const FILES: usize = 3000;
    let disk = SmallDisk::mount("64m");
    let data = disk.path().join("data");
    // Scans take 20 ms or more, 16 at a time: the job lasts 3.75 s or more, so the disk fills
    // mid-scan on any machine.
    let (_scanner, mut env) = paced_scanner(Duration::from_millis(20)).await;
    env.push(("DSXCONNECT_DATA_DIR", data.display().to_string()));
    let mut p = Pipeline::start(false, FILES, 0, "all", &env).await;
    let readyz = format!("{}{API}/readyz", p.server.base_url());
    p.full_scan(&job, "").await;
    p.wait_job(&job, Duration::from_secs(60), |j| j["processed_count"].as_u64().unwrap_or(0) >= 30).await;

    let filler = disk.fill();
    let full_at = Instant::now();
    // The next durable write fails; readiness reports the store and the reason.
    loop {
        let resp = p.http.get(&readyz).send().await.unwrap();
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["reason"], "store_unavailable", "{body}");
            // The root cause, once the writer that met it has reported it.
            if body["detail"].as_str().unwrap().contains("No space left on device") {
                break;
            }
            assert!(full_at.elapsed() < Duration::from_secs(15), "readyz never named the cause: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let job_now = p.json(&format!("scan/jobs/{job}")).await;
        assert!(job_now["status"] != "completed", "the job finished before the disk filled; make it bigger");
        assert!(full_at.elapsed() < Duration::from_secs(15), "readyz still ready 15 s after the disk filled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // While the disk stays full the store keeps trying to reopen; a reopened file may take
    // small writes into its own free pages again, so readiness can flip back and forth here.
    tokio::time::sleep(Duration::from_secs(3)).await;

    std::fs::remove_file(filler).unwrap();
    let freed_at = Instant::now();
    loop {
        if p.http.get(&readyz).send().await.unwrap().status() == StatusCode::OK {
            break;
        }
        assert!(freed_at.elapsed() < Duration::from_secs(10), "not ready 10 s after space came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("disk full: ready again {:?} after space was freed", freed_at.elapsed());
    p.wait_job(&job, Duration::from_secs(120), |j| j["status"] == "completed").await;
    assert!(p.server.exit_code().is_none(), "the server must not have restarted:\n{}", p.server.logs());
    assert_all_scanned_once(&p, &job, FILES).await;
    assert_eq!(dead_letters(&p).await, 0, "a full disk dead-letters nothing");
    // redb may assert in a commit after the I/O error; the store contains that (it counts as
    // the fault). Nothing else may panic.
    let logs = p.server.logs();
    let other_panics: Vec<&str> = logs.lines().filter(|l| l.contains("panicked at") && !l.contains("/redb-")).collect();
    assert!(other_panics.is_empty(), "{other_panics:?}\n{logs}");
}

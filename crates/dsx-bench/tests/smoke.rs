//! Smoke test of the harness: every subcommand runs against the real binaries and reports
//! correct counts. Correctness only: no timing is asserted (CI machines are small and noisy).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use dsx_testkit::{free_port, unique_name, workspace_bin, Service, TestRedis};
use serde_json::Value;

const ENROLL: &str = "bench-smoke-enroll";
const OPERATOR: &str = "bench-smoke-operator";

fn bench(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsx-bench"));
    cmd.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("DSXCONNECT") {
            cmd.env_remove(key);
        }
    }
    cmd.env("DSXCONNECT_ENROLLMENT_TOKEN", ENROLL);
    cmd.output().expect("run dsx-bench")
}

/// Run dsx-bench with `--json -`, assert success, parse its JSON.
fn bench_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--json", "-"]);
    let out = bench(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dsx-bench {args:?} failed ({:?}):\n{stderr}", out.status);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}\n{stderr}", String::from_utf8_lossy(&out.stdout)))
}

/// dsx-connect on a loopback port, `--role api`, with `env` on top of a quiet log level.
fn server(env: &[(&str, String)]) -> (Service, tempfile::TempDir) {
    let bin = workspace_bin("dsx-connect");
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut all =
        vec![("DSXCONNECT_DATA_DIR", data.path().display().to_string()), ("DSXCONNECT_LOG_LEVEL", "warn".into())];
    all.extend(env.iter().cloned());
    let mut svc = Service::spawn(
        bin.to_str().unwrap(),
        &["serve", "--listen", &format!("127.0.0.1:{port}"), "--role", "api"],
        &all,
        port,
    );
    svc.wait_http("/dsx-connect/api/v1/healthz", 200, Duration::from_secs(30));
    (svc, data)
}

fn auth_on(redis: &TestRedis) -> Vec<(&'static str, String)> {
    vec![
        ("DSXCONNECT_AUTH__ENABLED", "true".into()),
        ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN", ENROLL.into()),
        ("DSXCONNECT_AUTH__ADMIN_TOKENS", OPERATOR.into()),
        ("DSXCONNECT_AUTH__REGISTER_RATE_PER_MINUTE", "0".into()),
        ("DSXCONNECT_REDIS_URL", redis.url.clone()),
        ("DSXCONNECT_APP_ENV", unique_name("bench")),
    ]
}

fn http(url: &str, scenario: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "http",
        "--url",
        url,
        "--scenario",
        scenario,
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--concurrency",
        "4",
        "--connectors",
        "2",
    ];
    args.extend(extra);
    bench_json(&args)
}

fn assert_clean_run(report: &Value, what: &str) {
    let requests = report["requests"].as_u64().unwrap();
    assert!(requests > 0, "{what}: no requests: {report}");
    assert_eq!(report["error_count"], 0, "{what}: errors: {report}");
    assert_eq!(report["ok"], requests, "{what}: {report}");
    let lat = &report["latency_ms"];
    let (p50, p99, max) = (lat["p50"].as_f64().unwrap(), lat["p99"].as_f64().unwrap(), lat["max"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{what}: percentiles out of order: {lat}");
    assert!(report["rps"].as_f64().unwrap() > 0.0, "{what}: {report}");
}

#[test]
fn http_scenarios_signed_on_redis() {
    let redis = TestRedis::get();
    let (svc, _data) = server(&auth_on(&redis));
    let url = svc.base_url();
    for scenario in ["auth-check", "scan-request", "register"] {
        let report = http(&url, scenario, &[]);
        assert_eq!(report["scenario"], scenario);
        assert_eq!(report["auth"], true);
        assert_clean_run(&report, scenario);
    }
}

#[test]
fn http_scenarios_unsigned_on_an_auth_off_server() {
    let (svc, _data) = server(&[
        ("DSXCONNECT_AUTH__ENABLED", "false".into()),
        ("DSXCONNECT_AUTH__REGISTER_RATE_PER_MINUTE", "0".into()),
    ]);
    let url = svc.base_url();
    for scenario in ["auth-check", "scan-request", "register"] {
        let report = http(&url, scenario, &["--no-auth"]);
        assert_eq!(report["auth"], false);
        assert_clean_run(&report, scenario);
    }
}

#[test]
fn failures_are_counted_and_reported() {
    // Unsigned requests to an auth-on server: every one is refused, so the run fails (exit 1)
    // and the refusals are counted by status.
    let redis = TestRedis::get();
    let (svc, _data) = server(&auth_on(&redis));
    let out = bench(&[
        "http",
        "--url",
        &svc.base_url(),
        "--scenario",
        "register",
        "--no-auth",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--concurrency",
        "2",
        "--json",
        "-",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], 0);
    assert!(report["errors"]["status_401"].as_u64().unwrap() > 0, "{report}");

    // An unreachable server: one line naming the URL, exit 2.
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = bench(&["http", "--url", &url, "--scenario", "auth-check", "--duration", "1s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("cannot reach dsx-connect at {url}")), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn http_over_https_verifies_the_server_unless_told_not_to() {
    let certs = tempfile::tempdir().unwrap();
    dsx_service::tls::certgen::write_set(certs.path(), &["127.0.0.1".into()]).unwrap();
    let file = |n: &str| certs.path().join(n).display().to_string();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut svc = Service::spawn(
        workspace_bin("dsx-connect").to_str().unwrap(),
        &["serve", "--listen", &format!("127.0.0.1:{port}"), "--role", "api"],
        &[
            ("DSXCONNECT_DATA_DIR", data.path().display().to_string()),
            ("DSXCONNECT_USE_TLS", "true".into()),
            ("DSXCONNECT_TLS_CERTFILE", file("tls.crt")),
            ("DSXCONNECT_TLS_KEYFILE", file("tls.key")),
            ("DSXCONNECT_AUTH__REGISTER_RATE_PER_MINUTE", "0".into()),
        ],
        port,
    );
    let url = format!("https://127.0.0.1:{port}");
    // Ready when the verified preflight passes.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = bench(&[
            "http",
            "--url",
            &url,
            "--scenario",
            "auth-check",
            "--duration",
            "100ms",
            "--warmup",
            "0s",
            "--no-auth",
            "--ca-bundle",
            &file("ca.crt"),
        ]);
        if out.status.success() {
            break;
        }
        assert!(svc.exit_code().is_none(), "server exited: {}", svc.logs());
        assert!(std::time::Instant::now() < deadline, "{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = http(&url, "auth-check", &["--no-auth", "--ca-bundle", &file("ca.crt")]);
    assert_clean_run(&report, "auth-check over HTTPS");

    // Without the CA the server is refused, and the error says why.
    let out = bench(&["http", "--url", &url, "--scenario", "auth-check", "--duration", "1s", "--no-auth"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    // --insecure only when asked for, with a warning.
    let report = http(&url, "auth-check", &["--no-auth", "--insecure"]);
    assert_clean_run(&report, "auth-check, --insecure");
}

/// Make sure the binaries the pipeline starts exist (`cargo test -p dsx-bench` alone does not
/// build other packages' binaries); their directory.
fn stack_bins() -> PathBuf {
    workspace_bin("filesystem-connector");
    workspace_bin("dsx-connect").parent().unwrap().to_path_buf()
}

fn assert_pipeline(report: &Value, store: &str) {
    assert_eq!(report["store"], store);
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["files"], 60);
    assert_eq!(report["results"], 60, "one result per file: {report}");
    assert_eq!(report["verdicts"]["Malicious"], 3, "{report}");
    assert_eq!(report["verdicts"]["Benign"], 57, "{report}");
    assert_eq!(report["job"]["status"], "completed");
    assert_eq!(report["job"]["processed_count"], 60);
    assert!(report["files_per_s"].as_f64().unwrap() > 0.0);
    for stage in ["read_scan", "claim_to_result", "queue_wait"] {
        let timing = &report["stages_ms"][stage];
        assert_eq!(timing["count"], 60, "{stage} of every scanned item: {report}");
        assert!(timing["p50"].as_f64().unwrap() <= timing["max"].as_f64().unwrap());
    }
}

#[test]
fn pipeline_embedded_finds_the_binaries_next_to_itself() {
    stack_bins();
    let report =
        bench_json(&["pipeline", "--files", "60", "--size", "1024", "--store", "embedded", "--malicious-every", "20"]);
    assert_pipeline(&report, "embedded");
}

#[test]
fn pipeline_over_https() {
    let bins = stack_bins();
    let report = bench_json(&[
        "pipeline",
        "--files",
        "60",
        "--size",
        "1024",
        "--malicious-every",
        "20",
        "--tls",
        "--bin-dir",
        bins.to_str().unwrap(),
    ]);
    assert_eq!(report["tls"], true);
    assert_pipeline(&report, "embedded");
}

#[test]
fn pipeline_on_redis() {
    let bins = stack_bins();
    let redis = TestRedis::get();
    let report = bench_json(&[
        "pipeline",
        "--files",
        "60",
        "--size",
        "1024",
        "--store",
        "redis",
        "--redis-url",
        &redis.url,
        "--malicious-every",
        "20",
        "--bin-dir",
        bins.to_str().unwrap(),
    ]);
    assert_pipeline(&report, "redis");
}

#[test]
fn large_file_reports_size_and_memory() {
    let bins = stack_bins();
    let report = bench_json(&["large-file", "--size-mib", "8", "--bin-dir", bins.to_str().unwrap()]);
    assert_eq!(report["verdict"], "Benign");
    assert_eq!(report["file_size"], 8 << 20);
    let before = report["rss_before_mib"].as_f64().unwrap();
    let peak = report["rss_peak_mib"].as_f64().unwrap();
    assert!(before > 0.0 && peak >= before, "{report}");
    assert!(report["mib_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_missing_bin_dir_is_named() {
    let empty = tempfile::tempdir().unwrap();
    let out = bench(&["large-file", "--size-mib", "1", "--bin-dir", empty.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("dsx-connect not found in") && stderr.contains("--bin-dir"), "{stderr}");
}

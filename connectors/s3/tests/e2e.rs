//! End to end: the real `dsx-connect serve` (auth on, built-in scanner, embedded store), the
//! real `s3-connector` binary, and moto as the S3 + SQS server.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_s3::types::StorageClass;
use dsx_testkit::{free_port, unique_name, workspace_bin, Moto, Service, TestRedis};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{fixture_on, Fixture, EICAR};

const ENROLL: &str = "s3-e2e-enrollment-token";
const OPERATOR: &str = "s3-e2e-operator-token";
const API: &str = "/dsx-connect/api/v1";

/// A distinctive secret, to prove it never reaches a log (moto accepts any).
const AWS_SECRET: &str = "dsx-e2e-aws-secret-never-logged";

struct Stack {
    f: Fixture,
    server: Service,
    server_env: Vec<(&'static str, String)>,
    connector: Service,
    _dirs: Vec<tempfile::TempDir>,
    http: reqwest::Client,
    uuid: String,
}

impl Stack {
    async fn start(connector_env: &[(&'static str, String)], queue: Option<&str>) -> Self {
        Self::start_with(connector_env, queue, "all", None).await
    }

    /// `role`: the server's `--role`; with `redis`, the store is that Redis (so a worker can
    /// be started later against the same queue).
    async fn start_with(
        connector_env: &[(&'static str, String)],
        queue: Option<&str>,
        role: &str,
        redis: Option<&TestRedis>,
    ) -> Self {
        let moto = Moto::get();
        let queue_url = queue.map(|name| format!("{}/123456789012/{name}", moto.endpoint));
        let extra: Vec<(&str, &str)> =
            queue_url.as_deref().map(|u| vec![("DSXCONNECTOR_S3_SQS_QUEUE_URL", u)]).unwrap_or_default();
        let f = fixture_on(moto, false, "", &extra).await;
        if let (Some(name), Some(sqs)) = (queue, &f.sqs) {
            sqs.create_queue().queue_name(name).send().await.unwrap();
        }
        let server_data = tempfile::tempdir().unwrap();
        let mut server_env: Vec<(&'static str, String)> = vec![
            ("DSXCONNECT_APP_ENV", unique_name("s3e2e")),
            ("DSXCONNECT_DATA_DIR", server_data.path().display().to_string()),
            ("DSXCONNECT_AUTH__ENABLED", "true".into()),
            ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN", ENROLL.into()),
            ("DSXCONNECT_AUTH__ADMIN_TOKENS", OPERATOR.into()),
            ("DSXCONNECT_WORKERS__RETRY_BASE_MS", "100".into()),
        ];
        if let Some(redis) = redis {
            server_env.push(("DSXCONNECT_REDIS_URL", redis.url.clone()));
        }
        let server = spawn_server(&server_env, role);

        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut env: Vec<(&str, String)> = f.moto.env();
        env.extend([
            ("DSXCONNECTOR_ASSET", f.bucket.clone()),
            ("DSXCONNECTOR_CONNECTOR_URL", format!("http://127.0.0.1:{port}")),
            ("DSXCONNECTOR_DSX_CONNECT_URL", server.base_url()),
            ("DSXCONNECTOR_DATA_DIR", data.path().display().to_string()),
            ("DSXCONNECTOR_AUTH__ENABLED", "true".into()),
            ("DSXCONNECT_ENROLLMENT_TOKEN", ENROLL.into()),
            ("DSXCONNECTOR_ITEM_ACTION", "move".into()),
        ]);
        env.retain(|(k, _)| *k != "AWS_SECRET_ACCESS_KEY");
        env.push(("AWS_SECRET_ACCESS_KEY", AWS_SECRET.into()));
        if let Some(url) = queue_url {
            env.push(("DSXCONNECTOR_S3_SQS_QUEUE_URL", url));
            env.push(("DSXCONNECTOR_MONITOR", "true".into()));
        }
        for (k, v) in connector_env {
            env.retain(|(key, _)| key != k);
            env.push((k, v.clone()));
        }
        let mut connector = Service::spawn(
            workspace_bin("s3-connector").to_str().unwrap(),
            &["--listen", &format!("127.0.0.1:{port}")],
            &env,
            port,
        );
        connector.wait_http("/aws-s3-connector/readyz", 200, Duration::from_secs(30));
        let uuid = std::fs::read_to_string(data.path().join("connector_uuid.txt")).unwrap().trim().to_owned();
        Self { f, server, server_env, connector, _dirs: vec![server_data, data], http: reqwest::Client::new(), uuid }
    }

    async fn operator(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut req =
            self.http.request(method, format!("{}{API}/{path}", self.server.base_url())).bearer_auth(OPERATOR);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    /// Results whose location is `key`, waiting until `n` of them exist in total.
    async fn results(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let all: Value = self.operator(Method::GET, "scan/results?limit=1000", None).await.json().await.unwrap();
            let all = all.as_array().cloned().unwrap_or_default();
            if all.len() >= n {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} results after 60 s: {all:?}\nserver log:\n{}\nconnector log:\n{}",
                all.len(),
                self.server.logs(),
                self.connector.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn spawn_server(env: &[(&'static str, String)], role: &str) -> Service {
    let port = free_port();
    let mut server = Service::spawn(
        workspace_bin("dsx-connect").to_str().unwrap(),
        &["serve", "--listen", &format!("127.0.0.1:{port}"), "--role", role],
        env,
        port,
    );
    server.wait_http(&format!("{API}/healthz"), 200, Duration::from_secs(30));
    server
}

fn result_for<'a>(results: &'a [Value], key: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["scan_request"]["location"] == key)
        .unwrap_or_else(|| panic!("no result for {key}: {results:?}"))
}

#[tokio::test]
async fn full_scan_quarantines_eicar_keeps_benign_and_records_unscannable() {
    let stack = Stack::start(&[], None).await;
    let f = &stack.f;
    f.put("docs/readme.txt", b"benign words").await;
    f.put("docs/report.csv", b"a,b,c").await;
    f.put("inbox/eicar.com", EICAR).await;
    f.put("inbox/second.com", EICAR).await;
    f.put_in(&f.bucket, "archive/old.bin", b"archived", Some(StorageClass::Glacier)).await;

    let resp = stack.operator(Method::POST, &format!("connectors/full_scan/{}?job_id=s3job", stack.uuid), None).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let results = stack.results(5).await;
    assert_eq!(result_for(&results, "docs/readme.txt")["verdict"]["verdict"], "Benign");
    let bad = result_for(&results, "inbox/eicar.com");
    assert_eq!(bad["verdict"]["verdict"], "Malicious");
    // The archived object is recorded as not scanned, with the reason, never as clean.
    let cold = result_for(&results, "archive/old.bin");
    assert_eq!(cold["status"], "not scanned", "{cold}");
    assert_ne!(cold["verdict"]["verdict"], "Benign");
    let dead: Value =
        stack.operator(Method::GET, "admin/dead-letter/items/scan_request", None).await.json().await.unwrap();
    assert!(dead.to_string().contains("unscannable"), "the dead letter carries the reason: {dead}");

    // Quarantined, not in place; benign objects untouched.
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.get("inbox/eicar.com").await.is_some() || f.get("inbox/second.com").await.is_some() {
        assert!(Instant::now() < deadline, "EICAR object still in place: {bad}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(f.get("dsxconnect-quarantine/inbox/eicar.com").await.unwrap(), EICAR);
    assert_eq!(f.get("docs/readme.txt").await.unwrap(), b"benign words");
    let archived = f.s3.head_object().bucket(&f.bucket).key("archive/old.bin").send().await;
    assert!(archived.is_ok(), "the unscannable object is left in place");

    // Release through dsx-connect's operator API: back in place, tagged released.
    let resp = stack
        .operator(
            Method::POST,
            &format!("connectors/release/{}", stack.uuid),
            Some(json!({ "location": format!("s3://{}/dsxconnect-quarantine/inbox/eicar.com", f.bucket) })),
        )
        .await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "File released");
    assert_eq!(f.get("inbox/eicar.com").await.unwrap(), EICAR);
    assert_eq!(f.tags("inbox/eicar.com").await.get("Verdict").map(String::as_str), Some("Released"));
    // Something that is not in the quarantine cannot be "released".
    let resp = stack
        .operator(
            Method::POST,
            &format!("connectors/release/{}", stack.uuid),
            Some(json!({ "location": "docs/readme.txt" })),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = stack.operator(Method::POST, &format!("connectors/release/{}", stack.uuid), Some(json!({}))).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Neither the AWS secret nor the enrollment token reaches a log.
    for (who, log) in [("connector", stack.connector.logs()), ("server", stack.server.logs())] {
        assert!(!log.contains(AWS_SECRET) && !log.contains(ENROLL), "{who} logged a secret:\n{log}");
    }
}

#[tokio::test]
async fn an_object_overwritten_between_listing_and_reading_is_recorded_not_scanned() {
    // API only at first: the scan is enqueued, nothing is read yet.
    let redis = TestRedis::get();
    let stack = Stack::start_with(&[], None, "api", Some(&redis)).await;
    let f = &stack.f;
    f.put("doc.txt", b"listed content").await;
    let job = unique_name("pinjob-");
    let resp = stack.operator(Method::POST, &format!("connectors/full_scan/{}?job_id={job}", stack.uuid), None).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state: Value =
            stack.operator(Method::GET, &format!("scan/jobs/{job}"), None).await.json().await.unwrap_or_default();
        if state["enqueue_done"] == true && state["enqueued_count"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the scan was not enqueued: {state}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    f.put("doc.txt", b"written after listing").await;
    // Now a worker reads it: the listed ETag no longer matches.
    let _worker = spawn_server(&stack.server_env, "worker");
    let deadline = Instant::now() + Duration::from_secs(60);
    let results = loop {
        let r: Value =
            stack.operator(Method::GET, &format!("scan/results/job/{job}"), None).await.json().await.unwrap();
        if r.as_array().is_some_and(|a| !a.is_empty()) {
            break r.as_array().unwrap().clone();
        }
        assert!(Instant::now() < deadline, "no result: {r}\n{}", stack.connector.logs());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let r = result_for(&results, "doc.txt");
    assert_eq!(r["status"], "not scanned", "{r}");
    assert_ne!(r["verdict"]["verdict"], "Benign");
    let dead: Value =
        stack.operator(Method::GET, "admin/dead-letter/items/scan_request", None).await.json().await.unwrap();
    let ours: Vec<&Value> = dead["items"].as_array().unwrap().iter().filter(|d| d.to_string().contains(&job)).collect();
    assert!(ours.iter().any(|d| d.to_string().contains("item_changed")), "the reason is recorded: {ours:?}");
    assert_eq!(f.get("doc.txt").await.unwrap(), b"written after listing", "nothing was done to the new content");
}

#[tokio::test]
async fn sqs_events_with_several_records_are_each_scanned() {
    let queue = unique_name("dsx-e2e-q-");
    let stack = Stack::start(&[], Some(&queue)).await;
    let f = &stack.f;
    f.put("drop/a file.txt", b"benign").await;
    f.put("drop/evil+1.com", EICAR).await;
    f.put("dsxconnect-quarantine/drop/old.com", EICAR).await;
    let record = |key: &str| json!({ "eventName": "ObjectCreated:Put", "s3": { "bucket": { "name": f.bucket }, "object": { "key": key } } });
    let body = json!({ "Records": [record("drop/a+file.txt"), record("drop/evil%2B1.com"), record("dsxconnect-quarantine/drop/old.com")] });
    let sqs = f.sqs.as_ref().unwrap();
    let url = format!("{}/123456789012/{queue}", f.moto.endpoint);
    sqs.send_message().queue_url(&url).message_body(body.to_string()).send().await.unwrap();
    let results = stack.results(2).await;
    assert_eq!(result_for(&results, "drop/a file.txt")["verdict"]["verdict"], "Benign");
    assert_eq!(result_for(&results, "drop/evil+1.com")["verdict"]["verdict"], "Malicious");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = stack.results(2).await;
    assert_eq!(all.len(), 2, "the quarantine key was not scanned again: {all:?}");
}

#[tokio::test]
async fn webhook_takes_eventbridge_and_sns_envelopes_and_is_signed() {
    // Connector-side verification off here so the test can post unsigned; the same route on
    // a connector with it on refuses unsigned calls (below).
    let stack = Stack::start(&[("DSXCONNECTOR_AUTH__ENABLED", "false".into())], None).await;
    let f = &stack.f;
    f.put("hook/one two.txt", b"benign").await;
    f.put("hook/bad.com", EICAR).await;
    let eb = json!({ "source": "aws.s3", "detail-type": "Object Created",
        "detail": { "bucket": { "name": f.bucket }, "object": { "key": "hook/one two.txt" } } });
    let inner = json!({ "Records": [{ "eventName": "ObjectCreated:Put",
        "s3": { "bucket": { "name": f.bucket }, "object": { "key": "hook/bad.com" } } }] });
    let sns = json!({ "Type": "Notification", "Message": inner.to_string() });
    let url = format!("{}/aws-s3-connector/webhook/event", stack.connector.base_url());
    for body in [eb, sns] {
        let answer: Value = stack.http.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
        assert_eq!(answer["status"], "success", "{answer}");
    }
    let results = stack.results(2).await;
    assert_eq!(result_for(&results, "hook/one two.txt")["verdict"]["verdict"], "Benign");
    assert_eq!(result_for(&results, "hook/bad.com")["verdict"]["verdict"], "Malicious");
    let junk: Value = stack.http.post(&url).body("{\"hello\": 1}").send().await.unwrap().json().await.unwrap();
    assert_eq!(junk["status"], "error", "{junk}");

    let signed = Stack::start(&[], None).await;
    let url = format!("{}/aws-s3-connector/webhook/event", signed.connector.base_url());
    let resp = signed.http.post(&url).json(&inner).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn bad_settings_stop_the_binary_with_the_variable_named() {
    let cases = [
        (vec![("DSXCONNECTOR_ASSET", "Not_A_Bucket")], "DSXCONNECTOR_ASSET"),
        (
            vec![("DSXCONNECTOR_ASSET", "good-bucket"), ("DSXCONNECTOR_ITEM_ACTION", "shred")],
            "DSXCONNECTOR_ITEM_ACTION",
        ),
        (
            vec![("DSXCONNECTOR_ASSET", "good-bucket"), ("DSXCONNECTOR_S3_ENDPOINT_URL", "minio:9000")],
            "DSXCONNECTOR_S3_ENDPOINT_URL",
        ),
    ];
    for (vars, name) in cases {
        let port = free_port();
        let env: Vec<(&str, String)> = vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let mut svc = Service::spawn(
            workspace_bin("s3-connector").to_str().unwrap(),
            &["--listen", &format!("127.0.0.1:{port}")],
            &env,
            port,
        );
        let code = svc.wait_exit(Duration::from_secs(20));
        assert_ne!(code, Some(0), "{vars:?}");
        let log = svc.logs();
        assert!(log.contains(name), "{name} not named: {log}");
    }
}

//! End to end: the real `dsx-connect serve` (on a real redis-server) and the real
//! `filesystem-connector`, auth enabled on both, over loopback HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsx_connect::connector_client::ConnectorClient;
use dsx_hmac::{authorization_header, generate_nonce, unix_now, SigningKey};
use dsx_store::prelude::*;
use dsx_store::{Namespace, RedisStore, SecretCodec};
use dsx_testkit::{free_port, unique_name, workspace_bin, Service, TestRedis};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const ENROLL: &str = "e2e-enrollment-token";
const OPERATOR: &str = "e2e-operator-token";
const API: &str = "/dsx-connect/api/v1";

struct Stack {
    redis: TestRedis,
    env: String,
    server: Service,
    connector: Service,
    asset: tempfile::TempDir,
    data: tempfile::TempDir,
    http: reqwest::Client,
    uuid: Uuid,
}

fn write(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

impl Stack {
    async fn start(connector_env: &[(&'static str, String)]) -> Self {
        let redis = TestRedis::get();
        let env = unique_name("e2e");
        let server_port = free_port();
        let mut server = Service::spawn(
            workspace_bin("dsx-connect").to_str().unwrap(),
            // API only: these tests inspect the queue, which workers would drain.
            &["serve", "--listen", &format!("127.0.0.1:{server_port}"), "--role", "api"],
            &[
                ("DSXCONNECT_REDIS_URL", redis.url.clone()),
                ("DSXCONNECT_APP_ENV", env.clone()),
                ("DSXCONNECT_AUTH__ENABLED", "true".into()),
                ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN", ENROLL.into()),
                ("DSXCONNECT_AUTH__ADMIN_TOKENS", OPERATOR.into()),
                ("DSXCONNECT_LOG_LEVEL", "info,tower_http=debug".into()),
            ],
            server_port,
        );
        server.wait_http(&format!("{API}/healthz"), 200, Duration::from_secs(20));

        let asset = tempfile::tempdir().unwrap();
        let root = asset.path();
        write(&root.join("a.txt"), b"alpha");
        write(&root.join("sub1/b.txt"), b"bravo");
        write(&root.join("sub1/tmp/c.txt"), b"charlie");
        write(&root.join("sub2/d.bin"), b"delta");
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut vars: Vec<(&str, String)> = vec![
            ("DSXCONNECTOR_ASSET", root.display().to_string()),
            ("DSXCONNECTOR_CONNECTOR_URL", format!("http://127.0.0.1:{port}")),
            ("DSXCONNECTOR_DSX_CONNECT_URL", format!("http://127.0.0.1:{server_port}")),
            ("DSXCONNECTOR_DATA_DIR", data.path().display().to_string()),
            ("DSXCONNECTOR_AUTH__ENABLED", "true".into()),
            ("DSXCONNECT_ENROLLMENT_TOKEN", ENROLL.into()),
            ("DSXCONNECTOR_HEARTBEAT_INTERVAL_SECONDS", "1".into()),
        ];
        for (k, v) in connector_env {
            vars.retain(|(key, _)| key != k);
            vars.push((k, v.clone()));
        }
        let mut connector = Service::spawn(
            workspace_bin("filesystem-connector").to_str().unwrap(),
            &["--listen", &format!("127.0.0.1:{port}")],
            &vars,
            port,
        );
        connector.wait_http("/filesystem-connector/readyz", 200, Duration::from_secs(20));
        let uuid: Uuid =
            std::fs::read_to_string(data.path().join("connector_uuid.txt")).unwrap().trim().parse().unwrap();
        Self { redis, env, server, connector, asset, data, http: reqwest::Client::new(), uuid }
    }

    fn api(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{API}/{path}", self.server.port)
    }

    fn connector_url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{path_and_query}", self.connector.port)
    }

    async fn operator(&self, method: Method, path: &str) -> reqwest::Response {
        self.http.request(method, self.api(path)).bearer_auth(OPERATOR).send().await.unwrap()
    }

    /// dsx-connect's own outbound client, on the same registry as the running server.
    fn dsx_client(&self) -> ConnectorClient {
        let store =
            RedisStore::new(&self.redis.url, Namespace { env: self.env.clone() }, SecretCodec::plain()).unwrap();
        ConnectorClient::new(Arc::new(store), true, Default::default())
    }

    async fn store(&self) -> RedisStore {
        RedisStore::new(&self.redis.url, Namespace { env: self.env.clone() }, SecretCodec::plain()).unwrap()
    }

    fn root(&self) -> PathBuf {
        self.asset.path().canonicalize().unwrap()
    }

    async fn wait_job_done(&self, job_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let resp = self.http.get(self.api(&format!("scan/jobs/{job_id}/raw"))).send().await.unwrap();
            if resp.status() == StatusCode::OK {
                let job: Value = resp.json().await.unwrap();
                if job_flag(&job, "enqueue_done") {
                    return job;
                }
            }
            assert!(Instant::now() < deadline, "job {job_id} never finished enqueueing");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Locations of every queued scan request of this stack's namespace.
    async fn queued_locations(&self) -> Vec<String> {
        let mut conn =
            redis::Client::open(self.redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(format!("{}:dsx-connect:queue:scan_request", self.env))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        entries
            .ids
            .iter()
            .map(|e| {
                let task: String = e.get("task").unwrap();
                let task: Value = serde_json::from_str(&task).unwrap();
                task["request"]["location"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    async fn read_file(&self, location: &str) -> reqwest::Response {
        let body = serde_json::to_vec(&json!({ "location": location, "metainfo": "x" })).unwrap();
        self.dsx_client().request(self.uuid, Method::POST, "read_file", body).await.unwrap()
    }
}

/// A field of `GET scan/jobs/{id}/raw`: top level (this server's flat shape) or in Python's
/// `data` hash, whose values are all strings.
fn job_field<'a>(job: &'a Value, name: &str) -> Option<&'a Value> {
    job.get(name).filter(|v| !v.is_null()).or_else(|| job.get("data")?.get(name))
}

fn job_u64(job: &Value, name: &str) -> Option<u64> {
    let v = job_field(job, name)?;
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

fn job_flag(job: &Value, name: &str) -> bool {
    matches!(job_field(job, name), Some(v) if *v == true || *v == "1" || *v == "true")
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn mutual_dsx_hmac_between_server_and_filesystem_connector() {
    let job_batch = dsx_testkit::unique_name("job-batch-");
    let job_all = dsx_testkit::unique_name("job-all-");
    let stack = Stack::start(&[]).await;
    let logs = stack.connector.logs();
    assert!(
        logs.contains("Connector authentication: enrollment token provided; DSX-HMAC verification enabled."),
        "{logs}"
    );

    // Enrolled, then heartbeats arrive signed (registered_via flips to "hmac"), and the
    // connector's signed auth_check passed.
    wait_for("a signed heartbeat", async || {
        let list: Value = stack.operator(Method::GET, "connectors/list").await.json().await.unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .any(|c| c["uuid"] == stack.uuid.to_string() && c["auth"]["registered_via"] == "hmac")
    })
    .await;
    assert!(stack.connector.logs().contains("dsx-connect verified this connector's DSX-HMAC signature"));

    // dsx-connect → connector, signed with the connector's key: config, auth_check, read_file.
    let resp = stack.operator(Method::GET, &format!("connectors/config/{}", stack.uuid)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let config: Value = resp.json().await.unwrap();
    assert_eq!(config["asset"], stack.asset.path().display().to_string());
    assert_eq!(config["auth"]["enrollment_token"], "***", "the token is masked");
    assert!(!config.to_string().contains(ENROLL));
    let check: Value =
        stack.operator(Method::GET, &format!("connectors/auth_check/{}", stack.uuid)).await.json().await.unwrap();
    assert_eq!(check["message"], "auth_ok");

    let a = stack.root().join("a.txt");
    let resp = stack.read_file(a.to_str().unwrap()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"alpha");

    // Full scan through dsx-connect: every file is enqueued and enqueue_done carries the total.
    let resp = stack.operator(Method::POST, &format!("connectors/full_scan/{}?job_id={job_all}", stack.uuid)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["x-job-id"], &job_all);
    let job = stack.wait_job_done(&job_all).await;
    assert_eq!((job_u64(&job, "expected_total"), job_u64(&job, "enqueued_count")), (Some(4), Some(4)));
    // Batched, with a limit.
    let resp = stack
        .operator(
            Method::POST,
            &format!("connectors/full_scan/{}?job_id={job_batch}&batch=true&batch_size=2&limit=3", stack.uuid),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job = stack.wait_job_done(&job_batch).await;
    assert_eq!((job_u64(&job, "expected_total"), job_u64(&job, "enqueued_count")), (Some(3), Some(3)));
    let queued = stack.queued_locations().await;
    assert_eq!(queued.len(), 7);
    assert!(queued.contains(&stack.root().join("sub1/tmp/c.txt").display().to_string()));

    // item_action (move) via dsx-connect's signed client.
    let victim = stack.root().join("sub2/d.bin");
    let body = serde_json::to_vec(&json!({ "location": victim, "metainfo": "d.bin" })).unwrap();
    let resp = stack.dsx_client().request(stack.uuid, Method::PUT, "item_action", body).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let outcome: Value = resp.json().await.unwrap();
    assert_eq!((outcome["status"].as_str(), outcome["item_action"].as_str()), (Some("success"), Some("move")));
    assert!(!victim.exists());
    assert_eq!(std::fs::read(stack.root().join("dsxconnect-quarantine/sub2/d.bin")).unwrap(), b"delta");

    // Path confinement over the wire: 403 for escapes, 404 for missing, nothing read.
    for (location, status) in [
        ("/etc/passwd".to_owned(), StatusCode::FORBIDDEN),
        (format!("{}/../../etc/passwd", stack.root().display()), StatusCode::FORBIDDEN),
        ("../../etc/passwd".to_owned(), StatusCode::FORBIDDEN),
        (stack.root().join("missing.txt").display().to_string(), StatusCode::NOT_FOUND),
    ] {
        let resp = stack.read_file(&location).await;
        assert_eq!(resp.status(), status, "{location}");
        let json: Value = resp.json().await.unwrap();
        assert!(json["detail"].is_string(), "a JSON error, never file bytes: {json}");
    }
    std::os::unix::fs::symlink("/etc/passwd", stack.root().join("escape.txt")).unwrap();
    assert_eq!(
        stack.read_file(stack.root().join("escape.txt").to_str().unwrap()).await.status(),
        StatusCode::FORBIDDEN
    );

    // Unsigned calls to the connector: 401 and the contract's log line.
    let resp = stack
        .http
        .post(stack.connector_url("/filesystem-connector/read_file"))
        .json(&json!({"location": a, "metainfo": "a.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json::<Value>().await.unwrap()["detail"], "missing_hmac");
    let resp = stack.http.post(stack.connector_url("/filesystem-connector/full_scan")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(stack.connector.logs().contains("missing DSX-HMAC header"));
    // Health stays open.
    assert_eq!(
        stack.http.get(stack.connector_url("/filesystem-connector/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        stack.http.get(stack.connector_url("/filesystem-connector/version")).send().await.unwrap().status(),
        StatusCode::OK
    );

    // Signed with another connector's key: 401 unknown_key_id.
    let other = stack
        .http
        .post(stack.api("connectors/register"))
        .header("X-Enrollment-Token", ENROLL)
        .json(&json!({ "uuid": Uuid::new_v4(), "url": "http://127.0.0.1:9/other", "name": "other" }))
        .send()
        .await
        .unwrap();
    let other: Value = other.json().await.unwrap();
    let key = SigningKey::new(other["hmac_secret"].as_str().unwrap());
    let body = serde_json::to_vec(&json!({ "location": a, "metainfo": "a.txt" })).unwrap();
    let path = "/filesystem-connector/read_file";
    let auth = authorization_header(
        &key,
        other["hmac_key_id"].as_str().unwrap(),
        "POST",
        path,
        unix_now(),
        &generate_nonce(),
        &body,
    );
    let resp = stack
        .http
        .post(stack.connector_url(path))
        .header("Authorization", auth)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json::<Value>().await.unwrap()["detail"], "unknown_key_id");

    // A replayed dsx-connect call is refused by the connector.
    let store = stack.store().await;
    let own = store.current_credential(stack.uuid).await.unwrap().unwrap();
    let own_key = SigningKey::new(secrecy::ExposeSecret::expose_secret(&own.secret));
    let auth = authorization_header(&own_key, &own.key_id, "POST", path, unix_now(), &generate_nonce(), &body);
    let send =
        || stack.http.post(stack.connector_url(path)).header("Authorization", auth.clone()).body(body.clone()).send();
    assert_eq!(send().await.unwrap().status(), StatusCode::OK);
    let resp = send().await.unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["detail"], "replayed_request");

    // Nothing secret on disk or in the connector's log.
    let secret = secrecy::ExposeSecret::expose_secret(&own.secret).to_owned();
    let files: Vec<_> = std::fs::read_dir(stack.data.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files, vec![std::ffi::OsString::from("connector_uuid.txt")]);
    assert!(!std::fs::read_to_string(stack.data.path().join("connector_uuid.txt")).unwrap().contains(&secret));
    assert!(!stack.connector.logs().contains(&secret) && !stack.connector.logs().contains(ENROLL));

    // Graceful shutdown unregisters, signed: presence gone, key revoked.
    stack.connector.signal("TERM");
    let mut connector = stack.connector;
    connector.wait_exit(Duration::from_secs(15));
    assert!(connector.logs().contains("unregistered from dsx-connect"), "{}", connector.logs());
    assert!(store.get_presence(stack.uuid).await.unwrap().is_none());
    assert!(store.resolve_key(&own.key_id).await.unwrap().is_none());
}

#[tokio::test]
async fn filter_limits_full_scan_and_monitor_enqueues_new_files() {
    let job_filter = dsx_testkit::unique_name("job-filter-");
    let stack = Stack::start(&[
        ("DSXCONNECTOR_FILTER", "sub1 -tmp".into()),
        ("DSXCONNECTOR_MONITOR", "true".into()),
        ("DSXCONNECTOR_MONITOR_FORCE_POLLING", "true".into()),
        ("DSXCONNECTOR_MONITOR_POLL_INTERVAL_MS", "100".into()),
    ])
    .await;
    let resp = stack.operator(Method::POST, &format!("connectors/full_scan/{}?job_id={job_filter}", stack.uuid)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job = stack.wait_job_done(&job_filter).await;
    assert_eq!(job_u64(&job, "expected_total"), Some(1));
    assert_eq!(stack.queued_locations().await, vec![stack.root().join("sub1/b.txt").display().to_string()]);
    let estimate: Value =
        stack.operator(Method::GET, &format!("connectors/estimate/{}", stack.uuid)).await.json().await.unwrap();
    assert_eq!(estimate, json!({ "count": 1, "confidence": "exact" }));

    // Monitor: a new matching file is enqueued as its own job; a non-matching one is not.
    write(&stack.root().join("sub1/new.txt"), b"new");
    write(&stack.root().join("sub2/ignored.txt"), b"ignored");
    write(&stack.root().join("sub1/tmp/ignored.txt"), b"ignored");
    let new = stack.root().join("sub1/new.txt").display().to_string();
    wait_for("the monitored file to be enqueued", async || stack.queued_locations().await.contains(&new)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let queued = stack.queued_locations().await;
    assert_eq!(queued.len(), 2, "{queued:?}");
}

#[tokio::test]
async fn a_revoked_connector_stays_out_until_readmitted_then_re_enrolls_by_itself() {
    let stack = Stack::start(&[]).await;
    let store = stack.store().await;
    let first = store.current_credential(stack.uuid).await.unwrap().unwrap().key_id;
    // An operator revokes the connector: presence and keys are gone, the uuid is denied.
    let resp = stack.operator(Method::DELETE, &format!("connectors/unregister/{}", stack.uuid)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(store.resolve_key(&first).await.unwrap().is_none());
    // Its next heartbeat meets `unknown_key_id`, its re-enrollment with the token is refused.
    wait_for("a refused re-enrollment", async || stack.connector.logs().contains("connector_revoked")).await;
    assert!(store.current_credential(stack.uuid).await.unwrap().is_none(), "no key for a revoked connector");
    assert!(store.get_presence(stack.uuid).await.unwrap().is_none());
    // Readmitted by an operator, it comes back by itself.
    let resp = stack.operator(Method::POST, &format!("connectors/readmit/{}", stack.uuid)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    wait_for("re-enrollment", async || {
        store.current_credential(stack.uuid).await.unwrap().is_some_and(|c| c.key_id != first)
            && store.get_presence(stack.uuid).await.unwrap().is_some()
    })
    .await;
    assert!(stack.connector.logs().contains("re-enrolling with the enrollment token"));
    // And dsx-connect's calls work with the new key.
    let a = stack.root().join("a.txt");
    assert_eq!(stack.read_file(a.to_str().unwrap()).await.status(), StatusCode::OK);
}

/// Set a job's status the way any component sharing the Redis does (`<env>:dsx-connect:job:<id>`).
async fn set_job_status(stack: &Stack, job_id: &str, status: &str) {
    let mut conn =
        redis::Client::open(stack.redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{}:dsx-connect:job:{job_id}", stack.env))
        .arg("job_id")
        .arg(job_id)
        .arg("connector_uuid")
        .arg(stack.uuid.to_string())
        .arg("status")
        .arg(status)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn full_scan_waits_while_paused_and_stops_when_cancelled() {
    let stack = Stack::start(&[]).await;
    let job = unique_name("paused-");
    set_job_status(&stack, &job, "paused").await;
    let resp = stack.operator(Method::POST, &format!("connectors/full_scan/{}?job_id={job}", stack.uuid)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(stack.queued_locations().await.is_empty(), "nothing is enqueued while paused");
    set_job_status(&stack, &job, "running").await;
    let done = stack.wait_job_done(&job).await;
    assert_eq!((job_u64(&done, "expected_total"), job_u64(&done, "enqueued_count")), (Some(4), Some(4)));

    let cancelled = unique_name("cancelled-");
    set_job_status(&stack, &cancelled, "cancelled").await;
    let resp = stack.operator(Method::POST, &format!("connectors/full_scan/{}?job_id={cancelled}", stack.uuid)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let done = stack.wait_job_done(&cancelled).await;
    assert_eq!(job_u64(&done, "expected_total"), Some(0));
    assert_eq!(stack.queued_locations().await.len(), 4, "the cancelled job added nothing");
}

/// The connector's OpenAPI document: hidden with DSX-HMAC on; with it off, it lists exactly
/// the routes the connector serves.
#[tokio::test]
async fn openapi_document_is_hidden_when_auth_is_on() {
    let stack = Stack::start(&[]).await;
    let resp = stack.http.get(stack.connector_url("/filesystem-connector/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let open = Stack::start(&[("DSXCONNECTOR_AUTH__ENABLED", "false".into())]).await;
    let resp = open.http.get(open.connector_url("/filesystem-connector/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for route in dsx_connector::routes::table() {
        let (method, path) = (route.method.as_str(), route.path);
        let full = format!("/filesystem-connector{}", path.trim_end_matches('/'));
        assert!(paths[&full][method.to_lowercase()].is_object(), "{method} {full} documented");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        // POST full_scan would start a scan; everything else is harmless with an empty body.
        if path == "/full_scan" {
            continue;
        }
        let resp = open.http.request(m, open.connector_url(&full)).body("{}").send().await.unwrap();
        let status = resp.status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {full}");
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            !(status == StatusCode::NOT_FOUND && body.get("message").is_none()),
            "{method} {full} is documented but not routed: {body}"
        );
    }
    assert_eq!(doc["components"]["schemas"]["ScanRequest"]["type"], "object");
}

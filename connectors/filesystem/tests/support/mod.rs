//! Test support for interop with Python dsx-connect 1.x: a stand-in Python server that
//! answers with the recorded fixture responses, and our filesystem connector run in-process
//! against it (so it holds the fixture key pair, like the captured Python connector).

#![allow(dead_code)] // each test file uses its own part

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use dsx_connector::{ConnectorContext, ConnectorDefaults, ConnectorSettings};
use dsx_hmac::{check_freshness, parse_authorization, unix_now, verify_signature, AuthError, SigningKey};
use dsx_model::{ItemAction, ScanRequest, ScanRequestBatch};
use dsx_testkit::python_fixtures::{self, CONNECTOR_UUID, ENROLLMENT_TOKEN, HMAC_KEY_ID, HMAC_SECRET};
use filesystem_connector::FilesystemRepo;
use serde_json::{json, Value};

pub const API: &str = "/dsx-connect/api/v1";

/// How a job's pause/cancel state is put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobShape {
    /// Python 1.x: `raw` = `{"key","ttl","data":{…,"paused":"1"}}`; 409 = StatusResponse, no `detail`.
    #[default]
    Python,
    /// This server before the change: flat `raw` with `status`; 409 = `{"detail":"job_paused"}`.
    Flat,
    /// This server after the change: Python's `raw` plus a top-level `status`; 409 with both.
    Combined,
}

/// Ways a server that advertises batching may still not queue a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchRefusal {
    /// `202` with fixture 44's body: `status:"error"`, `queued_items:0`.
    DisabledBody,
    /// `202`, `status:"success"` but `queued_items:0`.
    NothingQueued,
    /// `404`: no batch intake at all.
    NoRoute,
}

/// One call the connector made.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub signed: bool,
    pub body: Vec<u8>,
}

impl Call {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Default)]
pub struct ServerState {
    /// `GET config` answers fixture 96 (batching on) instead of 20 (off).
    pub batch_enabled: bool,
    /// Batching advertised, but `request_batch` does not queue: how it says so.
    pub batch_refusal: Option<BatchRefusal>,
    pub shape: JobShape,
    pub paused: bool,
    pub cancelled: bool,
    /// Pause (cancel) the job right after this many items were accepted.
    pub pause_after: Option<usize>,
    pub cancel_after: Option<usize>,
    pub registrations: usize,
    pub calls: Vec<Call>,
    /// Locations accepted by `scan/request` and `scan/request_batch`.
    pub accepted: Vec<String>,
    /// (items, `batch_size` field) of every accepted batch.
    pub batches: Vec<(usize, Option<usize>)>,
    pub refused_batches: usize,
    pub conflicts: usize,
    pub raw_polls_while_paused: usize,
    /// Signature failures and unsigned calls to signed routes.
    pub auth_failures: Vec<String>,
}

impl ServerState {
    pub fn calls_to(&self, method: &str, suffix: &str) -> Vec<&Call> {
        self.calls.iter().filter(|c| c.method == method && c.path.ends_with(suffix)).collect()
    }

    pub fn enqueue_done(&self, job_id: &str) -> Option<Value> {
        let path = format!("{API}/scan/jobs/{job_id}/enqueue_done");
        self.calls.iter().find(|c| c.path == path).map(Call::json)
    }
}

/// A loopback HTTP server answering like the recorded Python 1.x server.
pub struct PythonServer {
    pub url: String,
    pub state: Arc<Mutex<ServerState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PythonServer {
    pub async fn start(init: impl FnOnce(&mut ServerState)) -> Self {
        let mut state = ServerState::default();
        init(&mut state);
        let state = Arc::new(Mutex::new(state));
        let app = Router::new().fallback(handle).with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, state, task }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut ServerState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Wait (polling, with a deadline) until `check` holds.
    pub async fn wait_until(&self, what: &str, check: impl Fn(&ServerState) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.with(|s| check(s)) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {:#?}", self.with(|s| summary(s)));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_enqueue_done(&self, job_id: &str) -> Value {
        self.wait_until(&format!("enqueue_done of {job_id}"), |s| s.enqueue_done(job_id).is_some()).await;
        self.with(|s| s.enqueue_done(job_id)).unwrap()
    }
}

fn summary(s: &ServerState) -> Value {
    json!({
        "calls": s.calls.iter().map(|c| format!("{} {}?{}", c.method, c.path, c.query.as_deref().unwrap_or(""))).collect::<Vec<_>>(),
        "accepted": s.accepted.len(), "conflicts": s.conflicts, "paused": s.paused, "cancelled": s.cancelled,
        "auth_failures": s.auth_failures,
    })
}

fn fixture_body(prefix: &str) -> Vec<u8> {
    python_fixtures::get(prefix).response.message.body
}

fn fixture_json(prefix: &str) -> Value {
    python_fixtures::get(prefix).response.message.json().expect("JSON fixture body")
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json_value(status: StatusCode, body: Value) -> Response {
    json_response(status, serde_json::to_vec(&body).unwrap())
}

/// DSX-HMAC check with the fixture key, as the Python server verifies. `Ok(false)` = unsigned.
fn verify(method: &str, path_and_query: &str, headers: &HeaderMap, body: &[u8]) -> Result<bool, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(false) };
    let parsed = parse_authorization(Some(value.to_str().map_err(|_| AuthError::MalformedHmac)?))?;
    if parsed.key_id()? != HMAC_KEY_ID {
        return Err(AuthError::UnknownKeyId);
    }
    check_freshness(parsed.ts, unix_now(), 60)?;
    verify_signature(&parsed, &SigningKey::new(HMAC_SECRET), method, path_and_query, body)?;
    Ok(true)
}

/// Routes the Python server authenticates with DSX-HMAC.
fn needs_signature(path: &str) -> bool {
    path.starts_with("scan/request")
        || path == "scan/auth_check"
        || path.ends_with("/enqueue_done")
        || path.starts_with("connectors/unregister/")
}

async fn handle(State(state): State<Arc<Mutex<ServerState>>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, 16 << 20).await.unwrap().to_vec();
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let paq = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| path.clone());
    let verified = verify(&method, &paq, &parts.headers, &body);
    let mut s = state.lock().unwrap();
    s.calls.push(Call {
        method: method.clone(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        signed: verified == Ok(true),
        body: body.clone(),
    });
    let Some(route) = path.strip_prefix(API).and_then(|p| p.strip_prefix('/')) else {
        return json_value(StatusCode::NOT_FOUND, json!({ "detail": "Not Found" }));
    };
    match verified {
        Err(code) => {
            s.auth_failures.push(format!("{method} {route}: {}", code.code()));
            return json_value(StatusCode::UNAUTHORIZED, json!({ "detail": code.code() }));
        }
        Ok(false) if needs_signature(route) => {
            s.auth_failures.push(format!("{method} {route}: unsigned"));
            return json_value(StatusCode::UNAUTHORIZED, json!({ "detail": "unknown_key_id" }));
        }
        Ok(_) => {}
    }
    let segments: Vec<&str> = route.split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["connectors", "register"]) => {
            let token = parts.headers.get("x-enrollment-token").and_then(|v| v.to_str().ok()).map(str::trim);
            if token != Some(ENROLLMENT_TOKEN) {
                return json_value(StatusCode::UNAUTHORIZED, json!({ "detail": "invalid_enrollment_token" }));
            }
            s.registrations += 1;
            if s.registrations == 1 {
                json_response(StatusCode::CREATED, fixture_body("01"))
            } else {
                json_response(StatusCode::OK, fixture_body("02"))
            }
        }
        ("DELETE", ["connectors", "unregister", _]) => StatusCode::NO_CONTENT.into_response(),
        ("POST", ["scan", "auth_check"]) => json_response(StatusCode::OK, fixture_body("71")),
        ("GET", ["config"]) => json_response(StatusCode::OK, fixture_body(if s.batch_enabled { "96" } else { "20" })),
        ("GET", ["scan", "jobs", job_id, "raw"]) => {
            if s.paused {
                s.raw_polls_while_paused += 1;
            }
            json_value(StatusCode::OK, raw_job(&s, job_id))
        }
        ("POST", ["scan", "request"]) => {
            let Ok(request) = serde_json::from_slice::<ScanRequest>(&body) else {
                return json_value(StatusCode::UNPROCESSABLE_ENTITY, json!({ "detail": "invalid body" }));
            };
            let job_id = request.scan_job_id.clone().unwrap_or_default();
            if s.paused || s.cancelled {
                return conflict(&mut s, &job_id);
            }
            accept(&mut s, [request.location]);
            json_response(StatusCode::ACCEPTED, fixture_body("29"))
        }
        ("POST", ["scan", "request_batch"]) => {
            let Ok(batch) = serde_json::from_slice::<ScanRequestBatch>(&body) else {
                return json_value(StatusCode::UNPROCESSABLE_ENTITY, json!({ "detail": "invalid body" }));
            };
            let refusal = if s.batch_enabled { s.batch_refusal } else { Some(BatchRefusal::DisabledBody) };
            if let Some(refusal) = refusal {
                s.refused_batches += 1;
                let mut answer = fixture_json("44");
                answer["batch_size"] = json!(batch.batch_size);
                return match refusal {
                    BatchRefusal::DisabledBody => json_value(StatusCode::ACCEPTED, answer),
                    BatchRefusal::NothingQueued => {
                        answer["status"] = json!("success");
                        json_value(StatusCode::ACCEPTED, answer)
                    }
                    BatchRefusal::NoRoute => json_value(StatusCode::NOT_FOUND, json!({ "detail": "Not Found" })),
                };
            }
            if batch.requests.is_empty() {
                return json_response(StatusCode::ACCEPTED, fixture_body("99"));
            }
            let job_id = batch.requests[0].scan_job_id.clone().unwrap_or_default();
            if s.paused || s.cancelled {
                return conflict(&mut s, &job_id);
            }
            let n = batch.requests.len();
            s.batches.push((n, batch.batch_size));
            accept(&mut s, batch.requests.into_iter().map(|r| r.location));
            let mut answer = fixture_json("97");
            answer["queued_items"] = json!(n);
            answer["batch_size"] = json!(batch.batch_size);
            answer["message"] = json!(format!("Queued {n} scan requests in 1 batch task(s)"));
            json_value(StatusCode::ACCEPTED, answer)
        }
        ("POST", ["scan", "jobs", _, "enqueue_done"]) => json_response(StatusCode::OK, fixture_body("34")),
        _ => json_value(StatusCode::NOT_FOUND, json!({ "detail": "Not Found" })),
    }
}

fn accept(s: &mut ServerState, locations: impl IntoIterator<Item = String>) {
    for location in locations {
        s.accepted.push(location);
        if s.pause_after == Some(s.accepted.len()) {
            s.paused = true;
        }
        if s.cancel_after == Some(s.accepted.len()) {
            s.cancelled = true;
        }
    }
}

/// `scan/request` of a paused or cancelled job, in the configured shape (fixtures 74, 87).
fn conflict(s: &mut ServerState, job_id: &str) -> Response {
    s.conflicts += 1;
    let code = if s.cancelled { "job_cancelled" } else { "job_paused" };
    let mut python = fixture_json("74");
    python["description"] = json!(format!("scan_job_id={job_id}"));
    let body = match s.shape {
        JobShape::Python => python,
        JobShape::Flat => json!({ "detail": code }),
        JobShape::Combined => {
            python["detail"] = json!(code);
            python
        }
    };
    json_value(StatusCode::CONFLICT, body)
}

/// `GET scan/jobs/{id}/raw` in the configured shape (fixtures 28, 80, 83, 88).
fn raw_job(s: &ServerState, job_id: &str) -> Value {
    let status = if s.cancelled {
        "cancelled"
    } else if s.paused {
        "paused"
    } else {
        "running"
    };
    // Before its first item Python has no job hash: `data` is `{}`, `ttl` -2 (fixture 28).
    let fresh = s.accepted.is_empty() && !s.paused && !s.cancelled;
    let mut doc = fixture_json(if fresh { "28" } else { "80" });
    doc["key"] = json!(format!("dsxconnect:job:{job_id}"));
    if fresh && s.shape == JobShape::Python {
        return doc;
    }
    let data = doc["data"].as_object_mut().unwrap();
    data.insert("job_id".into(), json!(job_id));
    data.insert("status".into(), json!(status));
    data.insert("enqueued_count".into(), json!(s.accepted.len().to_string()));
    if s.paused {
        data.insert("paused".into(), json!("1"));
    }
    if s.cancelled {
        data.insert("cancel".into(), json!("1"));
        data.insert("finished_at".into(), json!(unix_now().to_string()));
    }
    match s.shape {
        JobShape::Python => doc,
        JobShape::Flat => json!({
            "job_id": job_id, "status": status, "enqueued_count": s.accepted.len(),
            "processed_count": 0, "enqueue_done": false, "expected_total": null,
        }),
        JobShape::Combined => {
            doc["status"] = json!(status);
            doc["detail"] = json!(null);
            doc
        }
    }
}

/// Our filesystem connector, in-process, registered with a stand-in server.
pub struct Connector {
    pub ctx: Arc<ConnectorContext>,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub http: reqwest::Client,
    serve: tokio::task::JoinHandle<()>,
    registration: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.serve.abort();
        self.registration.abort();
    }
}

const DEFAULTS: ConnectorDefaults = ConnectorDefaults {
    name: "filesystem-connector",
    display_name: "Filesystem",
    item_action: ItemAction::Move,
    port: 8620,
};

impl Connector {
    /// Start with auth on and the fixture's enrollment token and uuid; waits until registered.
    pub async fn start(server: &PythonServer, asset: &Path, quarantine: &Path, extra: &[(&str, &str)]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("connector_uuid.txt"), CONNECTOR_UUID).unwrap();
        let mut vars: Vec<(String, String)> = vec![
            ("DSXCONNECTOR_ASSET".into(), asset.display().to_string()),
            ("DSXCONNECTOR_ITEM_ACTION_MOVE_METAINFO".into(), quarantine.display().to_string()),
            ("DSXCONNECTOR_CONNECTOR_URL".into(), base.clone()),
            ("DSXCONNECTOR_DSX_CONNECT_URL".into(), server.url.clone()),
            ("DSXCONNECTOR_DATA_DIR".into(), data.path().display().to_string()),
            ("DSXCONNECTOR_AUTH__ENABLED".into(), "true".into()),
            ("DSXCONNECT_ENROLLMENT_TOKEN".into(), ENROLLMENT_TOKEN.into()),
        ];
        for (k, v) in extra {
            vars.retain(|(key, _)| key != k);
            vars.push((k.to_string(), v.to_string()));
        }
        let settings = ConnectorSettings::from_lookup(&DEFAULTS, |k| {
            vars.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone())
        })
        .unwrap();
        let repo = FilesystemRepo::new(&settings.asset, &settings.item_action_move_metainfo).unwrap();
        let uuid = dsx_connector::load_or_create_uuid(data.path()).unwrap();
        let ctx = ConnectorContext::new(settings, Arc::new(repo), uuid).unwrap();
        let registration = tokio::spawn(Arc::clone(&ctx).keep_registered());
        let app = dsx_connector::routes::router(Arc::clone(&ctx)).into_make_service_with_connect_info::<SocketAddr>();
        let serve = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ctx.is_ready() {
            assert!(Instant::now() < deadline, "the connector never registered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(ctx.dsx.key_id().as_deref(), Some(HMAC_KEY_ID), "holds the key pair of fixture 01");
        Self { ctx, base, http: reqwest::Client::new(), serve, registration, _data: data }
    }

    /// A call signed with the fixture key and a fresh ts/nonce, as the Python server signs.
    pub async fn signed(&self, method: &str, path_and_query: &str, body: Vec<u8>) -> reqwest::Response {
        let auth = dsx_hmac::sign_request(&SigningKey::new(HMAC_SECRET), HMAC_KEY_ID, method, path_and_query, &body);
        self.http
            .request(method.parse().unwrap(), format!("{}{path_and_query}", self.base))
            .header("Authorization", auth)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Start a full scan the way the Python server does (fixtures 27, 41, 43).
    pub async fn full_scan(&self, query: &str) {
        let resp = self.signed("POST", &format!("/filesystem-connector/full_scan?{query}"), Vec::new()).await;
        assert_eq!(resp.status(), 200);
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(
            (answer["status"].as_str(), answer["message"].as_str()),
            (Some("success"), Some("Full scan initiated"))
        );
    }
}

/// `n` files of 64 bytes in two folders, like the capture's test folders.
pub fn populate(asset: &Path, n: usize) -> Vec<String> {
    let mut locations = Vec::new();
    for i in 0..n {
        let path = asset.join(if i % 2 == 0 { "a" } else { "b" }).join(format!("file-{i:05}.txt"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{:<64}", format!("benign file {i}"))).unwrap();
        locations.push(path.display().to_string());
    }
    locations.sort();
    locations
}

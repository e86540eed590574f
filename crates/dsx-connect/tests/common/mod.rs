//! Harness for end-to-end tests: the real `dsx-connect serve` binary on a loopback port,
//! backed by a real redis-server or the embedded store, driven over HTTP with reqwest.
#![allow(dead_code)]

use std::time::Duration;

use dsx_hmac::{generate_nonce, unix_now, SigningKey};
use dsx_testkit::{free_port, unique_name, RedisServer, Service, TestRedis};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

pub const ENROLL: &str = "enroll-token-for-tests";
pub const OPERATOR: &str = "operator-token-for-tests";
pub const PREFIX: &str = "/dsx-connect/api/v1";

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Redis,
    Embedded,
}

enum RedisHandle {
    Shared(TestRedis),
    Private(RedisServer),
}

pub struct Server {
    pub svc: Service,
    redis: Option<RedisHandle>,
    pub data_dir: tempfile::TempDir,
    pub env: Vec<(&'static str, String)>,
    pub http: reqwest::Client,
}

/// Default environment: auth on, one enrollment token, one operator token.
pub fn auth_env() -> Vec<(&'static str, String)> {
    vec![
        ("DSXCONNECT_AUTH__ENABLED", "true".into()),
        ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN", ENROLL.into()),
        ("DSXCONNECT_AUTH__ADMIN_TOKENS", OPERATOR.into()),
    ]
}

impl Server {
    pub fn start(backend: Backend, extra: &[(&'static str, String)]) -> Self {
        let redis = match backend {
            Backend::Redis => Some(RedisHandle::Shared(TestRedis::get())),
            Backend::Embedded => None,
        };
        Self::start_with(redis, extra)
    }

    /// On a private redis-server the test may stop and restart.
    pub fn start_private_redis(extra: &[(&'static str, String)]) -> Self {
        Self::start_with(Some(RedisHandle::Private(RedisServer::start())), extra)
    }

    fn start_with(redis: Option<RedisHandle>, extra: &[(&'static str, String)]) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let mut env = auth_env();
        env.push(("DSXCONNECT_DATA_DIR", data_dir.path().display().to_string()));
        env.push(("DSXCONNECT_APP_ENV", unique_name("t")));
        env.push(("DSXCONNECT_LOG_LEVEL", "info,tower_http=debug".into()));
        match &redis {
            Some(RedisHandle::Shared(r)) => env.push(("DSXCONNECT_REDIS_URL", r.url.clone())),
            Some(RedisHandle::Private(r)) => env.push(("DSXCONNECT_REDIS_URL", r.url())),
            None => {}
        }
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k, v.clone()));
        }
        let svc = spawn_server(&env);
        Self { svc, redis, data_dir, env, http: reqwest::Client::new() }
    }

    /// Stop and start the server process with the same settings and data.
    pub fn restart(&mut self) {
        self.svc.kill();
        self.svc = spawn_server(&self.env);
    }

    pub fn private_redis(&mut self) -> &mut RedisServer {
        match &mut self.redis {
            Some(RedisHandle::Private(r)) => r,
            _ => panic!("not started with a private redis"),
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.svc.base_url(), path_and_query)
    }

    pub fn api(&self, path: &str) -> String {
        self.url(&format!("{PREFIX}/{path}"))
    }

    pub async fn register(&self, body: &Value, token: Option<&str>) -> Response {
        let mut req = self.http.post(self.api("connectors/register")).json(body);
        if let Some(t) = token {
            req = req.header("X-Enrollment-Token", t);
        }
        req.send().await.unwrap()
    }

    /// Register a new connector with the enrollment token; asserts 201 and credential shapes.
    pub async fn enroll(&self) -> Keys {
        let uuid = Uuid::new_v4();
        let body = connector_body(uuid, "http://127.0.0.1:9/filesystem-connector");
        let resp = self.register(&body, Some(ENROLL)).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let json: Value = resp.json().await.unwrap();
        Keys::from_registration(uuid, &json)
    }

    /// A signed request, as an honest connector sends it.
    pub async fn signed(&self, keys: &Keys, method: Method, path_and_query: &str, body: &[u8]) -> Response {
        let auth = keys.sign(method.as_str(), path_and_query, unix_now(), &generate_nonce(), body);
        self.send(method, path_and_query, Some(auth), body).await
    }

    /// Send with an explicit `Authorization` header (or none).
    pub async fn send(&self, method: Method, path_and_query: &str, auth: Option<String>, body: &[u8]) -> Response {
        let mut req = self.http.request(method, self.url(path_and_query)).body(body.to_vec());
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send().await.unwrap()
    }

    /// An operator call (bearer token) to `PREFIX/<path>`.
    pub async fn operator(&self, method: Method, path: &str) -> Response {
        self.http.request(method, self.api(path)).bearer_auth(OPERATOR).send().await.unwrap()
    }

    pub async fn operator_get(&self, path: &str) -> Response {
        self.http.get(self.api(path)).bearer_auth(OPERATOR).send().await.unwrap()
    }

    pub fn logs(&self) -> String {
        self.svc.logs()
    }
}

/// Start the server with `env` where it must refuse to start: its exit code and output.
pub fn start_expecting_refusal(env: &[(&str, String)]) -> (Option<i32>, String) {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut env = env.to_vec();
    env.push(("DSXCONNECT_DATA_DIR", dir.path().display().to_string()));
    let mut svc = Service::spawn(
        dsx_testkit::workspace_bin("dsx-connect").to_str().unwrap(),
        &["serve", "--listen", &format!("127.0.0.1:{port}")],
        &env,
        port,
    );
    let code = svc.wait_exit(Duration::from_secs(20));
    (code, svc.logs())
}

fn spawn_server(env: &[(&'static str, String)]) -> Service {
    let port = free_port();
    let mut svc = Service::spawn(
        dsx_testkit::workspace_bin("dsx-connect").to_str().unwrap(),
        &["serve", "--listen", &format!("127.0.0.1:{port}")],
        env,
        port,
    );
    svc.wait_http(&format!("{PREFIX}/healthz"), 200, Duration::from_secs(20));
    svc
}

pub fn connector_body(uuid: Uuid, url: &str) -> Value {
    json!({
        "name": "filesystem-connector",
        "display_name": "Filesystem",
        "uuid": uuid,
        "url": url,
        "status": "ready",
        "item_action": "move",
        "asset": "/data/scan",
    })
}

#[derive(Clone, Debug)]
pub struct Keys {
    pub uuid: Uuid,
    pub key_id: String,
    pub secret: String,
}

impl Keys {
    pub fn from_registration(uuid: Uuid, json: &Value) -> Self {
        Self {
            uuid,
            key_id: json["hmac_key_id"].as_str().expect("hmac_key_id in response").to_owned(),
            secret: json["hmac_secret"].as_str().expect("hmac_secret in response").to_owned(),
        }
    }

    pub fn sign(&self, method: &str, path_and_query: &str, ts: u64, nonce: &str, body: &[u8]) -> String {
        dsx_hmac::authorization_header(
            &SigningKey::new(&self.secret),
            &self.key_id,
            method,
            path_and_query,
            ts,
            nonce,
            body,
        )
    }
}

/// `{"detail": …}` of an error response, asserting its status.
pub async fn detail(resp: Response, status: StatusCode) -> String {
    assert_eq!(resp.status(), status, "unexpected status");
    let json: Value = resp.json().await.unwrap();
    json["detail"].as_str().unwrap_or_default().to_owned()
}

pub fn auth_check_path() -> String {
    format!("{PREFIX}/scan/auth_check")
}

/// How a [`StandInConnector`] answers dsx-connect's signed `GET config` key check.
#[derive(Clone, Debug)]
pub enum KeyMode {
    /// Verifies DSX-HMAC with these keys (an honest connector that holds its key).
    Holds(Keys),
    /// Refuses every call with `401 unknown_key_id` (restarted; lost its key).
    Lost,
    /// Accepts every call (inbound auth off, the Python 1.x default).
    NoVerify,
    /// Answers 503 (starting or overloaded).
    Busy,
    /// Answers `503 not_enrolled`, as our connectors do until they hold a key.
    NotEnrolled,
}

/// A real HTTP server on loopback standing in for a connector's `GET <name>/config`, the call
/// dsx-connect makes to check which key a live connector holds. Counts the calls it gets.
pub struct StandInConnector {
    pub url: String,
    mode: std::sync::Arc<std::sync::Mutex<KeyMode>>,
    pub calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl StandInConnector {
    pub async fn start(mode: KeyMode) -> Self {
        use axum::http::{HeaderMap, StatusCode as S};
        let mode = std::sync::Arc::new(std::sync::Mutex::new(mode));
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (m, c) = (mode.clone(), calls.clone());
        let app = axum::Router::new().route(
            "/filesystem-connector/config",
            axum::routing::get(move |headers: HeaderMap| {
                let (m, c) = (m.clone(), c.clone());
                async move {
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mode = m.lock().unwrap().clone();
                    let refuse = |d: &str| (S::UNAUTHORIZED, axum::Json(json!({ "detail": d })));
                    match mode {
                        KeyMode::NoVerify => (S::OK, axum::Json(json!({}))),
                        KeyMode::Busy => (S::SERVICE_UNAVAILABLE, axum::Json(json!({ "detail": "busy" }))),
                        KeyMode::NotEnrolled => {
                            (S::SERVICE_UNAVAILABLE, axum::Json(json!({ "detail": "not_enrolled" })))
                        }
                        KeyMode::Lost => refuse("unknown_key_id"),
                        KeyMode::Holds(keys) => {
                            let value = headers.get("authorization").and_then(|v| v.to_str().ok());
                            let Ok(parsed) = dsx_hmac::parse_authorization(value) else {
                                return refuse("missing_hmac");
                            };
                            if parsed.key_id() != Ok(keys.key_id.as_str()) {
                                return refuse("unknown_key_id");
                            }
                            let key = SigningKey::new(&keys.secret);
                            match dsx_hmac::verify_signature(&parsed, &key, "GET", "/filesystem-connector/config", b"")
                            {
                                Ok(()) => (S::OK, axum::Json(json!({}))),
                                Err(_) => refuse("bad_signature"),
                            }
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/filesystem-connector", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, mode, calls, task }
    }

    pub fn set(&self, mode: KeyMode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for StandInConnector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

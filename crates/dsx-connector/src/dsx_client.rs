//! Outbound calls to dsx-connect: registration (enrollment token, then signed refreshes),
//! and every later call signed with the connector's key. Credentials live in memory only.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dsx_hmac::{sign_request, SigningKey};
use dsx_model::{Connector, RegistrationResponse, API_PREFIX};
use dsx_util::{Backoff, Jitter};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

/// One DSX-HMAC key as the connector holds it: the id and the pre-keyed HMAC state.
/// The secret text itself is not kept after the key is built.
pub struct Credentials {
    pub key_id: String,
    pub key: SigningKey,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ key_id: {}, key: <redacted> }}", self.key_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("dsx-connect unreachable: {0}")]
    Unreachable(String),
    #[error("dsx-connect refused: {status} {detail}")]
    Refused { status: u16, detail: String },
    #[error("unexpected answer from dsx-connect: {0}")]
    Protocol(String),
}

impl ClientError {
    pub fn detail(&self) -> Option<&str> {
        match self {
            ClientError::Refused { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

/// A key recently replaced keeps verifying inbound calls this long (dsx-connect may have
/// looked the old key up just before the rotation).
fn previous_key_grace(skew: u64) -> Duration {
    Duration::from_secs(2 * skew.max(1))
}

/// What dsx-connect's `GET config` advertises about `scan/request_batch`
/// (`workers.scan_request_batch_*`; Python 1.x ships it off by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct BatchCapabilities {
    #[serde(default, rename = "scan_request_batch_enabled")]
    pub enabled: bool,
    #[serde(default, rename = "scan_request_batch_default_size")]
    pub default_size: Option<usize>,
    #[serde(default, rename = "scan_request_batch_max_size")]
    pub max_size: Option<usize>,
}

/// The part of `GET config` a connector reads.
#[derive(Debug, Deserialize)]
struct ServerConfig {
    #[serde(default)]
    workers: Option<BatchCapabilities>,
}

/// Capabilities are re-read at most this often: a full scan asks once, not per batch.
const CAPABILITIES_TTL: Duration = Duration::from_secs(30);

pub struct DsxClient {
    http: reqwest::Client,
    base_url: String,
    token: Option<SecretString>,
    skew: u64,
    current: RwLock<Option<Arc<Credentials>>>,
    previous: RwLock<Option<(Arc<Credentials>, Instant)>>,
    model: RwLock<Connector>,
    capabilities: Mutex<Option<(Instant, BatchCapabilities)>>,
}

impl DsxClient {
    pub fn new(base_url: &str, token: Option<SecretString>, skew: u64, model: Connector) -> Self {
        Self::with_tls(base_url, token, skew, model, &dsx_service::ClientTls::default()).expect("HTTP client")
    }

    /// [`DsxClient::new`] checking dsx-connect's certificate as `tls` says; an error names the
    /// file that could not be used.
    pub fn with_tls(
        base_url: &str,
        token: Option<SecretString>,
        skew: u64,
        model: Connector,
        tls: &dsx_service::ClientTls,
    ) -> Result<Self, String> {
        let builder =
            reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(30));
        let http = dsx_service::http_client(builder, tls)?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
            skew,
            current: RwLock::new(None),
            previous: RwLock::new(None),
            model: RwLock::new(model),
            capabilities: Mutex::new(None),
        })
    }

    pub fn model(&self) -> Connector {
        self.model.read().expect("model lock").clone()
    }

    pub fn update_model(&self, f: impl FnOnce(&mut Connector)) {
        f(&mut self.model.write().expect("model lock"));
    }

    pub fn key_id(&self) -> Option<String> {
        self.current.read().expect("creds lock").as_ref().map(|c| c.key_id.clone())
    }

    /// The key for an inbound call's `key_id`: current, or the previous one inside its grace.
    pub fn key_for(&self, key_id: &str) -> Option<Arc<Credentials>> {
        if let Some(c) = self.current.read().expect("creds lock").as_ref().filter(|c| c.key_id == key_id) {
            return Some(Arc::clone(c));
        }
        let previous = self.previous.read().expect("creds lock");
        previous.as_ref().filter(|(c, until)| c.key_id == key_id && Instant::now() < *until).map(|(c, _)| Arc::clone(c))
    }

    fn install(&self, key_id: String, secret: &str) {
        let fresh = Arc::new(Credentials { key_id, key: SigningKey::new(secret) });
        let old = self.current.write().expect("creds lock").replace(fresh);
        if let Some(old) = old {
            *self.previous.write().expect("creds lock") = Some((old, Instant::now() + previous_key_grace(self.skew)));
        }
    }

    fn forget_current(&self) {
        self.current.write().expect("creds lock").take();
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}/{path}", self.base_url)
    }

    /// Build a request, signed when the connector holds a key. The signed path is the one
    /// reqwest puts on the wire (after URL normalisation), so both sides agree.
    fn request(&self, method: Method, path: &str, body: Vec<u8>) -> Result<reqwest::RequestBuilder, ClientError> {
        let url = reqwest::Url::parse(&self.url(path)).map_err(|e| ClientError::Protocol(format!("bad URL: {e}")))?;
        let mut builder = self.http.request(method.clone(), url.clone());
        if let Some(creds) = self.current.read().expect("creds lock").as_ref() {
            let paq = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            };
            builder =
                builder.header("Authorization", sign_request(&creds.key, &creds.key_id, method.as_str(), &paq, &body));
        }
        if !body.is_empty() {
            builder = builder.header("Content-Type", "application/json");
        }
        Ok(builder.body(body))
    }

    async fn send_once(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        intake_key: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self.request(method, path, body)?;
        if let Some(key) = intake_key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.map_err(|e| ClientError::Unreachable(dsx_service::error_chain(&e)))
    }

    /// Register (or refresh). Signed when a key is held; after `unknown_key_id` (the server
    /// lost or revoked it) falls back to the enrollment token, which mints a fresh key.
    pub async fn register(&self, rotate: bool) -> Result<StatusCode, ClientError> {
        let body = serde_json::to_vec(&self.model()).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let path = if rotate { "connectors/register?rotate=true" } else { "connectors/register" };
        if self.key_id().is_some() {
            // The token rides along so a 1.x server, which expects it on every registration,
            // accepts the heartbeat too; this server goes by the signature.
            let mut req = self.request(Method::POST, path, body.clone())?;
            if let Some(token) = &self.token {
                req = req.header("X-Enrollment-Token", token.expose_secret());
            }
            let resp = req.send().await.map_err(|e| ClientError::Unreachable(dsx_service::error_chain(&e)))?;
            match check(resp).await {
                Ok((status, json)) => return self.accept_registration(status, json),
                Err(err) if err.detail() == Some("unknown_key_id") => {
                    tracing::warn!(
                        "dsx-connect no longer knows this connector's key; re-enrolling with the enrollment token"
                    );
                    self.forget_current();
                }
                Err(err) => return Err(err),
            }
        }
        let mut req = self.request(Method::POST, "connectors/register", body)?;
        if let Some(token) = &self.token {
            req = req.header("X-Enrollment-Token", token.expose_secret());
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable(dsx_service::error_chain(&e)))?;
        let (status, json) = check(resp).await?;
        self.accept_registration(status, json)
    }

    fn accept_registration(&self, status: StatusCode, json: Value) -> Result<StatusCode, ClientError> {
        let parsed: RegistrationResponse =
            serde_json::from_value(json).map_err(|e| ClientError::Protocol(format!("registration response: {e}")))?;
        if let (Some(kid), Some(secret)) = (parsed.hmac_key_id, parsed.hmac_secret) {
            tracing::info!(key_id = %kid, "received DSX-HMAC credentials");
            self.install(kid, &secret);
        }
        tracing::debug!(message = %parsed.message, "registration accepted");
        Ok(status)
    }

    /// A signed call; on `unknown_key_id` re-registers once and retries.
    pub async fn call(&self, method: Method, path: &str, body: Vec<u8>) -> Result<(StatusCode, Value), ClientError> {
        self.call_keyed(method, path, body, None).await
    }

    async fn call_keyed(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        intake_key: Option<&str>,
    ) -> Result<(StatusCode, Value), ClientError> {
        let resp = self.send_once(method.clone(), path, body.clone(), intake_key).await?;
        match check(resp).await {
            Err(err) if err.detail() == Some("unknown_key_id") => {
                self.register(false).await?;
                check(self.send_once(method, path, body, intake_key).await?).await
            }
            other => other,
        }
    }

    pub async fn post_json(
        &self,
        path: &str,
        value: &impl serde::Serialize,
    ) -> Result<(StatusCode, Value), ClientError> {
        self.post_json_once(path, value, None).await
    }

    /// [`Self::post_json`] with an `Idempotency-Key`: the caller sends the same key on every
    /// retry of one submission, so dsx-connect queues it once even when an answer was lost.
    pub async fn post_json_once(
        &self,
        path: &str,
        value: &impl serde::Serialize,
        intake_key: Option<&str>,
    ) -> Result<(StatusCode, Value), ClientError> {
        let body = serde_json::to_vec(value).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call_keyed(Method::POST, path, body, intake_key).await
    }

    /// The server's batch intake, from `GET config` (cached for 30 s). `None` when the server
    /// cannot say (unreachable, or no `workers` section): callers then decide for themselves.
    pub async fn batch_capabilities(&self) -> Option<BatchCapabilities> {
        if let Some((at, caps)) = *self.capabilities.lock().expect("capabilities lock") {
            if at.elapsed() < CAPABILITIES_TTL {
                return Some(caps);
            }
        }
        let caps = match self.call(Method::GET, "config", Vec::new()).await {
            Ok((_, json)) => match serde_json::from_value::<ServerConfig>(json) {
                Ok(ServerConfig { workers: Some(caps) }) => caps,
                Ok(_) => return None,
                Err(err) => {
                    tracing::warn!(error = %err, "GET config: unexpected workers section");
                    return None;
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, "GET config failed; batch capability unknown");
                return None;
            }
        };
        *self.capabilities.lock().expect("capabilities lock") = Some((Instant::now(), caps));
        Some(caps)
    }

    /// Signed unregister (graceful shutdown).
    pub async fn unregister(&self) -> Result<(), ClientError> {
        let uuid = self.model().uuid;
        self.call(Method::DELETE, &format!("connectors/unregister/{uuid}"), Vec::new()).await.map(|_| ())
    }
}

/// Split a response into success JSON or a `Refused` error carrying `detail`.
async fn check(resp: reqwest::Response) -> Result<(StatusCode, Value), ClientError> {
    let status = resp.status();
    let text = resp.text().await.map_err(|e| ClientError::Unreachable(dsx_service::error_chain(&e)))?;
    let json: Value =
        if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    if status.is_success() {
        Ok((status, json))
    } else {
        let detail = match &json {
            Value::Object(o) => o.get("detail").map(|d| d.as_str().map(str::to_owned).unwrap_or_else(|| d.to_string())),
            _ => None,
        };
        Err(ClientError::Refused { status: status.as_u16(), detail: detail.unwrap_or_else(|| json.to_string()) })
    }
}

/// Registration retry schedule: 2 s base doubling to a 60 s cap, ±10 % jitter.
pub const REGISTER_BACKOFF: Backoff =
    Backoff::new(Duration::from_secs(2), Duration::from_secs(60), Jitter::Spread(0.1));

/// Registration retry delay before retry `attempt` (0, 1, …).
pub fn backoff(attempt: u32) -> Duration {
    REGISTER_BACKOFF.delay(attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        for (attempt, nominal) in [(0, 2.0), (1, 4.0), (3, 16.0), (5, 60.0), (30, 60.0)] {
            let d = backoff(attempt).as_secs_f64();
            assert!(d >= nominal * 0.9 - 1e-9 && d <= nominal * 1.1 + 1e-9, "attempt {attempt}: {d}");
        }
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let c = Credentials { key_id: "kid".into(), key: SigningKey::new("s3cret") };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}

//! Calls from dsx-connect to a connector. The URL and the key come from the registry by
//! connector uuid, never from a request body (H4); every call is signed with that
//! connector's own key.

use std::sync::Arc;
use std::time::Duration;

use dsx_hmac::{generate_key_id, generate_secret, sign_request, SigningKey};
use dsx_store::{Credential, Store, StoreError};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::url_policy::{PolicyResolver, UrlPolicy};

/// Longest wait for a TCP (and TLS) connection to a connector.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest silence while waiting for a connector's answer or the next chunk of a streamed
/// body. A per-read limit, not a total: a large `read_file` that keeps flowing is never cut
/// (Python 1.x also waits 30 s per network operation).
const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The key check made during a token-only re-registration answers quickly or not at all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("connector {0} is not registered")]
    NotRegistered(Uuid),
    #[error("connector {0} holds no credentials")]
    NoCredentials(Uuid),
    #[error("connector unreachable: {0}")]
    Unreachable(String),
    /// The registered URL is not one dsx-connect may call (`DSXCONNECT_CONNECTORS__URL_ALLOW`).
    #[error("connector URL refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a signed probe of a connector's `GET config` shows about the key it holds
/// (docs/authentication.md, "Re-registration").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProbe {
    /// It accepted the call signed with its current key and refused one signed with a random key.
    Holds,
    /// It refused the call signed with its current key, or says it holds none
    /// (`503 not_enrolled`): it lost the key (a restart).
    Lacks,
    /// It accepts any call, signed or not: it cannot show which key it holds.
    DoesNotVerify,
    /// No usable answer (down, starting, 5xx, or a clock problem).
    Unknown(String),
}

#[derive(Clone)]
pub struct ConnectorClient {
    http: reqwest::Client,
    store: Arc<dyn Store>,
    sign: bool,
    policy: Arc<UrlPolicy>,
}

impl ConnectorClient {
    /// `sign`: whether auth is enabled (calls are then signed with the connector's key).
    /// Every target, literal or resolved, must pass `policy` when the call is made.
    pub fn new(store: Arc<dyn Store>, sign: bool, policy: UrlPolicy) -> Self {
        Self::with_tls(store, sign, policy, &dsx_service::ClientTls::default()).expect("HTTP client")
    }

    /// [`ConnectorClient::new`] with how connectors' certificates are checked and the client
    /// certificate dsx-connect presents (`DSXCONNECT_CONNECTORS__*`).
    pub fn with_tls(
        store: Arc<dyn Store>,
        sign: bool,
        policy: UrlPolicy,
        tls: &dsx_service::ClientTls,
    ) -> Result<Self, String> {
        let policy = Arc::new(policy);
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_IDLE_TIMEOUT)
            .dns_resolver(Arc::new(PolicyResolver(Arc::clone(&policy))))
            // A redirect would leave the checked URL.
            .redirect(reqwest::redirect::Policy::none());
        let http = dsx_service::http_client(builder, tls)?;
        Ok(Self { http, store, sign, policy })
    }

    /// A signed request to `<registered url>/<path_and_query>`. The key is looked up on every
    /// call, so a retry after a `401` uses whatever key the connector holds by then.
    pub async fn request(
        &self,
        uuid: Uuid,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, OutboundError> {
        let connector = self.store.get_presence(uuid).await?.ok_or(OutboundError::NotRegistered(uuid))?;
        let credential = if self.sign {
            Some(self.store.current_credential(uuid).await?.ok_or(OutboundError::NoCredentials(uuid))?)
        } else {
            None
        };
        self.send(&connector.url, credential.as_ref(), method, path_and_query, body, None).await
    }

    /// A signed request to `base_url` with a credential the caller already holds (the
    /// workers' registry cache).
    pub async fn send_to(
        &self,
        base_url: &str,
        credential: Option<&Credential>,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, OutboundError> {
        self.send(base_url, credential, method, path_and_query, body, None).await
    }

    async fn send(
        &self,
        base_url: &str,
        credential: Option<&Credential>,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
        deadline: Option<Duration>,
    ) -> Result<reqwest::Response, OutboundError> {
        let base = self.policy.parse_url(base_url).map_err(|e| OutboundError::Refused(e.to_string()))?;
        if let Some(ip) = literal_ip(&base) {
            let port = base.port_or_known_default().unwrap_or(80);
            self.policy
                .check_addr(&ip.to_string(), std::net::SocketAddr::new(ip, port))
                .map_err(|e| OutboundError::Refused(e.to_string()))?;
        }
        let url = UrlPolicy::join(&base, path_and_query);
        let mut req = self.http.request(method.clone(), url.clone());
        if let Some(deadline) = deadline {
            req = req.timeout(deadline);
        }
        if let Some(credential) = credential {
            let paq = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            };
            let key = SigningKey::new(credential.secret.expose_secret());
            req = req.header("Authorization", sign_request(&key, &credential.key_id, method.as_str(), &paq, &body));
        }
        if !body.is_empty() {
            req = req.header("Content-Type", "application/json");
        }
        req.body(body).send().await.map_err(|e| OutboundError::Unreachable(error_chain(&e)))
    }

    /// Does the connector at `base_url` hold `current`? A signed `GET config` (every
    /// connector verifies it when its inbound auth is on), then, if that passed, the same call
    /// signed with a random key to tell a connector that verifies from one that accepts all.
    pub async fn probe_key(&self, base_url: &str, current: &Credential) -> KeyProbe {
        let signed = self.send(base_url, Some(current), Method::GET, "config", Vec::new(), Some(PROBE_TIMEOUT)).await;
        match signed {
            Err(err) => return KeyProbe::Unknown(err.to_string()),
            Ok(resp) if resp.status().is_server_error() => {
                let status = resp.status();
                // Our connectors answer `503 not_enrolled` until they hold a key: a restarted one.
                if status == StatusCode::SERVICE_UNAVAILABLE && detail_of(resp).await == "not_enrolled" {
                    return KeyProbe::Lacks;
                }
                return KeyProbe::Unknown(status.to_string());
            }
            Ok(resp) if refused(resp.status()) => {
                let detail = detail_of(resp).await;
                // A clock or replay complaint says nothing about the key.
                if matches!(detail.as_str(), "stale_request" | "replayed_request") {
                    return KeyProbe::Unknown(format!("connector answered {detail}"));
                }
                return KeyProbe::Lacks;
            }
            Ok(_) => {}
        }
        let random = Credential {
            key_id: generate_key_id(),
            secret: secrecy::SecretString::from(generate_secret()),
            issued_at: 0,
        };
        match self.send(base_url, Some(&random), Method::GET, "config", Vec::new(), Some(PROBE_TIMEOUT)).await {
            Ok(resp) if refused(resp.status()) => KeyProbe::Holds,
            Ok(resp) if resp.status().is_server_error() => KeyProbe::Unknown(resp.status().to_string()),
            Ok(_) => KeyProbe::DoesNotVerify,
            Err(err) => KeyProbe::Unknown(err.to_string()),
        }
    }
}

/// The address of a URL whose host is an IP literal (those bypass the resolver).
fn literal_ip(url: &reqwest::Url) -> Option<std::net::IpAddr> {
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

fn refused(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

async fn detail_of(resp: reqwest::Response) -> String {
    let json: serde_json::Value = resp.json().await.unwrap_or_default();
    json.get("detail").and_then(|d| d.as_str()).unwrap_or_default().to_owned()
}

/// `error sending request` alone hides the cause (refused, timed out, unknown issuer…).
pub use dsx_service::error_chain;

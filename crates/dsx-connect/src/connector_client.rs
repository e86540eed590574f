//! Calls from dsx-connect to a connector. The URL and the key come from the registry by
//! connector uuid, never from a request body (H4); every call is signed with that
//! connector's own key.

use std::sync::Arc;
use std::time::Duration;

use dsx_hmac::{sign_request, SigningKey};
use dsx_store::{Store, StoreError};
use reqwest::Method;
use secrecy::ExposeSecret;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("connector {0} is not registered")]
    NotRegistered(Uuid),
    #[error("connector {0} holds no credentials")]
    NoCredentials(Uuid),
    #[error("connector unreachable: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct ConnectorClient {
    http: reqwest::Client,
    store: Arc<dyn Store>,
    sign: bool,
}

impl ConnectorClient {
    /// `sign`: whether auth is enabled (calls are then signed with the connector's key).
    pub fn new(store: Arc<dyn Store>, sign: bool, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .build()
            .expect("HTTP client");
        Self { http, store, sign }
    }

    /// A signed request to `<registered url>/<path_and_query>`.
    pub async fn request(
        &self,
        uuid: Uuid,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, OutboundError> {
        let connector = self.store.get_presence(uuid).await?.ok_or(OutboundError::NotRegistered(uuid))?;
        let target = format!("{}/{}", connector.url.trim_end_matches('/'), path_and_query.trim_start_matches('/'));
        let url =
            reqwest::Url::parse(&target).map_err(|e| OutboundError::Unreachable(format!("bad URL {target}: {e}")))?;
        let mut req = self.http.request(method.clone(), url.clone());
        if self.sign {
            let credential = self.store.current_credential(uuid).await?.ok_or(OutboundError::NoCredentials(uuid))?;
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
        req.body(body).send().await.map_err(|e| OutboundError::Unreachable(e.to_string()))
    }
}

//! What a worker needs from connectors: the item's bytes (`read_file`) and its remediation
//! (`item_action`), behind a trait so the worker's decisions can be tested without processes.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use dsx_model::{Connector, FailureClass, ScanRequest};
use dsx_store::{Credential, Store};
use futures_util::{Stream, TryStreamExt};
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use crate::connector_client::{ConnectorClient, OutboundError};

/// The bytes of an item, as the connector streams them.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A connector call that did not give a usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoFailure {
    pub class: FailureClass,
    pub detail: String,
}

impl IoFailure {
    pub fn new(class: FailureClass, detail: impl Into<String>) -> Self {
        Self { class, detail: detail.into() }
    }
}

/// The connector's answer to `item_action`: its HTTP status and JSON body (`Null` when it sent
/// none). The worker decides what the answer means.
#[derive(Debug, Clone)]
pub struct ActionReply {
    pub status: u16,
    pub body: Value,
}

#[async_trait]
pub trait ConnectorIo: Send + Sync + 'static {
    /// The connector's registered model (for the result document and the scanner's
    /// metadata); `None` when it is not live.
    async fn connector(&self, uuid: Uuid) -> Option<Connector>;
    /// `POST read_file`: the item's bytes, or why not.
    async fn read_file(&self, uuid: Uuid, request: &ScanRequest) -> Result<ByteStream, IoFailure>;
    /// `PUT item_action`: the connector's answer, or why it was not delivered.
    async fn item_action(&self, uuid: Uuid, request: &ScanRequest) -> Result<ActionReply, IoFailure>;
}

/// How long a connector's registry entry and key are reused before they are looked up again.
/// A 401/403 or a connection failure drops the entry at once, so a key change or a move is
/// picked up by the next attempt.
const REGISTRY_TTL: Duration = Duration::from_secs(2);

struct Known {
    connector: Connector,
    credential: Option<Credential>,
    at: Instant,
}

/// [`ConnectorIo`] over HTTP: signed calls to the URL and with the key the registry holds,
/// both cached for [`REGISTRY_TTL`] so a file costs no store lookups.
pub struct HttpConnectorIo {
    client: ConnectorClient,
    store: Arc<dyn Store>,
    sign: bool,
    known: Mutex<HashMap<Uuid, Arc<Known>>>,
}

impl HttpConnectorIo {
    pub fn new(client: ConnectorClient, store: Arc<dyn Store>, sign: bool) -> Self {
        Self { client, store, sign, known: Mutex::default() }
    }

    async fn lookup(&self, uuid: Uuid) -> Result<Arc<Known>, IoFailure> {
        if let Some(known) = self.known.lock().expect("registry cache lock").get(&uuid) {
            if known.at.elapsed() < REGISTRY_TTL {
                return Ok(Arc::clone(known));
            }
        }
        let store_failure = |e: dsx_store::StoreError| IoFailure::new(FailureClass::Store, e.to_string());
        let connector = self.store.get_presence(uuid).await.map_err(store_failure)?.ok_or_else(|| {
            IoFailure::new(FailureClass::ConnectorNotRegistered, format!("connector {uuid} is not registered"))
        })?;
        let credential = if self.sign {
            Some(self.store.current_credential(uuid).await.map_err(store_failure)?.ok_or_else(|| {
                IoFailure::new(FailureClass::ConnectorNotRegistered, format!("connector {uuid} holds no credentials"))
            })?)
        } else {
            None
        };
        let known = Arc::new(Known { connector, credential, at: Instant::now() });
        self.known.lock().expect("registry cache lock").insert(uuid, Arc::clone(&known));
        Ok(known)
    }

    fn forget(&self, uuid: Uuid) {
        self.known.lock().expect("registry cache lock").remove(&uuid);
    }

    async fn call(
        &self,
        uuid: Uuid,
        method: Method,
        path: &str,
        request: &ScanRequest,
        connection_class: FailureClass,
    ) -> Result<reqwest::Response, IoFailure> {
        let known = self.lookup(uuid).await?;
        let body = serde_json::to_vec(request).map_err(|e| IoFailure::new(FailureClass::Validation, e.to_string()))?;
        let sent =
            self.client.send_to(&known.connector.url, known.credential.as_ref(), method, path, body).await.map_err(
                |e| {
                    self.forget(uuid);
                    match e {
                        OutboundError::Refused(d) => IoFailure::new(FailureClass::ConnectorUrlRefused, d),
                        OutboundError::Store(s) => IoFailure::new(FailureClass::Store, s.to_string()),
                        other => IoFailure::new(connection_class, other.to_string()),
                    }
                },
            )?;
        if matches!(sent.status().as_u16(), 401 | 403) {
            // Most likely a key change: the next attempt looks the key up again.
            self.forget(uuid);
        }
        Ok(sent)
    }
}

/// How a connector's HTTP error status is handled. A 401/403 usually follows a key change
/// (the connector restarted and re-enrolled, or rotated): the next attempt signs with the
/// key the registry holds by then. A 503 is a connector that is starting or busy.
pub fn classify_connector_status(status: u16) -> FailureClass {
    match status {
        401 | 403 => FailureClass::ConnectorAuth,
        408 | 429 => FailureClass::ConnectorBusy,
        500..=599 => FailureClass::ConnectorServer,
        _ => FailureClass::ConnectorClient,
    }
}

#[async_trait]
impl ConnectorIo for HttpConnectorIo {
    async fn connector(&self, uuid: Uuid) -> Option<Connector> {
        self.lookup(uuid).await.ok().map(|k| k.connector.clone())
    }

    async fn read_file(&self, uuid: Uuid, request: &ScanRequest) -> Result<ByteStream, IoFailure> {
        let resp = self.call(uuid, Method::POST, "read_file", request, FailureClass::ConnectorConnection).await?;
        let status = resp.status();
        if !status.is_success() {
            let detail = resp.text().await.unwrap_or_default();
            return Err(IoFailure::new(
                classify_connector_status(status.as_u16()),
                format!("read_file: {status} {}", truncate(&detail)),
            ));
        }
        let is_json = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"));
        if is_json {
            // Python connectors answer errors as 200 JSON: never scan that as the file's content.
            let detail = resp.text().await.unwrap_or_default();
            return Err(IoFailure::new(
                FailureClass::ConnectorClient,
                format!("read_file answered JSON: {}", truncate(&detail)),
            ));
        }
        Ok(Box::pin(resp.bytes_stream().map_err(std::io::Error::other)))
    }

    async fn item_action(&self, uuid: Uuid, request: &ScanRequest) -> Result<ActionReply, IoFailure> {
        let resp = self.call(uuid, Method::PUT, "item_action", request, FailureClass::ItemActionConnection).await?;
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok(ActionReply { status, body })
    }
}

pub fn truncate(s: &str) -> &str {
    let end = s.char_indices().nth(200).map(|(i, _)| i).unwrap_or(s.len());
    &s[..end]
}

//! `POST connectors/register` and `POST connectors/token` (docs/wire-protocol.md, "Enrollment and registration").

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use dsx_hmac::{generate_key_id, generate_secret, unix_now};
use dsx_model::{parse_json, Connector, FieldError, RegistrationResponse, StatusKind, TokenResponse};
use dsx_store::{Credential, RegistrationRecord};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::auth::{raw_path_and_query, read_body, Caller};
use crate::connector_client::KeyProbe;
use crate::error::ApiError;
use crate::state::{AppState, SharedState};
use crate::url_policy::UrlError;

/// Lifetime advertised for the compatibility bearer token (nothing requires it).
const ACCESS_TOKEN_TTL_SECS: u64 = 3600;

#[derive(Deserialize, Default)]
pub struct RegisterQuery {
    #[serde(default)]
    rotate: Option<String>,
}

impl RegisterQuery {
    fn rotate(&self) -> bool {
        super::query_flag(self.rotate.as_deref())
    }
}

/// How the registration was authenticated.
enum Enrolment {
    /// Auth disabled.
    Open,
    /// Enrollment token (Python connectors, first start, or a connector that lost its key).
    Token { slot: String },
    /// Signed with the connector's current (or grace) key.
    Signed { caller_uuid: uuid::Uuid, key_id: String },
}

#[allow(clippy::too_many_arguments)]
pub async fn register(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    OriginalUri(uri): OriginalUri,
    method: Method,
    Query(query): Query<RegisterQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state.throttle_registration(peer).await?;
    let body = read_body(&headers, body, state.settings.max_body_bytes).await?;
    let enrolment = if !state.settings.auth.enabled {
        Enrolment::Open
    } else if headers.get(axum::http::header::AUTHORIZATION).is_some_and(|v| v.as_bytes().starts_with(b"DSX-HMAC ")) {
        let paq = raw_path_and_query(&uri, None);
        match state.verify_hmac(&method, &paq, &headers, &body).await? {
            Caller::Connector { uuid, key_id } => Enrolment::Signed { caller_uuid: uuid, key_id },
            _ => unreachable!("verify_hmac only yields connector callers"),
        }
    } else {
        match state.check_enrollment(&headers) {
            Ok(slot) => Enrolment::Token { slot },
            Err(err) => {
                tracing::warn!(peer = %peer, "registration refused: invalid enrollment token");
                return Err(err);
            }
        }
    };
    let connector: Connector = parse_json(&body).map_err(ApiError::Validation)?;
    // The syntax is checked before anything else; the addresses after the conflict rules.
    state.settings.connector_urls.parse_url(&connector.url).map_err(url_error)?;
    state.register_connector(connector, enrolment, query.rotate(), peer).await
}

impl AppState {
    /// H10: fixed-window limit per client address, counted before any token check so
    /// guessing is throttled too.
    async fn throttle_registration(&self, peer: SocketAddr) -> Result<(), ApiError> {
        let limit = self.settings.auth.register_rate_per_minute;
        if limit == 0 {
            return Ok(());
        }
        let window = self.store.hit_rate_limit(&format!("register:{}", peer.ip()), Duration::from_secs(60)).await?;
        if window.count > limit {
            self.metrics.rate_limited.inc();
            tracing::warn!(peer = %peer.ip(), count = window.count, "registration rate limit exceeded");
            return Err(ApiError::RateLimited { retry_after_secs: window.reset_in_secs });
        }
        Ok(())
    }

    async fn register_connector(
        &self,
        connector: Connector,
        enrolment: Enrolment,
        rotate: bool,
        peer: SocketAddr,
    ) -> Result<Response, ApiError> {
        let uuid = connector.uuid;
        if let Enrolment::Signed { caller_uuid, .. } = &enrolment {
            if *caller_uuid != uuid {
                return Err(ApiError::ConnectorMismatch);
            }
        }
        let live = self.store.get_presence(uuid).await?;
        let existing_key = if self.settings.auth.enabled { self.store.current_credential(uuid).await? } else { None };
        let previous = self.store.get_registration(uuid).await?;
        if let Some(at) = previous.as_ref().and_then(|r| r.revoked_at) {
            tracing::warn!(%uuid, peer = %peer, revoked_at = at, "registration refused: connector revoked by an operator");
            return Err(ApiError::ConnectorRevoked);
        }
        let rotation_requested = previous.as_ref().is_some_and(|r| r.rotation_requested);
        let recovered_key = previous.as_ref().and_then(|r| r.recovered_key_id.clone());

        // H1: only a holder of the live connector's own (not recovered) key may move it.
        if let Some(current) = live.as_ref().filter(|c| c.url != connector.url) {
            let may_move = match &enrolment {
                Enrolment::Open => true,
                Enrolment::Token { .. } => false,
                Enrolment::Signed { key_id, .. } => recovered_key.as_deref() != Some(key_id.as_str()),
            };
            if !may_move {
                tracing::warn!(%uuid, peer = %peer, from = %current.url, to = %connector.url, "registration refused: URL change of a live connector without its key");
                return Err(ApiError::UrlConflict);
            }
        }

        // SSRF: workers will POST to this URL; every address it stands for must be allowed.
        self.settings.connector_urls.check(&connector.url).await.map_err(|e| {
            tracing::warn!(%uuid, peer = %peer, url = %connector.url, reason = %e, "registration refused: connector URL not allowed");
            url_error(e)
        })?;

        // A secret is disclosed exactly once, when minted (H11). An enrollment token alone gets
        // a key for a live connector only when the connector at its registered URL shows it
        // lost its key (or cannot show anything): docs/authentication.md, "Re-registration".
        let (mint, recovering) = match &enrolment {
            Enrolment::Open => (false, false),
            Enrolment::Signed { .. } => (rotate || rotation_requested, false),
            Enrolment::Token { .. } => match (&live, &existing_key) {
                (Some(current), Some(key)) if !rotation_requested => {
                    match self.connectors.probe_key(&current.url, key).await {
                        KeyProbe::Holds => (false, false),
                        KeyProbe::Lacks | KeyProbe::DoesNotVerify => (true, true),
                        KeyProbe::Unknown(why) => {
                            tracing::warn!(%uuid, peer = %peer, url = %current.url, reason = %why, "token-only re-registration of a live connector deferred: its key could not be checked");
                            return Err(ApiError::KeyCheckUnavailable);
                        }
                    }
                }
                _ => (true, false),
            },
        };
        let minted = if mint {
            let credential = Credential {
                key_id: generate_key_id(),
                secret: SecretString::from(generate_secret()),
                issued_at: unix_now(),
            };
            let grace = if existing_key.is_some() { self.settings.auth.key_grace } else { Duration::ZERO };
            self.store.install_credential(uuid, &credential, grace).await?;
            self.metrics.credentials_minted.inc();
            Some(credential)
        } else {
            None
        };
        // A key rotated from a recovered key stays recovered, or rotation would launder it.
        let rotated_from_recovered =
            matches!(&enrolment, Enrolment::Signed { key_id, .. } if recovered_key.as_deref() == Some(key_id.as_str()));
        let recovered_key_id = match &minted {
            Some(c) if recovering || rotated_from_recovered => Some(c.key_id.clone()),
            Some(_) => None,
            None => recovered_key,
        };

        self.store.put_presence(&connector, self.settings.presence_ttl).await?;
        let (via, token_slot) = match &enrolment {
            Enrolment::Open => ("open", None),
            Enrolment::Token { slot } => ("enrollment_token", Some(slot.clone())),
            Enrolment::Signed { .. } => ("hmac", None),
        };
        let record = RegistrationRecord {
            at: unix_now(),
            via: via.into(),
            token_slot,
            peer: Some(peer.ip().to_string()),
            rotation_requested: rotation_requested && !mint,
            recovered_key_id,
            revoked_at: None,
        };
        self.store.put_registration(uuid, &record).await?;
        self.metrics.registrations.inc();

        let is_new = live.is_none() && existing_key.is_none();
        let (status, message) =
            if is_new { (StatusCode::CREATED, "registered") } else { (StatusCode::OK, "refreshed") };
        tracing::info!(%uuid, name = %connector.name, url = %connector.url, via, key_id = minted.as_ref().map(|c| c.key_id.as_str()), rotated = minted.is_some() && existing_key.is_some(), recovering, "connector {message}");

        self.announce(if is_new { "registered" } else { "refreshed" }, &connector).await;
        let response = RegistrationResponse {
            status: StatusKind::Success,
            message: message.into(),
            description: connector.describe(),
            connector_uuid: uuid,
            token: minted.as_ref().map(|_| access_token()),
            hmac_key_id: minted.as_ref().map(|c| c.key_id.clone()),
            hmac_secret: minted.map(|c| c.secret.expose_secret().to_owned()),
        };
        Ok((status, Json(response)).into_response())
    }
}

impl AppState {
    /// Tell SSE subscribers about a registry change (best effort).
    pub async fn announce(&self, kind: &str, connector: &Connector) {
        let event = serde_json::json!({ "type": kind, "uuid": connector.uuid, "name": connector.name, "url": connector.url, "ts": unix_now() });
        if let Err(err) = self.store.publish(crate::routes::events::CONNECTORS, &event.to_string()).await {
            tracing::debug!(error = %err, "could not announce a registry change");
        }
    }
}

/// 422 naming `url`, like any other invalid field.
fn url_error(err: UrlError) -> ApiError {
    ApiError::Validation(FieldError {
        loc: vec!["body".into(), "url".into()],
        msg: format!("field `url`: {err}"),
        kind: "value_error",
    })
}

/// The opaque, URL-safe bearer token kept for compatibility; not stored, nothing requires it.
fn access_token() -> TokenResponse {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    TokenResponse {
        access_token: URL_SAFE_NO_PAD.encode(raw),
        token_type: "Bearer".into(),
        expires_in: ACCESS_TOKEN_TTL_SECS,
    }
}

/// `POST connectors/token`: exchange an enrollment token for the compatibility bearer token.
pub async fn token(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<TokenResponse>, ApiError> {
    state.throttle_registration(peer).await?;
    if state.settings.auth.enabled {
        state.check_enrollment(&headers)?;
    }
    Ok(Json(access_token()))
}

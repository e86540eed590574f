//! Who is calling: DSX-HMAC verification (docs/wire-protocol.md, "DSX-HMAC"), enrollment and operator tokens,
//! break-glass, and the middleware that guards each group of routes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dsx_hmac::{parse_authorization, replay_ttl, unix_now, verify_parsed, AuthError, RequestParts, SigningKey};
use dsx_store::OwnedNonce;
use http_body_util::BodyExt;
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::SharedState;

/// The authenticated caller of one request, stored in the request extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Auth is disabled: every caller is trusted.
    Open,
    /// Verified with this connector's DSX-HMAC key.
    Connector { uuid: Uuid, key_id: String },
    /// Enrollment token accepted in place of DSX-HMAC (`DSXCONNECT_AUTH__BREAK_GLASS`).
    BreakGlass { slot: String },
    /// Operator bearer token.
    Operator,
}

impl Caller {
    /// A connector may only act for itself (docs/wire-protocol.md, "Binding"; H12); everyone else is not bound.
    pub fn ensure_acts_for(&self, uuid: Uuid) -> Result<(), ApiError> {
        match self {
            Caller::Connector { uuid: own, .. } if *own != uuid => Err(ApiError::ConnectorMismatch),
            _ => Ok(()),
        }
    }
}

/// Which credentials a route group accepts.
#[derive(Clone, Copy, Debug)]
pub enum Access {
    /// DSX-HMAC from an enrolled connector (or break-glass).
    Connector,
    /// As `Connector`, or an operator bearer token (unregister).
    ConnectorOrOperator,
    /// Operator bearer token only.
    Operator,
    /// As `Connector`, but the request's nonce is left to the handler as a [`PendingNonce`],
    /// so the store records it in the same step as the enqueue (one round trip instead of two,
    /// on the busiest route). Whatever the handler does not record, the guard records after
    /// it: a replay is 401 however the request ended.
    ConnectorIntake,
}

/// The nonce of an [`Access::ConnectorIntake`] request, in its extensions: the handler takes
/// it for the store step that records it; the guard records whatever is left after the
/// handler answered.
#[derive(Clone, Debug)]
pub struct PendingNonce(Arc<Mutex<Option<OwnedNonce>>>);

impl PendingNonce {
    /// For the store step that records it.
    pub fn take(&self) -> Option<OwnedNonce> {
        self.0.lock().expect("pending nonce lock").take()
    }

    /// The handler's answer, once the nonce is recorded (a replay turns it into a 401).
    async fn settle(self, state: &crate::state::AppState, answer: Response) -> Response {
        let Some(n) = self.take() else { return answer };
        match state.store.remember_nonce(&n.key_id, &n.nonce, n.ttl).await {
            Ok(true) => answer,
            Ok(false) => state.replayed_intake(&n.key_id).into_response(),
            Err(err) => ApiError::from(err).into_response(),
        }
    }
}

/// Whether verification records the nonce itself or leaves it to the handler.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum NonceRecording {
    /// Recorded as soon as the signature verified (every route but the intake ones).
    Now,
    /// Returned unrecorded, for a [`PendingNonce`].
    Deferred,
}

/// The request's path and query exactly as sent on the wire (nesting does not strip it).
pub fn raw_path_and_query(req_uri: &axum::http::Uri, original: Option<&OriginalUri>) -> String {
    let uri = original.map(|o| &o.0).unwrap_or(req_uri);
    uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| uri.path().to_owned())
}

/// Longest time a request body (JSON, at most `DSXCONNECT_MAX_BODY_BYTES`) may take to arrive.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An oversized body up to this size is read and dropped before the 413 goes out, so a client
/// that writes its whole body before reading gets the answer instead of a reset connection.
/// Beyond it the connection is closed unread.
const DRAIN_AT_MOST: u64 = 64 << 20;

/// Read a body up to `limit` bytes; larger ones are `413 body_too_large`.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|n| *n > limit as u64) {
        if declared <= DRAIN_AT_MOST {
            // Frame by frame, kept nowhere.
            let mut body = body;
            let drain = async { while let Some(Ok(_)) = body.frame().await {} };
            let _ = tokio::time::timeout(BODY_READ_TIMEOUT, drain).await;
        }
        return Err(ApiError::BodyTooLarge);
    }
    let limited = http_body_util::Limited::new(body, limit);
    // A body that trickles in holds a connection slot: bound the whole read.
    let collected =
        tokio::time::timeout(BODY_READ_TIMEOUT, limited.collect()).await.map_err(|_| ApiError::BodyTimeout)?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(ApiError::BodyTooLarge),
        Err(_) => Err(ApiError::BadRequest("body_read_error")),
    }
}

/// The one value of a credential header. A request with two `Authorization` (or
/// `X-Enrollment-Token`) headers is refused whatever they hold: proxies and frameworks
/// disagree on which one wins, and the one checked must be the one acted on.
fn single(headers: &HeaderMap, name: impl header::AsHeaderName) -> Result<Option<&header::HeaderValue>, ()> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(());
    }
    Ok(first)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = single(headers, header::AUTHORIZATION).ok()??.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn authorization_is_hmac(headers: &HeaderMap) -> bool {
    headers.get(header::AUTHORIZATION).is_some_and(|v| v.as_bytes().starts_with(b"DSX-HMAC "))
}

impl crate::state::AppState {
    /// Full DSX-HMAC verification, in the contract's order: parse, key id, key lookup,
    /// freshness, signature, then replay (recorded only after the signature verified).
    pub async fn verify_hmac(
        &self,
        method: &Method,
        raw_paq: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Caller, ApiError> {
        self.verify_hmac_recording(method, raw_paq, headers, body, NonceRecording::Now).await.map(|(caller, _)| caller)
    }

    async fn verify_hmac_recording(
        &self,
        method: &Method,
        raw_paq: &str,
        headers: &HeaderMap,
        body: &[u8],
        recording: NonceRecording,
    ) -> Result<(Caller, Option<OwnedNonce>), ApiError> {
        let outcome = self.verify_hmac_inner(method, raw_paq, headers, body, recording).await;
        if let Err(ApiError::Hmac(code)) = &outcome {
            self.metrics.auth_failure(code.code());
            tracing::warn!(code = code.code(), %method, path = raw_paq, "DSX-HMAC verification failed");
        }
        outcome
    }

    /// A scan intake request whose nonce was used before (found by the enqueue's store step
    /// or by the guard after the handler): counted and logged as verification does.
    pub fn replayed_intake(&self, key_id: &str) -> ApiError {
        let code = AuthError::ReplayedRequest;
        self.metrics.auth_failure(code.code());
        tracing::warn!(code = code.code(), key_id, "DSX-HMAC verification failed on scan intake");
        code.into()
    }

    async fn verify_hmac_inner(
        &self,
        method: &Method,
        raw_paq: &str,
        headers: &HeaderMap,
        body: &[u8],
        recording: NonceRecording,
    ) -> Result<(Caller, Option<OwnedNonce>), ApiError> {
        let value = match single(headers, header::AUTHORIZATION).map_err(|()| AuthError::MalformedHmac)? {
            None => None,
            // Non-visible-ASCII bytes: a DSX-HMAC header that no honest signer produces.
            Some(v) => Some(v.to_str().map_err(|_| {
                if v.as_bytes().starts_with(b"DSX-HMAC ") {
                    AuthError::MalformedHmac
                } else {
                    AuthError::MissingHmac
                }
            })?),
        };
        let parsed = parse_authorization(value)?;
        let key_id = parsed.key_id()?;
        let resolved = match self.keys.get(key_id) {
            Some(key) => Some(key),
            None => {
                let key = self.store.resolve_key(key_id).await?;
                if let Some(key) = &key {
                    self.keys.put(key_id, key);
                }
                key
            }
        };
        let key = resolved.as_ref().map(|r| SigningKey::new(r.secret.expose_secret()));
        let skew = self.settings.auth.max_skew;
        let request = RequestParts { method: method.as_str(), path_and_query: raw_paq, body };
        let verified = verify_parsed(&parsed, key.as_ref(), unix_now(), skew, &request)?;
        // Recorded only now that the signature verified, so forgeries cannot burn nonces.
        let nonce = match recording {
            NonceRecording::Now => {
                if !self.store.remember_nonce(verified.key_id, verified.nonce, replay_ttl(skew)).await? {
                    return Err(AuthError::ReplayedRequest.into());
                }
                None
            }
            NonceRecording::Deferred => Some(OwnedNonce {
                key_id: verified.key_id.to_owned(),
                nonce: verified.nonce.to_owned(),
                ttl: replay_ttl(skew),
            }),
        };
        // Verified implies the key was found; the fallback never fires.
        let uuid = resolved.map(|r| r.connector_uuid).ok_or(AuthError::UnknownKeyId)?;
        Ok((Caller::Connector { uuid, key_id: verified.key_id.to_owned() }, nonce))
    }

    /// The enrollment token of a request (`X-Enrollment-Token`, or `Authorization: Bearer`),
    /// checked in constant time. Returns the matching slot name.
    pub fn check_enrollment(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        if single(headers, "x-enrollment-token").is_err() || single(headers, header::AUTHORIZATION).is_err() {
            return Err(ApiError::InvalidEnrollmentToken);
        }
        let presented = headers
            .get("x-enrollment-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .or_else(|| bearer(headers));
        presented.and_then(|t| self.enrollment.matches(t)).ok_or(ApiError::InvalidEnrollmentToken)
    }

    pub fn check_operator(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if !self.settings.auth.enabled {
            return Ok(Caller::Open);
        }
        if single(headers, header::AUTHORIZATION).is_err() {
            return Err(ApiError::InvalidOperatorToken);
        }
        bearer(headers)
            .and_then(|t| self.operators.matches(t))
            .map(|_| Caller::Operator)
            .ok_or(ApiError::InvalidOperatorToken)
    }

    /// A connector call: DSX-HMAC, or break-glass when enabled and no DSX-HMAC header is sent.
    async fn authenticate_connector(
        &self,
        method: &Method,
        raw_paq: &str,
        headers: &HeaderMap,
        body: &[u8],
        peer: Option<SocketAddr>,
        recording: NonceRecording,
    ) -> Result<(Caller, Option<OwnedNonce>), ApiError> {
        if !self.settings.auth.enabled {
            return Ok((Caller::Open, None));
        }
        if self.settings.auth.break_glass
            && !authorization_is_hmac(headers)
            && headers.contains_key("x-enrollment-token")
        {
            let slot = self.check_enrollment(headers)?;
            self.metrics.break_glass_uses.inc();
            tracing::warn!(%method, path = raw_paq, peer = ?peer, token_slot = %slot, "break-glass: enrollment token accepted in place of DSX-HMAC");
            return Ok((Caller::BreakGlass { slot }, None));
        }
        self.verify_hmac_recording(method, raw_paq, headers, body, recording).await
    }
}

/// Middleware guarding a route group. Connector calls are verified over the exact body
/// bytes received, which are then handed on unchanged.
pub async fn guard(State((state, access)): State<(SharedState, Access)>, req: Request, next: Next) -> Response {
    match authenticate(&state, access, req).await {
        Ok((req, None)) => next.run(req).await,
        Ok((req, Some(pending))) => {
            let answer = next.run(req).await;
            pending.settle(&state, answer).await
        }
        Err(err) => err.into_response(),
    }
}

async fn authenticate(
    state: &SharedState,
    access: Access,
    req: Request,
) -> Result<(Request, Option<PendingNonce>), ApiError> {
    let (mut parts, body) = req.into_parts();
    let operator_attempt = matches!(access, Access::ConnectorOrOperator) && bearer(&parts.headers).is_some();
    let mut pending = None;
    let (caller, body) = if matches!(access, Access::Operator) || operator_attempt {
        (state.check_operator(&parts.headers)?, body)
    } else {
        let bytes = read_body(&parts.headers, body, state.settings.max_body_bytes).await?;
        let paq = raw_path_and_query(&parts.uri, parts.extensions.get::<OriginalUri>());
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let recording =
            if matches!(access, Access::ConnectorIntake) { NonceRecording::Deferred } else { NonceRecording::Now };
        let (caller, nonce) =
            state.authenticate_connector(&parts.method, &paq, &parts.headers, &bytes, peer, recording).await?;
        if let Some(nonce) = nonce {
            let nonce = PendingNonce(Arc::new(Mutex::new(Some(nonce))));
            parts.extensions.insert(nonce.clone());
            pending = Some(nonce);
        }
        (caller, Body::from(bytes))
    };
    parts.extensions.insert(caller);
    Ok((Request::from_parts(parts, body), pending))
}

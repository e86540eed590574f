//! Inbound DSX-HMAC verification (dsx-connect → connector), with an in-memory replay cache.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dsx_hmac::{replay_ttl, unix_now, verify_authorization, AuthError, RequestParts};
use http_body_util::BodyExt;
use serde_json::json;

use crate::ConnectorContext;

/// Largest inbound body (scan requests and configs are small JSON).
const MAX_BODY: usize = 1 << 20;
/// Longest time an inbound body may take to arrive.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// (key id, nonce) pairs seen within the replay window.
#[derive(Default)]
pub struct ReplayCache {
    seen: Mutex<HashMap<(String, String), Instant>>,
}

impl ReplayCache {
    /// True on first use within `ttl`.
    pub fn first_use(&self, key_id: &str, nonce: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().expect("replay cache lock");
        if seen.len() > 4096 {
            seen.retain(|_, until| *until > now);
        }
        match seen.get(&(key_id.to_owned(), nonce.to_owned())) {
            Some(until) if *until > now => false,
            _ => {
                seen.insert((key_id.to_owned(), nonce.to_owned()), now + ttl);
                true
            }
        }
    }
}

/// One inbound request as the verifier sees it.
pub struct InboundRequest<'a> {
    pub authorization: Option<&'a str>,
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub body: &'a [u8],
}

/// The contract's verification order: parse, key id, key, freshness, signature (the shared
/// core in `dsx_hmac`), then replay against this connector's cache.
pub fn check(
    req: &InboundRequest<'_>,
    now: u64,
    skew: u64,
    key_for: impl Fn(&str) -> Option<dsx_hmac::SigningKey>,
    replay: &ReplayCache,
) -> Result<(), AuthError> {
    let parts = RequestParts { method: req.method, path_and_query: req.path_and_query, body: req.body };
    let verified = verify_authorization(req.authorization, key_for, now, skew, &parts)?;
    if !replay.first_use(verified.key_id, verified.nonce, replay_ttl(skew)) {
        return Err(AuthError::ReplayedRequest);
    }
    Ok(())
}

pub fn unauthorized(code: AuthError) -> Response {
    let mut resp = (StatusCode::UNAUTHORIZED, Json(json!({ "detail": code.code() }))).into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("DSX-HMAC"));
    resp
}

/// The answer while the connector holds no key (starting, or re-enrolling after dsx-connect
/// forgot its key): nothing can be verified yet, and the caller should come back shortly
/// rather than give up on the item (docs/connectors.md, "Security notes").
fn not_enrolled() -> Response {
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "detail": "not_enrolled" }))).into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    resp
}

/// Middleware for the connector's protected routes.
pub async fn verify(State(ctx): State<Arc<ConnectorContext>>, req: Request, next: Next) -> Response {
    if ctx.settings.auth_enabled && ctx.dsx.key_id().is_none() {
        return not_enrolled();
    }
    if !ctx.settings.auth_enabled {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let paq = parts
        .extensions
        .get::<OriginalUri>()
        .and_then(|u| u.0.path_and_query().map(|p| p.as_str().to_owned()))
        .unwrap_or_else(|| parts.uri.to_string());
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string()).unwrap_or_default();
    // Bounded in size and in time: a body that trickles in holds a connection slot.
    let collect = http_body_util::Limited::new(body, MAX_BODY).collect();
    let bytes = match tokio::time::timeout(BODY_READ_TIMEOUT, collect).await {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(_)) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({"detail": "body_too_large"}))).into_response()
        }
        Err(_) => return (StatusCode::REQUEST_TIMEOUT, Json(json!({"detail": "body_timeout"}))).into_response(),
    };
    // A header that is not visible ASCII cannot be an honest DSX-HMAC header, and neither can
    // two of them (which one a proxy or framework would act on is anybody's guess).
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let header = match (values.next(), values.next()) {
        (Some(_), Some(_)) => Some("DSX-HMAC \u{1}"),
        (first, _) => first.map(|v| v.to_str().unwrap_or("DSX-HMAC \u{1}")),
    };
    let request =
        InboundRequest { authorization: header, method: parts.method.as_str(), path_and_query: &paq, body: &bytes };
    let outcome = check(
        &request,
        unix_now(),
        ctx.settings.clock_skew,
        |kid| ctx.dsx.key_for(kid).map(|c| c.key.clone()),
        &ctx.replay,
    );
    match outcome {
        Ok(()) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Err(AuthError::MissingHmac) => {
            tracing::warn!(method = %parts.method, path = %paq, peer = %peer, "missing DSX-HMAC header");
            unauthorized(AuthError::MissingHmac)
        }
        Err(code) => {
            tracing::warn!(method = %parts.method, path = %paq, peer = %peer, code = code.code(), "DSX-HMAC verification failed");
            unauthorized(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The shared vectors, through the connector's own verification path.
    #[test]
    fn shared_vectors_through_the_connector_verifier() {
        let v: Value = serde_json::from_str(include_str!("../../dsx-hmac/tests/data/dsx-hmac.json")).unwrap();
        let positives = v["positive"].as_array().unwrap();
        let b64 = |s: &str| base64_decode(s);
        for p in positives {
            let body = b64(p["body_base64"].as_str().unwrap());
            let secret = p["secret"].as_str().unwrap().to_owned();
            let kid = p["key_id"].as_str().unwrap().to_owned();
            let req = InboundRequest {
                authorization: p["authorization"].as_str(),
                method: p["method"].as_str().unwrap(),
                path_and_query: p["path_and_query"].as_str().unwrap(),
                body: &body,
            };
            let keys = |k: &str| (k == kid).then(|| dsx_hmac::SigningKey::new(&secret));
            assert_eq!(
                check(&req, p["ts"].as_u64().unwrap(), 60, keys, &ReplayCache::default()),
                Ok(()),
                "{}",
                p["name"]
            );
        }
        for n in v["negative"].as_array().unwrap() {
            let base = positives.iter().find(|p| p["name"] == n["base"]).unwrap();
            let field = |k: &str| n.get(k).or_else(|| base.get(k)).and_then(Value::as_str).unwrap().to_owned();
            let body = b64(&field("body_base64"));
            let (secret, kid, auth) = (field("secret"), field("key_id"), field("authorization"));
            let (method, paq) = (field("method"), field("path_and_query"));
            let req = InboundRequest {
                authorization: (!auth.is_empty()).then_some(auth.as_str()),
                method: &method,
                path_and_query: &paq,
                body: &body,
            };
            let replay = ReplayCache::default();
            let keys = |k: &str| (k == kid).then(|| dsx_hmac::SigningKey::new(&secret));
            let now = n["verify_at"].as_u64().unwrap();
            let mut outcome = check(&req, now, 60, keys, &replay);
            if n["replay"].as_bool() == Some(true) {
                assert_eq!(outcome, Ok(()));
                outcome = check(&req, now, 60, keys, &replay);
            }
            assert_eq!(
                outcome.map(|_| "ok").unwrap_or_else(|e| e.code()),
                n["expect"].as_str().unwrap(),
                "{}",
                n["name"]
            );
        }
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    #[test]
    fn replay_cache_remembers_until_ttl() {
        let cache = ReplayCache::default();
        assert!(cache.first_use("k", "n", Duration::from_millis(50)));
        assert!(!cache.first_use("k", "n", Duration::from_millis(50)));
        assert!(cache.first_use("k2", "n", Duration::from_millis(50)));
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.first_use("k", "n", Duration::from_millis(50)));
    }
}

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::TryStreamExt;
use percent_encoding::percent_decode_str;
use serde_json::json;

use crate::{BuiltinScanner, ScanError, ScanInput, Scanner, SCAN_BINARY_PATH};

#[derive(Clone)]
struct AppState {
    engine: Arc<BuiltinScanner>,
    token: Option<Arc<str>>,
}

/// The built-in engine on the DSXA API: `POST /scan/binary/v2` (streamed body) and `GET /healthz`.
/// With a token configured, `AUTH_TOKEN` or `AUTH` must carry it, else 401.
pub fn router(engine: Arc<BuiltinScanner>, auth_token: Option<String>) -> Router {
    let state = AppState { engine, token: auth_token.filter(|t| !t.is_empty()).map(Arc::from) };
    Router::new()
        .route(SCAN_BINARY_PATH, post(scan_binary))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        // The body is streamed into the engine, never buffered, so size is unbounded.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Serve until `shutdown` resolves, with the shared server limits (header deadline,
/// connection cap, bounded drain), over HTTPS with `tls`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<BuiltinScanner>,
    auth_token: Option<String>,
    limits: dsx_service::ServerLimits,
    tls: Option<dsx_service::ServerTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    dsx_service::serve(listener, router(engine, auth_token), limits, tls, shutdown).await
}

fn detail(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"detail": msg.into()}))).into_response()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(token: &str, headers: &HeaderMap) -> bool {
    ["auth_token", "auth"].iter().filter_map(|h| headers.get(*h)).any(|v| ct_eq(v.as_bytes(), token.as_bytes()))
}

/// Best-effort inverse of `custom_metadata_header`; splits on the last occurrence of each marker so commas
/// inside the location survive.
fn parse_metadata(raw: &str) -> ScanInput {
    let dec = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let mut rest = raw;
    let mut take = |marker: &str| -> String {
        match rest.rfind(marker) {
            Some(i) => {
                let v = dec(&rest[i + marker.len()..]);
                rest = &rest[..i];
                v
            }
            None => String::new(),
        }
    };
    let task_id = take(",scan_request_task_id:");
    let connector_name = take(",dsx-connect:");
    let metainfo = take(",file-meta:");
    let location = dec(rest.strip_prefix("file-loc:").unwrap_or(rest));
    ScanInput { location, metainfo, connector_name, task_id, size: None, protected_entity: None }
}

async fn scan_binary(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    if let Some(token) = &state.token {
        if !authorized(token, &headers) {
            return detail(StatusCode::UNAUTHORIZED, "missing or invalid AUTH_TOKEN");
        }
    }
    let raw_meta = headers.get("x-custom-metadata").and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut input = raw_meta.as_deref().map(parse_metadata).unwrap_or_default();
    input.protected_entity = headers.get("protected_entity").and_then(|v| v.to_str().ok()).map(str::to_string);

    let stream = body.into_data_stream().map_err(std::io::Error::other);
    match state.engine.scan(&input, Box::pin(stream)).await {
        Ok(mut verdict) => {
            verdict.x_custom_metadata = raw_meta;
            tracing::debug!(location = %input.location, verdict = %verdict.verdict, "builtin scan");
            Json(verdict).into_response()
        }
        Err(ScanError::Body(e)) => detail(StatusCode::BAD_REQUEST, format!("reading request body: {e}")),
        Err(e) => detail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trip() {
        let input = ScanInput {
            location: "/a,b/été.txt".into(),
            metainfo: "m:1".into(),
            connector_name: "fs".into(),
            task_id: "42".into(),
            ..Default::default()
        };
        assert_eq!(parse_metadata(&crate::custom_metadata_header(&input)), input);
    }

    #[test]
    fn token_compare() {
        let mut h = HeaderMap::new();
        assert!(!authorized("s3cret", &h));
        h.insert("auth", "wrong".parse().unwrap());
        assert!(!authorized("s3cret", &h));
        h.insert("auth_token", "s3cret".parse().unwrap());
        assert!(authorized("s3cret", &h));
    }
}

//! Health, readiness, version, meta, connectivity checks.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use dsx_model::AuthCheckResponse;
use serde_json::{json, Value};

use crate::state::SharedState;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "alive" }))
}

/// 200 when the store answers, else 503 (the server recovers by itself when it returns).
pub async fn readyz(State(state): State<SharedState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) if state.breaker.is_open() => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reason": "scanner_unavailable", "store": state.store.backend() })),
        ),
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready", "store": state.store.backend() }))),
        Err(err) => {
            tracing::warn!(error = %err, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "not_ready",
                    "reason": "store_unavailable",
                    "store": state.store.backend(),
                    "detail": err.to_string(),
                })),
            )
        }
    }
}

/// A bare JSON string, as Python 1.x answers (`"0.3.88"`); `meta` has the structured form.
pub async fn version() -> Json<&'static str> {
    Json(VERSION)
}

pub async fn meta(State(state): State<SharedState>) -> Json<Value> {
    Json(json!({
        "name": "dsx-connect",
        "version": VERSION,
        "store": state.store.backend(),
        "auth": { "enabled": state.settings.auth.enabled, "break_glass": state.settings.auth.break_glass },
    }))
}

/// `GET test/connection` and its alias `connection/test`: open (Python connectors call
/// them unsigned; docs/wire-protocol.md, "Open routes").
pub async fn test_connection() -> Json<Value> {
    Json(
        json!({ "status": "success", "message": "dsx-connect is reachable", "description": "", "id": null, "preview": null }),
    )
}

/// `POST scan/auth_check` (behind the connector guard).
pub async fn auth_check() -> Json<AuthCheckResponse> {
    Json(AuthCheckResponse::default())
}

/// `GET config`: the public part for anyone (Python connectors read the batch capabilities
/// unsigned; docs/wire-protocol.md, "Open routes"); everything else only with an operator
/// token. Secrets never appear: tokens and keys are not part of the document at all.
pub async fn config(State(state): State<SharedState>, headers: axum::http::HeaderMap) -> Json<Value> {
    let s = &state.settings;
    let mut doc = json!({
        "version": VERSION,
        "auth": { "enabled": s.auth.enabled },
        // Python connectors read these before choosing scan/request_batch.
        "workers": {
            "scan_request_batch_enabled": s.batch.enabled,
            "scan_request_batch_default_size": s.batch.default_size,
            "scan_request_batch_max_size": s.batch.max_size,
            "scan_request_batch_max_items": s.batch.max_items,
        },
    });
    if state.check_operator(&headers).is_ok() {
        doc["app_env"] = json!(s.app_env);
        doc["store"] = json!(state.store.backend());
        doc["auth"] = json!({
            "enabled": s.auth.enabled,
            "break_glass": s.auth.break_glass,
            "hmac_max_skew": s.auth.max_skew,
            "key_grace_seconds": s.auth.key_grace.as_secs(),
            "enrollment_tokens": state.enrollment.len(),
            "operator_tokens": state.operators.len(),
            "secrets_encrypted_at_rest": s.auth.secret_key.is_some(),
            "register_rate_per_minute": s.auth.register_rate_per_minute,
        });
        doc["scanner"] = json!({
            "kind": state.scanner.kind(),
            "base_url": s.scanner.base_url,
            "auth_token": if s.scanner.auth_token.is_some() { "***" } else { "" },
            "timeout_seconds": s.scanner.timeout.as_secs(),
            "max_file_size_bytes": s.workers.max_file_size,
            "max_inflight": s.workers.max_inflight,
        });
        doc["workers"]["scan_request_max_retries"] = json!(s.workers.max_retries);
        doc["workers"]["lease_seconds"] = json!(s.workers.lease.as_secs());
        doc["results"] = json!({
            "retain": s.workers.results_retain,
            "job_retention_seconds": s.job_retention.map_or(0, |r| r.as_secs()),
        });
        doc["presence_ttl_seconds"] = json!(s.presence_ttl.as_secs());
    }
    Json(doc)
}

/// `GET test/dsxa-connection` (operator): can the configured scanner be reached?
pub async fn test_scanner(State(state): State<SharedState>) -> impl IntoResponse {
    match state.scanner.check().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({ "status": "success", "message": format!("{} scanner reachable", state.scanner.kind()) })),
        ),
        Err(err) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "status": "error", "message": err.to_string(), "class": err.class() })),
        ),
    }
}

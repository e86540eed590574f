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
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready", "store": state.store.backend() }))),
        Err(err) => {
            tracing::warn!(error = %err, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "not_ready", "reason": "store_unavailable", "store": state.store.backend() })),
            )
        }
    }
}

pub async fn version() -> Json<Value> {
    Json(json!({ "version": VERSION }))
}

pub async fn meta(State(state): State<SharedState>) -> Json<Value> {
    Json(json!({
        "name": "dsx-connect",
        "version": VERSION,
        "store": state.store.backend(),
        "auth": { "enabled": state.settings.auth.enabled, "break_glass": state.settings.auth.break_glass },
    }))
}

/// `GET test/connection`: open (Python connectors call it unsigned, AUTH.md §8).
pub async fn test_connection() -> Json<Value> {
    Json(
        json!({ "status": "success", "message": "dsx-connect is reachable", "description": "", "id": null, "preview": null }),
    )
}

/// `POST scan/auth_check` (behind the connector guard).
pub async fn auth_check() -> Json<AuthCheckResponse> {
    Json(AuthCheckResponse::default())
}

//! Operator routes that reach a connector through dsx-connect (signed with its key):
//! full scan, config, repo check, estimate, health.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use super::parse_uuid;
use crate::connector_client::OutboundError;
use crate::error::ApiError;
use crate::state::SharedState;

impl From<OutboundError> for ApiError {
    fn from(err: OutboundError) -> Self {
        match err {
            OutboundError::NotRegistered(_) => ApiError::ConnectorNotFound,
            OutboundError::NoCredentials(_) => ApiError::ConnectorNotFound,
            OutboundError::Unreachable(e) | OutboundError::Refused(e) => ApiError::ConnectorUnreachable(e),
            OutboundError::Store(e) => ApiError::Store(e),
        }
    }
}

/// Call the connector and relay its status and JSON body.
async fn relay(
    state: &SharedState,
    uuid: Uuid,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<Response, ApiError> {
    let resp = state.connectors.request(uuid, method, path, body).await?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let json: Value = resp.json().await.unwrap_or(Value::Null);
    Ok((status, Json(json)).into_response())
}

fn with_query(path: &str, query: Option<String>) -> String {
    match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    }
}

/// `POST connectors/full_scan/{uuid}?limit&batch&batch_size&job_id` → 202 + `X-Job-Id`.
/// Other query parameters are forwarded to the connector unchanged.
pub async fn full_scan(
    State(state): State<SharedState>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let uuid = parse_uuid(&raw, "connector_uuid")?;
    let mut pairs: Vec<(String, String)> = query.as_deref().map(url_pairs).unwrap_or_default();
    let job_id = match pairs.iter().find(|(k, v)| k == "job_id" && !v.is_empty()) {
        Some((_, v)) => v.clone(),
        None => {
            let id = Uuid::new_v4().to_string();
            pairs.retain(|(k, _)| k != "job_id");
            pairs.push(("job_id".into(), id.clone()));
            id
        }
    };
    super::scan::check_id(&job_id, &["query", "job_id"])?;
    // The job is this connector's from now on: no other connector can take its id first.
    if state.store.get_presence(uuid).await?.is_none() {
        return Err(ApiError::ConnectorNotFound);
    }
    state.store.claim_job(&job_id, uuid).await?.map_err(ApiError::from)?;
    let query = pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&");
    let resp = match state.connectors.request(uuid, Method::POST, &format!("full_scan?{query}"), Vec::new()).await {
        Ok(resp) => resp,
        Err(err) => {
            // The scan never started: its job must not look like one still running.
            let _ = state.store.set_job_status(&job_id, dsx_store::JobStatus::Cancelled).await;
            return Err(err.into());
        }
    };
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    tracing::info!(target: "audit", %uuid, job_id, "full scan requested");
    let status = if status.is_success() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY)
    };
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&job_id) {
        response.headers_mut().insert("X-Job-Id", value);
    }
    Ok(response)
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| percent_decode(s);
            (dec(k), dec(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

/// Everything but RFC 3986 unreserved characters, as Python's `urlencode` quotes: a job id
/// reaches the connector as `job_id=c723…-84ed…`, not `%2D`-escaped.
const QUERY_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

pub async fn get_config(State(state): State<SharedState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    relay(&state, parse_uuid(&raw, "connector_uuid")?, Method::GET, "config", Vec::new()).await
}

pub async fn put_config(
    State(state): State<SharedState>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let uuid = parse_uuid(&raw, "connector_uuid")?;
    // Python 1.x refuses an empty change before bothering the connector.
    if serde_json::from_slice::<serde_json::Map<String, Value>>(&body).is_ok_and(|m| m.is_empty()) {
        return Err(ApiError::BadRequest("no_fields_to_update"));
    }
    tracing::info!(target: "audit", %uuid, "connector config change requested");
    relay(&state, uuid, Method::PUT, "config", body.to_vec()).await
}

/// `POST connectors/release/{uuid}` `{"location": …}` (operator, ours): the connector
/// restores a quarantined item to where it was found and tags it released. Audited here and
/// by the connector; the connector's answer (or its refusal) is relayed.
pub async fn release(
    State(state): State<SharedState>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let uuid = parse_uuid(&raw, "connector_uuid")?;
    let location = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("location").and_then(Value::as_str).map(str::to_owned))
        .filter(|l| !l.trim().is_empty())
        .ok_or_else(|| {
            ApiError::Validation(dsx_model::FieldError {
                loc: vec!["body".into(), "location".into()],
                msg: "field `location`: the quarantined item to release is required".into(),
                kind: "missing",
            })
        })?;
    let resp = relay(
        &state,
        uuid,
        Method::POST,
        "release",
        serde_json::to_vec(&serde_json::json!({ "location": location })).unwrap_or_default(),
    )
    .await?;
    tracing::info!(target: "audit", %uuid, %location, status = resp.status().as_u16(), by = "operator", "release from quarantine requested");
    Ok(resp)
}

pub async fn repo_check(
    State(state): State<SharedState>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    relay(&state, parse_uuid(&raw, "connector_uuid")?, Method::GET, &with_query("repo_check", query), Vec::new()).await
}

pub async fn estimate(State(state): State<SharedState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    relay(&state, parse_uuid(&raw, "connector_uuid")?, Method::GET, "estimate", Vec::new()).await
}

pub async fn healthz(State(state): State<SharedState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    relay(&state, parse_uuid(&raw, "connector_uuid")?, Method::GET, "healthz", Vec::new()).await
}

pub async fn readyz(State(state): State<SharedState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    relay(&state, parse_uuid(&raw, "connector_uuid")?, Method::GET, "readyz", Vec::new()).await
}

/// `GET connectors/auth_check/{uuid}`: a signed call to the connector proves both sides
/// hold the same key.
pub async fn auth_check(State(state): State<SharedState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let uuid = parse_uuid(&raw, "connector_uuid")?;
    let resp = state.connectors.request(uuid, Method::GET, "config", Vec::new()).await?;
    let status = resp.status();
    let detail: Value = resp.json().await.unwrap_or(Value::Null);
    let body = if status.is_success() {
        serde_json::json!({ "status": "success", "message": "auth_ok", "description": "connector verified a signed call" })
    } else {
        serde_json::json!({ "status": "error", "message": format!("connector answered {}", status.as_u16()), "description": detail })
    };
    Ok(Json(body).into_response())
}

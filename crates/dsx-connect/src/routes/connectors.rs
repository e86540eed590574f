//! Registry routes: unregister, list, and the connector state key/value store.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{json, Value};

use dsx_hmac::unix_now;

use super::parse_uuid;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::SharedState;

/// `DELETE connectors/unregister/{uuid}`: the connector itself (its own key) or an operator.
/// Deletes presence and revokes the credentials (H12, H6). An operator's unregister is a
/// revocation (`admin revoke`): the uuid stays on the deny list until `admin readmit`, so its
/// enrollment token cannot bring it back.
pub async fn unregister(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let uuid = parse_uuid(&raw, "connector_uuid")?;
    caller.ensure_acts_for(uuid)?;
    let presence = state.store.get_presence(uuid).await?;
    let had_presence = state.store.delete_presence(uuid).await?;
    let had_keys = state.store.revoke_credentials(uuid).await?;
    state.forget_keys_everywhere(uuid).await;
    let record = state.store.get_registration(uuid).await?;
    let had_record = record.is_some();
    if !(had_presence || had_keys || had_record) {
        return Err(ApiError::ConnectorNotFound);
    }
    if caller == Caller::Operator {
        let revoked = dsx_store::RegistrationRecord { revoked_at: Some(unix_now()), ..record.unwrap_or_default() };
        state.store.put_registration(uuid, &revoked).await?;
    } else {
        state.store.delete_registration(uuid).await?;
    }
    let by = match &caller {
        Caller::Operator => "operator",
        Caller::Connector { .. } => "connector",
        Caller::BreakGlass { .. } => "break-glass",
        Caller::Open => "open",
    };
    tracing::info!(target: "audit", %uuid, by, revoked = had_keys, denied = by == "operator", "connector unregistered");
    let gone = presence.unwrap_or_else(|| dsx_model::Connector { uuid, ..Default::default() });
    state.announce("unregistered", &gone).await;
    Ok(StatusCode::NO_CONTENT)
}

/// One row of `connectors/list`: the connector model plus how it last registered
/// (never a token or secret).
#[derive(Serialize)]
struct ListedConnector {
    #[serde(flatten)]
    connector: dsx_model::Connector,
    auth: Value,
}

/// `POST connectors/readmit/{uuid}` (operator, ours): lift an `admin revoke`; the connector
/// may enroll again with its enrollment token.
pub async fn readmit(State(state): State<SharedState>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let uuid = parse_uuid(&raw, "connector_uuid")?;
    match state.store.get_registration(uuid).await? {
        Some(record) if record.revoked_at.is_some() => state.store.delete_registration(uuid).await?,
        _ => return Err(ApiError::ConnectorNotFound),
    }
    tracing::info!(target: "audit", %uuid, by = "operator", "connector readmitted");
    Ok(Json(json!({ "status": "success", "message": "readmitted", "description": format!("{uuid} may enroll again") })))
}

/// `GET connectors/list` (operator): live connectors, then revoked ones (`status: "revoked"`).
pub async fn list(State(state): State<SharedState>) -> Result<Json<Vec<Value>>, ApiError> {
    let mut rows = Vec::new();
    let live = state.store.list_presence().await?;
    for (uuid, record) in state.store.list_registrations().await? {
        if let Some(at) = record.revoked_at.filter(|_| !live.iter().any(|c| c.uuid == uuid)) {
            rows.push(json!({ "uuid": uuid, "status": "revoked", "auth": { "revoked_at": at, "peer": record.peer } }));
        }
    }
    for connector in live {
        let record = state.store.get_registration(connector.uuid).await?;
        let key_id = if state.settings.auth.enabled {
            state.store.current_credential(connector.uuid).await?.map(|c| c.key_id)
        } else {
            None
        };
        let auth = json!({
            "hmac_key_id": key_id,
            "last_registered_at": record.as_ref().map(|r| r.at),
            "registered_via": record.as_ref().map(|r| r.via.clone()),
            "enrollment_token_slot": record.as_ref().and_then(|r| r.token_slot.clone()),
            "rotation_requested": record.as_ref().is_some_and(|r| r.rotation_requested),
            "peer": record.and_then(|r| r.peer),
        });
        rows.push(
            serde_json::to_value(ListedConnector { connector, auth }).map_err(|_| ApiError::Internal("serialize"))?,
        );
    }
    Ok(Json(rows))
}

/// `PUT connectors/state/{uuid}/{ns}/{key}`: raw text body → 204.
pub async fn put_state(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path((raw, ns, key)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let uuid = parse_uuid(&raw, "connector_uuid")?;
    caller.ensure_acts_for(uuid)?;
    super::scan::check_id(&ns, &["path", "ns"])?;
    super::scan::check_id(&key, &["path", "key"])?;
    let value = std::str::from_utf8(&body).map_err(|_| {
        ApiError::Validation(dsx_model::FieldError {
            loc: vec!["body".into()],
            msg: "state value must be UTF-8 text".into(),
            kind: "string_type",
        })
    })?;
    state.store.put_state(uuid, &ns, &key, value).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET connectors/state/{uuid}/{ns}/{key}` → `{"value": …}` (`null` when unset).
pub async fn get_state(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path((raw, ns, key)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let uuid = parse_uuid(&raw, "connector_uuid")?;
    caller.ensure_acts_for(uuid)?;
    super::scan::check_id(&ns, &["path", "ns"])?;
    super::scan::check_id(&key, &["path", "key"])?;
    let value = state.store.get_state(uuid, &ns, &key).await?;
    Ok(Json(json!({ "value": value })))
}

#[derive(serde::Deserialize, Default)]
pub struct RotateQuery {
    /// Revoke the current key at once (a leaked key): the connector must re-enroll.
    #[serde(default)]
    revoke_now: Option<String>,
}

/// `POST connectors/rotate/{uuid}` (operator, ours). By default the connector's next signed
/// heartbeat receives a new key and the old one stays valid for the grace period, so nothing
/// in flight is refused. With `revoke_now=true` every key of the connector is revoked at once;
/// its next call gets `unknown_key_id` and it re-enrolls with its enrollment token.
pub async fn rotate(
    State(state): State<SharedState>,
    Path(raw): Path<String>,
    axum::extract::Query(query): axum::extract::Query<RotateQuery>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let uuid = parse_uuid(&raw, "connector_uuid")?;
    if !state.settings.auth.enabled {
        return Err(ApiError::BadRequest("auth is disabled: connectors have no keys to rotate"));
    }
    let Some(current) = state.store.current_credential(uuid).await? else {
        return Err(ApiError::ConnectorNotFound);
    };
    if super::query_flag(query.revoke_now.as_deref()) {
        state.store.revoke_credentials(uuid).await?;
        state.forget_keys_everywhere(uuid).await;
        tracing::info!(target: "audit", %uuid, key_id = %current.key_id, by = "operator", "connector key revoked for rotation");
        let body = json!({
            "status": "success",
            "message": "key_revoked",
            "description": "the connector's keys are revoked; it re-enrolls with its enrollment token on its next call",
        });
        return Ok((StatusCode::OK, Json(body)));
    }
    let mut record = state.store.get_registration(uuid).await?.unwrap_or_else(|| dsx_store::RegistrationRecord {
        at: 0,
        via: "unknown".into(),
        token_slot: None,
        peer: None,
        ..Default::default()
    });
    record.rotation_requested = true;
    state.store.put_registration(uuid, &record).await?;
    tracing::info!(target: "audit", %uuid, key_id = %current.key_id, by = "operator", "connector key rotation requested");
    let grace = state.settings.auth.key_grace.as_secs();
    let body = json!({
        "status": "success",
        "message": "rotation_scheduled",
        "description": format!("the connector's next signed heartbeat receives a new key; the current key stays valid for {grace} s after that"),
    });
    Ok((StatusCode::ACCEPTED, Json(body)))
}

//! The connector's HTTP routes, served under `/<name>/` (API.md "Connector routes").

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use dsx_filter::Filter;
use dsx_model::{parse_json, ItemAction, ItemActionStatusResponse, ScanRequest, StatusKind, StatusResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::full_scan::FullScanParams;
use crate::repository::{ActionPlan, RepoError};
use crate::{inbound, ConnectorContext};

type Ctx = State<Arc<ConnectorContext>>;

pub fn router(ctx: Arc<ConnectorContext>) -> Router {
    let base = format!("/{}", ctx.settings.name);
    let protected = Router::new()
        .route("/read_file", post(read_file))
        .route("/item_action", put(item_action))
        .route("/full_scan", post(full_scan))
        .route("/repo_check", get(repo_check))
        .route("/estimate", get(estimate))
        .route("/config", get(get_config).put(put_config))
        .route("/assets", get(assets))
        .route("/objects", get(objects))
        .route_layer(from_fn_with_state(Arc::clone(&ctx), inbound::verify));
    let open = Router::new()
        .route("/healthz", get(|| async { Json(json!({ "ok": true })) }))
        .route("/readyz", get(readyz))
        .route("/version", get(|| async { Json(json!({ "version": env!("CARGO_PKG_VERSION") })) }))
        .route("/openapi.json", get(openapi))
        .route("/", get(root));
    Router::new()
        .nest(&base, protected.merge(open))
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({ "detail": "not_found" }))) })
        .with_state(ctx)
}

fn error(status: StatusCode, detail: &str, message: String) -> Response {
    (status, Json(json!({ "detail": detail, "message": message }))).into_response()
}

impl IntoResponse for RepoError {
    fn into_response(self) -> Response {
        match self {
            RepoError::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found", m),
            RepoError::Forbidden(m) => error(StatusCode::FORBIDDEN, "forbidden", m),
            RepoError::Invalid(m) => error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", m),
            RepoError::Io(m) => {
                tracing::error!(error = %m, "repository error");
                error(StatusCode::INTERNAL_SERVER_ERROR, "repository_error", m)
            }
        }
    }
}

fn validation_error(e: dsx_model::FieldError) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "detail": [e] }))).into_response()
}

/// `POST read_file`: the item's bytes, streamed. Errors are HTTP errors, never a 200.
async fn read_file(State(ctx): Ctx, body: Bytes) -> Response {
    let request: ScanRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(e) => return validation_error(e),
    };
    match ctx.repo.open(&request).await {
        Ok((stream, size)) => {
            let mut resp = Response::new(stream);
            resp.headers_mut().insert(header::CONTENT_TYPE, "application/octet-stream".parse().expect("static"));
            if let Some(size) = size {
                resp.headers_mut().insert(header::CONTENT_LENGTH, size.into());
            }
            resp
        }
        Err(err) => {
            tracing::warn!(location = %request.location, error = %err, "read_file refused");
            err.into_response()
        }
    }
}

fn plan_for(ctx: &ConnectorContext, request: &ScanRequest) -> ActionPlan {
    let runtime = ctx.runtime.read().expect("runtime lock");
    let requested = request.requested_action.as_ref();
    let preserve = requested
        .and_then(|r| r.details.as_ref())
        .and_then(|d| d.pointer("/quarantine_target/preserve_relative_path"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    ActionPlan {
        action: requested.and_then(|r| r.kind).unwrap_or(runtime.item_action),
        move_target: requested
            .and_then(|r| r.destination.as_ref())
            .and_then(|d| d.path.clone())
            .unwrap_or_else(|| runtime.item_action_move_metainfo.clone()),
        preserve_relative_path: preserve,
    }
}

/// `PUT item_action`: remediate per the configured or requested action.
async fn item_action(State(ctx): Ctx, body: Bytes) -> Response {
    let request: ScanRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(e) => return validation_error(e),
    };
    let plan = plan_for(&ctx, &request);
    let respond = |status, message: String, description: String| {
        let response = StatusResponse { status, message, description, id: None, preview: None };
        Json(ItemActionStatusResponse { response, item_action: plan.action }).into_response()
    };
    match plan.action {
        ItemAction::Nothing | ItemAction::NotImplemented => {
            respond(StatusKind::Nothing, "no action taken".into(), format!("item action is {}", plan.action.as_str()))
        }
        _ => match ctx.repo.item_action(&request, &plan).await {
            Ok(outcome) => {
                tracing::info!(location = %request.location, action = plan.action.as_str(), "{}", outcome.message);
                respond(StatusKind::Success, outcome.message, outcome.description)
            }
            Err(err) => {
                tracing::warn!(location = %request.location, action = plan.action.as_str(), error = %err, "item action failed");
                err.into_response()
            }
        },
    }
}

#[derive(Deserialize)]
struct FullScanQuery {
    limit: Option<u64>,
    batch: Option<String>,
    batch_size: Option<usize>,
    job_id: Option<String>,
}

/// `POST full_scan`: starts enumeration in the background.
async fn full_scan(State(ctx): Ctx, Query(q): Query<FullScanQuery>) -> Json<StatusResponse> {
    let job_id = q.job_id.filter(|j| !j.is_empty()).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let params = FullScanParams {
        job_id: job_id.clone(),
        limit: q.limit,
        // Without `batch`, the server's advertised capability decides (full_scan.rs).
        batch: q
            .batch
            .as_deref()
            .map(|b| !matches!(b.trim().to_ascii_lowercase().as_str(), "0" | "false" | "no" | "off")),
        batch_size: q.batch_size.map(|n| n.clamp(1, 10_000)),
    };
    tokio::spawn(Arc::clone(&ctx).run_full_scan(params));
    let mut resp = StatusResponse::success("Full scan initiated", format!("job {job_id}"));
    resp.id = Some(job_id);
    Json(resp)
}

#[derive(Deserialize)]
struct PreviewQuery {
    preview: Option<usize>,
}

/// `GET repo_check?preview=N`: reachable? plus the first N items.
async fn repo_check(State(ctx): Ctx, Query(q): Query<PreviewQuery>) -> Response {
    if let Err(reason) = ctx.repo.check().await {
        let resp = StatusResponse {
            status: StatusKind::Error,
            message: "repository unreachable".into(),
            description: reason,
            id: None,
            preview: None,
        };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(resp)).into_response();
    }
    let preview = match q.preview.filter(|n| *n > 0) {
        Some(n) => Some(ctx.first_items(n.min(1000)).await.into_iter().map(|i| json!(i.location)).collect()),
        None => None,
    };
    let mut resp = StatusResponse::success("repository reachable", ctx.settings.asset.clone());
    resp.preview = preview;
    Json(resp).into_response()
}

async fn estimate(State(ctx): Ctx) -> Response {
    let filter = ctx.runtime.read().expect("runtime lock").filter.clone();
    Json(ctx.repo.estimate(filter).await).into_response()
}

/// The connector's configuration; the enrollment token and keys are never part of it.
fn config_json(ctx: &ConnectorContext) -> Value {
    let runtime = ctx.runtime.read().expect("runtime lock");
    let s = &ctx.settings;
    json!({
        "name": s.name,
        "url": s.base_url(),
        "dsx_connect_url": s.dsx_connect_url,
        "asset": s.asset,
        "asset_display_name": s.asset_display_name,
        "filter": runtime.filter.spec(),
        "item_action": runtime.item_action,
        "item_action_move_metainfo": runtime.item_action_move_metainfo,
        "monitor": s.monitor,
        "full_scan_enqueue_concurrency": s.full_scan_enqueue_concurrency,
        "auth": { "enabled": s.auth_enabled, "enrollment_token": if s.enrollment_token.is_some() { "***" } else { "" } },
    })
}

async fn get_config(State(ctx): Ctx) -> Json<Value> {
    Json(config_json(&ctx))
}

#[derive(Deserialize)]
struct ConfigUpdate {
    filter: Option<String>,
    item_action: Option<ItemAction>,
    item_action_move_metainfo: Option<String>,
}

/// `PUT config`: change the filter or remediation at run time.
async fn put_config(State(ctx): Ctx, body: Bytes) -> Response {
    let update: ConfigUpdate = match parse_json(&body) {
        Ok(u) => u,
        Err(e) => return validation_error(e),
    };
    let filter = match update.filter.as_deref().map(Filter::parse).transpose() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_filter", e.to_string()),
    };
    {
        let mut runtime = ctx.runtime.write().expect("runtime lock");
        if let Some(f) = filter {
            runtime.filter = Arc::new(f);
        }
        if let Some(a) = update.item_action {
            runtime.item_action = a;
        }
        if let Some(m) = update.item_action_move_metainfo {
            runtime.item_action_move_metainfo = m;
        }
        let (filter, action, meta) =
            (runtime.filter.spec().to_owned(), runtime.item_action, runtime.item_action_move_metainfo.clone());
        ctx.dsx.update_model(|m| {
            m.filter = filter;
            m.item_action = action;
            m.item_action_move_metainfo = meta;
        });
    }
    tracing::info!("configuration updated");
    Json(config_json(&ctx)).into_response()
}

async fn assets(State(ctx): Ctx) -> Json<Value> {
    Json(json!([{ "asset": ctx.settings.asset, "display_name": ctx.settings.asset_display_name }]))
}

#[derive(Deserialize)]
struct ObjectsQuery {
    limit: Option<usize>,
}

async fn objects(State(ctx): Ctx, Query(q): Query<ObjectsQuery>) -> Json<Value> {
    let items = ctx.first_items(q.limit.unwrap_or(100).min(10_000)).await;
    Json(json!(items
        .into_iter()
        .map(|i| json!({ "location": i.location, "metainfo": i.metainfo, "size_in_bytes": i.size }))
        .collect::<Vec<_>>()))
}

async fn readyz(State(ctx): Ctx) -> Response {
    let model = ctx.dsx.model();
    let status = if ctx.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(model)).into_response()
}

/// Hidden when DSX-HMAC verification is on (see `openapi.rs`).
async fn openapi(State(ctx): Ctx) -> Response {
    if ctx.settings.auth_enabled {
        return (StatusCode::NOT_FOUND, Json(json!({ "detail": "not_found" }))).into_response();
    }
    Json(crate::openapi::document(&ctx.settings.name)).into_response()
}

async fn root(State(ctx): Ctx) -> Json<Value> {
    Json(json!({ "name": ctx.settings.name, "version": env!("CARGO_PKG_VERSION"), "asset": ctx.settings.asset }))
}

impl ConnectorContext {
    pub async fn first_items(&self, n: usize) -> Vec<crate::repository::Item> {
        let filter = self.runtime.read().expect("runtime lock").filter.clone();
        let mut rx = self.repo.enumerate(filter);
        let mut out = Vec::new();
        while out.len() < n {
            match rx.recv().await {
                Some(Ok(item)) => out.push(item),
                Some(Err(_)) => continue,
                None => break,
            }
        }
        out
    }
}

//! The connector's HTTP routes, served under `/<name>/` (docs/wire-protocol.md, "Connector routes"). Answers
//! carry every field the Python 1.x server reads from a Python connector; the deliberate
//! differences are in docs/interop.md ("Connectors").

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::Method;
use axum::http::{header, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use dsx_filter::Filter;
use dsx_model::{
    parse_json, ConnectorStatus, ItemAction, ItemActionStatusResponse, RequestedAction, ScanRequest, StatusKind,
    StatusResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::full_scan::FullScanParams;
use crate::repository::{ActionPlan, Item, RepoError};
use crate::{inbound, ConnectorContext};

type Ctx = State<Arc<ConnectorContext>>;

pub fn router(ctx: Arc<ConnectorContext>) -> Router {
    router_with(ctx, false)
}

/// Who may call a connector route when inbound auth is on (docs/wire-protocol.md, "Connector
/// routes").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Signed by dsx-connect (DSX-HMAC).
    Signed,
    /// Signed, except the Microsoft Graph validation handshake (`?validationToken=X`).
    SignedOrHandshake,
    /// No credentials.
    Open,
}

impl Access {
    /// The rule's name in the document (`x-dsx-access`).
    pub fn name(self) -> &'static str {
        match self {
            Access::Signed => "dsx-hmac",
            Access::SignedOrHandshake => "dsx-hmac-or-validation-token",
            Access::Open => "open",
        }
    }

    /// With mutual TLS on, the routes only dsx-connect calls also need its client
    /// certificate; probes, the home page and the webhook (called by others) do not.
    pub fn mutual_tls(self) -> bool {
        self == Access::Signed
    }
}

/// One connector route (`dsx_service::routes`): the router, its access layer and the OpenAPI
/// document (`openapi.rs`) all come from [`table`], so they cannot disagree. Paths are below
/// `/<name>`.
pub type Route = dsx_service::routes::Route<Arc<ConnectorContext>, Access>;

/// Every route a connector serves under `/<name>`.
pub fn table() -> Vec<Route> {
    use Access::*;
    vec![
        Route::new(
            Method::POST,
            "/read_file",
            Signed,
            "readFile",
            "The item's bytes, streamed (application/octet-stream)",
            read_file,
        )
        .body::<ScanRequest>(),
        Route::new(
            Method::PUT,
            "/item_action",
            Signed,
            "applyItemAction",
            "Apply the configured (or requested) action to an item; a failure is a 200 with `status:\"error\"` and `error_code`",
            item_action,
        )
        .body::<ScanRequest>()
        .returns::<ItemActionAnswer>(),
        Route::new(
            Method::POST,
            "/full_scan",
            Signed,
            "startFullScan",
            "Enumerate the asset and enqueue every matching item; `?limit&batch&batch_size&job_id`",
            full_scan,
        )
        .returns::<StatusResponse>(),
        Route::new(
            Method::GET,
            "/repo_check",
            Signed,
            "checkRepository",
            "Can the connector reach its repository? `?preview=N`; unreachable is a 200 with `status:\"error\"`",
            repo_check,
        )
        .returns::<StatusResponse>(),
        Route::new(
            Method::POST,
            "/release",
            Signed,
            "releaseItem",
            "Operator action (relayed by dsx-connect): restore a quarantined item, body `{\"location\": …}`",
            release,
        )
        .returns::<StatusResponse>(),
        Route::new(Method::GET, "/estimate", Signed, "estimateFullScan", "How many items a full scan would enqueue", estimate)
            .returns::<dsx_model::Estimate>(),
        Route::new(Method::GET, "/config", Signed, "getConfig", "The connector's configuration (secrets masked)", get_config),
        Route::new(
            Method::PUT,
            "/config",
            Signed,
            "updateConfig",
            "Change `filter`, `item_action`, `item_action_move_metainfo` or `requested_action.type`/`.destination`; \
             answers the GET view, or `{\"error\":\"no_supported_fields\",\"supported\":[…]}`",
            put_config,
        ),
        Route::new(
            Method::GET,
            "/assets",
            Signed,
            "listAssets",
            "The asset this connector scans; `?type&source&limit&cursor`",
            assets,
        )
        .returns::<AssetsPage>(),
        Route::new(Method::GET, "/objects", Signed, "listObjects", "A page of the asset's items; `?scope&limit&cursor`", objects)
            .returns::<ObjectsPage>(),
        Route::new(
            Method::POST,
            "/webhook/event",
            SignedOrHandshake,
            "handleWebhookEvent",
            "Scan one item named by `location` (or `path`, `file_path`); `?validationToken=X` is answered \
             `X` (text/plain) without a signature, the Microsoft Graph handshake",
            webhook_event,
        )
        .returns::<StatusResponse>(),
        Route::new(Method::GET, "/healthz", Open, "getHealth", "Liveness", || async { Json(json!({ "ok": true })) }),
        Route::new(Method::GET, "/readyz", Open, "getReadiness", "Readiness: the connector model, 503 until registered", readyz),
        Route::new(Method::GET, "/version", Open, "getVersion", "Name, id, instance id and version", version)
            .returns::<VersionInfo>(),
        Route::new(Method::GET, "/", Open, "getHome", "Name, version and asset (also at `/<name>/`)", root),
        Route::new(
            Method::GET,
            "/openapi.json",
            Open,
            "getOpenApiDocument",
            "This document (404 when DSX-HMAC verification is on)",
            openapi,
        ),
    ]
}

/// [`router`]; with `mutual_tls` the routes dsx-connect calls also need its TLS client
/// certificate (probes and the home page do not).
pub fn router_with(ctx: Arc<ConnectorContext>, mutual_tls: bool) -> Router {
    let base = format!("/{}", ctx.settings.name);
    let inner = dsx_service::routes::router(table(), str::to_owned, |access, mut group| {
        group = match access {
            Access::Signed => group.route_layer(from_fn_with_state(Arc::clone(&ctx), inbound::verify)),
            Access::SignedOrHandshake => group.route_layer(from_fn_with_state(Arc::clone(&ctx), webhook_gate)),
            Access::Open => group,
        };
        if mutual_tls && access.mutual_tls() {
            group = group.route_layer(axum::middleware::from_fn(dsx_service::tls::require_client_cert));
        }
        group
    });
    Router::new()
        .nest(&base, inner)
        // Python connectors serve their home at `/<name>/`; nesting only matches `/<name>`.
        .route(&format!("{base}/"), get(root))
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({ "detail": "not_found" }))) })
        .with_state(ctx)
}

fn error(status: StatusCode, detail: &str, message: String) -> Response {
    (status, Json(json!({ "detail": detail, "message": message }))).into_response()
}

impl IntoResponse for RepoError {
    fn into_response(self) -> Response {
        let status = match self {
            RepoError::NotFound(_) => StatusCode::NOT_FOUND,
            RepoError::Forbidden(_) => StatusCode::FORBIDDEN,
            RepoError::Invalid(_) | RepoError::Unscannable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            // Not retryable: reading again would read the new content, not the listed one.
            RepoError::Changed(_) => StatusCode::CONFLICT,
            RepoError::Io(ref m) => {
                tracing::error!(error = %m, "repository error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        error(status, self.code(), self.reason().to_owned())
    }
}

fn validation_error(e: dsx_model::FieldError) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "detail": [e] }))).into_response()
}

/// `POST read_file`: the item's bytes, streamed. Errors are HTTP errors, never a 200: a
/// Python server scans whatever a 200 carries (docs/interop.md).
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

/// `PUT item_action` answer: Python's ItemActionStatusResponse, plus `error_code` on a
/// failure so dsx-connect can tell an item that is already gone (remediated by an earlier
/// attempt) from an I/O error. Python servers ignore the extra field.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ItemActionAnswer {
    #[serde(flatten)]
    pub response: ItemActionStatusResponse,
    /// `not_found` | `forbidden` | `invalid_request` | `repository_error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'static str>,
}

/// `PUT item_action`: remediate per the configured or requested action. A failed action is
/// a `200` with `status:"error"`: the Python worker reads the body as an
/// ItemActionStatusResponse whatever the HTTP status.
async fn item_action(State(ctx): Ctx, body: Bytes) -> Response {
    let request: ScanRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(e) => return validation_error(e),
    };
    let plan = plan_for(&ctx, &request);
    let respond = |status, message: String, description: String, error_code| {
        let response = StatusResponse { status, message, description, id: None, preview: None };
        Json(ItemActionAnswer { response: ItemActionStatusResponse { response, item_action: plan.action }, error_code })
            .into_response()
    };
    match plan.action {
        ItemAction::Nothing | ItemAction::NotImplemented => respond(
            StatusKind::Nothing,
            "Item action did nothing or not implemented".into(),
            format!("item action is {}", plan.action.as_str()),
            None,
        ),
        _ => match ctx.repo.item_action(&request, &plan).await {
            Ok(outcome) => {
                tracing::info!(location = %request.location, action = plan.action.as_str(), "{}", outcome.message);
                respond(StatusKind::Success, outcome.message, outcome.description, None)
            }
            Err(err) => {
                tracing::warn!(location = %request.location, action = plan.action.as_str(), error = %err, "item action failed");
                let reason = err.reason().to_owned();
                respond(StatusKind::Error, reason.clone(), reason, Some(err.code()))
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
    let mut resp = StatusResponse::success(
        "Full scan initiated",
        format!("The scan is running in the background. job_id={job_id}"),
    );
    resp.id = Some(job_id);
    Json(resp)
}

#[derive(Deserialize)]
struct PreviewQuery {
    preview: Option<usize>,
}

/// `GET repo_check?preview=N`: reachable? plus the first N items. An unreachable repository
/// is a `200` StatusResponse with `status:"error"`, which is what the Python server expects.
async fn repo_check(State(ctx): Ctx, Query(q): Query<PreviewQuery>) -> Json<StatusResponse> {
    if let Err(reason) = ctx.repo.check().await {
        return Json(StatusResponse::error(format!("{} connectivity failed.", ctx.settings.asset), reason));
    }
    let preview = match q.preview.filter(|n| *n > 0) {
        Some(n) => Some(ctx.first_items(n.min(1000)).await.into_iter().map(|i| json!(i.location)).collect()),
        None => None,
    };
    let mut resp = StatusResponse::success(
        format!("{} connectivity success.", ctx.settings.asset),
        q.preview.map(|n| format!("preview={n}")).unwrap_or_default(),
    );
    resp.preview = preview;
    Json(resp)
}

async fn estimate(State(ctx): Ctx) -> Response {
    let filter = ctx.runtime.read().expect("runtime lock").filter.clone();
    Json(ctx.repo.estimate(filter).await).into_response()
}

/// The connector's configuration: its registration model (what Python's `GET config`
/// returns) plus the runtime settings. The enrollment token and keys are never part of it.
fn config_json(ctx: &ConnectorContext) -> Value {
    let mut doc = serde_json::to_value(ctx.dsx.model()).expect("connector model serialises");
    let runtime = ctx.runtime.read().expect("runtime lock");
    let s = &ctx.settings;
    let extra = json!({
        "filter": runtime.filter.spec(),
        "item_action": runtime.item_action,
        "item_action_move_metainfo": runtime.item_action_move_metainfo,
        "resolved_asset_base": s.asset,
        "monitor": s.monitor,
        "monitor_force_polling": s.monitor_force_polling,
        "monitor_poll_interval_ms": s.monitor_poll_interval.as_millis() as u64,
        "dsx_connect_url": s.dsx_connect_url,
        "full_scan_enqueue_concurrency": s.full_scan_enqueue_concurrency,
        "auth": { "enabled": s.auth_enabled, "enrollment_token": if s.enrollment_token.is_some() { "***" } else { "" } },
    });
    if let (Value::Object(doc), Value::Object(extra)) = (&mut doc, extra) {
        doc.extend(extra);
    }
    doc
}

async fn get_config(State(ctx): Ctx) -> Json<Value> {
    Json(config_json(&ctx))
}

/// The fields `PUT config` changes at run time.
const CONFIG_FIELDS: &[&str] = &["filter", "item_action", "item_action_move_metainfo", "requested_action"];

#[derive(Deserialize)]
struct ConfigUpdate {
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    item_action: Option<ItemAction>,
    #[serde(default)]
    item_action_move_metainfo: Option<String>,
    /// Python's shape for the same two settings: `type` → item action, `destination.path` →
    /// quarantine folder.
    #[serde(default)]
    requested_action: Option<RequestedAction>,
}

/// `PUT config`: change the filter or remediation at run time; answers the GET view. A body
/// with none of the supported fields is a `200 {"error":"no_supported_fields",…}`, as Python
/// connectors answer (the server passes it through). Changing `asset` needs a restart.
async fn put_config(State(ctx): Ctx, body: Bytes) -> Response {
    let fields: Map<String, Value> = match parse_json(&body) {
        Ok(f) => f,
        Err(e) => return validation_error(e),
    };
    if !fields.keys().any(|k| CONFIG_FIELDS.contains(&k.as_str())) {
        return Json(json!({ "error": "no_supported_fields", "supported": CONFIG_FIELDS })).into_response();
    }
    let update: ConfigUpdate = match parse_json(&body) {
        Ok(u) => u,
        Err(e) => return validation_error(e),
    };
    let filter = match update.filter.as_deref().map(Filter::parse).transpose() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_filter", e.to_string()),
    };
    let requested = update.requested_action.unwrap_or_default();
    let action = update.item_action.or(requested.kind);
    let quarantine = update
        .item_action_move_metainfo
        .or_else(|| requested.destination.and_then(|d| d.path))
        .filter(|q| !q.is_empty());
    {
        let mut runtime = ctx.runtime.write().expect("runtime lock");
        if let Some(f) = filter {
            runtime.filter = Arc::new(f);
        }
        if let Some(a) = action {
            runtime.item_action = a;
        }
        if let Some(q) = quarantine {
            runtime.item_action_move_metainfo = q;
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
    let mut view = config_json(&ctx);
    view["persistence"] = json!({ "applied": false, "detail": "runtime_only" });
    let ignored: Vec<&String> = fields.keys().filter(|k| !CONFIG_FIELDS.contains(&k.as_str())).collect();
    if !ignored.is_empty() {
        view["ignored"] = json!(ignored);
    }
    Json(view).into_response()
}

/// `(offset, limit)` of a page of `assets` or `objects`; `cursor` is an opaque offset.
/// `None` for a cursor this connector never issued.
fn page_bounds(limit: Option<usize>, cursor: Option<&str>) -> Option<(usize, usize)> {
    let offset = match cursor.filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => c.parse().ok()?,
    };
    Some((offset, limit.unwrap_or(100).clamp(1, 1000)))
}

fn invalid_cursor() -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_cursor", "cursor is not one this connector issued".into())
}

#[derive(Deserialize)]
struct AssetsQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    source: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET assets` answer (the shape of Python's asset browser).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct AssetsPage {
    pub asset_type: String,
    pub source: String,
    pub status: String,
    pub assets: Vec<AssetEntry>,
    pub next_cursor: Option<String>,
    pub unsupported: bool,
    pub message: Option<String>,
    pub required_permission: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct AssetEntry {
    pub id: String,
    pub display_name: String,
    pub selector: String,
    pub metadata: Value,
}

/// `GET assets`: the asset this connector scans (one entry; a new asset needs a restart).
async fn assets(State(ctx): Ctx, Query(q): Query<AssetsQuery>) -> Response {
    let Some((offset, limit)) = page_bounds(q.limit, q.cursor.as_deref()) else { return invalid_cursor() };
    let s = &ctx.settings;
    let display_name = if s.asset_display_name.is_empty() {
        s.asset.trim_end_matches('/').rsplit('/').next().unwrap_or(&s.asset).to_owned()
    } else {
        s.asset_display_name.clone()
    };
    let all = [AssetEntry {
        id: s.asset.clone(),
        display_name,
        selector: s.asset.clone(),
        metadata: json!({ "relative_path": ".", "configured_root": true }),
    }];
    let assets: Vec<AssetEntry> = all.into_iter().skip(offset).take(limit).collect();
    Json(AssetsPage {
        asset_type: q.kind.unwrap_or_else(|| "asset".into()),
        source: q.source.unwrap_or_else(|| "all".into()),
        status: "success".into(),
        assets,
        next_cursor: None,
        unsupported: false,
        message: None,
        required_permission: None,
    })
    .into_response()
}

#[derive(Deserialize)]
struct ObjectsQuery {
    scope: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET objects` answer.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ObjectsPage {
    pub scope: Option<String>,
    pub status: String,
    pub objects: Vec<ObjectEntry>,
    pub next_cursor: Option<String>,
    pub unsupported: bool,
    pub message: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ObjectEntry {
    pub identity: String,
    pub location: String,
    pub display_name: String,
    pub size_in_bytes: Option<u64>,
    pub metadata: Value,
}

/// `GET objects?scope&limit&cursor`: a page of the items a full scan would enqueue, under
/// `scope` (a folder or key prefix relative to the asset).
async fn objects(State(ctx): Ctx, Query(q): Query<ObjectsQuery>) -> Response {
    let Some((offset, limit)) = page_bounds(q.limit, q.cursor.as_deref()) else { return invalid_cursor() };
    let scope = q.scope.as_deref().map(|s| s.trim_matches('/')).unwrap_or_default().to_owned();
    let under_scope = format!("{scope}/");
    let filter = ctx.runtime.read().expect("runtime lock").filter.clone();
    let mut rx = ctx.repo.enumerate(filter);
    let (mut matched, mut objects, mut more) = (0usize, Vec::new(), false);
    while let Some(next) = rx.recv().await {
        let Ok(item) = next else { continue };
        let rel = relative_to_asset(&ctx.settings.asset, &item.location);
        if !scope.is_empty() && rel != scope && !rel.starts_with(&under_scope) {
            continue;
        }
        matched += 1;
        if matched <= offset {
            continue;
        }
        if objects.len() == limit {
            more = true;
            break;
        }
        objects.push(ObjectEntry {
            identity: item.location.clone(),
            display_name: item.metainfo.clone(),
            size_in_bytes: item.size,
            metadata: json!({ "relative_path": rel }),
            location: item.location,
        });
    }
    Json(ObjectsPage {
        scope: q.scope,
        status: "success".into(),
        next_cursor: more.then(|| (offset + objects.len()).to_string()),
        objects,
        unsupported: false,
        message: None,
    })
    .into_response()
}

/// `location` relative to the asset (`/` separated), as filters see it; unchanged when it
/// is not under the asset.
fn relative_to_asset(asset: &str, location: &str) -> String {
    let asset = asset.trim_end_matches('/');
    match location.strip_prefix(asset) {
        Some(rest) if !asset.is_empty() && (rest.is_empty() || rest.starts_with('/')) => {
            rest.trim_start_matches('/').to_owned()
        }
        _ => location.trim_start_matches('/').to_owned(),
    }
}

#[derive(Deserialize)]
struct WebhookQuery {
    #[serde(rename = "validationToken")]
    validation_token: Option<String>,
}

/// Largest validation token echoed back.
const MAX_VALIDATION_TOKEN: usize = 1024;

/// `webhook/event` is signed like every private route, except the Microsoft Graph
/// subscription handshake (`?validationToken=X`), which carries no credentials: it gets `X`
/// back as text and nothing else happens.
async fn webhook_gate(State(ctx): Ctx, req: Request, next: Next) -> Response {
    let token = Query::<WebhookQuery>::try_from_uri(req.uri()).ok().and_then(|q| q.0.validation_token);
    match token {
        Some(token) => validation_handshake(&token),
        None => inbound::verify(State(ctx), req, next).await,
    }
}

fn validation_handshake(token: &str) -> Response {
    // Bounded and printable, so the echo cannot be used to reflect arbitrary content.
    if token.is_empty() || token.len() > MAX_VALIDATION_TOKEN || !token.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_validation_token",
            "1 to 1024 printable ASCII characters".into(),
        );
    }
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")],
        token.to_owned(),
    )
        .into_response()
}

/// A webhook event naming one item (Python's filesystem event keys).
#[derive(Deserialize)]
struct WebhookEvent {
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    file_path: Option<String>,
}

/// `POST webhook/event`: one scan request for the named item, through the repository's
/// confinement and the filter, like a monitored change. Outcomes are `200` StatusResponses.
async fn webhook_event(State(ctx): Ctx, body: Bytes) -> Json<StatusResponse> {
    let filter = ctx.runtime.read().expect("runtime lock").filter.clone();
    if let Some(parsed) = ctx.repo.webhook_items(&body, filter).await {
        return Json(enqueue_event_items(&ctx, parsed).await);
    }
    let location = serde_json::from_slice::<WebhookEvent>(&body)
        .ok()
        .and_then(|e| e.location.or(e.path).or(e.file_path))
        .filter(|l| !l.trim().is_empty());
    let Some(location) = location else {
        return Json(StatusResponse::error(
            "Invalid filesystem event format",
            "Missing 'location' (or 'path'/'file_path') in event payload",
        ));
    };
    let item = match ctx.event_item(&location).await {
        Ok(Some(item)) => item,
        Ok(None) => {
            let mut resp = StatusResponse::success("Event ignored", format!("{location} does not match the filter"));
            resp.status = StatusKind::Nothing;
            return Json(resp);
        }
        Err(err) => {
            tracing::warn!(%location, error = %err, "webhook event refused");
            return Json(StatusResponse::error("Webhook event refused", err.to_string()));
        }
    };
    match ctx.enqueue_item(&item).await {
        Ok(job_id) => {
            tracing::info!(%location, job_id, "webhook event enqueued");
            let mut resp = StatusResponse::success("Webhook processed", format!("Scan request sent for {location}"));
            resp.id = Some(job_id);
            Json(resp)
        }
        Err(err) => Json(StatusResponse::error("Scan request failed", err)),
    }
}

/// Every item of a kind-specific event, each as its own job. Any failure makes the answer an
/// error (the sender retries the whole event; items already queued are scanned twice at worst).
async fn enqueue_event_items(ctx: &ConnectorContext, parsed: Result<Vec<Item>, RepoError>) -> StatusResponse {
    let items = match parsed {
        Ok(items) => items,
        Err(err) => {
            tracing::warn!(error = %err, "webhook event refused");
            return StatusResponse::error("Webhook event refused", err.to_string());
        }
    };
    if items.is_empty() {
        let mut resp = StatusResponse::success("Event ignored", "no record of the event names an item to scan");
        resp.status = StatusKind::Nothing;
        return resp;
    }
    let (mut jobs, mut failed) = (Vec::new(), Vec::new());
    for item in &items {
        match ctx.enqueue_item(item).await {
            Ok(job_id) => {
                tracing::info!(location = %item.location, job_id, "webhook event enqueued");
                jobs.push(job_id);
            }
            Err(err) => failed.push(format!("{}: {err}", item.location)),
        }
    }
    if !failed.is_empty() {
        return StatusResponse::error("Scan request failed", failed.join("; "));
    }
    let mut resp =
        StatusResponse::success("Webhook processed", format!("Scan requests sent for {} item(s)", jobs.len()));
    resp.id = Some(jobs.join(","));
    resp
}

#[derive(Deserialize)]
struct ReleaseBody {
    location: String,
}

/// `POST release` (operator action relayed by dsx-connect): restore a quarantined item to
/// where it was found. Failures are HTTP errors with a `detail` code.
async fn release(State(ctx): Ctx, body: Bytes) -> Response {
    let location = match parse_json::<ReleaseBody>(&body) {
        Ok(b) if !b.location.trim().is_empty() => b.location,
        Ok(_) => return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", "location is empty".into()),
        Err(e) => return validation_error(e),
    };
    match ctx.repo.release(&location).await {
        Ok(outcome) => {
            tracing::info!(target: "audit", %location, restored = %outcome.description, "released from quarantine");
            Json(StatusResponse::success(outcome.message, outcome.description)).into_response()
        }
        Err(err) => {
            tracing::warn!(%location, error = %err, "release refused");
            err.into_response()
        }
    }
}

/// `GET readyz`: 200 once registered (and, with DSX-HMAC on, holding its key), else 503. The
/// body says the same as the status: `ready`, and the model's `status` is `ready` or
/// `starting`.
async fn readyz(State(ctx): Ctx) -> Response {
    let ready = ctx.is_ready();
    let mut model = ctx.dsx.model();
    model.status = if ready { ConnectorStatus::Ready } else { ConnectorStatus::Starting };
    let mut body = serde_json::to_value(&model).unwrap_or_else(|_| json!({}));
    body["ready"] = json!(ready);
    if !ready {
        body["detail"] = json!("not_registered");
        body["message"] = json!("not yet registered with dsx-connect (or not yet holding its DSX-HMAC key)");
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `GET version`, Python's shape. The instance id is the connector's uuid (one per replica).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct VersionInfo {
    pub connector_name: String,
    pub connector_id: String,
    pub connector_instance_id: String,
    pub version: String,
}

async fn version(State(ctx): Ctx) -> Json<VersionInfo> {
    let model = ctx.dsx.model();
    Json(VersionInfo {
        connector_name: model.name.clone(),
        connector_id: model.name,
        connector_instance_id: model.uuid.to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Hidden when DSX-HMAC verification is on (see `openapi.rs`).
async fn openapi(State(ctx): Ctx) -> Response {
    if ctx.settings.auth_enabled {
        return (StatusCode::NOT_FOUND, Json(json!({ "detail": "not_found" }))).into_response();
    }
    Json(crate::openapi::document(&ctx.settings.name)).into_response()
}

/// `GET /`: Python's status summary, plus name, version and asset.
async fn root(State(ctx): Ctx) -> Json<Value> {
    let ready = ctx.is_ready();
    let repo = if ctx.repo.check().await.is_ok() { "success" } else { "failed" };
    Json(json!({
        "connector_status": if ready { "ready" } else { "starting" },
        "dsx-connect connectivity": if ready { "success" } else { "failed" },
        "repo connectivity": repo,
        "scan_requests_since_active_count": ctx.enqueued_since_start(),
        "name": ctx.settings.name,
        "version": env!("CARGO_PKG_VERSION"),
        "asset": ctx.settings.asset,
    }))
}

impl ConnectorContext {
    pub async fn first_items(&self, n: usize) -> Vec<Item> {
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

    /// The item an event names, checked like an enumerated one: the repository must open it
    /// (its confinement refuses anything outside the asset) and the filter must match it.
    /// `Ok(None)` when the filter rules it out.
    pub async fn event_item(&self, location: &str) -> Result<Option<Item>, RepoError> {
        let (body, size) = self.repo.open(&ScanRequest::new(location, "")).await?;
        drop(body);
        let filter = self.runtime.read().expect("runtime lock").filter.clone();
        if !filter.matches(&relative_to_asset(&self.settings.asset, location)) {
            return Ok(None);
        }
        let metainfo = location.trim_end_matches('/').rsplit('/').next().unwrap_or(location).to_owned();
        Ok(Some(Item { location: location.to_owned(), metainfo, size, version: None }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_for_filters() {
        assert_eq!(relative_to_asset("/data/scan", "/data/scan/a/b.txt"), "a/b.txt");
        assert_eq!(relative_to_asset("/data/scan/", "/data/scan/b.txt"), "b.txt");
        assert_eq!(relative_to_asset("/data/scan", "/data/scanner/b.txt"), "data/scanner/b.txt");
        assert_eq!(relative_to_asset("/data/scan", "sub/c.txt"), "sub/c.txt");
    }

    #[test]
    fn validation_tokens_are_bounded_and_printable() {
        assert_eq!(validation_handshake("abc123").status(), StatusCode::OK);
        assert_eq!(validation_handshake(&"x".repeat(1024)).status(), StatusCode::OK);
        for bad in ["", "a\nb", "<\u{7f}>", "é"] {
            assert_eq!(validation_handshake(bad).status(), StatusCode::BAD_REQUEST, "{bad:?}");
        }
        assert_eq!(validation_handshake(&"x".repeat(1025)).status(), StatusCode::BAD_REQUEST);
    }
}

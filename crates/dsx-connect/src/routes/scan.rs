//! Scan intake: `scan/request`, `scan/request_batch`, `scan/jobs/{id}/enqueue_done` and the
//! job control flags connectors read (`scan/jobs/{id}/raw`).

use std::collections::{BTreeMap, HashSet};

use axum::body::Bytes;
use axum::extract::{OptionalFromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use dsx_model::{parse_json, FieldError, ScanRequest, ScanRequestBatch, StatusResponse, API_PREFIX};
use dsx_store::{Job, JobRefusal, JobStatus, OwnedIntake, QueuedTask};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::{Caller, PendingNonce};
use crate::error::ApiError;
use crate::state::{AppState, SharedState};

fn missing_connector(index: Option<usize>) -> ApiError {
    let mut loc = vec!["body".to_owned()];
    if let Some(i) = index {
        loc.extend(["requests".to_owned(), i.to_string()]);
    }
    loc.extend(["connector".to_owned(), "uuid".to_owned()]);
    ApiError::Validation(FieldError {
        loc,
        msg: "field `connector.uuid` is required when auth is disabled".into(),
        kind: "missing",
    })
}

impl AppState {
    /// Bind a scan request to its connector (docs/wire-protocol.md, "Binding"): a verified key decides the
    /// connector; a body naming another one is refused; the registered model and URL
    /// replace whatever the body says.
    async fn attribute(
        &self,
        caller: &Caller,
        mut request: ScanRequest,
        index: Option<usize>,
        known: &mut HashSet<Uuid>,
    ) -> Result<QueuedTask, ApiError> {
        let named = request.connector.as_ref().map(|c| c.uuid);
        let uuid = match caller {
            // A verified signature means the connector's credentials exist: no lookup.
            Caller::Connector { uuid, .. } => {
                if named.is_some_and(|n| n != *uuid) {
                    return Err(ApiError::ConnectorMismatch);
                }
                *uuid
            }
            _ => {
                let uuid = named.ok_or_else(|| missing_connector(index))?;
                self.ensure_known(uuid, known).await?;
                uuid
            }
        };
        // Whatever the body says, the task goes to the registered connector; the worker
        // puts the registered URL and model into the result.
        request.connector_url = None;
        let job_id =
            request.scan_job_id.clone().filter(|j| !j.is_empty()).unwrap_or_else(|| Uuid::new_v4().to_string());
        if !is_valid_id(&job_id) {
            let i_text = index.map(|i| i.to_string());
            let mut loc = vec!["body"];
            if let Some(i) = &i_text {
                loc.extend(["requests", i.as_str()]);
            }
            loc.push("scan_job_id");
            check_id(&job_id, &loc)?;
        }
        request.scan_job_id = Some(job_id.clone());
        // The registry keeps the connector's model; the task needs only its uuid.
        request.connector = None;
        let now_us = dsx_store::now_micros();
        Ok(QueuedTask {
            task_id: Uuid::new_v4().to_string(),
            connector_uuid: uuid,
            job_id,
            request,
            enqueued_at: now_us / 1_000_000,
            enqueued_at_us: now_us,
        })
    }

    /// An unverified caller (auth disabled, break-glass) names its connector; one it does
    /// not know by presence or credentials is 404. Checked once per uuid per request.
    async fn ensure_known(&self, uuid: Uuid, known: &mut HashSet<Uuid>) -> Result<(), ApiError> {
        if known.contains(&uuid) {
            return Ok(());
        }
        if self.store.get_presence(uuid).await?.is_none() && self.store.current_credential(uuid).await?.is_none() {
            return Err(ApiError::ConnectorNotFound);
        }
        known.insert(uuid);
        Ok(())
    }

    /// Queue the tasks, all or none. The store checks in the same atomic step that every job
    /// belongs to the tasks' connector (403) and still takes items (409). With an intake key
    /// the task ids come from the key, so a retry whose first answer was lost gets the same
    /// answer and queues nothing twice (see [`IntakeKey`]).
    /// A verified request's nonce is recorded in the same step (a replay is 401).
    /// Concurrent requests share the store round trip ([`dsx_store::GroupCommit`]).
    async fn enqueue(
        &self,
        mut tasks: Vec<QueuedTask>,
        intake: Option<&IntakeKey>,
        nonce: Option<&PendingNonce>,
    ) -> Result<Vec<QueuedTask>, ApiError> {
        let key = intake.and_then(|key| {
            let owner = tasks.first()?.connector_uuid;
            for (i, task) in tasks.iter_mut().enumerate() {
                task.task_id = key.task_id(owner, i);
            }
            Some(format!("{owner}:{}", key.0))
        });
        let nonce = nonce.and_then(PendingNonce::take);
        let (intake, answer) = self.intake.enqueue(OwnedIntake { tasks, key, nonce }).await;
        match answer? {
            Ok(dsx_store::Enqueued::Queued) => Ok(intake.tasks),
            Ok(dsx_store::Enqueued::Repeat) => {
                tracing::info!(tasks = intake.tasks.len(), "repeated intake key: already queued, nothing queued again");
                Ok(intake.tasks)
            }
            Err(JobRefusal::NonceReused) => {
                Err(self.replayed_intake(intake.nonce.as_ref().map_or("", |n| n.key_id.as_str())))
            }
            Err(refusal) => Err(refusal.into()),
        }
    }
}

impl From<JobRefusal> for ApiError {
    fn from(refusal: JobRefusal) -> Self {
        match refusal {
            JobRefusal::OtherOwner { .. } => ApiError::JobOwnedElsewhere,
            JobRefusal::Paused { job_id } => ApiError::JobClosed { code: "job_paused", job_id },
            JobRefusal::Cancelled { job_id } => ApiError::JobClosed { code: "job_cancelled", job_id },
            JobRefusal::NonceReused => ApiError::Hmac(dsx_hmac::AuthError::ReplayedRequest),
        }
    }
}

/// `Idempotency-Key` of a scan request or batch: the sender's name for this one submission,
/// the same on every retry of it. Optional (Python 1.x connectors send none). Scoped to the
/// connector, remembered for a day.
pub struct IntakeKey(String);

/// `Option<IntakeKey>` reads the header alone (no copy of the header map); a malformed one is
/// a 422.
impl<S: Send + Sync> OptionalFromRequestParts<S> for IntakeKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, ApiError> {
        Self::from_headers(&parts.headers)
    }
}

impl IntakeKey {
    pub const HEADER: &'static str = "idempotency-key";

    fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let mut values = headers.get_all(Self::HEADER).iter();
        let Some(value) = values.next() else { return Ok(None) };
        let invalid = |msg: &str| {
            ApiError::Validation(FieldError {
                loc: vec!["header".into(), "Idempotency-Key".into()],
                msg: msg.to_owned(),
                kind: "value_error",
            })
        };
        if values.next().is_some() {
            return Err(invalid("header `Idempotency-Key` sent more than once"));
        }
        let key = value.to_str().map_err(|_| invalid("header `Idempotency-Key`: visible ASCII only"))?;
        check_id(key, &["header", "Idempotency-Key"])?;
        Ok(Some(Self(key.to_owned())))
    }

    /// The id of item `index`: the same for every retry, distinct across keys and connectors.
    fn task_id(&self, owner: Uuid, index: usize) -> String {
        let digest = Sha256::new()
            .chain_update(owner.as_bytes())
            .chain_update(self.0.as_bytes())
            .chain_update((index as u64).to_be_bytes())
            .finalize();
        let bytes: [u8; 16] = digest[..16].try_into().expect("16 of 32 bytes");
        uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
    }
}

/// Longest id or name used in a store key (`scan_job_id`, state-KV names): uuids are 36.
pub const MAX_ID_LEN: usize = 128;

/// An id or name that becomes part of a store key: 1 to 128 visible characters, no `/`
/// (it must fit one path segment of the routes that address it). Length is what matters
/// for the store; the rest keeps ids printable in logs and URLs.
pub fn check_id(id: &str, field: &[&str]) -> Result<(), ApiError> {
    if is_valid_id(id) {
        return Ok(());
    }
    let name = field.last().copied().unwrap_or("id");
    Err(ApiError::Validation(FieldError {
        loc: field.iter().map(|s| (*s).to_owned()).collect(),
        msg: format!("field `{name}`: 1 to {MAX_ID_LEN} bytes, no control characters or `/`"),
        kind: "value_error",
    }))
}

fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(|c| c.is_control() || c == '/')
}

/// `POST scan/request` → 202.
pub async fn request(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    nonce: Option<Extension<PendingNonce>>,
    intake: Option<IntakeKey>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ScanRequest = parse_json(&body).map_err(ApiError::Validation)?;
    let task = state.attribute(&caller, request, None, &mut HashSet::new()).await?;
    let queued = state.enqueue(vec![task], intake.as_ref(), nonce.as_deref()).await?;
    let task =
        queued.into_iter().next().ok_or_else(|| dsx_store::StoreError::Corrupt("the task went missing".into()))?;
    let mut response =
        StatusResponse::success(format!("Scan task ID: {}", task.task_id), format!("job {}", task.job_id));
    response.id = Some(task.task_id.clone());
    let location = format!("{API_PREFIX}/scan/request/{}", task.task_id);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(response)).into_response())
}

/// `scan/request_batch`'s answer, Python's shape (202 even when nothing was queued).
#[derive(Serialize)]
struct BatchResponse {
    status: &'static str,
    message: String,
    description: &'static str,
    task_ids: Vec<String>,
    queued_items: usize,
    batch_size: usize,
}

impl BatchResponse {
    fn refused(message: &str, description: &'static str, batch_size: usize) -> Response {
        let body = Self {
            status: "error",
            message: message.to_owned(),
            description,
            task_ids: Vec::new(),
            queued_items: 0,
            batch_size,
        };
        (StatusCode::ACCEPTED, Json(body)).into_response()
    }
}

/// `POST scan/request_batch` → 202 with every task id, enqueued in one durable step.
/// `batch_size` is reported as Python does (clamped to the configured maximum); we enqueue
/// each item as its own task whatever it says.
pub async fn request_batch(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    nonce: Option<Extension<PendingNonce>>,
    intake: Option<IntakeKey>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let batch: ScanRequestBatch = parse_json(&body).map_err(ApiError::Validation)?;
    let limits = &state.settings.batch;
    let batch_size = batch.batch_size.unwrap_or(limits.default_size).clamp(1, limits.max_size);
    if !limits.enabled {
        return Ok(BatchResponse::refused(
            "Batch scan requests are disabled",
            "Set DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_ENABLED=true",
            batch_size,
        ));
    }
    if batch.requests.len() > limits.max_items {
        // Refused whole, before anything is queued: a retry cannot queue items twice.
        return Err(ApiError::Validation(FieldError {
            loc: vec!["body".into(), "requests".into()],
            msg: format!(
                "field `requests`: {} items, at most {} per call (DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_MAX_ITEMS)",
                batch.requests.len(),
                limits.max_items
            ),
            kind: "too_long",
        }));
    }
    if batch.requests.is_empty() {
        return Ok(BatchResponse::refused(
            "No requests provided",
            "requests must contain at least one scan request",
            batch_size,
        ));
    }
    let mut tasks = Vec::with_capacity(batch.requests.len());
    let mut known = HashSet::new();
    for (i, request) in batch.requests.into_iter().enumerate() {
        tasks.push(state.attribute(&caller, request, Some(i), &mut known).await?);
    }
    let tasks = state.enqueue(tasks, intake.as_ref(), nonce.as_deref()).await?;
    let task_ids: Vec<String> = tasks.into_iter().map(|t| t.task_id).collect();
    let body = BatchResponse {
        status: "success",
        message: format!("Queued {} scan requests", task_ids.len()),
        description: "Batch scan tasks queued",
        queued_items: task_ids.len(),
        task_ids,
        batch_size,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `POST scan/jobs/{job_id}/enqueue_done`, from the connector that owns the job only.
pub async fn enqueue_done(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    check_id(&job_id, &["path", "job_id"])?;
    let whole_number = |value: &Value, field: &'static str| -> Result<Option<u64>, ApiError> {
        match value.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                ApiError::Validation(FieldError {
                    loc: vec!["body".into(), field.into()],
                    msg: format!("field `{field}`: expected a whole number"),
                    kind: "int_type",
                })
            }),
        }
    };
    let (total, enumeration_errors) = if body.iter().all(u8::is_ascii_whitespace) {
        (None, None)
    } else {
        let value: Value = parse_json(&body).map_err(ApiError::Validation)?;
        (whole_number(&value, "enqueued_total")?, whole_number(&value, "enumeration_errors")?)
    };
    let job = state.store.get_job(&job_id).await?;
    if let (Caller::Connector { uuid, .. }, Some(job)) = (&caller, &job) {
        if job.connector_uuid.is_some_and(|owner| owner != *uuid) {
            return Err(ApiError::ConnectorMismatch);
        }
    }
    // An operator's full scan created the job (`proxy::full_scan`), so a scan that found
    // nothing completes here with 0 items; a connector-started job with no items has none.
    state.store.mark_enqueue_done(&job_id, total, enumeration_errors).await?;
    if let Some(errors) = enumeration_errors.filter(|e| *e > 0) {
        let owner = job.and_then(|j| j.connector_uuid).map(|u| u.to_string()).unwrap_or_default();
        tracing::warn!(job_id, connector = %owner, enumeration_errors = errors, "full scan could not read everything");
    }
    Ok(Json(json!({ "ok": true })))
}

/// `GET scan/jobs/{job_id}/raw` in Python's shape, open to connectors (docs/wire-protocol.md, "Open routes"): control
/// flags and counters as strings, never scan requests or results.
#[derive(Serialize)]
pub struct JobRaw {
    key: String,
    /// Redis TTL semantics: -2 no such job, -1 kept without expiry (ours are).
    ttl: i64,
    /// Python connectors read `data.paused` / `data.cancel` (`"1"`).
    data: BTreeMap<&'static str, String>,
    /// Our own readers' view beside Python's (absent for an unknown job).
    #[serde(flatten)]
    ours: Option<JobRawOurs>,
}

/// What our connector (`status`) and tests read at the top level, typed.
#[derive(Serialize)]
struct JobRawOurs {
    job_id: String,
    status: JobStatus,
    enqueued_count: u64,
    processed_count: u64,
    enqueue_done: bool,
    /// The connector's own `enqueued_total` claim, recorded but never deciding completion.
    expected_total: Option<u64>,
}

impl JobRaw {
    fn new(job_id: &str, job: Option<Job>) -> Self {
        let key = format!("dsxconnect:job:{job_id}");
        let Some(job) = job else { return Self { key, ttl: -2, data: BTreeMap::new(), ours: None } };
        let status = serde_json::to_value(job.status).ok().and_then(|v| v.as_str().map(str::to_owned));
        let mut data = BTreeMap::from([
            ("job_id", job.job_id.clone()),
            ("status", status.unwrap_or_default()),
            ("started_at", job.created_at.to_string()),
            ("last_update", job.updated_at.to_string()),
            ("enqueued_count", job.enqueued_count.to_string()),
            // Python's enqueued_total/expected_total are its running accepted count.
            ("enqueued_total", job.enqueued_count.to_string()),
            ("expected_total", job.enqueued_count.to_string()),
            ("processed_count", job.processed_count.to_string()),
            ("terminal_count", job.processed_count.to_string()),
            ("succeeded_count", job.succeeded_count.to_string()),
            ("failed_count", job.failed_count.to_string()),
        ]);
        if let Some(uuid) = job.connector_uuid {
            data.insert("connector_uuid", uuid.to_string());
        }
        if job.enqueue_done {
            data.insert("enqueue_done", "1".into());
        }
        match job.status {
            JobStatus::Paused => {
                data.insert("paused", "1".into());
            }
            JobStatus::Cancelled => {
                data.insert("cancel", "1".into());
                data.insert("finished_at", job.updated_at.to_string());
            }
            JobStatus::Completed => {
                data.insert("finished_at", job.updated_at.to_string());
            }
            JobStatus::Running => {}
        }
        let ours = JobRawOurs {
            job_id: job.job_id,
            status: job.status,
            enqueued_count: job.enqueued_count,
            processed_count: job.processed_count,
            enqueue_done: job.enqueue_done,
            expected_total: job.expected_total,
        };
        Self { key, ttl: -1, data, ours: Some(ours) }
    }
}

/// An unknown job is a 200 with `ttl: -2` and empty `data`, as Python answers before a job's
/// first item: a connector polls this before it has enqueued anything.
pub async fn job_raw(State(state): State<SharedState>, Path(job_id): Path<String>) -> Result<Json<JobRaw>, ApiError> {
    let job = state.store.get_job(&job_id).await?;
    Ok(Json(JobRaw::new(&job_id, job)))
}

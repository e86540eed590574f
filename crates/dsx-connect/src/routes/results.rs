//! Operator routes over results, stats, jobs and dead letters.

use axum::extract::{Path, Query, State};
use axum::Json;
use dsx_model::StoredResult;
use dsx_store::JobStatus;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::SharedState;

#[derive(Deserialize)]
pub struct ResultsQuery {
    limit: Option<usize>,
    job_id: Option<String>,
}

/// `GET scan/results?limit&job_id`, newest first.
pub async fn list(
    State(state): State<SharedState>,
    Query(q): Query<ResultsQuery>,
) -> Result<Json<Vec<StoredResult>>, ApiError> {
    let limit = q.limit.unwrap_or(100).min(10_000);
    Ok(Json(state.store.list_results(limit, q.job_id.as_deref()).await?))
}

/// `GET scan/results/job/{job_id}`.
pub async fn for_job(
    State(state): State<SharedState>,
    Path(job_id): Path<String>,
) -> Result<Json<Vec<StoredResult>>, ApiError> {
    Ok(Json(state.store.list_results(10_000, Some(&job_id)).await?))
}

/// `GET scan/results/{task_id}`: a list, as Python answers (`[]` when unknown, never 404).
pub async fn one(
    State(state): State<SharedState>,
    Path(task_id): Path<String>,
) -> Result<Json<Vec<StoredResult>>, ApiError> {
    Ok(Json(state.store.get_result(&task_id).await?.into_iter().collect()))
}

/// `GET scan/request/{task_id}` → `{task_id, state, status, result, error}`.
pub async fn task_status(
    State(state): State<SharedState>,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let result = state.store.get_result(&task_id).await?;
    let (task_state, status) = match &result {
        Some(r) => ("SUCCESS", Value::from(r.status.as_str())),
        None => ("PENDING", Value::Null),
    };
    Ok(Json(json!({ "task_id": task_id, "state": task_state, "status": status, "result": result, "error": null })))
}

/// `GET scan/stats`: counters plus averages.
pub async fn stats(State(state): State<SharedState>) -> Result<Json<Value>, ApiError> {
    let counters = state.store.stats().await?;
    let get = |k: &str| counters.get(k).copied().unwrap_or(0);
    let files = get("files_scanned");
    let avg = |total: u64| total.checked_div(files).unwrap_or(0);
    let mut body = json!({
        "files_scanned": files,
        "benign_count": get("benign_count"),
        "malicious_count": get("malicious_count"),
        "unknown_count": get("unknown_count"),
        "unsupported_count": get("unsupported_count"),
        "not_scanned_count": get("not_scanned_count"),
        "non_compliant_count": get("non_compliant_count"),
        "encrypted_count": get("encrypted_count"),
        "total_scan_time_in_microseconds": get("total_scan_time_in_microseconds"),
        "avg_scan_time_in_microseconds": avg(get("total_scan_time_in_microseconds")),
        "avg_file_size": avg(get("total_file_size")),
    });
    if let Some(obj) = body.as_object_mut() {
        obj.insert("queue_depth".into(), state.store.scan_queue_len().await?.into());
        obj.insert("dead_letters".into(), state.store.dead_letter_count().await?.into());
    }
    Ok(Json(body))
}

/// `GET scan/jobs/{job_id}`.
pub async fn job(State(state): State<SharedState>, Path(job_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let job = state.store.get_job(&job_id).await?.ok_or(ApiError::JobNotFound)?;
    // `enumeration_errors`: what the connector could not read during a full scan (0 when all).
    Ok(Json(serde_json::to_value(job).unwrap_or(Value::Null)))
}

async fn set_status(state: &SharedState, job_id: &str, status: JobStatus) -> Result<Json<Value>, ApiError> {
    state.store.set_job_status(job_id, status).await?.ok_or(ApiError::JobNotFound)?;
    tracing::info!(target: "audit", job_id, ?status, "job status changed");
    Ok(Json(json!({ "ok": true })))
}

pub async fn pause(State(state): State<SharedState>, Path(job_id): Path<String>) -> Result<Json<Value>, ApiError> {
    set_status(&state, &job_id, JobStatus::Paused).await
}

pub async fn resume(State(state): State<SharedState>, Path(job_id): Path<String>) -> Result<Json<Value>, ApiError> {
    set_status(&state, &job_id, JobStatus::Running).await
}

pub async fn cancel(State(state): State<SharedState>, Path(job_id): Path<String>) -> Result<Json<Value>, ApiError> {
    set_status(&state, &job_id, JobStatus::Cancelled).await
}

/// The only queue type whose dead letters exist in this server.
fn check_queue(queue: &str) -> Result<(), ApiError> {
    match queue {
        "scan_request" => Ok(()),
        "verdict_action" | "scan_result" => Ok(()),
        _ => Err(ApiError::BadRequest("unknown_queue_type")),
    }
}

pub async fn dlq_stats(State(state): State<SharedState>) -> Result<Json<Value>, ApiError> {
    let n = state.store.dead_letter_count().await?;
    Ok(Json(json!({ "scan_request": n, "verdict_action": 0, "scan_result": 0, "total": n })))
}

pub async fn dlq_stats_one(
    State(state): State<SharedState>,
    Path(queue): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_queue(&queue)?;
    let n = if queue == "scan_request" { state.store.dead_letter_count().await? } else { 0 };
    Ok(Json(json!({ "queue_type": queue, "count": n })))
}

#[derive(Deserialize)]
pub struct RangeQuery {
    start: Option<usize>,
    end: Option<usize>,
}

pub async fn dlq_items(
    State(state): State<SharedState>,
    Path(queue): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Result<Json<Value>, ApiError> {
    check_queue(&queue)?;
    let start = q.start.unwrap_or(0);
    let end = q.end.unwrap_or(start + 100).min(start + 10_000);
    let items = if queue == "scan_request" { state.store.dead_letters(start, end).await? } else { Vec::new() };
    Ok(Json(json!({ "queue_type": queue, "items": items })))
}

#[derive(Deserialize)]
pub struct RequeueQuery {
    max_items: Option<usize>,
}

pub async fn dlq_requeue(
    State(state): State<SharedState>,
    Query(q): Query<RequeueQuery>,
) -> Result<Json<Value>, ApiError> {
    let n = state.store.requeue_dead_letters(q.max_items.unwrap_or(usize::MAX)).await?;
    tracing::info!(target: "audit", requeued = n, "dead letters requeued");
    Ok(Json(json!({ "status": "success", "requeued": n })))
}

pub async fn dlq_requeue_one(
    State(state): State<SharedState>,
    Path(queue): Path<String>,
    q: Query<RequeueQuery>,
) -> Result<Json<Value>, ApiError> {
    check_queue(&queue)?;
    dlq_requeue(State(state), q).await
}

pub async fn dlq_clear(State(state): State<SharedState>) -> Result<Json<Value>, ApiError> {
    let n = state.store.clear_dead_letters().await?;
    tracing::info!(target: "audit", cleared = n, "dead letters cleared");
    Ok(Json(json!({ "status": "success", "cleared": n })))
}

pub async fn dlq_clear_one(
    State(state): State<SharedState>,
    Path(queue): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_queue(&queue)?;
    dlq_clear(State(state)).await
}

pub async fn dlq_health(State(state): State<SharedState>) -> Result<Json<Value>, ApiError> {
    let n = state.store.dead_letter_count().await?;
    Ok(Json(json!({ "status": if n == 0 { "healthy" } else { "attention" }, "dead_letters": n })))
}

/// `GET scan/jobs`: every job, most recently updated first.
pub async fn jobs(State(state): State<SharedState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(serde_json::to_value(state.store.list_jobs().await?).unwrap_or(Value::Null)))
}

/// `DELETE scan/jobs`: forget job records (queued tasks still run).
pub async fn delete_jobs(State(state): State<SharedState>) -> Result<Json<Value>, ApiError> {
    let n = state.store.delete_jobs().await?;
    tracing::info!(target: "audit", deleted = n, "job records deleted");
    Ok(Json(json!({ "status": "success", "deleted": n })))
}

#[derive(Deserialize)]
pub struct DeleteResultsQuery {
    job_id: Option<String>,
}

/// `DELETE scan/results[?job_id=X]`: that job's results only (stats stay), or every result
/// and the stats. (Python's Redis store drops everything even with `job_id`.)
pub async fn delete_results(
    State(state): State<SharedState>,
    Query(q): Query<DeleteResultsQuery>,
) -> Result<Json<Value>, ApiError> {
    match q.job_id.filter(|j| !j.is_empty()) {
        Some(job_id) => {
            let n = state.store.clear_job_results(&job_id).await?;
            tracing::info!(target: "audit", cleared = n, job_id, "job results cleared");
            Ok(Json(json!({ "status": "success", "job_id": job_id, "cleared": n })))
        }
        None => {
            let n = state.store.clear_results().await?;
            tracing::info!(target: "audit", cleared = n, "results cleared");
            Ok(Json(json!({ "status": "success", "job_id": "all", "cleared": n })))
        }
    }
}

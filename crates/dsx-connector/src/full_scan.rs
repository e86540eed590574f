//! Full scan: enumerate in the background and enqueue scan requests to dsx-connect, one by
//! one with bounded concurrency or in batches when the server takes them; honour `limit`,
//! pause and cancel (in this server's shapes and in Python 1.x's); end with `enqueue_done`
//! carrying the true total.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dsx_model::{ScanRequest, ScanRequestBatch};
use dsx_util::{Backoff, Jitter};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::dsx_client::{BatchCapabilities, ClientError};
use crate::repository::Item;
use crate::ConnectorContext;

/// How often (in items) the job's pause/cancel flags are checked between batches.
const CONTROL_CHECK_EVERY: u64 = 100;
/// How long one enqueue keeps trying while dsx-connect is unreachable or answers 5xx/429 (its
/// store restarting, a full disk, a rolling update): long enough that an outage of minutes
/// loses no item of a full scan. The same `Idempotency-Key` rides on every try.
const ENQUEUE_RETRY_FOR: Duration = Duration::from_secs(600);
/// Longest wait between two tries.
const ENQUEUE_RETRY_CAP: Duration = Duration::from_secs(10);
/// How often a paused job is looked at again.
const PAUSE_POLL: Duration = Duration::from_millis(500);
/// Batch size when neither the full-scan request nor the server names one.
const DEFAULT_BATCH_SIZE: usize = 100;
/// A 409 while the job reads as running (the pause ended in between, or the server refuses
/// for a reason the job does not show) is retried this often before the item counts as refused.
const CONFLICT_RETRIES: u32 = 5;

#[derive(Debug, Clone)]
pub struct FullScanParams {
    pub job_id: String,
    pub limit: Option<u64>,
    /// The `batch` query parameter; `None` follows what the server advertises.
    pub batch: Option<bool>,
    pub batch_size: Option<usize>,
}

/// The batch size to enqueue with, or `None` for single `scan/request`s.
///
/// A server that says batching is off is never sent batches, even when asked for (a Python
/// 1.x server would answer `202` with `status:"error"` and queue nothing). Without a `batch`
/// parameter, batches are used exactly when the server advertises them.
pub fn choose_batch(params: &FullScanParams, caps: Option<BatchCapabilities>) -> Option<usize> {
    let wanted = match (params.batch, caps) {
        (Some(false), _) => false,
        (_, Some(caps)) if !caps.enabled => false,
        (Some(true), _) => true,
        (None, caps) => caps.is_some_and(|c| c.enabled),
    };
    if !wanted {
        return None;
    }
    let size = params.batch_size.or(caps.and_then(|c| c.default_size)).unwrap_or(DEFAULT_BATCH_SIZE);
    let max = caps.and_then(|c| c.max_size).filter(|m| *m > 0).unwrap_or(usize::MAX);
    Some(size.clamp(1, max))
}

/// `GET scan/jobs/{id}/raw`, in every shape a server sends: Python's
/// `{"key","ttl","data":{…}}` whose `data.paused`/`data.cancel` are `"1"`, this server's flat
/// `{"status": …}`, or both at once.
#[derive(Debug, Default, Deserialize)]
pub struct JobRaw {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    data: Option<JobRawData>,
}

#[derive(Debug, Default, Deserialize)]
struct JobRawData {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    paused: Option<Value>,
    #[serde(default)]
    cancel: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Paused,
    Cancelled,
}

/// A Python job-hash flag: every value is a string, set ones are `"1"`.
fn flag(value: &Option<Value>) -> bool {
    match value {
        Some(Value::String(s)) => s == "1" || s.eq_ignore_ascii_case("true"),
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_u64() == Some(1),
        _ => false,
    }
}

impl JobRaw {
    pub fn state(&self) -> JobState {
        let data = self.data.as_ref();
        let cancelled = data.is_some_and(|d| flag(&d.cancel))
            || self.status.as_deref() == Some("cancelled")
            || data.and_then(|d| d.status.as_deref()) == Some("cancelled");
        // Python resumes by deleting `paused`; its `data.status` is not what its peers go by.
        let paused = data.is_some_and(|d| flag(&d.paused)) || self.status.as_deref() == Some("paused");
        if cancelled {
            JobState::Cancelled
        } else if paused {
            JobState::Paused
        } else {
            JobState::Running
        }
    }
}

/// The parts of a `scan/request` or `scan/request_batch` answer that say whether anything
/// was queued: Python answers a refused batch with `202` and `status:"error"`.
#[derive(Debug, Default, Deserialize)]
struct EnqueueAnswer {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    queued_items: Option<u64>,
}

impl EnqueueAnswer {
    fn read(json: &Value) -> Self {
        serde_json::from_value(json.clone()).unwrap_or_default()
    }

    fn is_error(&self) -> bool {
        self.status.as_deref() == Some("error")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Stop,
}

/// Wait before try `attempt` (1, 2, …) of an enqueue: 250 ms doubling to
/// [`ENQUEUE_RETRY_CAP`], ±10 % jitter so connectors that lost the server together do not
/// come back in step.
fn retry_delay(attempt: u32) -> Duration {
    const SCHEDULE: Backoff = Backoff::new(Duration::from_millis(250), ENQUEUE_RETRY_CAP, Jitter::Spread(0.1));
    SCHEDULE.delay(attempt)
}

/// What became of one batch.
enum BatchOutcome {
    Queued(u64),
    /// The server would not take it as a batch: send these one by one.
    Refused(Vec<ScanRequest>),
    Stopped,
    /// Not queued (dsx-connect stayed away): this many items.
    Failed(u64),
}

impl ConnectorContext {
    pub fn scan_request(&self, item: &Item, job_id: &str) -> ScanRequest {
        let mut req = ScanRequest::new(item.location.clone(), item.metainfo.clone());
        req.size_in_bytes = item.size;
        req.item_version = item.version.clone();
        req.scan_job_id = Some(job_id.to_owned());
        req.connector = Some(self.dsx.model());
        req.connector_url = Some(self.settings.base_url());
        req
    }

    /// POST one JSON body, retrying transient failures, and return the answer. A 409 (job
    /// paused or cancelled; Python's carries no `detail`) is settled by the job's raw state:
    /// paused → wait, then send the same body again; cancelled → `Ok(None)`.
    async fn enqueue_with_retry(&self, path: &str, body: &Value, job_id: &str) -> Result<Option<Value>, ClientError> {
        let mut attempt = 0u32;
        let started = std::time::Instant::now();
        let mut conflicts = 0;
        // One key for every try of this body: a retry after a lost answer queues nothing twice.
        let intake_key = uuid::Uuid::new_v4().to_string();
        loop {
            match self.dsx.post_json_once(path, body, Some(&intake_key)).await {
                Ok((_, json)) => return Ok(Some(json)),
                Err(ClientError::Refused { status: 409, detail }) => {
                    if detail == "job_cancelled" {
                        return Ok(None);
                    }
                    match self.job_control(job_id).await {
                        (Control::Stop, _) => return Ok(None),
                        (Control::Run, true) => conflicts = 0,
                        (Control::Run, false) => {
                            conflicts += 1;
                            if conflicts > CONFLICT_RETRIES {
                                return Err(ClientError::Refused { status: 409, detail });
                            }
                            tokio::time::sleep(Duration::from_millis(100 * u64::from(conflicts))).await;
                        }
                    }
                }
                Err(err @ (ClientError::Unreachable(_) | ClientError::Refused { status: 429 | 500..=599, .. }))
                    if started.elapsed() < ENQUEUE_RETRY_FOR =>
                {
                    attempt += 1;
                    let wait = retry_delay(attempt);
                    tracing::warn!(error = %err, attempt, retry_in_ms = wait.as_millis() as u64, "enqueue failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The job's state from `GET scan/jobs/{id}/raw`. An error or an unknown shape reads as
    /// running, as Python connectors read it (a server without job control).
    pub async fn job_state(&self, job_id: &str) -> JobState {
        match self.dsx.call(Method::GET, &format!("scan/jobs/{job_id}/raw"), Vec::new()).await {
            Ok((_, json)) => serde_json::from_value::<JobRaw>(json).map(|r| r.state()).unwrap_or(JobState::Running),
            Err(_) => JobState::Running,
        }
    }

    /// Waits while the job is paused (Python connectors skip the item instead, losing it).
    /// Returns whether to go on, and whether it had to wait.
    async fn job_control(&self, job_id: &str) -> (Control, bool) {
        let mut waited = false;
        loop {
            match self.job_state(job_id).await {
                JobState::Cancelled => return (Control::Stop, waited),
                JobState::Running => {
                    if waited {
                        tracing::info!(job_id, "job resumed");
                    }
                    return (Control::Run, waited);
                }
                JobState::Paused => {
                    if !waited {
                        tracing::info!(job_id, "job paused; waiting");
                    }
                    waited = true;
                    tokio::time::sleep(PAUSE_POLL).await;
                }
            }
        }
    }

    pub async fn run_full_scan(self: Arc<Self>, params: FullScanParams) -> u64 {
        let caps = if params.batch == Some(false) { None } else { self.dsx.batch_capabilities().await };
        let mut batch_size = choose_batch(&params, caps);
        let job_id = params.job_id.clone();
        let filter = self.runtime.read().expect("runtime lock").filter.clone();
        let mut enqueuer = Enqueuer {
            ctx: Arc::clone(&self),
            job_id: job_id.clone(),
            limiter: Arc::new(Semaphore::new(self.settings.full_scan_enqueue_concurrency)),
            tasks: JoinSet::new(),
            enqueued: Arc::new(AtomicU64::new(0)),
            not_queued: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            batches_confirmed: false,
            batches_refused: Arc::new(AtomicBool::new(false)),
        };
        let mut pending: Vec<ScanRequest> = Vec::new();
        let mut seen = 0u64;
        // Folders or files the repository could not read: reported with `enqueue_done`, so
        // the job shows them instead of looking like a clean scan of fewer items.
        let mut enumeration_errors = 0u64;
        tracing::info!(job_id, batch_size, limit = ?params.limit, "full scan started");

        // Paused before it began: wait; cancelled: enumerate nothing.
        let mut items = match self.job_control(&job_id).await.0 {
            Control::Run => Some(self.repo.enumerate(filter)),
            Control::Stop => None,
        };
        while let Some(rx) = items.as_mut() {
            if enqueuer.stop.load(Ordering::Relaxed) || params.limit.is_some_and(|l| seen >= l) {
                break;
            }
            let Some(next) = rx.recv().await else { break };
            let item = match next {
                Ok(item) => item,
                Err(err) => {
                    enumeration_errors += 1;
                    tracing::warn!(job_id, error = %err, "enumeration error; skipping");
                    continue;
                }
            };
            seen += 1;
            if seen.is_multiple_of(CONTROL_CHECK_EVERY) && self.job_control(&job_id).await.0 == Control::Stop {
                tracing::info!(job_id, "job cancelled; stopping enumeration");
                break;
            }
            let request = self.scan_request(&item, &job_id);
            match batch_size {
                Some(size) => {
                    pending.push(request);
                    if pending.len() >= size && !enqueuer.batch(std::mem::take(&mut pending), size).await {
                        batch_size = None;
                    }
                }
                None => enqueuer.single(request).await,
            }
        }
        if let (false, Some(size)) = (pending.is_empty(), batch_size) {
            if !enqueuer.stop.load(Ordering::Relaxed) {
                enqueuer.batch(pending, size).await;
            }
        }
        let (total, not_queued) = enqueuer.finish().await;
        let enumeration_errors = enumeration_errors + not_queued;

        // `enumeration_errors` is this server's; Python 1.x servers ignore it.
        let done = json!({ "enqueued_total": total, "enumeration_errors": enumeration_errors });
        let path = format!("scan/jobs/{job_id}/enqueue_done");
        if let Err(err) = self.enqueue_with_retry(&path, &done, &job_id).await {
            tracing::error!(job_id, error = %err, "enqueue_done failed");
        }
        tracing::info!(job_id, enqueued = total, enumeration_errors, "full scan enumeration finished");
        total
    }

    async fn send_batch(&self, requests: Vec<ScanRequest>, batch_size: usize, job_id: &str) -> BatchOutcome {
        let count = requests.len() as u64;
        let batch = ScanRequestBatch { requests, batch_size: Some(batch_size) };
        let body = serde_json::to_value(&batch).expect("batch serialises");
        match self.enqueue_with_retry("scan/request_batch", &body, job_id).await {
            Ok(Some(json)) => {
                let answer = EnqueueAnswer::read(&json);
                match answer.queued_items {
                    _ if answer.is_error() => {
                        tracing::warn!(%json, "dsx-connect did not take the batch; sending the items one by one");
                        BatchOutcome::Refused(batch.requests)
                    }
                    Some(0) => BatchOutcome::Refused(batch.requests),
                    Some(queued) if queued < count => {
                        // Which ones is not said; resending could scan some twice.
                        tracing::error!(queued, items = count, "dsx-connect queued only part of a batch");
                        BatchOutcome::Queued(queued)
                    }
                    _ => BatchOutcome::Queued(count),
                }
            }
            Ok(None) => BatchOutcome::Stopped,
            // No batch intake at all (an older server): singles still work.
            Err(ClientError::Refused { status: 400..=499, detail }) => {
                tracing::warn!(%detail, "scan/request_batch refused; sending the items one by one");
                BatchOutcome::Refused(batch.requests)
            }
            Err(err) => {
                tracing::error!(error = %err, items = count, "could not enqueue batch");
                BatchOutcome::Failed(count)
            }
        }
    }

    /// One item as its own job (monitor mode, webhook events): `scan/request`, then
    /// `enqueue_done` with a total of one. Returns the job id.
    pub async fn enqueue_item(&self, item: &Item) -> Result<String, String> {
        let job_id = uuid::Uuid::new_v4().to_string();
        let body = serde_json::to_value(self.scan_request(item, &job_id)).expect("scan request serialises");
        match self.enqueue_with_retry("scan/request", &body, &job_id).await {
            Ok(Some(json)) if !EnqueueAnswer::read(&json).is_error() => {
                self.count_enqueued(1);
                let done = json!({ "enqueued_total": 1 });
                let path = format!("scan/jobs/{job_id}/enqueue_done");
                if let Err(err) = self.enqueue_with_retry(&path, &done, &job_id).await {
                    tracing::warn!(error = %err, "enqueue_done for a single item failed");
                }
                Ok(job_id)
            }
            Ok(Some(json)) => Err(format!("dsx-connect refused the scan request: {json}")),
            Ok(None) => Err("the job was cancelled".into()),
            Err(err) => Err(err.to_string()),
        }
    }

    /// Monitor mode: each new or changed item is a single-item job.
    pub async fn enqueue_single(self: Arc<Self>, item: Item) {
        match self.enqueue_item(&item).await {
            Ok(job_id) => tracing::info!(location = %item.location, job_id, "monitored change enqueued"),
            Err(err) => tracing::error!(location = %item.location, error = %err, "could not enqueue monitored change"),
        }
    }
}

/// The enqueueing half of one full scan: single requests in flight, batches, the count.
struct Enqueuer {
    ctx: Arc<ConnectorContext>,
    job_id: String,
    limiter: Arc<Semaphore>,
    tasks: JoinSet<()>,
    enqueued: Arc<AtomicU64>,
    /// Items dsx-connect never took (it stayed away past the retry window); reported to the
    /// job with the enumeration errors so the operator sees them.
    not_queued: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// The server took a batch: the next ones go out concurrently.
    batches_confirmed: bool,
    /// A concurrent batch was refused as a batch (its items went out one by one): the rest
    /// of the scan sends singles.
    batches_refused: Arc<AtomicBool>,
}

/// One `scan/request`, counted into what was enqueued or never taken.
async fn send_single(
    ctx: &ConnectorContext,
    request: ScanRequest,
    job_id: &str,
    enqueued: &AtomicU64,
    not_queued: &AtomicU64,
    stop: &AtomicBool,
) {
    let body = serde_json::to_value(&request).expect("scan request serialises");
    match ctx.enqueue_with_retry("scan/request", &body, job_id).await {
        Ok(Some(json)) if !EnqueueAnswer::read(&json).is_error() => {
            enqueued.fetch_add(1, Ordering::Relaxed);
            ctx.count_enqueued(1);
        }
        Ok(Some(json)) => tracing::error!(location = %request.location, %json, "scan request refused"),
        Ok(None) => stop.store(true, Ordering::Relaxed),
        Err(err) => {
            not_queued.fetch_add(1, Ordering::Relaxed);
            tracing::error!(location = %request.location, error = %err, "could not enqueue");
        }
    }
}

/// Batches in flight at once once the server has taken one. Each waits for a durable commit
/// on the server; several in flight share one (group commit) instead of queueing behind it.
const BATCHES_IN_FLIGHT: usize = 4;

impl Enqueuer {
    /// Send one `scan/request` in the background (bounded concurrency).
    async fn single(&mut self, request: ScanRequest) {
        let permit = Arc::clone(&self.limiter).acquire_owned().await.expect("semaphore open");
        let (ctx, enqueued, stop, job_id) =
            (Arc::clone(&self.ctx), Arc::clone(&self.enqueued), Arc::clone(&self.stop), self.job_id.clone());
        let not_queued = Arc::clone(&self.not_queued);
        self.tasks.spawn(async move {
            send_single(&ctx, request, &job_id, &enqueued, &not_queued, &stop).await;
            drop(permit);
        });
        while self.tasks.try_join_next().is_some() {}
    }

    /// Send one batch; `false` when the server would not take batches (its items then went
    /// out one by one, and the caller should stop batching).
    async fn batch(&mut self, requests: Vec<ScanRequest>, size: usize) -> bool {
        if self.batches_refused.load(Ordering::Relaxed) {
            for request in requests {
                self.single(request).await;
            }
            return false;
        }
        if !self.batches_confirmed {
            // The first batch is sent alone: its answer says whether batching works at all.
            return match self.ctx.send_batch(requests, size, &self.job_id).await {
                BatchOutcome::Queued(n) => {
                    self.batches_confirmed = true;
                    self.enqueued.fetch_add(n, Ordering::Relaxed);
                    self.ctx.count_enqueued(n);
                    true
                }
                BatchOutcome::Refused(requests) => {
                    for request in requests {
                        self.single(request).await;
                    }
                    false
                }
                BatchOutcome::Stopped => {
                    self.stop.store(true, Ordering::Relaxed);
                    true
                }
                BatchOutcome::Failed(n) => {
                    self.not_queued.fetch_add(n, Ordering::Relaxed);
                    true
                }
            };
        }
        // Shares the singles' limiter: at most BATCHES_IN_FLIGHT of its permits at a time.
        let permits = Arc::clone(&self.limiter)
            .acquire_many_owned(
                self.ctx.settings.full_scan_enqueue_concurrency.div_ceil(BATCHES_IN_FLIGHT).max(1) as u32
            )
            .await
            .expect("semaphore open");
        let (ctx, enqueued, stop, not_queued, refused, job_id) = (
            Arc::clone(&self.ctx),
            Arc::clone(&self.enqueued),
            Arc::clone(&self.stop),
            Arc::clone(&self.not_queued),
            Arc::clone(&self.batches_refused),
            self.job_id.clone(),
        );
        self.tasks.spawn(async move {
            match ctx.send_batch(requests, size, &job_id).await {
                BatchOutcome::Queued(n) => {
                    enqueued.fetch_add(n, Ordering::Relaxed);
                    ctx.count_enqueued(n);
                }
                BatchOutcome::Refused(requests) => {
                    refused.store(true, Ordering::Relaxed);
                    for request in requests {
                        send_single(&ctx, request, &job_id, &enqueued, &not_queued, &stop).await;
                    }
                }
                BatchOutcome::Stopped => stop.store(true, Ordering::Relaxed),
                BatchOutcome::Failed(n) => {
                    not_queued.fetch_add(n, Ordering::Relaxed);
                }
            }
            drop(permits);
        });
        while self.tasks.try_join_next().is_some() {}
        !self.batches_refused.load(Ordering::Relaxed)
    }

    /// Wait for the requests in flight; the numbers dsx-connect accepted and never took.
    async fn finish(mut self) -> (u64, u64) {
        while self.tasks.join_next().await.is_some() {}
        (self.enqueued.load(Ordering::Relaxed), self.not_queued.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: Value) -> JobState {
        serde_json::from_value::<JobRaw>(json).unwrap().state()
    }

    #[test]
    fn job_state_in_every_shape() {
        // Python 1.x (fixtures 28, 80, 83, 88).
        assert_eq!(raw(json!({"key": "dsxconnect:job:j", "ttl": -2, "data": {}})), JobState::Running);
        assert_eq!(raw(json!({"key": "k", "ttl": 1, "data": {"status": "running"}})), JobState::Running);
        assert_eq!(raw(json!({"key": "k", "ttl": 1, "data": {"status": "paused", "paused": "1"}})), JobState::Paused);
        assert_eq!(
            raw(json!({"key": "k", "ttl": 1, "data": {"status": "cancelled", "cancel": "1", "paused": "1"}})),
            JobState::Cancelled
        );
        // Resumed: Python deletes `paused`.
        assert_eq!(raw(json!({"data": {"status": "paused"}})), JobState::Running);
        // This server, flat and combined.
        assert_eq!(raw(json!({"status": "paused", "enqueue_done": false})), JobState::Paused);
        assert_eq!(raw(json!({"status": "cancelled"})), JobState::Cancelled);
        assert_eq!(raw(json!({"status": "running"})), JobState::Running);
        assert_eq!(raw(json!({"status": "paused", "key": "k", "data": {"paused": "1"}})), JobState::Paused);
        assert_eq!(raw(json!({"status": "running", "data": {"paused": "0"}})), JobState::Running);
    }

    fn params(batch: Option<bool>, batch_size: Option<usize>) -> FullScanParams {
        FullScanParams { job_id: "j".into(), limit: None, batch, batch_size }
    }

    #[test]
    fn batch_follows_the_server() {
        let off = BatchCapabilities { enabled: false, default_size: Some(10), max_size: Some(100) };
        let on = BatchCapabilities { enabled: true, ..off };
        assert_eq!(choose_batch(&params(None, None), Some(off)), None);
        assert_eq!(choose_batch(&params(Some(true), Some(5)), Some(off)), None, "asked for, but the server is off");
        assert_eq!(choose_batch(&params(None, None), Some(on)), Some(10), "the server's default size");
        assert_eq!(choose_batch(&params(Some(true), Some(500)), Some(on)), Some(100), "clamped to the server's max");
        assert_eq!(choose_batch(&params(Some(false), None), Some(on)), None);
        assert_eq!(choose_batch(&params(None, None), None), None, "unknown server: singles");
        assert_eq!(choose_batch(&params(Some(true), None), None), Some(DEFAULT_BATCH_SIZE));
        assert_eq!(choose_batch(&params(Some(true), Some(0)), Some(on)), Some(1));
    }
}

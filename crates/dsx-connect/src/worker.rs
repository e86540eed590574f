//! Scan workers: claim tasks from the durable queue, fetch the bytes from the connector
//! (signed, registry URL and key), stream them to the scanner, remediate malicious items,
//! store the result. At-least-once delivery, made safe by task-id idempotency: a result is
//! stored once per task, and a repeated remediation finds nothing left to act on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dsx_hmac::unix_now;
use dsx_model::ScanRequest;
use dsx_scanner::{ScanError, ScanInput, Scanner, Verdict, VerdictKind};
use dsx_store::{Delivery, JobStatus, ResultRecord};
use futures_util::TryStreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use crate::connector_client::OutboundError;
use crate::state::SharedState;

/// Worker settings (`DSXCONNECT_WORKERS__*`, `DSXCONNECT_SCANNER__*`).
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Global in-flight cap (`DSXCONNECT_SCANNER__MAX_INFLIGHT`).
    pub max_inflight: usize,
    /// Heartbeat lease of a task and of its in-flight slot: the holder renews both every
    /// third of it while the task runs, so a dead holder's work and capacity come back within
    /// one lease.
    pub lease: Duration,
    /// On SIGTERM: how long tasks in flight may still finish before they are given back.
    pub drain: Duration,
    /// Consecutive scanner outages (connection, 5xx, warming up) that open the breaker (0: never).
    pub breaker_threshold: u32,
    pub max_retries: u32,
    pub retry_base: Duration,
    pub max_file_size: u64,
    pub results_retain: usize,
}

/// Why a task failed, and whether trying again may help.
#[derive(Debug)]
struct Failure {
    class: &'static str,
    detail: String,
    retryable: bool,
    /// Give the task back after this delay without spending an attempt (its job is paused,
    /// or the scanner is down and the breaker is open).
    defer: Option<Duration>,
    /// The result to keep if this failure is final: a scanned item whose remediation failed
    /// keeps its verdict (and the connector's answer) instead of becoming "not scanned".
    result: Option<ResultRecord>,
}

impl Failure {
    fn new(class: &'static str, detail: impl Into<String>, retryable: bool) -> Self {
        Self { class, detail: detail.into(), retryable, defer: None, result: None }
    }
    fn deferred(class: &'static str, detail: impl Into<String>, delay: Duration) -> Self {
        Self { defer: Some(delay), ..Self::new(class, detail, true) }
    }
    fn reason(&self) -> String {
        format!("{}: {}", self.class, self.detail)
    }
}

impl From<ScanError> for Failure {
    fn from(err: ScanError) -> Self {
        Failure::new(err.class(), err.to_string(), err.is_retryable())
    }
}

/// Backoff before attempt `n + 1`: `min(base · 2^(n-1), 300 s)`.
pub fn retry_delay(base: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    (base * factor).min(Duration::from_secs(300))
}

/// Scanner failures that mean "the scanner is not there" rather than "this file failed".
fn is_outage(class: &str) -> bool {
    matches!(class, "scanner_unreachable" | "scanner_server" | "scanner_initializing")
}

/// Circuit breaker on the scanner, one per process: after `threshold` consecutive outages the
/// workers stop claiming and probe the scanner with backoff until it answers again. While it is
/// open, `readyz` answers 503 `scanner_unavailable`.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    consecutive: AtomicU32,
    open: AtomicBool,
}

impl Breaker {
    pub fn new(threshold: u32) -> Self {
        Self { threshold, consecutive: AtomicU32::new(0), open: AtomicBool::new(false) }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    fn success(&self) {
        self.consecutive.store(0, Ordering::SeqCst);
    }

    /// One more scanner outage. True when the breaker is open (now or already).
    fn outage(&self) -> bool {
        let n = self.consecutive.fetch_add(1, Ordering::SeqCst) + 1;
        if self.threshold > 0 && n >= self.threshold && !self.open.swap(true, Ordering::SeqCst) {
            tracing::error!(failures = n, "scanner unavailable: breaker open, workers stop claiming and probe it");
        }
        self.is_open()
    }

    fn close(&self) {
        self.consecutive.store(0, Ordering::SeqCst);
        if self.open.swap(false, Ordering::SeqCst) {
            tracing::info!("scanner answers again: breaker closed, scanning resumes");
        }
    }
}

/// A task this worker holds: renewed by the heartbeat, given back on shutdown.
struct Held {
    delivery: Delivery,
    slot: String,
    abort: tokio::task::AbortHandle,
    /// Set once the task is being settled (ack, retry, defer, dead letter): from then on a lost
    /// lease must not abort it.
    settled: Arc<AtomicBool>,
}

type HeldTasks = Arc<Mutex<HashMap<u64, Held>>>;

/// Paused jobs' tasks are looked at again after this, without spending an attempt.
const PAUSED_RECHECK: Duration = Duration::from_secs(2);
/// Tasks whose scan failed while the breaker is open come back after this (the breaker keeps
/// workers from claiming them until the scanner answers).
const OUTAGE_DEFER: Duration = Duration::from_secs(1);
/// Breaker probes: first after this, doubling up to `PROBE_MAX`.
const PROBE_MIN: Duration = Duration::from_millis(500);
const PROBE_MAX: Duration = Duration::from_secs(10);

/// Sleep for `d` unless asked to stop first. True when stopping.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if stopping(stop) {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.changed() => true,
    }
}

fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Run workers until `stop` turns true, then drain: claim nothing more, let the tasks in flight
/// finish for up to `settings.drain`, give back what is left (slots released, tasks back on the
/// queue without spending an attempt) and return. Every task first takes one of `max_inflight`
/// slots shared by all worker replicas through the store, so the scanner never sees more than
/// that many scans at once, however many replicas run. Slots and task leases are held by a
/// heartbeat: a worker that dies stops renewing them and they come back within one lease.
pub async fn run(
    state: SharedState,
    scanner: Arc<dyn Scanner>,
    settings: WorkerSettings,
    consumer: String,
    mut stop: watch::Receiver<bool>,
) {
    let limiter = Arc::new(Semaphore::new(settings.max_inflight.max(1)));
    let settings = Arc::new(settings);
    let held: HeldTasks = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let heartbeat = tokio::spawn(heartbeat(Arc::clone(&state), Arc::clone(&held), consumer.clone(), settings.lease));
    let mut next_id = 0u64;
    let mut idle = IDLE_MIN;
    tracing::info!(consumer, scanner = scanner.kind(), inflight = settings.max_inflight, lease = ?settings.lease, "scan workers started");
    loop {
        while tasks.try_join_next().is_some() {}
        if stopping(&stop) {
            break;
        }
        if state.breaker.is_open() {
            probe_until_closed(&state, &*scanner, &mut stop).await;
            continue;
        }
        // Take as many free in-flight places as there are (at least one, waiting for it), then
        // claim that many tasks in one store round trip.
        let first = tokio::select! {
            permit = Arc::clone(&limiter).acquire_owned() => permit.expect("semaphore open"),
            _ = stop.changed() => continue,
        };
        let mut permits = vec![first];
        while permits.len() < CLAIM_AT_MOST {
            match Arc::clone(&limiter).try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let mut slots = Vec::with_capacity(permits.len());
        let mut store_down = false;
        for _ in 0..permits.len() {
            let slot = format!("{consumer}:{}", uuid::Uuid::new_v4());
            match state.store.acquire_slot(&slot, settings.max_inflight, settings.lease).await {
                Ok(true) => slots.push(slot),
                Ok(false) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot take a scan slot; retrying");
                    store_down = true;
                    break;
                }
            }
        }
        if slots.is_empty() {
            drop(permits);
            // All slots busy: look again soon. Store unreachable: don't spin on it.
            pause(&mut stop, if store_down { Duration::from_secs(1) } else { IDLE_MIN }).await;
            continue;
        }
        permits.truncate(slots.len());
        let deliveries = match state.store.claim_scans(&consumer, slots.len(), settings.lease).await {
            Ok(d) => d,
            Err(err) => {
                tracing::warn!(error = %err, "cannot claim scan tasks; retrying");
                Vec::new()
            }
        };
        // Give back what the queue had no task for.
        for slot in slots.drain(deliveries.len()..) {
            let _ = state.store.release_slot(&slot).await;
        }
        permits.truncate(deliveries.len());
        if deliveries.is_empty() {
            pause(&mut stop, idle).await;
            idle = (idle * 2).min(IDLE_MAX);
            continue;
        }
        idle = IDLE_MIN;
        let mut holding = held.lock().expect("held lock");
        for ((delivery, slot), permit) in deliveries.into_iter().zip(slots).zip(permits) {
            let id = next_id;
            next_id += 1;
            let settled = Arc::new(AtomicBool::new(false));
            let (state, scanner, settings, held, settled_flag, task) = (
                Arc::clone(&state),
                Arc::clone(&scanner),
                Arc::clone(&settings),
                Arc::clone(&held),
                Arc::clone(&settled),
                delivery.clone(),
            );
            let abort = tasks.spawn(async move {
                process(&state, &*scanner, &settings, task, &settled_flag).await;
                let mine = held.lock().expect("held lock").remove(&id);
                if let Some(h) = mine {
                    if let Err(err) = state.store.release_slot(&h.slot).await {
                        tracing::warn!(error = %err, "could not release a scan slot; it expires with its lease");
                    }
                }
                drop(permit);
            });
            holding.insert(id, Held { delivery, slot, abort, settled });
        }
    }

    // Draining: nothing new is claimed; the heartbeat keeps renewing what is still running.
    let in_flight = held.lock().expect("held lock").len();
    tracing::info!(in_flight, drain = ?settings.drain, "stopping: finishing the tasks in flight");
    let deadline = tokio::time::Instant::now() + settings.drain;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    heartbeat.abort();
    let left: Vec<Held> = held.lock().expect("held lock").drain().map(|(_, h)| h).collect();
    for h in &left {
        if !h.settled.load(Ordering::SeqCst) {
            if let Err(err) = state.store.defer_scan(&h.delivery, Duration::ZERO).await {
                tracing::warn!(error = %err, task_id = %h.delivery.task.task_id, "could not give a task back; it returns when its lease runs out");
            }
        }
        if let Err(err) = state.store.release_slot(&h.slot).await {
            tracing::warn!(error = %err, "could not release a scan slot; it expires with its lease");
        }
    }
    tracing::info!(given_back = left.len(), "scan workers stopped");
}

/// Renew the leases of held tasks and their slots every third of a lease. A task whose lease
/// was lost anyway (the store was unreachable for a whole lease and another worker took it
/// over) is stopped here: the other worker owns it now.
async fn heartbeat(state: SharedState, held: HeldTasks, consumer: String, lease: Duration) {
    let every = (lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let (deliveries, slots): (Vec<Delivery>, Vec<String>) =
            held.lock().expect("held lock").values().map(|h| (h.delivery.clone(), h.slot.clone())).unzip();
        if deliveries.is_empty() {
            continue;
        }
        match state.store.renew_scans(&consumer, &deliveries, lease).await {
            Ok(lost) if !lost.is_empty() => {
                let mut stopped = Vec::new();
                {
                    let mut map = held.lock().expect("held lock");
                    let gone: Vec<u64> = map
                        .iter()
                        .filter(|(_, h)| !h.settled.load(Ordering::SeqCst) && lost.contains(&h.delivery.id))
                        .map(|(k, _)| *k)
                        .collect();
                    for k in gone {
                        if let Some(h) = map.remove(&k) {
                            h.abort.abort();
                            stopped.push(h.slot);
                        }
                    }
                }
                for slot in &stopped {
                    let _ = state.store.release_slot(slot).await;
                }
                if !stopped.is_empty() {
                    tracing::warn!(
                        stopped = stopped.len(),
                        "task leases lost to another worker; stopped working on them"
                    );
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "cannot renew task leases; retrying"),
        }
        match state.store.renew_slots(&slots, lease).await {
            Ok(lost) if !lost.is_empty() => {
                tracing::debug!(
                    lost = lost.len(),
                    "scan slots expired before renewal (their tasks finished meanwhile, or the store was away)"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "cannot renew scan slots; retrying"),
        }
    }
}

/// Breaker open: probe the scanner with backoff until it answers (or the worker stops).
async fn probe_until_closed(state: &SharedState, scanner: &dyn Scanner, stop: &mut watch::Receiver<bool>) {
    let mut wait = PROBE_MIN;
    loop {
        if pause(stop, wait).await {
            return;
        }
        match scanner.check().await {
            Err(err) if is_outage(err.class()) => {
                tracing::info!(error = %err, next_probe = ?(wait * 2).min(PROBE_MAX), "scanner still unavailable");
                wait = (wait * 2).min(PROBE_MAX);
            }
            // Any answer that is not an outage means the scanner is back.
            _ => {
                state.breaker.close();
                return;
            }
        }
    }
}

/// Most tasks claimed in one store round trip.
const CLAIM_AT_MOST: usize = 32;

/// Polling back-off while the queue is empty.
const IDLE_MIN: Duration = Duration::from_millis(20);
const IDLE_MAX: Duration = Duration::from_millis(500);

async fn process(
    state: &SharedState,
    scanner: &dyn Scanner,
    settings: &WorkerSettings,
    delivery: Delivery,
    settling: &AtomicBool,
) {
    let task_id = delivery.task.task_id.clone();
    let outcome = handle(state, scanner, settings, &delivery).await;
    settling.store(true, Ordering::SeqCst);
    let settled = match outcome {
        Ok(record) => match state.store.complete_scan(&delivery, record.as_ref(), settings.results_retain).await {
            Ok(Some(id)) => {
                announce(state, record.as_ref().expect("a new result id comes with a record"), id).await;
                Ok(())
            }
            Ok(None) => Ok(()), // no result, or a redelivery: announced the first time
            Err(err) => Err(err),
        },
        Err(Failure { defer: Some(delay), class, detail, .. }) => {
            tracing::debug!(task_id, class, detail, again_in = ?delay, "task deferred without spending an attempt");
            state.store.defer_scan(&delivery, delay).await
        }
        Err(failure) if failure.retryable && delivery.attempt <= settings.max_retries => {
            let delay = retry_delay(settings.retry_base, delivery.attempt);
            tracing::warn!(task_id, attempt = delivery.attempt, retry_in = ?delay, reason = %failure.reason(), "scan failed; will retry");
            state.store.retry_scan(&delivery, delay).await
        }
        Err(mut failure) => {
            // A dead-lettered item is terminal for its job.
            let record = match failure.result.take() {
                Some(record) => {
                    // A malicious item left in place must be visible to the operator.
                    state.metrics.remediation_failures.inc();
                    tracing::warn!(task_id, attempt = delivery.attempt, location = %record_location(&record), reason = %failure.reason(), "malicious item NOT remediated; dead-lettered");
                    record
                }
                None => {
                    tracing::error!(task_id, attempt = delivery.attempt, reason = %failure.reason(), "scan failed; dead-lettered");
                    let request: Option<ScanRequest> = serde_json::from_str(&delivery.task.payload).ok();
                    result_record(&delivery, request.as_ref(), None, json!(null), json!(null), "not scanned", false)
                }
            };
            if let Err(err) = state.store.put_result(&record, settings.results_retain).await {
                tracing::warn!(error = %err, "could not record the dead-lettered result");
            }
            state.store.dead_letter_scan(&delivery, &failure.reason()).await
        }
    };
    if let Err(err) = settled {
        // The lease runs out and the task is delivered again: nothing is lost.
        tracing::error!(task_id, error = %err, "could not settle task; it will be redelivered");
    }
}

async fn handle(
    state: &SharedState,
    scanner: &dyn Scanner,
    settings: &WorkerSettings,
    delivery: &Delivery,
) -> Result<Option<ResultRecord>, Failure> {
    let store_err = |e: dsx_store::StoreError| Failure::new("store", e.to_string(), true);
    let task = &delivery.task;
    if state.store.get_result(&task.task_id).await.map_err(store_err)?.is_some() {
        tracing::debug!(task_id = %task.task_id, "already has a result (redelivery); skipping");
        return Ok(None);
    }
    let request: ScanRequest = serde_json::from_str(&task.payload)
        .map_err(|e| Failure::new("validation", format!("queued request unreadable: {e}"), false))?;
    match state.store.get_job(&task.job_id).await.map_err(store_err)?.map(|j| j.status) {
        Some(JobStatus::Cancelled) => {
            let record = result_record(delivery, Some(&request), None, json!(null), json!(null), "not scanned", false);
            return Ok(Some(record));
        }
        // Not an attempt: the task waits as long as the job stays paused.
        Some(JobStatus::Paused) => return Err(Failure::deferred("job_paused", "job is paused", PAUSED_RECHECK)),
        _ => {}
    }
    let started = Instant::now();
    if request.size_in_bytes.is_some_and(|s| s > settings.max_file_size) {
        // Too large to scan: a synthetic verdict, as DSXA reports policy violations.
        let mut verdict = Verdict::new(VerdictKind::NonCompliant);
        verdict.verdict_details.reason = Some("File Size Too Large".into());
        verdict.file_info.file_size_in_bytes = request.size_in_bytes;
        return finish(state, delivery, &request, verdict, started, None).await.map(Some);
    }

    let read_started = Instant::now();
    let body = serde_json::to_vec(&request).map_err(|e| Failure::new("validation", e.to_string(), false))?;
    let resp =
        state.connectors.request(task.connector_uuid, Method::POST, "read_file", body).await.map_err(|e| match e {
            OutboundError::Unreachable(d) => Failure::new("connector_connection", d, true),
            OutboundError::Refused(d) => Failure::new("connector_url_refused", d, false),
            OutboundError::Store(s) => store_err(s),
            other => Failure::new("connector_not_registered", other.to_string(), true),
        })?;
    let status = resp.status();
    if !status.is_success() {
        let detail = resp.text().await.unwrap_or_default();
        let (class, retryable) = classify_connector_status(status);
        return Err(Failure::new(class, format!("read_file: {status} {}", truncate(&detail)), retryable));
    }
    let is_json = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if is_json {
        // Python connectors answer errors as 200 JSON: never scan that as the file's content.
        let detail = resp.text().await.unwrap_or_default();
        return Err(Failure::new("connector_client", format!("read_file answered JSON: {}", truncate(&detail)), false));
    }
    let input = ScanInput {
        location: request.location.clone(),
        metainfo: request.metainfo.clone(),
        connector_name: request.connector.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
        task_id: task.task_id.clone(),
        size: request.size_in_bytes,
        protected_entity: None,
    };
    let stream = resp.bytes_stream().map_err(std::io::Error::other);
    let scan_started = Instant::now();
    let verdict = match scanner.scan(&input, Box::pin(stream)).await {
        Ok(verdict) => {
            state.breaker.success();
            verdict
        }
        Err(err) => {
            let mut failure = Failure::from(err);
            // The scanner is down, not this file: once the breaker is open the task waits for
            // the scanner instead of spending its attempts.
            if is_outage(failure.class) && state.breaker.outage() {
                failure.defer = Some(OUTAGE_DEFER);
            }
            return Err(failure);
        }
    };
    state.metrics.scanner_seconds.observe(scan_started.elapsed().as_secs_f64());
    let read_ms = read_started.elapsed().as_millis() as u64;
    finish(state, delivery, &request, verdict, started, Some(read_ms)).await.map(Some)
}

/// Tell SSE subscribers (and syslog) about a newly stored result.
async fn announce(state: &SharedState, record: &ResultRecord, id: u64) {
    state.metrics.scanned(&record.verdict);
    if state.syslog.is_none() && !state.store.may_have_listeners(crate::routes::events::SCAN_RESULT) {
        return; // nobody to tell: skip the job lookup and the event's JSON
    }
    let job = state.store.get_job(&record.job_id).await.ok().flatten();
    let mut result: Value = serde_json::from_str(&record.json).unwrap_or(Value::Null);
    result["id"] = id.into();
    let event = json!({ "type": "scan_result", "scan_result": result, "job": job });
    if let Err(err) = state.store.publish(crate::routes::events::SCAN_RESULT, &event.to_string()).await {
        tracing::debug!(error = %err, "could not announce a result");
    }
    if let Some(syslog) = &state.syslog {
        syslog.send(record.verdict == "Malicious", &event["scan_result"].to_string()).await;
    }
}

/// Remediate when malicious, then build the result record (its JSON is serialized once).
async fn finish(
    state: &SharedState,
    delivery: &Delivery,
    request: &ScanRequest,
    verdict: Verdict,
    started: Instant,
    read_ms: Option<u64>,
) -> Result<ResultRecord, Failure> {
    let remediation = if verdict.is_malicious() { Some(remediate(state, delivery, request).await) } else { None };
    let mut verdict_json = serde_json::to_value(&verdict).unwrap_or(Value::Null);
    if let Some(fields) = verdict_json.as_object_mut() {
        fields.insert("dsxconnect_request_elapsed_ms".into(), (started.elapsed().as_millis() as u64).into());
        if let Some(ms) = read_ms {
            fields.insert("dsxconnect_read_elapsed_ms".into(), ms.into());
        }
    }
    let record = |action: Value, status: &str, succeeded: bool| {
        result_record(delivery, Some(request), Some(&verdict), verdict_json.clone(), action, status, succeeded)
    };
    match remediation {
        None => Ok(record(json!(null), "scanned", true)),
        Some(Ok(done)) => Ok(record(done.answer, done.status, true)),
        Some(Err((mut failure, answer))) => {
            failure.result = Some(record(answer, "action attempted, but failed", false));
            Err(failure)
        }
    }
}

/// How a connector's HTTP error status is handled. A 401/403 usually follows a key change
/// (the connector restarted and re-enrolled, or rotated): the next attempt signs with the
/// key the registry holds by then. A 503 is a connector that is starting or busy.
fn classify_connector_status(status: reqwest::StatusCode) -> (&'static str, bool) {
    match status.as_u16() {
        401 | 403 => ("connector_auth", true),
        408 | 429 => ("connector_busy", true),
        500..=599 => ("connector_server", true),
        _ => ("connector_client", false),
    }
}

/// What the connector did with a malicious item.
struct Remediation {
    status: &'static str,
    answer: Value,
}

/// `PUT item_action`. Failures that may pass on a later attempt (connection, 401 after a
/// key change, 5xx, an I/O error the connector reports) are retried like a read; the final
/// failure is dead-lettered with its reason (`process`). A redelivered task (the worker died
/// after remediating, before storing the result) may call it again: the item is gone by
/// then and the connector answers "not found", which counts as done on a later attempt.
async fn remediate(
    state: &SharedState,
    delivery: &Delivery,
    request: &ScanRequest,
) -> Result<Remediation, (Failure, Value)> {
    let body =
        serde_json::to_vec(request).map_err(|e| (Failure::new("validation", e.to_string(), false), Value::Null))?;
    let resp = match state.connectors.request(delivery.task.connector_uuid, Method::PUT, "item_action", body).await {
        Ok(resp) => resp,
        Err(err) => {
            let answer =
                json!({ "status": "error", "message": "item_action not delivered", "description": err.to_string() });
            let (class, retryable) = match err {
                OutboundError::Store(_) => ("store", true),
                OutboundError::Refused(_) => ("connector_url_refused", false),
                _ => ("item_action_connection", true),
            };
            return Err((Failure::new(class, err.to_string(), retryable), answer));
        }
    };
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    let reported = answer.get("status").and_then(Value::as_str);
    // Our connectors answer failures as a 200 `status:"error"` body (what Python servers
    // read) with an `error_code`; older ones use HTTP errors.
    let code = answer.get("error_code").or_else(|| answer.get("detail")).and_then(Value::as_str).unwrap_or("");
    let gone = status == reqwest::StatusCode::NOT_FOUND || code == "not_found";
    if gone && delivery.attempt > 1 {
        tracing::info!(task_id = %delivery.task.task_id, "item already remediated by an earlier attempt");
        return Ok(Remediation { status: "action succeeded", answer });
    }
    if status.is_success() && reported != Some("error") {
        let status = if reported == Some("nothing") { "scanned" } else { "action succeeded" };
        return Ok(Remediation { status, answer });
    }
    let reason = answer
        .get("description")
        .or_else(|| answer.get("message"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| truncate(&answer.to_string()).to_owned());
    let (class, retryable) = if status.is_success() {
        ("item_action", code == "repository_error")
    } else {
        let (class, retryable) = classify_connector_status(status);
        (if class == "connector_client" { "item_action" } else { class }, retryable)
    };
    Err((Failure::new(class, format!("item_action {status}: {reason}"), retryable), answer))
}

fn result_record(
    delivery: &Delivery,
    request: Option<&ScanRequest>,
    verdict: Option<&Verdict>,
    verdict_json: Value,
    item_action: Value,
    status: &str,
    succeeded: bool,
) -> ResultRecord {
    let task = &delivery.task;
    let json = json!({
        "scan_request_task_id": task.task_id,
        "scan_job_id": task.job_id,
        "metadata_tag": request.map(|r| r.metainfo.clone()),
        "scan_request": request,
        "verdict": verdict_json,
        "item_action": item_action,
        "status": status,
        "finished_at": unix_now(),
    });
    ResultRecord {
        task_id: task.task_id.clone(),
        job_id: task.job_id.clone(),
        json: json.to_string(),
        verdict: verdict.map(|v| v.verdict.as_str()).unwrap_or("Not Scanned").to_owned(),
        succeeded,
        scan_time_us: verdict.and_then(|v| v.scan_duration_in_microseconds).unwrap_or(0),
        file_size: request
            .and_then(|r| r.size_in_bytes)
            .or_else(|| verdict.and_then(|v| v.file_info.file_size_in_bytes))
            .unwrap_or(0),
    }
}

/// The item a stored result is about, for log lines.
fn record_location(record: &ResultRecord) -> String {
    let json: Value = serde_json::from_str(&record.json).unwrap_or_default();
    json["scan_request"]["location"].as_str().unwrap_or_default().to_owned()
}

fn truncate(s: &str) -> &str {
    let end = s.char_indices().nth(200).map(|(i, _)| i).unwrap_or(s.len());
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_to_the_cap() {
        let base = Duration::from_secs(2);
        assert_eq!(retry_delay(base, 1), Duration::from_secs(2));
        assert_eq!(retry_delay(base, 2), Duration::from_secs(4));
        assert_eq!(retry_delay(base, 4), Duration::from_secs(16));
        assert_eq!(retry_delay(base, 20), Duration::from_secs(300));
    }
}

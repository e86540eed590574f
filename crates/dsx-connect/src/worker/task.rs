//! What happens to one claimed task: the worker's decisions (skip, scan, remediate, retry,
//! defer, dead-letter) and the result it stores.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dsx_hmac::unix_now;
use dsx_model::{Connector, FailureClass, ScanRequest, Timings, Verdict, VerdictKind};
use dsx_scanner::{ScanError, ScanInput};
use dsx_store::{Delivery, JobStatus, ResultRecord, StoreResult};
use serde_json::{json, Value};

use super::connector_io::{classify_connector_status, truncate, ActionReply, IoFailure};
use super::{retry_delay, Worker};

/// Paused jobs' tasks are looked at again after this, without spending an attempt.
pub(super) const PAUSED_RECHECK: Duration = Duration::from_secs(2);
/// Tasks whose scan failed while the breaker is open come back after this (the breaker keeps
/// workers from claiming them until the scanner answers).
pub(super) const OUTAGE_DEFER: Duration = Duration::from_secs(1);

/// Why a task failed, and whether trying again may help.
#[derive(Debug)]
pub(super) struct Failure {
    pub class: FailureClass,
    pub detail: String,
    pub retryable: bool,
    /// Give the task back after this delay without spending an attempt (its job is paused,
    /// or the scanner is down and the breaker is open).
    pub defer: Option<Duration>,
    /// The result to keep if this failure is final: a scanned item whose remediation failed
    /// keeps its verdict (and the connector's answer) instead of becoming "not scanned".
    pub result: Option<ResultRecord>,
}

impl Failure {
    pub fn new(class: FailureClass, detail: impl Into<String>) -> Self {
        Self { class, detail: detail.into(), retryable: class.retryable(), defer: None, result: None }
    }
    fn deferred(class: FailureClass, detail: impl Into<String>, delay: Duration) -> Self {
        Self { defer: Some(delay), ..Self::new(class, detail) }
    }
    pub fn reason(&self) -> String {
        format!("{}: {}", self.class, self.detail)
    }
}

impl From<IoFailure> for Failure {
    fn from(f: IoFailure) -> Self {
        Failure::new(f.class, f.detail)
    }
}

/// The class of a scanner error.
pub(super) fn scan_failure_class(err: &ScanError) -> FailureClass {
    match err {
        ScanError::Auth(_) => FailureClass::ScannerAuth,
        ScanError::Client(..) => FailureClass::ScannerClient,
        ScanError::Server(..) => FailureClass::ScannerServer,
        ScanError::Timeout(_) => FailureClass::ScannerTimeout,
        ScanError::Unreachable(_) => FailureClass::ScannerUnreachable,
        ScanError::Initializing(_) => FailureClass::ScannerInitializing,
        ScanError::Protocol(_) => FailureClass::ScannerProtocol,
        ScanError::Body(_) => FailureClass::ConnectorRead,
    }
}

/// How a task was settled, for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Done: acked, with its result stored (the first time).
    Completed,
    /// A redelivery of a task that already had its result: acked only.
    Skipped,
    /// Given back to be tried again after a delay (an attempt spent).
    Retried,
    /// Given back without spending an attempt (job paused, scanner down).
    Deferred,
    /// Moved to the dead-letter queue with its reason.
    DeadLettered,
    /// The store did not take the settlement: the lease runs out and the task comes back.
    Unsettled,
}

/// Enqueue → claim, in microseconds (the task's intake time against the claim's clock; both
/// are wall clocks, so replicas with skewed clocks report skewed waits).
fn queue_wait_us(delivery: &Delivery) -> Option<u64> {
    let enqueued = delivery.task.enqueued_at_us;
    (enqueued > 0 && delivery.claimed_at_us >= enqueued).then(|| delivery.claimed_at_us - enqueued)
}

/// Microseconds since `t`.
fn micros(t: Instant) -> u64 {
    t.elapsed().as_micros() as u64
}

impl Worker {
    /// Handle one claimed task to its end and settle it with the store.
    pub(super) async fn process(&self, delivery: Delivery, settling: &AtomicBool) -> Settled {
        let task_id = delivery.task.task_id.clone();
        let outcome = self.handle(&delivery).await;
        settling.store(true, Ordering::SeqCst);
        let retain = self.settings.results_retain;
        let settled = match outcome {
            Ok(None) => self.queue.complete_scan(&delivery, None, retain).await.map(|_| Settled::Skipped),
            Ok(Some(record)) => {
                let stored = self.queue.complete_scan(&delivery, Some(&record), retain).await;
                self.announce_new(stored, &record).await.map(|()| Settled::Completed)
            }
            Err(Failure { defer: Some(delay), class, detail, .. }) => {
                tracing::debug!(task_id, %class, detail, again_in = ?delay, "task deferred without spending an attempt");
                self.queue.defer_scan(&delivery, delay).await.map(|_| Settled::Deferred)
            }
            Err(failure) if failure.retryable && delivery.attempt <= self.settings.max_retries => {
                let delay = retry_delay(self.settings.retry_base, delivery.attempt);
                tracing::warn!(task_id, attempt = delivery.attempt, retry_in = ?delay, reason = %failure.reason(), "scan failed; will retry");
                self.queue.retry_scan(&delivery, delay).await.map(|_| Settled::Retried)
            }
            Err(mut failure) => {
                // A dead-lettered item is terminal for its job.
                let record = match failure.result.take() {
                    Some(record) => {
                        // A malicious item left in place must be visible to the operator.
                        self.metrics.remediation_failures.inc();
                        tracing::warn!(task_id, attempt = delivery.attempt, location = %delivery.task.request.location, reason = %failure.reason(), "malicious item NOT remediated; dead-lettered");
                        record
                    }
                    None => {
                        tracing::error!(task_id, attempt = delivery.attempt, reason = %failure.reason(), "scan failed; dead-lettered");
                        let request = &delivery.task.request;
                        result_record(&delivery, request, None, None, &Value::Null, "not scanned", false)
                    }
                };
                // The result and the dead letter in one step: a completed job has its dead letters.
                let stored = self.queue.dead_letter_scan(&delivery, &failure.reason(), Some(&record), retain).await;
                self.announce_new(stored, &record).await.map(|()| Settled::DeadLettered)
            }
        };
        settled.unwrap_or_else(|err| {
            // The lease runs out and the task is delivered again: nothing is lost.
            tracing::error!(task_id, error = %err, "could not settle task; it will be redelivered");
            Settled::Unsettled
        })
    }

    /// Decide and do: `Ok(None)` when the task needs nothing (it already has its result),
    /// `Ok(Some)` with the result to store, `Err` with why it failed.
    async fn handle(&self, delivery: &Delivery) -> Result<Option<ResultRecord>, Failure> {
        let claimed_at = Instant::now();
        let task = &delivery.task;
        if delivery.has_result {
            tracing::debug!(task_id = %task.task_id, "already has a result (redelivery); skipping");
            return Ok(None);
        }
        let request = &task.request;
        match delivery.job_status {
            Some(JobStatus::Cancelled) => {
                let record = result_record(delivery, request, None, None, &Value::Null, "not scanned", false);
                return Ok(Some(record));
            }
            // Not an attempt: the task waits as long as the job stays paused.
            Some(JobStatus::Paused) => {
                return Err(Failure::deferred(FailureClass::JobPaused, "job is paused", PAUSED_RECHECK))
            }
            _ => {}
        }
        let connector = self.connectors.connector(task.connector_uuid).await;
        if request.size_in_bytes.is_some_and(|s| s > self.settings.max_file_size) {
            // Too large to scan: a synthetic verdict, as DSXA reports policy violations.
            let mut verdict = Verdict::new(VerdictKind::NonCompliant);
            verdict.verdict_details.reason = Some("File Size Too Large".into());
            verdict.file_info.file_size_in_bytes = request.size_in_bytes;
            return self.finish(delivery, connector, verdict, claimed_at, None).await.map(Some);
        }

        let stream = self.connectors.read_file(task.connector_uuid, request).await?;
        let input = ScanInput {
            location: request.location.clone(),
            metainfo: request.metainfo.clone(),
            connector_name: connector.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
            task_id: task.task_id.clone(),
            size: request.size_in_bytes,
            protected_entity: None,
        };
        let scan_started = Instant::now();
        let verdict = match self.scanner.scan(&input, stream).await {
            Ok(verdict) => {
                self.breaker.success();
                verdict
            }
            Err(err) => {
                let mut failure = Failure::new(scan_failure_class(&err), err.to_string());
                // The scanner is down, not this file: once the breaker is open the task waits
                // for the scanner instead of spending its attempts.
                if failure.class.is_scanner_outage() && self.breaker.outage() {
                    failure.defer = Some(OUTAGE_DEFER);
                }
                return Err(failure);
            }
        };
        self.metrics.scanner_seconds.observe(scan_started.elapsed().as_secs_f64());
        let read_us = micros(claimed_at);
        self.finish(delivery, connector, verdict, claimed_at, Some(read_us)).await.map(Some)
    }

    /// Announce a result the store just stored (`Some(id)`); `None` is a redelivery's, told
    /// the first time.
    async fn announce_new(&self, stored: StoreResult<Option<u64>>, record: &ResultRecord) -> StoreResult<()> {
        if let Some(id) = stored? {
            self.announce(record, id).await;
        }
        Ok(())
    }

    /// Tell SSE subscribers (and syslog) about a newly stored result.
    async fn announce(&self, record: &ResultRecord, id: u64) {
        self.metrics.scanned(&record.verdict);
        if self.syslog.is_none() && !self.events.may_have_listeners(crate::routes::events::SCAN_RESULT) {
            return; // nobody to tell: skip the job lookup and the event's JSON
        }
        let job = self.jobs.get_job(&record.job_id).await.ok().flatten();
        let mut result: Value = serde_json::from_str(&record.json).unwrap_or(Value::Null);
        result["id"] = id.into();
        let event = json!({ "type": "scan_result", "scan_result": result, "job": job });
        if let Err(err) = self.events.publish(crate::routes::events::SCAN_RESULT, &event.to_string()).await {
            tracing::debug!(error = %err, "could not announce a result");
        }
        if let Some(syslog) = &self.syslog {
            syslog.send(record.verdict == "Malicious", &event["scan_result"].to_string()).await;
        }
    }

    /// Remediate when malicious, then build the result record (its JSON is serialized once).
    async fn finish(
        &self,
        delivery: &Delivery,
        connector: Option<Connector>,
        verdict: Verdict,
        claimed_at: Instant,
        read_us: Option<u64>,
    ) -> Result<ResultRecord, Failure> {
        let request = &delivery.task.request;
        let remediation = if verdict.is_malicious() { Some(self.remediate(delivery).await) } else { None };
        let total_us = micros(claimed_at);
        let timings = Timings {
            dsxconnect_request_elapsed_ms: Some(total_us / 1000),
            dsxconnect_claim_to_result_us: Some(total_us),
            dsxconnect_queue_wait_us: queue_wait_us(delivery),
            dsxconnect_read_elapsed_ms: read_us.map(|us| us / 1000),
            dsxconnect_read_scan_us: read_us,
        };
        let record = |action: &Value, status: &str, succeeded: bool| {
            result_record(delivery, request, connector.as_ref(), Some((&verdict, &timings)), action, status, succeeded)
        };
        match remediation {
            None => Ok(record(&Value::Null, "scanned", true)),
            Some(Ok((status, answer))) => Ok(record(&answer, status, true)),
            Some(Err((mut failure, answer))) => {
                failure.result = Some(record(&answer, "action attempted, but failed", false));
                Err(failure)
            }
        }
    }

    /// `PUT item_action`. Failures that may pass on a later attempt (connection, 401 after a
    /// key change, 5xx, an I/O error the connector reports) are retried like a read; the final
    /// failure is dead-lettered with its reason (`process`). A redelivered task (the worker
    /// died after remediating, before storing the result) may call it again: the item is gone
    /// by then and the connector answers "not found", which counts as done on a later attempt.
    async fn remediate(&self, delivery: &Delivery) -> Result<(&'static str, Value), (Failure, Value)> {
        let task = &delivery.task;
        let ActionReply { status, body: answer } =
            match self.connectors.item_action(task.connector_uuid, &task.request).await {
                Ok(reply) => reply,
                Err(err) => {
                    let answer =
                        json!({ "status": "error", "message": "item_action not delivered", "description": err.detail });
                    let class = match err.class {
                        FailureClass::Store | FailureClass::ConnectorUrlRefused => err.class,
                        _ => FailureClass::ItemActionConnection,
                    };
                    return Err((Failure::new(class, err.detail), answer));
                }
            };
        let reported = answer.get("status").and_then(Value::as_str);
        // Our connectors answer failures as a 200 `status:"error"` body (what Python servers
        // read) with an `error_code`; older ones use HTTP errors.
        let code = answer.get("error_code").or_else(|| answer.get("detail")).and_then(Value::as_str).unwrap_or("");
        let success = (200..300).contains(&status);
        let gone = status == 404 || code == "not_found";
        if gone && delivery.attempt > 1 {
            tracing::info!(task_id = %task.task_id, "item already remediated by an earlier attempt");
            return Ok(("action succeeded", answer));
        }
        if success && reported != Some("error") {
            let outcome = if reported == Some("nothing") { "scanned" } else { "action succeeded" };
            return Ok((outcome, answer));
        }
        let reason = answer
            .get("description")
            .or_else(|| answer.get("message"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| truncate(&answer.to_string()).to_owned());
        let failure = if success {
            let mut f = Failure::new(FailureClass::ItemAction, format!("item_action {status}: {reason}"));
            f.retryable = code == "repository_error";
            f
        } else {
            let class = match classify_connector_status(status) {
                FailureClass::ConnectorClient => FailureClass::ItemAction,
                other => other,
            };
            Failure::new(class, format!("item_action {status}: {reason}"))
        };
        Err((failure, answer))
    }
}

/// The stored result document, serialized straight from the typed values (field names and
/// shape are what Python 1.x readers expect). Borrows, so a result is serialized without
/// copying; the store reads it back as `dsx_model::StoredResult`.
#[derive(serde::Serialize)]
struct ResultDoc<'a> {
    scan_request_task_id: &'a str,
    scan_job_id: &'a str,
    metadata_tag: &'a str,
    scan_request: &'a ScanRequest,
    verdict: Option<VerdictDoc<'a>>,
    item_action: &'a Value,
    status: &'a str,
    finished_at: u64,
}

/// The scanner's verdict and the worker's stage timings beside its fields (read back as
/// `dsx_model::ResultVerdict`).
#[derive(serde::Serialize)]
pub(super) struct VerdictDoc<'a> {
    #[serde(flatten)]
    pub verdict: &'a Verdict,
    #[serde(flatten)]
    pub timings: &'a Timings,
}

#[allow(clippy::too_many_arguments)]
fn result_record(
    delivery: &Delivery,
    request: &ScanRequest,
    connector: Option<&Connector>,
    verdict: Option<(&Verdict, &Timings)>,
    item_action: &Value,
    status: &str,
    succeeded: bool,
) -> ResultRecord {
    let task = &delivery.task;
    // The queued request carries no connector model; the result shows the registered one.
    let with_connector;
    let scan_request = match connector {
        Some(connector) => {
            let mut request = request.clone();
            request.connector = Some(connector.clone());
            request.connector_url = Some(connector.url.clone());
            with_connector = request;
            &with_connector
        }
        None => request,
    };
    let doc = ResultDoc {
        scan_request_task_id: &task.task_id,
        scan_job_id: &task.job_id,
        metadata_tag: &request.metainfo,
        scan_request,
        verdict: verdict.map(|(verdict, timings)| VerdictDoc { verdict, timings }),
        item_action,
        status,
        finished_at: unix_now(),
    };
    let verdict = verdict.map(|(v, _)| v);
    ResultRecord {
        task_id: task.task_id.clone(),
        job_id: task.job_id.clone(),
        json: serde_json::to_string(&doc).unwrap_or_default(),
        verdict: verdict.map(|v| v.verdict.as_str()).unwrap_or("Not Scanned").to_owned(),
        succeeded,
        scan_time_us: verdict.and_then(|v| v.scan_duration_in_microseconds).unwrap_or(0),
        file_size: request.size_in_bytes.or_else(|| verdict.and_then(|v| v.file_info.file_size_in_bytes)).unwrap_or(0),
    }
}

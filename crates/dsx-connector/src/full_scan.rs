//! Full scan: enumerate in the background and enqueue scan requests to dsx-connect, one by
//! one with bounded concurrency or in batches; honour `limit`, pause and cancel; end with
//! `enqueue_done` carrying the true total.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dsx_model::{ScanRequest, ScanRequestBatch};
use reqwest::Method;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::dsx_client::ClientError;
use crate::repository::Item;
use crate::ConnectorContext;

/// How often (in items) the job's pause/cancel flags are checked.
const CONTROL_CHECK_EVERY: u64 = 100;
/// Attempts for one enqueue when dsx-connect is unreachable or answers 5xx.
const ENQUEUE_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone)]
pub struct FullScanParams {
    pub job_id: String,
    pub limit: Option<u64>,
    pub batch: bool,
    pub batch_size: usize,
}

fn request_job(request: &ScanRequest) -> String {
    request.scan_job_id.clone().unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Stop,
}

impl ConnectorContext {
    pub fn scan_request(&self, item: &Item, job_id: &str) -> ScanRequest {
        let mut req = ScanRequest::new(item.location.clone(), item.metainfo.clone());
        req.size_in_bytes = item.size;
        req.scan_job_id = Some(job_id.to_owned());
        req.connector = Some(self.dsx.model());
        req.connector_url = Some(self.settings.base_url());
        req
    }

    /// POST one JSON body, retrying transient failures. While the job is paused (409
    /// `job_paused`) it waits and then retries; `Ok(false)` when the job was cancelled.
    async fn enqueue_with_retry(
        &self,
        path: &str,
        body: &serde_json::Value,
        job_id: &str,
    ) -> Result<bool, ClientError> {
        let mut attempt = 0;
        loop {
            match self.dsx.post_json(path, body).await {
                Ok(_) => return Ok(true),
                Err(ClientError::Refused { status: 409, detail }) => {
                    if detail != "job_paused" || self.job_control(job_id).await == Control::Stop {
                        return Ok(false);
                    }
                }
                Err(err @ (ClientError::Unreachable(_) | ClientError::Refused { status: 500..=599, .. }))
                    if attempt + 1 < ENQUEUE_ATTEMPTS =>
                {
                    attempt += 1;
                    tracing::warn!(error = %err, attempt, "enqueue failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250 * 2u64.pow(attempt))).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Pause/cancel check through `GET scan/jobs/{id}/raw`; waits while paused.
    async fn job_control(&self, job_id: &str) -> Control {
        loop {
            match self.dsx.call(Method::GET, &format!("scan/jobs/{job_id}/raw"), Vec::new()).await {
                Ok((_, json)) => match json.get("status").and_then(|s| s.as_str()) {
                    Some("cancelled") => return Control::Stop,
                    Some("paused") => tokio::time::sleep(Duration::from_secs(2)).await,
                    _ => return Control::Run,
                },
                // A server without job control, or a passing error: keep going.
                Err(_) => return Control::Run,
            }
        }
    }

    pub async fn run_full_scan(self: Arc<Self>, params: FullScanParams) -> u64 {
        let filter = self.runtime.read().expect("runtime lock").filter.clone();
        let mut items = self.repo.enumerate(filter);
        let enqueued = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let limiter = Arc::new(Semaphore::new(self.settings.full_scan_enqueue_concurrency));
        let mut tasks = JoinSet::new();
        let mut batch: Vec<ScanRequest> = Vec::new();
        let mut seen = 0u64;
        tracing::info!(job_id = %params.job_id, batch = params.batch, limit = ?params.limit, "full scan started");

        while let Some(next) = items.recv().await {
            if stop.load(Ordering::Relaxed) || params.limit.is_some_and(|l| seen >= l) {
                break;
            }
            let item = match next {
                Ok(item) => item,
                Err(err) => {
                    tracing::warn!(error = %err, "enumeration error; skipping");
                    continue;
                }
            };
            seen += 1;
            if seen.is_multiple_of(CONTROL_CHECK_EVERY) && self.job_control(&params.job_id).await == Control::Stop {
                tracing::info!(job_id = %params.job_id, "job cancelled; stopping enumeration");
                break;
            }
            let request = self.scan_request(&item, &params.job_id);
            if params.batch {
                batch.push(request);
                if batch.len() >= params.batch_size {
                    self.send_batch(std::mem::take(&mut batch), params.batch_size, &enqueued, &stop).await;
                }
                continue;
            }
            let permit = Arc::clone(&limiter).acquire_owned().await.expect("semaphore open");
            let (ctx, enqueued, stop) = (Arc::clone(&self), Arc::clone(&enqueued), Arc::clone(&stop));
            tasks.spawn(async move {
                let body = serde_json::to_value(&request).expect("scan request serialises");
                match ctx.enqueue_with_retry("scan/request", &body, &request_job(&request)).await {
                    Ok(true) => {
                        enqueued.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => stop.store(true, Ordering::Relaxed),
                    Err(err) => tracing::error!(location = %request.location, error = %err, "could not enqueue"),
                }
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        if !batch.is_empty() {
            self.send_batch(batch, params.batch_size, &enqueued, &stop).await;
        }
        while tasks.join_next().await.is_some() {}

        let total = enqueued.load(Ordering::Relaxed);
        let done = json!({ "enqueued_total": total });
        let path = format!("scan/jobs/{}/enqueue_done", params.job_id);
        if let Err(err) = self.enqueue_with_retry(&path, &done, &params.job_id).await {
            tracing::error!(job_id = %params.job_id, error = %err, "enqueue_done failed");
        }
        tracing::info!(job_id = %params.job_id, enqueued = total, "full scan enumeration finished");
        total
    }

    async fn send_batch(&self, requests: Vec<ScanRequest>, batch_size: usize, enqueued: &AtomicU64, stop: &AtomicBool) {
        let count = requests.len() as u64;
        let job_id = requests.first().map(request_job).unwrap_or_default();
        let body = serde_json::to_value(ScanRequestBatch { requests, batch_size: Some(batch_size) })
            .expect("batch serialises");
        match self.enqueue_with_retry("scan/request_batch", &body, &job_id).await {
            Ok(true) => {
                enqueued.fetch_add(count, Ordering::Relaxed);
            }
            Ok(false) => stop.store(true, Ordering::Relaxed),
            Err(err) => tracing::error!(error = %err, items = count, "could not enqueue batch"),
        }
    }

    /// Monitor mode: each new or changed item is a single-item job.
    pub async fn enqueue_single(self: Arc<Self>, item: Item) {
        let job_id = uuid::Uuid::new_v4().to_string();
        let body = serde_json::to_value(self.scan_request(&item, &job_id)).expect("scan request serialises");
        match self.enqueue_with_retry("scan/request", &body, &job_id).await {
            Ok(true) => {
                let done = json!({ "enqueued_total": 1 });
                let path = format!("scan/jobs/{job_id}/enqueue_done");
                if let Err(err) = self.enqueue_with_retry(&path, &done, &job_id).await {
                    tracing::warn!(error = %err, "enqueue_done for a monitored item failed");
                }
                tracing::info!(location = %item.location, job_id, "monitored change enqueued");
            }
            Ok(false) => tracing::warn!(location = %item.location, "monitored change refused by dsx-connect"),
            Err(err) => tracing::error!(location = %item.location, error = %err, "could not enqueue monitored change"),
        }
    }
}

//! Scan workers: claim tasks from the durable queue, fetch the bytes from the connector
//! (signed, registry URL and key), stream them to the scanner, remediate malicious items,
//! store the result. At-least-once delivery, made safe by task-id idempotency: a result is
//! stored once per task, and a repeated remediation finds nothing left to act on.
//!
//! [`Worker`] holds exactly what it uses (the store's queue, results, jobs, limits and events
//! capabilities, the scanner, connector I/O), so its decisions are tested alone
//! (`tests.rs`) on an embedded store with a fake connector.

mod connector_io;
mod task;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dsx_scanner::Scanner;
use dsx_store::{Delivery, Events, Jobs, Limits, Results, ScanQueue, Store};
use tokio::sync::{watch, Semaphore};

pub use connector_io::{classify_connector_status, ActionReply, ByteStream, ConnectorIo, HttpConnectorIo, IoFailure};

use crate::metrics::Metrics;
use crate::syslog::Syslog;

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

/// Backoff before attempt `n + 1`: `min(base · 2^(n-1), 300 s)`, ±10 % so tasks that failed
/// together (a connector restart) do not all come back in the same instant.
pub fn retry_delay(base: Duration, attempt: u32) -> Duration {
    retry_schedule(base).delay(attempt.saturating_sub(1))
}

fn retry_schedule(base: Duration) -> dsx_util::Backoff {
    dsx_util::Backoff::new(base, Duration::from_secs(300), dsx_util::Jitter::Spread(0.1))
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

/// The scan workers of one process and everything they use.
pub struct Worker {
    pub queue: Arc<dyn ScanQueue>,
    pub results: Arc<dyn Results>,
    pub jobs: Arc<dyn Jobs>,
    pub limits: Arc<dyn Limits>,
    pub events: Arc<dyn Events>,
    pub scanner: Arc<dyn Scanner>,
    pub connectors: Arc<dyn ConnectorIo>,
    pub breaker: Arc<Breaker>,
    pub metrics: Arc<Metrics>,
    pub syslog: Option<Arc<Syslog>>,
    pub settings: WorkerSettings,
    /// This process's name in the queue's consumer group and in its slot names.
    pub consumer: String,
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

/// Breaker probes: first after this, doubling up to `PROBE_MAX`.
const PROBE_MIN: Duration = Duration::from_millis(500);
const PROBE_MAX: Duration = Duration::from_secs(10);
/// Most tasks claimed in one store round trip.
const CLAIM_AT_MOST: usize = 32;
/// Longest wait for new work while the queue is empty; delayed retries become due meanwhile
/// and are picked up by the next claim.
const CLAIM_WAIT: Duration = Duration::from_millis(500);
/// All slots busy: look again after this.
const SLOTS_BUSY_WAIT: Duration = Duration::from_millis(20);

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

impl Worker {
    /// The workers of a server process: every capability from its store, the scanner it built
    /// once, and HTTP connector I/O with a registry cache.
    pub fn from_state(state: &crate::state::AppState, consumer: String) -> Self {
        let store: Arc<dyn Store> = Arc::clone(&state.store);
        Self {
            queue: store.clone(),
            results: store.clone(),
            jobs: store.clone(),
            limits: store.clone(),
            events: store.clone(),
            scanner: Arc::clone(&state.scanner),
            connectors: Arc::new(HttpConnectorIo::new(state.connectors.clone(), store, state.settings.auth.enabled)),
            breaker: Arc::clone(&state.breaker),
            metrics: Arc::clone(&state.metrics),
            syslog: state.syslog.clone(),
            settings: state.settings.workers.clone(),
            consumer,
        }
    }

    /// Run until `stop` turns true, then drain: claim nothing more, let the tasks in flight
    /// finish for up to `settings.drain`, give back what is left (slots released, tasks back
    /// on the queue without spending an attempt) and return. Every task first takes one of
    /// `max_inflight` slots shared by all worker replicas through the store, so the scanner
    /// never sees more than that many scans at once, however many replicas run. Slots and task
    /// leases are held by a heartbeat: a worker that dies stops renewing them and they come
    /// back within one lease.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let settings = &self.settings;
        let limiter = Arc::new(Semaphore::new(settings.max_inflight.max(1)));
        let held: HeldTasks = Arc::default();
        // Slots of finished tasks, released together before the next take (one round trip
        // for many instead of one per file).
        let finished: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut tasks = tokio::task::JoinSet::new();
        let heartbeat = tokio::spawn(Arc::clone(&self).heartbeat(Arc::clone(&held)));
        let mut next_id = 0u64;
        // The last claim found nothing: wait for work before taking slots again.
        let mut idle = false;
        tracing::info!(consumer = %self.consumer, scanner = self.scanner.kind(), inflight = settings.max_inflight, lease = ?settings.lease, "scan workers started");
        loop {
            while tasks.try_join_next().is_some() {}
            if stopping(&stop) {
                break;
            }
            if self.breaker.is_open() {
                self.probe_until_closed(&mut stop).await;
                continue;
            }
            if idle {
                let waited = tokio::select! {
                    waited = self.queue.wait_for_tasks(CLAIM_WAIT) => waited,
                    _ = stop.changed() => continue,
                };
                if let Err(err) = waited {
                    tracing::warn!(error = %err, "cannot watch the scan queue; retrying");
                    pause(&mut stop, Duration::from_secs(1)).await;
                }
            }
            // Take as many free in-flight places as there are (at least one, waiting for it),
            // then claim that many tasks in one store round trip.
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
            let done: Vec<String> = std::mem::take(&mut *finished.lock().expect("finished lock"));
            if let Err(err) = self.limits.release_slots(&done).await {
                tracing::warn!(error = %err, "could not release scan slots; they expire with their lease");
            }
            let wanted: Vec<String> =
                (0..permits.len()).map(|_| format!("{}:{}", self.consumer, uuid::Uuid::new_v4())).collect();
            let mut slots = match self.limits.acquire_slots(&wanted, settings.max_inflight, settings.lease).await {
                Ok(taken) => wanted.into_iter().take(taken).collect::<Vec<_>>(),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot take scan slots; retrying");
                    drop(permits);
                    pause(&mut stop, Duration::from_secs(1)).await;
                    continue;
                }
            };
            if slots.is_empty() {
                drop(permits);
                pause(&mut stop, SLOTS_BUSY_WAIT).await;
                continue;
            }
            permits.truncate(slots.len());
            let claimed = self.queue.claim_scans(&self.consumer, slots.len(), settings.lease).await;
            let deliveries = claimed.unwrap_or_else(|err| {
                tracing::warn!(error = %err, "cannot claim scan tasks; retrying");
                Vec::new()
            });
            // Give back what the queue had no task for.
            let spare: Vec<String> = slots.drain(deliveries.len()..).collect();
            if !spare.is_empty() {
                let _ = self.limits.release_slots(&spare).await;
            }
            permits.truncate(deliveries.len());
            idle = deliveries.is_empty();
            if idle {
                continue;
            }
            let mut holding = held.lock().expect("held lock");
            for ((delivery, slot), permit) in deliveries.into_iter().zip(slots).zip(permits) {
                let id = next_id;
                next_id += 1;
                let settled = Arc::new(AtomicBool::new(false));
                let (worker, held, finished, settled_flag, task) = (
                    Arc::clone(&self),
                    Arc::clone(&held),
                    Arc::clone(&finished),
                    Arc::clone(&settled),
                    delivery.clone(),
                );
                let abort = tasks.spawn(async move {
                    worker.process(task, &settled_flag).await;
                    let mine = held.lock().expect("held lock").remove(&id);
                    if let Some(h) = mine {
                        finished.lock().expect("finished lock").push(h.slot);
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
                if let Err(err) = self.queue.defer_scan(&h.delivery, Duration::ZERO).await {
                    tracing::warn!(error = %err, task_id = %h.delivery.task.task_id, "could not give a task back; it returns when its lease runs out");
                }
            }
        }
        let mut slots: Vec<String> = left.iter().map(|h| h.slot.clone()).collect();
        slots.append(&mut finished.lock().expect("finished lock"));
        if let Err(err) = self.limits.release_slots(&slots).await {
            tracing::warn!(error = %err, "could not release scan slots; they expire with their lease");
        }
        tracing::info!(given_back = left.len(), "scan workers stopped");
    }

    /// Renew the leases of held tasks and their slots every third of a lease. A task whose
    /// lease was lost anyway (the store was unreachable for a whole lease and another worker
    /// took it over) is stopped here: the other worker owns it now.
    async fn heartbeat(self: Arc<Self>, held: HeldTasks) {
        let lease = self.settings.lease;
        let every = (lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            let (deliveries, slots): (Vec<Delivery>, Vec<String>) =
                held.lock().expect("held lock").values().map(|h| (h.delivery.clone(), h.slot.clone())).unzip();
            if deliveries.is_empty() {
                continue;
            }
            match self.queue.renew_scans(&self.consumer, &deliveries, lease).await {
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
                    let _ = self.limits.release_slots(&stopped).await;
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
            match self.limits.renew_slots(&slots, lease).await {
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
    async fn probe_until_closed(&self, stop: &mut watch::Receiver<bool>) {
        let mut wait = PROBE_MIN;
        loop {
            if pause(stop, wait).await {
                return;
            }
            match self.scanner.check().await {
                Err(err) if task::scan_failure_class(&err).is_scanner_outage() => {
                    tracing::info!(error = %err, next_probe = ?(wait * 2).min(PROBE_MAX), "scanner still unavailable");
                    wait = (wait * 2).min(PROBE_MAX);
                }
                // Any answer that is not an outage means the scanner is back.
                _ => {
                    self.breaker.close();
                    return;
                }
            }
        }
    }
}

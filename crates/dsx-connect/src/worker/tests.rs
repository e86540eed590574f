//! The worker's decisions, one task at a time, on a real embedded store and the built-in
//! scanner, with a scripted connector in place of HTTP.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use dsx_model::{Connector, FailureClass, ScanRequest};
use dsx_store::{Delivery, EmbeddedStore, JobStatus, Jobs, QueuedTask, Results, ScanQueue, SecretCodec};
use serde_json::{json, Value};
use uuid::Uuid;

use super::task::Settled;
use super::*;

/// What the scripted connector does for an item, by location.
#[derive(Clone)]
enum Item {
    Bytes(&'static [u8]),
    Fails(FailureClass),
}

/// A connector that answers from a script and counts the calls it got.
struct ScriptedConnector {
    items: HashMap<&'static str, Item>,
    action: Mutex<Result<ActionReply, IoFailure>>,
    reads: Mutex<Vec<String>>,
    actions: Mutex<Vec<String>>,
}

impl ScriptedConnector {
    fn new(items: &[(&'static str, Item)]) -> Arc<Self> {
        Arc::new(Self {
            items: items.iter().cloned().collect(),
            action: Mutex::new(Ok(ActionReply { status: 200, body: json!({"status": "success", "message": "moved"}) })),
            reads: Mutex::default(),
            actions: Mutex::default(),
        })
    }
    fn reads(&self) -> usize {
        self.reads.lock().unwrap().len()
    }
    fn actions(&self) -> usize {
        self.actions.lock().unwrap().len()
    }
}

#[async_trait]
impl ConnectorIo for ScriptedConnector {
    async fn connector(&self, uuid: Uuid) -> Option<Connector> {
        let mut connector: Connector =
            serde_json::from_value(json!({"uuid": uuid, "name": "scripted", "url": "http://scripted/c"})).ok()?;
        connector.uuid = uuid;
        Some(connector)
    }

    async fn read_file(&self, _: Uuid, request: &ScanRequest) -> Result<ByteStream, IoFailure> {
        self.reads.lock().unwrap().push(request.location.clone());
        match self.items.get(request.location.as_str()) {
            Some(Item::Bytes(b)) => Ok(Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(b))]))),
            Some(Item::Fails(class)) => Err(IoFailure::new(*class, format!("scripted {class}"))),
            None => Err(IoFailure::new(FailureClass::ConnectorClient, "read_file: 404 no such item")),
        }
    }

    async fn item_action(&self, _: Uuid, request: &ScanRequest) -> Result<ActionReply, IoFailure> {
        self.actions.lock().unwrap().push(request.location.clone());
        self.action.lock().unwrap().clone()
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<EmbeddedStore>,
    io: Arc<ScriptedConnector>,
    worker: Worker,
}

fn setup(items: &[(&'static str, Item)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("store.redb"), SecretCodec::plain()).unwrap());
    let io = ScriptedConnector::new(items);
    let worker = Worker {
        queue: store.clone(),
        results: store.clone(),
        jobs: store.clone(),
        limits: store.clone(),
        events: store.clone(),
        scanner: Arc::new(dsx_scanner::BuiltinScanner::new()),
        connectors: io.clone(),
        breaker: Arc::new(Breaker::new(3)),
        metrics: Arc::new(crate::metrics::Metrics::default()),
        syslog: None,
        settings: WorkerSettings {
            max_inflight: 4,
            lease: Duration::from_secs(30),
            drain: Duration::from_secs(1),
            breaker_threshold: 3,
            max_retries: 2,
            retry_base: Duration::from_millis(1),
            max_file_size: 1 << 20,
            results_retain: 100,
        },
        consumer: "unit".into(),
    };
    Setup { _dir: dir, store, io, worker }
}

impl Setup {
    /// Queue one item in `job` and claim it.
    async fn claim(&self, location: &str, job: &str) -> Delivery {
        self.enqueue(location, job).await;
        self.next().await
    }

    async fn enqueue(&self, location: &str, job: &str) {
        let task = QueuedTask {
            task_id: Uuid::new_v4().to_string(),
            connector_uuid: Uuid::nil(),
            job_id: job.into(),
            request: ScanRequest::new(location, location),
            enqueued_at: dsx_store::now_micros() / 1_000_000,
            enqueued_at_us: dsx_store::now_micros(),
        };
        self.store.enqueue_scans(&[task]).await.unwrap().unwrap();
    }

    /// The next due delivery (waits for a retry's delay).
    async fn next(&self) -> Delivery {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let mut d = self.store.claim_scans("unit", 1, Duration::from_secs(30)).await.unwrap();
            if let Some(delivery) = d.pop() {
                return delivery;
            }
            assert!(std::time::Instant::now() < deadline, "a task is due");
            self.store.wait_for_tasks(Duration::from_millis(200)).await.unwrap();
        }
    }

    async fn process(&self, delivery: Delivery) -> Settled {
        self.worker.process(delivery, &AtomicBool::new(false)).await
    }

    async fn result(&self, delivery: &Delivery) -> Value {
        let stored = self.store.get_result(&delivery.task.task_id).await.unwrap().expect("a stored result");
        serde_json::to_value(stored).unwrap()
    }
}

#[tokio::test]
async fn a_clean_item_is_read_scanned_and_stored_with_its_timings() {
    let s = setup(&[("clean.txt", Item::Bytes(b"hello"))]);
    let d = s.claim("clean.txt", "job-1").await;
    assert_eq!(s.process(d.clone()).await, Settled::Completed);
    let result = s.result(&d).await;
    assert_eq!(result["verdict"]["verdict"], "Benign");
    assert_eq!(result["status"], "scanned");
    assert_eq!(result["scan_request"]["connector"]["name"], "scripted", "the registered model is shown");
    for stage in ["dsxconnect_queue_wait_us", "dsxconnect_claim_to_result_us", "dsxconnect_read_scan_us"] {
        assert!(result["verdict"][stage].is_u64(), "{stage} in {result}");
    }
    assert_eq!((s.io.reads(), s.io.actions()), (1, 0));
    assert_eq!(s.store.scan_queue_len().await.unwrap(), 0, "acked");
}

#[tokio::test]
async fn a_malicious_item_is_remediated() {
    let s = setup(&[("bad.exe", Item::Bytes(dsx_scanner::EICAR))]);
    let d = s.claim("bad.exe", "job-1").await;
    assert_eq!(s.process(d.clone()).await, Settled::Completed);
    let result = s.result(&d).await;
    assert_eq!(result["verdict"]["verdict"], "Malicious");
    assert_eq!(result["status"], "action succeeded");
    assert_eq!(result["item_action"]["message"], "moved");
    assert_eq!(s.io.actions(), 1);
}

#[tokio::test]
async fn a_failed_remediation_is_dead_lettered_with_the_verdict_kept() {
    let s = setup(&[("bad.exe", Item::Bytes(dsx_scanner::EICAR))]);
    *s.io.action.lock().unwrap() = Ok(ActionReply {
        status: 200,
        body: json!({"status": "error", "message": "permission denied", "error_code": "forbidden"}),
    });
    let d = s.claim("bad.exe", "job-1").await;
    assert_eq!(s.process(d.clone()).await, Settled::DeadLettered);
    let result = s.result(&d).await;
    assert_eq!(
        (result["verdict"]["verdict"].as_str(), result["status"].as_str()),
        (Some("Malicious"), Some("action attempted, but failed"))
    );
    let letters = s.store.dead_letters(0, 10).await.unwrap();
    assert!(letters[0].reason.starts_with("item_action: "), "{}", letters[0].reason);
    assert_eq!(s.worker.metrics.remediation_failures.get(), 1);
}

#[tokio::test]
async fn a_transient_failure_is_retried_then_dead_lettered_when_attempts_run_out() {
    let s = setup(&[("busy.txt", Item::Fails(FailureClass::ConnectorBusy))]);
    let d = s.claim("busy.txt", "job-1").await;
    assert_eq!(s.process(d).await, Settled::Retried);
    let d = s.next().await;
    assert_eq!(d.attempt, 2, "a retry spends an attempt");
    assert_eq!(s.process(d).await, Settled::Retried);
    let d = s.next().await;
    assert_eq!(d.attempt, 3);
    assert_eq!(s.process(d.clone()).await, Settled::DeadLettered, "max_retries = 2");
    let letters = s.store.dead_letters(0, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].reason.starts_with("connector_busy: "), "{}", letters[0].reason);
    assert_eq!(s.result(&d).await["status"], "not scanned");
    assert_eq!(s.io.reads(), 3);
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_at_once() {
    let s = setup(&[]);
    let d = s.claim("gone.txt", "job-1").await;
    assert_eq!(s.process(d.clone()).await, Settled::DeadLettered);
    let letters = s.store.dead_letters(0, 10).await.unwrap();
    assert!(letters[0].reason.starts_with("connector_client: read_file: 404"), "{}", letters[0].reason);
    assert_eq!(s.result(&d).await["status"], "not scanned");
}

#[tokio::test]
async fn a_paused_jobs_task_is_deferred_without_spending_an_attempt() {
    let s = setup(&[("a.txt", Item::Bytes(b"a"))]);
    s.enqueue("a.txt", "job-p").await;
    s.store.set_job_status("job-p", JobStatus::Paused).await.unwrap();
    let d = s.next().await;
    assert_eq!(d.job_status, Some(JobStatus::Paused));
    assert_eq!(s.process(d.clone()).await, Settled::Deferred);
    assert_eq!(s.io.reads(), 0, "nothing read while paused");
    s.store.set_job_status("job-p", JobStatus::Running).await.unwrap();
    let again = s.next().await;
    assert_eq!((again.task.task_id.as_str(), again.attempt), (d.task.task_id.as_str(), d.attempt));
    assert_eq!(s.process(again).await, Settled::Completed);
    assert_eq!(s.io.reads(), 1);
}

#[tokio::test]
async fn a_cancelled_jobs_task_is_recorded_not_scanned_without_reading() {
    let s = setup(&[("a.txt", Item::Bytes(b"a"))]);
    s.enqueue("a.txt", "job-c").await;
    s.store.set_job_status("job-c", JobStatus::Cancelled).await.unwrap();
    let d = s.next().await;
    assert_eq!(s.process(d.clone()).await, Settled::Completed);
    assert_eq!(s.result(&d).await["status"], "not scanned");
    assert_eq!(s.io.reads(), 0);
    assert_eq!(s.store.scan_queue_len().await.unwrap(), 0);
}

#[tokio::test]
async fn a_redelivered_task_with_a_result_is_only_acked() {
    let s = setup(&[("a.txt", Item::Bytes(b"a"))]);
    let d = s.claim("a.txt", "job-1").await;
    assert_eq!(s.process(d.clone()).await, Settled::Completed);
    // As if the ack had been lost: the same delivery, claimed again with its result present.
    let redelivered = Delivery { has_result: true, ..d };
    assert_eq!(s.process(redelivered).await, Settled::Skipped);
    assert_eq!(s.io.reads(), 1, "not read again");
    assert_eq!(s.store.stats().await.unwrap().get("files_scanned"), Some(&1));
}

#[tokio::test]
async fn a_scanner_outage_opens_the_breaker_and_defers() {
    let s = setup(&[("a.txt", Item::Bytes(b"a"))]);
    let mut worker_settings = s.worker.settings.clone();
    worker_settings.max_retries = 10;
    let worker = Worker {
        scanner: Arc::new(dsx_scanner::DsxaClient::new(dsx_scanner::DsxaConfig::new("http://127.0.0.1:9")).unwrap()),
        settings: worker_settings,
        breaker: Arc::new(Breaker::new(1)),
        ..clone_worker(&s.worker)
    };
    let d = s.claim("a.txt", "job-1").await;
    assert_eq!(worker.process(d, &AtomicBool::new(false)).await, Settled::Deferred);
    assert!(worker.breaker.is_open());
}

fn clone_worker(w: &Worker) -> Worker {
    Worker {
        queue: w.queue.clone(),
        results: w.results.clone(),
        jobs: w.jobs.clone(),
        limits: w.limits.clone(),
        events: w.events.clone(),
        scanner: w.scanner.clone(),
        connectors: w.connectors.clone(),
        breaker: w.breaker.clone(),
        metrics: w.metrics.clone(),
        syslog: None,
        settings: w.settings.clone(),
        consumer: w.consumer.clone(),
    }
}

#[test]
fn retry_delay_doubles_to_the_cap_within_its_spread() {
    let base = Duration::from_secs(2);
    for (attempt, nominal) in [(1, 2.0), (2, 4.0), (4, 16.0), (20, 300.0)] {
        for _ in 0..50 {
            let d = retry_delay(base, attempt).as_secs_f64();
            assert!((nominal * 0.9..=nominal * 1.1).contains(&d), "attempt {attempt}: {d} s");
        }
    }
}

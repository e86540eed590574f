//! One storage trait for dsx-connect, two backends:
//! - [`RedisStore`]: production, shared by every API and worker replica; key names follow the
//!   Python 1.x layout where Python components read them.
//! - [`EmbeddedStore`]: a durable single-node store (redb) so a newcomer needs nothing installed.
//!
//! The conformance suite in `tests/conformance.rs` runs the same cases against both.

#![forbid(unsafe_code)]

mod codec;
mod embedded;
mod group_commit;
mod redis_store;

use std::time::Duration;

use async_trait::async_trait;
use dsx_model::{Connector, ScanRequest, StoredResult};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use codec::{SecretCodec, SecretKeyError};
pub use embedded::EmbeddedStore;
pub use group_commit::{GroupCommit, OwnedIntake, OwnedNonce};
pub use redis_store::{Namespace, RedisStore};

/// Every capability trait, for code that calls a concrete store's methods directly.
pub mod prelude {
    pub use crate::{Credentials, Events, Health, Jobs, Limits, Registry, Results, ScanQueue, Store};
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached (connection refused, timeout). Callers map this to 503.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Data in the store could not be decoded (or decrypted).
    #[error("store data corrupt: {0}")]
    Corrupt(String),
}

/// A connector's current DSX-HMAC credential. `Debug` never prints the secret.
#[derive(Clone)]
pub struct Credential {
    pub key_id: String,
    pub secret: SecretString,
    /// Unix seconds when it was minted.
    pub issued_at: u64,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

/// A key id resolved to its owner: the current key, or an older one inside its grace period.
#[derive(Clone, Debug)]
pub struct ResolvedKey {
    pub connector_uuid: Uuid,
    pub secret: SecretString,
}

/// Who registered a connector last and how (never the token itself).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationRecord {
    /// Unix seconds of the last successful registration or refresh.
    pub at: u64,
    /// `"hmac"` (signed refresh), `"enrollment_token"`, or `"open"` (auth disabled).
    pub via: String,
    /// Which configured token matched, e.g. `"DSXCONNECT_AUTH__ENROLLMENT_TOKENS[1]"`.
    pub token_slot: Option<String>,
    /// The address the registration came from.
    pub peer: Option<String>,
    /// An operator asked for a new key: the next signed refresh mints one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rotation_requested: bool,
    /// The current key was minted for an enrollment-token-only re-registration of a live
    /// connector (it had lost its key, or does not verify inbound calls). Such a key, and any
    /// key rotated from it, may not move the connector to another URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_key_id: Option<String>,
    /// Unix seconds when an operator revoked the connector: its uuid may not register again
    /// until an operator re-admits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

/// Why items cannot join a job.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobRefusal {
    #[error("job {job_id} belongs to another connector")]
    OtherOwner { job_id: String },
    #[error("job {job_id} is paused")]
    Paused { job_id: String },
    #[error("job {job_id} is cancelled")]
    Cancelled { job_id: String },
    /// Not about a job: the request's nonce ([`IntakeOnce::nonce`]) was used before, so the
    /// request is a replay and nothing was queued.
    #[error("the request's nonce was used before")]
    NonceReused,
}

/// What keeps one intake request from queuing anything twice.
#[derive(Clone, Copy, Debug, Default)]
pub struct IntakeOnce<'a> {
    /// The sender's name for this submission (`Idempotency-Key`, scoped to its connector):
    /// remembered for [`INTAKE_KEY_TTL`]; a repeat queues nothing and answers
    /// [`Enqueued::Repeat`].
    pub key: Option<&'a str>,
    /// The verified request's DSX-HMAC nonce, recorded in the same atomic step as the enqueue
    /// (one store round trip instead of two); a nonce seen before refuses the whole request
    /// with [`JobRefusal::NonceReused`].
    pub nonce: Option<Nonce<'a>>,
}

/// One intake request: the tasks it queues together and what keeps it from queuing twice.
#[derive(Clone, Copy, Debug)]
pub struct Intake<'a> {
    pub tasks: &'a [QueuedTask],
    pub once: IntakeOnce<'a>,
}

impl Intake<'_> {
    /// The jobs the tasks join, in order of first mention: (job id, owner, items). A job's
    /// owner is its first task's connector (one request comes from one connector).
    pub(crate) fn jobs(&self) -> Vec<(&str, Uuid, u64)> {
        let mut jobs: Vec<(&str, Uuid, u64)> = Vec::new();
        for task in self.tasks {
            match jobs.iter_mut().find(|(id, _, _)| *id == task.job_id) {
                Some(job) => job.2 += 1,
                None => jobs.push((&task.job_id, task.connector_uuid, 1)),
            }
        }
        jobs
    }
}

/// What became of one intake: queued (or a repeat), refused for a reason of its own, or
/// failed in the store.
pub type IntakeResult = StoreResult<Result<Enqueued, JobRefusal>>;

/// A verified request's nonce and how long the replay cache must remember it.
#[derive(Clone, Copy, Debug)]
pub struct Nonce<'a> {
    pub key_id: &'a str,
    pub nonce: &'a str,
    pub ttl: Duration,
}

/// What an enqueue did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// The tasks are on the queue now.
    Queued,
    /// The intake key was seen before (a retried request whose first answer was lost): nothing
    /// was queued again.
    Repeat,
}

/// How long an intake key is remembered: a sender retrying a request after this long would
/// queue it again.
pub const INTAKE_KEY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Lifecycle of a scan job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Running,
    Paused,
    Cancelled,
    Completed,
}

/// A scan job's counters (`<env>:dsx-connect:job:<id>` in Redis).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    /// The connector that enqueued into it first; only it may send `enqueue_done`.
    pub connector_uuid: Option<Uuid>,
    pub status: JobStatus,
    pub enqueued_count: u64,
    pub processed_count: u64,
    /// Set by `enqueue_done`: the connector's own count of what it enqueued.
    pub expected_total: Option<u64>,
    pub enqueue_done: bool,
    #[serde(default)]
    pub succeeded_count: u64,
    #[serde(default)]
    pub failed_count: u64,
    /// Folders or items the connector could not read during enumeration (its `enqueue_done`).
    #[serde(default)]
    pub enumeration_errors: u64,
    pub created_at: u64,
    pub updated_at: u64,
}

/// One accepted scan request waiting in the durable queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "QueuedTaskStored")]
pub struct QueuedTask {
    pub task_id: String,
    pub connector_uuid: Uuid,
    pub job_id: String,
    /// The request as accepted, without the connector model (the registry holds it).
    pub request: ScanRequest,
    /// Unix seconds of intake.
    pub enqueued_at: u64,
    /// Unix microseconds of intake, for the queue-wait timing (0 in tasks queued by older
    /// releases).
    #[serde(default)]
    pub enqueued_at_us: u64,
}

/// A queued task as stored: older releases kept the request as a JSON string (`payload`).
#[derive(Deserialize)]
struct QueuedTaskStored {
    task_id: String,
    connector_uuid: Uuid,
    job_id: String,
    #[serde(default)]
    request: Option<ScanRequest>,
    #[serde(default)]
    payload: Option<String>,
    enqueued_at: u64,
    #[serde(default)]
    enqueued_at_us: u64,
}

impl TryFrom<QueuedTaskStored> for QueuedTask {
    type Error = String;
    fn try_from(s: QueuedTaskStored) -> Result<Self, String> {
        let request = match (s.request, s.payload) {
            (Some(request), _) => request,
            (None, Some(payload)) => serde_json::from_str(&payload).map_err(|e| format!("queued request: {e}"))?,
            (None, None) => return Err("queued task without its request".into()),
        };
        Ok(Self {
            task_id: s.task_id,
            connector_uuid: s.connector_uuid,
            job_id: s.job_id,
            request,
            enqueued_at: s.enqueued_at,
            enqueued_at_us: s.enqueued_at_us,
        })
    }
}

/// A task handed to one worker. Until it is acked, retried or dead-lettered it belongs to
/// that worker; if the worker dies, another claims it once the lease has run out.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// Backend handle for ack/retry/dead-letter.
    pub id: String,
    pub task: QueuedTask,
    /// 1 on the first delivery; counts retries and re-deliveries after a crash.
    pub attempt: u32,
    /// The task's job status when it was claimed (`None`: no job record), read in the same
    /// step as the claim so the worker needs no extra round trip to honour pause and cancel.
    pub job_status: Option<JobStatus>,
    /// The task already had a result when it was claimed (a redelivery after a crash between
    /// storing the result and the ack): the worker only acks it.
    pub has_result: bool,
    /// Unix microseconds of the claim (the queue-wait timing ends here).
    pub claimed_at_us: u64,
}

/// A task that exhausted its retries (or cannot be processed), kept with the reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub task: QueuedTask,
    pub reason: String,
    pub retry_count: u32,
    pub failed_at: u64,
}

impl DeadLetter {
    /// The dead letter of a delivery that failed for good.
    pub fn of(delivery: &Delivery, reason: &str) -> Self {
        Self {
            task: delivery.task.clone(),
            reason: reason.to_owned(),
            retry_count: delivery.attempt.saturating_sub(1),
            failed_at: now_secs(),
        }
    }
}

/// A finished task's result, as the store keeps it. `json` is the ScanResult document; the
/// store adds its sequence `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultRecord {
    pub task_id: String,
    pub job_id: String,
    pub json: String,
    /// Verdict spelling (`Benign`, `Malicious`, …), counted into the stats.
    pub verdict: String,
    /// True when the task counts as succeeded for its job (scanned, remediation not failed).
    pub succeeded: bool,
    pub scan_time_us: u64,
    pub file_size: u64,
}

/// Size of a store's file, and how much of it holds data (the rest is free pages, reused for
/// new writes and given back to the disk by compaction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskUsage {
    pub file_bytes: u64,
    pub used_bytes: u64,
}

/// One fixed-window rate-limit observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateWindow {
    /// Hits in the current window, this one included.
    pub count: u64,
    /// Seconds until the window resets (at least 1).
    pub reset_in_secs: u64,
}

/// Reachability and size of the backend.
#[async_trait]
pub trait Health: Send + Sync + 'static {
    /// Which backend this is, for logs and `meta` ("redis" / "embedded").
    fn backend(&self) -> &'static str;
    /// Round-trip to the backend; `Unavailable` when it cannot answer.
    async fn ping(&self) -> StoreResult<()>;
    /// The store's file on local disk, for backends that have one (embedded); `None` for Redis,
    /// whose memory Redis itself reports.
    async fn disk_usage(&self) -> StoreResult<Option<DiskUsage>> {
        Ok(None)
    }
    /// Requests sent to a networked backend so far (a pipeline or a script counts once), for
    /// the metrics and the benchmark; `None` for the embedded store.
    fn round_trips(&self) -> Option<u64> {
        None
    }
}

/// The live registry (presence, refreshed by heartbeats), registration audit records and connectors' key/value state.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    async fn put_presence(&self, connector: &Connector, ttl: Duration) -> StoreResult<()>;
    async fn get_presence(&self, uuid: Uuid) -> StoreResult<Option<Connector>>;
    async fn list_presence(&self) -> StoreResult<Vec<Connector>>;
    /// True when a presence entry was removed.
    async fn delete_presence(&self, uuid: Uuid) -> StoreResult<bool>;
    async fn put_registration(&self, uuid: Uuid, record: &RegistrationRecord) -> StoreResult<()>;
    async fn get_registration(&self, uuid: Uuid) -> StoreResult<Option<RegistrationRecord>>;
    async fn delete_registration(&self, uuid: Uuid) -> StoreResult<()>;
    /// Every registration record (connectors known to the registry, revoked ones included).
    async fn list_registrations(&self) -> StoreResult<Vec<(Uuid, RegistrationRecord)>>;
    async fn put_state(&self, uuid: Uuid, ns: &str, key: &str, value: &str) -> StoreResult<()>;
    async fn get_state(&self, uuid: Uuid, ns: &str, key: &str) -> StoreResult<Option<String>>;
}

/// Connectors' DSX-HMAC keys and the replay cache. No TTL on keys: only revocation and grace expiry remove them.
#[async_trait]
pub trait Credentials: Send + Sync + 'static {
    /// Make `new` the current credential of `uuid`. The previous current key (if any) keeps
    /// resolving for `grace`, then stops (a zero grace revokes it at once).
    async fn install_credential(&self, uuid: Uuid, new: &Credential, grace: Duration) -> StoreResult<()>;
    async fn current_credential(&self, uuid: Uuid) -> StoreResult<Option<Credential>>;
    /// Resolve a key id (current, or previous within grace) to its connector and secret.
    async fn resolve_key(&self, key_id: &str) -> StoreResult<Option<ResolvedKey>>;
    /// Revoke every key of `uuid` (current and grace) and drop its credential record.
    /// True when anything existed.
    async fn revoke_credentials(&self, uuid: Uuid) -> StoreResult<bool>;
    /// Record `(key_id, nonce)` for `ttl`. True on first use, false when already seen.
    async fn remember_nonce(&self, key_id: &str, nonce: &str, ttl: Duration) -> StoreResult<bool>;
}

/// The durable scan queue: intake, leased deliveries, settlement, dead letters.
#[async_trait]
pub trait ScanQueue: Send + Sync + 'static {
    /// Durably append tasks to the scan queue and count them into their jobs, in one step:
    /// once this returns, the tasks survive any crash.
    /// Queue every task, or none: a batch is refused whole (`Ok(Err(_))`) when any of its jobs
    /// belongs to another connector or no longer takes items. The check and the write are one
    /// atomic step, so two connectors racing for a new job id cannot both join it.
    async fn enqueue_scans(&self, tasks: &[QueuedTask]) -> StoreResult<Result<(), JobRefusal>> {
        self.enqueue_scans_once(tasks, IntakeOnce::default()).await.map(|r| r.map(|_| ()))
    }
    /// [`Self::enqueue_scans`], at most once per intake key and per request nonce (both
    /// checked and recorded in the same atomic step as the enqueue): a request retried after
    /// its answer was lost (a crash between commit and reply) queues nothing twice, and a
    /// replayed one is refused.
    async fn enqueue_scans_once(&self, tasks: &[QueuedTask], once: IntakeOnce<'_>) -> IntakeResult {
        let mut answers = self.enqueue_intakes(&[Intake { tasks, once }]).await?;
        answers.pop().unwrap_or_else(|| Err(StoreError::Corrupt("the store answered no intake".into())))
    }
    /// Several independent intakes in one store round trip (one script on Redis, one write
    /// transaction on the embedded store), with the result of [`Self::enqueue_scans_once`]
    /// on each in order, as if they ran one after another: each is queued whole or refused
    /// alone, and a later one sees an earlier one's jobs, keys and nonce. Durable on return.
    /// An intake the store cannot check (a job record it cannot read) fails alone, with its
    /// own error; the outer error means nothing of the group was committed.
    /// The API's group commit ([`GroupCommit`]) sends concurrent requests this way.
    async fn enqueue_intakes(&self, intakes: &[Intake<'_>]) -> StoreResult<Vec<IntakeResult>>;
    /// Tasks waiting in the scan queue (consumed by the workers).
    async fn scan_queue_len(&self) -> StoreResult<u64>;
    /// Up to `max` tasks for `consumer`: due retries, tasks whose previous holder's lease ran
    /// out (a crashed worker), then new ones. Each is leased to `consumer` for `lease`.
    /// Every worker must use the same `lease`: Redis judges a holder dead by the claimer's.
    async fn claim_scans(&self, consumer: &str, max: usize, lease: Duration) -> StoreResult<Vec<Delivery>>;
    /// Wait until new tasks may be ready (an enqueue or a give-back since the call), or for
    /// `wait` at most, instead of polling an empty queue (Redis blocks on the stream; the
    /// embedded store is woken by the enqueue). Claims nothing, so an idle worker holds no
    /// in-flight slot while it waits; a retry that becomes due meanwhile is found by the next
    /// claim.
    async fn wait_for_tasks(&self, wait: Duration) -> StoreResult<()>;
    /// Done with a task (whatever its outcome): it leaves the queue.
    ///
    /// Claims, results and acks need not be durable on return (the embedded store commits
    /// them without waiting for its next fsync): a crash can only lose a suffix of them, and a
    /// task whose ack is lost is simply delivered again. Intake (`enqueue_scans`) and
    /// dead-lettering are durable on return.
    async fn ack_scan(&self, delivery: &Delivery) -> StoreResult<()>;
    /// Give a task back to be delivered again after `delay` (attempt + 1), atomically.
    async fn retry_scan(&self, delivery: &Delivery, delay: Duration) -> StoreResult<()>;
    /// Give a task back WITHOUT spending an attempt: it is delivered again after `delay` with
    /// the same attempt number (its job is paused, the scanner is down, the worker is stopping).
    async fn defer_scan(&self, delivery: &Delivery, delay: Duration) -> StoreResult<()>;
    /// Heartbeat of a live worker: every delivery `consumer` still holds is leased again for
    /// `lease` from now. Returns the ids of those it no longer holds (settled meanwhile, or taken
    /// over by another worker after the lease ran out): their holder must stop working on them.
    async fn renew_scans(&self, consumer: &str, deliveries: &[Delivery], lease: Duration) -> StoreResult<Vec<String>>;
    /// A task is done: store its result (when it has one, as `put_result`) and ack it. One
    /// transaction where the backend allows, so a crash never separates the two.
    async fn complete_scan(
        &self,
        delivery: &Delivery,
        record: Option<&ResultRecord>,
        retain: usize,
    ) -> StoreResult<Option<u64>>;
    /// Move a task to the dead-letter queue with the reason and store its result (a "not
    /// scanned" row, or the verdict of a malicious item left in place), once per task, in one
    /// atomic step: a job that shows completed has its dead letters, and a crash cannot keep
    /// one without the other. Nothing happens when the task is no longer this delivery's
    /// (another worker took it over). The new result's id, as [`Self::complete_scan`].
    async fn dead_letter_scan(
        &self,
        delivery: &Delivery,
        reason: &str,
        record: Option<&ResultRecord>,
        retain: usize,
    ) -> StoreResult<Option<u64>>;
    /// Dead letters of the scan queue, oldest first, `start..end` (end exclusive).
    async fn dead_letters(&self, start: usize, end: usize) -> StoreResult<Vec<DeadLetter>>;
    async fn dead_letter_count(&self) -> StoreResult<u64>;
    /// Put up to `max` dead letters back on the queue (attempts reset, same task id). Returns
    /// how many. A requeued item replaces its failed outcome, in the same atomic step: its
    /// stored failed result (the "not scanned" or failed-remediation row) leaves the by-task
    /// index, its job's result list and the newest-results list, and its job counts it as not
    /// processed again (`processed_count` and `failed_count` go down by one; a job that had
    /// completed because of it runs again). Its next result then counts once, as a
    /// redelivery would. The stats are event counters and keep the failed attempt.
    async fn requeue_dead_letters(&self, max: usize) -> StoreResult<u64>;
    async fn clear_dead_letters(&self) -> StoreResult<u64>;
}

/// Scan jobs: ownership, counters, status.
#[async_trait]
pub trait Jobs: Send + Sync + 'static {
    /// Create `job_id` for `owner` (an operator starting a full scan for that connector), or
    /// confirm `owner` already holds it; refused when another connector does.
    async fn claim_job(&self, job_id: &str, owner: Uuid) -> StoreResult<Result<(), JobRefusal>>;
    async fn get_job(&self, job_id: &str) -> StoreResult<Option<Job>>;
    /// Record `enqueue_done` (with the connector's total, when sent).
    async fn mark_enqueue_done(
        &self,
        job_id: &str,
        total: Option<u64>,
        enumeration_errors: Option<u64>,
    ) -> StoreResult<Option<Job>>;
    /// Every job, most recently updated first.
    async fn list_jobs(&self) -> StoreResult<Vec<Job>>;
    /// Forget every job record (not their queued tasks). Returns how many.
    async fn delete_jobs(&self) -> StoreResult<u64>;
    /// Set a job's status (pause/resume/cancel). `None` when the job does not exist.
    async fn set_job_status(&self, job_id: &str, status: JobStatus) -> StoreResult<Option<Job>>;
}

/// Stored results and the stats counters.
#[async_trait]
pub trait Results: Send + Sync + 'static {
    /// Store a result once per task id: a redelivered task never double-counts. Counts it into
    /// its job and the stats and completes the job when `enqueue_done` has arrived and every
    /// enqueued item is done. `None` when the task already had a result.
    async fn put_result(&self, record: &ResultRecord, retain: usize) -> StoreResult<Option<u64>>;
    /// The task's stored result. A row that does not decode is `Corrupt` (naming the task).
    async fn get_result(&self, task_id: &str) -> StoreResult<Option<StoredResult>>;
    /// Newest first; at most `limit`; only `job_id`'s when given. A row that does not decode
    /// is left out with a warning, so one bad row does not hide the others.
    async fn list_results(&self, limit: usize, job_id: Option<&str>) -> StoreResult<Vec<StoredResult>>;
    /// Counters: `files_scanned`, `<verdict>_count`, `total_scan_time_in_microseconds`, `total_file_size`.
    async fn stats(&self) -> StoreResult<std::collections::BTreeMap<String, u64>>;
    /// Forget every stored result and reset the stats. Returns how many results were listed.
    async fn clear_results(&self) -> StoreResult<u64>;
    /// Forget `job_id`'s results only (the rows, their task and job indexes); other jobs'
    /// results and the stats stay. Returns how many were removed.
    async fn clear_job_results(&self, job_id: &str) -> StoreResult<u64>;
}

/// Live notifications (SSE) across replicas.
#[async_trait]
pub trait Events: Send + Sync + 'static {
    /// Publish `message` on `channel` to every subscriber of every replica (best effort: a
    /// subscriber that is not listening misses it; the stored data stays the truth).
    async fn publish(&self, channel: &str, message: &str) -> StoreResult<()>;
    /// Whether a message on `channel` could reach anyone, so publishers can skip building it.
    /// With a shared store another replica may be listening, so the default is yes.
    fn may_have_listeners(&self, channel: &str) -> bool {
        let _ = channel;
        true
    }
    /// Messages published on `channel` from now on. The receiver ends when the store does.
    async fn subscribe(&self, channel: &str) -> StoreResult<tokio::sync::mpsc::Receiver<String>>;
}

/// Limits shared by every replica: the global in-flight cap and rate-limit windows.
#[async_trait]
pub trait Limits: Send + Sync + 'static {
    /// Take one of `max` scan slots shared by every worker replica. A holder that dies
    /// without releasing loses its slot after `lease`. False when all slots are taken.
    async fn acquire_slot(&self, slot: &str, max: usize, lease: Duration) -> StoreResult<bool>;
    async fn release_slot(&self, slot: &str) -> StoreResult<()>;
    /// Take up to `slots.len()` slots at once, in order: returns how many of `slots` (the
    /// first ones) are now held.
    async fn acquire_slots(&self, slots: &[String], max: usize, lease: Duration) -> StoreResult<usize> {
        let mut taken = 0;
        for slot in slots {
            if !self.acquire_slot(slot, max, lease).await? {
                break;
            }
            taken += 1;
        }
        Ok(taken)
    }
    /// Release several slots at once.
    async fn release_slots(&self, slots: &[String]) -> StoreResult<()> {
        for slot in slots {
            self.release_slot(slot).await?;
        }
        Ok(())
    }
    /// Heartbeat of a live holder: each slot it still holds expires `ttl` from now. Returns the
    /// slots it no longer held (expired and dropped).
    async fn renew_slots(&self, slots: &[String], ttl: Duration) -> StoreResult<Vec<String>>;
    /// Slots currently held.
    async fn slots_in_use(&self) -> StoreResult<u64>;
    /// Count one hit against `bucket` in a fixed window of `window`.
    async fn hit_rate_limit(&self, bucket: &str, window: Duration) -> StoreResult<RateWindow>;
}

/// Every capability: what a backend implements and what the server holds.
pub trait Store: Health + Registry + Credentials + ScanQueue + Jobs + Results + Events + Limits {}
impl<T: Health + Registry + Credentials + ScanQueue + Jobs + Results + Events + Limits> Store for T {}

/// How long a finished (completed or cancelled) job, its result list and its results' by-task
/// entries are kept after the job's last change, unless a store is given another retention
/// (`with_job_retention`). Running and paused jobs are never removed. Python 1.x keeps jobs for
/// 7 days too.
pub const DEFAULT_JOB_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The stats counter name for a verdict spelling.
pub fn verdict_counter(verdict: &str) -> String {
    let key = match verdict {
        "Unsupported File Type" => "unsupported",
        "Not Scanned" => "not_scanned",
        "Non Compliant" => "non_compliant",
        other => return format!("{}_count", other.to_ascii_lowercase().replace(' ', "_")),
    };
    format!("{key}_count")
}

impl Job {
    /// Completed once `enqueue_done` arrived and every item the server accepted is terminal,
    /// in whichever order those two things happen. The connector's `expected_total` is only
    /// recorded: Python connectors count an item before its `scan/request` succeeds (or send
    /// 0), so their claim must never hold a job open.
    pub fn is_complete(&self) -> bool {
        self.enqueue_done && self.processed_count >= self.enqueued_count
    }
}

/// The result document with the store's sequence `id` set. The worker's documents carry no
/// `id`, so it is written in front of the object's other fields without parsing them.
pub(crate) fn with_id(json: &str, id: u64) -> StoreResult<String> {
    if let Some(fields) = json.strip_prefix('{').filter(|_| !json.contains("\"id\"")) {
        let separator = if fields.trim_start().starts_with('}') { "" } else { "," };
        return Ok(format!("{{\"id\":{id}{separator}{fields}"));
    }
    let mut value: serde_json::Value = serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("id".into(), id.into());
    }
    Ok(value.to_string())
}

/// A stored result row, decoded (the one place rows are read back).
pub(crate) fn decode_result(row: &[u8]) -> StoreResult<StoredResult> {
    StoredResult::from_json(row).map_err(|e| StoreError::Corrupt(format!("stored result does not decode: {e}")))
}

/// A `Corrupt` error naming the task whose result it is.
pub(crate) fn in_task(err: StoreError, task_id: &str) -> StoreError {
    match err {
        StoreError::Corrupt(msg) => StoreError::Corrupt(format!("task {task_id}: {msg}")),
        other => other,
    }
}

/// Rows of a result list, decoded; one that does not decode is logged and left out.
pub(crate) fn decode_results<R: AsRef<[u8]>>(rows: impl IntoIterator<Item = R>) -> Vec<StoredResult> {
    rows.into_iter()
        .filter_map(|row| {
            decode_result(row.as_ref())
                .map_err(|err| tracing::warn!(error = %err, "skipping a stored result that does not decode"))
                .ok()
        })
        .collect()
}

/// Unix time in seconds.
pub(crate) fn now_secs() -> u64 {
    dsx_util::unix_now()
}

/// Unix time in microseconds.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Unix time in milliseconds.
pub(crate) fn now_millis() -> u64 {
    dsx_util::unix_now_millis()
}

/// Replay-cache entries live at least this long, whatever the caller asks for: a near-zero
/// TTL would make the replay check meaningless.
pub(crate) const MIN_NONCE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
mod tests {
    #[test]
    fn with_id_sets_the_id_with_or_without_parsing() {
        for (doc, want) in [
            (r#"{"a":1}"#, r#"{"id":7,"a":1}"#),
            ("{}", r#"{"id":7}"#),
            (r#"{"id":3,"a":1}"#, r#"{"a":1,"id":7}"#),
            (r#"{"a":{"id":3}}"#, r#"{"a":{"id":3},"id":7}"#),
        ] {
            let got: serde_json::Value = serde_json::from_str(&super::with_id(doc, 7).unwrap()).unwrap();
            assert_eq!(got, serde_json::from_str::<serde_json::Value>(want).unwrap(), "{doc}");
        }
    }
}

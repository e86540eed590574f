//! Embedded durable backend (redb): one file, survives restarts, needs nothing installed.
//! Single-node only: one process owns the file at a time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dsx_model::{Connector, StoredResult};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, StorageError, Table, TableDefinition,
    TableHandle, TransactionError, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    now_millis, now_secs, Credential, Credentials, DeadLetter, Delivery, DiskUsage, Enqueued, Events, Health, Intake,
    IntakeResult, Job, JobRefusal, JobStatus, Jobs, Limits, QueuedTask, RateWindow, RegistrationRecord, Registry,
    ResolvedKey, ResultRecord, Results, ScanQueue, SecretCodec, StoreError, StoreResult,
};

mod credentials;
mod events;
mod health;
mod jobs;
mod limits;
mod queue;
mod registry;
mod results;
mod upgrade;

// Expiring values are (expires at in unix ms, 0 = never; payload).
const PRESENCE: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("presence");
const CREDENTIALS: TableDefinition<&str, &[u8]> = TableDefinition::new("credentials");
/// key id → (expires at ms, KidEntry json). Current keys never expire; grace keys do.
const KEY_IDS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("key_ids");
const REGISTRATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("registrations");
const NONCES: TableDefinition<(&str, &str), u64> = TableDefinition::new("nonces");
const STATE: TableDefinition<(&str, &str, &str), &str> = TableDefinition::new("state");
/// The scan queue: sequence number → QueuedTask json.
const SCAN_QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("scan_queue");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// Per queued task: (visible again at ms, attempt, leased 0/1). Absent = new, visible now.
const QUEUE_STATE: TableDefinition<u64, (u64, u64, u64)> = TableDefinition::new("scan_queue_state");
/// Dead letters in arrival order: sequence → DeadLetter json.
const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// Results, each stored once: sequence → result json. A row lives while its job lists it or
/// it is among the newest `retain`.
const RESULT_ROWS: TableDefinition<u64, &[u8]> = TableDefinition::new("result_rows");
/// task id → sequence of its result.
const RESULT_SEQ_BY_TASK: TableDefinition<&str, u64> = TableDefinition::new("result_seq_by_task");
/// (job id, sequence) → task id: a job's results in order.
const JOB_RESULTS: TableDefinition<(&str, u64), &str> = TableDefinition::new("job_results");
/// The newest `retain` results: sequence → job id.
const RECENT_RESULTS: TableDefinition<u64, &str> = TableDefinition::new("recent_results");
/// Before results were stored once, each was kept three times in these; moved on open.
const OLD_RESULTS: TableDefinition<u64, &[u8]> = TableDefinition::new("results");
const OLD_RESULT_BY_TASK: TableDefinition<&str, &[u8]> = TableDefinition::new("result_by_task");
const OLD_RESULTS_BY_JOB: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("results_by_job");
const STATS: TableDefinition<&str, u64> = TableDefinition::new("stats");
/// Results whose job record is gone (deleted, or never existed): job id → when they expire
/// (unix ms), as a finished job's would.
const JOBLESS_RESULTS: TableDefinition<&str, u64> = TableDefinition::new("jobless_results");
/// Intake keys of enqueues already done: key → when it is forgotten (unix ms).
const INTAKE_KEYS: TableDefinition<&str, u64> = TableDefinition::new("intake_keys");
/// bucket → (window end in unix seconds, count).
const RATE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("rate");

/// How often expired rows are purged (piggybacks on writes).
const SWEEP_EVERY_MS: u64 = 30_000;
/// How often finished jobs past their retention are purged (by the flush thread, so it runs
/// on an idle store too; first at start). Never less often than the retention itself.
const PURGE_JOBS_EVERY_MS: u64 = 60_000;
/// Writes that nobody waits for (replay cache, rate counters) reach the disk within this, so a
/// crash forgets at most this much of the replay cache.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// The fault recorded when only redb's "previous I/O error" was seen so far.
const EARLIER_WRITE_FAILED: &str = "an earlier write failed";
/// After an I/O failure (a full disk), how often the flush thread tries to reopen the file.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// How long a reopen waits for in-flight calls to let go of the old handle.
const REOPEN_WAIT: Duration = Duration::from_secs(2);
/// The file is compacted (free pages given back to the disk) once the store has been idle
/// this long, the file is at least [`COMPACT_MIN_BYTES`] and less than half of it is in use.
/// Compaction holds the file exclusively, so it waits for a quiet moment.
/// A waiting claim looks at the queue at least this often (due retries, expired leases).
const RECHECK_IDLE: Duration = Duration::from_millis(100);
const COMPACT_IDLE: Duration = Duration::from_secs(30);
const COMPACT_MIN_BYTES: u64 = 8 << 20;

#[derive(Serialize, Deserialize)]
struct StoredCredential {
    key_id: String,
    secret: String,
    issued_at: u64,
}

#[derive(Serialize, Deserialize)]
struct KidEntry {
    uuid: Uuid,
    /// Sealed secret of a key in its grace period (the current key's lives in CREDENTIALS).
    grace_secret: Option<String>,
}

pub struct EmbeddedStore {
    inner: Arc<Inner>,
    /// The group-commit thread; stopped and joined on drop so the file is closed (and can be
    /// reopened) as soon as the store is gone.
    flusher: Option<std::thread::JoinHandle<()>>,
    /// Writes that may share a transaction (see [`BatchedWrite`]), and the thread that runs them.
    batched: Option<std::sync::mpsc::Sender<BatchedWrite>>,
    batch_writer: Option<std::thread::JoinHandle<()>>,
}

/// A write that may share its transaction with others queued at the same time: the hot
/// path's completions arrive dozens at once, and one redb commit for all of them costs about
/// what one costs alone. `run` may be called twice: when any write of a shared transaction
/// fails, the transaction is dropped and each write runs again in its own.
/// The body of a generic batched write (see [`BatchedWrite::Any`]).
type WriteFn = Box<dyn FnMut(&WriteTransaction) -> StoreResult<()> + Send>;

enum BatchedWrite {
    Any {
        run: WriteFn,
        done: Box<dyn FnOnce(StoreResult<()>) + Send>,
    },
    /// A finished task (`complete_scan`): those of one turn are stored together, so the
    /// tables, the stats and each job's counters are written once per turn, not once per task.
    Complete {
        seq: u64,
        record: Option<ResultRecord>,
        retain: usize,
        done: tokio::sync::oneshot::Sender<StoreResult<Option<u64>>>,
    },
}

/// Most writes in one shared transaction.
const BATCH_AT_MOST: usize = 64;

/// One turn of the write thread: every queued write in one transaction; if that fails, each
/// again in its own, so one failing write costs the others nothing.
fn run_batch(inner: &Inner, mut batch: Vec<BatchedWrite>) {
    let retention = inner.retention_ms();
    let shared = inner.write(false, |txn| {
        let mut completions = Vec::new();
        for write in batch.iter_mut() {
            match write {
                BatchedWrite::Any { run, .. } => run(txn)?,
                BatchedWrite::Complete { seq, record, retain, .. } => {
                    completions.push((*seq, record.as_ref(), *retain))
                }
            }
        }
        complete_many(txn, &completions, retention)
    });
    match shared {
        Ok(ids) => {
            let mut ids = ids.into_iter();
            for write in batch {
                match write {
                    BatchedWrite::Any { done, .. } => done(Ok(())),
                    BatchedWrite::Complete { done, .. } => {
                        let _ = done.send(Ok(ids.next().flatten()));
                    }
                }
            }
        }
        Err(err) if batch.len() == 1 => match batch.pop() {
            Some(BatchedWrite::Any { done, .. }) => done(Err(err)),
            Some(BatchedWrite::Complete { done, .. }) => {
                let _ = done.send(Err(err));
            }
            None => {}
        },
        // Nothing of the shared transaction was committed: each write runs alone.
        Err(_) => {
            for write in batch {
                match write {
                    BatchedWrite::Any { mut run, done } => done(inner.write(false, |txn| run(txn))),
                    BatchedWrite::Complete { seq, record, retain, done } => {
                        let alone =
                            inner.write(false, |txn| complete_many(txn, &[(seq, record.as_ref(), retain)], retention));
                        let _ = done.send(alone.map(|ids| ids.into_iter().next().flatten()));
                    }
                }
            }
        }
    }
}

/// Store results once per task id (a record whose task already has one is skipped), count
/// them into the stats and their jobs (the completion rule of `update_job`) once per call.
/// The ids of newly stored results, in order. `retain` caps the newest-results list.
fn store_results(
    txn: &WriteTransaction,
    items: &[(Option<&ResultRecord>, usize)],
    retention_ms: u64,
) -> StoreResult<Vec<Option<u64>>> {
    let mut ids = Vec::with_capacity(items.len());
    let mut jobs: std::collections::HashMap<&str, (u64, u64)> = Default::default();
    if items.iter().any(|(record, _)| record.is_some()) {
        let mut by_task = txn.open_table(RESULT_SEQ_BY_TASK).map_err(unavailable)?;
        let mut stats = txn.open_table(STATS).map_err(unavailable)?;
        let mut rows = txn.open_table(RESULT_ROWS).map_err(unavailable)?;
        let mut job_results = txn.open_table(JOB_RESULTS).map_err(unavailable)?;
        let mut recent = txn.open_table(RECENT_RESULTS).map_err(unavailable)?;
        let mut next = stats.get("results_seq").map_err(unavailable)?.map(|g| g.value()).unwrap_or(0);
        let mut counters: std::collections::BTreeMap<String, u64> = Default::default();
        let mut retain = usize::MAX;
        for (record, keep) in items {
            let Some(record) = record else {
                ids.push(None);
                continue;
            };
            if by_task.get(record.task_id.as_str()).map_err(unavailable)?.is_some() {
                ids.push(None);
                continue;
            }
            next += 1;
            let json = crate::with_id(&record.json, next)?;
            rows.insert(next, json.as_bytes()).map_err(unavailable)?;
            by_task.insert(record.task_id.as_str(), next).map_err(unavailable)?;
            job_results.insert((record.job_id.as_str(), next), record.task_id.as_str()).map_err(unavailable)?;
            recent.insert(next, record.job_id.as_str()).map_err(unavailable)?;
            for (name, n) in [
                ("files_scanned".to_owned(), 1),
                (crate::verdict_counter(&record.verdict), 1),
                ("total_scan_time_in_microseconds".to_owned(), record.scan_time_us),
                ("total_file_size".to_owned(), record.file_size),
            ] {
                *counters.entry(name).or_default() += n;
            }
            let counts = jobs.entry(record.job_id.as_str()).or_default();
            if record.succeeded {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
            retain = retain.min((*keep).max(1));
            ids.push(Some(next));
        }
        if !jobs.is_empty() {
            stats.insert("results_seq", next).map_err(unavailable)?;
            while recent.len().map_err(unavailable)? > retain as u64 {
                let Some((seq, job)) =
                    recent.pop_first().map_err(unavailable)?.map(|(k, v)| (k.value(), v.value().to_owned()))
                else {
                    break;
                };
                // Out of the newest list: the row stays only while its job still lists it.
                if job_results.get((job.as_str(), seq)).map_err(unavailable)?.is_none() {
                    rows.remove(seq).map_err(unavailable)?;
                }
            }
            for (name, n) in counters {
                let current = stats.get(name.as_str()).map_err(unavailable)?.map(|g| g.value()).unwrap_or(0);
                stats.insert(name.as_str(), current + n).map_err(unavailable)?;
            }
        }
    } else {
        ids.resize(items.len(), None);
    }
    for (job_id, (succeeded, failed)) in jobs {
        let job = update_job(txn, job_id, |job| {
            job.processed_count += succeeded + failed;
            job.succeeded_count += succeeded;
            job.failed_count += failed;
        })?;
        if job.is_none() && retention_ms > 0 {
            // Nothing will ever finish this job: its results expire as a finished job's.
            txn.open_table(JOBLESS_RESULTS)
                .map_err(unavailable)?
                .insert(job_id, now_millis() + retention_ms)
                .map_err(unavailable)?;
        }
    }
    Ok(ids)
}

/// Store the results of finished tasks (each once per task id) and ack them, with the stats
/// and each job's counters updated once for all of them. The ids of newly stored results, in
/// order (`None`: no result, or one was stored before).
fn complete_many(
    txn: &WriteTransaction,
    items: &[(u64, Option<&ResultRecord>, usize)],
    retention_ms: u64,
) -> StoreResult<Vec<Option<u64>>> {
    let records: Vec<_> = items.iter().map(|(_, record, retain)| (*record, *retain)).collect();
    let ids = store_results(txn, &records, retention_ms)?;
    let mut queue = txn.open_table(SCAN_QUEUE).map_err(unavailable)?;
    let mut state = txn.open_table(QUEUE_STATE).map_err(unavailable)?;
    for (seq, _, _) in items {
        queue.remove(*seq).map_err(unavailable)?;
        state.remove(*seq).map_err(unavailable)?;
    }
    Ok(ids)
}

/// Runs queued [`BatchedWrite`]s, as many as are waiting, in one transaction each turn.
fn spawn_batch_writer(
    inner: Arc<Inner>,
    queue: std::sync::mpsc::Receiver<BatchedWrite>,
) -> StoreResult<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("embedded-store-write".into())
        .spawn(move || {
            while let Ok(first) = queue.recv() {
                let mut batch = vec![first];
                while batch.len() < BATCH_AT_MOST {
                    match queue.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                run_batch(&inner, batch);
            }
        })
        .map_err(|e| unavailable(format!("cannot start the embedded store's write thread: {e}")))
}

/// Group commit. Every transaction commits without fsync (`Durability::None`, cheap); a caller
/// that needs its write durable waits until the flush thread's next durable commit, which makes
/// every earlier commit durable with one fsync. Concurrent writers (workers, intake) share that
/// fsync instead of queueing one each behind redb's single writer lock.
#[derive(Default)]
struct Durable {
    /// Sequence number of the last commit a finished flush covered.
    flushed: u64,
    /// Callers waiting for a flush.
    waiting: usize,
    /// The last flush failed: commits up to this sequence number may not be durable.
    failed: Option<(u64, String)>,
    /// Bumped when the file is reopened after an I/O failure: commits of an earlier epoch that
    /// were not flushed are lost with the old handle, so their callers get an error.
    epoch: u64,
    stopping: bool,
}

struct Inner {
    path: PathBuf,
    /// The open file. redb refuses every write after an I/O error until the file is reopened,
    /// so the flush thread swaps in a fresh handle once writes work again; `None` between
    /// closing the old handle and opening the new one.
    db: std::sync::RwLock<Option<Arc<Database>>>,
    /// Why the store is failing (the first I/O error), until a reopen succeeds. `ping` (and so
    /// readiness) reports it.
    fault: std::sync::Mutex<Option<String>>,
    /// When the flush thread last tried to reopen the file.
    last_reopen: std::sync::Mutex<Option<Instant>>,
    /// When the last write committed, and whether the file was looked at for compaction since.
    last_write: std::sync::Mutex<(Instant, bool)>,
    codec: SecretCodec,
    last_sweep_ms: AtomicU64,
    /// Finished jobs are kept this long after their last change, ms; 0 keeps them forever.
    job_retention_ms: AtomicU64,
    /// When finished jobs were last purged (0: not yet).
    last_purge_ms: AtomicU64,
    /// Sequence number of the last commit (durable or not).
    committed: AtomicU64,
    durable: std::sync::Mutex<Durable>,
    /// Wakes the flush thread when a caller waits.
    flush_wanted: std::sync::Condvar,
    /// Wakes callers when a flush finished.
    flush_done: std::sync::Condvar,
    /// Scan slots (one process owns the embedded store, so they live in memory): slot → expiry.
    slots: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Wakes workers waiting in a claim when tasks are queued or given back.
    work: tokio::sync::Notify,
    /// In-process notification channels (one process owns the embedded store).
    channels: std::sync::Mutex<std::collections::HashMap<String, tokio::sync::broadcast::Sender<String>>>,
}

impl Inner {
    fn channel(&self, name: &str) -> tokio::sync::broadcast::Sender<String> {
        let mut channels = self.channels.lock().expect("channels lock");
        channels.entry(name.to_owned()).or_insert_with(|| tokio::sync::broadcast::channel(1024).0).clone()
    }
}

fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

fn corrupt(err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

fn live(expires_ms: u64, now: u64) -> bool {
    expires_ms == 0 || expires_ms > now
}

fn expiry_ms(ttl: Duration) -> u64 {
    now_millis() + (ttl.as_millis() as u64).max(1)
}

/// Take the only handle out of `slot` for exclusive use (reopen, compaction), waiting briefly
/// for in-flight calls to let go of theirs; gives up (handle left in place) after
/// [`REOPEN_WAIT`].
fn take_exclusive(slot: &mut Option<Arc<Database>>) -> Option<Database> {
    let deadline = Instant::now() + REOPEN_WAIT;
    let mut db = slot.take()?;
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => return Some(db),
            Err(shared) if Instant::now() < deadline => {
                db = shared;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(shared) => {
                *slot = Some(shared);
                return None;
            }
        }
    }
}

/// One process owns the file, so at open every lease still held belongs to a process that is
/// gone (a crash, `kill -9`): its tasks are visible again at once instead of after their lease.
/// They still count as another attempt.
fn release_dead_leases(db: &Database) -> StoreResult<()> {
    let txn = db.begin_write().map_err(unavailable)?;
    let mut released = 0u64;
    {
        let mut state = txn.open_table(QUEUE_STATE).map_err(unavailable)?;
        let mut held = Vec::new();
        for row in state.iter().map_err(unavailable)? {
            let (seq, value) = row.map_err(unavailable)?;
            let (visible_at, attempt, leased) = value.value();
            if leased == 1 && visible_at > 0 {
                held.push((seq.value(), attempt));
            }
        }
        for (seq, attempt) in held {
            state.insert(seq, (0, attempt, 1)).map_err(unavailable)?;
            released += 1;
        }
    }
    txn.commit().map_err(unavailable)?;
    if released > 0 {
        tracing::info!(tasks = released, "tasks leased before the last stop are visible again");
    }
    Ok(())
}

/// Open (or create) the file and every table, so readers never meet a missing one.
fn open_database(path: &Path) -> StoreResult<Database> {
    let db = match Database::create(path) {
        // Written by an earlier release: upgraded once, then opened as usual.
        Err(redb::DatabaseError::UpgradeRequired(_)) => {
            upgrade::upgrade_v2_file(path)?;
            Database::create(path)
        }
        other => other,
    };
    let db = db.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => unavailable(format!(
            "data dir in use: {} is already open in this or another dsx-connect process",
            path.display()
        )),
        other => unavailable(format!("open {}: {other}", path.display())),
    })?;
    {
        let txn = db.begin_write().map_err(unavailable)?;
        txn.open_table(PRESENCE).map_err(unavailable)?;
        txn.open_table(CREDENTIALS).map_err(unavailable)?;
        txn.open_table(KEY_IDS).map_err(unavailable)?;
        txn.open_table(REGISTRATIONS).map_err(unavailable)?;
        txn.open_table(NONCES).map_err(unavailable)?;
        txn.open_table(STATE).map_err(unavailable)?;
        txn.open_table(RATE).map_err(unavailable)?;
        txn.open_table(SCAN_QUEUE).map_err(unavailable)?;
        txn.open_table(JOBS).map_err(unavailable)?;
        txn.open_table(QUEUE_STATE).map_err(unavailable)?;
        txn.open_table(DEAD_LETTERS).map_err(unavailable)?;
        txn.open_table(RESULT_ROWS).map_err(unavailable)?;
        txn.open_table(RESULT_SEQ_BY_TASK).map_err(unavailable)?;
        txn.open_table(JOB_RESULTS).map_err(unavailable)?;
        txn.open_table(RECENT_RESULTS).map_err(unavailable)?;
        txn.open_table(INTAKE_KEYS).map_err(unavailable)?;
        migrate_results(&txn)?;
        txn.open_table(STATS).map_err(unavailable)?;
        txn.open_table(JOBLESS_RESULTS).map_err(unavailable)?;
        txn.commit().map_err(unavailable)?;
    }
    Ok(db)
}

impl EmbeddedStore {
    /// Open (or create) the database file at `path`, creating its folder.
    pub fn open(path: &Path, codec: SecretCodec) -> StoreResult<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| unavailable(format!("create {}: {e}", parent.display())))?;
        }
        let db = open_database(path)?;
        release_dead_leases(&db)?;
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            db: std::sync::RwLock::new(Some(Arc::new(db))),
            fault: Default::default(),
            last_reopen: Default::default(),
            last_write: std::sync::Mutex::new((Instant::now(), false)),
            codec,
            last_sweep_ms: AtomicU64::new(now_millis()),
            job_retention_ms: AtomicU64::new(crate::DEFAULT_JOB_RETENTION.as_millis() as u64),
            last_purge_ms: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            durable: Default::default(),
            flush_wanted: Default::default(),
            flush_done: Default::default(),
            channels: Default::default(),
            slots: Default::default(),
            work: tokio::sync::Notify::new(),
        });
        let flusher = spawn_flusher(Arc::clone(&inner))?;
        let (batched, queue) = std::sync::mpsc::channel();
        let batch_writer = spawn_batch_writer(Arc::clone(&inner), queue)?;
        Ok(Self { inner, flusher: Some(flusher), batched: Some(batched), batch_writer: Some(batch_writer) })
    }

    /// Keep finished jobs, their results' per-job and per-task entries this long after the
    /// job's last change; `None` keeps them forever. A periodic sweep removes them.
    pub fn with_job_retention(self, retention: Option<Duration>) -> Self {
        let ms = retention.map(|r| r.as_millis() as u64).unwrap_or(0);
        self.inner.job_retention_ms.store(ms, Ordering::Relaxed);
        // Sweep with the new setting at the flush thread's next turn.
        self.inner.last_purge_ms.store(0, Ordering::Relaxed);
        self
    }

    /// A point read, run on the calling thread: a redb read transaction takes microseconds
    /// and never waits for the writer, so handing it to the blocking pool would cost more
    /// (two thread switches) than it saves. Scans and writes still go through [`Self::run`].
    fn read_now<T>(&self, f: impl FnOnce(&Inner) -> StoreResult<T>) -> StoreResult<T> {
        f(&self.inner)
    }

    /// Make a queued task visible again after `delay` as `attempt` (if it is still queued).
    async fn requeue_later(
        &self,
        delivery: &Delivery,
        delay: Duration,
        attempt: u64,
        durable: bool,
    ) -> StoreResult<()> {
        let seq = parse_seq(&delivery.id)?;
        self.run(move |inner| {
            inner.write(durable, |txn| {
                let mut state = txn.open_table(QUEUE_STATE).map_err(unavailable)?;
                if txn.open_table(SCAN_QUEUE).map_err(unavailable)?.get(seq).map_err(unavailable)?.is_some() {
                    state.insert(seq, (now_millis() + delay.as_millis() as u64, attempt, 0)).map_err(unavailable)?;
                }
                Ok(())
            })
        })
        .await?;
        if delay.is_zero() {
            self.inner.work.notify_waiters();
        }
        Ok(())
    }

    /// A non-durable write that may share its transaction with others (see [`BatchedWrite`]).
    /// `f` must leave nothing behind when it fails, and may run twice.
    async fn write_batched<T: Send + 'static>(
        &self,
        mut f: impl FnMut(&Inner, &WriteTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let slot: Arc<std::sync::Mutex<Option<T>>> = Arc::default();
        let out = Arc::clone(&slot);
        let inner = Arc::clone(&self.inner);
        let write = BatchedWrite::Any {
            run: Box::new(move |txn| {
                let value = f(&inner, txn)?;
                *out.lock().expect("batched result lock") = Some(value);
                Ok(())
            }),
            done: Box::new(move |result| {
                let result = result.map(|()| slot.lock().expect("batched result lock").take().expect("set by run"));
                let _ = answer.send(result);
            }),
        };
        let queue = self.batched.as_ref().ok_or_else(|| unavailable("store closed"))?;
        queue.send(write).map_err(|_| unavailable("store closed"))?;
        answered.await.map_err(|_| unavailable("the store's write thread stopped"))?
    }

    /// A finished task's result (if any) and its ack, in the write thread's next shared
    /// transaction (see [`complete_many`]).
    async fn complete_batched(
        &self,
        seq: u64,
        record: Option<ResultRecord>,
        retain: usize,
    ) -> StoreResult<Option<u64>> {
        let (done, answered) = tokio::sync::oneshot::channel();
        let queue = self.batched.as_ref().ok_or_else(|| unavailable("store closed"))?;
        queue.send(BatchedWrite::Complete { seq, record, retain, done }).map_err(|_| unavailable("store closed"))?;
        answered.await.map_err(|_| unavailable("the store's write thread stopped"))?
    }

    /// Run blocking redb work off the async runtime.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| unavailable(format!("store task failed: {e}")))?
    }
}

impl Inner {
    /// A write transaction. With `durable`, returns once the write is on disk (group commit,
    /// see [`Durable`]); without (replay cache, rate counters), within [`FLUSH_EVERY`].
    fn write<T>(&self, durable: bool, f: impl FnOnce(&WriteTransaction) -> StoreResult<T>) -> StoreResult<T> {
        let (out, seq, epoch) = {
            // The handle is held only for the transaction, never while waiting for the flush
            // (a reopen waits for every handle to be let go).
            let db = self.db()?;
            let epoch = self.durable.lock().expect("durable lock").epoch;
            // After some I/O failures redb asserts (panics) in the next commit instead of
            // answering an error; contained here, it is a fault like the error itself.
            let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut txn = db.begin_write().map_err(unavailable)?;
                txn.set_durability(Durability::None).map_err(unavailable)?;
                let out = f(&txn)?;
                self.maybe_sweep(&txn)?;
                txn.commit().map_err(unavailable)?;
                Ok(out)
            }))
            .unwrap_or_else(|_| Err(unavailable("the store refused a commit after an I/O error")));
            let out = match attempt {
                Ok(out) => out,
                Err(err) => {
                    self.check_file(&db, &err);
                    return Err(self.explain(err));
                }
            };
            *self.last_write.lock().expect("last write lock") = (Instant::now(), false);
            // redb runs one write transaction at a time, so this numbers commits in order.
            (out, self.committed.fetch_add(1, Ordering::AcqRel) + 1, epoch)
        };
        if durable {
            self.wait_durable(seq, epoch)?;
        }
        Ok(out)
    }

    /// The open file, or why there is none right now.
    fn db(&self) -> StoreResult<Arc<Database>> {
        if let Some(db) = &*self.db.read().expect("db lock") {
            return Ok(Arc::clone(db));
        }
        Err(self.fault().map(unavailable).unwrap_or_else(|| unavailable("embedded store is reopening")))
    }

    /// The I/O failure the store is recovering from, as callers and readiness see it.
    fn fault(&self) -> Option<String> {
        self.fault.lock().expect("fault lock").as_ref().map(|reason| {
            format!("embedded store write failed ({reason}); it recovers by itself once the disk accepts writes again")
        })
    }

    /// While the store is failing, say so instead of redb's "previous I/O error".
    fn explain(&self, err: StoreError) -> StoreError {
        match self.fault() {
            Some(fault) => unavailable(fault),
            None => err,
        }
    }

    /// After a failed write: if redb now refuses every write (it does after any I/O error),
    /// record the fault so the flush thread reopens the file and readiness reports it.
    fn check_file(&self, db: &Database, err: &StoreError) {
        if let Err(TransactionError::Storage(StorageError::PreviousIo)) = db.begin_write() {
            let (StoreError::Unavailable(reason) | StoreError::Corrupt(reason)) = err;
            // Concurrent writers see the root cause (e.g. "No space left on device") or only
            // redb's "previous I/O error"; whichever arrives first, the root cause is kept.
            let echo = reason.contains(&StorageError::PreviousIo.to_string());
            let recorded = {
                let mut fault = self.fault.lock().expect("fault lock");
                let better = match fault.as_deref() {
                    None => true,
                    Some(known) => !echo && known == EARLIER_WRITE_FAILED,
                };
                if better {
                    *fault = Some(if echo { EARLIER_WRITE_FAILED.to_owned() } else { reason.clone() });
                }
                better && !echo
            };
            if recorded {
                tracing::error!(path = %self.path.display(), error = %reason, "embedded store write failed; reopening it once the disk accepts writes");
            }
        }
    }

    /// Reopen the file after an I/O failure (redb refuses writes until then). Waits briefly
    /// for in-flight calls to let go of the old handle; `false` when the file cannot be opened
    /// yet (still no space), to be tried again.
    fn reopen(&self) -> bool {
        let mut slot = self.db.write().expect("db lock");
        if slot.is_some() {
            match take_exclusive(&mut slot) {
                Some(db) => drop(db),
                None => return false,
            }
        }
        match open_database(&self.path) {
            Ok(db) => {
                *slot = Some(Arc::new(db));
                drop(slot);
                *self.fault.lock().expect("fault lock") = None;
                {
                    let mut state = self.durable.lock().expect("durable lock");
                    let lost = self.committed.load(Ordering::Acquire);
                    if lost > state.flushed {
                        state.failed = Some((lost, "the store was reopened after an I/O error".into()));
                    }
                    state.epoch += 1;
                    self.flush_done.notify_all();
                }
                tracing::info!(path = %self.path.display(), "embedded store reopened; writes work again");
                true
            }
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "embedded store still cannot be reopened; retrying");
                false
            }
        }
    }

    /// Give free pages back to the disk: compacts the file when at least half of it is free
    /// (acked tasks, expired results and jobs leave free pages behind; redb reuses them but
    /// shrinks the file only by a free tail). Returns whether it compacted. Holds the file
    /// exclusively meanwhile, so the flush thread only calls it when the store is idle.
    fn compact_if_sparse(&self, min_bytes: u64) -> StoreResult<bool> {
        let DiskUsage { file_bytes: len, used_bytes: used } = self.disk_usage()?;
        if len < min_bytes || used.saturating_mul(2) > len {
            return Ok(false);
        }
        let mut slot = self.db.write().expect("db lock");
        let Some(mut db) = take_exclusive(&mut slot) else { return Ok(false) };
        let started = Instant::now();
        // A durable commit first: redb counts unflushed non-durable commits as readers, and
        // refuses to compact while any exist.
        let mut result = db
            .begin_write()
            .map_err(unavailable)
            .and_then(|txn| txn.commit().map_err(unavailable))
            .and_then(|()| db.compact().map_err(unavailable));
        // Pages freed by one pass are reusable only after its commits: a second and third
        // pass move what the first could not, while they still make progress.
        for _ in 0..2 {
            if !matches!(result, Ok(true)) {
                break;
            }
            match db.compact().map_err(unavailable) {
                Ok(false) => break,
                other => result = other,
            }
        }
        *slot = Some(Arc::new(db));
        drop(slot);
        let compacted = result?;
        let after = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        tracing::info!(before = len, after, took_ms = started.elapsed().as_millis() as u64, "embedded store compacted");
        Ok(compacted)
    }

    /// The file's size and the bytes its allocated pages hold. (redb reports page statistics
    /// from a write transaction; it is aborted at once.)
    fn disk_usage(&self) -> StoreResult<DiskUsage> {
        let file_bytes = std::fs::metadata(&self.path).map_err(unavailable)?.len();
        let db = self.db()?;
        let txn = db.begin_write().map_err(unavailable)?;
        let stats = txn.stats().map_err(unavailable)?;
        txn.abort().map_err(unavailable)?;
        Ok(DiskUsage { file_bytes, used_bytes: stats.allocated_pages() * stats.page_size() as u64 })
    }

    /// Called by the flush thread: compact once per idle spell.
    fn maybe_compact(&self) {
        {
            let mut last = self.last_write.lock().expect("last write lock");
            if last.1 || last.0.elapsed() < COMPACT_IDLE {
                return;
            }
            last.1 = true;
        }
        match self.compact_if_sparse(COMPACT_MIN_BYTES) {
            // Progress, and perhaps more to give back: look again at the next turn (it stops
            // once less than half of the file is free).
            Ok(true) => self.last_write.lock().expect("last write lock").1 = false,
            Ok(false) => {}
            // A read still running: try again at the next turn.
            Err(StoreError::Unavailable(reason)) if reason.contains("transaction") => {
                self.last_write.lock().expect("last write lock").1 = false;
            }
            Err(err) => tracing::warn!(error = %err, "embedded store compaction failed; the file keeps its size"),
        }
    }

    /// Called by the flush thread: reopen the file when a fault is recorded and a try is due.
    fn maybe_reopen(&self) {
        if self.fault.lock().expect("fault lock").is_none() {
            return;
        }
        {
            let mut last = self.last_reopen.lock().expect("reopen lock");
            if last.is_some_and(|at| at.elapsed() < REOPEN_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        self.reopen();
    }

    fn wait_durable(&self, seq: u64, epoch: u64) -> StoreResult<()> {
        let mut state = self.durable.lock().expect("durable lock");
        state.waiting += 1;
        self.flush_wanted.notify_one();
        let result = loop {
            if state.epoch != epoch {
                break Err(unavailable("the store was reopened after an I/O error before the write reached the disk"));
            }
            if state.flushed >= seq {
                break Ok(());
            }
            if let Some((failed, err)) = &state.failed {
                if *failed >= seq {
                    break Err(unavailable(format!("commit not durable: {err}")));
                }
            }
            if state.stopping {
                break Err(unavailable("store closed before the commit was durable"));
            }
            state = self.flush_done.wait(state).expect("durable lock");
        };
        state.waiting -= 1;
        result
    }

    /// Make every earlier commit durable (an empty durable commit does it) and wake the
    /// callers waiting for it.
    fn flush(&self) {
        let target = self.committed.load(Ordering::Acquire);
        if self.durable.lock().expect("durable lock").flushed >= target {
            return;
        }
        let result = self.db().and_then(|db| {
            let result = db.begin_write().map_err(unavailable).and_then(|txn| txn.commit().map_err(unavailable));
            if let Err(err) = &result {
                self.check_file(&db, err);
            }
            result
        });
        {
            let mut state = self.durable.lock().expect("durable lock");
            match &result {
                Ok(()) => {
                    state.flushed = state.flushed.max(target);
                    state.failed = None;
                }
                Err(err) => state.failed = Some((target, err.to_string())),
            }
            self.flush_done.notify_all();
        }
        // Logged outside the lock: nothing that can fail or panic runs while it is held.
        if let Err(err) = result {
            // A known fault was logged once already; do not repeat it five times a second.
            if self.fault.lock().expect("fault lock").is_none() {
                tracing::warn!(error = %err, "embedded store flush failed");
            }
        }
    }

    /// Purge expired rows now and then, inside a transaction that is writing anyway.
    fn maybe_sweep(&self, txn: &WriteTransaction) -> StoreResult<()> {
        let now = now_millis();
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_EVERY_MS
            || self.last_sweep_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return Ok(());
        }
        txn.open_table(NONCES).map_err(unavailable)?.retain(|_, exp| exp > now).map_err(unavailable)?;
        txn.open_table(PRESENCE).map_err(unavailable)?.retain(|_, (exp, _)| live(exp, now)).map_err(unavailable)?;
        txn.open_table(KEY_IDS).map_err(unavailable)?.retain(|_, (exp, _)| live(exp, now)).map_err(unavailable)?;
        let now_s = now / 1000;
        txn.open_table(RATE).map_err(unavailable)?.retain(|_, (end, _)| end > now_s).map_err(unavailable)?;
        txn.open_table(INTAKE_KEYS).map_err(unavailable)?.retain(|_, exp| exp > now).map_err(unavailable)?;
        Ok(())
    }

    fn retention_ms(&self) -> u64 {
        self.job_retention_ms.load(Ordering::Relaxed)
    }

    /// Purge finished jobs past their retention when a purge is due (at start, then every
    /// [`PURGE_JOBS_EVERY_MS`] or the retention, whichever is shorter).
    fn maybe_purge_jobs(&self) {
        let retention = self.job_retention_ms.load(Ordering::Relaxed);
        if retention == 0 {
            return;
        }
        let now = now_millis();
        let every = PURGE_JOBS_EVERY_MS.min(retention).max(1000);
        if now.saturating_sub(self.last_purge_ms.load(Ordering::Relaxed)) < every {
            return;
        }
        self.last_purge_ms.store(now, Ordering::Relaxed);
        match self.write(false, |txn| purge_jobs_in(txn, retention, now)) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(jobs = n, "finished jobs past their retention removed"),
            Err(err) => tracing::warn!(error = %err, "could not purge finished jobs"),
        }
    }

    fn read_presence(&self, uuid: &str) -> StoreResult<Option<Connector>> {
        let txn = self.db()?.begin_read().map_err(unavailable)?;
        let table = txn.open_table(PRESENCE).map_err(unavailable)?;
        let Some(guard) = table.get(uuid).map_err(unavailable)? else { return Ok(None) };
        let (exp, json) = guard.value();
        if !live(exp, now_millis()) {
            return Ok(None);
        }
        serde_json::from_slice(json).map(Some).map_err(corrupt)
    }

    fn read_credential(&self, uuid: &str) -> StoreResult<Option<StoredCredential>> {
        let txn = self.db()?.begin_read().map_err(unavailable)?;
        credential_in(&txn.open_table(CREDENTIALS).map_err(unavailable)?, uuid)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue ends the write thread after what is queued.
        drop(self.batched.take());
        if let Some(thread) = self.batch_writer.take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.flusher.take() {
            self.inner.durable.lock().expect("durable lock").stopping = true;
            self.inner.flush_wanted.notify_all();
            let _ = thread.join();
        }
    }
}

/// The group-commit thread: flushes at once when a caller waits, else every [`FLUSH_EVERY`].
fn spawn_flusher(inner: Arc<Inner>) -> StoreResult<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("embedded-store-flush".into())
        .spawn(move || loop {
            {
                let state = inner.durable.lock().expect("durable lock");
                let (state, _) = inner
                    .flush_wanted
                    .wait_timeout_while(state, FLUSH_EVERY, |s| {
                        // Sleep unless someone waits for a commit that is not flushed yet.
                        let unflushed = inner.committed.load(Ordering::Acquire) > s.flushed;
                        !s.stopping && (s.waiting == 0 || !unflushed)
                    })
                    .expect("durable lock");
                if state.stopping {
                    drop(state);
                    inner.flush();
                    inner.flush_done.notify_all();
                    return;
                }
            }
            inner.flush();
            inner.maybe_reopen();
            inner.maybe_purge_jobs();
            inner.maybe_compact();
        })
        .map_err(|e| unavailable(format!("cannot start the embedded store's flush thread: {e}")))
}

/// Store one result once per task id and count it into the stats and its job.
fn put_result_in(
    txn: &WriteTransaction,
    record: &ResultRecord,
    retain: usize,
    retention_ms: u64,
) -> StoreResult<Option<u64>> {
    Ok(store_results(txn, &[(Some(record), retain)], retention_ms)?.pop().flatten())
}

/// Remove a job's result list and its results' by-task entries. Each row goes too, unless it
/// is still among the newest results; `drop_from_recent` takes it off that list as well
/// (clearing a job's results), so it always goes. Returns how many results the job listed.
fn remove_job_results(txn: &WriteTransaction, job_id: &str, drop_from_recent: bool) -> StoreResult<u64> {
    let mut job_results = txn.open_table(JOB_RESULTS).map_err(unavailable)?;
    let mut by_task = txn.open_table(RESULT_SEQ_BY_TASK).map_err(unavailable)?;
    let mut recent = txn.open_table(RECENT_RESULTS).map_err(unavailable)?;
    let mut rows = txn.open_table(RESULT_ROWS).map_err(unavailable)?;
    let mut listed = Vec::new();
    for row in job_results.range((job_id, 0)..=(job_id, u64::MAX)).map_err(unavailable)? {
        let (key, task) = row.map_err(unavailable)?;
        listed.push((key.value().1, task.value().to_owned()));
    }
    for (seq, task) in &listed {
        job_results.remove((job_id, *seq)).map_err(unavailable)?;
        by_task.remove(task.as_str()).map_err(unavailable)?;
        if drop_from_recent {
            recent.remove(*seq).map_err(unavailable)?;
        }
        if recent.get(*seq).map_err(unavailable)?.is_none() {
            rows.remove(*seq).map_err(unavailable)?;
        }
    }
    Ok(listed.len() as u64)
}

/// Files written before results were stored once keep them in three tables: move them into
/// the one-copy layout and drop the old tables (once; a no-op afterwards).
fn migrate_results(txn: &WriteTransaction) -> StoreResult<()> {
    let names: Vec<String> = txn.list_tables().map_err(unavailable)?.map(|t| t.name().to_owned()).collect();
    if !names.iter().any(|n| n == "results_by_job" || n == "results" || n == "result_by_task") {
        return Ok(());
    }
    {
        let mut rows = txn.open_table(RESULT_ROWS).map_err(unavailable)?;
        let mut by_task = txn.open_table(RESULT_SEQ_BY_TASK).map_err(unavailable)?;
        let mut job_results = txn.open_table(JOB_RESULTS).map_err(unavailable)?;
        let mut recent = txn.open_table(RECENT_RESULTS).map_err(unavailable)?;
        let field = |json: &[u8], name: &str| {
            serde_json::from_slice::<serde_json::Value>(json)
                .ok()
                .and_then(|d| d.get(name)?.as_str().map(str::to_owned))
        };
        if names.iter().any(|n| n == "results_by_job") {
            let old = txn.open_table(OLD_RESULTS_BY_JOB).map_err(unavailable)?;
            for row in old.iter().map_err(unavailable)? {
                let (key, json) = row.map_err(unavailable)?;
                let (job, seq) = key.value();
                let task = field(json.value(), "scan_request_task_id").unwrap_or_default();
                rows.insert(seq, json.value()).map_err(unavailable)?;
                by_task.insert(task.as_str(), seq).map_err(unavailable)?;
                job_results.insert((job, seq), task.as_str()).map_err(unavailable)?;
            }
        }
        if names.iter().any(|n| n == "results") {
            let old = txn.open_table(OLD_RESULTS).map_err(unavailable)?;
            for row in old.iter().map_err(unavailable)? {
                let (seq, json) = row.map_err(unavailable)?;
                let job = field(json.value(), "scan_job_id").unwrap_or_default();
                rows.insert(seq.value(), json.value()).map_err(unavailable)?;
                recent.insert(seq.value(), job.as_str()).map_err(unavailable)?;
            }
        }
    }
    for name in ["results", "result_by_task", "results_by_job"] {
        if names.iter().any(|n| n == name) {
            let deleted = match name {
                "results" => txn.delete_table(OLD_RESULTS),
                "result_by_task" => txn.delete_table(OLD_RESULT_BY_TASK),
                _ => txn.delete_table(OLD_RESULTS_BY_JOB),
            };
            deleted.map_err(unavailable)?;
        }
    }
    Ok(())
}

/// A dead letter goes back on the queue: its stored failed result leaves the by-task index,
/// its job's list and the newest-results list, and its job counts it as open again (a job
/// that completed because of it runs again).
fn undo_failed_outcome(txn: &WriteTransaction, task: &QueuedTask) -> StoreResult<()> {
    let seq = txn
        .open_table(RESULT_SEQ_BY_TASK)
        .map_err(unavailable)?
        .remove(task.task_id.as_str())
        .map_err(unavailable)?
        .map(|g| g.value());
    let Some(seq) = seq else { return Ok(()) };
    txn.open_table(JOB_RESULTS).map_err(unavailable)?.remove((task.job_id.as_str(), seq)).map_err(unavailable)?;
    txn.open_table(RECENT_RESULTS).map_err(unavailable)?.remove(seq).map_err(unavailable)?;
    txn.open_table(RESULT_ROWS).map_err(unavailable)?.remove(seq).map_err(unavailable)?;
    update_job(txn, &task.job_id, |job| {
        job.processed_count = job.processed_count.saturating_sub(1);
        job.failed_count = job.failed_count.saturating_sub(1);
        if job.status == JobStatus::Completed && !job.is_complete() {
            job.status = JobStatus::Running;
        }
    })?;
    Ok(())
}

/// Remove, in one transaction, every finished (completed or cancelled) job whose last change is
/// `retention_ms` old, with its per-job result rows and its results' by-task entries, and the
/// results of deleted jobs whose time is up. Running and paused jobs stay. The newest-results
/// list keeps its rows (it is trimmed to `retain`). Returns how many jobs went.
fn purge_jobs_in(txn: &WriteTransaction, retention_ms: u64, now_ms: u64) -> StoreResult<u64> {
    let mut expired = Vec::new();
    {
        let jobs = txn.open_table(JOBS).map_err(unavailable)?;
        for row in jobs.iter().map_err(unavailable)? {
            let (id, bytes) = row.map_err(unavailable)?;
            let Ok(job) = serde_json::from_slice::<Job>(bytes.value()) else { continue };
            let finished = matches!(job.status, JobStatus::Completed | JobStatus::Cancelled);
            if finished && job.updated_at.saturating_mul(1000).saturating_add(retention_ms) <= now_ms {
                expired.push(id.value().to_owned());
            }
        }
    }
    let removed = expired.len() as u64;
    {
        let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
        for id in &expired {
            jobs.remove(id.as_str()).map_err(unavailable)?;
        }
    }
    // Results whose job record is gone: due ones go; a job that exists again decides itself.
    {
        let jobs = txn.open_table(JOBS).map_err(unavailable)?;
        let mut jobless = txn.open_table(JOBLESS_RESULTS).map_err(unavailable)?;
        let mut due = Vec::new();
        for row in jobless.iter().map_err(unavailable)? {
            let (id, at) = row.map_err(unavailable)?;
            if at.value() <= now_ms {
                due.push(id.value().to_owned());
            }
        }
        for id in due {
            jobless.remove(id.as_str()).map_err(unavailable)?;
            if jobs.get(id.as_str()).map_err(unavailable)?.is_none() {
                expired.push(id);
            }
        }
    }
    if expired.is_empty() {
        return Ok(0);
    }
    for job_id in &expired {
        remove_job_results(txn, job_id, false)?;
    }
    Ok(removed)
}

/// A task leaves the queue.
fn ack_in(txn: &WriteTransaction, seq: u64) -> StoreResult<()> {
    txn.open_table(SCAN_QUEUE).map_err(unavailable)?.remove(seq).map_err(unavailable)?;
    txn.open_table(QUEUE_STATE).map_err(unavailable)?.remove(seq).map_err(unavailable)?;
    Ok(())
}

fn credential_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    uuid: &str,
) -> StoreResult<Option<StoredCredential>> {
    let value = table.get(uuid).map_err(unavailable)?;
    value.map(|g| serde_json::from_slice(g.value()).map_err(corrupt)).transpose()
}

/// Read-modify-write of one job inside a write transaction; completes it when it is done
/// (and still running). `None` when the job does not exist.
fn update_job(txn: &WriteTransaction, job_id: &str, change: impl FnOnce(&mut Job)) -> StoreResult<Option<Job>> {
    let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
    let existing = jobs.get(job_id).map_err(unavailable)?.map(|g| g.value().to_vec());
    let Some(bytes) = existing else { return Ok(None) };
    let mut job: Job = serde_json::from_slice(&bytes).map_err(corrupt)?;
    change(&mut job);
    job.updated_at = now_secs();
    if job.is_complete() && job.status == JobStatus::Running {
        job.status = JobStatus::Completed;
    }
    let bytes = serde_json::to_vec(&job).map_err(corrupt)?;
    jobs.insert(job_id, bytes.as_slice()).map_err(unavailable)?;
    Ok(Some(job))
}

fn new_job(job_id: &str, owner: Uuid, now: u64) -> Job {
    Job {
        job_id: job_id.to_owned(),
        connector_uuid: Some(owner),
        status: JobStatus::Running,
        enqueued_count: 0,
        processed_count: 0,
        succeeded_count: 0,
        failed_count: 0,
        expected_total: None,
        enumeration_errors: 0,
        enqueue_done: false,
        created_at: now,
        updated_at: now,
    }
}

/// Whether `owner` may add items to `job`.
fn job_takes(job: &Job, owner: Uuid) -> Result<(), JobRefusal> {
    let job_id = job.job_id.clone();
    if job.connector_uuid.is_some_and(|o| o != owner) {
        return Err(JobRefusal::OtherOwner { job_id });
    }
    match job.status {
        JobStatus::Paused => Err(JobRefusal::Paused { job_id }),
        JobStatus::Cancelled => Err(JobRefusal::Cancelled { job_id }),
        _ => Ok(()),
    }
}

fn ttl_ms_u64(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

fn parse_seq(id: &str) -> StoreResult<u64> {
    id.parse().map_err(|_| corrupt(format!("not an embedded queue id: {id}")))
}

fn put_json<V: Serialize>(table: &mut Table<&str, &[u8]>, key: &str, value: &V) -> StoreResult<()> {
    let bytes = serde_json::to_vec(value).map_err(corrupt)?;
    table.insert(key, bytes.as_slice()).map_err(unavailable)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn rows<K: redb::Key + 'static, V: redb::Value + 'static>(
        store: &EmbeddedStore,
        table: TableDefinition<K, V>,
    ) -> u64 {
        store.inner.db().unwrap().begin_read().unwrap().open_table(table).unwrap().len().unwrap()
    }

    #[tokio::test]
    async fn sweep_purges_expired_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("store.redb"), SecretCodec::plain()).unwrap();
        let uuid = Uuid::new_v4();
        let cred =
            |kid: &str| Credential { key_id: kid.into(), secret: SecretString::from("s".to_owned()), issued_at: 1 };
        store.put_presence(&Connector { uuid, ..Connector::default() }, Duration::from_millis(1)).await.unwrap();
        store.install_credential(uuid, &cred("old"), Duration::ZERO).await.unwrap();
        store.install_credential(uuid, &cred("new"), Duration::from_millis(1)).await.unwrap();
        store.remember_nonce("kid", "n", Duration::ZERO).await.unwrap();
        store.hit_rate_limit("bucket", Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            (rows(&store, PRESENCE), rows(&store, KEY_IDS), rows(&store, NONCES), rows(&store, RATE)),
            (1, 2, 1, 1)
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        store.inner.last_sweep_ms.store(0, Ordering::Relaxed);
        store.put_state(uuid, "ns", "k", "v").await.unwrap();
        assert_eq!(
            (rows(&store, PRESENCE), rows(&store, KEY_IDS), rows(&store, NONCES), rows(&store, RATE)),
            (0, 1, 0, 0)
        );
    }

    #[tokio::test]
    async fn compaction_gives_free_pages_back_to_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let store = EmbeddedStore::open(&path, SecretCodec::plain()).unwrap();
        let padding = "x".repeat(2000);
        for i in 0..4000 {
            let record = ResultRecord {
                task_id: format!("task-{i}"),
                job_id: "job".into(),
                json: format!(r#"{{"scan_request_task_id":"task-{i}","padding":"{padding}"}}"#),
                verdict: "Benign".into(),
                succeeded: true,
                scan_time_us: 1,
                file_size: 1,
            };
            store.put_result(&record, 10_000).await.unwrap();
        }
        let full = std::fs::metadata(&path).unwrap().len();
        assert!(full > 16 << 20, "4000 results of 2 KB: {full} bytes");
        store.clear_results().await.unwrap();
        // Freed pages are reused, but most of the file stays (redb gives back at most a free
        // tail by itself).
        let cleared = std::fs::metadata(&path).unwrap().len();
        let usage = store.inner.disk_usage().unwrap();
        assert!(usage.used_bytes * 2 < usage.file_bytes, "cleared: mostly free pages: {usage:?}");
        // Below the size threshold nothing happens.
        assert!(!store.inner.compact_if_sparse(u64::MAX).unwrap());
        assert!(store.inner.compact_if_sparse(0).unwrap());
        // As the flush thread does while the store stays idle: again while there is progress.
        for _ in 0..5 {
            if !store.inner.compact_if_sparse(0).unwrap() {
                break;
            }
        }
        let compacted = std::fs::metadata(&path).unwrap().len();
        assert!(compacted < full / 4, "{full} -> {cleared} -> {compacted} bytes");
        // Still a working store, with every table.
        assert_eq!(store.list_results(10, None).await.unwrap().len(), 0);
        store.put_state(Uuid::new_v4(), "ns", "k", "v").await.unwrap();
    }

    #[tokio::test]
    async fn results_written_in_the_three_copy_layout_are_moved_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let row = |task: &str, seq: u64| {
                format!(
                    concat!(
                        r#"{{"scan_request_task_id":"{task}","scan_job_id":"job-1","id":{seq},"metadata_tag":"a","#,
                        r#""scan_request":{{"location":"/a","metainfo":"a"}},"verdict":null,"status":"not scanned","#,
                        r#""finished_at":1}}"#
                    ),
                    task = task,
                    seq = seq
                )
            };
            {
                let mut recent = txn.open_table(OLD_RESULTS).unwrap();
                let mut by_task = txn.open_table(OLD_RESULT_BY_TASK).unwrap();
                let mut by_job = txn.open_table(OLD_RESULTS_BY_JOB).unwrap();
                for (task, seq) in [("t1", 1), ("t2", 2)] {
                    by_task.insert(task, row(task, seq).as_bytes()).unwrap();
                    by_job.insert(("job-1", seq), row(task, seq).as_bytes()).unwrap();
                }
                // Only the newest is in the newest-results list.
                recent.insert(2, row("t2", 2).as_bytes()).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = EmbeddedStore::open(&path, SecretCodec::plain()).unwrap();
        assert_eq!(store.get_result("t1").await.unwrap().unwrap().id, 1);
        assert_eq!(store.list_results(10, Some("job-1")).await.unwrap().len(), 2);
        assert_eq!(store.list_results(10, None).await.unwrap().len(), 1);
        let names: Vec<String> = {
            let txn = store.inner.db().unwrap().begin_read().unwrap();
            txn.list_tables().unwrap().map(|t| t.name().to_owned()).collect()
        };
        assert!(
            !names.iter().any(|n| ["results", "result_by_task", "results_by_job"].contains(&n.as_str())),
            "{names:?}"
        );
        // Clearing the job removes its rows.
        assert_eq!(store.clear_job_results("job-1").await.unwrap(), 2);
        assert!(store.get_result("t2").await.unwrap().is_none());
        assert_eq!(rows(&store, RESULT_ROWS), 0);
    }
}

//! One conformance suite, run against both backends: a real redis-server and the embedded
//! redb store. Each case is written once as `async fn(&Harness)`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dsx_model::Connector;
use dsx_store::{
    Credential, Credentials, EmbeddedStore, Health, Namespace, RedisStore, RegistrationRecord, Registry, SecretCodec,
    Store, StoreError,
};
use dsx_testkit::{unique_name, RedisServer, TestRedis};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

enum Backing {
    Redis { _redis: TestRedis, url: String, env: String },
    Embedded { dir: tempfile::TempDir },
}

struct Harness {
    store: Arc<dyn Store>,
    backing: Backing,
}

impl Harness {
    fn redis(codec: SecretCodec) -> Self {
        let redis = TestRedis::get();
        let env = unique_name("t");
        let store = RedisStore::new(&redis.url, Namespace { env: env.clone() }, codec).unwrap();
        Self { store: Arc::new(store), backing: Backing::Redis { url: redis.url.clone(), _redis: redis, env } }
    }

    fn embedded(codec: SecretCodec) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("store.redb"), codec).unwrap();
        Self { store: Arc::new(store), backing: Backing::Embedded { dir } }
    }

    /// The same data opened again with another codec (a new process, for the embedded store).
    fn reopen(self, codec: SecretCodec) -> Self {
        match self.backing {
            Backing::Redis { _redis, url, env } => {
                let store = RedisStore::new(&url, Namespace { env: env.clone() }, codec).unwrap();
                Self { store: Arc::new(store), backing: Backing::Redis { _redis, url, env } }
            }
            Backing::Embedded { dir } => {
                drop(self.store);
                let store = EmbeddedStore::open(&dir.path().join("store.redb"), codec).unwrap();
                Self { store: Arc::new(store), backing: Backing::Embedded { dir } }
            }
        }
    }
}

fn connector(url: &str) -> Connector {
    Connector { uuid: Uuid::new_v4(), url: url.into(), name: "filesystem-connector".into(), ..Connector::default() }
}

fn credential(secret: &str) -> Credential {
    Credential { key_id: dsx_hmac_like_key_id(), secret: SecretString::from(secret.to_owned()), issued_at: 1 }
}

fn dsx_hmac_like_key_id() -> String {
    unique_name("kid")
}

async fn resolves_to(store: &dyn Store, key_id: &str) -> Option<(Uuid, String)> {
    store.resolve_key(key_id).await.unwrap().map(|r| (r.connector_uuid, r.secret.expose_secret().to_owned()))
}

// ---------------------------------------------------------------- cases

async fn presence_round_trip(h: &Harness) {
    let s = &*h.store;
    let c = connector("http://a/fs");
    assert_eq!(s.get_presence(c.uuid).await.unwrap(), None);
    s.put_presence(&c, Duration::from_secs(60)).await.unwrap();
    assert_eq!(s.get_presence(c.uuid).await.unwrap(), Some(c.clone()));
    assert!(s.list_presence().await.unwrap().contains(&c));
    let mut moved = c.clone();
    moved.url = "http://b/fs".into();
    s.put_presence(&moved, Duration::from_secs(60)).await.unwrap();
    assert_eq!(s.get_presence(c.uuid).await.unwrap().unwrap().url, "http://b/fs");
    assert!(s.delete_presence(c.uuid).await.unwrap());
    assert!(!s.delete_presence(c.uuid).await.unwrap());
    assert_eq!(s.get_presence(c.uuid).await.unwrap(), None);
}

async fn presence_expires(h: &Harness) {
    let s = &*h.store;
    let short = connector("http://short/fs");
    let long = connector("http://long/fs");
    s.put_presence(&short, Duration::from_millis(800)).await.unwrap();
    s.put_presence(&long, Duration::from_secs(60)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(s.get_presence(short.uuid).await.unwrap(), None);
    let listed = s.list_presence().await.unwrap();
    assert!(listed.contains(&long) && !listed.iter().any(|c| c.uuid == short.uuid));
    assert!(!s.delete_presence(short.uuid).await.unwrap(), "an expired entry is not live");
}

async fn credentials_install_and_resolve(h: &Harness) {
    let s = &*h.store;
    let uuid = Uuid::new_v4();
    assert!(s.current_credential(uuid).await.unwrap().is_none());
    let c = credential("secret-one");
    s.install_credential(uuid, &c, Duration::from_secs(60)).await.unwrap();
    let current = s.current_credential(uuid).await.unwrap().unwrap();
    assert_eq!((current.key_id.as_str(), current.secret.expose_secret()), (c.key_id.as_str(), "secret-one"));
    assert_eq!(resolves_to(s, &c.key_id).await, Some((uuid, "secret-one".into())));
    assert_eq!(resolves_to(s, "no-such-key").await, None);
}

async fn rotation_keeps_old_key_for_grace_only(h: &Harness) {
    let s = &*h.store;
    let uuid = Uuid::new_v4();
    let old = credential("old-secret");
    let new = credential("new-secret");
    s.install_credential(uuid, &old, Duration::ZERO).await.unwrap();
    s.install_credential(uuid, &new, Duration::from_millis(900)).await.unwrap();
    assert_eq!(resolves_to(s, &old.key_id).await, Some((uuid, "old-secret".into())));
    assert_eq!(resolves_to(s, &new.key_id).await, Some((uuid, "new-secret".into())));
    assert_eq!(s.current_credential(uuid).await.unwrap().unwrap().key_id, new.key_id);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(resolves_to(s, &old.key_id).await, None, "old key revoked after grace");
    assert_eq!(resolves_to(s, &new.key_id).await, Some((uuid, "new-secret".into())));
}

async fn rotation_without_grace_revokes_at_once(h: &Harness) {
    let s = &*h.store;
    let uuid = Uuid::new_v4();
    let old = credential("a");
    let new = credential("b");
    s.install_credential(uuid, &old, Duration::ZERO).await.unwrap();
    s.install_credential(uuid, &new, Duration::ZERO).await.unwrap();
    assert_eq!(resolves_to(s, &old.key_id).await, None);
    assert!(resolves_to(s, &new.key_id).await.is_some());
}

async fn revoke_removes_current_and_grace_keys(h: &Harness) {
    let s = &*h.store;
    let uuid = Uuid::new_v4();
    let other = Uuid::new_v4();
    let (a, b, c) = (credential("a"), credential("b"), credential("c"));
    s.install_credential(uuid, &a, Duration::ZERO).await.unwrap();
    s.install_credential(uuid, &b, Duration::from_secs(60)).await.unwrap();
    s.install_credential(other, &c, Duration::ZERO).await.unwrap();
    assert!(s.revoke_credentials(uuid).await.unwrap());
    assert_eq!(resolves_to(s, &a.key_id).await, None);
    assert_eq!(resolves_to(s, &b.key_id).await, None);
    assert!(s.current_credential(uuid).await.unwrap().is_none());
    assert!(!s.revoke_credentials(uuid).await.unwrap(), "second revoke finds nothing");
    assert!(resolves_to(s, &c.key_id).await.is_some(), "other connectors untouched");
}

/// Rotations racing for one connector: every replaced key must land in grace (none orphaned),
/// and revocation must then find every one of them.
async fn concurrent_rotations_lose_no_key(h: &Harness) {
    let uuid = Uuid::new_v4();
    let first = credential("first");
    h.store.install_credential(uuid, &first, Duration::ZERO).await.unwrap();
    let creds: Vec<Credential> = (0..16).map(|i| credential(&format!("secret-{i}"))).collect();
    let installs = creds.iter().cloned().map(|c| {
        let store = Arc::clone(&h.store);
        tokio::spawn(async move { store.install_credential(uuid, &c, Duration::from_secs(60)).await.unwrap() })
    });
    for task in installs.collect::<Vec<_>>() {
        task.await.unwrap();
    }
    for c in creds.iter().chain([&first]) {
        let want = Some((uuid, c.secret.expose_secret().to_owned()));
        assert_eq!(resolves_to(&*h.store, &c.key_id).await, want, "{} lost in a concurrent rotation", c.key_id);
    }
    assert!(h.store.revoke_credentials(uuid).await.unwrap());
    for c in creds.iter().chain([&first]) {
        assert_eq!(resolves_to(&*h.store, &c.key_id).await, None);
    }
    if let Backing::Redis { url, env, .. } = &h.backing {
        let mut conn = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        for c in creds.iter().chain([&first]) {
            let exists: bool = redis::cmd("EXISTS")
                .arg(format!("{env}:dsx-connect:hmac:kid:{}", c.key_id))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(!exists, "index entry of {} left behind", c.key_id);
        }
    }
}

async fn registration_record_round_trip(h: &Harness) {
    let s = &*h.store;
    let uuid = Uuid::new_v4();
    let record = RegistrationRecord {
        at: 42,
        via: "enrollment_token".into(),
        token_slot: Some("X[1]".into()),
        peer: Some("10.0.0.1".into()),
        rotation_requested: false,
        recovered_key_id: Some("kid".into()),
        revoked_at: None,
    };
    assert_eq!(s.get_registration(uuid).await.unwrap(), None);
    s.put_registration(uuid, &record).await.unwrap();
    assert_eq!(s.get_registration(uuid).await.unwrap(), Some(record.clone()));
    let listed = s.list_registrations().await.unwrap();
    assert!(listed.contains(&(uuid, record.clone())), "listed");
    // A revoked connector's record stays listed with its revocation.
    let revoked = RegistrationRecord { revoked_at: Some(99), ..record };
    s.put_registration(uuid, &revoked).await.unwrap();
    let listed = s.list_registrations().await.unwrap();
    assert_eq!(listed.iter().filter(|(u, _)| *u == uuid).count(), 1, "one row per uuid");
    assert!(listed.contains(&(uuid, revoked)));
    s.delete_registration(uuid).await.unwrap();
    assert_eq!(s.get_registration(uuid).await.unwrap(), None);
    assert!(!s.list_registrations().await.unwrap().iter().any(|(u, _)| *u == uuid), "gone from the list");
}

async fn nonces_are_remembered_for_their_ttl(h: &Harness) {
    let s = &*h.store;
    let kid = unique_name("kid");
    assert!(s.remember_nonce(&kid, "n1", Duration::from_millis(800)).await.unwrap());
    assert!(!s.remember_nonce(&kid, "n1", Duration::from_millis(800)).await.unwrap());
    assert!(s.remember_nonce(&kid, "n2", Duration::from_millis(800)).await.unwrap());
    assert!(s.remember_nonce("other-kid", "n1", Duration::from_millis(800)).await.unwrap(), "scoped by key id");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(s.remember_nonce(&kid, "n1", Duration::from_secs(5)).await.unwrap(), "forgotten after ttl");
}

async fn state_key_values(h: &Harness) {
    let s = &*h.store;
    let uuid = Uuid::new_v4();
    assert_eq!(s.get_state(uuid, "ns", "k").await.unwrap(), None);
    s.put_state(uuid, "ns", "k", "v1").await.unwrap();
    s.put_state(uuid, "ns", "k", "v2").await.unwrap();
    s.put_state(uuid, "cursor", "last key with spaces", "é ünïcode").await.unwrap();
    s.put_state(uuid, "s3:cursor", "bucket/a:b c.txt", "x:y").await.unwrap();
    assert_eq!(s.get_state(uuid, "ns", "k").await.unwrap().as_deref(), Some("v2"));
    assert_eq!(s.get_state(uuid, "cursor", "last key with spaces").await.unwrap().as_deref(), Some("é ünïcode"));
    assert_eq!(s.get_state(uuid, "s3:cursor", "bucket/a:b c.txt").await.unwrap().as_deref(), Some("x:y"));
    assert_eq!(s.get_state(uuid, "s3:cursor", "bucket/a:b").await.unwrap(), None);
    assert_eq!(s.get_state(Uuid::new_v4(), "ns", "k").await.unwrap(), None, "scoped by connector");
}

async fn rate_limit_counts_in_fixed_windows(h: &Harness) {
    let s = &*h.store;
    let bucket = unique_name("register:");
    let window = Duration::from_secs(2);
    let to_next_window = || {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        Duration::from_millis(2000 - (now.as_millis() % 2000) as u64 + 20)
    };
    // The bucket is fresh, so counting starts at 1 mid-window; only make sure the three hits
    // cannot straddle a window boundary.
    if to_next_window() < Duration::from_secs(1) {
        tokio::time::sleep(to_next_window()).await;
    }
    for expected in 1..=3 {
        let w = s.hit_rate_limit(&bucket, window).await.unwrap();
        assert_eq!(w.count, expected);
        assert!((1..=2).contains(&w.reset_in_secs), "{w:?}");
    }
    assert_eq!(s.hit_rate_limit(&unique_name("other:"), window).await.unwrap().count, 1);
    tokio::time::sleep(to_next_window()).await;
    assert_eq!(s.hit_rate_limit(&bucket, window).await.unwrap().count, 1, "new window");
}

async fn secrets_are_encrypted_at_rest(h: Harness) {
    let uuid = Uuid::new_v4();
    let c = credential("plaintext-secret-value");
    h.store.install_credential(uuid, &c, Duration::ZERO).await.unwrap();
    let c2 = credential("second-secret-value");
    h.store.install_credential(uuid, &c2, Duration::from_secs(60)).await.unwrap();
    assert_eq!(resolves_to(&*h.store, &c.key_id).await.unwrap().1, "plaintext-secret-value");
    match &h.backing {
        Backing::Redis { url, env, .. } => {
            let mut conn = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
            let stored: String = redis::cmd("HGET")
                .arg(format!("{env}:dsx-connect:connectors:config:{uuid}"))
                .arg("hmac_secret")
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(stored.starts_with("enc:v1:") && !stored.contains("second-secret-value"));
            let grace: String = redis::cmd("GET")
                .arg(format!("{env}:dsx-connect:connectors:grace:{}", c.key_id))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(grace.starts_with("enc:v1:") && !grace.contains("plaintext-secret-value"));
        }
        Backing::Embedded { dir } => {
            let bytes = std::fs::read(dir.path().join("store.redb")).unwrap();
            for secret in ["plaintext-secret-value", "second-secret-value"] {
                assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} on disk");
            }
        }
    }
    // Without the key the sealed secrets are unreadable (and said so), never returned garbled.
    let h = h.reopen(SecretCodec::plain());
    assert!(matches!(h.store.resolve_key(&c2.key_id).await, Err(StoreError::Corrupt(_))));
    let h = h.reopen(SecretCodec::from_key_text(KEY).unwrap());
    assert_eq!(resolves_to(&*h.store, &c2.key_id).await.unwrap().1, "second-secret-value");
}

async fn scan_queue_and_job_counters(h: &Harness) {
    let s = &*h.store;
    let owner = Uuid::new_v4();
    let job_id = unique_name("job-");
    let before = s.scan_queue_len().await.unwrap();
    let task = |n: u32| dsx_store::QueuedTask {
        task_id: format!("{job_id}-{n}"),
        connector_uuid: owner,
        job_id: job_id.clone(),
        request: dsx_model::ScanRequest::new(format!("/f{n}"), format!("f{n}")),
        enqueued_at_us: 0,
        enqueued_at: 1,
    };
    assert_eq!(s.get_job(&job_id).await.unwrap(), None);
    assert_eq!(s.mark_enqueue_done(&job_id, Some(3), None).await.unwrap(), None, "no job yet");
    s.enqueue_scans(&[task(1), task(2)]).await.unwrap().unwrap();
    s.enqueue_scans(&[task(3)]).await.unwrap().unwrap();
    let job = s.get_job(&job_id).await.unwrap().unwrap();
    assert_eq!((job.enqueued_count, job.connector_uuid, job.status), (3, Some(owner), dsx_store::JobStatus::Running));
    assert!(!job.enqueue_done);
    let job = s.mark_enqueue_done(&job_id, Some(3), Some(2)).await.unwrap().unwrap();
    assert_eq!(job.enumeration_errors, 2, "kept with the job");
    assert!(job.enqueue_done);
    assert_eq!(job.expected_total, Some(3));
    assert!(s.scan_queue_len().await.unwrap() >= before + 3);
}

/// A job belongs to the connector that created it (items or an operator's claim), and a batch
/// touching a job it may not join is refused whole.
async fn jobs_belong_to_their_connector_and_batches_are_all_or_nothing(h: &Harness) {
    use dsx_store::JobRefusal;
    let s = &*h.store;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (job_a, job_b, claimed) = (unique_name("ja-"), unique_name("jb-"), unique_name("jc-"));
    let task = job_task;
    s.enqueue_scans(&[task(&job_a, a, 1)]).await.unwrap().unwrap();
    let before = s.scan_queue_len().await.unwrap();
    // B may not add to A's job, not even inside a batch that is otherwise fine.
    let refused = s.enqueue_scans(&[task(&job_b, b, 1), task(&job_a, b, 2)]).await.unwrap();
    assert_eq!(refused, Err(JobRefusal::OtherOwner { job_id: job_a.clone() }));
    assert_eq!(s.scan_queue_len().await.unwrap(), before, "nothing of a refused batch is queued");
    assert_eq!(s.get_job(&job_b).await.unwrap(), None, "nor any job of it created");
    assert_eq!(s.get_job(&job_a).await.unwrap().unwrap().enqueued_count, 1);
    // An operator's claim makes the job B's before any item exists.
    assert_eq!(s.claim_job(&claimed, b).await.unwrap(), Ok(()));
    assert_eq!(s.claim_job(&claimed, b).await.unwrap(), Ok(()), "idempotent for its owner");
    assert_eq!(s.claim_job(&claimed, a).await.unwrap(), Err(JobRefusal::OtherOwner { job_id: claimed.clone() }));
    assert!(matches!(s.enqueue_scans(&[task(&claimed, a, 1)]).await.unwrap(), Err(JobRefusal::OtherOwner { .. })));
    s.enqueue_scans(&[task(&claimed, b, 1)]).await.unwrap().unwrap();
    let job = s.get_job(&claimed).await.unwrap().unwrap();
    assert_eq!((job.connector_uuid, job.enqueued_count), (Some(b), 1));
    // A claimed job that never gets an item completes on enqueue_done.
    let empty = unique_name("je-");
    s.claim_job(&empty, a).await.unwrap().unwrap();
    let job = s.mark_enqueue_done(&empty, Some(0), None).await.unwrap().unwrap();
    assert_eq!(job.status, dsx_store::JobStatus::Completed);
    // Paused and cancelled jobs take nothing, checked in the same step.
    s.set_job_status(&job_a, dsx_store::JobStatus::Paused).await.unwrap();
    assert_eq!(
        s.enqueue_scans(&[task(&job_a, a, 3)]).await.unwrap(),
        Err(JobRefusal::Paused { job_id: job_a.clone() })
    );
    s.set_job_status(&job_a, dsx_store::JobStatus::Cancelled).await.unwrap();
    assert_eq!(
        s.enqueue_scans(&[task(&job_a, a, 3)]).await.unwrap(),
        Err(JobRefusal::Cancelled { job_id: job_a.clone() })
    );
    assert_eq!(s.get_job(&job_a).await.unwrap().unwrap().enqueued_count, 1);
}

/// Task `n` of `job` for `owner` (id `<job>-<n>`).
fn job_task(job: &str, owner: Uuid, n: u32) -> dsx_store::QueuedTask {
    dsx_store::QueuedTask {
        task_id: format!("{job}-{n}"),
        connector_uuid: owner,
        job_id: job.to_owned(),
        request: dsx_model::ScanRequest::new("/item", "item"),
        enqueued_at_us: 0,
        enqueued_at: 1,
    }
}

fn queued(n: u32) -> dsx_store::QueuedTask {
    dsx_store::QueuedTask {
        task_id: format!("task-{n}"),
        connector_uuid: Uuid::nil(),
        job_id: "job-q".into(),
        request: dsx_model::ScanRequest::new(format!("/f{n}"), format!("f{n}")),
        enqueued_at_us: 0,
        enqueued_at: 1,
    }
}

/// A claim says, in the same step, whether the task's job is paused or cancelled and whether
/// the task already has a result; a waiting claim returns when work arrives.
async fn claims_carry_job_status_and_result_presence(h: &Harness) {
    let s = &*h.store;
    let lease = Duration::from_secs(30);
    let job = unique_name("job-");
    let mut task = queued(7);
    task.job_id = job.clone();
    task.connector_uuid = Uuid::new_v4();
    s.enqueue_scans(&[task.clone()]).await.unwrap().unwrap();
    s.set_job_status(&job, dsx_store::JobStatus::Paused).await.unwrap().unwrap();
    let d = s.claim_scans("w", 5, lease).await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].job_status, d[0].has_result), (Some(dsx_store::JobStatus::Paused), false));
    assert!(d[0].claimed_at_us > 0);
    s.put_result(&result(&task.task_id, &job, "Benign"), 100).await.unwrap();
    s.defer_scan(&d[0], Duration::ZERO).await.unwrap();
    let again = s.claim_scans("w", 5, lease).await.unwrap();
    assert_eq!(again.len(), 1, "{again:?} {:?}", s.scan_queue_len().await);
    assert_eq!((again[0].job_status, again[0].has_result), (Some(dsx_store::JobStatus::Paused), true));
    assert_eq!(s.complete_scan(&again[0], None, 100).await.unwrap(), None);

    // Nothing queued: waiting for work returns within its bound (the embedded store looks again
    // every 100 ms for retries coming due) and claims nothing.
    let started = Instant::now();
    s.wait_for_tasks(Duration::from_millis(300)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "returned after {:?}", started.elapsed());
    assert!(s.claim_scans("w", 5, lease).await.unwrap().is_empty());
    // An enqueue during a long wait ends it.
    let store = Arc::clone(&h.store);
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        store.wait_for_tasks(Duration::from_secs(4)).await.unwrap();
        started.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let enqueued = Instant::now();
    s.enqueue_scans(&[queued(8)]).await.unwrap().unwrap();
    let waited = waiter.await.unwrap();
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    let woken = s.claim_scans("w", 5, lease).await.unwrap();
    assert_eq!(woken.iter().map(|d| d.task.task_id.as_str()).collect::<Vec<_>>(), ["task-8"]);
    assert_eq!(woken[0].job_status, Some(dsx_store::JobStatus::Running));
    assert!(enqueued.elapsed() < Duration::from_secs(2), "woken {:?} after the enqueue", enqueued.elapsed());
}

/// One completion rule on every path that changes what it reads: the last result, a late
/// `enqueue_done`, and an operator resuming a job whose items all finished while it was paused.
async fn every_path_applies_the_one_completion_rule(h: &Harness) {
    use dsx_store::JobStatus::*;
    let s = &*h.store;
    let lease = Duration::from_secs(30);
    let job = unique_name("job-");
    let mut task = queued(9);
    task.job_id = job.clone();
    s.enqueue_scans(&[task.clone()]).await.unwrap().unwrap();
    let d = s.claim_scans("w", 1, lease).await.unwrap().remove(0);
    s.set_job_status(&job, Paused).await.unwrap().unwrap();
    // The item finishes while the job is paused, and enqueue_done arrives: still paused.
    s.complete_scan(&d, Some(&result(&task.task_id, &job, "Benign")), 100).await.unwrap();
    assert_eq!(s.mark_enqueue_done(&job, Some(1), None).await.unwrap().unwrap().status, Paused);
    // Resumed with nothing left to do: completed at once.
    assert_eq!(s.set_job_status(&job, Running).await.unwrap().unwrap().status, Completed);
    assert_eq!(s.get_job(&job).await.unwrap().unwrap().status, Completed);
    // Unknown jobs stay unknown on every path.
    assert!(s.mark_enqueue_done("no-such-job", Some(1), None).await.unwrap().is_none());
    assert!(s.set_job_status("no-such-job", Paused).await.unwrap().is_none());
    assert!(s.get_job("no-such-job").await.unwrap().is_none());
}

async fn queue_delivers_each_task_once_until_acked(h: &Harness) {
    let s = &*h.store;
    s.enqueue_scans(&[queued(1), queued(2), queued(3)]).await.unwrap().unwrap();
    let first = s.claim_scans("w1", 2, Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        first.iter().map(|d| (d.task.task_id.as_str(), d.attempt)).collect::<Vec<_>>(),
        [("task-1", 1), ("task-2", 1)]
    );
    let second = s.claim_scans("w2", 5, Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        second.iter().map(|d| d.task.task_id.as_str()).collect::<Vec<_>>(),
        ["task-3"],
        "leased tasks are not handed out twice"
    );
    for d in first.iter().chain(&second) {
        s.ack_scan(d).await.unwrap();
    }
    assert!(s.claim_scans("w1", 5, Duration::from_secs(30)).await.unwrap().is_empty());
    assert_eq!(s.scan_queue_len().await.unwrap(), 0);
}

async fn expired_lease_is_redelivered_to_another_worker(h: &Harness) {
    let s = &*h.store;
    s.enqueue_scans(&[queued(1)]).await.unwrap().unwrap();
    let held = s.claim_scans("crashing", 1, Duration::from_millis(300)).await.unwrap();
    assert_eq!(held.len(), 1);
    assert!(s.claim_scans("w2", 1, Duration::from_millis(300)).await.unwrap().is_empty(), "still leased");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = s.claim_scans("w2", 1, Duration::from_millis(300)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].task.task_id.as_str(), again[0].attempt), ("task-1", 2));
    s.ack_scan(&again[0]).await.unwrap();
    assert_eq!(s.scan_queue_len().await.unwrap(), 0);
}

async fn retry_waits_for_its_delay(h: &Harness) {
    let s = &*h.store;
    s.enqueue_scans(&[queued(1)]).await.unwrap().unwrap();
    let d = s.claim_scans("w1", 1, Duration::from_secs(30)).await.unwrap().remove(0);
    s.retry_scan(&d, Duration::from_millis(400)).await.unwrap();
    assert!(s.claim_scans("w1", 1, Duration::from_secs(30)).await.unwrap().is_empty(), "not before its delay");
    assert_eq!(s.scan_queue_len().await.unwrap(), 1, "a waiting retry is still queued");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let d = s.claim_scans("w1", 1, Duration::from_secs(30)).await.unwrap().remove(0);
    assert_eq!((d.task.task_id.as_str(), d.attempt), ("task-1", 2));
}

async fn dead_letters_keep_the_reason_and_can_be_requeued(h: &Harness) {
    let s = &*h.store;
    s.enqueue_scans(&[queued(1), queued(2)]).await.unwrap().unwrap();
    for d in s.claim_scans("w1", 2, Duration::from_secs(30)).await.unwrap() {
        s.dead_letter_scan(&d, "scanner_server: 503", None, 1000).await.unwrap();
    }
    assert_eq!(s.scan_queue_len().await.unwrap(), 0);
    assert_eq!(s.dead_letter_count().await.unwrap(), 2);
    let letters = s.dead_letters(0, 10).await.unwrap();
    assert_eq!(letters.len(), 2);
    assert_eq!((letters[0].task.task_id.as_str(), letters[0].reason.as_str()), ("task-1", "scanner_server: 503"));
    assert_eq!(s.dead_letters(1, 2).await.unwrap()[0].task.task_id, "task-2");
    assert_eq!(s.requeue_dead_letters(1).await.unwrap(), 1);
    let d = s.claim_scans("w1", 5, Duration::from_secs(30)).await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!((&d[0].task.request, d[0].attempt), (&queued(1).request, 1));
    assert_eq!(d[0].task.task_id, "task-1", "a requeued task keeps its id");
    assert_eq!(s.clear_dead_letters().await.unwrap(), 1);
    assert_eq!(s.dead_letter_count().await.unwrap(), 0);
}

/// A result document as the worker writes it (the store adds `id`).
fn result_doc(task: &str, job: &str, verdict: Option<&str>, status: &str) -> serde_json::Value {
    serde_json::json!({
        "scan_request_task_id": task,
        "scan_job_id": job,
        "metadata_tag": "item",
        "scan_request": dsx_model::ScanRequest::new("/item", "item"),
        "verdict": verdict.map(|v| serde_json::json!({
            "scan_guid": "", "verdict": v, "verdict_details": {}, "file_info": {},
            "dsxconnect_request_elapsed_ms": 1, "dsxconnect_claim_to_result_us": 1500
        })),
        "item_action": null,
        "status": status,
        "finished_at": 1_700_000_000u64,
    })
}

fn result(task: &str, job: &str, verdict: &str) -> dsx_store::ResultRecord {
    dsx_store::ResultRecord {
        task_id: task.into(),
        job_id: job.into(),
        json: result_doc(task, job, Some(verdict), "scanned").to_string(),
        verdict: verdict.into(),
        succeeded: true,
        scan_time_us: 10,
        file_size: 100,
    }
}

/// What the worker stores for a dead-lettered item, before the dead letter itself.
fn not_scanned(task: &str, job: &str) -> dsx_store::ResultRecord {
    dsx_store::ResultRecord {
        task_id: task.into(),
        job_id: job.into(),
        json: result_doc(task, job, None, "not scanned").to_string(),
        verdict: "Not Scanned".into(),
        succeeded: false,
        scan_time_us: 0,
        file_size: 0,
    }
}

/// The verdict spelling of a stored result, or its status when it has no verdict.
fn outcome(r: &dsx_model::StoredResult) -> String {
    r.verdict.as_ref().map(|v| v.verdict.verdict.as_str().to_owned()).unwrap_or_else(|| r.status.clone())
}

/// A requeued dead letter replaces its failed outcome: the job counts each item once, the
/// "not scanned" row gives way to the new result (same task id), and a job that completed
/// because of the dead letter runs again until the requeued item is done.
async fn requeued_dead_letters_replace_their_failed_outcome(h: &Harness) {
    use dsx_store::JobStatus::{Completed, Running};
    let s = &*h.store;
    let job = unique_name("jr");
    let owner = Uuid::new_v4();
    let task = |n: u32| dsx_store::QueuedTask {
        task_id: format!("{job}-{n}"),
        connector_uuid: owner,
        job_id: job.clone(),
        request: dsx_model::ScanRequest::new(format!("/f{n}"), format!("f{n}")),
        enqueued_at_us: 0,
        enqueued_at: 1,
    };
    let (t1, t2) = (format!("{job}-1"), format!("{job}-2"));
    let counts = |j: dsx_store::Job| (j.status, j.processed_count, j.succeeded_count, j.failed_count);
    let rows = |rows: Vec<dsx_model::StoredResult>| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> =
            rows.iter().map(|r| (r.scan_request_task_id.clone(), outcome(r))).collect();
        out.sort();
        out
    };
    s.enqueue_scans(&[task(1), task(2)]).await.unwrap().unwrap();
    s.mark_enqueue_done(&job, Some(2), None).await.unwrap().unwrap();
    let lease = Duration::from_secs(30);
    let claimed = s.claim_scans("w", 10, lease).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let (d1, d2) = (&claimed[0], &claimed[1]);
    assert_eq!((d1.task.task_id.as_str(), d2.task.task_id.as_str()), (t1.as_str(), t2.as_str()));
    s.complete_scan(d1, Some(&result(&t1, &job, "Benign")), 1000).await.unwrap().unwrap();
    // Item 2 fails for good: its "not scanned" result and the dead letter, in one step (as the
    // worker does): the job completes with its dead letter there.
    assert!(s
        .dead_letter_scan(d2, "connector_client: read_file: 404", Some(&not_scanned(&t2, &job)), 1000)
        .await
        .unwrap()
        .is_some());
    assert_eq!(counts(s.get_job(&job).await.unwrap().unwrap()), (Completed, 2, 1, 1));
    assert_eq!(s.dead_letter_count().await.unwrap(), 1);
    // A delivery settled already (the lease passed to another worker) writes nothing.
    assert_eq!(s.dead_letter_scan(d2, "again", Some(&not_scanned(&t2, &job)), 1000).await.unwrap(), None);
    assert_eq!(s.dead_letter_count().await.unwrap(), 1);

    // Requeued, it fails again: still one row and one count per item.
    assert_eq!(s.requeue_dead_letters(10).await.unwrap(), 1);
    assert_eq!(counts(s.get_job(&job).await.unwrap().unwrap()), (Running, 1, 1, 0), "open again");
    assert_eq!(s.get_result(&t2).await.unwrap(), None, "its failed result is gone");
    assert_eq!(rows(s.list_results(100, Some(&job)).await.unwrap()), [(t1.clone(), "Benign".to_owned())]);
    assert!(!s.list_results(1000, None).await.unwrap().iter().any(|r| r.scan_request_task_id == t2));
    let again = s.claim_scans("w", 10, lease).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].task.task_id.as_str(), again[0].attempt), (t2.as_str(), 1), "same task id, attempts reset");
    s.dead_letter_scan(&again[0], "connector_client: read_file: 404", Some(&not_scanned(&t2, &job)), 1000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counts(s.get_job(&job).await.unwrap().unwrap()), (Completed, 2, 1, 1));
    assert_eq!(
        rows(s.list_results(100, Some(&job)).await.unwrap()),
        [(t1.clone(), "Benign".to_owned()), (t2.clone(), "not scanned".to_owned())]
    );

    // Requeued once more, it is scanned: the job completes with every item counted once.
    assert_eq!(s.requeue_dead_letters(10).await.unwrap(), 1);
    assert_eq!(s.dead_letter_count().await.unwrap(), 0);
    let last = s.claim_scans("w", 10, lease).await.unwrap();
    assert_eq!(last.len(), 1);
    assert!(s.complete_scan(&last[0], Some(&result(&t2, &job, "Benign")), 1000).await.unwrap().is_some());
    assert_eq!(counts(s.get_job(&job).await.unwrap().unwrap()), (Completed, 2, 2, 0));
    assert_eq!(
        rows(s.list_results(100, Some(&job)).await.unwrap()),
        [(t1.clone(), "Benign".to_owned()), (t2.clone(), "Benign".to_owned())]
    );
    assert_eq!(outcome(&s.get_result(&t2).await.unwrap().unwrap()), "Benign");
    let newest = s.list_results(1000, None).await.unwrap();
    assert_eq!(
        newest.iter().filter(|r| r.scan_request_task_id == t2).count(),
        1,
        "one row per item in the newest list too"
    );
}

async fn complete_scan_stores_the_result_and_acks_together(h: &Harness) {
    let s = &*h.store;
    let job = unique_name("jc");
    let task = |n: u32| job_task(&job, Uuid::new_v4(), n);
    s.enqueue_scans(&[task(1), task(2)]).await.unwrap().unwrap();
    let lease = Duration::from_millis(300);
    let mut claimed = s.claim_scans("w", 10, lease).await.unwrap();
    claimed.retain(|d| d.task.job_id == job);
    assert_eq!(claimed.len(), 2);
    let id = s.complete_scan(&claimed[0], Some(&result(&format!("{job}-1"), &job, "Benign")), 1000).await.unwrap();
    assert!(id.is_some());
    assert!(s.get_result(&format!("{job}-1")).await.unwrap().is_some());
    // No result (e.g. an earlier attempt stored it): acked all the same.
    assert_eq!(s.complete_scan(&claimed[1], None, 1000).await.unwrap(), None);
    tokio::time::sleep(lease * 2).await;
    let again = s.claim_scans("w", 10, lease).await.unwrap();
    assert!(again.iter().all(|d| d.task.job_id != job), "both tasks left the queue: {again:?}");
    // A repeated completion never counts twice.
    let repeat = s.complete_scan(&claimed[0], Some(&result(&format!("{job}-1"), &job, "Benign")), 1000).await;
    assert_eq!(repeat.unwrap(), None);
    assert_eq!(s.get_job(&job).await.unwrap().unwrap().processed_count, 1);
}

async fn results_count_once_and_complete_jobs_in_either_order(h: &Harness) {
    let s = &*h.store;
    let owner = Uuid::new_v4();
    let job_a = unique_name("ja");
    let job_b = unique_name("jb");
    let task = |job: &str, n: u32| job_task(job, owner, n);
    s.enqueue_scans(&[task(&job_a, 1), task(&job_a, 2), task(&job_b, 1), task(&job_b, 2)]).await.unwrap().unwrap();
    let before = s.stats().await.unwrap();
    // Job A: enqueue_done first, then the results.
    assert!(!s.mark_enqueue_done(&job_a, Some(2), None).await.unwrap().unwrap().is_complete());
    let first = s.put_result(&result(&format!("{job_a}-1"), &job_a, "Benign"), 1000).await.unwrap();
    assert!(first.is_some());
    assert_eq!(
        s.put_result(&result(&format!("{job_a}-1"), &job_a, "Benign"), 1000).await.unwrap(),
        None,
        "a redelivery never counts twice"
    );
    assert_eq!(s.get_job(&job_a).await.unwrap().unwrap().status, dsx_store::JobStatus::Running);
    s.put_result(&result(&format!("{job_a}-2"), &job_a, "Malicious"), 1000).await.unwrap().unwrap();
    let a = s.get_job(&job_a).await.unwrap().unwrap();
    assert_eq!((a.status, a.processed_count, a.succeeded_count), (dsx_store::JobStatus::Completed, 2, 2));
    // Job B: the results first, then enqueue_done.
    s.put_result(&result(&format!("{job_b}-1"), &job_b, "Benign"), 1000).await.unwrap().unwrap();
    s.put_result(&result(&format!("{job_b}-2"), &job_b, "Non Compliant"), 1000).await.unwrap().unwrap();
    assert_eq!(s.get_job(&job_b).await.unwrap().unwrap().status, dsx_store::JobStatus::Running);
    assert_eq!(
        s.mark_enqueue_done(&job_b, Some(2), None).await.unwrap().unwrap().status,
        dsx_store::JobStatus::Completed
    );

    let stats = s.stats().await.unwrap();
    let delta = |k: &str| stats.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    assert_eq!(
        (delta("files_scanned"), delta("benign_count"), delta("malicious_count"), delta("non_compliant_count")),
        (4, 2, 1, 1)
    );
    let stored = s.get_result(&format!("{job_a}-2")).await.unwrap().unwrap();
    assert_eq!(outcome(&stored), "Malicious");
    assert!(stored.id > 0, "the store numbers results");
    let per_job = s.list_results(10, Some(&job_b)).await.unwrap();
    assert_eq!(per_job.len(), 2);
    assert_eq!(per_job[0].scan_request_task_id, format!("{job_b}-2"), "newest first");
    assert!(per_job[0].id > per_job[1].id, "newer results have larger ids");
    assert_eq!(s.list_results(2, None).await.unwrap()[0].scan_request_task_id, format!("{job_b}-2"));
    let jobs = s.list_jobs().await.unwrap();
    assert!(jobs.iter().any(|j| j.job_id == job_a) && jobs.iter().any(|j| j.job_id == job_b));
    assert_eq!(s.set_job_status("no-such-job", dsx_store::JobStatus::Paused).await.unwrap(), None);
    assert_eq!(
        s.set_job_status(&job_a, dsx_store::JobStatus::Cancelled).await.unwrap().unwrap().status,
        dsx_store::JobStatus::Cancelled
    );
}

/// A Python connector's `enqueued_total` overstates (it counts before `scan/request`
/// succeeds) or says 0: the server's own accepted count decides completion.
async fn completion_follows_the_accepted_count_not_the_claim(h: &Harness) {
    let s = &*h.store;
    let task = |job: &str, n: u32| job_task(job, Uuid::new_v4(), n);
    // Claim larger than accepted, enqueue_done before the results.
    let over = unique_name("jo");
    s.enqueue_scans(&[task(&over, 1), task(&over, 2)]).await.unwrap().unwrap();
    let job = s.mark_enqueue_done(&over, Some(5), None).await.unwrap().unwrap();
    assert_eq!((job.status, job.expected_total), (dsx_store::JobStatus::Running, Some(5)));
    s.put_result(&result(&format!("{over}-1"), &over, "Benign"), 1000).await.unwrap().unwrap();
    assert_eq!(s.get_job(&over).await.unwrap().unwrap().status, dsx_store::JobStatus::Running, "one still open");
    s.put_result(&result(&format!("{over}-2"), &over, "Benign"), 1000).await.unwrap().unwrap();
    assert_eq!(s.get_job(&over).await.unwrap().unwrap().status, dsx_store::JobStatus::Completed);
    // Claim larger than accepted, enqueue_done after the results.
    let late = unique_name("jl");
    s.enqueue_scans(&[task(&late, 1)]).await.unwrap().unwrap();
    s.put_result(&result(&format!("{late}-1"), &late, "Benign"), 1000).await.unwrap().unwrap();
    assert_eq!(
        s.mark_enqueue_done(&late, Some(9), None).await.unwrap().unwrap().status,
        dsx_store::JobStatus::Completed
    );
    // A claim of 0 (Python's usual) does not complete a job with items still open.
    let zero = unique_name("jz");
    s.enqueue_scans(&[task(&zero, 1)]).await.unwrap().unwrap();
    assert_eq!(s.mark_enqueue_done(&zero, Some(0), None).await.unwrap().unwrap().status, dsx_store::JobStatus::Running);
    s.put_result(&result(&format!("{zero}-1"), &zero, "Benign"), 1000).await.unwrap().unwrap();
    assert_eq!(s.get_job(&zero).await.unwrap().unwrap().status, dsx_store::JobStatus::Completed);
}

/// `DELETE scan/results?job_id=X` forgets that job's results and nothing else.
async fn clearing_one_jobs_results_keeps_the_others(h: &Harness) {
    let s = &*h.store;
    let (gone, kept) = (unique_name("jg"), unique_name("jk"));
    let task = |job: &str, n: u32| job_task(job, Uuid::nil(), n);
    s.enqueue_scans(&[task(&gone, 1), task(&gone, 2), task(&kept, 1)]).await.unwrap().unwrap();
    for t in [format!("{gone}-1"), format!("{kept}-1"), format!("{gone}-2")] {
        let job = if t.starts_with(&gone) { &gone } else { &kept };
        s.put_result(&result(&t, job, "Benign"), 1000).await.unwrap().unwrap();
    }
    let files_before = s.stats().await.unwrap()["files_scanned"];
    assert_eq!(s.clear_job_results(&gone).await.unwrap(), 2);
    assert_eq!(s.get_result(&format!("{gone}-1")).await.unwrap(), None);
    assert_eq!(s.get_result(&format!("{gone}-2")).await.unwrap(), None);
    assert!(s.list_results(10, Some(&gone)).await.unwrap().is_empty());
    assert!(
        !s.list_results(1000, None).await.unwrap().iter().any(|r| r.scan_job_id == gone),
        "gone from the newest-results list too"
    );
    assert!(s.get_result(&format!("{kept}-1")).await.unwrap().is_some());
    assert_eq!(s.list_results(10, Some(&kept)).await.unwrap().len(), 1);
    assert!(s.list_results(1000, None).await.unwrap().iter().any(|r| r.scan_job_id == kept));
    // Other cases share this Redis and may add results meanwhile: stats never go down.
    assert!(s.stats().await.unwrap()["files_scanned"] >= files_before, "stats stay");
    assert_eq!(s.clear_job_results(&gone).await.unwrap(), 0);
}

/// Results read back typed, with the store's `id` as a field, and serialize to the document
/// that was stored: fields this release does not know (an earlier release's, a dead-letter
/// row's) are kept.
async fn stored_results_read_back_typed_and_unchanged(h: &Harness) {
    let s = &*h.store;
    let job = unique_name("jt");
    let (scanned, dead) = (format!("{job}-1"), format!("{job}-2"));
    let mut doc = result_doc(&scanned, &job, Some("Malicious"), "action succeeded");
    doc["verdict"]["verdict_details"] = serde_json::json!({"threat_type": "VIRUS", "reason": "EICAR"});
    doc["verdict"]["dsxa_future_field"] = serde_json::json!([1, 2]);
    doc["item_action"] = serde_json::json!({"status": "success", "item_action": "delete"});
    doc["legacy_field"] = serde_json::json!({"kept": true});
    let record = dsx_store::ResultRecord { json: doc.to_string(), ..result(&scanned, &job, "Malicious") };
    let id = s.put_result(&record, 1000).await.unwrap().unwrap();
    let dead_doc = result_doc(&dead, &job, None, "not scanned");
    let dead_id = s.put_result(&not_scanned(&dead, &job), 1000).await.unwrap().unwrap();

    let got = s.get_result(&scanned).await.unwrap().unwrap();
    assert_eq!(got.id, id);
    assert_eq!(got.status, "action succeeded");
    assert_eq!(got.scan_request.location, "/item");
    let verdict = got.verdict.as_ref().unwrap();
    assert_eq!(verdict.verdict.verdict, dsx_model::VerdictKind::Malicious);
    assert_eq!(verdict.timings.dsxconnect_claim_to_result_us, Some(1500));
    let mut want = doc.clone();
    want["id"] = id.into();
    assert_eq!(serde_json::to_value(&got).unwrap(), want, "the stored document, unchanged");

    let listed = s.list_results(10, Some(&job)).await.unwrap();
    assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), [dead_id, id], "newest first");
    assert_eq!(listed[1], got);
    let mut want_dead = dead_doc;
    want_dead["id"] = dead_id.into();
    assert_eq!(serde_json::to_value(&listed[0]).unwrap(), want_dead);
    assert!(listed[0].verdict.is_none());
}

/// A stored row that does not decode is `Corrupt` when asked for alone and left out of lists
/// (never hiding the other rows).
async fn an_undecodable_result_is_corrupt_alone_and_skipped_in_lists(h: &Harness) {
    let s = &*h.store;
    let job = unique_name("ju");
    let (bad, good) = (format!("{job}-bad"), format!("{job}-good"));
    let broken =
        dsx_store::ResultRecord { json: r#"{"scan_request_task_id":"x"}"#.into(), ..result(&bad, &job, "Benign") };
    s.put_result(&broken, 1000).await.unwrap().unwrap();
    s.put_result(&result(&good, &job, "Benign"), 1000).await.unwrap().unwrap();
    match s.get_result(&bad).await {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains(&bad), "names the task: {msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let listed = s.list_results(10, Some(&job)).await.unwrap();
    assert_eq!(listed.iter().map(|r| r.scan_request_task_id.as_str()).collect::<Vec<_>>(), [good.as_str()]);
    assert!(s.list_results(1000, None).await.unwrap().iter().any(|r| r.scan_request_task_id == good));
}

async fn next_message(rx: &mut tokio::sync::mpsc::Receiver<String>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.ok().flatten()
}

async fn notifications_reach_subscribers_of_their_channel(h: &Harness) {
    let s = &*h.store;
    let mut results = s.subscribe("scan_result").await.unwrap();
    let mut other = s.subscribe("connectors").await.unwrap();
    s.publish("scan_result", "one").await.unwrap();
    s.publish("scan_result", "two").await.unwrap();
    assert_eq!(next_message(&mut results).await.as_deref(), Some("one"));
    assert_eq!(next_message(&mut results).await.as_deref(), Some("two"));
    s.publish("connectors", "registered").await.unwrap();
    assert_eq!(next_message(&mut other).await.as_deref(), Some("registered"), "channels are separate");
    s.publish("nobody-listens", "x").await.unwrap();
}

/// Run alone on its backend (it clears shared result keys), so not in the shared-Redis list.
async fn clearing_results_and_jobs(h: &Harness) {
    let s = &*h.store;
    let job = unique_name("jc");
    s.enqueue_scans(&[dsx_store::QueuedTask {
        task_id: format!("{job}-1"),
        connector_uuid: Uuid::nil(),
        job_id: job.clone(),
        request: dsx_model::ScanRequest::new("/item", "item"),
        enqueued_at_us: 0,
        enqueued_at: 1,
    }])
    .await
    .unwrap()
    .unwrap();
    s.put_result(&result(&format!("{job}-1"), &job, "Benign"), 1000).await.unwrap().unwrap();
    assert!(s.clear_results().await.unwrap() >= 1);
    assert_eq!(s.get_result(&format!("{job}-1")).await.unwrap(), None);
    assert!(s.list_results(10, None).await.unwrap().is_empty());
    assert_eq!(s.stats().await.unwrap().get("files_scanned").copied().unwrap_or(0), 0);
    assert!(s.delete_jobs().await.unwrap() >= 1);
    assert_eq!(s.get_job(&job).await.unwrap(), None);
}

#[tokio::test]
async fn embedded_clearing_results_and_jobs() {
    clearing_results_and_jobs(&Harness::embedded(SecretCodec::plain())).await;
}

#[tokio::test]
async fn redis_clearing_results_and_jobs() {
    // Result and job keys are global (Python layout): use a private Redis.
    let server = RedisServer::start();
    let store = RedisStore::new(&server.url(), Namespace { env: unique_name("t") }, SecretCodec::plain()).unwrap();
    let h = Harness { store: Arc::new(store), backing: Backing::Embedded { dir: tempfile::tempdir().unwrap() } };
    clearing_results_and_jobs(&h).await;
    drop(server);
}

async fn scan_slots_cap_concurrency_and_expire(h: &Harness) {
    let s = &*h.store;
    let lease = Duration::from_millis(400);
    assert!(s.acquire_slot("a", 2, lease).await.unwrap());
    assert!(s.acquire_slot("b", 2, lease).await.unwrap());
    assert!(!s.acquire_slot("c", 2, lease).await.unwrap(), "cap reached");
    assert!(s.acquire_slot("a", 2, lease).await.unwrap(), "a holder may renew");
    assert_eq!(s.slots_in_use().await.unwrap(), 2);
    s.release_slot("b").await.unwrap();
    assert!(s.acquire_slot("c", 2, lease).await.unwrap());
    // A holder that died frees its slot when the lease runs out.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.slots_in_use().await.unwrap(), 0);
    assert!(s.acquire_slot("d", 1, lease).await.unwrap());
}

async fn heartbeats_keep_leases_and_slots_alive(h: &Harness) {
    let s = &*h.store;
    let lease = Duration::from_millis(400);
    s.enqueue_scans(&[queued(1)]).await.unwrap().unwrap();
    let held = s.claim_scans("alive", 1, lease).await.unwrap();
    assert_eq!(held.len(), 1);
    assert!(s.acquire_slot("slot-a", 1, lease).await.unwrap());
    // Renewed well past the first lease: nobody else gets the task or the slot.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(s.renew_scans("alive", &held, lease).await.unwrap().is_empty(), "still held");
        assert!(s.renew_slots(&["slot-a".to_owned()], lease).await.unwrap().is_empty());
        assert!(s.claim_scans("other", 1, lease).await.unwrap().is_empty(), "a renewed lease is not taken over");
        assert!(!s.acquire_slot("slot-b", 1, lease).await.unwrap(), "a renewed slot stays taken");
    }
    // The holder goes silent: the task and the slot come back within one lease.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let taken = s.claim_scans("other", 1, lease).await.unwrap();
    assert_eq!((taken.len(), taken[0].attempt), (1, 2));
    assert!(s.acquire_slot("slot-b", 1, lease).await.unwrap());
    // The old holder learns it lost both.
    assert_eq!(s.renew_scans("alive", &held, lease).await.unwrap(), vec![held[0].id.clone()]);
    assert_eq!(s.renew_slots(&["slot-a".to_owned()], lease).await.unwrap(), vec!["slot-a".to_owned()]);
    assert!(s.renew_scans("other", &taken, lease).await.unwrap().is_empty());
    s.ack_scan(&taken[0]).await.unwrap();
    assert_eq!(s.renew_scans("other", &taken, lease).await.unwrap().len(), 1, "a settled task is not held");
}

async fn deferring_spends_no_attempt(h: &Harness) {
    let s = &*h.store;
    s.enqueue_scans(&[queued(1)]).await.unwrap().unwrap();
    let d = s.claim_scans("w1", 1, Duration::from_secs(30)).await.unwrap().remove(0);
    assert_eq!(d.attempt, 1);
    assert!(s.claim_scans("w1", 1, Duration::from_secs(30)).await.unwrap().is_empty(), "leased");
    s.defer_scan(&d, Duration::from_millis(300)).await.unwrap();
    assert!(s.claim_scans("w1", 1, Duration::from_secs(30)).await.unwrap().is_empty(), "not before its delay");
    assert_eq!(s.scan_queue_len().await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = s.claim_scans("w1", 1, Duration::from_secs(30)).await.unwrap().remove(0);
    assert_eq!((d.task.task_id.as_str(), d.attempt), ("task-1", 1), "same attempt");
    s.defer_scan(&d, Duration::ZERO).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let d = s.claim_scans("w2", 1, Duration::from_secs(30)).await.unwrap().remove(0);
    assert_eq!(d.attempt, 1);
    s.ack_scan(&d).await.unwrap();
    assert_eq!(s.scan_queue_len().await.unwrap(), 0);
}

/// An enqueue with an intake key happens once: the same key again (a retry whose first answer
/// was lost) queues nothing and says so; a refused attempt does not use the key up.
async fn an_intake_key_enqueues_once(h: &Harness) {
    use dsx_store::{Enqueued, IntakeOnce};
    let keyed = |key| IntakeOnce { key: Some(key), nonce: None };
    let s = &*h.store;
    let owner = Uuid::new_v4();
    let job = unique_name("jk-");
    let key = unique_name("intake-");
    let task = |n: u32| job_task(&job, owner, n);
    s.claim_job(&job, owner).await.unwrap().unwrap();
    s.set_job_status(&job, dsx_store::JobStatus::Paused).await.unwrap();
    let before = s.scan_queue_len().await.unwrap();
    assert!(s.enqueue_scans_once(&[task(1), task(2)], keyed(&key)).await.unwrap().is_err(), "paused");
    s.set_job_status(&job, dsx_store::JobStatus::Running).await.unwrap();
    assert_eq!(s.enqueue_scans_once(&[task(1), task(2)], keyed(&key)).await.unwrap(), Ok(Enqueued::Queued));
    assert_eq!(s.scan_queue_len().await.unwrap(), before + 2);
    assert_eq!(s.enqueue_scans_once(&[task(1), task(2)], keyed(&key)).await.unwrap(), Ok(Enqueued::Repeat));
    assert_eq!(s.scan_queue_len().await.unwrap(), before + 2, "a repeat queues nothing");
    assert_eq!(s.get_job(&job).await.unwrap().unwrap().enqueued_count, 2);
    // Another key, or none, queues again.
    let other = unique_name("intake-");
    assert_eq!(s.enqueue_scans_once(&[task(3)], keyed(&other)).await.unwrap(), Ok(Enqueued::Queued));
    assert_eq!(s.enqueue_scans_once(&[task(4)], IntakeOnce::default()).await.unwrap(), Ok(Enqueued::Queued));
    assert_eq!(s.enqueue_scans_once(&[task(4)], IntakeOnce::default()).await.unwrap(), Ok(Enqueued::Queued));
    assert_eq!(s.scan_queue_len().await.unwrap(), before + 5);
}

/// An enqueue given its request's nonce records it in the same step: the nonce again (a
/// replay) is refused with nothing queued, even after the first was refused for its job, and
/// a nonce the replay cache already holds (seen on another route) refuses the enqueue.
async fn an_enqueue_with_a_nonce_refuses_replays(h: &Harness) {
    use dsx_store::{Enqueued, IntakeOnce, JobRefusal, Nonce};
    let s = &*h.store;
    let owner = Uuid::new_v4();
    let job = unique_name("jn-");
    let kid = unique_name("kid-");
    let task = |n: u32| job_task(&job, owner, n);
    let signed =
        |nonce| IntakeOnce { key: None, nonce: Some(Nonce { key_id: &kid, nonce, ttl: Duration::from_secs(60) }) };
    let before = s.scan_queue_len().await.unwrap();
    assert_eq!(s.enqueue_scans_once(&[task(1)], signed("n1")).await.unwrap(), Ok(Enqueued::Queued));
    assert_eq!(s.enqueue_scans_once(&[task(1)], signed("n1")).await.unwrap(), Err(JobRefusal::NonceReused));
    assert_eq!(s.scan_queue_len().await.unwrap(), before + 1, "a replay queues nothing");
    // A refused request still uses its nonce up (as a verified signature does).
    s.set_job_status(&job, dsx_store::JobStatus::Paused).await.unwrap();
    assert!(matches!(s.enqueue_scans_once(&[task(2)], signed("n2")).await.unwrap(), Err(JobRefusal::Paused { .. })));
    s.set_job_status(&job, dsx_store::JobStatus::Running).await.unwrap();
    assert_eq!(s.enqueue_scans_once(&[task(2)], signed("n2")).await.unwrap(), Err(JobRefusal::NonceReused));
    // The same replay cache as `remember_nonce`: a nonce used on another route is refused here,
    // and one recorded here is refused there.
    assert!(s.remember_nonce(&kid, "n3", Duration::from_secs(60)).await.unwrap());
    assert_eq!(s.enqueue_scans_once(&[task(3)], signed("n3")).await.unwrap(), Err(JobRefusal::NonceReused));
    assert!(!s.remember_nonce(&kid, "n1", Duration::from_secs(60)).await.unwrap());
    assert_eq!(s.scan_queue_len().await.unwrap(), before + 1);
    assert_eq!(s.get_job(&job).await.unwrap().unwrap().enqueued_count, 1);
}

/// Several intakes in one store step are answered as if sent one after another: each is
/// queued whole or refused alone, and a later one sees an earlier one's nonce, key and jobs.
async fn a_group_of_intakes_is_answered_one_after_another(h: &Harness) {
    use dsx_store::{Enqueued, Intake, IntakeOnce, JobRefusal, JobStatus, Nonce};
    let s = &*h.store;
    let (owner, other) = (Uuid::new_v4(), Uuid::new_v4());
    let (open, paused, foreign) = (unique_name("jg-"), unique_name("jg-"), unique_name("jg-"));
    s.claim_job(&paused, owner).await.unwrap().unwrap();
    s.set_job_status(&paused, JobStatus::Paused).await.unwrap();
    s.claim_job(&foreign, other).await.unwrap().unwrap();
    let kid = unique_name("kid-");
    let key = unique_name("intake-");
    let nonce = |n| Some(Nonce { key_id: &kid, nonce: n, ttl: Duration::from_secs(60) });
    let signed = |n| IntakeOnce { key: None, nonce: nonce(n) };
    let keyed = IntakeOnce { key: Some(&key), nonce: None };
    let (a, b, c) = (job_task(&open, owner, 1), job_task(&open, owner, 2), job_task(&open, owner, 3));
    let (held, theirs) = (job_task(&paused, owner, 1), job_task(&foreign, owner, 1));
    let mixed = [job_task(&open, owner, 4), job_task(&paused, owner, 2)];
    let before = s.scan_queue_len().await.unwrap();
    let group = [
        Intake { tasks: std::slice::from_ref(&a), once: signed("n1") },
        Intake { tasks: std::slice::from_ref(&b), once: signed("n1") },
        Intake { tasks: std::slice::from_ref(&b), once: keyed },
        Intake { tasks: std::slice::from_ref(&c), once: keyed },
        Intake { tasks: std::slice::from_ref(&held), once: signed("n2") },
        Intake { tasks: std::slice::from_ref(&theirs), once: IntakeOnce::default() },
        Intake { tasks: &mixed, once: IntakeOnce::default() },
        Intake { tasks: &[a.clone(), c.clone()], once: IntakeOnce::default() },
    ];
    let answers: Vec<_> = s.enqueue_intakes(&group).await.unwrap().into_iter().map(Result::unwrap).collect();
    assert_eq!(
        answers,
        vec![
            Ok(Enqueued::Queued),
            Err(JobRefusal::NonceReused),
            Ok(Enqueued::Queued),
            Ok(Enqueued::Repeat),
            Err(JobRefusal::Paused { job_id: paused.clone() }),
            Err(JobRefusal::OtherOwner { job_id: foreign.clone() }),
            Err(JobRefusal::Paused { job_id: paused.clone() }),
            Ok(Enqueued::Queued),
        ]
    );
    assert_eq!(s.scan_queue_len().await.unwrap(), before + 4, "1 + 1 + 2 tasks of the accepted intakes");
    assert_eq!(s.get_job(&open).await.unwrap().unwrap().enqueued_count, 4, "a refused intake counts nothing");
    assert_eq!(s.get_job(&paused).await.unwrap().unwrap().enqueued_count, 0);
    assert_eq!(s.get_job(&foreign).await.unwrap().unwrap().enqueued_count, 0);
    // What the group recorded stays recorded: the nonce of a refused intake too.
    assert!(!s.remember_nonce(&kid, "n2", Duration::from_secs(60)).await.unwrap());
    assert_eq!(s.enqueue_scans_once(std::slice::from_ref(&c), keyed).await.unwrap(), Ok(Enqueued::Repeat));
    assert!(s.enqueue_intakes(&[]).await.unwrap().is_empty(), "an empty group is no work");
}

/// Concurrent intakes through [`GroupCommit`] each get their own answer and their tasks back:
/// copies of one signed request are queued once, and every distinct one is queued.
async fn group_commit_answers_each_concurrent_intake(h: &Harness) {
    use dsx_store::{Enqueued, GroupCommit, JobRefusal, OwnedIntake, OwnedNonce};
    let commit = Arc::new(GroupCommit::new(h.store.clone()));
    let owner = Uuid::new_v4();
    let job = unique_name("jc-");
    let kid = unique_name("kid-");
    let before = h.store.scan_queue_len().await.unwrap();
    let mut sent = tokio::task::JoinSet::new();
    for n in 0..200u32 {
        let commit = Arc::clone(&commit);
        // Requests 0..190 are distinct; 190..200 are copies of one signed request.
        let nonce = if n < 190 { format!("n{n}") } else { "copied".to_owned() };
        let intake = OwnedIntake {
            tasks: vec![job_task(&job, owner, n), job_task(&job, owner, n + 1000)],
            key: None,
            nonce: Some(OwnedNonce { key_id: kid.clone(), nonce, ttl: Duration::from_secs(60) }),
        };
        sent.spawn(async move { (n, commit.enqueue(intake).await) });
    }
    let (mut queued, mut replays) = (0, 0);
    while let Some(joined) = sent.join_next().await {
        let (n, (intake, answer)) = joined.unwrap();
        assert_eq!(
            intake.tasks.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(),
            [format!("{job}-{n}"), format!("{job}-{}", n + 1000)]
        );
        match answer.unwrap() {
            Ok(Enqueued::Queued) => queued += 1,
            Err(JobRefusal::NonceReused) => replays += 1,
            other => panic!("request {n}: {other:?}"),
        }
    }
    assert_eq!((queued, replays), (191, 9), "190 distinct + one of the 10 copies");
    assert_eq!(h.store.scan_queue_len().await.unwrap(), before + 2 * 191);
    assert_eq!(h.store.get_job(&job).await.unwrap().unwrap().enqueued_count, 2 * 191);
}

/// Runs each case on both backends, grouped by the capability it checks:
/// `<capability>::<backend>::<case>` (e.g. `cargo test -p dsx-store queue::redis`).
macro_rules! conformance {
    ($($capability:ident: [$($case:ident),* $(,)?]),* $(,)?) => {
        $(
            mod $capability {
                mod redis {
                    use crate::*;
                    $( #[tokio::test] async fn $case() { crate::$case(&Harness::redis(SecretCodec::plain())).await; } )*
                }
                mod embedded {
                    use crate::*;
                    $( #[tokio::test] async fn $case() { crate::$case(&Harness::embedded(SecretCodec::plain())).await; } )*
                }
            }
        )*
    };
}

conformance!(
    registry: [presence_round_trip, presence_expires, registration_record_round_trip, state_key_values],
    credentials: [
        credentials_install_and_resolve,
        rotation_keeps_old_key_for_grace_only,
        rotation_without_grace_revokes_at_once,
        revoke_removes_current_and_grace_keys,
        concurrent_rotations_lose_no_key,
        nonces_are_remembered_for_their_ttl,
    ],
    queue: [
        queue_delivers_each_task_once_until_acked,
        expired_lease_is_redelivered_to_another_worker,
        retry_waits_for_its_delay,
        deferring_spends_no_attempt,
        dead_letters_keep_the_reason_and_can_be_requeued,
        requeued_dead_letters_replace_their_failed_outcome,
        complete_scan_stores_the_result_and_acks_together,
        an_intake_key_enqueues_once,
        an_enqueue_with_a_nonce_refuses_replays,
        a_group_of_intakes_is_answered_one_after_another,
        group_commit_answers_each_concurrent_intake,
        claims_carry_job_status_and_result_presence,
    ],
    jobs: [
        scan_queue_and_job_counters,
        jobs_belong_to_their_connector_and_batches_are_all_or_nothing,
        completion_follows_the_accepted_count_not_the_claim,
        every_path_applies_the_one_completion_rule,
    ],
    results: [
        results_count_once_and_complete_jobs_in_either_order,
        clearing_one_jobs_results_keeps_the_others,
        stored_results_read_back_typed_and_unchanged,
        an_undecodable_result_is_corrupt_alone_and_skipped_in_lists,
    ],
    events: [notifications_reach_subscribers_of_their_channel],
    limits: [rate_limit_counts_in_fixed_windows, scan_slots_cap_concurrency_and_expire, heartbeats_keep_leases_and_slots_alive],
);

/// Finished jobs (completed, cancelled) go after their retention with their result lists and
/// their results' by-task entries; running and paused jobs stay, however old. Results of a job
/// without a record expire like a finished job's.
async fn finished_jobs_expire_after_their_retention(store: Arc<dyn Store>) {
    use dsx_store::JobStatus::{Cancelled, Completed, Paused, Running};
    let s = &*store;
    let owner = Uuid::new_v4();
    let [done, cancelled, running, paused, jobless] = ["jd", "jx", "jr", "jp", "jn"].map(unique_name);
    let task = |job: &str, n: u32| job_task(job, owner, n);
    let stored = |job: &str, n: u32| result(&format!("{job}-{n}"), job, "Benign");
    for job in [&done, &cancelled, &running, &paused] {
        s.enqueue_scans(&[task(job, 1), task(job, 2)]).await.unwrap().unwrap();
        s.put_result(&stored(job, 1), 1000).await.unwrap().unwrap();
    }
    s.mark_enqueue_done(&done, Some(2), None).await.unwrap().unwrap();
    s.put_result(&stored(&done, 2), 1000).await.unwrap().unwrap();
    s.set_job_status(&cancelled, Cancelled).await.unwrap().unwrap();
    // A cancelled job's remaining task still gets its (not scanned) result.
    s.put_result(&stored(&cancelled, 2), 1000).await.unwrap().unwrap();
    s.set_job_status(&paused, Paused).await.unwrap().unwrap();
    s.put_result(&stored(&jobless, 1), 1000).await.unwrap().unwrap();
    let status = |job: Option<dsx_store::Job>| job.map(|j| j.status);
    assert_eq!(status(s.get_job(&done).await.unwrap()), Some(Completed));
    assert_eq!(status(s.get_job(&cancelled).await.unwrap()), Some(Cancelled));
    assert!(s.get_result(&format!("{done}-1")).await.unwrap().is_some(), "kept until the retention is over");
    assert_eq!(s.list_results(10, Some(&done)).await.unwrap().len(), 2);

    tokio::time::sleep(Duration::from_millis(3500)).await;
    for job in [&done, &cancelled] {
        assert_eq!(s.get_job(job).await.unwrap(), None, "{job} is gone");
        assert!(s.list_results(10, Some(job)).await.unwrap().is_empty(), "{job}'s result list is gone");
        for n in [1, 2] {
            assert_eq!(s.get_result(&format!("{job}-{n}")).await.unwrap(), None, "{job}-{n} is gone");
        }
    }
    assert_eq!(s.get_result(&format!("{jobless}-1")).await.unwrap(), None);
    assert!(s.list_results(10, Some(&jobless)).await.unwrap().is_empty());
    assert!(!s.list_jobs().await.unwrap().iter().any(|j| j.job_id == done || j.job_id == cancelled));
    for (job, want) in [(&running, Running), (&paused, Paused)] {
        assert_eq!(status(s.get_job(job).await.unwrap()), Some(want), "{job} stays");
        assert_eq!(s.list_results(10, Some(job)).await.unwrap().len(), 1, "{job}'s results stay");
        assert!(s.get_result(&format!("{job}-1")).await.unwrap().is_some(), "{job}'s task entry stays");
    }
    // A paused job that resumes and completes starts its own retention then.
    s.set_job_status(&paused, Running).await.unwrap().unwrap();
    s.mark_enqueue_done(&paused, None, None).await.unwrap().unwrap();
    s.put_result(&stored(&paused, 2), 1000).await.unwrap().unwrap();
    assert_eq!(status(s.get_job(&paused).await.unwrap()), Some(Completed));
    assert!(s.get_result(&format!("{paused}-1")).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(s.get_job(&paused).await.unwrap(), None);
    assert_eq!(s.get_result(&format!("{paused}-1")).await.unwrap(), None);
    assert_eq!(s.get_job(&running).await.unwrap().map(|j| j.status), Some(Running), "a running job is never removed");
}

#[tokio::test]
async fn redis_finished_jobs_expire_after_their_retention() {
    let redis = TestRedis::get();
    let store = RedisStore::new(&redis.url, Namespace { env: unique_name("t") }, SecretCodec::plain())
        .unwrap()
        .with_job_retention(Some(Duration::from_secs(1)));
    finished_jobs_expire_after_their_retention(Arc::new(store)).await;
}

#[tokio::test]
async fn embedded_finished_jobs_expire_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store.redb"), SecretCodec::plain())
        .unwrap()
        .with_job_retention(Some(Duration::from_secs(1)));
    finished_jobs_expire_after_their_retention(Arc::new(store)).await;
}

#[tokio::test]
async fn redis_secrets_are_encrypted_at_rest() {
    secrets_are_encrypted_at_rest(Harness::redis(SecretCodec::from_key_text(KEY).unwrap())).await;
}

#[tokio::test]
async fn embedded_secrets_are_encrypted_at_rest() {
    secrets_are_encrypted_at_rest(Harness::embedded(SecretCodec::from_key_text(KEY).unwrap())).await;
}

/// Without a key, the layout is the one Python 1.x components read.
#[tokio::test]
async fn redis_plain_layout_is_python_compatible() {
    let h = Harness::redis(SecretCodec::plain());
    let Backing::Redis { url, env, .. } = &h.backing else { unreachable!() };
    let uuid = Uuid::new_v4();
    let c = credential("python-readable");
    h.store.install_credential(uuid, &c, Duration::ZERO).await.unwrap();
    let conn_presence = connector("http://py/fs");
    h.store.put_presence(&conn_presence, Duration::from_secs(120)).await.unwrap();
    let mut conn = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let (kid, secret): (String, String) = redis::cmd("HMGET")
        .arg(format!("{env}:dsx-connect:connectors:config:{uuid}"))
        .arg("hmac_key_id")
        .arg("hmac_secret")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((kid.as_str(), secret.as_str()), (c.key_id.as_str(), "python-readable"));
    let owner: String =
        redis::cmd("GET").arg(format!("{env}:dsx-connect:hmac:kid:{}", c.key_id)).query_async(&mut conn).await.unwrap();
    assert_eq!(owner, uuid.to_string());
    let ttl: i64 =
        redis::cmd("TTL").arg(format!("{env}:dsx-connect:hmac:kid:{}", c.key_id)).query_async(&mut conn).await.unwrap();
    assert_eq!(ttl, -1, "credentials have no TTL");
    let presence_key = format!("{env}:dsx-connect:connectors:presence:{}", conn_presence.uuid);
    let json: String = redis::cmd("GET").arg(&presence_key).query_async(&mut conn).await.unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&json).unwrap()["url"], "http://py/fs");
    let ttl: i64 = redis::cmd("TTL").arg(&presence_key).query_async(&mut conn).await.unwrap();
    assert!((100..=120).contains(&ttl));
}

#[tokio::test]
async fn embedded_store_is_durable_across_reopen() {
    let h = Harness::embedded(SecretCodec::plain());
    let uuid = Uuid::new_v4();
    let c = credential("durable");
    let presence = connector("http://durable/fs");
    h.store.install_credential(uuid, &c, Duration::ZERO).await.unwrap();
    h.store.put_presence(&presence, Duration::from_secs(60)).await.unwrap();
    h.store.put_state(uuid, "ns", "k", "v").await.unwrap();
    let record = RegistrationRecord {
        at: 7,
        via: "hmac".into(),
        token_slot: None,
        peer: None,
        rotation_requested: true,
        ..Default::default()
    };
    h.store.put_registration(uuid, &record).await.unwrap();
    assert!(h.store.remember_nonce("kid", "nonce", Duration::from_secs(60)).await.unwrap());
    let h = h.reopen(SecretCodec::plain());
    assert_eq!(h.store.get_registration(uuid).await.unwrap(), Some(record));
    assert_eq!(resolves_to(&*h.store, &c.key_id).await, Some((uuid, "durable".into())));
    assert_eq!(h.store.get_presence(presence.uuid).await.unwrap(), Some(presence));
    assert_eq!(h.store.get_state(uuid, "ns", "k").await.unwrap().as_deref(), Some("v"));
    assert!(!h.store.remember_nonce("kid", "nonce", Duration::from_secs(60)).await.unwrap(), "replay cache survives");
}

#[tokio::test]
async fn embedded_store_refuses_a_second_open_of_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/store.redb");
    let _first = EmbeddedStore::open(&path, SecretCodec::plain()).unwrap();
    let err = EmbeddedStore::open(&path, SecretCodec::plain()).err().expect("second open fails");
    assert!(matches!(err, StoreError::Unavailable(_)) && err.to_string().contains("data dir in use"), "{err}");
}

#[tokio::test]
async fn redis_going_away_is_unavailable_quickly_and_recovers() {
    let mut server = RedisServer::start();
    let store = RedisStore::new(&server.url(), Namespace { env: unique_name("t") }, SecretCodec::plain()).unwrap();
    store.ping().await.unwrap();
    store.put_state(Uuid::nil(), "ns", "k", "v").await.unwrap();
    server.stop();
    for op in ["ping", "resolve_key", "list_presence", "remember_nonce", "ping again"] {
        let started = Instant::now();
        let result = match op {
            "resolve_key" => store.resolve_key("kid").await.map(drop),
            "list_presence" => store.list_presence().await.map(drop),
            "remember_nonce" => store.remember_nonce("kid", "n", Duration::from_secs(5)).await.map(drop),
            _ => store.ping().await,
        };
        assert!(matches!(result, Err(StoreError::Unavailable(_))), "{op}: {result:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{op} took {:?}", started.elapsed());
    }
    server.start_again();
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "store did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.put_state(Uuid::nil(), "ns", "k", "v2").await.unwrap();
}

/// An intake whose job record cannot be read fails alone, with nothing of it queued; the
/// intakes grouped with it are answered as if it were not there. The record is broken under
/// the store (a string where Redis keeps a hash; bytes that are not a job in redb).
#[tokio::test]
async fn an_unreadable_job_fails_its_own_intake_only() {
    use dsx_store::{Enqueued, Intake, IntakeOnce};
    for h in [Harness::redis(SecretCodec::plain()), Harness::embedded(SecretCodec::plain())] {
        let (broken, sound) = (unique_name("jb-"), unique_name("jb-"));
        let owner = Uuid::new_v4();
        let h = match h.backing {
            Backing::Redis { ref url, ref env, .. } => {
                raw_redis(url, &["SET", &format!("{env}:dsx-connect:job:{broken}"), "not a hash"]).await;
                h
            }
            Backing::Embedded { dir } => {
                drop(h.store);
                let db = redb::Database::create(dir.path().join("store.redb")).unwrap();
                let txn = db.begin_write().unwrap();
                txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("jobs"))
                    .unwrap()
                    .insert(broken.as_str(), b"{not a job".as_slice())
                    .unwrap();
                txn.commit().unwrap();
                drop(db);
                let store = EmbeddedStore::open(&dir.path().join("store.redb"), SecretCodec::plain()).unwrap();
                Harness { store: Arc::new(store), backing: Backing::Embedded { dir } }
            }
        };
        let s = &*h.store;
        let before = s.scan_queue_len().await.unwrap();
        let (a, b, c) = (job_task(&sound, owner, 1), job_task(&broken, owner, 1), job_task(&sound, owner, 2));
        let group = [
            Intake { tasks: std::slice::from_ref(&a), once: IntakeOnce::default() },
            Intake { tasks: std::slice::from_ref(&b), once: IntakeOnce::default() },
            Intake { tasks: std::slice::from_ref(&c), once: IntakeOnce::default() },
        ];
        let answers = s.enqueue_intakes(&group).await.unwrap();
        assert_eq!(answers[0].as_ref().unwrap(), &Ok(Enqueued::Queued));
        assert!(matches!(answers[1], Err(StoreError::Corrupt(_))), "{:?}", answers[1]);
        assert_eq!(answers[2].as_ref().unwrap(), &Ok(Enqueued::Queued));
        assert_eq!(s.scan_queue_len().await.unwrap(), before + 2, "the broken job's task is not queued");
        assert_eq!(s.get_job(&sound).await.unwrap().unwrap().enqueued_count, 2);
    }
}

/// One command straight to Redis, under the store: to break what the store wrote.
async fn raw_redis(url: &str, args: &[&str]) {
    let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    redis::cmd(args[0]).arg(&args[1..]).exec_async(&mut conn).await.unwrap();
}

/// Concurrent intakes share store round trips: a burst of 200 needs a few, not 200.
#[tokio::test]
async fn redis_group_commit_shares_round_trips() {
    use dsx_store::{GroupCommit, OwnedIntake};
    let h = Harness::redis(SecretCodec::plain());
    let commit = Arc::new(GroupCommit::new(h.store.clone()));
    let job = unique_name("jr-");
    let owner = Uuid::new_v4();
    let sent_before = h.store.round_trips().unwrap();
    let mut sent = tokio::task::JoinSet::new();
    for n in 0..200 {
        let commit = Arc::clone(&commit);
        let intake = OwnedIntake { tasks: vec![job_task(&job, owner, n)], key: None, nonce: None };
        sent.spawn(async move { commit.enqueue(intake).await.1.unwrap().unwrap() });
    }
    while let Some(answer) = sent.join_next().await {
        assert_eq!(answer.unwrap(), dsx_store::Enqueued::Queued);
    }
    let round_trips = h.store.round_trips().unwrap() - sent_before;
    assert!((1..=20).contains(&round_trips), "{round_trips} round trips for 200 intakes");
    assert_eq!(h.store.get_job(&job).await.unwrap().unwrap().enqueued_count, 200);
}

/// Redis forgets its scripts on `SCRIPT FLUSH` (and on a restart): the intake loads the
/// script again and queues the request exactly once.
#[tokio::test]
async fn redis_intake_loads_its_script_again_after_a_flush() {
    use dsx_store::prelude::*;
    use dsx_store::{Enqueued, Intake, IntakeOnce};
    let server = RedisServer::start();
    let store = RedisStore::new(&server.url(), Namespace { env: unique_name("t") }, SecretCodec::plain()).unwrap();
    let (job, owner) = (unique_name("jf-"), Uuid::new_v4());
    for n in 0..2 {
        raw_redis(&server.url(), &["SCRIPT", "FLUSH"]).await;
        let tasks = [job_task(&job, owner, n)];
        let answers = store.enqueue_intakes(&[Intake { tasks: &tasks, once: IntakeOnce::default() }]).await.unwrap();
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].as_ref().unwrap(), &Ok(Enqueued::Queued));
    }
    assert_eq!(store.scan_queue_len().await.unwrap(), 2);
    assert_eq!(store.get_job(&job).await.unwrap().unwrap().enqueued_count, 2);
}

/// A queue that panics when asked to commit an intake for `poison`, and otherwise is the
/// embedded store: to show a panic in one commit fails that group alone.
struct PanicsOnJob {
    inner: Arc<dyn Store>,
    poison: String,
}

#[async_trait::async_trait]
impl dsx_store::ScanQueue for PanicsOnJob {
    async fn enqueue_intakes(
        &self,
        intakes: &[dsx_store::Intake<'_>],
    ) -> dsx_store::StoreResult<Vec<dsx_store::IntakeResult>> {
        if intakes.iter().any(|i| i.tasks.iter().any(|t| t.job_id == self.poison)) {
            panic!("a store bug");
        }
        self.inner.enqueue_intakes(intakes).await
    }
    async fn scan_queue_len(&self) -> dsx_store::StoreResult<u64> {
        self.inner.scan_queue_len().await
    }
    async fn claim_scans(
        &self,
        consumer: &str,
        max: usize,
        lease: Duration,
    ) -> dsx_store::StoreResult<Vec<dsx_store::Delivery>> {
        self.inner.claim_scans(consumer, max, lease).await
    }
    async fn wait_for_tasks(&self, wait: Duration) -> dsx_store::StoreResult<()> {
        self.inner.wait_for_tasks(wait).await
    }
    async fn ack_scan(&self, delivery: &dsx_store::Delivery) -> dsx_store::StoreResult<()> {
        self.inner.ack_scan(delivery).await
    }
    async fn retry_scan(&self, delivery: &dsx_store::Delivery, delay: Duration) -> dsx_store::StoreResult<()> {
        self.inner.retry_scan(delivery, delay).await
    }
    async fn defer_scan(&self, delivery: &dsx_store::Delivery, delay: Duration) -> dsx_store::StoreResult<()> {
        self.inner.defer_scan(delivery, delay).await
    }
    async fn renew_scans(
        &self,
        consumer: &str,
        deliveries: &[dsx_store::Delivery],
        lease: Duration,
    ) -> dsx_store::StoreResult<Vec<String>> {
        self.inner.renew_scans(consumer, deliveries, lease).await
    }
    async fn complete_scan(
        &self,
        delivery: &dsx_store::Delivery,
        record: Option<&dsx_store::ResultRecord>,
        retain: usize,
    ) -> dsx_store::StoreResult<Option<u64>> {
        self.inner.complete_scan(delivery, record, retain).await
    }
    async fn dead_letter_scan(
        &self,
        delivery: &dsx_store::Delivery,
        reason: &str,
        record: Option<&dsx_store::ResultRecord>,
        retain: usize,
    ) -> dsx_store::StoreResult<Option<u64>> {
        self.inner.dead_letter_scan(delivery, reason, record, retain).await
    }
    async fn dead_letters(&self, start: usize, end: usize) -> dsx_store::StoreResult<Vec<dsx_store::DeadLetter>> {
        self.inner.dead_letters(start, end).await
    }
    async fn dead_letter_count(&self) -> dsx_store::StoreResult<u64> {
        self.inner.dead_letter_count().await
    }
    async fn requeue_dead_letters(&self, max: usize) -> dsx_store::StoreResult<u64> {
        self.inner.requeue_dead_letters(max).await
    }
    async fn clear_dead_letters(&self) -> dsx_store::StoreResult<u64> {
        self.inner.clear_dead_letters().await
    }
}

/// A panic inside the store while committing fails that intake with an error (its tasks
/// handed back), never a hung caller; the committer goes on serving the next intakes.
#[tokio::test]
async fn a_panic_in_a_commit_fails_its_group_and_the_committer_goes_on() {
    use dsx_store::{Enqueued, GroupCommit, OwnedIntake};
    let h = Harness::embedded(SecretCodec::plain());
    let (poison, sound) = (unique_name("jp-"), unique_name("js-"));
    let queue = Arc::new(PanicsOnJob { inner: h.store.clone(), poison: poison.clone() });
    let commit = GroupCommit::new(queue);
    let owner = Uuid::new_v4();
    let intake = |job: &str, n| OwnedIntake { tasks: vec![job_task(job, owner, n)], key: None, nonce: None };
    let (handed_back, answer) =
        tokio::time::timeout(Duration::from_secs(5), commit.enqueue(intake(&poison, 0))).await.expect("answered");
    assert_eq!(handed_back.tasks.len(), 1, "the intake comes back with the failure");
    assert!(matches!(answer, Err(StoreError::Unavailable(_))), "{answer:?}");
    for n in 0..3 {
        let (_, answer) =
            tokio::time::timeout(Duration::from_secs(5), commit.enqueue(intake(&sound, n))).await.expect("answered");
        assert_eq!(answer.unwrap(), Ok(Enqueued::Queued));
    }
    assert_eq!(h.store.get_job(&sound).await.unwrap().unwrap().enqueued_count, 3);
    assert!(h.store.get_job(&poison).await.unwrap().is_none(), "nothing of the failed group was written");
}

/// A store that goes away fails every waiting intake with `Unavailable` (their tasks handed
/// back), quickly; the committer keeps serving once the store is back.
#[tokio::test]
async fn redis_group_commit_survives_the_store_going_away() {
    use dsx_store::{GroupCommit, OwnedIntake};
    let mut server = RedisServer::start();
    let store: Arc<dyn Store> =
        Arc::new(RedisStore::new(&server.url(), Namespace { env: unique_name("t") }, SecretCodec::plain()).unwrap());
    let commit = Arc::new(GroupCommit::new(store.clone()));
    let job = unique_name("jd-");
    let owner = Uuid::new_v4();
    let intake = |n| OwnedIntake { tasks: vec![job_task(&job, owner, n)], key: None, nonce: None };
    commit.enqueue(intake(0)).await.1.unwrap().unwrap();
    server.stop();
    let started = Instant::now();
    let mut sent = tokio::task::JoinSet::new();
    for n in 1..=20 {
        let commit = Arc::clone(&commit);
        let intake = intake(n);
        sent.spawn(async move { commit.enqueue(intake).await });
    }
    while let Some(joined) = sent.join_next().await {
        let (intake, answer) = joined.unwrap();
        assert_eq!(intake.tasks.len(), 1, "the intake comes back with the failure");
        assert!(matches!(answer, Err(StoreError::Unavailable(_))), "{answer:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    server.start_again();
    let deadline = Instant::now() + Duration::from_secs(15);
    while commit.enqueue(intake(99)).await.1.is_err() {
        assert!(Instant::now() < deadline, "the committer did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The test server keeps nothing across its restart: the job holds the last intake only.
    assert_eq!(store.get_job(&job).await.unwrap().unwrap().enqueued_count, 1);
}

#[tokio::test]
async fn redis_down_at_construction_then_up() {
    let mut server = RedisServer::start();
    server.stop();
    let started = Instant::now();
    let store = RedisStore::new(&server.url(), Namespace { env: unique_name("t") }, SecretCodec::plain()).unwrap();
    assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    server.start_again();
    store.ping().await.unwrap();
    assert!(RedisStore::new("not a url", Namespace { env: "x".into() }, SecretCodec::plain()).is_err());
}

/// One unreadable presence entry is skipped by `list_presence` (never hiding the rest) and is
/// `Corrupt` when asked for directly.
#[tokio::test]
async fn redis_unreadable_presence_entry() {
    let h = Harness::redis(SecretCodec::plain());
    let Backing::Redis { url, env, .. } = &h.backing else { unreachable!() };
    let good = connector("http://good/fs");
    h.store.put_presence(&good, Duration::from_secs(60)).await.unwrap();
    let bad = Uuid::new_v4();
    raw_redis(url, &["SET", &format!("{env}:dsx-connect:connectors:presence:{bad}"), "{not json"]).await;
    assert_eq!(h.store.list_presence().await.unwrap(), vec![good]);
    assert!(matches!(h.store.get_presence(bad).await, Err(StoreError::Corrupt(_))));
    // A key of the wrong type is corrupt data too, not an outage.
    let registration = format!("{env}:dsx-connect:connectors:registration:{bad}");
    raw_redis(url, &["DEL", &registration]).await;
    raw_redis(url, &["LPUSH", &registration, "x"]).await;
    assert!(matches!(h.store.get_registration(bad).await, Err(StoreError::Corrupt(_))));
}

/// A Redis that accepts connections but never answers (hung, or a black-holed path) must still
/// give `Unavailable` within the timeouts, not hang the request.
#[tokio::test]
async fn redis_silent_server_times_out() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/", silent.local_addr().unwrap());
    let store = RedisStore::new(&url, Namespace { env: unique_name("t") }, SecretCodec::plain()).unwrap();
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), store.ping()).await.expect("ping hung");
    assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

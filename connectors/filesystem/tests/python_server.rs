//! Our filesystem connector against a Python dsx-connect 1.x server: a loopback stand-in
//! that answers with the recorded Python responses (fixtures 01, 02, 20, 29, 34, 44, 74, 80,
//! 83, 88, 96, 97) and checks every signature with the fixture key. Full scans must lose
//! nothing, whatever the server's batch setting and however the job is paused or cancelled.

mod support;

use std::collections::BTreeSet;

use dsx_testkit::python_fixtures::CONNECTOR_UUID;
use serde_json::Value;
use support::{populate, BatchRefusal, Connector, JobShape, PythonServer, ServerState};

struct Setup {
    server: PythonServer,
    connector: Connector,
    locations: Vec<String>,
    _asset: tempfile::TempDir,
    _quarantine: tempfile::TempDir,
}

async fn setup(files: usize, init: impl FnOnce(&mut ServerState)) -> Setup {
    let server = PythonServer::start(init).await;
    let asset = tempfile::tempdir().unwrap();
    let quarantine = tempfile::tempdir().unwrap();
    let root = asset.path().canonicalize().unwrap();
    let locations = populate(&root, files);
    let connector = Connector::start(&server, &root, quarantine.path(), &[]).await;
    Setup { server, connector, locations, _asset: asset, _quarantine: quarantine }
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// Every call that reached the stand-in verified with the fixture key, and every scan
/// request names the job and carries the connector model.
fn assert_clean(s: &ServerState, job_id: &str) {
    assert!(s.auth_failures.is_empty(), "signature failures: {:?}", s.auth_failures);
    for call in s.calls_to("POST", "/scan/request") {
        let body = call.json();
        if body["scan_job_id"] == job_id {
            assert_eq!(body["connector"]["uuid"], CONNECTOR_UUID);
            assert!(call.signed);
        }
    }
}

fn total(done: &Value) -> u64 {
    done["enqueued_total"].as_u64().expect("enqueued_total")
}

#[tokio::test]
async fn batch_off_server_gets_single_requests_and_the_true_total() {
    let t = setup(25, |_| {}).await;
    t.connector.full_scan("job_id=job-single").await;
    let done = t.server.wait_enqueue_done("job-single").await;
    t.server.with(|s| {
        assert_eq!(sorted(&s.accepted), t.locations, "every file enqueued exactly once");
        assert_eq!(total(&done), 25, "enqueue_done carries the true total");
        assert!(s.calls_to("POST", "/scan/request_batch").is_empty());
        assert_eq!(s.calls_to("GET", "/config").len(), 1, "capabilities were read");
        assert_eq!(s.calls_to("GET", "/scan/jobs/job-single/raw").len(), 1, "job checked once, before the first item");
        assert_clean(s, "job-single");
        s.accepted.clear();
    });

    // Batching asked for, but the server says it is off (fixture 41 against 42): singles,
    // without a refused request_batch first.
    t.connector.full_scan("batch=true&batch_size=5&job_id=job-asked").await;
    let done = t.server.wait_enqueue_done("job-asked").await;
    t.server.with(|s| {
        assert_eq!(sorted(&s.accepted), t.locations);
        assert_eq!(total(&done), 25);
        assert!(s.calls_to("POST", "/scan/request_batch").is_empty());
        assert_eq!(s.calls_to("GET", "/config").len(), 1, "cached for the second scan");
        assert_clean(s, "job-asked");
    });
}

#[tokio::test]
async fn batch_on_server_gets_batches_of_its_size() {
    let t = setup(25, |s| s.batch_enabled = true).await;
    // No `batch` in the query: the server's capability and default size (10) decide.
    t.connector.full_scan("job_id=job-default").await;
    let done = t.server.wait_enqueue_done("job-default").await;
    t.server.with(|s| {
        assert_eq!(total(&done), 25);
        assert_eq!(sorted(&s.accepted), t.locations);
        assert_eq!(s.batches, vec![(10, Some(10)), (10, Some(10)), (5, Some(10))]);
        assert!(s.calls_to("POST", "/scan/request").is_empty());
        assert_clean(s, "job-default");
        s.accepted.clear();
        s.batches.clear();
    });

    // A size beyond the server's maximum (100) is clamped to it.
    t.connector.full_scan("batch=true&batch_size=500&job_id=job-big").await;
    let done = t.server.wait_enqueue_done("job-big").await;
    t.server.with(|s| {
        assert_eq!(total(&done), 25);
        assert_eq!(s.batches, vec![(25, Some(100))]);
        s.accepted.clear();
    });

    // `batch=false` still means singles.
    t.connector.full_scan("batch=false&job_id=job-off").await;
    let done = t.server.wait_enqueue_done("job-off").await;
    t.server.with(|s| {
        assert_eq!(total(&done), 25);
        assert_eq!(s.calls_to("POST", "/scan/request").len(), 25);
        assert_eq!(s.batches.len(), 1, "no new batch");
    });
}

#[tokio::test]
async fn a_batch_the_server_does_not_queue_falls_back_to_singles() {
    // Batching advertised, yet request_batch queues nothing: 202 `status:"error"`,
    // `queued_items:0` (fixture 44), 202 success with `queued_items:0`, or no such route.
    for refusal in [BatchRefusal::DisabledBody, BatchRefusal::NothingQueued, BatchRefusal::NoRoute] {
        let t = setup(25, |s| {
            s.batch_enabled = true;
            s.batch_refusal = Some(refusal);
        })
        .await;
        t.connector.full_scan("batch=true&batch_size=5&job_id=job-fallback").await;
        let done = t.server.wait_enqueue_done("job-fallback").await;
        t.server.with(|s| {
            assert_eq!(s.refused_batches, 1, "{refusal:?}: one refusal ends batching for the scan");
            assert!(s.batches.is_empty());
            assert_eq!(sorted(&s.accepted), t.locations, "{refusal:?}: the refused batch's items went out one by one");
            assert_eq!(total(&done), 25, "{refusal:?}: nothing counted that was not queued, nothing lost");
            assert_clean(s, "job-fallback");
        });
    }
}

/// A pause in the middle of a scan: the server answers 409 (in each shape), the connector
/// reads the job, waits while it is paused and sends the refused items again after the
/// resume. Python connectors skip them (fixture 83's note); we must not.
#[tokio::test]
async fn pause_mid_scan_waits_and_loses_nothing_in_every_shape() {
    for shape in [JobShape::Python, JobShape::Flat, JobShape::Combined] {
        let t = setup(40, |s| {
            s.shape = shape;
            s.pause_after = Some(10);
        })
        .await;
        let job = format!("job-pause-{shape:?}");
        t.connector.full_scan(&format!("job_id={job}")).await;
        // Waiting, not retrying: the job is polled again and again, the refused items are not
        // resent while it is paused.
        t.server
            .wait_until("the connector to wait on the paused job", |s| {
                s.conflicts >= 1 && s.raw_polls_while_paused >= 3 * s.conflicts.max(2)
            })
            .await;
        let (accepted, conflicts) = t.server.with(|s| (s.accepted.len(), s.conflicts));
        assert_eq!(accepted, 10, "{shape:?}");
        assert!(conflicts >= 1, "{shape:?}: the 409 path ran");
        // At most one refused request per slot in flight.
        let limit = t.connector.ctx.settings.full_scan_enqueue_concurrency;
        assert!(conflicts <= limit, "{shape:?}: {conflicts} conflicts");
        assert!(t.server.with(|s| s.enqueue_done(&job).is_none()), "{shape:?}: still paused, not done");

        t.server.with(|s| s.paused = false);
        let done = t.server.wait_enqueue_done(&job).await;
        t.server.with(|s| {
            assert_eq!(sorted(&s.accepted), t.locations, "{shape:?}: every item enqueued once");
            assert_eq!(total(&done), 40, "{shape:?}");
            assert_clean(s, &job);
        });
    }
}

#[tokio::test]
async fn paused_before_the_scan_starts_nothing_until_resumed() {
    let t = setup(12, |s| s.paused = true).await;
    t.connector.full_scan("job_id=job-held").await;
    t.server.wait_until("the connector to poll the paused job", |s| s.raw_polls_while_paused >= 2).await;
    t.server.with(|s| {
        assert!(s.calls_to("POST", "/scan/request").is_empty(), "it asked before sending");
        assert_eq!(s.conflicts, 0);
    });
    t.server.with(|s| s.paused = false);
    let done = t.server.wait_enqueue_done("job-held").await;
    assert_eq!(total(&done), 12);
    t.server.with(|s| assert_eq!(sorted(&s.accepted), t.locations));
}

/// A cancel in the middle: the connector stops walking, and `enqueue_done` carries what was
/// really accepted (the Python connector keeps walking and reports 0, fixture 89).
#[tokio::test]
async fn cancel_mid_scan_stops_and_reports_the_true_total() {
    for shape in [JobShape::Python, JobShape::Flat, JobShape::Combined] {
        let t = setup(200, |s| {
            s.shape = shape;
            s.cancel_after = Some(10);
        })
        .await;
        let job = format!("job-cancel-{shape:?}");
        t.connector.full_scan(&format!("job_id={job}")).await;
        let done = t.server.wait_enqueue_done(&job).await;
        t.server.with(|s| {
            assert_eq!(s.accepted.len(), 10, "{shape:?}");
            assert_eq!(total(&done), 10, "{shape:?}: the true total");
            let sent = s.calls_to("POST", "/scan/request").len();
            assert!(sent < 10 + 2 * t.connector.ctx.settings.full_scan_enqueue_concurrency, "{shape:?}: {sent} sent");
            let unique: BTreeSet<&String> = s.accepted.iter().collect();
            assert_eq!(unique.len(), 10, "{shape:?}: no duplicates");
            assert_clean(s, &job);
        });
    }
}

#[tokio::test]
async fn cancelled_before_the_scan_enqueues_nothing() {
    let t = setup(12, |s| s.cancelled = true).await;
    t.connector.full_scan("job_id=job-gone").await;
    let done = t.server.wait_enqueue_done("job-gone").await;
    assert_eq!(total(&done), 0);
    t.server.with(|s| {
        assert!(s.calls_to("POST", "/scan/request").is_empty());
        assert!(s.accepted.is_empty());
    });
}

/// Heartbeats: the later registrations get fixture 02's 200 (same key pair) and are signed
/// with the fixture key; auth_check passes.
#[tokio::test]
async fn heartbeats_keep_the_fixture_key() {
    let server = PythonServer::start(|_| {}).await;
    let asset = tempfile::tempdir().unwrap();
    let quarantine = tempfile::tempdir().unwrap();
    let connector = Connector::start(
        &server,
        &asset.path().canonicalize().unwrap(),
        quarantine.path(),
        &[("DSXCONNECTOR_HEARTBEAT_INTERVAL_SECONDS", "1")],
    )
    .await;
    server.wait_until("a heartbeat", |s| s.registrations >= 2).await;
    server.with(|s| {
        let registrations = s.calls_to("POST", "/connectors/register");
        assert!(!registrations[0].signed, "enrollment carries the token only");
        assert!(registrations[1].signed, "heartbeats are signed with the fixture key");
        assert_eq!(s.calls_to("POST", "/scan/auth_check").len(), 1);
        assert!(s.auth_failures.is_empty(), "{:?}", s.auth_failures);
    });
    assert_eq!(connector.ctx.dsx.key_id().as_deref(), Some(dsx_testkit::python_fixtures::HMAC_KEY_ID));

    // Shutdown unregisters with a signed DELETE naming the fixture uuid (fixture 91).
    connector.ctx.dsx.unregister().await.unwrap();
    server.with(|s| {
        let deletes = s.calls_to("DELETE", &format!("/connectors/unregister/{CONNECTOR_UUID}"));
        assert_eq!(deletes.len(), 1);
        assert!(deletes[0].signed);
        assert!(s.auth_failures.is_empty(), "{:?}", s.auth_failures);
    });
}

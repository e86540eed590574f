//! Requeued dead letters replace their failed outcome, end to end: the real server, a real
//! connector on loopback that fails `read_file` until a flag flips, `POST
//! admin/dead-letter/requeue`, then the job's counters and result rows.

mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode as AxumStatus;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

/// `read_file` answers 404 (a final failure: dead-lettered at once).
const FAIL: u8 = 0;
/// `read_file` waits until the mode changes (the requeued items stay in flight).
const HOLD: u8 = 1;
/// `read_file` serves a benign file.
const SERVE: u8 = 2;

async fn start_connector(mode: Arc<AtomicU8>) -> String {
    let app = Router::new().route(
        "/flaky/read_file",
        post(move |Json(req): Json<Value>| {
            let mode = mode.clone();
            async move {
                while mode.load(Ordering::SeqCst) == HOLD {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if mode.load(Ordering::SeqCst) == FAIL {
                    return (AxumStatus::NOT_FOUND, Json(json!({"detail": "not_found"}))).into_response();
                }
                let body = format!("benign content of {}", req["location"].as_str().unwrap_or_default());
                ([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/flaky", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn job(server: &Server, job_id: &str) -> Value {
    server.operator_get(&format!("scan/jobs/{job_id}")).await.json().await.unwrap()
}

/// Poll the job until `done` holds (30 s at most).
async fn job_until(server: &Server, job_id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = job(server, job_id).await;
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job never {what}: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn counts(job: &Value) -> (String, u64, u64, u64, u64) {
    let n = |k: &str| job[k].as_u64().unwrap_or(0);
    (
        job["status"].as_str().unwrap_or_default().to_owned(),
        n("enqueued_count"),
        n("processed_count"),
        n("succeeded_count"),
        n("failed_count"),
    )
}

async fn requeue_replaces_failed_outcomes(backend: Backend) {
    let mode = Arc::new(AtomicU8::new(FAIL));
    let url = start_connector(mode.clone()).await;
    let server = Server::start(backend, &[]);
    let uuid = Uuid::new_v4();
    let resp = server.register(&connector_body(uuid, &url), Some(ENROLL)).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let keys = Keys::from_registration(uuid, &resp.json().await.unwrap());
    let job_id = format!("requeue-{}", Uuid::new_v4());
    let locations = ["/a", "/b", "/c", "/d"];
    let mut task_ids = Vec::new();
    for location in locations {
        let body =
            serde_json::to_vec(&json!({"location": location, "metainfo": location, "scan_job_id": job_id})).unwrap();
        let resp = server.signed(&keys, Method::POST, &format!("{PREFIX}/scan/request"), &body).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let answer: Value = resp.json().await.unwrap();
        task_ids.push(answer["id"].as_str().expect("task id in the answer").to_owned());
    }
    let path = format!("{PREFIX}/scan/jobs/{job_id}/enqueue_done");
    let resp = server.signed(&keys, Method::POST, &path, br#"{"enqueued_total": 4}"#).await;
    assert_eq!(resp.status(), StatusCode::OK);

    // Every item fails for good: dead letters, "not scanned" rows, and the job completes.
    let failed = job_until(&server, &job_id, "completed with failures", |j| j["status"] == "completed").await;
    assert_eq!(counts(&failed), ("completed".into(), 4, 4, 0, 4));
    let stats: Value = server.operator_get("admin/dead-letter/stats").await.json().await.unwrap();
    assert_eq!(stats["scan_request"], 4);
    let rows: Vec<Value> = server.operator_get(&format!("scan/results/job/{job_id}")).await.json().await.unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["status"] == "not scanned"), "{rows:?}");

    // The connector recovers, but holds the requeued reads: the job runs again meanwhile.
    mode.store(HOLD, Ordering::SeqCst);
    let resp = server.http.post(server.api("admin/dead-letter/requeue")).bearer_auth(OPERATOR).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["requeued"], 4);
    let reopened = job(&server, &job_id).await;
    assert_eq!(counts(&reopened), ("running".into(), 4, 0, 0, 0), "{reopened}");
    let rows: Vec<Value> = server.operator_get(&format!("scan/results/job/{job_id}")).await.json().await.unwrap();
    assert!(rows.is_empty(), "the failed rows are gone while the items are rescanned: {rows:?}");

    mode.store(SERVE, Ordering::SeqCst);
    let done = job_until(&server, &job_id, "completed again", |j| j["status"] == "completed").await;
    assert_eq!(counts(&done), ("completed".into(), 4, 4, 4, 0), "{done}");
    let rows: Vec<Value> = server.operator_get(&format!("scan/results/job/{job_id}")).await.json().await.unwrap();
    assert_eq!(rows.len(), 4, "one row per file: {rows:?}");
    let mut seen: Vec<String> =
        rows.iter().map(|r| r["scan_request_task_id"].as_str().unwrap_or_default().to_owned()).collect();
    seen.sort();
    let mut want = task_ids.clone();
    want.sort();
    assert_eq!(seen, want, "the requeued items keep their task ids");
    for row in &rows {
        assert_eq!(row["status"], "scanned", "{row}");
        assert_eq!(row["verdict"]["verdict"], "Benign", "{row}");
    }
    for task_id in &task_ids {
        let rows: Vec<Value> = server.operator_get(&format!("scan/results/{task_id}")).await.json().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["status"], "scanned", "the task's result is the new one: {rows:?}");
    }
    let stats: Value = server.operator_get("admin/dead-letter/stats").await.json().await.unwrap();
    assert_eq!(stats["scan_request"], 0);
}

#[tokio::test]
async fn requeued_dead_letters_replace_their_failed_outcome_embedded() {
    requeue_replaces_failed_outcomes(Backend::Embedded).await;
}

#[tokio::test]
async fn requeued_dead_letters_replace_their_failed_outcome_redis() {
    requeue_replaces_failed_outcomes(Backend::Redis).await;
}

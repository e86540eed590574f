//! Retention end to end: with `DSXCONNECT_RESULTS_DB__JOB_RETENTION_SECONDS=1`, a finished job
//! and its results are gone shortly after it completes; a running job and its results stay.

mod common;

use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

async fn start_connector() -> String {
    let app = Router::new().route(
        "/benign/read_file",
        post(|Json(req): Json<Value>| async move {
            let body = format!("benign content of {}", req["location"].as_str().unwrap_or_default());
            ([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/benign", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn rows(server: &Server, path: &str) -> Vec<Value> {
    server.operator_get(path).await.json().await.unwrap()
}

async fn finished_jobs_expire_running_jobs_stay(backend: Backend) {
    let url = start_connector().await;
    let server = Server::start(backend, &[("DSXCONNECT_RESULTS_DB__JOB_RETENTION_SECONDS", "1".into())]);
    let uuid = Uuid::new_v4();
    let resp = server.register(&connector_body(uuid, &url), Some(ENROLL)).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let keys = Keys::from_registration(uuid, &resp.json().await.unwrap());
    let (done, running) = (format!("done-{}", Uuid::new_v4()), format!("running-{}", Uuid::new_v4()));
    let mut tasks = Vec::new();
    for job in [&done, &running] {
        let body = serde_json::to_vec(&json!({"location": "/f", "metainfo": "m", "scan_job_id": job})).unwrap();
        let resp = server.signed(&keys, Method::POST, &format!("{PREFIX}/scan/request"), &body).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        tasks.push(resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    // Only `done` gets enqueue_done: `running` never finishes.
    let path = format!("{PREFIX}/scan/jobs/{done}/enqueue_done");
    assert_eq!(server.signed(&keys, Method::POST, &path, b"").await.status(), StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job: Value = server.operator_get(&format!("scan/jobs/{done}")).await.json().await.unwrap();
        let other = rows(&server, &format!("scan/results/job/{running}")).await;
        if job["status"] == "completed" && other.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the jobs never got their results: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Gone within the retention plus a sweep (the embedded store sweeps every retention period).
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.operator_get(&format!("scan/jobs/{done}")).await.status() != StatusCode::NOT_FOUND {
        assert!(Instant::now() < deadline, "the finished job was never removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(rows(&server, &format!("scan/results/job/{done}")).await.is_empty());
    assert!(rows(&server, &format!("scan/results/{}", tasks[0])).await.is_empty());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let job: Value = server.operator_get(&format!("scan/jobs/{running}")).await.json().await.unwrap();
    assert_eq!(job["status"], "running", "a running job is never removed: {job}");
    assert_eq!(rows(&server, &format!("scan/results/job/{running}")).await.len(), 1);
    assert_eq!(rows(&server, &format!("scan/results/{}", tasks[1])).await.len(), 1);
}

#[tokio::test]
async fn finished_jobs_expire_running_jobs_stay_embedded() {
    finished_jobs_expire_running_jobs_stay(Backend::Embedded).await;
}

#[tokio::test]
async fn finished_jobs_expire_running_jobs_stay_redis() {
    finished_jobs_expire_running_jobs_stay(Backend::Redis).await;
}

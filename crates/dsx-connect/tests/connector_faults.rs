//! Connector faults as the workers see them, against a real HTTP server on loopback that
//! answers like a misbehaving connector: JSON errors with 200 (as Python connectors do), 5xx, 404.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode as AxumStatus;
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

/// A connector that answers `read_file` according to the file name.
async fn start_faulty_connector() -> String {
    let app = Router::new().route(
        "/faulty/read_file",
        post(|Json(req): Json<Value>| async move {
            match req["location"].as_str().unwrap_or_default() {
                "/json-error" => (AxumStatus::OK, Json(json!({"status": "error", "message": "file not found"}))),
                "/server-error" => (AxumStatus::SERVICE_UNAVAILABLE, Json(json!({"detail": "busy"}))),
                _ => (AxumStatus::NOT_FOUND, Json(json!({"detail": "not_found"}))),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/faulty", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn dead_letter_reasons(server: &Server, want: usize) -> Vec<(String, String, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let json: Value =
            server.operator_get("admin/dead-letter/items/scan_request?start=0&end=50").await.json().await.unwrap();
        let items = json["items"].as_array().unwrap();
        if items.len() >= want {
            return items
                .iter()
                .map(|i| {
                    let payload: Value = serde_json::from_str(i["task"]["payload"].as_str().unwrap()).unwrap();
                    let location = payload["location"].as_str().unwrap().to_owned();
                    (location, i["reason"].as_str().unwrap().to_owned(), i["retry_count"].as_u64().unwrap())
                })
                .collect();
        }
        assert!(Instant::now() < deadline, "only {} dead letters: {json}", items.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn connector_errors_are_classified_and_never_scanned_as_content() {
    let url = start_faulty_connector().await;
    let server = Server::start(
        Backend::Embedded,
        &[
            ("DSXCONNECT_WORKERS__RETRY_BASE_MS", "50".into()),
            ("DSXCONNECT_WORKERS__SCAN_REQUEST_MAX_RETRIES", "2".into()),
        ],
    );
    let uuid = Uuid::new_v4();
    let resp = server.register(&connector_body(uuid, &url), Some(ENROLL)).await;
    let keys = Keys::from_registration(uuid, &resp.json().await.unwrap());
    for location in ["/json-error", "/server-error", "/missing"] {
        let body =
            serde_json::to_vec(&json!({"location": location, "metainfo": "m", "scan_job_id": "faults"})).unwrap();
        let resp = server.signed(&keys, Method::POST, &format!("{PREFIX}/scan/request"), &body).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    let mut letters = dead_letter_reasons(&server, 3).await;
    letters.sort();
    let by = |loc: &str| letters.iter().find(|(l, _, _)| l == loc).cloned().unwrap();
    let (_, reason, retries) = by("/json-error");
    assert!(reason.starts_with("connector_client: read_file answered JSON"), "{reason}");
    assert_eq!(retries, 0, "a JSON answer is not retried");
    let (_, reason, retries) = by("/server-error");
    assert!(reason.starts_with("connector_server: 503"), "{reason}");
    assert_eq!(retries, 2, "5xx is retried, then dead-lettered");
    let (_, reason, _) = by("/missing");
    assert!(reason.starts_with("connector_client: 404"), "{reason}");
    // Nothing was scanned: no verdict came out of these bodies.
    let stats: Value = server.operator_get("scan/stats").await.json().await.unwrap();
    assert_eq!(stats["benign_count"], 0);
    assert_eq!(stats["malicious_count"], 0);
    let job: Value = server.operator_get("scan/jobs/faults").await.json().await.unwrap();
    assert_eq!(job["failed_count"], 3);
}

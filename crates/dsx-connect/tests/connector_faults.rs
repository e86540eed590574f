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
                    let location = i["task"]["request"]["location"].as_str().unwrap().to_owned();
                    (location, i["reason"].as_str().unwrap().to_owned(), i["retry_count"].as_u64().unwrap())
                })
                .collect();
        }
        assert!(Instant::now() < deadline, "only {} dead letters: {json}", items.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server that retries twice, 50 ms apart, with one connector registered at `url`.
async fn fast_retrying_server_for(url: &str) -> (Server, Keys) {
    let server = Server::start(
        Backend::Embedded,
        &[
            ("DSXCONNECT_WORKERS__RETRY_BASE_MS", "50".into()),
            ("DSXCONNECT_WORKERS__SCAN_REQUEST_MAX_RETRIES", "2".into()),
        ],
    );
    let uuid = Uuid::new_v4();
    let resp = server.register(&connector_body(uuid, url), Some(ENROLL)).await;
    let keys = Keys::from_registration(uuid, &resp.json().await.unwrap());
    (server, keys)
}

#[tokio::test]
async fn connector_errors_are_classified_and_never_scanned_as_content() {
    let url = start_faulty_connector().await;
    let (server, keys) = fast_retrying_server_for(&url).await;
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
    assert!(reason.starts_with("connector_server: read_file: 503"), "{reason}");
    assert_eq!(retries, 2, "5xx is retried, then dead-lettered");
    let (_, reason, _) = by("/missing");
    assert!(reason.starts_with("connector_client: read_file: 404"), "{reason}");
    // Nothing was scanned: no verdict came out of these bodies.
    let stats: Value = server.operator_get("scan/stats").await.json().await.unwrap();
    assert_eq!(stats["benign_count"], 0);
    assert_eq!(stats["malicious_count"], 0);
    let job: Value = server.operator_get("scan/jobs/faults").await.json().await.unwrap();
    assert_eq!(job["failed_count"], 3);
}

const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// A connector whose files are all EICAR and whose `read_file`/`item_action` misbehave per
/// location, counting the calls: the first answers of `/flaky*` fail, then succeed.
async fn start_remediation_connector(
) -> (String, std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>) {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    let calls: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let count = |calls: &Arc<Mutex<HashMap<String, u32>>>, key: String| {
        let mut calls = calls.lock().unwrap();
        let n = calls.entry(key).or_default();
        *n += 1;
        *n
    };
    let (c1, c2) = (calls.clone(), calls.clone());
    let app = Router::new()
        .route(
            "/rem/read_file",
            post(move |Json(req): Json<Value>| {
                let calls = c1.clone();
                async move {
                    let location = req["location"].as_str().unwrap_or_default().to_owned();
                    let n = count(&calls, format!("read {location}"));
                    if location == "/read-401-once" && n == 1 {
                        return (AxumStatus::UNAUTHORIZED, Json(json!({"detail": "unknown_key_id"}))).into_response();
                    }
                    axum::response::IntoResponse::into_response((
                        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
                        EICAR,
                    ))
                }
            }),
        )
        .route(
            "/rem/item_action",
            axum::routing::put(move |Json(req): Json<Value>| {
                let calls = c2.clone();
                async move {
                    let location = req["location"].as_str().unwrap_or_default().to_owned();
                    let n = count(&calls, format!("action {location}"));
                    let ok = json!({"status": "success", "message": "File moved", "description": null, "id": null, "preview": null, "item_action": "move"});
                    let answer = match (location.as_str(), n) {
                        ("/flaky-500", 1) => (AxumStatus::INTERNAL_SERVER_ERROR, Json(json!({"detail": "oops"}))),
                        ("/flaky-401", 1) => (AxumStatus::UNAUTHORIZED, Json(json!({"detail": "unknown_key_id"}))),
                        ("/io-error", _) => (AxumStatus::OK, Json(json!({"status": "error", "message": "Item action failed.", "description": "permission denied", "id": null, "preview": null, "item_action": "move", "error_code": "repository_error"}))),
                        // What a Python 1.x connector answers for a file that vanished (fixture 51).
                        ("/python-gone", _) => (AxumStatus::OK, Json(json!({"status": "error", "message": "Item action failed.", "description": "File does not exist at /python-gone", "id": null, "preview": null, "item_action": "move"}))),
                        _ => (AxumStatus::OK, Json(ok)),
                    };
                    answer.into_response()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/rem", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

use axum::response::IntoResponse;

async fn results_by_location(server: &Server, job: &str, want: usize) -> std::collections::HashMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows: Value = server.operator_get(&format!("scan/results/job/{job}")).await.json().await.unwrap();
        let rows = rows.as_array().cloned().unwrap_or_default();
        if rows.len() >= want {
            return rows
                .into_iter()
                .map(|r| (r["scan_request"]["location"].as_str().unwrap_or_default().to_owned(), r))
                .collect();
        }
        assert!(Instant::now() < deadline, "only {} results", rows.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn failed_remediation_is_retried_then_dead_lettered_and_never_silent() {
    let (url, calls) = start_remediation_connector().await;
    let (server, keys) = fast_retrying_server_for(&url).await;
    let locations = ["/fine", "/flaky-500", "/flaky-401", "/read-401-once", "/io-error", "/python-gone"];
    for location in locations {
        let body = serde_json::to_vec(&json!({"location": location, "metainfo": "m", "scan_job_id": "rem"})).unwrap();
        let resp = server.signed(&keys, Method::POST, &format!("{PREFIX}/scan/request"), &body).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    let results = results_by_location(&server, "rem", locations.len()).await;
    for ok in ["/fine", "/flaky-500", "/flaky-401", "/read-401-once"] {
        let row = &results[ok];
        assert_eq!(row["verdict"]["verdict"], "Malicious", "{ok}: {row}");
        assert_eq!(row["status"], "action succeeded", "{ok}: {row}");
    }
    for failed in ["/io-error", "/python-gone"] {
        let row = &results[failed];
        assert_eq!(row["verdict"]["verdict"], "Malicious", "a failed remediation keeps the verdict: {row}");
        assert_eq!(row["status"], "action attempted, but failed", "{row}");
        assert_eq!(row["item_action"]["status"], "error", "the connector's answer is kept: {row}");
    }
    let mut letters = dead_letter_reasons(&server, 2).await;
    letters.sort();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let (_, reason, retries) = letters.iter().find(|(l, _, _)| l == "/io-error").cloned().unwrap();
    assert!(reason.contains("permission denied"), "{reason}");
    assert_eq!(retries, 2, "an I/O error on the connector is retried");
    let (_, reason, retries) = letters.iter().find(|(l, _, _)| l == "/python-gone").cloned().unwrap();
    assert!(reason.contains("File does not exist"), "{reason}");
    assert_eq!(retries, 0, "a definite refusal is not retried");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls["action /flaky-500"], 2);
    assert_eq!(calls["action /flaky-401"], 2);
    assert_eq!(calls["read /read-401-once"], 2);
    assert_eq!(calls["action /io-error"], 3);
    let logs = server.logs();
    assert!(logs.contains("malicious item NOT remediated"), "a warning names the item left in place");
    let metrics = server.http.get(server.url("/metrics")).bearer_auth(OPERATOR).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("dsxconnect_remediation_failures_total 2"), "{metrics}");
}

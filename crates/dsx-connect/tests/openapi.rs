//! The OpenAPI document against the running server: every operation it lists is routed (no
//! "not_found" fallback, no 405), every route in the router is listed, and the document is
//! operator-only when auth is on.

mod common;

use common::*;
use dsx_connect::openapi::{full_path, OPERATIONS};
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn concrete(path: &str) -> String {
    let uuid = uuid::Uuid::new_v4().to_string();
    full_path(path)
        .replace("{connector_uuid}", &uuid)
        .replace("{job_id}", "no-such-job")
        .replace("{task_id}", "no-such-task")
        .replace("{queue_type}", "scan_request")
        .replace("{ns}", "ns")
        .replace("{key}", "key")
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_every_route_documented() {
    let server = Server::start(Backend::Embedded, &[]);
    let resp = server.http.get(server.api("openapi.json")).send().await.unwrap();
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "invalid_operator_token");
    let resp = server.operator_get("openapi.json").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum::<usize>(),
        OPERATIONS.len()
    );

    for o in OPERATIONS {
        let method = Method::from_bytes(o.method.as_bytes()).unwrap();
        let url = server.url(&concrete(o.path));
        let resp = server.http.request(method, &url).bearer_auth(OPERATOR).body("{}").send().await.unwrap();
        let status = resp.status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{} {}", o.method, o.path);
        if status == StatusCode::NOT_FOUND {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_ne!(body["detail"], "not_found", "{} {} is documented but not routed", o.method, o.path);
        }
    }

    // The other direction: every path the router registers is documented.
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/app.rs")).unwrap();
    let documented: Vec<&str> = OPERATIONS.iter().map(|o| o.path).collect();
    let mut checked = 0;
    for piece in source.split("&api(\"").skip(1) {
        let path = &piece[..piece.find('"').unwrap()];
        assert!(documented.contains(&path), "route {path} is missing from the OpenAPI document");
        checked += 1;
    }
    assert!(checked > 40, "found only {checked} routes in app.rs");
}

#[tokio::test]
async fn document_is_open_when_auth_is_off() {
    let server = Server::start(Backend::Embedded, &[("DSXCONNECT_AUTH__ENABLED", "false".into())]);
    let resp = server.http.get(server.api("openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.unwrap();
    let register = &doc["paths"]["/dsx-connect/api/v1/connectors/register"]["post"];
    assert_eq!(
        register["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Connector"
    );
    assert!(doc["components"]["schemas"]["ScanRequest"]["properties"]["location"].is_object());
}

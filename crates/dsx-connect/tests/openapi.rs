//! The route table, the router built from it and the OpenAPI document generated from it.
//! In process (`Router::oneshot`): every route is documented with its access rule, and the
//! rule is what the router enforces. Against the running server: every documented operation
//! is routed (no "not_found" fallback, no 405) and the document is operator-only when auth is on.

mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use common::*;
use dsx_connect::api::{full_path, routes, Rule};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

fn concrete(path: &str) -> String {
    let uuid = uuid::Uuid::new_v4().to_string();
    path.replace("{connector_uuid}", &uuid)
        .replace("{job_id}", "no-such-job")
        .replace("{task_id}", "no-such-task")
        .replace("{queue_type}", "scan_request")
        .replace("{ns}", "ns")
        .replace("{key}", "key")
}

/// The router and state of a server with auth on, built in this process.
fn in_process() -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().display().to_string();
    let vars = [
        ("DSXCONNECT_AUTH__ENABLED", "true"),
        ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN", ENROLL),
        ("DSXCONNECT_AUTH__ADMIN_TOKENS", OPERATOR),
        ("DSXCONNECT_DATA_DIR", data_dir.as_str()),
        ("DSXCONNECT_SCANNER__KIND", "builtin"),
    ];
    let settings =
        dsx_connect::Settings::from_lookup(|k| vars.iter().find(|(name, _)| *name == k).map(|(_, v)| v.to_string()))
            .unwrap();
    (dsx_connect::router(dsx_connect::build_state(settings).unwrap()), dir)
}

async fn call(router: &axum::Router, method: &Method, path: &str, bearer: Option<&str>) -> (StatusCode, Value) {
    let mut req = axum::http::Request::builder()
        .method(method.clone())
        .uri(concrete(path))
        .header("content-type", "application/json");
    if let Some(token) = bearer {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let mut req = req.body(Body::from("{}")).unwrap();
    // The registration throttle keys on the peer address, which a real listener supplies.
    req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    // Event streams never end: only small, finished bodies are read.
    let json = resp.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let body = if json {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    (status, body)
}

#[test]
fn every_route_is_documented_with_its_access_rule() {
    let doc = dsx_connect::openapi::document();
    let table = routes();
    let documented: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, table.len(), "the document lists exactly the routed operations");
    for r in &table {
        let op = &doc["paths"][full_path(r.path)][r.method.as_str().to_lowercase()];
        assert!(op.is_object(), "{} {} is not documented", r.method, r.path);
        assert_eq!(op["operationId"], r.operation_id);
        assert_eq!(op["x-dsx-access"], r.access.name(), "{}", r.operation_id);
        let schemes: Vec<&str> = op["security"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|req| req.as_object().unwrap().keys().map(String::as_str))
            .collect();
        let expected: &[&str] = match r.access {
            Rule::Connector | Rule::ConnectorIntake => &["dsxHmac"],
            Rule::ConnectorOrOperator => &["dsxHmac", "operatorToken"],
            Rule::Operator => &["operatorToken"],
            Rule::Enrollment => &["enrollmentToken", "dsxHmac"],
            Rule::Open => &[],
        };
        assert_eq!(schemes, expected, "{}", r.operation_id);
        assert_eq!(op["responses"]["401"].is_object(), r.access != Rule::Open, "{}", r.operation_id);
        assert!(op["responses"][r.status.to_string()].is_object(), "{}", r.operation_id);
    }
    dsx_service::routes::check_operation_ids(table.iter().map(|r| r.operation_id)).unwrap();
}

/// With auth on, each route answers a call without credentials as its rule says: 401 unless
/// open. An operator token opens exactly the operator routes. Every route is routed (no
/// "not_found" fallback, no 405).
#[tokio::test]
async fn every_route_enforces_its_access_rule() {
    let (router, _dir) = in_process();
    for r in routes() {
        let path = full_path(r.path);
        let (status, body) = call(&router, &r.method, &path, None).await;
        let what = format!("{} {path} ({:?}) without credentials: {status} {body}", r.method, r.access);
        match r.access {
            Rule::Open => assert_ne!(status, StatusCode::UNAUTHORIZED, "{what}"),
            _ => assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}"),
        }
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
        assert_ne!(body["detail"], "not_found", "{what}");

        let (status, body) = call(&router, &r.method, &path, Some(OPERATOR)).await;
        let what = format!("{} {path} ({:?}) with the operator token: {status} {body}", r.method, r.access);
        match r.access {
            Rule::Operator | Rule::ConnectorOrOperator | Rule::Open => {
                assert_ne!(status, StatusCode::UNAUTHORIZED, "{what}")
            }
            Rule::Connector | Rule::ConnectorIntake | Rule::Enrollment => {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}")
            }
        }
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
        assert_ne!(body["detail"], "not_found", "{what}");
    }
    let (status, body) = call(&router, &Method::GET, "/no/such/route", None).await;
    assert_eq!((status, body["detail"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let server = Server::start(Backend::Embedded, &[]);
    let resp = server.http.get(server.api("openapi.json")).send().await.unwrap();
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "invalid_operator_token");
    let resp = server.operator_get("openapi.json").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let table = routes();
    assert_eq!(
        doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum::<usize>(),
        table.len()
    );

    for r in table {
        let url = server.url(&concrete(&full_path(r.path)));
        let resp = server.http.request(r.method.clone(), &url).bearer_auth(OPERATOR).body("{}").send().await.unwrap();
        let status = resp.status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{} {}", r.method, r.path);
        if status == StatusCode::NOT_FOUND {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_ne!(body["detail"], "not_found", "{} {} is documented but not routed", r.method, r.path);
        }
    }
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

//! The connector's route table, in process (`Router::oneshot`): every route is documented
//! with its access rule, and the router enforces that rule.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::routing::post;
use dsx_connector::routes::{table, Access};
use dsx_connector::{ActionOutcome, ActionPlan, ConnectorContext, ConnectorDefaults, ConnectorSettings, Item};
use dsx_connector::{RepoError, Repository};
use dsx_model::ScanRequest;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower::ServiceExt;

const NAME: &str = "route-test-connector";

/// A repository with nothing in it.
struct Empty;

#[async_trait]
impl Repository for Empty {
    fn enumerate(&self, _: Arc<dsx_filter::Filter>) -> mpsc::Receiver<Result<Item, RepoError>> {
        mpsc::channel(1).1
    }
    async fn open(&self, _: &ScanRequest) -> Result<(Body, Option<u64>), RepoError> {
        Err(RepoError::NotFound("empty".into()))
    }
    async fn item_action(&self, _: &ScanRequest, _: &ActionPlan) -> Result<ActionOutcome, RepoError> {
        Err(RepoError::NotFound("empty".into()))
    }
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A stand-in for dsx-connect that only enrolls: the connector gets a DSX-HMAC key, so its
/// signed routes answer 401 (not 503 not_enrolled) to an unsigned call.
async fn fake_dsx_connect() -> String {
    let app = axum::Router::new().route(
        "/dsx-connect/api/v1/connectors/register",
        post(|| async {
            axum::Json(json!({
                "status": "success", "message": "registered", "description": "",
                "connector_uuid": uuid::Uuid::nil(), "hmac_key_id": "kid-1", "hmac_secret": "secret-1",
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn connector(auth: bool) -> axum::Router {
    let dsx = if auth { fake_dsx_connect().await } else { "http://127.0.0.1:9".into() };
    let vars = [
        ("DSXCONNECTOR_AUTH__ENABLED", if auth { "true" } else { "false" }.to_owned()),
        ("DSXCONNECTOR_ENROLLMENT_TOKEN", "enroll".into()),
        ("DSXCONNECTOR_DSX_CONNECT_URL", dsx),
        ("DSXCONNECTOR_ASSET", "/nowhere".into()),
    ];
    let defaults =
        ConnectorDefaults { name: NAME, display_name: "Routes", item_action: dsx_model::ItemAction::Nothing, port: 1 };
    let settings =
        ConnectorSettings::from_lookup(&defaults, |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
            .unwrap();
    let ctx = ConnectorContext::new(settings, Arc::new(Empty), uuid::Uuid::new_v4()).unwrap();
    if auth {
        ctx.dsx.register(false).await.unwrap();
        assert!(ctx.dsx.key_id().is_some());
    }
    dsx_connector::routes::router(ctx)
}

async fn call(router: &axum::Router, method: Method, uri: &str) -> (StatusCode, Value) {
    let req = Request::builder().method(method).uri(uri).body(Body::from("{}")).unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The router's fallback: a 404 `not_found` without the `message` a handler's 404 carries.
fn fallback(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::NOT_FOUND && body["detail"] == "not_found" && body.get("message").is_none()
}

#[test]
fn every_route_is_documented_with_its_access_rule() {
    let doc = dsx_connector::openapi::document(NAME);
    let routes = table();
    let documented: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, routes.len());
    for r in &routes {
        let path = format!("/{NAME}{}", r.path.trim_end_matches('/'));
        let op = &doc["paths"][&path][r.method.as_str().to_lowercase()];
        assert!(op.is_object(), "{} {path} is not documented", r.method);
        assert_eq!(op["operationId"], r.operation_id);
        assert_eq!(op["x-dsx-access"], r.access.name(), "{}", r.operation_id);
        let signed = op["security"] == json!([{ "dsxHmac": [] }]);
        assert_eq!(signed, r.access != Access::Open, "{}", r.operation_id);
    }
    dsx_service::routes::check_operation_ids(routes.iter().map(|r| r.operation_id)).unwrap();
}

/// With DSX-HMAC on, an unsigned call to a signed route is a 401, the webhook handshake and
/// the open routes answer without one, and the document is hidden. Every route is routed.
#[tokio::test]
async fn every_route_enforces_its_access_rule() {
    let router = connector(true).await;
    for r in table() {
        let uri = format!("/{NAME}{}", r.path);
        let (status, body) = call(&router, r.method.clone(), &uri).await;
        let what = format!("{} {uri} ({:?}) unsigned: {status} {body}", r.method, r.access);
        match r.access {
            Access::Signed | Access::SignedOrHandshake => assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}"),
            Access::Open => assert_ne!(status, StatusCode::UNAUTHORIZED, "{what}"),
        }
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
        if r.path == "/openapi.json" {
            assert_eq!(status, StatusCode::NOT_FOUND, "hidden while DSX-HMAC is on");
        } else {
            assert!(!fallback(status, &body), "{what}");
        }
        if r.access == Access::SignedOrHandshake {
            let (status, _) = call(&router, r.method.clone(), &format!("{uri}?validationToken=abc")).await;
            assert_eq!(status, StatusCode::OK, "the validation handshake needs no signature");
        }
    }
    let (status, _) = call(&router, Method::GET, &format!("/{NAME}/")).await;
    assert_eq!(status, StatusCode::OK, "the home page is also at /<name>/");
    let (status, body) = call(&router, Method::GET, &format!("/{NAME}/no_such_route")).await;
    assert!(fallback(status, &body));
}

/// With DSX-HMAC off every route is reachable, and the document lists exactly the table.
#[tokio::test]
async fn routes_are_open_and_documented_when_auth_is_off() {
    let router = connector(false).await;
    let (status, doc) = call(&router, Method::GET, &format!("/{NAME}/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    // (Compared by paths: a schema default, the model's uuid, differs on every generation.)
    assert!(doc["paths"] == dsx_connector::openapi::document(NAME)["paths"], "the served document is the table's");
    for r in table() {
        // POST full_scan would start a scan in the background.
        if r.path == "/full_scan" {
            continue;
        }
        let uri = format!("/{NAME}{}", r.path);
        let (status, body) = call(&router, r.method.clone(), &uri).await;
        assert!(!matches!(status, StatusCode::UNAUTHORIZED | StatusCode::METHOD_NOT_ALLOWED), "{uri}: {status}");
        assert!(!fallback(status, &body), "{uri}: {body}");
    }
}

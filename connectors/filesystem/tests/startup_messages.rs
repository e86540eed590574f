//! What a first-time user reads from the real connector binary: readiness that says the same in
//! its body as in its status code, and no "verification disabled" line before an auth-on refusal.

use std::time::Duration;

use dsx_testkit::{free_port, workspace_bin, Service};
use serde_json::Value;

#[tokio::test]
async fn readyz_body_agrees_with_its_status() {
    let asset = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    // dsx-connect is not there: the connector serves but never registers.
    let mut connector = Service::spawn(
        workspace_bin("filesystem-connector").to_str().unwrap(),
        &["--listen", &format!("127.0.0.1:{port}")],
        &[
            ("DSXCONNECTOR_ASSET", asset.path().display().to_string()),
            ("DSXCONNECTOR_CONNECTOR_URL", format!("http://127.0.0.1:{port}")),
            ("DSXCONNECTOR_DSX_CONNECT_URL", format!("http://127.0.0.1:{}", free_port())),
            ("DSXCONNECTOR_DATA_DIR", data.path().display().to_string()),
        ],
        port,
    );
    connector.wait_http("/filesystem-connector/healthz", 200, Duration::from_secs(20));
    let resp = reqwest::get(format!("http://127.0.0.1:{port}/filesystem-connector/readyz")).await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["ready"], false, "{body}");
    assert_ne!(body["status"], "ready", "a 503 does not say ready: {body}");
    assert_eq!(body["detail"], "not_registered", "{body}");
}

#[test]
fn an_auth_on_refusal_is_not_preceded_by_verification_disabled() {
    let asset = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut connector = Service::spawn(
        workspace_bin("filesystem-connector").to_str().unwrap(),
        &["--listen", &format!("127.0.0.1:{port}")],
        &[
            ("DSXCONNECTOR_ASSET", asset.path().display().to_string()),
            ("DSXCONNECTOR_DSX_CONNECT_URL", format!("http://127.0.0.1:{}", free_port())),
            ("DSXCONNECTOR_DATA_DIR", data.path().display().to_string()),
            ("DSXCONNECTOR_AUTH__ENABLED", "true".into()),
            ("DSXCONNECTOR_LOG_LEVEL", "info".into()),
        ],
        port,
    );
    let code = connector.wait_exit(Duration::from_secs(20));
    let logs = connector.logs();
    assert_ne!(code, Some(0), "{logs}");
    assert!(logs.contains("needs an enrollment token"), "{logs}");
    assert!(!logs.contains("verification disabled"), "no contradictory line: {logs}");
}

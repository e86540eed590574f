//! What a first-time operator reads in the real binary's log: where the store is (the Redis URL
//! with its password redacted) at start and in every store error.

use std::time::Duration;

use dsx_testkit::{free_port, Service};

#[tokio::test]
async fn the_redis_url_is_logged_with_its_password_redacted() {
    // Nothing listens on this port: every store call fails.
    let redis_port = free_port();
    let port = free_port();
    let mut server = Service::spawn(
        dsx_testkit::workspace_bin("dsx-connect").to_str().unwrap(),
        &["serve", "--listen", &format!("127.0.0.1:{port}"), "--role", "api"],
        &[
            ("DSXCONNECT_REDIS_URL", format!("redis://:hunter2-secret@127.0.0.1:{redis_port}/0")),
            ("DSXCONNECT_LOG_LEVEL", "info".into()),
        ],
        port,
    );
    server.wait_http("/dsx-connect/api/v1/healthz", 200, Duration::from_secs(20));
    let shown = format!("redis://:***@127.0.0.1:{redis_port}/0");
    let resp = reqwest::get(format!("{}/dsx-connect/api/v1/connectors/list", server.base_url())).await.unwrap();
    assert_eq!(resp.status(), 503, "the store is down");
    let logs = server.logs();
    let serving = logs.lines().find(|l| l.contains("serving")).unwrap_or_else(|| panic!("{logs}"));
    assert!(serving.contains(&shown), "the startup line names the store: {logs}");
    let error = logs.lines().find(|l| l.contains("store error")).unwrap_or_else(|| panic!("{logs}"));
    assert!(error.contains(&shown), "the store error names the store: {logs}");
    let follow = logs.lines().find(|l| l.contains("cannot follow revocations")).unwrap_or_else(|| panic!("{logs}"));
    assert!(follow.contains(&shown), "{logs}");
    assert!(!logs.contains("hunter2"), "the password never appears: {logs}");
}

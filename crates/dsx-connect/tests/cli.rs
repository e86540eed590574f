//! The operator CLI against a running server: `sign` prints a curl command that verifies,
//! `admin` lists and revokes connectors.

mod common;

use std::process::Command;

use common::*;
use reqwest::{Method, StatusCode};

fn dsx_connect(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsx-connect"));
    cmd.args(args).env_remove("DSXCONNECT_OPERATOR_TOKEN").env_remove("DSXCONNECT_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run dsx-connect");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn sign_prints_a_curl_command_that_verifies() {
    let server = Server::start(Backend::Embedded, &[]);
    let keys = server.enroll().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{}\n", keys.secret)).unwrap();
    let url = server.url(&auth_check_path());
    let (ok, curl) = dsx_connect(
        &["sign", "--key-id", &keys.key_id, "--secret-file", secret_file.to_str().unwrap(), "post", &url],
        &[],
    );
    assert!(ok, "{curl}");
    assert!(curl.starts_with("curl -sS -X POST ") && !curl.contains(&keys.secret), "{curl}");
    let out = Command::new("bash").arg("-c").arg(curl.trim()).output().unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("auth_ok"), "{body}");
    // With a body, the signature covers it.
    let state_url = server.url(&format!("{PREFIX}/connectors/state/{}/ns/key", keys.uuid));
    let (_, curl) = dsx_connect(
        &[
            "sign",
            "--key-id",
            &keys.key_id,
            "--secret-file",
            secret_file.to_str().unwrap(),
            "PUT",
            &state_url,
            "{\"v\":1}",
        ],
        &[],
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{} -o /dev/null -w '%{{http_code}}'", curl.trim()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "204");
}

#[tokio::test]
async fn admin_lists_and_revokes_connectors() {
    let server = Server::start(Backend::Embedded, &[]);
    let keys = server.enroll().await;
    let base = server.svc.base_url();
    let env = [("DSXCONNECT_URL", base.as_str()), ("DSXCONNECT_OPERATOR_TOKEN", OPERATOR)];
    let (ok, out) = dsx_connect(&["admin", "connectors"], &env);
    assert!(ok, "{out}");
    assert!(out.contains(&keys.uuid.to_string()) && out.contains(&keys.key_id) && !out.contains(&keys.secret), "{out}");
    let (ok, out) = dsx_connect(&["admin", "connectors"], &[("DSXCONNECT_URL", base.as_str())]);
    assert!(!ok && out.contains("401"), "no token: refused with the status: {out}");
    let (ok, out) = dsx_connect(&["admin", "revoke", &keys.uuid.to_string()], &env);
    assert!(ok, "{out}");
    let resp = server.signed(&keys, Method::POST, &auth_check_path(), b"").await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "unknown_key_id");
    let (ok, out) = dsx_connect(&["admin", "dead-letters", "list"], &env);
    assert!(ok && out.contains("\"items\""), "{out}");
    let (ok, token) = dsx_connect(&["admin", "generate-token"], &[]);
    assert!(ok && token.trim().len() == 32, "{token}");
}

/// `admin rotate`: the next signed heartbeat gets a new key, the old one keeps working for the
/// grace period; `--revoke-now` refuses the old key at once and the connector re-enrolls.
#[tokio::test]
async fn admin_rotates_a_connector_key() {
    let server = Server::start(Backend::Embedded, &[("DSXCONNECT_AUTH__KEY_GRACE_SECONDS", "2".into())]);
    let keys = server.enroll().await;
    let base = server.svc.base_url();
    let env = [("DSXCONNECT_URL", base.as_str()), ("DSXCONNECT_OPERATOR_TOKEN", OPERATOR)];
    let uuid = keys.uuid.to_string();

    let (ok, out) = dsx_connect(&["admin", "rotate", &uuid], &env);
    assert!(ok && out.contains("rotation_scheduled"), "{out}");
    let list: serde_json::Value = server.operator_get("connectors/list").await.json().await.unwrap();
    assert_eq!(list[0]["auth"]["rotation_requested"], true, "{list}");
    // Until the heartbeat, the current key works.
    assert_eq!(server.signed(&keys, Method::POST, &auth_check_path(), b"").await.status(), StatusCode::OK);

    // The heartbeat (signed refresh, no ?rotate) receives a new key exactly once.
    let body = connector_body(keys.uuid, "http://127.0.0.1:9/filesystem-connector");
    let register = format!("{PREFIX}/connectors/register");
    let resp = server.signed(&keys, Method::POST, &register, body.to_string().as_bytes()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let json: serde_json::Value = resp.json().await.unwrap();
    let rotated = Keys::from_registration(keys.uuid, &json);
    assert_ne!(rotated.key_id, keys.key_id);
    let resp = server.signed(&rotated, Method::POST, &register, body.to_string().as_bytes()).await;
    let json: serde_json::Value = resp.json().await.unwrap();
    assert!(json.get("hmac_secret").is_none_or(|s| s.is_null()), "the next heartbeat is a plain refresh: {json}");
    // Old key in grace, then refused.
    assert_eq!(server.signed(&keys, Method::POST, &auth_check_path(), b"").await.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let resp = server.signed(&keys, Method::POST, &auth_check_path(), b"").await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "unknown_key_id");
    assert_eq!(server.signed(&rotated, Method::POST, &auth_check_path(), b"").await.status(), StatusCode::OK);

    // A leaked key: revoked at once, the connector stays listed and re-enrolls with its token.
    let (ok, out) = dsx_connect(&["admin", "rotate", "--revoke-now", &uuid], &env);
    assert!(ok && out.contains("key_revoked"), "{out}");
    let resp = server.signed(&rotated, Method::POST, &auth_check_path(), b"").await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "unknown_key_id");
    let resp = server.register(&body, Some(ENROLL)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let fresh = Keys::from_registration(keys.uuid, &resp.json().await.unwrap());
    assert_eq!(server.signed(&fresh, Method::POST, &auth_check_path(), b"").await.status(), StatusCode::OK);

    // Unknown connector, malformed uuid, no operator token.
    let (ok, out) = dsx_connect(&["admin", "rotate", &uuid::Uuid::new_v4().to_string()], &env);
    assert!(!ok && out.contains("404"), "{out}");
    let (ok, out) = dsx_connect(&["admin", "rotate", "not-a-uuid"], &env);
    assert!(!ok && out.contains("422"), "{out}");
    let (ok, out) = dsx_connect(&["admin", "rotate", &uuid], &[("DSXCONNECT_URL", base.as_str())]);
    assert!(!ok && out.contains("401"), "{out}");
    assert!(server.logs().contains("connector key rotation requested"), "audit-logged");
}

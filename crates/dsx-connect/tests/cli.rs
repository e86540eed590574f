//! The operator CLI against a running server: `sign` prints a curl command that verifies,
//! `admin` lists and revokes connectors.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use dsx_testkit::{free_port, workspace_bin, Service};
use reqwest::{Method, StatusCode};

fn dsx_connect(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(workspace_bin("dsx-connect"));
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
    let (ok, out) = dsx_connect(&["admin", "--json", "dead-letters", "list"], &env);
    assert!(ok && out.contains("\"items\""), "{out}");
    let (ok, out) = dsx_connect(&["admin", "dead-letters", "list"], &env);
    assert!(ok && out.contains("dead letter(s)") && !out.contains('{'), "a line for people: {out}");
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

const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(key).filter(|rest| rest.starts_with(' ')).map(str::trim))
}

/// The operator's first hour from the shell, against the real server and a real filesystem
/// connector: `full-scan`, `jobs`, `job`, `results [--job]`, `pause|resume|cancel`; tables for
/// people and `--json` for scripts; a `--url` with the API prefix; "no token" and "wrong token"
/// told apart; user errors on one line without a backtrace even with `RUST_BACKTRACE=1`.
#[tokio::test]
async fn admin_runs_and_follows_a_full_scan() {
    let server = Server::start(Backend::Embedded, &[]);
    let asset = tempfile::tempdir().unwrap();
    for (name, content) in [("a.txt", "hello"), ("sub/b.txt", "world"), ("sub/eicar.com", EICAR)] {
        let path = asset.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let connector_data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut connector = Service::spawn(
        workspace_bin("filesystem-connector").to_str().unwrap(),
        &["--listen", &format!("127.0.0.1:{port}")],
        &[
            ("DSXCONNECTOR_ASSET", asset.path().display().to_string()),
            ("DSXCONNECTOR_CONNECTOR_URL", format!("http://127.0.0.1:{port}")),
            ("DSXCONNECTOR_DSX_CONNECT_URL", server.svc.base_url()),
            ("DSXCONNECTOR_DATA_DIR", connector_data.path().display().to_string()),
            ("DSXCONNECTOR_AUTH__ENABLED", "true".into()),
            ("DSXCONNECT_ENROLLMENT_TOKEN", ENROLL.into()),
            ("DSXCONNECTOR_ITEM_ACTION", "nothing".into()),
        ],
        port,
    );
    connector.wait_http("/filesystem-connector/readyz", 200, Duration::from_secs(20));
    let uuid = std::fs::read_to_string(connector_data.path().join("connector_uuid.txt")).unwrap().trim().to_owned();

    // A --url that already ends in the API prefix (and a slash) works.
    let api_url = format!("{}{PREFIX}/", server.svc.base_url());
    let env = [("DSXCONNECT_URL", api_url.as_str()), ("DSXCONNECT_OPERATOR_TOKEN", OPERATOR)];
    let (ok, out) = dsx_connect(&["admin", "connectors"], &env);
    assert!(ok && out.contains(&uuid) && out.starts_with("UUID"), "{out}");

    let (ok, out) = dsx_connect(&["admin", "full-scan", &uuid], &env);
    assert!(ok, "{out}");
    let job = out
        .lines()
        .find_map(|l| l.strip_prefix("full scan started: job "))
        .unwrap_or_else(|| panic!("{out}"))
        .trim()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&job).is_ok(), "{out}");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) = dsx_connect(&["admin", "--json", "job", &job], &env);
        if ok {
            let json: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
            if json["status"] == "completed" {
                assert_eq!(json["processed_count"], 3, "{json}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "the job did not complete: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Tables for people.
    let (ok, out) = dsx_connect(&["admin", "job", &job], &env);
    assert!(ok && field(&out, "status") == Some("completed") && field(&out, "processed_count") == Some("3"), "{out}");
    let (ok, out) = dsx_connect(&["admin", "jobs"], &env);
    assert!(ok && out.starts_with("JOB ID"), "{out}");
    let row = out.lines().find(|l| l.starts_with(&job)).unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("completed"), "{out}");
    let (ok, out) = dsx_connect(&["admin", "results", "--job", &job], &env);
    assert!(ok && out.starts_with("VERDICT"), "{out}");
    assert_eq!(out.lines().count(), 4, "a header and three rows: {out}");
    assert!(out.lines().any(|l| l.starts_with("Malicious") && l.ends_with("eicar.com")), "{out}");
    // The ACTION column is the result's status (the connector's action is `nothing` here).
    assert!(out.lines().skip(1).all(|l| l.contains("  scanned  ")), "{out}");
    // JSON for scripts.
    let (ok, out) = dsx_connect(&["admin", "--json", "results", "--job", &job], &env);
    assert!(ok, "{out}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(rows.as_array().map(Vec::len), Some(3), "{out}");
    let (ok, out) = dsx_connect(&["admin", "results", "--job", "no-such-job"], &env);
    assert!(ok && out.trim() == "VERDICT  JOB ID  ACTION  LOCATION", "{out}");

    // Job control (a resumed job whose items are all done reads as completed again).
    for (verb, done, status) in
        [("pause", "paused", "paused"), ("resume", "resumed", "completed"), ("cancel", "cancelled", "cancelled")]
    {
        let (ok, out) = dsx_connect(&["admin", verb, &job], &env);
        assert!(ok && out.trim() == format!("job {job} {done}"), "{verb}: {out}");
        let (_, out) = dsx_connect(&["admin", "--json", "job", &job], &env);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["status"], status, "{verb}: {json}");
    }

    // Errors: one line, no backtrace, and "no token" is not "wrong token".
    let bt = [("DSXCONNECT_URL", api_url.as_str()), ("RUST_BACKTRACE", "1")];
    let (ok, no_token) = dsx_connect(&["admin", "jobs"], &bt);
    assert!(!ok && no_token.contains("401") && no_token.contains("no operator token given"), "{no_token}");
    let wrong = [("DSXCONNECT_URL", api_url.as_str()), ("DSXCONNECT_OPERATOR_TOKEN", "wrong"), ("RUST_BACKTRACE", "1")];
    let (ok, wrong_token) = dsx_connect(&["admin", "jobs"], &wrong);
    assert!(!ok && wrong_token.contains("401") && wrong_token.contains("refused"), "{wrong_token}");
    assert!(!wrong_token.contains("no operator token given"), "{wrong_token}");
    let full_bt =
        [("DSXCONNECT_URL", api_url.as_str()), ("DSXCONNECT_OPERATOR_TOKEN", OPERATOR), ("RUST_BACKTRACE", "1")];
    let (ok, unknown_job) = dsx_connect(&["admin", "pause", "no-such-job"], &full_bt);
    assert!(!ok && unknown_job.contains("404"), "{unknown_job}");
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let (ok, down) = dsx_connect(&["admin", "--url", &unreachable, "jobs"], &full_bt);
    assert!(!ok && down.contains("cannot reach"), "{down}");
    for out in [&no_token, &wrong_token, &unknown_job, &down] {
        assert_eq!(out.trim_end().lines().count(), 1, "one line: {out}");
        assert!(out.starts_with("error: ") && !out.to_lowercase().contains("backtrace"), "{out}");
    }
}

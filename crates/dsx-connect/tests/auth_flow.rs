//! The whole enrollment → DSX-HMAC → rotation → unregister flow against the real binary,
//! once on a real redis-server and once on the embedded store.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use dsx_hmac::{generate_nonce, unix_now};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

async fn full_flow(backend: Backend) {
    // Short grace so the test can watch the old key die.
    let server = Server::start(backend, &[("DSXCONNECT_AUTH__KEY_GRACE_SECONDS", "2".into())]);
    let uuid = Uuid::new_v4();
    let connector = StandInConnector::start(KeyMode::Lost).await;
    let url = connector.url.as_str();

    // 1. Enrollment: 201 with credentials of the contract's shapes.
    let resp = server.register(&connector_body(uuid, url), Some(ENROLL)).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["status"], "success");
    assert_eq!(json["message"], "registered");
    assert_eq!(json["description"], format!("filesystem-connector ({uuid}) @ {url}"));
    assert_eq!(json["connector_uuid"], uuid.to_string());
    assert_eq!(json["token_type"], "Bearer");
    assert!(json["expires_in"].as_u64().is_some());
    let keys = Keys::from_registration(uuid, &json);
    assert_eq!(keys.key_id.len(), 16);
    assert_eq!(STANDARD.decode(&keys.key_id).unwrap().len(), 12);
    assert_eq!(keys.secret.len(), 44);
    assert_eq!(STANDARD.decode(&keys.secret).unwrap().len(), 32);

    // 2. Signed auth_check.
    let path = auth_check_path();
    let (ts, nonce) = (unix_now(), generate_nonce());
    let auth = keys.sign("POST", &path, ts, &nonce, b"");
    let resp = server.send(Method::POST, &path, Some(auth.clone()), b"").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json, serde_json::json!({"status":"success","message":"auth_ok","description":"HMAC verified"}));

    // 3. The same request again is a replay (H3), with the DSX-HMAC challenge header.
    let resp = server.send(Method::POST, &path, Some(auth), b"").await;
    assert_eq!(resp.headers()["www-authenticate"], "DSX-HMAC");
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "replayed_request");

    // 4. Unsigned, tampered, stale, `|` in the nonce (H7), unknown key.
    let resp = server.send(Method::POST, &path, None, b"").await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "missing_hmac");
    let signed_for_other_body = keys.sign("POST", &path, unix_now(), &generate_nonce(), b"{\"a\":1}");
    let resp = server.send(Method::POST, &path, Some(signed_for_other_body), b"{\"a\":2}").await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "bad_signature");
    let stale = keys.sign("POST", &path, unix_now() - 120, &generate_nonce(), b"");
    let resp = server.send(Method::POST, &path, Some(stale), b"").await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "stale_request");
    let piped = keys.sign("POST", &path, unix_now(), "abc|old", b"");
    let resp = server.send(Method::POST, &path, Some(piped), b"").await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "malformed_hmac");
    let unknown = Keys { key_id: "ZZZZZZZZZZZZZZZZ".into(), ..keys.clone() };
    let resp = server.signed(&unknown, Method::POST, &path, b"").await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "unknown_key_id");

    // 5. Unsigned re-registration (Python heartbeat) of a live connector that holds its key:
    //    refreshed, and no key for the token holder (H1, H11). dsx-connect checked the key
    //    with a signed call to the registered URL.
    connector.set(KeyMode::Holds(keys.clone()));
    let probes = connector.calls();
    let resp = server.register(&connector_body(uuid, url), Some(ENROLL)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["message"], "refreshed");
    assert!(json.get("hmac_secret").is_none() && json.get("hmac_key_id").is_none(), "{json}");
    assert_eq!(connector.calls(), probes + 2, "a signed key check, then one signed with a random key");
    assert_eq!(server.signed(&keys, Method::POST, &path, b"").await.status(), StatusCode::OK);

    //    A connector that cannot be checked (starting, overloaded): 503 with Retry-After, no key.
    connector.set(KeyMode::Busy);
    let resp = server.register(&connector_body(uuid, url), Some(ENROLL)).await;
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(detail(resp, StatusCode::SERVICE_UNAVAILABLE).await, "key_check_unavailable");

    //    A connector that lost its key (restarted): a new key; the old one lives out its grace.
    connector.set(KeyMode::Lost);
    let resp = server.register(&connector_body(uuid, url), Some(ENROLL)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["message"], "refreshed");
    let rotated = Keys::from_registration(uuid, &json);
    assert_ne!(rotated.secret, keys.secret, "an existing secret is never disclosed again");
    assert_ne!(rotated.key_id, keys.key_id);
    assert_eq!(server.signed(&keys, Method::POST, &path, b"").await.status(), StatusCode::OK, "old key inside grace");
    assert_eq!(server.signed(&rotated, Method::POST, &path, b"").await.status(), StatusCode::OK);

    // 6. An unsigned caller cannot redirect the live connector (H1).
    let resp = server.register(&connector_body(uuid, "http://evil.example:1/x"), Some(ENROLL)).await;
    assert_eq!(detail(resp, StatusCode::CONFLICT).await, "url_conflict");

    // 7. Nor can a key obtained with the token alone: a recovered key keeps the URL.
    let new_url = "http://127.0.0.1:10/filesystem-connector";
    let moved = serde_json::to_vec(&connector_body(uuid, new_url)).unwrap();
    let resp = server.signed(&rotated, Method::POST, &format!("{PREFIX}/connectors/register"), &moved).await;
    assert_eq!(detail(resp, StatusCode::CONFLICT).await, "url_conflict");
    //    A signed refresh at the same URL: 200, no secret.
    let body = serde_json::to_vec(&connector_body(uuid, url)).unwrap();
    let resp = server.signed(&rotated, Method::POST, &format!("{PREFIX}/connectors/register"), &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["message"], "refreshed");
    assert!(json.get("hmac_secret").is_none() && json.get("hmac_key_id").is_none(), "{json}");
    let listed: Value = server.operator_get("connectors/list").await.json().await.unwrap();
    let row = listed.as_array().unwrap().iter().find(|c| c["uuid"] == uuid.to_string()).expect("listed");
    assert_eq!(row["url"], url);
    assert_eq!(row["auth"]["hmac_key_id"], rotated.key_id);
    assert_eq!(row["auth"]["registered_via"], "hmac");

    //    The connector's own first key (enrolled while nothing was live) may move it.
    let other = server.enroll().await;
    let other_body = serde_json::to_vec(&connector_body(other.uuid, new_url)).unwrap();
    let resp = server.signed(&other, Method::POST, &format!("{PREFIX}/connectors/register"), &other_body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let listed: Value = server.operator_get("connectors/list").await.json().await.unwrap();
    let row = listed.as_array().unwrap().iter().find(|c| c["uuid"] == other.uuid.to_string()).expect("listed");
    assert_eq!(row["url"], new_url);

    // After the grace period the old key is revoked.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let resp = server.signed(&keys, Method::POST, &path, b"").await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "unknown_key_id");
    assert_eq!(server.signed(&rotated, Method::POST, &path, b"").await.status(), StatusCode::OK);

    // 8. Signed rotation on request. A key rotated from a recovered one is recovered too.
    let resp = server.signed(&rotated, Method::POST, &format!("{PREFIX}/connectors/register?rotate=true"), &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let third = Keys::from_registration(uuid, &resp.json().await.unwrap());
    assert_ne!(third.secret, rotated.secret);
    let resp = server.signed(&third, Method::POST, &format!("{PREFIX}/connectors/register"), &moved).await;
    assert_eq!(detail(resp, StatusCode::CONFLICT).await, "url_conflict");

    // 9. Unregister with its own key: 204, and every key of it is revoked (H6, H12).
    let resp = server.signed(&third, Method::DELETE, &format!("{PREFIX}/connectors/unregister/{uuid}"), b"").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for k in [&third, &rotated] {
        let resp = server.signed(k, Method::POST, &path, b"").await;
        assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "unknown_key_id");
    }
    let resp = server.operator(Method::DELETE, &format!("connectors/unregister/{uuid}")).await;
    assert_eq!(detail(resp, StatusCode::NOT_FOUND).await, "connector_not_found");

    // No secret ever reached the log.
    let logs = server.logs();
    for secret in [&keys.secret, &rotated.secret, &third.secret] {
        assert!(!logs.contains(secret.as_str()), "secret leaked into the log");
    }
    assert!(!logs.contains(ENROLL) && !logs.contains(OPERATOR), "token leaked into the log");
}

#[tokio::test]
async fn full_flow_on_redis() {
    full_flow(Backend::Redis).await;
}

#[tokio::test]
async fn full_flow_on_embedded_store() {
    full_flow(Backend::Embedded).await;
}

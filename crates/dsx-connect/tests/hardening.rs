//! One test per closed Python 1.x weakness (docs/authentication.md) that applies to the registry and
//! verification paths, plus the bad-input answers. Each runs the real binary.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dsx_hmac::{generate_nonce, unix_now};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

fn embedded(extra: &[(&'static str, String)]) -> Server {
    Server::start(Backend::Embedded, extra)
}

#[tokio::test]
async fn h2_auth_enabled_without_token_refuses_to_start_and_has_no_default_token() {
    let (code, logs) = start_expecting_refusal(&[("DSXCONNECT_AUTH__ENABLED", "true".into())]);
    assert_ne!(code, Some(0));
    assert!(logs.contains("no enrollment token is configured"), "{logs}");

    // A worker never checks an enrollment token: it starts without one.
    let dir = tempfile::tempdir().unwrap();
    let port = dsx_testkit::free_port();
    let mut worker = dsx_testkit::Service::spawn(
        dsx_testkit::workspace_bin("dsx-connect").to_str().unwrap(),
        &["serve", "--role", "worker", "--listen", &format!("127.0.0.1:{port}")],
        &[("DSXCONNECT_AUTH__ENABLED", "true".into()), ("DSXCONNECT_DATA_DIR", dir.path().display().to_string())],
        port,
    );
    worker.wait_http(&format!("{PREFIX}/healthz"), 200, std::time::Duration::from_secs(20));
    assert!(!worker.logs().contains("no operator token"), "no operator-API warning from a worker");
    worker.kill();

    // With a real token configured, the Python default `dev-enroll` is just a wrong token.
    let server = embedded(&[]);
    let resp = server.register(&connector_body(Uuid::new_v4(), "http://127.0.0.1:9/c"), Some("dev-enroll")).await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "invalid_enrollment_token");
    let resp = server.register(&connector_body(Uuid::new_v4(), "http://127.0.0.1:9/c"), None).await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "invalid_enrollment_token");
}

#[tokio::test]
async fn enrollment_token_accepted_as_bearer_any_case_and_trimmed() {
    let server = embedded(&[]);
    for (header, value) in
        [("authorization", format!("bearer {ENROLL}")), ("x-enrollment-token", format!("  {ENROLL} "))]
    {
        let resp = server
            .http
            .post(server.api("connectors/register"))
            .header(header, value)
            .json(&connector_body(Uuid::new_v4(), "http://127.0.0.1:9/c"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{header}");
    }
}

#[tokio::test]
async fn h3_replay_is_rejected_even_across_paths_sharing_a_nonce() {
    let server = embedded(&[]);
    let keys = server.enroll().await;
    let nonce = generate_nonce();
    let path = auth_check_path();
    let first = keys.sign("POST", &path, unix_now(), &nonce, b"");
    assert_eq!(server.send(Method::POST, &path, Some(first.clone()), b"").await.status(), StatusCode::OK);
    let resp = server.send(Method::POST, &path, Some(first), b"").await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "replayed_request");
    // A bad signature with a fresh nonce is rejected without burning the nonce.
    let nonce2 = generate_nonce();
    let forged = format!("DSX-HMAC key_id={}, ts={}, nonce={nonce2}, sig=AAAA", keys.key_id, unix_now());
    let resp = server.send(Method::POST, &path, Some(forged), b"").await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "bad_signature");
    let good = keys.sign("POST", &path, unix_now(), &nonce2, b"");
    assert_eq!(server.send(Method::POST, &path, Some(good), b"").await.status(), StatusCode::OK);
}

/// The intake routes record their nonce with the enqueue (one store step); every way through
/// them must still refuse a replay: a queued request, a refused one, an empty batch, a bad
/// body, and a nonce first used on another route. Nothing is queued twice.
#[tokio::test]
async fn intake_routes_refuse_replays_on_every_path() {
    for backend in [Backend::Embedded, Backend::Redis] {
        let server = Server::start(backend, &[]);
        let keys = server.enroll().await;
        let single = format!("{PREFIX}/scan/request");
        let batch = format!("{PREFIX}/scan/request_batch");
        let job = Uuid::new_v4().to_string();
        let one = serde_json::to_vec(&json!({"location": "/r1", "metainfo": "m", "scan_job_id": job})).unwrap();
        let two = serde_json::to_vec(&json!({"requests": [
            {"location": "/r2", "metainfo": "m", "scan_job_id": job},
            {"location": "/r3", "metainfo": "m", "scan_job_id": job},
        ]}))
        .unwrap();
        let cases: [(&str, &[u8], StatusCode); 5] = [
            (&single, &one, StatusCode::ACCEPTED),
            (&batch, &two, StatusCode::ACCEPTED),
            (&batch, br#"{"requests": []}"#, StatusCode::ACCEPTED),
            (&single, br#"{"metainfo": "no location"}"#, StatusCode::UNPROCESSABLE_ENTITY),
            (&batch, b"not json", StatusCode::UNPROCESSABLE_ENTITY),
        ];
        for (path, body, first) in cases {
            let auth = keys.sign("POST", path, unix_now(), &generate_nonce(), body);
            let resp = server.send(Method::POST, path, Some(auth.clone()), body).await;
            assert_eq!(resp.status(), first, "{backend:?} {path}");
            let resp = server.send(Method::POST, path, Some(auth), body).await;
            assert_eq!(resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("DSX-HMAC"));
            assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "replayed_request", "{backend:?} {path}");
        }
        // A nonce used on another route is spent here too, and the other way round.
        let nonce = generate_nonce();
        let check = auth_check_path();
        let auth = keys.sign("POST", &check, unix_now(), &nonce, b"");
        assert_eq!(server.send(Method::POST, &check, Some(auth), b"").await.status(), StatusCode::OK);
        let auth = keys.sign("POST", &single, unix_now(), &nonce, &one);
        let resp = server.send(Method::POST, &single, Some(auth), &one).await;
        assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "replayed_request", "{backend:?}");
        let nonce = generate_nonce();
        let auth = keys.sign("POST", &single, unix_now(), &nonce, &one);
        assert_eq!(server.send(Method::POST, &single, Some(auth), &one).await.status(), StatusCode::ACCEPTED);
        let auth = keys.sign("POST", &check, unix_now(), &nonce, b"");
        let resp = server.send(Method::POST, &check, Some(auth), b"").await;
        assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "replayed_request", "{backend:?}");
        // Exactly the accepted requests' items were queued: 1 + 2 + 1.
        let job_now: Value = server.operator_get(&format!("scan/jobs/{job}")).await.json().await.unwrap();
        assert_eq!(job_now["enqueued_count"], 4, "{backend:?}");
        // Refused replays are counted as authentication failures.
        let metrics =
            server.http.get(server.url("/metrics")).bearer_auth(OPERATOR).send().await.unwrap().text().await.unwrap();
        let replays: f64 = metrics
            .lines()
            .find(|l| l.starts_with("dsxconnect_auth_failures") && l.contains("replayed_request"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{backend:?}: no replay count in {metrics}"));
        assert_eq!(replays, 7.0, "{backend:?}: 5 replays + 2 across routes");
    }
}

/// Concurrent intake requests are committed together (docs/pipeline.md, "Intake"); each still
/// gets its own answer: copies of one signed request sent at once are queued once and the
/// rest refused as replays, while distinct requests sent alongside are all queued.
#[tokio::test]
async fn concurrent_intake_requests_are_answered_one_by_one() {
    for backend in [Backend::Embedded, Backend::Redis] {
        let server = std::sync::Arc::new(Server::start(backend, &[]));
        let keys = server.enroll().await;
        let path = format!("{PREFIX}/scan/request");
        let job = Uuid::new_v4().to_string();
        let body = |n: u32| {
            serde_json::to_vec(&json!({"location": format!("/c{n}"), "metainfo": "m", "scan_job_id": job})).unwrap()
        };
        let copied = body(0);
        let copied_auth = keys.sign("POST", &path, unix_now(), &generate_nonce(), &copied);
        let mut sent = tokio::task::JoinSet::new();
        for n in 0..48u32 {
            let (server, path) = (std::sync::Arc::clone(&server), path.clone());
            let (auth, body) = if n % 4 == 0 {
                (copied_auth.clone(), copied.clone())
            } else {
                (keys.sign("POST", &path, unix_now(), &generate_nonce(), &body(n)), body(n))
            };
            sent.spawn(async move {
                let resp = server.send(Method::POST, &path, Some(auth), &body).await;
                let status = resp.status();
                let answer: Value = resp.json().await.unwrap();
                (n % 4 == 0, status, answer)
            });
        }
        let mut task_ids = std::collections::HashSet::new();
        let (mut copies_queued, mut copies_refused) = (0, 0);
        while let Some(joined) = sent.join_next().await {
            let (copy, status, answer) = joined.unwrap();
            match status {
                StatusCode::ACCEPTED => {
                    assert!(task_ids.insert(answer["id"].as_str().unwrap().to_owned()), "{backend:?}: {answer}");
                    copies_queued += u32::from(copy);
                }
                StatusCode::UNAUTHORIZED if copy => {
                    assert_eq!(answer["detail"], "replayed_request", "{backend:?}");
                    copies_refused += 1;
                }
                other => panic!("{backend:?}: {other} {answer}"),
            }
        }
        assert_eq!((copies_queued, copies_refused), (1, 11), "{backend:?}");
        assert_eq!(task_ids.len(), 37, "{backend:?}: 36 distinct requests and one copy");
        let job_now: Value = server.operator_get(&format!("scan/jobs/{job}")).await.json().await.unwrap();
        assert_eq!(job_now["enqueued_count"], 37, "{backend:?}");
    }
}

#[tokio::test]
async fn replay_cache_survives_restart_on_embedded_store() {
    let mut server = embedded(&[]);
    let keys = server.enroll().await;
    let path = auth_check_path();
    let auth = keys.sign("POST", &path, unix_now(), &generate_nonce(), b"");
    assert_eq!(server.send(Method::POST, &path, Some(auth.clone()), b"").await.status(), StatusCode::OK);
    // The replay cache is group-committed every 200 ms; then even kill -9 keeps it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    // Credentials are durable and the nonce is still remembered.
    assert_eq!(server.signed(&keys, Method::POST, &path, b"").await.status(), StatusCode::OK);
    let resp = server.send(Method::POST, &path, Some(auth), b"").await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "replayed_request");
}

#[tokio::test]
async fn malformed_authorization_headers_are_401_with_codes() {
    let server = embedded(&[]);
    let keys = server.enroll().await;
    let path = auth_check_path();
    let ts = unix_now();
    let good = keys.sign("POST", &path, ts, "bm9uY2Utbm9uY2Ut", b"");
    let sig = good.rsplit("sig=").next().unwrap().to_owned();
    let cases = [
        ("Bearer abc".to_owned(), "missing_hmac"),
        ("DSX-HMAC".to_owned(), "missing_hmac"),
        (format!("DSX-HMAC key_id={}, garbage, sig={sig}", keys.key_id), "malformed_hmac"),
        (format!("DSX-HMAC key_id={}, ts=+{ts}, nonce=n1, sig={sig}", keys.key_id), "malformed_hmac"),
        (format!("DSX-HMAC key_id={}, ts={ts}, sig={sig}", keys.key_id), "malformed_hmac"),
        (format!("DSX-HMAC key_id={}, ts={ts}, nonce={}, sig={sig}", keys.key_id, "n".repeat(129)), "malformed_hmac"),
        (format!("DSX-HMAC key_id={}, ts={ts}, nonce=n, sig={}", keys.key_id, "A".repeat(1100)), "malformed_hmac"),
        (format!("DSX-HMAC ts={ts}, nonce=n2, sig={sig}"), "missing_key_id"),
    ];
    for (header, code) in cases {
        let resp = server.send(Method::POST, &path, Some(header.clone()), b"").await;
        assert_eq!(resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("DSX-HMAC"));
        assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, code, "{header}");
    }
}

#[tokio::test]
async fn h8_percent_encoded_paths_verify_in_encoded_and_decoded_form() {
    let server = embedded(&[]);
    let keys = server.enroll().await;
    let encoded = format!("{PREFIX}/connectors/state/{}/cursor/last%20key", keys.uuid);
    let decoded = format!("{PREFIX}/connectors/state/{}/cursor/last key", keys.uuid);
    // Our signers sign the encoded path; a Python-server-style signer signs the decoded one.
    for signed in [&encoded, &decoded] {
        let auth = keys.sign("PUT", signed, unix_now(), &generate_nonce(), b"v1");
        let resp = server.send(Method::PUT, &encoded, Some(auth), b"v1").await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "signed {signed}");
    }
    let resp = server.signed(&keys, Method::GET, &encoded, b"").await;
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"value": "v1"}));
}

#[tokio::test]
async fn h10_registration_is_rate_limited_per_address() {
    let server = embedded(&[("DSXCONNECT_AUTH__REGISTER_RATE_PER_MINUTE", "3".into())]);
    for _ in 0..3 {
        let resp = server.register(&connector_body(Uuid::new_v4(), "http://127.0.0.1:9/c"), Some("wrong")).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = server.register(&connector_body(Uuid::new_v4(), "http://127.0.0.1:9/c"), Some(ENROLL)).await;
    let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(detail(resp, StatusCode::TOO_MANY_REQUESTS).await, "rate_limited");
}

#[tokio::test]
async fn h12_a_key_can_only_act_for_its_own_connector() {
    let server = embedded(&[]);
    let alice = server.enroll().await;
    let bob = server.enroll().await;
    let resp =
        server.signed(&alice, Method::DELETE, &format!("{PREFIX}/connectors/unregister/{}", bob.uuid), b"").await;
    assert_eq!(detail(resp, StatusCode::FORBIDDEN).await, "connector_mismatch");
    let resp = server.signed(&alice, Method::PUT, &format!("{PREFIX}/connectors/state/{}/ns/k", bob.uuid), b"x").await;
    assert_eq!(detail(resp, StatusCode::FORBIDDEN).await, "connector_mismatch");
    let resp = server.signed(&alice, Method::GET, &format!("{PREFIX}/connectors/state/{}/ns/k", bob.uuid), b"").await;
    assert_eq!(detail(resp, StatusCode::FORBIDDEN).await, "connector_mismatch");
    // Signed registration for someone else's uuid.
    let body = serde_json::to_vec(&connector_body(bob.uuid, "http://evil/x")).unwrap();
    let resp = server.signed(&alice, Method::POST, &format!("{PREFIX}/connectors/register"), &body).await;
    assert_eq!(detail(resp, StatusCode::FORBIDDEN).await, "connector_mismatch");
    // Bob is untouched; an operator may unregister him.
    assert_eq!(server.signed(&bob, Method::POST, &auth_check_path(), b"").await.status(), StatusCode::OK);
    let resp = server.operator(Method::DELETE, &format!("connectors/unregister/{}", bob.uuid)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = server.signed(&bob, Method::POST, &auth_check_path(), b"").await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "unknown_key_id");
    // A wrong operator token is refused.
    let resp = server
        .http
        .delete(server.api(&format!("connectors/unregister/{}", alice.uuid)))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "invalid_operator_token");
}

#[tokio::test]
async fn operator_routes_need_the_operator_token_and_never_show_secrets() {
    let server = embedded(&[]);
    let keys = server.enroll().await;
    let resp = server.http.get(server.api("connectors/list")).send().await.unwrap();
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "invalid_operator_token");
    let resp = server.http.get(server.api("connectors/list")).bearer_auth(ENROLL).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "an enrollment token is not an operator token");
    let resp = server.operator_get("connectors/list").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(text.contains(&keys.key_id));
    assert!(!text.contains(&keys.secret) && !text.contains(ENROLL));
    assert!(text.contains("DSXCONNECT_AUTH__ENROLLMENT_TOKEN"), "token slot is listed: {text}");
    // Open routes stay open.
    for path in ["healthz", "readyz", "version", "meta", "test/connection"] {
        assert_eq!(server.http.get(server.api(path)).send().await.unwrap().status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn break_glass_is_off_by_default_and_logged_when_on() {
    let server = embedded(&[]);
    let resp =
        server.http.post(server.url(&auth_check_path())).header("X-Enrollment-Token", ENROLL).send().await.unwrap();
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "missing_hmac");

    let server = embedded(&[("DSXCONNECT_AUTH__BREAK_GLASS", "true".into())]);
    let resp =
        server.http.post(server.url(&auth_check_path())).header("X-Enrollment-Token", ENROLL).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp =
        server.http.post(server.url(&auth_check_path())).header("X-Enrollment-Token", "wrong").send().await.unwrap();
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "invalid_enrollment_token");
    let logs = server.logs();
    assert!(logs.contains("WARN") && logs.contains("break-glass: enrollment token accepted"), "{logs}");
    assert!(!logs.contains(ENROLL));
}

#[tokio::test]
async fn bad_bodies_get_clear_errors() {
    let server = embedded(&[("DSXCONNECT_MAX_BODY_BYTES", "4096".into())]);
    let resp = server
        .http
        .post(server.api("connectors/register"))
        .header("X-Enrollment-Token", ENROLL)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = server.register(&json!({"uuid": Uuid::new_v4(), "url": 5}), Some(ENROLL)).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["detail"][0]["loc"], json!(["body", "url"]));
    let resp = server.register(&json!({"uuid": "not-a-uuid"}), Some(ENROLL)).await;
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["detail"][0]["loc"], json!(["body", "uuid"]));

    // Oversized bodies: 413 on signed routes and on registration.
    let keys = server.enroll().await;
    let big = vec![b'x'; 8192];
    let resp = server.signed(&keys, Method::POST, &auth_check_path(), &big).await;
    assert_eq!(detail(resp, StatusCode::PAYLOAD_TOO_LARGE).await, "body_too_large");
    let resp = server
        .http
        .post(server.api("connectors/register"))
        .header("X-Enrollment-Token", ENROLL)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(detail(resp, StatusCode::PAYLOAD_TOO_LARGE).await, "body_too_large");

    // Malformed uuid in a path, unknown uuid, unknown route.
    let resp = server.operator(Method::DELETE, "connectors/unregister/nope").await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = server.operator(Method::DELETE, &format!("connectors/unregister/{}", Uuid::new_v4())).await;
    assert_eq!(detail(resp, StatusCode::NOT_FOUND).await, "connector_not_found");
    let resp = server.http.get(server.api("no/such/route")).send().await.unwrap();
    assert_eq!(detail(resp, StatusCode::NOT_FOUND).await, "not_found");
}

#[tokio::test]
async fn token_files_rotate_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("enrollment");
    std::fs::write(&file, "old-token\n").unwrap();
    let server = embedded(&[
        ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN", String::new()),
        ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN_FILE", file.display().to_string()),
    ]);
    let body = connector_body(Uuid::new_v4(), "http://127.0.0.1:9/c");
    assert_eq!(server.register(&body, Some("old-token")).await.status(), StatusCode::CREATED);
    std::fs::write(&file, "new-token\n").unwrap();
    server.svc.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status =
            server.register(&connector_body(Uuid::new_v4(), "http://127.0.0.1:9/c"), Some("new-token")).await.status();
        if status == StatusCode::CREATED {
            break;
        }
        assert!(Instant::now() < deadline, "new token never accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = server.register(&connector_body(Uuid::new_v4(), "http://127.0.0.1:9/c"), Some("old-token")).await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "invalid_enrollment_token");
}

#[tokio::test]
async fn python_heartbeats_keep_the_key_and_a_connector_that_lost_it_re_enrolls() {
    let server = embedded(&[]);
    let connector = StandInConnector::start(KeyMode::Lost).await;
    let uuid = Uuid::new_v4();
    let resp = server.register(&connector_body(uuid, &connector.url), Some(ENROLL)).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let keys = Keys::from_registration(uuid, &resp.json().await.unwrap());

    // A Python connector that verifies inbound calls re-registers every 60 s with the token
    // only: its key stays the one it knows, so dsx-connect's calls keep verifying.
    connector.set(KeyMode::Holds(keys.clone()));
    for _ in 0..3 {
        let resp = server.register(&connector_body(uuid, &connector.url), Some(ENROLL)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let json: Value = resp.json().await.unwrap();
        assert!(json.get("hmac_secret").is_none(), "no key churn: {json}");
        assert_eq!(server.signed(&keys, Method::POST, &auth_check_path(), b"").await.status(), StatusCode::OK);
    }

    // One that does not verify (the 1.x default) cannot show its key: it gets a fresh one each
    // time, as from 1.x, and the previous one keeps working through the grace period.
    connector.set(KeyMode::NoVerify);
    let resp = server.register(&connector_body(uuid, &connector.url), Some(ENROLL)).await;
    let fresh = Keys::from_registration(uuid, &resp.json().await.unwrap());
    assert_ne!(fresh.secret, keys.secret);
    for k in [&keys, &fresh] {
        assert_eq!(server.signed(k, Method::POST, &auth_check_path(), b"").await.status(), StatusCode::OK);
    }

    // One of ours, restarted and not yet enrolled (`503 not_enrolled`): a new key at once.
    connector.set(KeyMode::NotEnrolled);
    let resp = server.register(&connector_body(uuid, &connector.url), Some(ENROLL)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let ours = Keys::from_registration(uuid, &resp.json().await.unwrap());
    assert_eq!(server.signed(&ours, Method::POST, &auth_check_path(), b"").await.status(), StatusCode::OK);

    // Restarted without its key: a new key at once.
    connector.set(KeyMode::Lost);
    let resp = server.register(&connector_body(uuid, &connector.url), Some(ENROLL)).await;
    let again = Keys::from_registration(uuid, &resp.json().await.unwrap());
    assert_eq!(server.signed(&again, Method::POST, &auth_check_path(), b"").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_key_check_against_a_stopped_connector_defers_and_the_expired_registration_is_free_again() {
    let server = embedded(&[("DSXCONNECT_PRESENCE_TTL_SECONDS", "2".into())]);
    let connector = StandInConnector::start(KeyMode::Lost).await;
    let url = connector.url.clone();
    let uuid = Uuid::new_v4();
    let resp = server.register(&connector_body(uuid, &url), Some(ENROLL)).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    drop(connector); // nothing listens at the registered URL any more
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = server.register(&connector_body(uuid, &url), Some(ENROLL)).await;
    assert_eq!(detail(resp, StatusCode::SERVICE_UNAVAILABLE).await, "key_check_unavailable");
    // Once the registration expired, the token may enroll the uuid again (anywhere).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let resp = server.register(&connector_body(uuid, "http://127.0.0.1:9/filesystem-connector"), Some(ENROLL)).await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let json: Value = resp.json().await.unwrap();
    assert!(json["hmac_secret"].as_str().is_some(), "{json}");
}

#[tokio::test]
async fn redis_going_away_is_503_and_the_server_recovers() {
    let mut server = Server::start_private_redis(&[]);
    let keys = server.enroll().await;
    server.private_redis().stop();

    let started = Instant::now();
    let resp = server.signed(&keys, Method::POST, &auth_check_path(), b"").await;
    assert_eq!(detail(resp, StatusCode::SERVICE_UNAVAILABLE).await, "registry_unavailable");
    assert!(started.elapsed() < Duration::from_secs(5), "store errors must not hang: {:?}", started.elapsed());
    let resp = server.register(&connector_body(Uuid::new_v4(), "http://127.0.0.1:9/c"), Some(ENROLL)).await;
    assert_eq!(detail(resp, StatusCode::SERVICE_UNAVAILABLE).await, "registry_unavailable");
    let resp = server.http.get(server.api("readyz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(server.http.get(server.api("healthz")).send().await.unwrap().status(), StatusCode::OK);

    // The private server runs without persistence: credentials are gone with it, so the
    // connector re-enrolls, exactly as it would after `unknown_key_id`.
    server.private_redis().start_again();
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.http.get(server.api("readyz")).send().await.unwrap().status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "server did not recover after redis returned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resp = server.signed(&keys, Method::POST, &auth_check_path(), b"").await;
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "unknown_key_id");
    let again = server.enroll().await;
    assert_eq!(server.signed(&again, Method::POST, &auth_check_path(), b"").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn redis_down_at_start_serves_not_ready_then_recovers() {
    let mut redis = dsx_testkit::RedisServer::start();
    let url = redis.url();
    redis.stop();
    // No shared Redis: the URL override points the server at the stopped private one.
    let server = Server::start(Backend::Embedded, &[("DSXCONNECT_REDIS_URL", url)]);
    assert_eq!(server.http.get(server.api("readyz")).send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    redis.start_again();
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.http.get(server.api("readyz")).send().await.unwrap().status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "server did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let keys = server.enroll().await;
    assert_eq!(server.signed(&keys, Method::POST, &auth_check_path(), b"").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn auth_disabled_mints_nothing_and_accepts_unsigned_calls() {
    let server = embedded(&[("DSXCONNECT_AUTH__ENABLED", "false".into())]);
    let uuid = Uuid::new_v4();
    let resp = server.register(&connector_body(uuid, "http://127.0.0.1:9/c"), None).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let json: Value = resp.json().await.unwrap();
    assert!(json.get("hmac_secret").is_none());
    assert_eq!(server.send(Method::POST, &auth_check_path(), None, b"").await.status(), StatusCode::OK);
    assert_eq!(server.http.get(server.api("connectors/list")).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_bad_secret_key_refuses_to_start_with_a_clear_error() {
    let (code, logs) = start_expecting_refusal(&[("DSXCONNECT_AUTH__SECRET_KEY", "too-short".into())]);
    assert_ne!(code, Some(0));
    assert!(logs.contains("DSXCONNECT_AUTH__SECRET_KEY must be 32 bytes"), "{logs}");
    assert!(!logs.contains("too-short"), "the key text is never echoed");
}

#[tokio::test]
async fn token_route_exchanges_only_a_valid_enrollment_token() {
    let server = embedded(&[]);
    let resp =
        server.http.post(server.api("connectors/token")).header("X-Enrollment-Token", ENROLL).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let json: Value = resp.json().await.unwrap();
    let token = json["access_token"].as_str().unwrap();
    assert!(token.len() >= 40 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(json["token_type"], "Bearer");
    let resp =
        server.http.post(server.api("connectors/token")).header("X-Enrollment-Token", "wrong").send().await.unwrap();
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "invalid_enrollment_token");
}

#[tokio::test]
async fn registry_changes_are_announced_over_sse() {
    use futures_util::StreamExt;
    let server = embedded(&[]);
    let resp = server.operator(Method::GET, "subscribe/connector-registered").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp_unauthorized = server.http.get(server.api("subscribe/connector-registered")).send().await.unwrap();
    assert_eq!(resp_unauthorized.status(), StatusCode::UNAUTHORIZED, "SSE streams are operator routes");
    let mut body = resp.bytes_stream();
    let keys = server.enroll().await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("\"registered\"") {
        let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, body.next()).await else {
            panic!("no event: {seen}")
        };
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains(&keys.uuid.to_string()));
    assert!(!seen.contains(&keys.secret), "events never carry secrets");
}

#[tokio::test]
async fn config_is_public_in_part_and_never_leaks_secrets() {
    let server = embedded(&[
        ("DSXCONNECT_SCANNER__KIND", "dsxa".into()),
        ("DSXCONNECT_SCANNER__BASE_URL", "http://127.0.0.1:9".into()),
        ("DSXCONNECT_SCANNER__AUTH_TOKEN", "scanner-secret-token".into()),
    ]);
    let public: Value = server.http.get(server.api("config")).send().await.unwrap().json().await.unwrap();
    assert_eq!(public["workers"]["scan_request_batch_enabled"], true);
    assert_eq!(public["auth"]["enabled"], true);
    assert!(public.get("scanner").is_none(), "only the public subset without an operator token: {public}");
    let full = server.operator_get("config").await.text().await.unwrap();
    assert!(full.contains("\"kind\":\"dsxa\""), "{full}");
    for secret in ["scanner-secret-token", ENROLL, OPERATOR] {
        assert!(!full.contains(secret), "config leaked {secret}");
    }
    // The scanner at port 9 is not there: the check says so, with its class.
    let resp = server.operator_get("test/dsxa-connection").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(resp.json::<Value>().await.unwrap()["class"], "scanner_unreachable");
    assert_eq!(
        server.http.get(server.api("test/dsxa-connection")).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn scan_requests_are_bound_to_the_verified_connector() {
    let server = embedded(&[]);
    let alice = server.enroll().await;
    let bob = server.enroll().await;
    let path = format!("{PREFIX}/scan/request");
    // Naming another connector in the body: 403.
    let body =
        serde_json::to_vec(&json!({"location": "/x", "metainfo": "x", "connector": {"uuid": bob.uuid}})).unwrap();
    let resp = server.signed(&alice, Method::POST, &path, &body).await;
    assert_eq!(detail(resp, StatusCode::FORBIDDEN).await, "connector_mismatch");
    // No connector field: attributed to the key's connector, 202 with the task's location.
    let body =
        serde_json::to_vec(&json!({"location": "/x", "metainfo": "x", "connector_url": "http://evil/x"})).unwrap();
    let resp = server.signed(&alice, Method::POST, &path, &body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(resp.headers()["location"].to_str().unwrap().starts_with(&format!("{PREFIX}/scan/request/")));
    let json: Value = resp.json().await.unwrap();
    assert!(json["message"].as_str().unwrap().starts_with("Scan task ID: "));
    // Missing required field: 422 naming it.
    let resp = server.signed(&alice, Method::POST, &path, br#"{"metainfo":"x"}"#).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(resp.json::<Value>().await.unwrap()["detail"][0]["loc"], json!(["body", "location"]));
    // enqueue_done for a job another connector owns: 403.
    let job_body = serde_json::to_vec(&json!({"location": "/y", "metainfo": "y", "scan_job_id": "job-owned"})).unwrap();
    assert_eq!(server.signed(&alice, Method::POST, &path, &job_body).await.status(), StatusCode::ACCEPTED);
    let resp = server.signed(&bob, Method::POST, &format!("{PREFIX}/scan/jobs/job-owned/enqueue_done"), b"{}").await;
    assert_eq!(detail(resp, StatusCode::FORBIDDEN).await, "connector_mismatch");
    let resp = server
        .signed(
            &alice,
            Method::POST,
            &format!("{PREFIX}/scan/jobs/job-owned/enqueue_done"),
            br#"{"enqueued_total": 1}"#,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);

    // With auth off, a body naming an unknown connector: 404.
    let open = embedded(&[("DSXCONNECT_AUTH__ENABLED", "false".into())]);
    let body =
        serde_json::to_vec(&json!({"location": "/x", "metainfo": "x", "connector": {"uuid": Uuid::new_v4()}})).unwrap();
    let resp = open.send(Method::POST, &path, None, &body).await;
    assert_eq!(detail(resp, StatusCode::NOT_FOUND).await, "connector_not_found");
}

#[tokio::test]
async fn job_and_result_routes_answer_operators_only() {
    let server = embedded(&[]);
    let keys = server.enroll().await;
    let body = serde_json::to_vec(&json!({"location": "/x", "metainfo": "x", "scan_job_id": "job-routes"})).unwrap();
    assert_eq!(
        server.signed(&keys, Method::POST, &format!("{PREFIX}/scan/request"), &body).await.status(),
        StatusCode::ACCEPTED
    );
    let jobs: Value = server.operator_get("scan/jobs").await.json().await.unwrap();
    assert!(jobs.as_array().unwrap().iter().any(|j| j["job_id"] == "job-routes"));
    for (verb, path) in [("POST", "pause"), ("POST", "resume"), ("POST", "cancel")] {
        let resp = server
            .http
            .request(Method::from_bytes(verb.as_bytes()).unwrap(), server.api(&format!("scan/jobs/job-routes/{path}")))
            .bearer_auth(OPERATOR)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.json::<Value>().await.unwrap(), json!({"ok": true}), "{path}");
    }
    let job: Value = server.operator_get("scan/jobs/job-routes").await.json().await.unwrap();
    assert_eq!(job["status"], "cancelled");
    // A cancelled job takes no more items.
    let resp = server.signed(&keys, Method::POST, &format!("{PREFIX}/scan/request"), &body).await;
    assert_eq!(detail(resp, StatusCode::CONFLICT).await, "job_cancelled");
    // raw: connectors may read it unsigned; it holds flags and counters only.
    let raw: Value =
        server.http.get(server.api("scan/jobs/job-routes/raw")).send().await.unwrap().json().await.unwrap();
    assert_eq!(raw["status"], "cancelled");
    assert!(raw.get("scan_request").is_none());
    let resp = server.http.get(server.api("scan/jobs")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = server.http.delete(server.api("scan/results")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = server.operator(Method::DELETE, "scan/jobs").await;
    assert_eq!(resp.json::<Value>().await.unwrap()["deleted"], 1);
    let resp = server.operator(Method::GET, "scan/jobs/job-routes").await;
    assert_eq!(detail(resp, StatusCode::NOT_FOUND).await, "job_not_found");
    // An unknown task's result is an empty list, as Python answers (never 404).
    let resp = server.operator(Method::GET, "scan/results/no-such-task").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!([]));
    let resp = server.operator(Method::GET, "admin/dead-letter/items/bogus").await;
    assert_eq!(detail(resp, StatusCode::BAD_REQUEST).await, "unknown_queue_type");
}

#[tokio::test]
async fn metrics_count_requests_and_auth_failures_for_operators() {
    let server = embedded(&[]);
    let keys = server.enroll().await;
    let path = auth_check_path();
    let auth = keys.sign("POST", &path, unix_now(), &generate_nonce(), b"");
    assert_eq!(server.send(Method::POST, &path, Some(auth.clone()), b"").await.status(), StatusCode::OK);
    assert_eq!(server.send(Method::POST, &path, Some(auth), b"").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.send(Method::POST, &path, None, b"").await.status(), StatusCode::UNAUTHORIZED);
    let resp = server.http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "metrics need the operator token");
    let text =
        server.http.get(server.url("/metrics")).bearer_auth(OPERATOR).send().await.unwrap().text().await.unwrap();
    let line = |needle: &str| {
        text.lines().find(|l| l.starts_with(needle)).unwrap_or_else(|| panic!("{needle} missing:\n{text}")).to_owned()
    };
    assert!(line("dsxconnect_auth_failures_total{code=\"replayed_request\"}").ends_with(" 1"));
    assert!(line("dsxconnect_auth_failures_total{code=\"missing_hmac\"}").ends_with(" 1"));
    assert!(line("dsxconnect_registrations_total").ends_with(" 1"));
    let ok = format!("dsxconnect_http_requests_total{{route=\"{path}\",method=\"POST\",status=\"200\"}}");
    assert!(line(&ok).ends_with(" 1"));
    assert!(line("dsxconnect_queue_depth").ends_with(" 0"));
    assert!(!text.contains(&keys.key_id) && !text.contains(&keys.secret), "no per-key labels");
}

#[tokio::test]
async fn ssrf_registration_refuses_urls_dsx_connect_must_not_call() {
    let server = Server::start(Backend::Redis, &[]);
    let redis_port = reqwest::Url::parse(&server.env.iter().find(|(k, _)| *k == "DSXCONNECT_REDIS_URL").unwrap().1)
        .unwrap()
        .port()
        .unwrap();
    for bad in [
        "file:///etc/passwd".to_owned(),
        "gopher://127.0.0.1:70/_x".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://[fe80::1]/x".to_owned(),
        "http://239.1.1.1/x".to_owned(),
        "http://8.8.8.8/x".to_owned(),
        "http://127.0.0.1:8620/filesystem-connector?x=".to_owned(),
        "http://u:p@127.0.0.1:8620/filesystem-connector".to_owned(),
        "not a url".to_owned(),
        format!("http://127.0.0.1:{redis_port}/filesystem-connector"),
        format!("http://localhost:{redis_port}/filesystem-connector"),
        format!("http://0.0.0.0:{redis_port}/filesystem-connector"),
    ] {
        let resp = server.register(&connector_body(Uuid::new_v4(), &bad), Some(ENROLL)).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        let json: Value = resp.json().await.unwrap();
        assert_eq!(json["detail"][0]["loc"], json!(["body", "url"]), "{bad}: {json}");
    }
    // Loopback (the quickstart) and cluster names are allowed by default.
    for good in
        ["http://127.0.0.1:8620/filesystem-connector", "http://fs.scan.svc.cluster.local:8620/filesystem-connector"]
    {
        let resp = server.register(&connector_body(Uuid::new_v4(), good), Some(ENROLL)).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "{good}");
    }
}

#[tokio::test]
async fn ssrf_the_operator_allow_list_replaces_the_default() {
    let server = embedded(&[("DSXCONNECT_CONNECTORS__URL_ALLOW", "10.0.0.0/8, *.example.internal".into())]);
    for bad in ["http://127.0.0.1:8620/c", "http://0.0.0.0:8620/c"] {
        let resp = server.register(&connector_body(Uuid::new_v4(), bad), Some(ENROLL)).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    for good in ["http://10.2.3.4:8620/c", "http://scanner.example.internal:8620/c"] {
        let resp = server.register(&connector_body(Uuid::new_v4(), good), Some(ENROLL)).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "{good}");
    }
    let (code, logs) = start_expecting_refusal(&[("DSXCONNECT_CONNECTORS__URL_ALLOW", "10.0.0.0/8,not valid!".into())]);
    assert_ne!(code, Some(0));
    assert!(logs.contains("DSXCONNECT_CONNECTORS__URL_ALLOW"), "{logs}");
}

#[tokio::test]
async fn two_authorization_headers_are_refused_whatever_they_hold() {
    let server = embedded(&[]);
    let keys = server.enroll().await;
    let path = auth_check_path();
    let good = keys.sign("POST", &path, unix_now(), &generate_nonce(), b"");
    // A valid signature with a second header beside it, either order.
    for (first, second) in [(good.clone(), "Bearer x".to_owned()), ("DSX-HMAC key_id=x".to_owned(), good.clone())] {
        let resp = server
            .http
            .post(server.url(&path))
            .header("Authorization", first)
            .header("Authorization", second)
            .send()
            .await
            .unwrap();
        assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "malformed_hmac");
    }
    // The same valid signature alone still works (it was not consumed as a nonce above).
    assert_eq!(server.send(Method::POST, &path, Some(good), b"").await.status(), StatusCode::OK);
    // Two operator tokens, even both valid.
    let resp = server
        .http
        .get(server.api("connectors/list"))
        .header("Authorization", format!("Bearer {OPERATOR}"))
        .header("Authorization", format!("Bearer {OPERATOR}"))
        .send()
        .await
        .unwrap();
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "invalid_operator_token");
    // Two enrollment tokens.
    let resp = server
        .http
        .post(server.api("connectors/register"))
        .header("X-Enrollment-Token", ENROLL)
        .header("X-Enrollment-Token", "other")
        .json(&connector_body(Uuid::new_v4(), "http://127.0.0.1:9/c"))
        .send()
        .await
        .unwrap();
    assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "invalid_enrollment_token");
}

#[tokio::test]
async fn an_operator_revocation_keeps_the_connector_out_until_readmitted() {
    for backend in [Backend::Embedded, Backend::Redis] {
        let server = Server::start(backend, &[]);
        let keys = server.enroll().await;
        let body = connector_body(keys.uuid, "http://127.0.0.1:9/filesystem-connector");
        let resp = server.operator(Method::DELETE, &format!("connectors/unregister/{}", keys.uuid)).await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        // Its keys are gone and its enrollment token no longer brings it back.
        let resp = server.signed(&keys, Method::POST, &auth_check_path(), b"").await;
        assert_eq!(detail(resp, StatusCode::UNAUTHORIZED).await, "unknown_key_id");
        for _ in 0..2 {
            let resp = server.register(&body, Some(ENROLL)).await;
            assert_eq!(detail(resp, StatusCode::FORBIDDEN).await, "connector_revoked", "{backend:?}");
        }
        let listed: Value = server.operator_get("connectors/list").await.json().await.unwrap();
        let row = listed.as_array().unwrap().iter().find(|c| c["uuid"] == keys.uuid.to_string()).expect("listed");
        assert_eq!(row["status"], "revoked", "{row}");
        assert!(row["auth"]["revoked_at"].as_u64().is_some(), "{row}");
        // An operator readmits it; it enrolls again with a new key.
        let resp = server.operator(Method::POST, &format!("connectors/readmit/{}", keys.uuid)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = server.register(&body, Some(ENROLL)).await;
        assert!(resp.status().is_success(), "{}", resp.status());
        let fresh = Keys::from_registration(keys.uuid, &resp.json().await.unwrap());
        assert_eq!(server.signed(&fresh, Method::POST, &auth_check_path(), b"").await.status(), StatusCode::OK);
        let listed: Value = server.operator_get("connectors/list").await.json().await.unwrap();
        let rows: Vec<_> = listed.as_array().unwrap().iter().filter(|c| c["uuid"] == keys.uuid.to_string()).collect();
        assert_eq!(rows.len(), 1);
        assert_ne!(rows[0]["status"], "revoked");
        // Readmitting what is not revoked is a 404.
        let resp = server.operator(Method::POST, &format!("connectors/readmit/{}", keys.uuid)).await;
        assert_eq!(detail(resp, StatusCode::NOT_FOUND).await, "connector_not_found");
    }
}

#[tokio::test]
async fn a_revocation_reaches_every_api_replica_at_once() {
    let a = Server::start(Backend::Redis, &[]);
    let same = |name: &str| a.env.iter().find(|(k, _)| *k == name).unwrap().1.clone();
    let b = Server::start(
        Backend::Redis,
        &[("DSXCONNECT_APP_ENV", same("DSXCONNECT_APP_ENV")), ("DSXCONNECT_REDIS_URL", same("DSXCONNECT_REDIS_URL"))],
    );
    let keys = a.enroll().await;
    let path = auth_check_path();
    // B resolves (and caches) the key.
    let resp = b.signed(&keys, Method::POST, &path, b"").await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await.unwrap());
    let resp = a.operator(Method::DELETE, &format!("connectors/unregister/{}", keys.uuid)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let revoked_at = Instant::now();
    loop {
        let status = b.signed(&keys, Method::POST, &path, b"").await.status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(revoked_at.elapsed() < Duration::from_millis(400), "replica B still accepts the revoked key");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scan_request(server: &Server, keys: &Keys, job: &str, location: &str) -> reqwest::Response {
    let body = serde_json::to_vec(&json!({"location": location, "metainfo": "m", "scan_job_id": job})).unwrap();
    server.signed(keys, Method::POST, &format!("{PREFIX}/scan/request"), &body).await
}

#[tokio::test]
async fn a_job_belongs_to_the_connector_that_created_it() {
    for backend in [Backend::Embedded, Backend::Redis] {
        let server = Server::start(backend, &[]);
        let (a, b) = (server.enroll().await, server.enroll().await);
        let job = Uuid::new_v4().to_string();
        assert_eq!(scan_request(&server, &a, &job, "/a1").await.status(), StatusCode::ACCEPTED);
        // B can neither add to A's job nor sneak an item in through a batch.
        let resp = scan_request(&server, &b, &job, "/b1").await;
        assert_eq!(detail(resp, StatusCode::FORBIDDEN).await, "job_belongs_to_another_connector", "{backend:?}");
        let own = Uuid::new_v4().to_string();
        let batch = json!({"requests": [
            {"location": "/b2", "metainfo": "m", "scan_job_id": own},
            {"location": "/b3", "metainfo": "m", "scan_job_id": job},
        ]});
        let resp = server
            .signed(&b, Method::POST, &format!("{PREFIX}/scan/request_batch"), &serde_json::to_vec(&batch).unwrap())
            .await;
        assert_eq!(detail(resp, StatusCode::FORBIDDEN).await, "job_belongs_to_another_connector");
        assert_eq!(
            server.operator_get(&format!("scan/jobs/{own}")).await.status(),
            StatusCode::NOT_FOUND,
            "refused whole"
        );
        let job_now: Value = server.operator_get(&format!("scan/jobs/{job}")).await.json().await.unwrap();
        assert_eq!(job_now["enqueued_count"], 1);
        // Nor finish it; its owner can.
        let done = format!("{PREFIX}/scan/jobs/{job}/enqueue_done");
        let resp = server.signed(&b, Method::POST, &done, br#"{"enqueued_total":1}"#).await;
        assert_eq!(detail(resp, StatusCode::FORBIDDEN).await, "connector_mismatch");
        assert_eq!(server.signed(&a, Method::POST, &done, br#"{"enqueued_total":1}"#).await.status(), StatusCode::OK);
        // A job an operator starts for A is A's before any item exists (the connector is not
        // reachable here, so the start fails and the job is closed, still A's).
        let started = Uuid::new_v4().to_string();
        let resp = server.operator(Method::POST, &format!("connectors/full_scan/{}?job_id={started}", a.uuid)).await;
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let resp = scan_request(&server, &b, &started, "/b4").await;
        assert_eq!(detail(resp, StatusCode::FORBIDDEN).await, "job_belongs_to_another_connector");
        let claimed: Value = server.operator_get(&format!("scan/jobs/{started}")).await.json().await.unwrap();
        assert_eq!(claimed["status"], "cancelled", "{claimed}");
    }
}

#[tokio::test]
async fn one_body_limit_and_a_bounded_batch() {
    let server = embedded(&[
        ("DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_MAX_ITEMS", "900".into()),
        ("DSXCONNECT_MAX_BODY_BYTES", (4 << 20).to_string()),
    ]);
    let keys = server.enroll().await;
    let path = format!("{PREFIX}/scan/request_batch");
    let item =
        |i: usize, job: &str| json!({"location": format!("/f{i}"), "metainfo": "x".repeat(3000), "scan_job_id": job});
    // 2.7 MB: above axum's 2 MB default, below our 4 MiB limit → accepted whole.
    let job = Uuid::new_v4().to_string();
    let body = serde_json::to_vec(&json!({"requests": (0..900).map(|i| item(i, &job)).collect::<Vec<_>>()})).unwrap();
    assert!(body.len() > 2_600_000, "{}", body.len());
    let resp = server.signed(&keys, Method::POST, &path, &body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["queued_items"], 900);
    // Above the item maximum: refused whole with the field named; nothing queued.
    let over = Uuid::new_v4().to_string();
    let body = serde_json::to_vec(&json!({"requests": (0..901).map(|i| json!({"location": format!("/g{i}"), "metainfo": "m", "scan_job_id": over})).collect::<Vec<_>>()})).unwrap();
    let resp = server.signed(&keys, Method::POST, &path, &body).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["detail"][0]["loc"], json!(["body", "requests"]), "{json}");
    assert_eq!(server.operator_get(&format!("scan/jobs/{over}")).await.status(), StatusCode::NOT_FOUND);
    // Above the body limit: the documented JSON 413, on single requests too.
    let body = serde_json::to_vec(&json!({"requests": (0..1400).map(|i| item(i, &over)).collect::<Vec<_>>()})).unwrap();
    assert!(body.len() > 4 << 20);
    let resp = server.signed(&keys, Method::POST, &path, &body).await;
    assert_eq!(detail(resp, StatusCode::PAYLOAD_TOO_LARGE).await, "body_too_large");
    let big = serde_json::to_vec(&json!({"location": "/h", "metainfo": "x".repeat(5 << 20)})).unwrap();
    let resp = server.signed(&keys, Method::POST, &format!("{PREFIX}/scan/request"), &big).await;
    assert_eq!(detail(resp, StatusCode::PAYLOAD_TOO_LARGE).await, "body_too_large");
    // Ids that become store keys are bounded.
    for bad in ["x".repeat(1 << 20), "x".repeat(129), "a\nb".into(), "../x".into(), "a\u{0}".into()] {
        let resp = scan_request(&server, &keys, &bad, "/i").await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let json: Value = resp.json().await.unwrap();
        assert_eq!(json["detail"][0]["loc"], json!(["body", "scan_job_id"]), "{json}");
    }
    assert_eq!(scan_request(&server, &keys, &"x".repeat(128), "/i").await.status(), StatusCode::ACCEPTED);
}

async fn enqueued_count(server: &Server, job: &str) -> u64 {
    let job: Value = server.operator_get(&format!("scan/jobs/{job}")).await.json().await.unwrap();
    job["enqueued_count"].as_u64().unwrap()
}

/// A signed POST with extra headers.
async fn signed_with(
    server: &Server,
    keys: &Keys,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let auth = keys.sign("POST", path, unix_now(), &generate_nonce(), body);
    let mut req = server.http.post(server.url(path)).header("Authorization", auth).body(body.to_vec());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// A retry with the same `Idempotency-Key` (the first answer was lost: a crash between commit
/// and reply) gets the same answer and queues nothing again, for single requests and batches,
/// on both stores. Another connector's identical key is its own. Bad keys are refused by name.
#[tokio::test]
async fn a_repeated_idempotency_key_queues_nothing_twice() {
    for backend in [Backend::Embedded, Backend::Redis] {
        let server = Server::start(backend, &[]);
        let (a, b) = (server.enroll().await, server.enroll().await);
        let job = Uuid::new_v4().to_string();
        let batch_path = format!("{PREFIX}/scan/request_batch");
        let batch = serde_json::to_vec(&json!({"requests": [
            {"location": "/k1", "metainfo": "m", "scan_job_id": job},
            {"location": "/k2", "metainfo": "m", "scan_job_id": job},
        ]}))
        .unwrap();
        let key = [("Idempotency-Key", "batch-0001")];
        let first: Value = signed_with(&server, &a, &batch_path, &batch, &key).await.json().await.unwrap();
        let again = signed_with(&server, &a, &batch_path, &batch, &key).await;
        assert_eq!(again.status(), StatusCode::ACCEPTED);
        let again: Value = again.json().await.unwrap();
        assert_eq!(first["task_ids"], again["task_ids"], "{backend:?}: same answer");
        assert_eq!(first["queued_items"], 2);
        assert_eq!(enqueued_count(&server, &job).await, 2, "{backend:?}: queued once");
        // Single requests: same key, same task id, queued once; another key queues again.
        let single_path = format!("{PREFIX}/scan/request");
        let single = serde_json::to_vec(&json!({"location": "/k3", "metainfo": "m", "scan_job_id": job})).unwrap();
        let one = [("Idempotency-Key", "single-0001")];
        let t1: Value = signed_with(&server, &a, &single_path, &single, &one).await.json().await.unwrap();
        let t2: Value = signed_with(&server, &a, &single_path, &single, &one).await.json().await.unwrap();
        assert_eq!(t1["id"], t2["id"]);
        let other = [("Idempotency-Key", "single-0002")];
        let t3: Value = signed_with(&server, &a, &single_path, &single, &other).await.json().await.unwrap();
        assert_ne!(t1["id"], t3["id"]);
        assert_eq!(enqueued_count(&server, &job).await, 4);
        // B's key of the same name is B's own.
        let job_b = Uuid::new_v4().to_string();
        let single_b = serde_json::to_vec(&json!({"location": "/b", "metainfo": "m", "scan_job_id": job_b})).unwrap();
        assert_eq!(signed_with(&server, &b, &single_path, &single_b, &one).await.status(), StatusCode::ACCEPTED);
        assert_eq!(enqueued_count(&server, &job_b).await, 1);
        // Bad keys: too long, control characters, sent twice.
        let long = "k".repeat(129);
        for bad in [long.as_str(), "tab\there"] {
            let resp = signed_with(&server, &a, &single_path, &single, &[("Idempotency-Key", bad)]).await;
            assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
            let json: Value = resp.json().await.unwrap();
            assert_eq!(json["detail"][0]["loc"], json!(["header", "Idempotency-Key"]), "{json}");
        }
        let twice = [("Idempotency-Key", "a"), ("Idempotency-Key", "b")];
        let resp = signed_with(&server, &a, &single_path, &single, &twice).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(enqueued_count(&server, &job).await, 4, "refused keys queue nothing");
    }
}

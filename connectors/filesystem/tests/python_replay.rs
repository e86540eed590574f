//! A Python dsx-connect 1.x server calling our filesystem connector: every recorded request
//! the Python server (or a direct client) sent to the Python connector is replayed, byte for
//! byte except for file paths and a fresh signature, and our answer must carry what the
//! Python server reads from it. Deliberate differences (docs/interop.md, "Connectors") are
//! asserted as such.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dsx_testkit::python_fixtures::{self, Direction, Fixture, CONNECTOR_UUID, HMAC_KEY_ID, HMAC_SECRET};
use serde_json::{json, Value};
use support::{Connector, PythonServer};

const CAPTURED_ASSET: &str = "/tmp/capture/data/run/asset";
const CAPTURED_QUARANTINE: &str = "/tmp/capture/data/run/quarantine";

struct Replay {
    server: PythonServer,
    connector: Connector,
    root: PathBuf,
    quarantine: PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Replay {
    /// The captured request with the capture's folders replaced by this test's.
    fn rewrite(&self, fixture: &Fixture) -> python_fixtures::Request {
        let mut request = fixture.request.clone();
        if let Ok(text) = String::from_utf8(request.message.body.clone()) {
            let text = text
                .replace(CAPTURED_QUARANTINE, &self.quarantine.display().to_string())
                .replace(CAPTURED_ASSET, &self.root.display().to_string());
            request.message.body = text.into_bytes();
        }
        request
    }

    /// Send `request`, signed afresh with the fixture key when `sign`, else with the
    /// recorded headers (an unsigned or tampered capture stays as it was).
    async fn send(&self, request: &python_fixtures::Request, sign: bool) -> reqwest::Response {
        let url = format!("{}{}", self.connector.base, request.path_and_query());
        let mut builder = self.connector.http.request(request.method.parse().unwrap(), url);
        if let Some(ct) = request.message.header("content-type") {
            builder = builder.header("Content-Type", ct);
        }
        if sign {
            builder = builder.header("Authorization", python_fixtures::resign(request, HMAC_KEY_ID, HMAC_SECRET));
        } else if let Some(auth) = request.message.header("authorization") {
            builder = builder.header("Authorization", auth);
        }
        builder.body(request.message.body.clone()).send().await.unwrap()
    }

    async fn set_item_action(&self, action: &str) {
        let body = serde_json::to_vec(&json!({ "item_action": action })).unwrap();
        let resp = self.connector.signed("PUT", "/filesystem-connector/config", body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<Value>().await.unwrap()["item_action"], action);
    }

    fn in_asset(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Every key the Python answer has, ours has too (the Python server and UI read them).
fn assert_has_keys(name: &str, python: &Value, ours: &Value) {
    let keys = python.as_object().unwrap_or_else(|| panic!("{name}: Python answer is not an object"));
    for key in keys.keys() {
        assert!(ours.get(key).is_some(), "{name}: our answer lacks {key:?}: {ours}");
    }
}

fn key_set(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == name) {
                found.push(p);
            }
        }
    }
    found
}

fn query_param(fixture: &Fixture, key: &str) -> Option<String> {
    fixture.request.query.as_deref()?.split('&').find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

#[tokio::test]
async fn every_python_call_to_a_connector_gets_an_answer_python_reads() {
    let server = PythonServer::start(|_| {}).await;
    let asset = tempfile::tempdir().unwrap();
    let quarantine = tempfile::tempdir().unwrap();
    let root = asset.path().canonicalize().unwrap();
    let qroot = quarantine.path().canonicalize().unwrap();
    let eicar = python_fixtures::get("32").response.message.body;
    write(&root.join("b/file-00007.txt"), &python_fixtures::get("31").response.message.body);
    write(&root.join("b/file-00004.txt"), b"benign file 4");
    write(&root.join("a/file-00003.txt"), b"benign file 3");
    write(&root.join("a/file-00001.txt"), b"benign file 1");
    write(&root.join("c/file-00002.txt"), b"benign file 2");
    for name in [
        "b/eicar-0001.com",
        "eicar-tag.com",
        "eicar-delete.com",
        "eicar-nothing.com",
        "eicar-movetag.com",
        "webhook-eicar.com",
    ] {
        write(&root.join(name), &eicar);
    }
    let connector = Connector::start(&server, &root, &qroot, &[]).await;
    let t = Replay { server, connector, root, quarantine: qroot, _dirs: (asset, quarantine) };

    let mut covered = BTreeSet::new();
    let replayed: Vec<Fixture> = python_fixtures::all()
        .into_iter()
        .filter(|f| matches!(f.direction, Direction::ServerToConnector | Direction::ClientToConnector))
        .collect();
    let get_config_keys = python_fixtures::get("05").response.message.json().unwrap();

    for fixture in &replayed {
        let name = fixture.name.as_str();
        let id = &name[..2];
        let python_status = fixture.response.status;
        let python = fixture.response.message.json().unwrap_or(Value::Null);
        // The capture switched the action through the server before 56, 57 and 58.
        match id {
            "56" => t.set_item_action("delete").await,
            "57" => t.set_item_action("nothing").await,
            "58" => t.set_item_action("movetag").await,
            _ => {}
        }
        let request = t.rewrite(fixture);
        let tampered_or_unsigned = matches!(id, "76" | "77" | "78");
        // The webhook is signed here (45, 47), unlike in 1.x; the handshake (48) is not.
        let sign = !tampered_or_unsigned && (fixture.request.was_signed() || matches!(id, "45" | "47"));
        let resp = t.send(&request, sign).await;
        let status = resp.status().as_u16();
        let content_type =
            resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let bytes = resp.bytes().await.unwrap().to_vec();
        let ours: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let ctx = format!("{name}: {status} {}", String::from_utf8_lossy(&bytes));

        match id {
            // GET config: the connector model plus its settings, as Python's.
            "05" | "15" => {
                assert_eq!(status, 200, "{ctx}");
                assert_has_keys(name, &python, &ours);
                assert_eq!(ours["uuid"], CONNECTOR_UUID, "{ctx}");
                assert_eq!(ours["asset"], t.root.display().to_string(), "{ctx}");
                assert_eq!(ours["item_action_move_metainfo"], t.quarantine.display().to_string(), "{ctx}");
            }
            "07" => assert_eq!((status, &ours), (200, &python), "{ctx}"),
            "09" => {
                assert_eq!(status, 200, "{ctx}");
                assert_has_keys(name, &python, &ours);
                assert_eq!((ours["uuid"].as_str(), ours["status"].as_str()), (Some(CONNECTOR_UUID), Some("ready")));
            }
            "11" | "12" => {
                assert_eq!(status, 200, "{ctx}");
                assert_has_keys(name, &python, &ours);
                assert_eq!(ours["status"], "success", "{ctx}");
                if id == "12" {
                    let preview = ours["preview"].as_array().unwrap_or_else(|| panic!("{ctx}"));
                    assert_eq!(preview.len(), 3, "{ctx}");
                    for p in preview {
                        assert!(p.as_str().unwrap().starts_with(&t.root.display().to_string()), "{ctx}");
                    }
                } else {
                    assert!(ours["preview"].is_null(), "{ctx}");
                }
            }
            "13" | "94" => {
                assert_eq!(status, 200, "{ctx}");
                assert_eq!(key_set(&ours), key_set(&python), "{ctx}");
                assert!(ours["count"].is_u64() && ours["confidence"] == "exact", "{ctx}");
            }
            "23" => {
                assert_eq!(status, 200, "{ctx}");
                assert_eq!(key_set(&ours), key_set(&python), "{ctx}");
                assert_eq!(ours["connector_name"], "filesystem-connector");
                assert_eq!(ours["connector_instance_id"], CONNECTOR_UUID);
            }
            "24" => {
                assert_eq!(status, 200, "{ctx}");
                assert_has_keys(name, &python, &ours);
                assert_eq!(ours["connector_status"], "ready", "{ctx}");
                assert_eq!(ours["repo connectivity"], "success", "{ctx}");
            }
            "27" | "41" | "43" | "95" => {
                assert_eq!(status, 200, "{ctx}");
                assert_has_keys(name, &python, &ours);
                assert_eq!(
                    (ours["status"].as_str(), ours["message"].as_str()),
                    (Some("success"), Some("Full scan initiated"))
                );
                let job = query_param(fixture, "job_id").unwrap();
                assert_eq!(ours["id"], job.as_str(), "{ctx}");
                let done = t.server.wait_enqueue_done(&job).await;
                let accepted = t.server.with(|s| {
                    s.calls_to("POST", "/scan/request")
                        .iter()
                        .filter(|c| c.json()["scan_job_id"] == job.as_str())
                        .count()
                });
                assert_eq!(done["enqueued_total"].as_u64(), Some(accepted as u64), "{ctx}: the true total");
                if id == "43" {
                    assert_eq!(accepted, 2, "{ctx}: limit=2");
                } else {
                    assert!(accepted >= 5, "{ctx}: {accepted}");
                }
                // The stand-in has batching off: batch=true (41, 95) falls back to singles.
                assert!(t.server.with(|s| s.calls_to("POST", "/scan/request_batch").is_empty()), "{ctx}");
            }
            "31" | "32" => {
                assert_eq!(status, 200, "{ctx}");
                assert_eq!(content_type, "application/octet-stream", "{ctx}");
                assert_eq!(bytes, fixture.response.message.body, "{name}: the file's bytes");
            }
            // Item actions: the Python worker validates the body as ItemActionStatusResponse.
            "33" | "51" | "55" | "56" | "57" | "58" => {
                assert_eq!(status, 200, "{ctx}");
                assert_eq!(content_type, "application/json", "{ctx}");
                assert_has_keys(name, &python, &ours);
                assert_eq!(ours["item_action"], python["item_action"], "{ctx}");
                assert_eq!(ours["status"], python["status"], "{ctx}");
                match id {
                    "33" => {
                        assert!(!t.in_asset("b/eicar-0001.com").exists());
                        assert_eq!(files_named(&t.quarantine, "eicar-0001.com").len(), 1, "{ctx}");
                    }
                    "51" => {
                        assert_eq!(ours["error_code"], "not_found", "{ctx}");
                        assert!(!ours["message"].as_str().unwrap().is_empty(), "{ctx}");
                        assert!(ours["description"].as_str().unwrap().contains("gone-before-action.com"), "{ctx}");
                    }
                    "55" => {
                        let mut sidecar = t.in_asset("eicar-tag.com").into_os_string();
                        sidecar.push(filesystem_connector::SIDECAR_SUFFIX);
                        assert!(Path::new(&sidecar).exists(), "{ctx}");
                        assert!(t.in_asset("eicar-tag.com").exists());
                    }
                    "56" => assert!(!t.in_asset("eicar-delete.com").exists(), "{ctx}"),
                    "57" => {
                        assert_eq!(ours["message"], python["message"], "{ctx}");
                        assert!(t.in_asset("eicar-nothing.com").exists(), "{ctx}");
                    }
                    "58" => {
                        assert!(!t.in_asset("eicar-movetag.com").exists(), "{ctx}");
                        assert_eq!(files_named(&t.quarantine, "eicar-movetag.com").len(), 1, "{ctx}");
                    }
                    _ => unreachable!(),
                }
                if id != "51" {
                    assert!(ours.get("error_code").is_none(), "{ctx}");
                }
            }
            "45" => {
                assert_eq!(status, 200, "{ctx}");
                assert_has_keys(name, &python, &ours);
                assert_eq!(ours["status"], "success", "{ctx}");
                let location = t.in_asset("webhook-eicar.com").display().to_string();
                let job = ours["id"].as_str().unwrap().to_owned();
                let done = t.server.wait_enqueue_done(&job).await;
                assert_eq!(done["enqueued_total"], 1);
                t.server.with(|s| {
                    let sent: Vec<Value> = s
                        .calls_to("POST", "/scan/request")
                        .iter()
                        .map(|c| c.json())
                        .filter(|b| b["scan_job_id"] == job.as_str())
                        .collect();
                    assert_eq!(sent.len(), 1, "{ctx}");
                    assert_eq!(sent[0]["location"], location.as_str());
                });
                // Unsigned, as 1.x sends it: refused here (documented difference).
                let unsigned = t.send(&request, false).await;
                assert_eq!(unsigned.status(), 401);
                assert_eq!(unsigned.json::<Value>().await.unwrap()["detail"], "missing_hmac");
            }
            "47" => {
                assert_eq!((status, &ours), (200, &python), "{ctx}");
            }
            "48" => {
                assert_eq!(status, 200, "{ctx}");
                assert_eq!(content_type, "text/plain; charset=utf-8", "{ctx}");
                assert_eq!(bytes, fixture.response.message.body, "{ctx}");
            }
            // read_file of a missing file: an HTTP error, not a 200 JSON the server would scan.
            "49" => {
                assert_eq!(python_status, 200);
                assert_eq!(status, 404, "{ctx}");
                assert_eq!(ours["detail"], "not_found", "{ctx}");
            }
            "54" => {
                assert_eq!(status, 200, "{ctx}");
                assert_has_keys(name, &get_config_keys, &ours);
                assert_has_keys(name, &json!({ "persistence": null }), &ours);
                assert_eq!(ours["item_action"], "tag", "{ctx}");
                // No supported field: 200 with Python's error object (fixture 61).
                let resp = t.connector.signed("PUT", &request.path, br#"{"bogus":1}"#.to_vec()).await;
                assert_eq!(resp.status(), 200);
                let unsupported: Value = resp.json().await.unwrap();
                let python_61 = python_fixtures::get("61").response.message.json().unwrap();
                assert_eq!(key_set(&unsupported), key_set(&python_61));
                assert_eq!(unsupported["error"], "no_supported_fields");
                assert!(unsupported["supported"].as_array().unwrap().contains(&json!("item_action")));
            }
            "59" => {
                assert_eq!(status, 200, "{ctx}");
                assert_has_keys(name, &python, &ours);
                assert_eq!((ours["asset_type"].as_str(), ours["source"].as_str()), (Some("folder"), Some("all")));
                let assets = ours["assets"].as_array().unwrap();
                assert!(!assets.is_empty(), "{ctx}");
                for a in assets {
                    assert_eq!(key_set(a), key_set(&python["assets"][0]), "{ctx}");
                }
                assert_eq!(assets[0]["id"], t.root.display().to_string());
            }
            "60" => {
                assert_eq!(status, 200, "{ctx}");
                assert_has_keys(name, &python, &ours);
                assert_eq!((ours["scope"].as_str(), ours["status"].as_str()), (Some("a"), Some("success")));
                let objects = ours["objects"].as_array().unwrap();
                assert_eq!(objects.len(), 2, "{ctx}");
                let want: BTreeSet<String> =
                    ["identity", "location", "display_name", "size_in_bytes", "metadata"].map(str::to_owned).into();
                for o in objects {
                    assert_eq!(key_set(o), want, "{ctx}");
                    assert!(o["location"].as_str().unwrap().starts_with(&t.in_asset("a/").display().to_string()));
                }
            }
            "76" | "78" => assert_eq!((status, &ours), (401, &python), "{ctx}"),
            "77" => {
                assert_eq!(status, 401, "{ctx}");
                // Recorded long ago: our verifier reports the stale timestamp before the signature.
                assert!(matches!(ours["detail"].as_str(), Some("bad_signature" | "stale_request")), "{ctx}");
            }
            _ => panic!("{name}: a Python request to the connector with no expectation here"),
        }
        covered.insert(fixture.name.clone());
    }

    let all: BTreeSet<String> = replayed.iter().map(|f| f.name.clone()).collect();
    assert_eq!(covered, all, "every server->connector and client->connector fixture replayed");
    assert!(all.len() >= 32, "{} fixtures", all.len());
    assert!(t.server.with(|s| s.auth_failures.is_empty()), "{:?}", t.server.with(|s| s.auth_failures.clone()));
}

/// Webhook events get the checks a full scan applies: the item must be inside the asset and
/// match the filter; only then is one scan request sent.
#[tokio::test]
async fn webhook_events_are_confined_and_filtered() {
    let server = PythonServer::start(|_| {}).await;
    let asset = tempfile::tempdir().unwrap();
    let quarantine = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let root = asset.path().canonicalize().unwrap();
    write(&root.join("docs/report.pdf"), b"pdf");
    write(&root.join("docs/notes.txt"), b"txt");
    write(&outside.path().join("secret.txt"), b"secret");
    let connector = Connector::start(&server, &root, quarantine.path(), &[("DSXCONNECTOR_FILTER", "*.pdf")]).await;
    let path = "/filesystem-connector/webhook/event";
    let event = |location: String| serde_json::to_vec(&json!({ "path": location })).unwrap();
    let answer = |resp: reqwest::Response| async move {
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.unwrap()
    };

    let refused = [
        outside.path().join("secret.txt").display().to_string(),
        format!("{}/../secret.txt", root.display()),
        root.join("docs/missing.pdf").display().to_string(),
    ];
    for location in refused {
        let body = answer(connector.signed("POST", path, event(location.clone())).await).await;
        assert_eq!(body["status"], "error", "{location}: {body}");
    }
    let body =
        answer(connector.signed("POST", path, event(root.join("docs/notes.txt").display().to_string())).await).await;
    assert_eq!(body["status"], "nothing", "filtered out: {body}");
    assert!(server.with(|s| s.calls_to("POST", "/scan/request").is_empty()), "nothing was enqueued");

    let pdf = root.join("docs/report.pdf").display().to_string();
    let body = answer(connector.signed("POST", path, event(pdf.clone())).await).await;
    assert_eq!(body["status"], "success", "{body}");
    server.with(|s| {
        let sent = s.calls_to("POST", "/scan/request");
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].json()["location"], pdf.as_str());
        assert_eq!(sent[0].json()["scan_job_id"], body["id"]);
    });

    // The Graph handshake needs no signature; anything else unsigned is refused.
    let http = reqwest::Client::new();
    let url = format!("{}{path}", connector.base);
    let resp = http.post(format!("{url}?validationToken=tok%20en")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "tok en");
    let resp = http.post(format!("{url}?validationToken=%0Aevil")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = http.post(&url).body(event(pdf)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(server.with(|s| s.calls_to("POST", "/scan/request").len()), 1);
}

/// `objects` pages with an opaque cursor, under a scope; every item appears exactly once.
#[tokio::test]
async fn objects_are_paged_under_a_scope() {
    let server = PythonServer::start(|_| {}).await;
    let asset = tempfile::tempdir().unwrap();
    let quarantine = tempfile::tempdir().unwrap();
    let root = asset.path().canonicalize().unwrap();
    for name in ["a/1.txt", "a/2.txt", "a/sub/3.txt", "ab/4.txt", "b/5.txt"] {
        write(&root.join(name), name.as_bytes());
    }
    let connector = Connector::start(&server, &root, quarantine.path(), &[]).await;
    let page = |query: String| {
        let connector = &connector;
        async move {
            let resp = connector.signed("GET", &format!("/filesystem-connector/objects?{query}"), Vec::new()).await;
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let (status, body) = page(format!("scope=a&limit=2&cursor={cursor}")).await;
        assert_eq!(status, 200, "{body}");
        for o in body["objects"].as_array().unwrap() {
            seen.push(o["metadata"]["relative_path"].as_str().unwrap().to_owned());
        }
        match body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["a/1.txt", "a/2.txt", "a/sub/3.txt"], "scope `a` is the folder, not the prefix `ab`");
    let (status, body) = page("limit=100".into()).await;
    assert_eq!((status, body["objects"].as_array().unwrap().len()), (200, 5));
    assert!(body["next_cursor"].is_null());
    let (status, _) = page("cursor=not-a-cursor".into()).await;
    assert_eq!(status, 422);
}

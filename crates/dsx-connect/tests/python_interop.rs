//! Python 1.x peers against our server, proven on their own wire traffic: every captured
//! request a Python connector or operator sent to the Python server
//! (`dsx_testkit::python_fixtures`, directions connector->server and client->server) is
//! replayed, byte for byte, against the real `dsx-connect serve` binary (auth on, Redis and
//! embedded stores), and our answer must carry what the Python peer reads from it.
//!
//! What changes in the replayed bytes is only what must: the connector's URL (a stand-in
//! on a loopback port instead of the capture's), job ids (fresh per run, so runs sharing a
//! Redis never meet) and the DSX-HMAC header (signed now with the key *our* server minted;
//! the deliberately bad ones stay bad). Where the Python server would call the connector,
//! a stand-in Python connector (a real HTTP server) verifies our signature, checks the call
//! against the recorded server->connector request and answers with the recorded bytes.
//! Interop differences kept on purpose are listed in docs/interop.md.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{Backend, Server, OPERATOR};
use dsx_hmac::{check_freshness, generate_nonce, parse_authorization, unix_now, verify_signature, SigningKey};
use dsx_testkit::python_fixtures::{self as py, Direction, Fixture};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

/// The captured connector's advertised base URL (`DSXCONNECTOR_CONNECTOR_URL`).
const RECORDED_CONNECTOR_BASE: &str = "http://127.0.0.1:41840";
/// Job ids of the capture, each replaced by a fresh one per run.
const RECORDED_JOBS: [&str; 9] = [
    "c72317d8-84ed-4c99-9862-e8e2e9e93581", // full scan, move (26–36)
    "3680b606-8792-469e-9759-97f51b9af905", // batch requested, core batching off (40, 41)
    "76c005f6-a9c6-431a-b09f-ac872ee6bfd9", // full scan with a limit (43)
    "6fa0512a-f9c2-4f69-8088-a8727acd4e0d", // pause / resume / cancel (79–90)
    "b881a393-75c3-41c8-b8e3-04733b89c7a5", // run 2, batched full scan (95–98)
    "00000000-0000-4000-8000-00000000f001", // unsigned enqueue_done (72)
    "00000000-0000-4000-8000-00000000f002", // paused job (74)
    "00000000-0000-4000-8000-00000000b001", // request_batch with batching off (44)
    "1432180f-3300-413e-80be-688780036e2f", // webhook event (46)
];

/// Which server a fixture is replayed against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Our defaults (batch intake on).
    Main,
    /// `DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_ENABLED=false`, as the capture's run 1.
    BatchOff,
}

/// How the replayed request is authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    /// As recorded: no Authorization; the recorded `X-Enrollment-Token`, if any.
    Recorded,
    /// DSX-HMAC with our minted key, fresh ts and nonce, over the exact body.
    Signed,
    /// Signed, then the signature corrupted (fixture 69).
    Tampered,
    /// Signed with ts = now − 3600 (fixture 70).
    Stale,
    /// Our operator token (operator routes need it when auth is on).
    Operator,
}

/// One fixture's expectation: where it goes, how it is authenticated, the status our server
/// answers, and what the Python peer reads from the answer (checked in [`Replay::check`]).
struct Expect {
    fixture: &'static str,
    target: Target,
    auth: Auth,
    status: u16,
    reads: &'static str,
}

const fn e(fixture: &'static str, target: Target, auth: Auth, status: u16, reads: &'static str) -> Expect {
    Expect { fixture, target, auth, status, reads }
}

use Auth::{Operator, Recorded, Signed, Stale, Tampered};
use Target::{BatchOff, Main};

#[rustfmt::skip]
const EXPECTATIONS: &[Expect] = &[
    e("01", Main, Recorded, 201, "status success, hmac_key_id and hmac_secret (its keys from now on)"),
    e("02", Main, Recorded, 200, "status success, message refreshed, no new key (ours kept)"),
    e("03", Main, Operator, 200, "a list holding the connector by uuid"),
    e("04", Main, Operator, 200, "the connector's config, relayed (s2c 05 checked)"),
    e("06", Main, Operator, 200, "ok true, relayed (s2c 07 checked)"),
    e("08", Main, Operator, 200, "the connector model, relayed (s2c 09 checked)"),
    e("10", Main, Operator, 200, "StatusResponse success, relayed (s2c 11; 12 and 13 via preview and estimate)"),
    e("14", Main, Operator, 200, "status success, message auth_ok (s2c 15 checked)"),
    e("16", Main, Recorded, 200, "a bare JSON string"),
    e("17", Main, Recorded, 200, "version"),
    e("18", Main, Recorded, 200, "status alive"),
    e("19", Main, Recorded, 200, "status ready"),
    e("20", Main, Recorded, 200, "public subset: auth.enabled, workers.scan_request_batch_*"),
    e("21", Main, Operator, 200, "StatusResponse success"),
    e("22", Main, Recorded, 200, "open, status success (Python 404s it)"),
    e("25", Main, Recorded, 200, "open, status success (Python 404s it; its connectors call it)"),
    e("26", Main, Operator, 202, "X-Job-Id; the connector's StatusResponse (s2c 27 checked)"),
    e("28", Main, Recorded, 200, "ttl -2, data {} before the job's first item"),
    e("29", Main, Signed, 202, "status success, message Scan task ID: <id>, Location"),
    e("30", Main, Signed, 202, "status success, message Scan task ID: <id>, Location"),
    e("34", Main, Signed, 200, "ok true; the job completes though enqueued_total says 0"),
    e("35", Main, Operator, 200, "job_id, status completed"),
    e("36", Main, Operator, 200, "a list of the job's results"),
    e("37", Main, Operator, 200, "files_scanned and the verdict counters"),
    e("38", Main, Operator, 200, "text/event-stream"),
    e("39", Main, Operator, 200, "text/event-stream"),
    e("40", Main, Operator, 202, "X-Job-Id (s2c 41, and 43 via limit, checked)"),
    e("42", BatchOff, Recorded, 200, "workers.scan_request_batch_enabled false"),
    e("44", BatchOff, Signed, 202, "status error, queued_items 0, task_ids [], batch_size 5"),
    e("46", Main, Signed, 202, "status success, message Scan task ID: <id>"),
    e("50", Main, Operator, 200, "a list of at most 1 result"),
    e("52", Main, Operator, 200, "a list of at most 1 result"),
    e("53", Main, Operator, 200, "the connector's config after the change (s2c 54 checked)"),
    e("61", Main, Operator, 200, "the connector's no_supported_fields answer, relayed"),
    e("62", Main, Operator, 400, "detail no_fields_to_update"),
    e("63", Main, Operator, 404, "a 404 (ours: connector_not_found; Python: a sentence)"),
    e("64", Main, Recorded, 401, "detail invalid_enrollment_token"),
    e("65", Main, Recorded, 401, "detail invalid_enrollment_token"),
    e("66", Main, Recorded, 200, "access_token, token_type Bearer, expires_in"),
    e("67", Main, Recorded, 401, "detail invalid_enrollment_token"),
    e("68", Main, Recorded, 401, "a 401 (ours: missing_hmac; Python: unknown_key_id)"),
    e("69", Main, Tampered, 401, "detail bad_signature"),
    e("70", Main, Stale, 401, "detail stale_request"),
    e("71", Main, Signed, 200, "status success, message auth_ok"),
    e("72", Main, Recorded, 401, "a 401 (ours: missing_hmac; Python: unknown_key_id)"),
    e("73", Main, Recorded, 401, "a 401 (ours: missing_hmac; Python: unauthorized)"),
    e("74", Main, Signed, 409, "StatusResponse error, Job paused/cancelled, scan_job_id=<id> (+ detail job_paused)"),
    e("75", Main, Operator, 404, "detail job_not_found"),
    e("79", Main, Operator, 202, "X-Job-Id"),
    e("80", Main, Recorded, 200, "data.status running, no paused or cancel flag, counters as strings"),
    e("81", Main, Operator, 200, "ok true"),
    e("82", Main, Operator, 200, "status paused"),
    e("83", Main, Recorded, 200, "data.paused \"1\""),
    e("84", Main, Operator, 200, "text/event-stream"),
    e("85", Main, Operator, 200, "ok true"),
    e("86", Main, Operator, 200, "ok true"),
    e("87", Main, Signed, 409, "StatusResponse error, Job paused/cancelled (+ detail job_cancelled)"),
    e("88", Main, Recorded, 200, "data.cancel \"1\""),
    e("89", Main, Signed, 200, "ok true"),
    e("90", Main, Operator, 200, "status cancelled"),
    e("91", Main, Signed, 204, "no body; the key is revoked"),
    e("92", Main, Operator, 200, "text/event-stream"),
    e("93", Main, Recorded, 201, "status success, message registered, a new key pair"),
    e("96", Main, Recorded, 200, "workers.scan_request_batch_enabled true, default 10, max 100; auth.enabled"),
    e("97", Main, Signed, 202, "status success, 5 task_ids, queued_items 5, batch_size 5"),
    e("98", Main, Signed, 200, "ok true; the job completes though enqueued_total says 20 for 5 accepted"),
    e("99", Main, Signed, 202, "status error, queued_items 0, batch_size 5"),
];

fn expectation(fixture: &Fixture) -> Option<&'static Expect> {
    EXPECTATIONS.iter().find(|e| fixture.name.starts_with(e.fixture) && fixture.name.as_bytes()[2] == b'-')
}

fn server_bound(fixture: &Fixture) -> bool {
    matches!(fixture.direction, Direction::ConnectorToServer | Direction::ClientToServer)
}

// ---------------------------------------------------------------------------------------
// The stand-in Python connector.

/// One call our server made to the stand-in.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    path_and_query: String,
    body: Vec<u8>,
}

#[derive(Default)]
struct StandInState {
    /// The key our server minted for the connector (`None` until registration).
    key: Mutex<Option<(String, String)>>,
    calls: Mutex<Vec<Call>>,
    /// Recorded server->connector exchanges by two-digit number.
    fixtures: HashMap<String, Fixture>,
}

/// A Python filesystem connector as the capture saw it: verifies DSX-HMAC with the key it
/// got at registration, answers with the recorded bytes.
struct StandIn {
    state: Arc<StandInState>,
    base: String,
}

impl StandIn {
    async fn start() -> Self {
        let fixtures = py::all()
            .into_iter()
            .filter(|f| f.direction == Direction::ServerToConnector)
            .map(|f| (f.name[..2].to_owned(), f))
            .collect();
        let state = Arc::new(StandInState { fixtures, ..Default::default() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(stand_in).with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { state, base }
    }

    fn set_key(&self, key_id: &str, secret: &str) {
        *self.state.key.lock().unwrap() = Some((key_id.to_owned(), secret.to_owned()));
    }

    fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Calls made since `since` (an index into the call log).
    fn calls_since(&self, since: usize) -> Vec<Call> {
        self.calls().split_off(since)
    }

    fn mark(&self) -> usize {
        self.state.calls.lock().unwrap().len()
    }

    /// Wait until a call matching `pred` arrives after `since`.
    async fn wait_call(&self, since: usize, what: &str, pred: impl Fn(&Call) -> bool) -> Call {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.calls_since(since).into_iter().find(&pred) {
                return c;
            }
            assert!(Instant::now() < deadline, "the stand-in connector never got {what}: {:?}", self.calls());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn detail(code: &str) -> Response {
    (StatusCode::UNAUTHORIZED, axum::Json(json!({ "detail": code }))).into_response()
}

/// Answer as the recorded Python connector answered.
fn recorded(f: &Fixture) -> Response {
    let mut resp = Response::new(Body::from(f.response.message.body.clone()));
    *resp.status_mut() = StatusCode::from_u16(f.response.status).unwrap();
    if let Some(ct) = f.response.message.header("content-type") {
        resp.headers_mut().insert("content-type", HeaderValue::from_str(ct).unwrap());
    }
    resp
}

async fn stand_in(State(state): State<Arc<StandInState>>, req: Request<Body>) -> Response {
    let method = req.method().to_string();
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = to_bytes(req.into_body(), 16 << 20).await.unwrap().to_vec();
    // The Python connector's verifier: its current key, ±60 s, the exact bytes.
    // Any other key (a stale one, say) is a bad signature to it.
    let Some((key_id, secret)) = state.key.lock().unwrap().clone() else { return detail("bad_signature") };
    let header = match parse_authorization(auth.as_deref()) {
        Ok(h) => h,
        Err(e) => return detail(e.code()),
    };
    if header.key_id() != Ok(key_id.as_str()) {
        return detail("bad_signature");
    }
    if let Err(e) = check_freshness(header.ts, unix_now(), 60) {
        return detail(e.code());
    }
    if let Err(e) = verify_signature(&header, &SigningKey::new(&secret), &method, &path_and_query, &body) {
        return detail(e.code());
    }
    state.calls.lock().unwrap().push(Call {
        method: method.clone(),
        path_and_query: path_and_query.clone(),
        body: body.clone(),
    });
    let path = path_and_query.split('?').next().unwrap_or_default();
    let query = path_and_query.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let f = |n: &str| &state.fixtures[n];
    let answer = match (method.as_str(), path.trim_start_matches("/filesystem-connector")) {
        ("GET", "/config") => f("05"),
        ("GET", "/healthz") => f("07"),
        ("GET", "/readyz") => f("09"),
        ("GET", "/repo_check") if query.is_empty() => f("11"),
        ("GET", "/repo_check") => f("12"),
        ("GET", "/estimate") => f("13"),
        ("POST", "/full_scan") if query.contains("batch=true") => f("41"),
        ("POST", "/full_scan") if query.contains("limit=") => f("43"),
        ("POST", "/full_scan") => f("27"),
        ("PUT", "/config") if body == py::get("61").request.message.body => {
            // The connector's own refusal, which the Python server relayed as fixture 61.
            return recorded(&py::get("61"));
        }
        ("PUT", "/config") => f("54"),
        ("POST", "/read_file") => {
            let location =
                serde_json::from_slice::<Value>(&body).ok().and_then(|b| b["location"].as_str().map(str::to_owned));
            match location.as_deref() {
                Some(l) if l.contains("eicar") => f("32"),
                Some(l) if l.contains("does-not-exist") => f("49"),
                _ => f("31"),
            }
        }
        ("PUT", "/item_action") => f("33"),
        _ => return (StatusCode::NOT_FOUND, axum::Json(json!({ "detail": "Not Found" }))).into_response(),
    };
    recorded(answer)
}

// ---------------------------------------------------------------------------------------
// Our server and the replay.

/// A server under test with the key it minted for the Python connector.
struct Peer {
    server: Server,
    key: Option<(String, String)>,
}

struct Replay {
    backend: Backend,
    main: Peer,
    /// Started when a fixture needs it (42, 44).
    batch_off: Option<Peer>,
    stand_in: StandIn,
    /// recorded → ours, applied to paths and bodies.
    rewrites: Vec<(String, String)>,
    covered: BTreeSet<String>,
}

/// An answer of our server.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

fn server_env(batch: bool) -> Vec<(&'static str, String)> {
    vec![
        ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN", py::ENROLLMENT_TOKEN.into()),
        ("DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_ENABLED", batch.to_string()),
        // Retries of the capture's deliberately failing items stay quick.
        ("DSXCONNECT_WORKERS__RETRY_BASE_MS", "100".into()),
    ]
}

impl Replay {
    async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// With `extra` settings on the main server.
    async fn start_with(backend: Backend, extra: &[(&'static str, String)]) -> Self {
        let stand_in = StandIn::start().await;
        let mut rewrites = vec![(RECORDED_CONNECTOR_BASE.to_owned(), stand_in.base.clone())];
        // Jobs born from an operator's full scan get the id our server mints (mapped when it
        // answers); the others get fresh ones now.
        for job in &RECORDED_JOBS[5..] {
            rewrites.push(((*job).to_owned(), Uuid::new_v4().to_string()));
        }
        Self {
            backend,
            main: Peer { server: Server::start(backend, &[server_env(true), extra.to_vec()].concat()), key: None },
            batch_off: None,
            stand_in,
            rewrites,
            covered: BTreeSet::new(),
        }
    }

    fn rewrite(&self, text: &str) -> String {
        self.rewrites.iter().fold(text.to_owned(), |t, (from, to)| t.replace(from, to))
    }

    fn map_job(&mut self, recorded: &str, ours: &str) {
        self.rewrites.push((recorded.to_owned(), ours.to_owned()));
    }

    fn ours(&self, recorded: &str) -> String {
        self.rewrite(recorded)
    }

    fn peer(&self, target: Target) -> &Peer {
        match target {
            Target::Main => &self.main,
            Target::BatchOff => self.batch_off.as_ref().expect("batch-off server started"),
        }
    }

    /// Send `f`'s request to `target` as the Python peer would send it now.
    async fn send(&self, f: &Fixture, target: Target, auth: Auth) -> Answer {
        let peer = self.peer(target);
        let path = self.rewrite(&f.request.path_and_query());
        let body = self.rewrite(std::str::from_utf8(&f.request.message.body).expect("text body")).into_bytes();
        let method = Method::from_bytes(f.request.method.as_bytes()).unwrap();
        let mut req = peer.server.http.request(method.clone(), peer.server.url(&path)).body(body.clone());
        for (name, value) in &f.request.message.headers {
            // Transport and auth headers are the client's own business; the rest as recorded.
            let skip =
                ["host", "content-length", "connection", "accept-encoding", "transfer-encoding", "authorization"];
            if !skip.contains(&name.to_ascii_lowercase().as_str()) {
                req = req.header(name, value);
            }
        }
        let sign = |ts: u64| {
            let (kid, secret) = peer.key.as_ref().expect("registered first");
            dsx_hmac::authorization_header(
                &SigningKey::new(secret),
                kid,
                method.as_str(),
                &path,
                ts,
                &generate_nonce(),
                &body,
            )
        };
        req = match auth {
            Auth::Recorded => req,
            Auth::Signed => req.header("Authorization", sign(unix_now())),
            Auth::Stale => req.header("Authorization", sign(unix_now() - 3600)),
            Auth::Tampered => {
                let good = sign(unix_now());
                let (head, sig) = good.rsplit_once("sig=").unwrap();
                // Flip the first character of the signature: still base64, no longer right.
                let flipped = if sig.starts_with('A') { "B" } else { "A" };
                req.header("Authorization", format!("{head}sig={flipped}{}", &sig[1..]))
            }
            Auth::Operator => req.bearer_auth(OPERATOR),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let is_stream = headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        // An event stream never ends: its headers are the answer.
        let body = if is_stream { Vec::new() } else { resp.bytes().await.unwrap().to_vec() };
        Answer { status, headers, body }
    }

    /// An operator call that is not itself a fixture (to reach a recorded s2c exchange).
    async fn operator(&self, method: Method, path: &str) -> Answer {
        let s = &self.main.server;
        let resp = s.http.request(method, s.api(path)).bearer_auth(OPERATOR).send().await.unwrap();
        Answer { status: resp.status(), headers: resp.headers().clone(), body: resp.bytes().await.unwrap().to_vec() }
    }

    /// A signed scan/request with `f`'s body (rewritten), to make a job exist.
    async fn enqueue_with_body_of(&self, f: &Fixture) {
        let answer = self.send(f, Target::Main, Auth::Signed).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}: {}", f.name, String::from_utf8_lossy(&answer.body));
    }

    /// The server->connector call that `f` records, as our server should make it now.
    fn expected_call(&self, f: &Fixture) -> (String, String) {
        (f.request.method.clone(), self.rewrite(&f.request.path_and_query()))
    }

    async fn assert_s2c(&self, since: usize, s2c: &str) -> Call {
        let f = py::get(s2c);
        let (method, target) = self.expected_call(&f);
        let call = self
            .stand_in
            .wait_call(since, &format!("{method} {target} ({})", f.name), |c| {
                c.method == method && c.path_and_query == target
            })
            .await;
        call
    }

    async fn job_raw(&self, job: &str) -> Value {
        let s = &self.main.server;
        s.http.get(s.api(&format!("scan/jobs/{job}/raw"))).send().await.unwrap().json().await.unwrap()
    }

    /// Poll the raw job until `data.status` is `status`.
    async fn wait_job_status(&self, job: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let raw = self.job_raw(job).await;
            if raw["data"]["status"] == status {
                return raw;
            }
            assert!(Instant::now() < deadline, "job {job} never reached {status}: {raw}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn take_key(&mut self, target: Target, answer: &Answer) {
        let body = answer.json();
        let kid = body["hmac_key_id"].as_str().expect("hmac_key_id").to_owned();
        let secret = body["hmac_secret"].as_str().expect("hmac_secret").to_owned();
        assert_eq!((kid.len(), secret.len()), (16, 44), "key shapes as Python mints them");
        if target == Target::Main {
            self.stand_in.set_key(&kid, &secret);
        }
        match target {
            Target::Main => self.main.key = Some((kid, secret)),
            Target::BatchOff => self.batch_off.as_mut().expect("batch-off server started").key = Some((kid, secret)),
        }
    }

    /// Everything that must happen before `f` is replayed.
    async fn before(&mut self, f: &Fixture) {
        match &f.name[..2] {
            "42" | "44" if self.batch_off.is_none() => {
                // Python's defaults (batch intake off), with the connector enrolled there too.
                self.batch_off = Some(Peer { server: Server::start(self.backend, &server_env(false)), key: None });
                let reg = py::get("01");
                let answer = self.send(&reg, Target::BatchOff, Auth::Recorded).await;
                assert_eq!(answer.status, StatusCode::CREATED);
                self.take_key(Target::BatchOff, &answer);
            }
            "74" => {
                // Python's harness paused the job first; the job exists once it has an item.
                self.enqueue_with_body_of(f).await;
                let job = self.ours(RECORDED_JOBS[6]);
                let answer = self.operator(Method::POST, &format!("scan/jobs/{job}/pause")).await;
                assert_eq!(answer.json(), json!({"ok": true}));
            }
            "96" => {
                // Run 2: an operator's batched full scan, which the Python server forwarded as 95.
                let since = self.stand_in.mark();
                let uuid = py::CONNECTOR_UUID;
                let answer =
                    self.operator(Method::POST, &format!("connectors/full_scan/{uuid}?batch=true&batch_size=5")).await;
                assert_eq!(answer.status, StatusCode::ACCEPTED);
                let job = answer.headers["x-job-id"].to_str().unwrap().to_owned();
                self.map_job(RECORDED_JOBS[4], &job);
                self.assert_s2c(since, "95").await;
            }
            _ => {}
        }
    }

    /// Replay one fixture and check what the Python peer reads from our answer.
    async fn replay(&mut self, f: &Fixture, expect: &Expect) {
        self.before(f).await;
        let since = self.stand_in.mark();
        let answer = self.send(f, expect.target, expect.auth).await;
        assert_eq!(
            answer.status.as_u16(),
            expect.status,
            "{}: expected {} ({}), got {}: {}",
            f.name,
            expect.status,
            expect.reads,
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        self.check(f, expect, since, &answer).await;
        self.covered.insert(f.name.clone());
    }

    async fn check(&mut self, f: &Fixture, expect: &Expect, since: usize, answer: &Answer) {
        let n = &f.name[..2];
        let uuid = py::CONNECTOR_UUID;
        match n {
            "01" | "93" => {
                let body = answer.json();
                assert_eq!((body["status"].as_str(), body["message"].as_str()), (Some("success"), Some("registered")));
                assert_eq!(body["connector_uuid"], uuid);
                let old = self.main.key.clone();
                self.take_key(expect.target, answer);
                assert_ne!(self.main.key, old, "{n}: a new key pair");
            }
            "02" => {
                let body = answer.json();
                assert_eq!((body["status"].as_str(), body["message"].as_str()), (Some("success"), Some("refreshed")));
                // The stand-in holds its key (it verified the signed key check and refused the one
                // signed with a random key): the heartbeat keeps it, no new key, no churn.
                assert!(body.get("hmac_key_id").is_none(), "02: no new key for a connector that holds its key");
                assert!(body.get("hmac_secret").is_none(), "02: a secret is never sent twice");
            }
            "03" => {
                let list = answer.json();
                assert!(list.as_array().unwrap().iter().any(|c| c["uuid"] == uuid), "{list}");
            }
            "04" | "06" | "08" | "10" => {
                let s2c = match n {
                    "04" => "05",
                    "06" => "07",
                    "08" => "09",
                    _ => "11",
                };
                self.assert_s2c(since, s2c).await;
                assert_eq!(answer.json(), py::get(s2c).response.message.json().unwrap(), "{n}: relayed as is");
                if n == "10" {
                    // The same route with preview, and the estimate, reach 12 and 13.
                    for (path, s2c) in [
                        (format!("connectors/repo_check/{uuid}?preview=3"), "12"),
                        (format!("connectors/estimate/{uuid}"), "13"),
                    ] {
                        let since = self.stand_in.mark();
                        let a = self.operator(Method::GET, &path).await;
                        assert_eq!(a.status, StatusCode::OK);
                        self.assert_s2c(since, s2c).await;
                        assert_eq!(a.json(), py::get(s2c).response.message.json().unwrap());
                    }
                }
            }
            "14" | "71" => {
                let body = answer.json();
                assert_eq!((body["status"].as_str(), body["message"].as_str()), (Some("success"), Some("auth_ok")));
                if n == "14" {
                    self.assert_s2c(since, "15").await;
                }
            }
            "16" => assert!(answer.json().is_string(), "a bare JSON string, as Python's \"0.3.88\""),
            "17" => assert!(answer.json()["version"].is_string()),
            "18" => assert_eq!(answer.json()["status"], "alive"),
            "19" => assert_eq!(answer.json()["status"], "ready"),
            "20" | "96" => {
                let body = answer.json();
                assert_eq!(body["auth"]["enabled"], true);
                assert_eq!(body["workers"]["scan_request_batch_enabled"], true);
                assert_eq!(body["workers"]["scan_request_batch_default_size"], 10);
                assert_eq!(body["workers"]["scan_request_batch_max_size"], 100);
                assert!(body.get("scanner").is_none(), "no token, public subset only: {body}");
            }
            "42" => {
                let body = answer.json();
                assert_eq!(body["workers"]["scan_request_batch_enabled"], false);
                assert_eq!(body["auth"]["enabled"], true);
            }
            "21" | "22" | "25" => assert_eq!(answer.json()["status"], "success"),
            "26" | "40" | "79" => {
                let job = answer.headers["x-job-id"].to_str().unwrap().to_owned();
                let (recorded, s2c) = match n {
                    "26" => (RECORDED_JOBS[0], Some("27")),
                    "40" => (RECORDED_JOBS[1], Some("41")),
                    _ => (RECORDED_JOBS[3], None),
                };
                self.map_job(recorded, &job);
                assert_eq!(answer.json()["status"], "success");
                match s2c {
                    Some(s2c) => {
                        self.assert_s2c(since, s2c).await;
                    }
                    None => {
                        let target = format!("/filesystem-connector/full_scan?job_id={job}");
                        self.stand_in
                            .wait_call(since, &target, |c| c.method == "POST" && c.path_and_query == target)
                            .await;
                        // The connector's first item makes the job exist (87's item, before the pause).
                        self.enqueue_with_body_of(&py::get("87")).await;
                    }
                }
                if n == "40" {
                    // A full scan with a limit reaches 43.
                    let since = self.stand_in.mark();
                    let a = self.operator(Method::POST, &format!("connectors/full_scan/{uuid}?limit=2")).await;
                    assert_eq!(a.status, StatusCode::ACCEPTED);
                    self.map_job(RECORDED_JOBS[2], a.headers["x-job-id"].to_str().unwrap());
                    self.assert_s2c(since, "43").await;
                }
            }
            "28" => {
                // Before the first item. Python answers `ttl:-2, data:{}` (no job yet); ours already
                // holds the job the operator's full scan created for this connector. What the Python
                // connector reads is the same: no `paused` or `cancel` flag, so it enqueues.
                let job = self.ours(RECORDED_JOBS[0]);
                let body = answer.json();
                assert_eq!(body["key"], format!("dsxconnect:job:{job}"));
                assert!(body["data"].is_object(), "{body}");
                assert!(body["data"].get("paused").is_none() && body["data"].get("cancel").is_none(), "{body}");
                if let Some(owner) = body["data"].get("connector_uuid") {
                    assert_eq!(owner, &json!(uuid), "{body}");
                }
            }
            "29" | "30" | "46" => {
                let body = answer.json();
                assert_eq!(body["status"], "success");
                let id = body["message"].as_str().unwrap().strip_prefix("Scan task ID: ").expect("Scan task ID: <id>");
                let location = answer.headers["location"].to_str().unwrap();
                assert_eq!(location, format!("{}/scan/request/{id}", common::PREFIX));
            }
            "34" | "98" => {
                assert_eq!(answer.json(), json!({"ok": true}));
                // The connector's enqueued_total (0, or 20 for 5) does not hold the job open.
                let job = self.ours(if n == "34" { RECORDED_JOBS[0] } else { RECORDED_JOBS[4] });
                let raw = self.wait_job_status(&job, "completed").await;
                let accepted = if n == "34" { "2" } else { "5" };
                assert_eq!(raw["data"]["processed_count"], accepted, "{raw}");
                assert_eq!(raw["data"]["enqueue_done"], "1");
                if n == "34" {
                    // Our workers read both files from the stand-in and moved the EICAR one,
                    // echoing the fields a Python connector reads back (location, metainfo).
                    let echoed = |c: &Call, fixture: &str| {
                        let sent = py::get(fixture).request.message.json().unwrap();
                        let body: Value = serde_json::from_slice(&c.body).unwrap();
                        body["location"] == sent["location"] && body["metainfo"] == sent["metainfo"]
                    };
                    let calls = self.stand_in.calls();
                    let to = |method: &str, route: &str| -> Vec<Call> {
                        let target = format!("/filesystem-connector/{route}");
                        calls.iter().filter(|c| c.method == method && c.path_and_query == target).cloned().collect()
                    };
                    for fixture in ["29", "30"] {
                        assert!(
                            to("POST", "read_file").iter().any(|c| echoed(c, fixture)),
                            "read_file for {fixture}'s item"
                        );
                    }
                    assert!(to("PUT", "item_action").iter().any(|c| echoed(c, "30")), "item_action for the EICAR item");
                    assert!(!to("PUT", "item_action").iter().any(|c| echoed(c, "29")), "no action on the benign item");
                }
            }
            "35" => {
                let body = answer.json();
                assert_eq!(
                    (body["job_id"].as_str(), body["status"].as_str()),
                    (Some(self.ours(RECORDED_JOBS[0]).as_str()), Some("completed"))
                );
            }
            "36" => {
                let job = self.ours(RECORDED_JOBS[0]);
                let rows = answer.json();
                let rows = rows.as_array().unwrap();
                assert_eq!(rows.len(), 2, "{rows:?}");
                assert!(rows.iter().all(|r| r["scan_job_id"] == job.as_str()));
                assert!(rows.iter().any(|r| r["verdict"]["verdict"] == "Malicious"));
            }
            "37" => {
                let body = answer.json();
                assert!(
                    body["files_scanned"].as_u64().unwrap() >= 2 && body["malicious_count"].as_u64().unwrap() >= 1,
                    "{body}"
                );
            }
            "38" | "39" | "84" | "92" => {
                assert!(answer.headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
            }
            "44" => {
                let body = answer.json();
                assert_eq!(
                    body,
                    json!({
                        "status": "error",
                        "message": "Batch scan requests are disabled",
                        "description": "Set DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_ENABLED=true",
                        "task_ids": [],
                        "queued_items": 0,
                        "batch_size": 5,
                    })
                );
            }
            "50" | "52" => assert!(answer.json().as_array().unwrap().len() <= 1),
            "53" => {
                let call = self.assert_s2c(since, "54").await;
                assert_eq!(call.body, py::get("54").request.message.body, "the change forwarded byte for byte");
                assert_eq!(answer.json(), py::get("54").response.message.json().unwrap());
            }
            "61" => assert_eq!(answer.json()["error"], "no_supported_fields"),
            "62" => assert_eq!(answer.json()["detail"], "no_fields_to_update"),
            "63" => assert_eq!(answer.json()["detail"], "connector_not_found"),
            "64" | "65" | "67" => assert_eq!(answer.json()["detail"], "invalid_enrollment_token"),
            "66" => {
                let body = answer.json();
                assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
                assert_eq!(body["token_type"], "Bearer");
                assert!(body["expires_in"].as_u64().is_some());
            }
            "68" | "72" | "73" => assert_eq!(answer.json()["detail"], "missing_hmac"),
            "69" => assert_eq!(answer.json()["detail"], "bad_signature"),
            "70" => assert_eq!(answer.json()["detail"], "stale_request"),
            "74" | "87" => {
                let job = self.ours(if n == "74" { RECORDED_JOBS[6] } else { RECORDED_JOBS[3] });
                let body = answer.json();
                assert_eq!(
                    body,
                    json!({
                        "status": "error",
                        "message": "Job paused/cancelled",
                        "description": format!("scan_job_id={job}"),
                        "id": null,
                        "preview": null,
                        "detail": if n == "74" { "job_paused" } else { "job_cancelled" },
                    })
                );
            }
            "75" => assert_eq!(answer.json()["detail"], "job_not_found"),
            "80" | "83" | "88" => {
                let job = self.ours(RECORDED_JOBS[3]);
                let body = answer.json();
                assert_eq!(body["key"], format!("dsxconnect:job:{job}"));
                assert_ne!(body["ttl"], -2, "the job exists");
                let data = &body["data"];
                assert!(data["enqueued_count"].is_string() && data["processed_count"].is_string(), "{data}");
                let (status, paused, cancel) = match n {
                    "80" => ("running", Value::Null, Value::Null),
                    "83" => ("paused", json!("1"), Value::Null),
                    _ => ("cancelled", Value::Null, json!("1")),
                };
                assert_eq!(
                    (&data["status"], &data["paused"], &data["cancel"]),
                    (&json!(status), &paused, &cancel),
                    "{data}"
                );
                assert!(body.get("scan_request").is_none() && data.get("scan_request").is_none());
            }
            "81" | "85" | "86" | "89" => assert_eq!(answer.json(), json!({"ok": true})),
            "82" | "90" => {
                let status = if n == "82" { "paused" } else { "cancelled" };
                assert_eq!(answer.json()["status"], status);
            }
            "91" => {
                // Unregistered: the key no longer verifies.
                let s = &self.main.server;
                let (kid, secret) = self.main.key.clone().unwrap();
                let path = common::auth_check_path();
                let auth = dsx_hmac::authorization_header(
                    &SigningKey::new(&secret),
                    &kid,
                    "POST",
                    &path,
                    unix_now(),
                    &generate_nonce(),
                    b"",
                );
                let resp = s.send(Method::POST, &path, Some(auth), b"").await;
                assert_eq!(common::detail(resp, StatusCode::UNAUTHORIZED).await, "unknown_key_id");
            }
            "97" => {
                let body = answer.json();
                assert_eq!(body["status"], "success");
                assert_eq!((body["queued_items"].as_u64(), body["batch_size"].as_u64()), (Some(5), Some(5)));
                assert_eq!(body["task_ids"].as_array().unwrap().len(), 5);
            }
            "99" => {
                let body = answer.json();
                assert_eq!(
                    (body["status"].as_str(), body["queued_items"].as_u64(), body["batch_size"].as_u64()),
                    (Some("error"), Some(0), Some(5))
                );
                assert_eq!(body["task_ids"], json!([]));
            }
            other => panic!("fixture {other} has an expectation but no check"),
        }
    }
}

async fn replay_everything(backend: Backend) {
    let mut replay = Replay::start(backend).await;
    // The stand-in's URL replaces the capture's in every body, registration included.
    let fixtures: Vec<Fixture> = py::all().into_iter().filter(server_bound).collect();
    for f in &fixtures {
        let expect = expectation(f).unwrap_or_else(|| panic!("{}: no expectation", f.name));
        replay.replay(f, expect).await;
    }
    let all: BTreeSet<String> = fixtures.iter().map(|f| f.name.clone()).collect();
    assert_eq!(replay.covered, all, "every server-bound fixture replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_peers_replayed_on_redis() {
    replay_everything(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_peers_replayed_on_embedded() {
    replay_everything(Backend::Embedded).await;
}

/// Every connector->server and client->server fixture has exactly one expectation, and every
/// expectation names a fixture of those directions: none is silently skipped.
#[test]
fn every_server_bound_fixture_has_an_expectation() {
    let fixtures = py::all();
    let bound: BTreeSet<&str> = fixtures.iter().filter(|f| server_bound(f)).map(|f| &f.name[..2]).collect();
    let expected: Vec<&str> = EXPECTATIONS.iter().map(|e| e.fixture).collect();
    let unique: BTreeSet<&str> = expected.iter().copied().collect();
    assert_eq!(unique.len(), expected.len(), "one expectation per fixture");
    assert_eq!(unique, bound, "expectations and server-bound fixtures differ");
    assert!(bound.len() >= 60, "only {} server-bound fixtures found", bound.len());
}

// ---------------------------------------------------------------------------------------
// The server fixes the replay called for, each on its own.

impl Replay {
    /// Enrol the Python connector (fixture 01) on the main server.
    async fn enrol(&mut self) {
        let answer = self.send(&py::get("01"), Target::Main, Auth::Recorded).await;
        assert_eq!(answer.status, StatusCode::CREATED);
        self.take_key(Target::Main, &answer);
    }

    /// Send `fixture`'s scan request into `job` (a fresh id), signed; its task id.
    async fn scan_into(&mut self, fixture: &str, job: &str) -> String {
        let f = py::get(fixture);
        let recorded = f.request.message.json().unwrap()["scan_job_id"].as_str().unwrap().to_owned();
        self.map_job(&recorded, job);
        let answer = self.send(&f, Target::Main, Auth::Signed).await;
        self.rewrites.pop();
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        answer.json()["message"].as_str().unwrap().strip_prefix("Scan task ID: ").unwrap().to_owned()
    }

    async fn operator_json(&self, method: Method, path: &str) -> Value {
        let answer = self.operator(method, path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", String::from_utf8_lossy(&answer.body));
        answer.json()
    }

    async fn wait_results(&self, job: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self.operator_json(Method::GET, &format!("scan/results/job/{job}")).await;
            let rows = rows.as_array().unwrap().clone();
            if rows.len() >= n {
                return rows;
            }
            assert!(Instant::now() < deadline, "job {job} has {} of {n} results", rows.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `GET scan/results/{task_id}` is a list (`[]` when unknown); `DELETE scan/results?job_id=X`
/// forgets that job's results only; without `job_id`, all of them.
async fn results_by_task_and_per_job_delete(backend: Backend) {
    let mut r = Replay::start(backend).await;
    r.enrol().await;
    let (gone, kept) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let gone_task = r.scan_into("29", &gone).await;
    let kept_task = r.scan_into("30", &kept).await;
    r.wait_results(&gone, 1).await;
    r.wait_results(&kept, 1).await;

    let one = r.operator_json(Method::GET, &format!("scan/results/{gone_task}")).await;
    let one = one.as_array().expect("a list");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["scan_request_task_id"], gone_task.as_str());
    assert_eq!(r.operator_json(Method::GET, &format!("scan/results/{}", Uuid::new_v4())).await, json!([]));

    let deleted = r.operator_json(Method::DELETE, &format!("scan/results?job_id={gone}")).await;
    assert_eq!((deleted["status"].as_str(), deleted["job_id"].as_str()), (Some("success"), Some(gone.as_str())));
    assert_eq!(deleted["cleared"], 1);
    assert_eq!(r.operator_json(Method::GET, &format!("scan/results/job/{gone}")).await, json!([]));
    assert_eq!(r.operator_json(Method::GET, &format!("scan/results/{gone_task}")).await, json!([]));
    let recent = r.operator_json(Method::GET, "scan/results?limit=1000").await;
    assert!(!recent.as_array().unwrap().iter().any(|row| row["scan_job_id"] == gone.as_str()));
    assert_eq!(r.operator_json(Method::GET, &format!("scan/results/{kept_task}")).await.as_array().unwrap().len(), 1);
    assert_eq!(r.wait_results(&kept, 1).await.len(), 1, "the other job's results stay");

    // Everything: only on a store of our own (the shared test Redis holds other tests' results).
    if matches!(backend, Backend::Embedded) {
        let deleted = r.operator_json(Method::DELETE, "scan/results").await;
        assert_eq!(deleted["job_id"], "all");
        assert_eq!(r.operator_json(Method::GET, &format!("scan/results/job/{kept}")).await, json!([]));
        assert_eq!(r.operator_json(Method::GET, "scan/stats").await["files_scanned"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_by_task_and_per_job_delete_on_redis() {
    results_by_task_and_per_job_delete(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_by_task_and_per_job_delete_on_embedded() {
    results_by_task_and_per_job_delete(Backend::Embedded).await;
}

/// `batch_size` is clamped to `…_MAX_SIZE` and defaults to `…_DEFAULT_SIZE`; `GET config`
/// advertises both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_size_is_clamped_and_defaulted() {
    let mut r = Replay::start_with(
        Backend::Embedded,
        &[
            ("DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_MAX_SIZE", "3".into()),
            ("DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_DEFAULT_SIZE", "2".into()),
        ],
    )
    .await;
    r.enrol().await;
    let s = &r.main.server;
    let config: Value = s.http.get(s.api("config")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (&config["workers"]["scan_request_batch_max_size"], &config["workers"]["scan_request_batch_default_size"]),
        (&json!(3), &json!(2))
    );
    let (kid, secret) = r.main.key.clone().unwrap();
    let keys = common::Keys { uuid: py::CONNECTOR_UUID.parse().unwrap(), key_id: kid, secret };
    let path = format!("{}/scan/request_batch", common::PREFIX);
    for (batch_size, reported) in [(Some(500), 3), (None, 2), (Some(1), 1)] {
        let mut body = json!({"requests": [{"location": "/a/x.txt", "metainfo": "x.txt"}]});
        if let Some(n) = batch_size {
            body["batch_size"] = json!(n);
        }
        let resp = s.signed(&keys, Method::POST, &path, &serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let answer: Value = resp.json().await.unwrap();
        assert_eq!((answer["status"].as_str(), answer["batch_size"].as_u64()), (Some("success"), Some(reported)));
    }
}

/// Python 1.x's syslog names alone turn syslog on in Python's frame, to a real UDP listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_syslog_names_send_python_frames() {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = udp.local_addr().unwrap().port();
    let mut r = Replay::start_with(
        Backend::Embedded,
        &[
            ("DSXCONNECT_SYSLOG__SYSLOG_SERVER_URL", "127.0.0.1".into()),
            ("DSXCONNECT_SYSLOG__SYSLOG_SERVER_PORT", port.to_string()),
            ("DSXCONNECT_SYSLOG__TRANSPORT", "udp".into()),
        ],
    )
    .await;
    r.enrol().await;
    r.scan_into("30", &Uuid::new_v4().to_string()).await;
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(30), udp.recv(&mut buf)).await.expect("a syslog frame").unwrap();
    let frame = std::str::from_utf8(&buf[..n]).unwrap();
    let json = frame
        .strip_prefix("<134>dsx-connect ")
        .and_then(|f| f.strip_suffix("\n\0"))
        .unwrap_or_else(|| panic!("not Python's frame: {frame:?}"));
    let doc: Value = serde_json::from_str(json).unwrap();
    assert_eq!(doc["source"], "dsx-connect");
    assert_eq!(doc["verdict"]["verdict"], "Malicious");
    let location = py::get("30").request.message.json().unwrap()["location"].clone();
    assert_eq!(doc["scan_request"]["location"], location);
    assert_eq!(doc["item_action"]["status"], "success", "the stand-in moved it (fixture 33)");
}

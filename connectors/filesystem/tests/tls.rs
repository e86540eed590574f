//! TLS on every hop with real processes: filesystem-connector ⇄ dsx-connect ⇄ the built-in
//! scanner served over the DSXA API (`dsx-connect scanner serve`), auth on, mutual TLS both
//! ways between connector and dsx-connect, on Redis and on the embedded store; refusals of
//! untrusted certificates on each hop with the cause in the log or the CLI's error; mutual
//! TLS refusing a connector without a client certificate; clear start-up errors for bad
//! certificate files. Certificates come from a test CA made at test time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dsx_service::tls::certgen::Ca;
use dsx_service::ClientTls;
use dsx_testkit::{free_port, unique_name, workspace_bin, Service, TestRedis};
use serde_json::Value;

const ENROLL: &str = "tls-enrollment-token";
const OPERATOR: &str = "tls-operator-token";
const API: &str = "/dsx-connect/api/v1";
const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// `ca.crt`, the server pair `tls.crt`/`tls.key` for 127.0.0.1, a client pair
/// `client.crt`/`client.key`, and `other-ca.crt` (a CA nobody's certificate chains to).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        dsx_service::tls::certgen::write_set(dir.path(), &["127.0.0.1".into(), "localhost".into()]).unwrap();
        std::fs::write(dir.path().join("other-ca.crt"), Ca::new("other CA").unwrap().cert_pem()).unwrap();
        Self { dir }
    }
    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    /// An HTTP client trusting `ca`.
    fn client(&self, ca: &str) -> reqwest::Client {
        let tls = ClientTls { ca_bundle: Some(PathBuf::from(self.file(ca))), ..Default::default() };
        dsx_service::http_client(reqwest::Client::builder().timeout(Duration::from_secs(10)), &tls).unwrap()
    }
}

type Env = Vec<(&'static str, String)>;

fn url(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

/// Wait until `GET path` answers 200 over HTTPS, or panic with the service's log.
async fn wait_https(svc: &mut Service, http: &reqwest::Client, path: &str) {
    let url = &format!("{}{path}", url(svc.port));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = http.get(url).send().await {
            if resp.status() == 200 {
                return;
            }
        }
        if let Some(code) = svc.exit_code() {
            panic!("service exited ({code:?}) before {url} was ready; log:\n{}", svc.logs());
        }
        assert!(Instant::now() < deadline, "{url} not ready in 30 s; log:\n{}", svc.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the service's log contains `text`.
async fn wait_log(svc: &Service, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = svc.logs();
        if logs.contains(text) {
            return logs;
        }
        assert!(Instant::now() < deadline, "{text:?} not logged in 30 s; log:\n{logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tls_env(pki: &Pki, prefix: &'static str) -> Vec<(&'static str, String)> {
    let (use_tls, cert, key) = match prefix {
        "DSXCONNECT" => ("DSXCONNECT_USE_TLS", "DSXCONNECT_TLS_CERTFILE", "DSXCONNECT_TLS_KEYFILE"),
        _ => ("DSXCONNECTOR_USE_TLS", "DSXCONNECTOR_TLS_CERTFILE", "DSXCONNECTOR_TLS_KEYFILE"),
    };
    vec![(use_tls, "true".into()), (cert, pki.file("tls.crt")), (key, pki.file("tls.key"))]
}

async fn spawn_scanner(pki: &Pki) -> Service {
    let port = free_port();
    let mut svc = Service::spawn(
        workspace_bin("dsx-connect").to_str().unwrap(),
        &["scanner", "serve", "--listen", &format!("127.0.0.1:{port}")],
        &tls_env(pki, "DSXCONNECT"),
        port,
    );
    wait_https(&mut svc, &pki.client("ca.crt"), "/healthz").await;
    svc
}

/// dsx-connect over HTTPS, auth on, the scanner at `scanner_port` over HTTPS; `extra` last.
async fn spawn_server(
    pki: &Pki,
    data: &Path,
    redis: Option<&TestRedis>,
    scanner_port: u16,
    extra: &[(&'static str, String)],
) -> Service {
    let port = free_port();
    let mut env = tls_env(pki, "DSXCONNECT");
    env.extend([
        ("DSXCONNECT_APP_ENV", unique_name("tls")),
        ("DSXCONNECT_DATA_DIR", data.display().to_string()),
        ("DSXCONNECT_AUTH__ENABLED", "true".into()),
        ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN", ENROLL.into()),
        ("DSXCONNECT_AUTH__ADMIN_TOKENS", OPERATOR.into()),
        ("DSXCONNECT_SCANNER__BASE_URL", url(scanner_port)),
        ("DSXCONNECT_SCANNER__CA_BUNDLE", pki.file("ca.crt")),
        ("DSXCONNECT_CONNECTORS__CA_BUNDLE", pki.file("ca.crt")),
        ("DSXCONNECT_WORKERS__RETRY_BASE_MS", "100".into()),
    ]);
    if let Some(r) = redis {
        env.push(("DSXCONNECT_REDIS_URL", r.url.clone()));
    }
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k, v.clone()));
    }
    let mut svc = Service::spawn(
        workspace_bin("dsx-connect").to_str().unwrap(),
        &["serve", "--listen", &format!("127.0.0.1:{port}"), "--role", "all"],
        &env,
        port,
    );
    wait_https(&mut svc, &pki.client("ca.crt"), &format!("{API}/healthz")).await;
    svc
}

/// A filesystem connector over HTTPS on `asset`, pointed at the server on `server_port`.
fn spawn_connector(
    pki: &Pki,
    asset: &Path,
    data: &Path,
    server_port: u16,
    extra: &[(&'static str, String)],
) -> Service {
    let port = free_port();
    let mut env = tls_env(pki, "DSXCONNECTOR");
    env.extend([
        ("DSXCONNECTOR_ASSET", asset.display().to_string()),
        ("DSXCONNECTOR_CONNECTOR_URL", url(port)),
        ("DSXCONNECTOR_DSX_CONNECT_URL", url(server_port)),
        ("DSXCONNECTOR_DATA_DIR", data.display().to_string()),
        ("DSXCONNECTOR_AUTH__ENABLED", "true".into()),
        ("DSXCONNECT_ENROLLMENT_TOKEN", ENROLL.into()),
        ("DSXCONNECTOR_ITEM_ACTION", "move".into()),
        ("DSXCONNECTOR_CA_BUNDLE", pki.file("ca.crt")),
    ]);
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k, v.clone()));
    }
    Service::spawn(
        workspace_bin("filesystem-connector").to_str().unwrap(),
        &["--listen", &format!("127.0.0.1:{port}")],
        &env,
        port,
    )
}

fn write(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

async fn operator(http: &reqwest::Client, server_port: u16, method: reqwest::Method, path: &str) -> reqwest::Response {
    http.request(method, format!("{}{API}/{path}", url(server_port))).bearer_auth(OPERATOR).send().await.unwrap()
}

/// Mutual TLS in both directions between connector and dsx-connect, plus HTTPS to the scanner.
fn mutual_tls_env(pki: &Pki) -> (Env, Env) {
    let server = vec![
        ("DSXCONNECT_TLS_CLIENT_CA", pki.file("ca.crt")),
        ("DSXCONNECT_CONNECTORS__TLS_CLIENT_CERTFILE", pki.file("client.crt")),
        ("DSXCONNECT_CONNECTORS__TLS_CLIENT_KEYFILE", pki.file("client.key")),
    ];
    let connector = vec![
        ("DSXCONNECTOR_TLS_CLIENT_CA", pki.file("ca.crt")),
        ("DSXCONNECTOR_TLS_CLIENT_CERTFILE", pki.file("client.crt")),
        ("DSXCONNECTOR_TLS_CLIENT_KEYFILE", pki.file("client.key")),
    ];
    (server, connector)
}

async fn full_scan_over_https_on_every_hop(redis: bool) {
    let redis = redis.then(TestRedis::get);
    let pki = Pki::new();
    let (server_mtls, connector_mtls) = mutual_tls_env(&pki);
    let scanner = spawn_scanner(&pki).await;
    let server_data = tempfile::tempdir().unwrap();
    let server = spawn_server(&pki, server_data.path(), redis.as_ref(), scanner.port, &server_mtls).await;
    let asset = tempfile::tempdir().unwrap();
    for i in 0..10 {
        write(&asset.path().join(format!("docs/file-{i:03}.txt")), format!("benign {i}").as_bytes());
    }
    for i in 0..2 {
        write(&asset.path().join(format!("inbox/eicar-{i}.com")), EICAR);
    }
    let data = tempfile::tempdir().unwrap();
    let mut connector = spawn_connector(&pki, asset.path(), data.path(), server.port, &connector_mtls);
    let http = pki.client("ca.crt");
    wait_https(&mut connector, &http, "/filesystem-connector/readyz").await;
    let uuid = std::fs::read_to_string(data.path().join("connector_uuid.txt")).unwrap().trim().to_owned();

    // Plain HTTP is not served on any of the three ports.
    for port in [scanner.port, server.port, connector.port] {
        let plain = reqwest::get(format!("http://127.0.0.1:{port}/")).await;
        assert!(plain.is_err(), "plain HTTP answered on {port}: {plain:?}");
    }
    // dsx-connect reaches the scanner over HTTPS.
    let probe = operator(&http, server.port, reqwest::Method::GET, "test/dsxa-connection").await;
    assert_eq!(probe.status(), 200, "{}", probe.text().await.unwrap());

    let job = unique_name("tls-job");
    let resp =
        operator(&http, server.port, reqwest::Method::POST, &format!("connectors/full_scan/{uuid}?job_id={job}")).await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        let j: Value =
            operator(&http, server.port, reqwest::Method::GET, &format!("scan/jobs/{job}")).await.json().await.unwrap();
        if j["status"] == "completed" {
            break j;
        }
        assert!(Instant::now() < deadline, "job not completed: {j}\n{}\n{}", server.logs(), connector.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(state["processed_count"].as_u64(), Some(12), "{state}");
    let results: Vec<Value> = operator(&http, server.port, reqwest::Method::GET, &format!("scan/results/job/{job}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(results.len(), 12);
    let malicious = results.iter().filter(|r| r["verdict"]["verdict"] == "Malicious").count();
    assert_eq!(malicious, 2, "{results:?}");
    // The connector carried out the item action dsx-connect asked for, over HTTPS.
    let root = asset.path().canonicalize().unwrap();
    for i in 0..2 {
        let moved = root.join("dsxconnect-quarantine/inbox").join(format!("eicar-{i}.com"));
        assert_eq!(std::fs::read(&moved).unwrap_or_default(), EICAR, "{} not quarantined", moved.display());
    }
}

#[tokio::test]
async fn full_scan_over_https_on_every_hop_on_redis() {
    full_scan_over_https_on_every_hop(true).await;
}

#[tokio::test]
async fn full_scan_over_https_on_every_hop_on_the_embedded_store() {
    full_scan_over_https_on_every_hop(false).await;
}

#[tokio::test]
async fn untrusted_certificates_are_refused_on_every_hop_and_the_cause_is_named() {
    let pki = Pki::new();
    let scanner = spawn_scanner(&pki).await;
    let server_data = tempfile::tempdir().unwrap();
    // dsx-connect trusts neither the scanner's nor the connectors' certificates.
    let server = spawn_server(
        &pki,
        server_data.path(),
        None,
        scanner.port,
        &[
            ("DSXCONNECT_SCANNER__CA_BUNDLE", pki.file("other-ca.crt")),
            ("DSXCONNECT_CONNECTORS__CA_BUNDLE", pki.file("other-ca.crt")),
        ],
    )
    .await;
    let http = pki.client("ca.crt");

    // dsx-connect → scanner.
    let probe = operator(&http, server.port, reqwest::Method::GET, "test/dsxa-connection").await;
    assert_eq!(probe.status(), 502);
    let body = probe.text().await.unwrap();
    assert!(body.contains("UnknownIssuer"), "the scanner refusal does not say why: {body}");

    // connector → dsx-connect: a connector that does not trust the CA never registers, and
    // its log says why.
    let asset = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let untrusting = spawn_connector(
        &pki,
        asset.path(),
        data.path(),
        server.port,
        &[("DSXCONNECTOR_CA_BUNDLE", pki.file("other-ca.crt"))],
    );
    let logs = wait_log(&untrusting, "registration failed").await;
    assert!(logs.contains("UnknownIssuer"), "the connector's log does not name the cause:\n{logs}");
    // Turning verification off (explicitly) lets it in, with a warning at start.
    let data = tempfile::tempdir().unwrap();
    let mut unverifying = spawn_connector(
        &pki,
        asset.path(),
        data.path(),
        server.port,
        &[("DSXCONNECTOR_CA_BUNDLE", pki.file("other-ca.crt")), ("DSXCONNECTOR_VERIFY_TLS", "false".into())],
    );
    wait_https(&mut unverifying, &http, "/filesystem-connector/readyz").await;
    assert!(unverifying.logs().contains("DSXCONNECTOR_VERIFY_TLS=false"), "{}", unverifying.logs());
    drop(unverifying);

    // dsx-connect → connector: the connector registers (it trusts dsx-connect) but
    // dsx-connect refuses its certificate when it calls it.
    let data = tempfile::tempdir().unwrap();
    let mut connector = spawn_connector(&pki, asset.path(), data.path(), server.port, &[]);
    wait_https(&mut connector, &http, "/filesystem-connector/readyz").await;
    let uuid = std::fs::read_to_string(data.path().join("connector_uuid.txt")).unwrap().trim().to_owned();
    let check = operator(&http, server.port, reqwest::Method::GET, &format!("connectors/repo_check/{uuid}")).await;
    assert_eq!(check.status(), 502);
    let logs = wait_log(&server, "connector unreachable").await;
    assert!(logs.contains("UnknownIssuer"), "dsx-connect's log does not name the cause:\n{logs}");

    // CLI → dsx-connect: without the CA it refuses and says why; with --ca-bundle it works.
    let cli = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(workspace_bin("dsx-connect"));
        cmd.args(["admin", "--url", &url(server.port), "--token", OPERATOR]).args(extra).arg("jobs");
        cmd.env_remove("DSXCONNECT_CA_BUNDLE").output().unwrap()
    };
    let refused = cli(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("UnknownIssuer"), "CLI error does not name the cause: {stderr}");
    let ok = cli(&["--ca-bundle", &pki.file("ca.crt")]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let insecure = cli(&["--insecure"]);
    assert!(insecure.status.success(), "{}", String::from_utf8_lossy(&insecure.stderr));
    assert!(String::from_utf8_lossy(&insecure.stderr).contains("not checked"), "--insecure warns");
}

#[tokio::test]
async fn mutual_tls_refuses_a_connector_without_a_client_certificate() {
    let pki = Pki::new();
    let scanner = spawn_scanner(&pki).await;
    let server_data = tempfile::tempdir().unwrap();
    let server =
        spawn_server(&pki, server_data.path(), None, scanner.port, &[("DSXCONNECT_TLS_CLIENT_CA", pki.file("ca.crt"))])
            .await;
    let http = pki.client("ca.crt");
    let asset = tempfile::tempdir().unwrap();

    let anonymous_data = tempfile::tempdir().unwrap();
    let anonymous = spawn_connector(&pki, asset.path(), anonymous_data.path(), server.port, &[]);
    let logs = wait_log(&anonymous, "registration failed").await;
    assert!(logs.contains("client_certificate_required"), "{logs}");

    let data = tempfile::tempdir().unwrap();
    let mut with_cert = spawn_connector(
        &pki,
        asset.path(),
        data.path(),
        server.port,
        &[
            ("DSXCONNECTOR_TLS_CLIENT_CERTFILE", pki.file("client.crt")),
            ("DSXCONNECTOR_TLS_CLIENT_KEYFILE", pki.file("client.key")),
        ],
    );
    wait_https(&mut with_cert, &http, "/filesystem-connector/readyz").await;
    let uuid = std::fs::read_to_string(data.path().join("connector_uuid.txt")).unwrap().trim().to_owned();
    let list = operator(&http, server.port, reqwest::Method::GET, "connectors/list").await.text().await.unwrap();
    assert!(list.contains(&uuid), "the connector with a client certificate is not registered: {list}");
    let anonymous_uuid = std::fs::read_to_string(anonymous_data.path().join("connector_uuid.txt")).unwrap();
    assert!(!list.contains(anonymous_uuid.trim()), "the connector without one got in: {list}");
}

#[test]
fn bad_certificate_files_stop_every_binary_with_the_path_and_the_reason() {
    let pki = Pki::new();
    let junk = pki.dir.path().join("junk.key");
    std::fs::write(&junk, "-----BEGIN PRIVATE KEY-----\nSENTINEL\n-----END PRIVATE KEY-----\n").unwrap();
    let missing = pki.dir.path().join("missing.crt");
    let data = tempfile::tempdir().unwrap();
    let dsx = workspace_bin("dsx-connect");
    let fs = workspace_bin("filesystem-connector");
    let cases: Vec<(&Path, Vec<String>, Env, &Path)> = vec![
        (
            &dsx,
            vec!["serve".into(), "--listen".into(), format!("127.0.0.1:{}", free_port())],
            vec![
                ("DSXCONNECT_USE_TLS", "true".into()),
                ("DSXCONNECT_TLS_CERTFILE", missing.display().to_string()),
                ("DSXCONNECT_TLS_KEYFILE", pki.file("tls.key")),
                ("DSXCONNECT_DATA_DIR", data.path().display().to_string()),
            ],
            &missing,
        ),
        (
            &dsx,
            vec!["scanner".into(), "serve".into(), "--listen".into(), format!("127.0.0.1:{}", free_port())],
            vec![
                ("DSXCONNECT_USE_TLS", "true".into()),
                ("DSXCONNECT_TLS_CERTFILE", pki.file("tls.crt")),
                ("DSXCONNECT_TLS_KEYFILE", junk.display().to_string()),
            ],
            &junk,
        ),
        (
            &fs,
            vec!["--listen".into(), format!("127.0.0.1:{}", free_port())],
            vec![
                ("DSXCONNECTOR_USE_TLS", "true".into()),
                ("DSXCONNECTOR_TLS_CERTFILE", pki.file("tls.crt")),
                ("DSXCONNECTOR_TLS_KEYFILE", junk.display().to_string()),
                ("DSXCONNECTOR_DATA_DIR", data.path().display().to_string()),
                ("DSXCONNECTOR_ASSET", data.path().display().to_string()),
            ],
            &junk,
        ),
    ];
    for (bin, args, env, named) in cases {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(&args);
        for (key, _) in std::env::vars() {
            if key.starts_with("DSXCONNECT") {
                cmd.env_remove(key);
            }
        }
        let out = cmd.envs(env).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started with a bad certificate file");
        assert!(stderr.contains(&named.display().to_string()), "{args:?}: the file is not named: {stderr}");
        assert!(!stderr.contains("SENTINEL"), "{args:?}: key file contents printed: {stderr}");
    }
}

/// `dsx-connect admin gen-certs` makes a set a real server starts with and a client verifies;
/// the keys are readable by the owner only.
#[tokio::test]
async fn gen_certs_makes_a_working_local_set() {
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(workspace_bin("dsx-connect"))
        .args(["admin", "gen-certs", "--out"])
        .arg(out.path())
        .args(["--hosts", "127.0.0.1,scanner.local"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    for name in ["ca.crt", "ca.key", "tls.crt", "tls.key", "client.crt", "client.key"] {
        assert!(String::from_utf8_lossy(&run.stdout).contains(name), "{name} not listed");
        let path = out.path().join(name);
        #[cfg(unix)]
        if name.ends_with(".key") {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} is readable by others");
        }
    }
    let file = |n: &str| out.path().join(n).display().to_string();
    let port = free_port();
    let mut scanner = Service::spawn(
        workspace_bin("dsx-connect").to_str().unwrap(),
        &["scanner", "serve", "--listen", &format!("127.0.0.1:{port}")],
        &[
            ("DSXCONNECT_USE_TLS", "true".into()),
            ("DSXCONNECT_TLS_CERTFILE", file("tls.crt")),
            ("DSXCONNECT_TLS_KEYFILE", file("tls.key")),
        ],
        port,
    );
    let tls = ClientTls {
        ca_bundle: Some(out.path().join("ca.crt")),
        identity: Some((out.path().join("client.crt"), out.path().join("client.key"))),
        ..Default::default()
    };
    let http = dsx_service::http_client(reqwest::Client::builder(), &tls).unwrap();
    wait_https(&mut scanner, &http, "/healthz").await;
}

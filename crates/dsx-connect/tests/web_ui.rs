//! The web UI in a real browser: headless Chromium, driven over WebDriver by Debian's
//! chromedriver, uses the page served at `/` against the real dsx-connect binary (auth on,
//! embedded store, built-in scanner) and a real filesystem-connector whose display name, asset
//! name and one file name are HTML markup. The browser signs in, starts a full scan and watches
//! the results arrive over the live stream.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian packages `chromium` and
//! `chromium-driver`; `scripts/test.sh` installs them). Without them the test fails.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dsx_testkit::{free_port, workspace_bin, Service};
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

const ENROLL: &str = "web-ui-enrollment-token";
const OPERATOR: &str = "web-ui-operator-token";
const API: &str = "/dsx-connect/api/v1";
const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// Connector-supplied strings and a file name that run script if a page renders them as HTML.
const HOSTILE_NAME: &str = r#"Share <img src=x onerror="window.__xss=1"> one"#;
const HOSTILE_ASSET: &str = r#"<img src=x onerror="window.__xss=2">"#;
const HOSTILE_FILE: &str = r#"<img src=x onerror="window.__xss=3">.txt"#;

/// The Content-Security-Policy the page must be served with.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// chromedriver on a loopback port and the profile folder of the browser it starts. On drop it
/// is killed together with that browser: a killed chromedriver leaves Chromium running, so the
/// browser's processes are found by their unique `--user-data-dir` and killed too.
struct ChromeDriver {
    child: Child,
    port: u16,
    log: PathBuf,
    profile: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl ChromeDriver {
    fn start() -> Self {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the web UI test drives Debian's headless Chromium; install it with \
                 `apt-get install chromium chromium-driver` (scripts/test.sh does)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("chromedriver.log");
        let out = std::fs::File::create(&log).unwrap();
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {CHROMEDRIVER}: {e}"));
        Self { child, port, log, profile: tempfile::tempdir().unwrap(), _dir: dir }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let http = reqwest::Client::new();
        loop {
            if let Ok(resp) = http.get(format!("{}/status", self.url())).send().await {
                let status: Value = resp.json().await.unwrap_or_default();
                if status["value"]["ready"] == true {
                    return;
                }
            }
            if let Ok(Some(code)) = self.child.try_wait() {
                panic!("chromedriver exited ({code}); log:\n{}", self.logs());
            }
            assert!(Instant::now() < deadline, "chromedriver not ready in 15 s; log:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Normally the session was closed and nothing is left; after a failure the browser may be.
        let needle = format!("--user-data-dir={}", self.profile.path().display());
        let Ok(procs) = std::fs::read_dir("/proc") else { return };
        for entry in procs.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            if cmdline.split(|b| *b == 0).any(|arg| arg == needle.as_bytes()) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
}

/// A headless Chromium session with a fresh profile. The background-networking switches keep
/// the browser from calling out (this machine's closed network refuses, and it would stall).
async fn browser(driver: &ChromeDriver) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1400,1000",
                format!("--user-data-dir={}", driver.profile.path().display()),
            ],
        },
    });
    let serde_json::Value::Object(caps) = caps else { unreachable!() };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url())
        .await
        .unwrap_or_else(|e| panic!("start a Chromium session: {e}; chromedriver log:\n{}", driver.logs()))
}

/// Run `script` (a function body; `arguments[i]` are `args`) until `done` accepts its value.
async fn wait_js(
    client: &Client,
    what: &str,
    limit: Duration,
    script: &str,
    args: Vec<Value>,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let value = client.execute(script, args.clone()).await.expect("run a script in the page");
        if done(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}; last seen: {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn js(client: &Client, script: &str, args: Vec<Value>) -> Value {
    client.execute(script, args).await.expect("run a script in the page")
}

/// dsx-connect with auth on and a filesystem connector on a folder of four files.
struct Deployment {
    server: Service,
    server_data: tempfile::TempDir,
    connector: Service,
    uuid: String,
    _dirs: Vec<tempfile::TempDir>,
}

fn spawn_server(data: &Path, port: u16) -> Service {
    let mut server = Service::spawn(
        workspace_bin("dsx-connect").to_str().unwrap(),
        &["serve", "--listen", &format!("127.0.0.1:{port}"), "--role", "all"],
        &[
            ("DSXCONNECT_DATA_DIR", data.display().to_string()),
            ("DSXCONNECT_AUTH__ENABLED", "true".into()),
            ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN", ENROLL.into()),
            ("DSXCONNECT_AUTH__ADMIN_TOKENS", OPERATOR.into()),
            ("DSXCONNECT_SCANNER__KIND", "builtin".into()),
        ],
        port,
    );
    server.wait_http(&format!("{API}/healthz"), 200, Duration::from_secs(20));
    server
}

impl Deployment {
    /// Stop dsx-connect and start it again on the same port and store.
    fn restart_server(&mut self) {
        let port = self.server.port;
        self.server.kill();
        self.server = spawn_server(self.server_data.path(), port);
    }
}

fn deploy() -> Deployment {
    let server_data = tempfile::tempdir().unwrap();
    let server = spawn_server(server_data.path(), free_port());

    let asset = tempfile::tempdir().unwrap();
    let files: [(&str, &[u8]); 4] = [
        ("docs/report.txt", b"quarterly report"),
        ("notes.md", b"# notes"),
        (HOSTILE_FILE, b"a benign file with markup in its name"),
        ("inbox/eicar.com", EICAR),
    ];
    for (name, content) in files {
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
            ("DSXCONNECTOR_DISPLAY_NAME", HOSTILE_NAME.into()),
            ("DSXCONNECTOR_ASSET_DISPLAY_NAME", HOSTILE_ASSET.into()),
            ("DSXCONNECTOR_CONNECTOR_URL", format!("http://127.0.0.1:{port}")),
            ("DSXCONNECTOR_DSX_CONNECT_URL", server.base_url()),
            ("DSXCONNECTOR_DATA_DIR", connector_data.path().display().to_string()),
            ("DSXCONNECTOR_AUTH__ENABLED", "true".into()),
            ("DSXCONNECT_ENROLLMENT_TOKEN", ENROLL.into()),
            ("DSXCONNECTOR_ITEM_ACTION", "move".into()),
        ],
        port,
    );
    connector.wait_http("/filesystem-connector/readyz", 200, Duration::from_secs(20));
    let uuid = std::fs::read_to_string(connector_data.path().join("connector_uuid.txt")).unwrap().trim().to_owned();
    Deployment { server, server_data, connector, uuid, _dirs: vec![asset, connector_data] }
}

/// The page and its assets are open, typed, and carry the CSP; the API behind them is not open.
async fn check_static_assets(base: &str) {
    let http = reqwest::Client::new();
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
    ] {
        let resp = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {path} without a token");
        assert_eq!(resp.headers()["content-type"], content_type, "{path}");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff", "{path}");
    }
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.headers()["content-security-policy"], CSP);
    let resp = http.get(format!("{base}{API}/connectors/list")).send().await.unwrap();
    assert_eq!(resp.status(), 401, "the operator API needs the token the page asks for");
}

async fn use_the_ui(client: &Client, base: &str, uuid: &str) {
    client.goto(&format!("{base}/")).await.unwrap();

    // Auth is on: the page asks for the token and shows nothing else.
    let input = client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("token-input")).await.unwrap();
    let shown = js(
        client,
        "return [document.getElementById('login-panel').hidden, document.getElementById('app').hidden]",
        vec![],
    )
    .await;
    assert_eq!(shown, json!([false, true]), "login shown, dashboard hidden");

    // A wrong token: the server's 401 is shown and the prompt stays.
    input.send_keys("not-the-operator-token").await.unwrap();
    client.find(Locator::Id("token-submit")).await.unwrap().click().await.unwrap();
    let error = wait_js(
        client,
        "error for a wrong token",
        Duration::from_secs(10),
        "const e = document.getElementById('token-error'); return e.hidden ? '' : e.textContent",
        vec![],
        |v| v.as_str().is_some_and(|s| !s.is_empty()),
    )
    .await;
    let error = error.as_str().unwrap();
    assert!(error.contains("rejected") && error.contains("invalid_operator_token"), "{error}");
    let after = js(
        client,
        "return [document.getElementById('login-panel').hidden, document.getElementById('app').hidden, \
         sessionStorage.length]",
        vec![],
    )
    .await;
    assert_eq!(after, json!([false, true, 0]), "still asking; the rejected token is not kept");

    // The operator token: the dashboard appears with the connector.
    let input = client.find(Locator::Id("token-input")).await.unwrap();
    input.send_keys(OPERATOR).await.unwrap();
    client.find(Locator::Id("token-submit")).await.unwrap().click().await.unwrap();
    let row = wait_js(
        client,
        "connector row",
        Duration::from_secs(10),
        "const row = document.querySelector(`#connectors tbody tr[data-uuid=\"${arguments[0]}\"]`);
         if (!row) return null;
         return {
           name: row.querySelector('.display-name').textContent,
           asset: row.querySelector('td.asset').textContent,
           status: row.querySelector('td.status').textContent,
           login_hidden: document.getElementById('login-panel').hidden,
         };",
        vec![json!(uuid)],
        |v| !v.is_null(),
    )
    .await;
    // Connector-supplied markup is shown as the literal text it is: not parsed, no element made.
    assert_eq!(row["name"], HOSTILE_NAME);
    assert_eq!(row["asset"], HOSTILE_ASSET);
    assert_eq!(row["status"], "ready");
    assert_eq!(row["login_hidden"], true);
    let xss = "return [document.querySelectorAll('img').length, typeof window.__xss]";
    assert_eq!(js(client, xss, vec![]).await, json!([0, "undefined"]), "markup from a connector became elements");

    // Full scan from the connector's row: the notice names the job.
    let button = format!("button.full-scan[data-uuid=\"{uuid}\"]");
    client.find(Locator::Css(&button)).await.unwrap().click().await.unwrap();
    let job = wait_js(
        client,
        "full scan job id",
        Duration::from_secs(10),
        "const n = document.getElementById('notice'); return n.hidden ? null : [n.dataset.jobId || '', n.textContent]",
        vec![],
        |v| v[0].as_str().is_some_and(|s| !s.is_empty()),
    )
    .await;
    let job_id = job[0].as_str().unwrap().to_owned();
    assert!(job[1].as_str().unwrap().contains(&job_id), "{job}");

    // Every file's result arrives over the live stream, and the job completes.
    let seen = wait_js(
        client,
        "results and job of the full scan",
        Duration::from_secs(30),
        "const rows = [...document.querySelectorAll(`#results tbody tr[data-job-id=\"${arguments[0]}\"]`)];
         const job = document.querySelector(`#jobs tbody tr[data-job-id=\"${arguments[0]}\"]`);
         return {
           results: rows.map(r => [r.dataset.verdict, r.querySelector('td.location').textContent,
                                   r.querySelector('td.verdict').textContent]),
           job: job && {
             status: job.dataset.status,
             progress: job.querySelector('td.progress .count').textContent,
             buttons: [...job.querySelectorAll('td.actions button')].map(b => [b.textContent, b.disabled]),
           },
         };",
        vec![json!(job_id)],
        |v| v["results"].as_array().is_some_and(|r| r.len() >= 4) && v["job"]["status"] == "completed",
    )
    .await;
    let files = ["docs/report.txt", "notes.md", HOSTILE_FILE, "inbox/eicar.com"];
    let mut by_file: Vec<(&str, &str)> = seen["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r[0], r[2], "the row's verdict and the shown verdict agree");
            let location = r[1].as_str().unwrap();
            let file = files
                .into_iter()
                .find(|f| location.ends_with(&format!("/{f}")))
                .unwrap_or_else(|| panic!("unexpected location {location:?}"));
            (file, r[0].as_str().unwrap())
        })
        .collect();
    by_file.sort();
    let mut expected = vec![
        ("docs/report.txt", "Benign"),
        ("notes.md", "Benign"),
        (HOSTILE_FILE, "Benign"),
        ("inbox/eicar.com", "Malicious"),
    ];
    expected.sort();
    assert_eq!(by_file, expected, "one row per file (the markup in a name shown as text), EICAR malicious");
    assert_eq!(seen["job"]["progress"], "4 / 4");
    assert_eq!(
        seen["job"]["buttons"],
        json!([["Pause", true], ["Resume", true], ["Cancel", true]]),
        "a completed job can no longer be paused, resumed or cancelled"
    );

    // The rows came over the stream: the result list was fetched once, at sign-in, before the scan.
    let probe = "return [
           performance.getEntriesByType('resource').filter(e => e.name.includes('/scan/results')).length,
           document.getElementById('live-status').dataset.state,
           document.querySelector('#stats dd[data-stat=\"files_scanned\"]').textContent,
           document.querySelector('#stats dd[data-stat=\"malicious_count\"]').textContent,
         ]";
    let state = wait_js(client, "stats after the scan", Duration::from_secs(10), probe, vec![], |v| v[2] == "4").await;
    assert_eq!(state, json!([1, "live", "4", "1"]));
    assert_eq!(js(client, xss, vec![]).await, json!([0, "undefined"]), "markup in a file name became elements");
}

/// The live stream survives a server restart: the page reconnects by itself, and a second
/// scan's results arrive over the new stream.
async fn reconnects_after_a_restart(client: &Client, deployment: &mut Deployment) {
    deployment.restart_server();
    let state = "return [document.getElementById('live-status').dataset.state,
                 performance.getEntriesByType('resource').filter(e => e.name.includes('/scan/results')).length]";
    // Reconnected: live again, and the result list reloaded once for the new connection.
    wait_js(client, "stream reconnected", Duration::from_secs(15), state, vec![], |v| *v == json!(["live", 2])).await;

    let button = format!("button.full-scan[data-uuid=\"{}\"]", deployment.uuid);
    let previous = js(client, "return document.getElementById('notice').dataset.jobId || ''", vec![]).await;
    client.find(Locator::Css(&button)).await.unwrap().click().await.unwrap();
    let job_id = wait_js(
        client,
        "second full scan job id",
        Duration::from_secs(10),
        "const n = document.getElementById('notice'); return n.hidden ? '' : n.dataset.jobId || ''",
        vec![],
        |v| v.as_str().is_some_and(|s| !s.is_empty()) && *v != previous,
    )
    .await;
    let seen = wait_js(
        client,
        "results of the scan after the restart",
        Duration::from_secs(20),
        "const rows = [...document.querySelectorAll(`#results tbody tr[data-job-id=\"${arguments[0]}\"]`)];
         const job = document.querySelector(`#jobs tbody tr[data-job-id=\"${arguments[0]}\"]`);
         return {
           locations: rows.map(r => r.querySelector('td.location').textContent),
           status: job && job.dataset.status,
           progress: job && job.querySelector('td.progress .count').textContent,
         };",
        vec![job_id],
        |v| {
            v["status"] == "completed"
                && v["progress"] == format!("{0} / {0}", v["locations"].as_array().unwrap().len())
        },
    )
    .await;
    let locations = seen["locations"].as_array().unwrap();
    for file in ["docs/report.txt", "notes.md", HOSTILE_FILE] {
        assert!(locations.iter().any(|l| l.as_str().unwrap().ends_with(&format!("/{file}"))), "{file}: {seen}");
    }
    assert_eq!(js(client, state, vec![]).await, json!(["live", 2]), "the new results came over the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_signs_in_scans_and_watches_results_in_a_browser() {
    let started = Instant::now();
    let mut driver = ChromeDriver::start();
    let mut deployment = deploy();
    let base = deployment.server.base_url();
    check_static_assets(&base).await;

    driver.wait_ready().await;
    let client = browser(&driver).await;
    let steps = async {
        use_the_ui(&client, &base, &deployment.uuid).await;
        reconnects_after_a_restart(&client, &mut deployment).await;
    };
    let outcome = AssertUnwindSafe(steps).catch_unwind().await;
    if outcome.is_err() {
        let text = client.execute("return document.body.innerText", vec![]).await.unwrap_or_default();
        let shot = std::env::temp_dir().join("dsx-connect-web-ui-failure.png");
        if let Ok(png) = client.screenshot().await {
            let _ = std::fs::write(&shot, png);
        }
        eprintln!(
            "---- page text\n{}\n---- screenshot: {}\n---- dsx-connect log\n{}\n---- connector log\n{}",
            text.as_str().unwrap_or_default(),
            shot.display(),
            deployment.server.logs(),
            deployment.connector.logs()
        );
    }
    let _ = client.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    eprintln!("web UI test took {:?}", started.elapsed());
}

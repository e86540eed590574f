//! The pipeline harness shared by `pipeline.rs` and `reliability.rs`: real dsx-connect (API and
//! workers), a real filesystem-connector on a folder of benign and EICAR files, a real
//! redis-server or the embedded store, auth on, everything on loopback.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dsx_testkit::{free_port, unique_name, workspace_bin, RedisServer, Service, TestRedis};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const ENROLL: &str = "pipeline-enrollment-token";
pub const OPERATOR: &str = "pipeline-operator-token";
pub const API: &str = "/dsx-connect/api/v1";
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// Which store the server of a [`Pipeline`] runs on.
pub enum Store {
    Embedded,
    /// The Redis shared by the test binary.
    SharedRedis,
    /// A private redis-server the test may stop and start again.
    PrivateRedis(RedisServer),
}

pub struct Pipeline {
    pub _redis: Option<TestRedis>,
    pub private_redis: Option<RedisServer>,
    pub server_env: Vec<(&'static str, String)>,
    pub server: Service,
    pub workers: Vec<Service>,
    pub connector: Service,
    pub connector_env: Vec<(&'static str, String)>,
    pub connector_port: u16,
    pub asset: tempfile::TempDir,
    pub _data: tempfile::TempDir,
    pub _server_data: tempfile::TempDir,
    pub http: reqwest::Client,
    pub uuid: String,
}

pub fn write(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

pub fn spawn_server(env: &[(&'static str, String)], role: &str) -> Service {
    spawn_server_on(env, role, free_port())
}

/// The server on a given port (a restart where the connector expects it).
pub fn spawn_server_on(env: &[(&'static str, String)], role: &str, port: u16) -> Service {
    let mut svc = Service::spawn(
        workspace_bin("dsx-connect").to_str().unwrap(),
        &["serve", "--listen", &format!("127.0.0.1:{port}"), "--role", role],
        env,
        port,
    );
    svc.wait_http(&format!("{API}/healthz"), 200, Duration::from_secs(20));
    svc
}

/// The built-in scanner on the DSXA HTTP API (`dsx-connect scanner serve`) on `port`.
pub fn spawn_scanner(port: u16) -> Service {
    let mut s = Service::spawn(
        workspace_bin("dsx-connect").to_str().unwrap(),
        &["scanner", "serve", "--listen", &format!("127.0.0.1:{port}")],
        &[],
        port,
    );
    s.wait_http("/healthz", 200, Duration::from_secs(20));
    s
}

/// A TCP relay on loopback to `upstream_port` that holds every chunk of the answers for `delay`,
/// so each scan through it takes at least that long however fast the machine is. When the
/// upstream is gone (or refuses), the relay drops the client's connection, as a dead peer would.
pub async fn slow_relay(upstream_port: u16, delay: Duration) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(upstream) = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut upstream_read, mut upstream_write) = upstream.into_split();
                let requests = tokio::io::copy(&mut client_read, &mut upstream_write);
                let answers = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = upstream_read.read(&mut buf).await {
                        tokio::time::sleep(delay).await;
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::select! { _ = requests => {}, _ = answers => {} }
            });
        }
    });
    port
}

/// The built-in scanner (`dsx-connect scanner serve`) behind a [`slow_relay`] of `delay`, and
/// the server environment that sends scans to it. With the in-flight cap (16 unless set) a job of
/// N files then takes at least N / cap × `delay` on any machine, so a test that acts "mid-scan"
/// (kills a process, fills a disk) still finds the scan running however fast the machine is.
pub async fn paced_scanner(delay: Duration) -> (Service, Vec<(&'static str, String)>) {
    let scanner_port = free_port();
    let scanner = spawn_scanner(scanner_port);
    let relay_port = slow_relay(scanner_port, delay).await;
    let env = vec![
        ("DSXCONNECT_SCANNER__KIND", "dsxa".into()),
        ("DSXCONNECT_SCANNER__BASE_URL", format!("http://127.0.0.1:{relay_port}")),
    ];
    (scanner, env)
}

pub fn spawn_connector(env: &[(&'static str, String)], port: u16) -> Service {
    let mut connector = Service::spawn(
        workspace_bin("filesystem-connector").to_str().unwrap(),
        &["--listen", &format!("127.0.0.1:{port}")],
        env,
        port,
    );
    connector.wait_http("/filesystem-connector/readyz", 200, Duration::from_secs(30));
    connector
}

impl Pipeline {
    /// `benign` plain files and `eicar` EICAR copies spread over two folders.
    pub async fn start(redis: bool, benign: usize, eicar: usize, role: &str, extra: &[(&'static str, String)]) -> Self {
        let store = if redis { Store::SharedRedis } else { Store::Embedded };
        Self::start_on(store, benign, eicar, role, extra).await
    }

    pub async fn start_on(
        store: Store,
        benign: usize,
        eicar: usize,
        role: &str,
        extra: &[(&'static str, String)],
    ) -> Self {
        let (redis, private_redis) = match store {
            Store::Embedded => (None, None),
            Store::SharedRedis => (Some(TestRedis::get()), None),
            Store::PrivateRedis(server) => (None, Some(server)),
        };
        let server_data = tempfile::tempdir().unwrap();
        let mut server_env: Vec<(&'static str, String)> = vec![
            ("DSXCONNECT_APP_ENV", unique_name("pipe")),
            ("DSXCONNECT_DATA_DIR", server_data.path().display().to_string()),
            ("DSXCONNECT_AUTH__ENABLED", "true".into()),
            ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN", ENROLL.into()),
            ("DSXCONNECT_AUTH__ADMIN_TOKENS", OPERATOR.into()),
            ("DSXCONNECT_WORKERS__RETRY_BASE_MS", "100".into()),
        ];
        if let Some(r) = &redis {
            server_env.push(("DSXCONNECT_REDIS_URL", r.url.clone()));
        }
        if let Some(r) = &private_redis {
            server_env.push(("DSXCONNECT_REDIS_URL", r.url()));
        }
        // `DSXCONNECTOR_*` entries of `extra` are the connector's, the rest the server's.
        let (connector_extra, server_extra): (Vec<_>, Vec<_>) =
            extra.iter().partition(|(k, _)| k.starts_with("DSXCONNECTOR_"));
        for (k, v) in server_extra {
            server_env.retain(|(key, _)| key != k);
            server_env.push((k, v.clone()));
        }
        let server = spawn_server(&server_env, role);

        let asset = tempfile::tempdir().unwrap();
        for i in 0..benign {
            write(&asset.path().join(format!("docs/file-{i:05}.txt")), format!("benign content {i}").as_bytes());
        }
        for i in 0..eicar {
            write(&asset.path().join(format!("inbox/eicar-{i:03}.com")), EICAR);
        }
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut connector_env = vec![
            ("DSXCONNECTOR_ASSET", asset.path().display().to_string()),
            ("DSXCONNECTOR_CONNECTOR_URL", format!("http://127.0.0.1:{port}")),
            ("DSXCONNECTOR_DSX_CONNECT_URL", server.base_url()),
            ("DSXCONNECTOR_DATA_DIR", data.path().display().to_string()),
            ("DSXCONNECTOR_AUTH__ENABLED", "true".into()),
            ("DSXCONNECT_ENROLLMENT_TOKEN", ENROLL.into()),
            ("DSXCONNECTOR_ITEM_ACTION", "move".into()),
            ("DSXCONNECTOR_FULL_SCAN_ENQUEUE_CONCURRENCY", "16".into()),
        ];
        for (k, v) in connector_extra {
            connector_env.retain(|(key, _)| key != k);
            connector_env.push((k, v.clone()));
        }
        let connector = spawn_connector(&connector_env, port);
        let uuid = std::fs::read_to_string(data.path().join("connector_uuid.txt")).unwrap().trim().to_owned();
        Self {
            _redis: redis,
            private_redis,
            server_env,
            server,
            workers: Vec::new(),
            connector,
            connector_env,
            connector_port: port,
            asset,
            _data: data,
            _server_data: server_data,
            http: reqwest::Client::new(),
            uuid,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.asset.path().canonicalize().unwrap()
    }

    pub async fn operator(&self, method: Method, path: &str) -> reqwest::Response {
        self.http
            .request(method, format!("{}{API}/{path}", self.server.base_url()))
            .bearer_auth(OPERATOR)
            .send()
            .await
            .unwrap()
    }

    pub async fn json(&self, path: &str) -> Value {
        self.operator(Method::GET, path).await.json().await.unwrap()
    }

    pub async fn full_scan(&self, job: &str, query: &str) {
        let resp =
            self.operator(Method::POST, &format!("connectors/full_scan/{}?job_id={job}{query}", self.uuid)).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }

    pub async fn wait_job(&self, job: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let resp = self.operator(Method::GET, &format!("scan/jobs/{job}")).await;
            if resp.status() == StatusCode::OK {
                let j: Value = resp.json().await.unwrap();
                if done(&j) {
                    return j;
                }
                assert!(Instant::now() < deadline, "job {job} not done in {limit:?}: {j}");
            } else {
                assert!(Instant::now() < deadline, "job {job} never appeared");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn results(&self, job: &str) -> Vec<Value> {
        self.json(&format!("scan/results/job/{job}")).await.as_array().unwrap().clone()
    }
}

pub fn verdict(r: &Value) -> &str {
    r["verdict"]["verdict"].as_str().unwrap_or("")
}

pub fn location(r: &Value) -> String {
    r["scan_request"]["location"].as_str().unwrap_or_default().to_owned()
}

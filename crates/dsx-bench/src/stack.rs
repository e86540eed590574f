//! The real stack for the end-to-end runs: `dsx-connect serve --role all` (auth on, built-in
//! scanner) and a `filesystem-connector` on a folder, each on a free loopback port, with logs
//! in the run's temp dir. Both processes are stopped when the stack is dropped, the
//! connector first (SIGTERM) so its signed unregister still reaches the server.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::PREFIX;

/// Which store the server runs on.
#[derive(Clone, Debug)]
pub enum Store {
    Embedded,
    Redis { url: String },
}

impl Store {
    pub fn name(&self) -> &'static str {
        match self {
            Store::Embedded => "embedded",
            Store::Redis { .. } => "redis",
        }
    }
}

/// Where the `dsx-connect` and `filesystem-connector` binaries are: `--bin-dir`, else the
/// directory of the running `dsx-bench` (the same cargo target dir).
pub fn bin_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match explicit {
        Some(d) => d.to_path_buf(),
        None => {
            let exe = std::env::current_exe().context("locate the dsx-bench executable")?;
            let mut dir = exe.parent().context("dsx-bench has no parent directory")?.to_path_buf();
            // A test harness runs from target/<profile>/deps: the binaries are one level up.
            if dir.file_name().is_some_and(|n| n == "deps") {
                dir.pop();
            }
            dir
        }
    };
    for name in ["dsx-connect", "filesystem-connector"] {
        if !dir.join(name).is_file() {
            bail!(
                "{name} not found in {}: build it (cargo build --release -p dsx-connect -p filesystem-connector) \
                 or pass --bin-dir",
                dir.display()
            );
        }
    }
    Ok(dir)
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn random_token(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A spawned process with its log file; killed on drop.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(
        name: &'static str,
        bin: &Path,
        args: &[String],
        env: &[(&str, String)],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        // Only what the bench sets configures the processes.
        for (key, _) in std::env::vars() {
            if key.starts_with("DSXCONNECT") {
                cmd.env_remove(key);
            }
        }
        cmd.env("DSXCONNECT_LOG_FORMAT", "text").env("DSXCONNECTOR_LOG_FORMAT", "text").env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("start {}", bin.display()))?;
        Ok(Self { name, child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of the log, for error messages. Secrets are not logged by either binary.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

pub struct Stack {
    // Field order is drop order: connector, then server, then the temp dir.
    connector: Option<Proc>,
    server: Option<Proc>,
    pub dir: tempfile::TempDir,
    pub server_url: String,
    pub connector_uuid: String,
    operator: String,
    pub http: reqwest::Client,
}

/// What goes into a stack.
pub struct StackOptions<'a> {
    pub bin_dir: &'a Path,
    pub store: Store,
    /// Results kept by the server (`DSXCONNECT_RESULTS_DB__RETAIN`); must cover the whole run.
    pub results_retain: usize,
    /// HTTPS both ways between connector and dsx-connect, with a test CA made for the run.
    pub tls: bool,
}

impl Stack {
    /// Create the temp dir and the asset folder; `fill` writes the files before anything starts.
    pub fn prepare() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
        let dir = tempfile::Builder::new().prefix("dsx-bench-").tempdir().context("create a temp dir")?;
        let asset = dir.path().join("asset");
        std::fs::create_dir_all(&asset)?;
        Ok((dir, asset))
    }

    /// Start dsx-connect and the filesystem connector on `asset` and wait until both are ready.
    pub async fn start(dir: tempfile::TempDir, asset: PathBuf, opts: StackOptions<'_>) -> anyhow::Result<Self> {
        let enrollment = random_token("enroll");
        let operator = random_token("operator");
        let (sport, cport) = (free_port()?, free_port()?);
        let server_data = dir.path().join("server");
        let connector_data = dir.path().join("connector");
        std::fs::create_dir_all(&server_data)?;
        std::fs::create_dir_all(&connector_data)?;
        let scheme = if opts.tls { "https" } else { "http" };
        let server_url = format!("{scheme}://127.0.0.1:{sport}");
        let certs = dir.path().join("certs");
        let mut client_tls = dsx_service::ClientTls::default();
        if opts.tls {
            dsx_service::tls::certgen::write_set(&certs, &["127.0.0.1".into(), "localhost".into()])
                .map_err(anyhow::Error::msg)?;
            client_tls.ca_bundle = Some(certs.join("ca.crt"));
        }
        let cert = |name: &str| certs.join(name).display().to_string();

        let mut env: Vec<(&str, String)> = vec![
            ("DSXCONNECT_AUTH__ENABLED", "true".into()),
            ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN", enrollment.clone()),
            ("DSXCONNECT_AUTH__ADMIN_TOKENS", operator.clone()),
            ("DSXCONNECT_DATA_DIR", server_data.display().to_string()),
            ("DSXCONNECT_LOG_LEVEL", "warn".into()),
            ("DSXCONNECT_SCANNER__KIND", "builtin".into()),
            ("DSXCONNECT_RESULTS_DB__RETAIN", opts.results_retain.max(1000).to_string()),
        ];
        if opts.tls {
            env.push(("DSXCONNECT_USE_TLS", "true".into()));
            env.push(("DSXCONNECT_TLS_CERTFILE", cert("tls.crt")));
            env.push(("DSXCONNECT_TLS_KEYFILE", cert("tls.key")));
            env.push(("DSXCONNECT_CONNECTORS__CA_BUNDLE", cert("ca.crt")));
        }
        if let Store::Redis { url } = &opts.store {
            env.push(("DSXCONNECT_REDIS_URL", url.clone()));
            env.push(("DSXCONNECT_APP_ENV", format!("bench{:08x}", rand::random::<u32>())));
        }
        let server = Proc::spawn(
            "dsx-connect",
            &opts.bin_dir.join("dsx-connect"),
            &["serve".into(), "--listen".into(), format!("127.0.0.1:{sport}"), "--role".into(), "all".into()],
            &env,
            dir.path().join("dsx-connect.log"),
        )?;
        let http = dsx_service::http_client(reqwest::Client::builder().timeout(Duration::from_secs(60)), &client_tls)
            .map_err(anyhow::Error::msg)?;
        let mut stack = Self {
            connector: None,
            server: Some(server),
            server_url: server_url.clone(),
            connector_uuid: String::new(),
            operator,
            http,
            dir,
        };
        stack.wait_ready(true, &format!("{server_url}{PREFIX}/healthz")).await?;

        let mut connector_env: Vec<(&str, String)> = vec![
            ("DSXCONNECTOR_AUTH__ENABLED", "true".into()),
            ("DSXCONNECT_ENROLLMENT_TOKEN", enrollment),
            ("DSXCONNECTOR_ASSET", asset.display().to_string()),
            ("DSXCONNECTOR_DATA_DIR", connector_data.display().to_string()),
            ("DSXCONNECTOR_CONNECTOR_URL", format!("{scheme}://127.0.0.1:{cport}")),
            ("DSXCONNECTOR_DSX_CONNECT_URL", server_url.clone()),
            ("DSXCONNECTOR_ITEM_ACTION", "nothing".into()),
            ("DSXCONNECTOR_LOG_LEVEL", "warn".into()),
        ];
        if opts.tls {
            connector_env.push(("DSXCONNECTOR_USE_TLS", "true".into()));
            connector_env.push(("DSXCONNECTOR_TLS_CERTFILE", cert("tls.crt")));
            connector_env.push(("DSXCONNECTOR_TLS_KEYFILE", cert("tls.key")));
            connector_env.push(("DSXCONNECTOR_CA_BUNDLE", cert("ca.crt")));
        }
        let connector = Proc::spawn(
            "filesystem-connector",
            &opts.bin_dir.join("filesystem-connector"),
            &["--listen".into(), format!("127.0.0.1:{cport}")],
            &connector_env,
            stack.dir.path().join("filesystem-connector.log"),
        )?;
        stack.connector = Some(connector);
        stack.wait_ready(false, &format!("{scheme}://127.0.0.1:{cport}/filesystem-connector/readyz")).await?;
        let uuid_file = connector_data.join("connector_uuid.txt");
        stack.connector_uuid = std::fs::read_to_string(&uuid_file)
            .with_context(|| format!("read {}", uuid_file.display()))?
            .trim()
            .to_owned();
        Ok(stack)
    }

    /// Poll `url` until it answers 200; fail with the process's log if it exits or times out.
    async fn wait_ready(&mut self, server: bool, url: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(resp) = self.http.get(url).timeout(Duration::from_secs(2)).send().await {
                if resp.status().is_success() {
                    return Ok(());
                }
            }
            let proc = if server { self.server.as_mut() } else { self.connector.as_mut() }.expect("process started");
            if let Some(status) = proc.exited() {
                bail!("{} exited ({status}) before it was ready; log:\n{}", proc.name, proc.log_tail());
            }
            if Instant::now() > deadline {
                bail!("{} not ready on {url} within 60 s; log:\n{}", proc.name, proc.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn server_pid(&self) -> u32 {
        self.server.as_ref().map(Proc::pid).unwrap_or(0)
    }

    /// CPU seconds used so far by (dsx-connect, filesystem-connector, this process).
    pub fn cpu_seconds(&self) -> [f64; 3] {
        let of = |p: &Option<Proc>| p.as_ref().and_then(|p| proc_cpu_seconds(p.pid()).ok()).unwrap_or(0.0);
        [of(&self.server), of(&self.connector), proc_cpu_seconds(std::process::id()).unwrap_or(0.0)]
    }

    /// Both logs' tails, for failure reports.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for p in [&self.server, &self.connector].into_iter().flatten() {
            s += &format!("--- {} log (last lines) ---\n{}\n", p.name, p.log_tail());
        }
        s
    }

    /// Fail early when a process died.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in [&mut self.server, &mut self.connector].into_iter().flatten() {
            if let Some(status) = p.exited() {
                bail!("{} exited ({status}); log:\n{}", p.name, p.log_tail());
            }
        }
        Ok(())
    }

    fn api(&self, path: &str) -> String {
        format!("{}{PREFIX}/{path}", self.server_url)
    }

    /// `POST connectors/full_scan/{uuid}?job_id=…` as the operator.
    pub async fn trigger_full_scan(&self, job_id: &str) -> anyhow::Result<()> {
        let url = self.api(&format!("connectors/full_scan/{}?job_id={job_id}", self.connector_uuid));
        let resp = self.http.post(&url).bearer_auth(&self.operator).send().await.context("trigger the full scan")?;
        let status = resp.status();
        if !status.is_success() {
            bail!("full_scan answered {status}: {}", resp.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// `GET path` as the operator: `None` on 404.
    pub async fn operator_get(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let resp = self.http.get(self.api(path)).bearer_auth(&self.operator).send().await?;
        match resp.status().as_u16() {
            404 => Ok(None),
            s if (200..300).contains(&s) => Ok(Some(resp.json().await?)),
            s => bail!("GET {path} answered {s}"),
        }
    }

    /// A gauge from the server's `/metrics` (operator), e.g. `dsxconnect_store_file_bytes`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<Option<f64>> {
        let url = format!("{}/metrics", self.server_url);
        let text = self.http.get(url).bearer_auth(&self.operator).send().await?.error_for_status()?.text().await?;
        Ok(text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()))
    }

    /// Stop the connector (SIGTERM, so it unregisters), then the server.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.connector.take() {
            c.stop(Duration::from_secs(5));
        }
        if let Some(mut s) = self.server.take() {
            s.stop(Duration::from_secs(5));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `VmRSS`/`VmHWM`/… of a process, in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{field} not in {path}"))
}

/// User + system CPU time of a process, in seconds (`/proc/<pid>/stat` fields 14 and 15).
pub fn proc_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let rest = text.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After the name: state is field 3, utime 14 and stime 15 (so indexes 11 and 12 here).
    Ok((ticks(11) + ticks(12)) as f64 / clock_ticks() as f64)
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

//! `dsx-connect quickstart`: the whole system on one machine with nothing installed. dsx-connect
//! (auth on, embedded store, built-in scanner), a filesystem connector on a sample folder with
//! benign files and EICAR test files, a full scan with a progress bar, and a summary.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dsx_connector::{ConnectorDefaults, ConnectorSettings};
use dsx_model::ItemAction;
use serde_json::Value;

use dsx_connect::app::Role;
use dsx_connect::config::Settings;

pub struct QuickstartOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub exit_after_scan: bool,
}

const BENIGN_FILES: usize = 8;
const EICAR_FILES: usize = 2;

/// Fresh sample files on every run (an earlier run quarantined its EICAR copies).
fn write_samples(folder: &Path) -> anyhow::Result<()> {
    for i in 0..BENIGN_FILES {
        let path = folder.join(format!("documents/report-{i}.txt"));
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        std::fs::write(&path, format!("Quarterly report {i}: nothing to see here.\n"))?;
    }
    for i in 0..EICAR_FILES {
        let path = folder.join(format!("downloads/eicar-{i}.com"));
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        std::fs::write(&path, dsx_scanner::EICAR)?;
    }
    Ok(())
}

/// Every file below `dir`: the filesystem connector keeps relative paths in the quarantine.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(_) => files.push(entry.path()),
                Err(_) => {}
            }
        }
    }
    files
}

fn free_loopback_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub async fn run(opts: QuickstartOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let enrollment = crate::cli::random_token();
    let operator = crate::cli::random_token();
    let sample = opts.data_dir.join("sample");
    write_samples(&sample).with_context(|| format!("write sample files under {}", sample.display()))?;

    // dsx-connect: auth on, generated tokens, embedded store, built-in scanner, API + workers.
    let server_data = opts.data_dir.join("server").display().to_string();
    let vars = [
        ("DSXCONNECT_AUTH__ENABLED", "true"),
        ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN", enrollment.as_str()),
        ("DSXCONNECT_AUTH__ADMIN_TOKENS", operator.as_str()),
        ("DSXCONNECT_DATA_DIR", server_data.as_str()),
        ("DSXCONNECT_SCANNER__KIND", "builtin"),
    ];
    let settings = Settings::from_lookup(|k| {
        vars.iter().find(|(name, _)| *name == k).map(|(_, v)| v.to_string()).or_else(|| match k {
            "DSXCONNECT_REDIS_URL" | "DSXCONNECT_SCANNER__BASE_URL" | "DSXCONNECT_SCANNER__SCAN_BINARY_URL" => None,
            _ => std::env::var(k).ok(),
        })
    })?;
    let state = dsx_connect::build_state(settings)?;
    let listener =
        tokio::net::TcpListener::bind(opts.listen).await.with_context(|| format!("listen on {}", opts.listen))?;
    let api = format!("http://{}", listener.local_addr()?);
    // The server stops only after the connector has stopped, so the connector's signed
    // unregister always reaches it: on Ctrl-C, after `--exit-after-scan` and on errors alike.
    let (connector_done, connector_stopped) = tokio::sync::oneshot::channel::<()>();
    let stop_server = async move {
        let _ = connector_stopped.await;
    };
    let server = tokio::spawn(dsx_connect::app::serve_role(state, listener, Role::All, stop_server));

    let connector_port = free_loopback_port()?;
    let connector_data = opts.data_dir.join("connector");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let qs = Quickstart { http: http.clone(), api: api.clone(), operator: operator.clone() };
    // A run that was killed (SIGKILL, power loss) left its registration in the store: clear it
    // before the connector enrolls again under the same uuid at a new URL.
    qs.clear_stale_registration(&connector_data).await;

    // The filesystem connector, in this process, enrolled with the generated token.
    let sample_text = sample.display().to_string();
    let connector_vars: BTreeMap<&str, String> = [
        ("DSXCONNECTOR_ASSET", sample_text),
        ("DSXCONNECTOR_DSX_CONNECT_URL", api.clone()),
        ("DSXCONNECTOR_CONNECTOR_URL", format!("http://127.0.0.1:{connector_port}")),
        ("DSXCONNECTOR_DATA_DIR", connector_data.display().to_string()),
        ("DSXCONNECTOR_AUTH__ENABLED", "true".into()),
        ("DSXCONNECT_ENROLLMENT_TOKEN", enrollment.clone()),
    ]
    .into_iter()
    .collect();
    let defaults = ConnectorDefaults {
        name: "filesystem-connector",
        display_name: "Filesystem",
        item_action: ItemAction::Move,
        port: 8620,
    };
    let connector_settings = ConnectorSettings::from_lookup(&defaults, |k| connector_vars.get(k).cloned())?;
    let connector_readyz = format!("{}/readyz", connector_settings.base_url().trim_end_matches('/'));
    let quarantine = sample.join(&connector_settings.item_action_move_metainfo);
    let repo = filesystem_connector::FilesystemRepo::new(
        &connector_settings.asset,
        &connector_settings.item_action_move_metainfo,
    )?;
    let uuid_file = connector_data.join("connector_uuid.txt");
    let connector_addr = SocketAddr::from(([127, 0, 0, 1], connector_port));
    let (stop_connector, connector_stop) = tokio::sync::oneshot::channel::<()>();
    let connector = tokio::spawn(async move {
        let stop = async move {
            let _ = connector_stop.await;
        };
        let ran = dsx_connector::run_until(connector_settings, Arc::new(repo), connector_addr, stop).await;
        let _ = connector_done.send(());
        ran
    });
    // Files already in the quarantine (earlier runs): the summary counts this run's only.
    let quarantined_before: BTreeSet<PathBuf> = files_under(&quarantine).into_iter().collect();

    let origin = api.clone();
    println!("\ndsx-connect quickstart — auth enabled, embedded store, built-in scanner");
    println!("  web UI:           {origin}/   (sign in with the operator token)");
    println!("  API:              {api}/dsx-connect/api/v1");
    println!("  enrollment token: {enrollment}");
    println!("  operator token:   {operator}   (Authorization: Bearer …)");
    println!("  sample folder:    {}", sample.display());
    println!("  (tokens are generated for this run, shown once and not stored)");
    println!("  CLI (`cargo install --path crates/dsx-connect`), in another terminal:");
    println!("    export DSXCONNECT_URL={origin} DSXCONNECT_OPERATOR_TOKEN={operator}");
    println!("    dsx-connect admin connectors\n");

    let scan = async {
        let uuid = qs.wait_for_connector(&uuid_file, &connector_readyz, &connector).await?;
        qs.scan_and_report(&uuid, &connector, &quarantine, &quarantined_before, started).await
    };
    let outcome = tokio::select! {
        outcome = scan => outcome,
        _ = dsx_service::shutdown_signal() => Err(anyhow::anyhow!("interrupted before the scan finished")),
    };
    if outcome.is_ok() && !opts.exit_after_scan {
        println!("Serving at {api} — press Ctrl-C to stop.");
        tokio::select! {
            _ = dsx_service::shutdown_signal() => {}
            _ = connector_finished(&connector) => {}
        }
    }
    // Every way out: the connector stops and unregisters (signed), then the server stops.
    drop(qs);
    drop(http);
    let _ = stop_connector.send(());
    let connector_ran = connector.await;
    let served = server.await;
    outcome?;
    connector_ran.context("connector task")??;
    served.context("server task")??;
    Ok(())
}

async fn connector_finished(connector: &tokio::task::JoinHandle<anyhow::Result<()>>) {
    while !connector.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The quickstart's operator-side calls.
struct Quickstart {
    http: reqwest::Client,
    api: String,
    operator: String,
}

impl Quickstart {
    fn url(&self, path: &str) -> String {
        format!("{}/dsx-connect/api/v1/{path}", self.api)
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let resp = self.http.get(self.url(path)).bearer_auth(&self.operator).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json::<Value>().await.ok()
    }

    async fn clear_stale_registration(&self, connector_data: &Path) {
        let Ok(text) = std::fs::read_to_string(connector_data.join("connector_uuid.txt")) else { return };
        let uuid = text.trim();
        let listed = self.get("connectors/list").await.unwrap_or(Value::Null);
        if !listed.as_array().is_some_and(|rows| rows.iter().any(|r| r["uuid"] == uuid)) {
            return;
        }
        // An operator unregister revokes the uuid; readmit lets this run's connector enroll.
        let _ = self
            .http
            .delete(self.url(&format!("connectors/unregister/{uuid}")))
            .bearer_auth(&self.operator)
            .send()
            .await;
        let _ =
            self.http.post(self.url(&format!("connectors/readmit/{uuid}"))).bearer_auth(&self.operator).send().await;
    }

    /// The connector's uuid once it is ready: its own `readyz` says it registered and holds
    /// its key (a scan sent earlier would be refused with `401 unknown_key_id`), and
    /// dsx-connect lists it.
    async fn wait_for_connector(
        &self,
        uuid_file: &Path,
        readyz: &str,
        connector: &tokio::task::JoinHandle<anyhow::Result<()>>,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            anyhow::ensure!(!connector.is_finished(), "the connector stopped before it registered");
            let ready = match self.http.get(readyz).send().await {
                Ok(resp) => resp.status().is_success(),
                Err(_) => false,
            };
            if ready {
                if let Ok(text) = std::fs::read_to_string(uuid_file) {
                    let uuid = text.trim().to_owned();
                    let listed = self.get("connectors/list").await.unwrap_or(Value::Null);
                    if listed.as_array().is_some_and(|rows| rows.iter().any(|r| r["uuid"] == uuid.as_str())) {
                        return Ok(uuid);
                    }
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "the connector was not ready within 30 s ({readyz})");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn scan_and_report(
        &self,
        uuid: &str,
        connector: &tokio::task::JoinHandle<anyhow::Result<()>>,
        quarantine: &Path,
        quarantined_before: &BTreeSet<PathBuf>,
        started: Instant,
    ) -> anyhow::Result<()> {
        let job_id = uuid::Uuid::new_v4().to_string();
        let resp = self
            .http
            .post(self.url(&format!("connectors/full_scan/{uuid}?job_id={job_id}")))
            .bearer_auth(&self.operator)
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            anyhow::bail!("full scan refused: {status} {body}");
        }

        let total = (BENIGN_FILES + EICAR_FILES) as u64;
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("  scanning [{bar:30}] {pos}/{len} files {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        let job = loop {
            anyhow::ensure!(!connector.is_finished(), "the connector stopped during the scan");
            if let Some(job) = self.get(&format!("scan/jobs/{job_id}")).await {
                bar.set_length(job["enqueued_count"].as_u64().unwrap_or(total).max(1));
                bar.set_position(job["processed_count"].as_u64().unwrap_or(0));
                if job["status"] == "completed" {
                    break job;
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "the scan did not finish within 2 minutes");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        bar.finish_with_message("done");

        let results = self.get(&format!("scan/results/job/{job_id}")).await.unwrap_or(Value::Null);
        let mut verdicts: BTreeMap<String, u64> = BTreeMap::new();
        for r in results.as_array().into_iter().flatten() {
            *verdicts.entry(r["verdict"]["verdict"].as_str().unwrap_or("Not Scanned").to_owned()).or_default() += 1;
        }
        println!("\n  {:<28} {}", "files scanned", job["processed_count"]);
        for (verdict, n) in &verdicts {
            println!("  {:<28} {n}", verdict);
        }
        let mut quarantined: Vec<PathBuf> =
            files_under(quarantine).into_iter().filter(|p| !quarantined_before.contains(p)).collect();
        quarantined.sort();
        println!("  {:<28} {}", "quarantined (this run)", quarantined.len());
        for path in &quarantined {
            println!("    {}", path.display());
        }
        println!("  {:<28} {:.1} s\n", "elapsed", started.elapsed().as_secs_f64());
        Ok(())
    }
}

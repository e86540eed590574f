//! `dsx-connect quickstart`: the whole system on one machine with nothing installed. dsx-connect
//! (auth on, embedded store, built-in scanner), a filesystem connector on a sample folder with
//! benign files and EICAR test files, a full scan with a progress bar, and a summary.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dsx_connector::{ConnectorDefaults, ConnectorSettings};
use dsx_model::ItemAction;
use serde_json::Value;

use crate::app::Role;
use crate::config::Settings;

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
    let state = crate::build_state(settings)?;
    let listener =
        tokio::net::TcpListener::bind(opts.listen).await.with_context(|| format!("listen on {}", opts.listen))?;
    let api = format!("http://{}", listener.local_addr()?);
    // The server stops after the connector (which stops on Ctrl-C itself), so the connector's
    // signed unregister still reaches it.
    let (connector_done, connector_stopped) = tokio::sync::oneshot::channel::<()>();
    let stop_server = async move {
        let _ = connector_stopped.await;
    };
    let server = tokio::spawn(crate::app::serve_role(state, listener, Role::All, stop_server));

    // The filesystem connector, in this process, enrolled with the generated token.
    let connector_port = free_loopback_port()?;
    let connector_data = opts.data_dir.join("connector").display().to_string();
    let sample_text = sample.display().to_string();
    let connector_vars: BTreeMap<&str, String> = [
        ("DSXCONNECTOR_ASSET", sample_text),
        ("DSXCONNECTOR_DSX_CONNECT_URL", api.clone()),
        ("DSXCONNECTOR_CONNECTOR_URL", format!("http://127.0.0.1:{connector_port}")),
        ("DSXCONNECTOR_DATA_DIR", connector_data),
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
    let quarantine = sample.join(&connector_settings.item_action_move_metainfo);
    let repo = filesystem_connector::FilesystemRepo::new(
        &connector_settings.asset,
        &connector_settings.item_action_move_metainfo,
    )?;
    let uuid_file = Path::new(&opts.data_dir).join("connector").join("connector_uuid.txt");
    let connector_addr = SocketAddr::from(([127, 0, 0, 1], connector_port));
    let connector = tokio::spawn(async move {
        let ran = dsx_connector::run(connector_settings, Arc::new(repo), connector_addr).await;
        let _ = connector_done.send(());
        ran
    });

    println!("\ndsx-connect quickstart — auth enabled, embedded store, built-in scanner");
    println!("  API:              {api}/dsx-connect/api/v1");
    println!("  enrollment token: {enrollment}");
    println!("  operator token:   {operator}   (Authorization: Bearer …)");
    println!("  sample folder:    {}", sample.display());
    println!("  (tokens are generated for this run, shown once and not stored)\n");

    let http = reqwest::Client::new();
    let get = |path: String| {
        let req = http.get(format!("{api}/dsx-connect/api/v1/{path}")).bearer_auth(&operator);
        async move { req.send().await.ok()?.json::<Value>().await.ok() }
    };
    // Wait for the connector to enroll.
    let deadline = Instant::now() + Duration::from_secs(30);
    let uuid = loop {
        if let Ok(text) = std::fs::read_to_string(&uuid_file) {
            let uuid = text.trim().to_owned();
            let listed = get("connectors/list".into()).await.unwrap_or(Value::Null);
            if listed.as_array().is_some_and(|rows| rows.iter().any(|r| r["uuid"] == uuid.as_str())) {
                break uuid;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the connector did not register within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let job_id = uuid::Uuid::new_v4().to_string();
    let resp = http
        .post(format!("{api}/dsx-connect/api/v1/connectors/full_scan/{uuid}?job_id={job_id}"))
        .bearer_auth(&operator)
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "full scan refused: {}", resp.status());

    let total = (BENIGN_FILES + EICAR_FILES) as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("  scanning [{bar:30}] {pos}/{len} files {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let job = loop {
        if let Some(job) = get(format!("scan/jobs/{job_id}")).await {
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

    let results = get(format!("scan/results/job/{job_id}")).await.unwrap_or(Value::Null);
    let mut verdicts: BTreeMap<String, u64> = BTreeMap::new();
    for r in results.as_array().into_iter().flatten() {
        *verdicts.entry(r["verdict"]["verdict"].as_str().unwrap_or("Not Scanned").to_owned()).or_default() += 1;
    }
    println!("\n  {:<28} {}", "files scanned", job["processed_count"]);
    for (verdict, n) in &verdicts {
        println!("  {:<28} {n}", verdict);
    }
    let mut quarantined = files_under(&quarantine);
    quarantined.sort();
    println!("  {:<28} {}", "quarantined", quarantined.len());
    for path in &quarantined {
        println!("    {}", path.display());
    }
    println!("  {:<28} {:.1} s\n", "elapsed", started.elapsed().as_secs_f64());

    if opts.exit_after_scan {
        server.abort();
        connector.abort();
        return Ok(());
    }
    println!("Serving at {api} — press Ctrl-C to stop.");
    let (served, _) = tokio::join!(server, connector);
    served??;
    Ok(())
}

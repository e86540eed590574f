//! `dsx-bench pipeline` and `dsx-bench large-file`: the real binaries end to end (filesystem
//! connector → dsx-connect queue → worker → built-in scanner → stored result), timed from the
//! full-scan trigger until the job reports `completed`, then checked result by result.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use rand::{RngCore, SeedableRng};
use serde::Serialize;
use serde_json::Value;

use crate::stack::{self, Stack, StackOptions, Store};
use crate::stats::{self, Percentiles, PERCENTILE_HEADER};

/// The standard 68-byte EICAR test string (what the built-in scanner detects).
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// The results endpoint returns at most this many rows per job, so a run is capped there to
/// keep the one-result-per-file check complete.
pub const MAX_FILES: u64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    Embedded,
    Redis,
}

#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Number of files (at most 10000: the per-job results endpoint returns that many rows).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=MAX_FILES))]
    pub files: u64,
    /// Size of each file in bytes (random content).
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// Store of the server.
    #[arg(long, value_enum, default_value = "embedded")]
    pub store: StoreKind,
    /// Redis URL for `--store redis` (a unique DSXCONNECT_APP_ENV keeps runs apart).
    #[arg(long, env = "DSX_BENCH_REDIS_URL", hide_env_values = true, default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: String,
    /// Every Nth file holds the EICAR test string instead (0: none).
    #[arg(long, default_value_t = 0)]
    pub malicious_every: u64,
    /// Give up when the job has not completed after this long (e.g. 600s).
    #[arg(long, default_value = "600s", value_parser = stats::parse_duration)]
    pub timeout: Duration,
    /// Directory holding the dsx-connect and filesystem-connector binaries.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Also report the CPU time of another local process during the run, as NAME=PID
    /// (repeatable; e.g. the redis-server of `--store redis`).
    #[arg(long, value_name = "NAME=PID", value_parser = crate::http::parse_watch)]
    pub watch_pid: Vec<(String, u32)>,
    /// Write the report as JSON to FILE (`-`: stdout; the table then goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// HTTPS on both hops between connector and dsx-connect (a test CA made for the run,
    /// every client verifying it).
    #[arg(long)]
    pub tls: bool,
}

#[derive(Args, Debug)]
pub struct LargeFileArgs {
    /// File size in MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
    /// Give up when the job has not completed after this long.
    #[arg(long, default_value = "600s", value_parser = stats::parse_duration)]
    pub timeout: Duration,
    /// Directory holding the dsx-connect and filesystem-connector binaries.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Write the report as JSON to FILE (`-`: stdout; the table then goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct PipelineReport {
    pub store: String,
    /// Both connector hops over HTTPS (`--tls`).
    pub tls: bool,
    pub files: u64,
    pub size: usize,
    pub malicious_expected: u64,
    /// Trigger → job `completed`.
    pub elapsed_s: f64,
    pub files_per_s: f64,
    pub mib_per_s: f64,
    /// When polling first saw `enqueue_done` (connector finished enqueueing), after the trigger.
    pub enqueue_done_s: Option<f64>,
    pub results: usize,
    pub verdicts: BTreeMap<String, u64>,
    pub job: Value,
    /// Per-stage latency from the stored results, milliseconds.
    pub stages_ms: BTreeMap<String, Percentiles>,
    /// CPU seconds used between the trigger and completion, per process.
    pub cpu_s: CpuUse,
    pub verified: bool,
    /// The embedded store's file after the job, and the part of it holding data, bytes
    /// (`None` on Redis).
    pub store_file_bytes: Option<u64>,
    pub store_used_bytes: Option<u64>,
    /// `store_used_bytes` per scanned file.
    pub store_bytes_per_file: Option<f64>,
    /// Redis requests and commands per file (`None` on the embedded store).
    #[serde(default)]
    pub redis_per_file: Option<RedisPerFile>,
}

/// CPU seconds used during the measured window (user + system), and the machine's CPU count,
/// so the share of the machine each process took can be read off.
#[derive(Debug, Serialize)]
pub struct CpuUse {
    pub dsx_connect: f64,
    pub connector: f64,
    pub bench: f64,
    /// Processes given with --watch-pid.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub others: BTreeMap<String, f64>,
    pub cpus: usize,
}

impl CpuUse {
    fn between(before: [f64; 3], after: [f64; 3]) -> Self {
        Self {
            dsx_connect: after[0] - before[0],
            connector: after[1] - before[1],
            bench: after[2] - before[2],
            others: BTreeMap::new(),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        }
    }

    fn line(&self, elapsed: f64) -> String {
        let pct = |s: f64| 100.0 * s / elapsed;
        let others: String = self.others.iter().map(|(k, v)| format!(", {k} {v:.2} s ({:.0}%)", pct(*v))).collect();
        format!(
            "CPU during the run: dsx-connect {:.2} s ({:.0}%), connector {:.2} s ({:.0}%), dsx-bench {:.2} s ({:.0}%){others} of {} CPUs x {:.2} s\n",
            self.dsx_connect,
            pct(self.dsx_connect),
            self.connector,
            pct(self.connector),
            self.bench,
            pct(self.bench),
            self.cpus,
            elapsed
        )
    }
}

#[derive(Debug, Serialize)]
pub struct LargeFileReport {
    pub size_mib: u64,
    pub elapsed_s: f64,
    pub mib_per_s: f64,
    pub verdict: String,
    pub file_size: u64,
    pub rss_before_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_growth_mib: f64,
    pub stages_ms: BTreeMap<String, Percentiles>,
    pub cpu_s: CpuUse,
}

/// The relative path of file `i` (a few directories).
fn file_rel(i: u64, dirs: u64) -> String {
    format!("d{:02}/f{i:06}.bin", i % dirs)
}

fn is_malicious(i: u64, every: u64) -> bool {
    every > 0 && (i + 1).is_multiple_of(every)
}

fn write_files(asset: &Path, files: u64, size: usize, every: u64) -> anyhow::Result<u64> {
    let dirs = files.clamp(1, 10);
    for d in 0..dirs {
        std::fs::create_dir_all(asset.join(format!("d{d:02}")))?;
    }
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut buf = vec![0u8; size];
    let mut malicious = 0;
    for i in 0..files {
        let path = asset.join(file_rel(i, dirs));
        if is_malicious(i, every) {
            std::fs::write(&path, EICAR)?;
            malicious += 1;
        } else {
            rng.fill_bytes(&mut buf);
            std::fs::write(&path, &buf)?;
        }
    }
    Ok(malicious)
}

fn write_large(path: &Path, size_mib: u64) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..size_mib {
        rng.fill_bytes(&mut chunk);
        out.write_all(&chunk)?;
    }
    out.flush()?;
    Ok(())
}

/// Trigger a full scan and poll the job until `completed`; progress on stderr.
/// Returns (trigger → completed, trigger → enqueue_done first seen, final job JSON).
async fn run_job(
    stack: &mut Stack,
    job_id: &str,
    total: u64,
    timeout: Duration,
) -> anyhow::Result<(Duration, Option<Duration>, Value)> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    stack.trigger_full_scan(job_id).await?;
    let mut enqueue_done = None;
    let mut last_print = Instant::now();
    let mut last_job = Value::Null;
    loop {
        stack.check_alive()?;
        if let Some(job) = stack.operator_get(&format!("scan/jobs/{job_id}")).await? {
            let elapsed = started.elapsed();
            if enqueue_done.is_none() && job["enqueue_done"].as_bool() == Some(true) {
                enqueue_done = Some(elapsed);
            }
            if job["status"] == "completed" {
                if tty {
                    eprintln!();
                }
                return Ok((elapsed, enqueue_done, job));
            }
            let every = if tty { Duration::from_millis(500) } else { Duration::from_secs(5) };
            if last_print.elapsed() >= every {
                last_print = Instant::now();
                let line = format!(
                    "job {job_id}: {} of {total} processed, {} enqueued{}, {:.1} s",
                    job["processed_count"],
                    job["enqueued_count"],
                    if enqueue_done.is_some() { " (all)" } else { "" },
                    elapsed.as_secs_f64()
                );
                if tty {
                    eprint!("\r{line}   ");
                } else {
                    eprintln!("{line}");
                }
            }
            last_job = job;
        }
        if started.elapsed() > timeout {
            bail!("job {job_id} did not complete within {:?}; its counters: {last_job}\n{}", timeout, stack.logs());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Percentiles per stage: every `verdict.dsxconnect_*_ms` field the worker stores (read,
/// total in worker, queue wait when present), top-level `*_elapsed_ms`/`*_wait_ms` fields,
/// and the scanner's own `scan_duration_in_microseconds`.
pub fn stage_latencies(results: &[Value]) -> BTreeMap<String, Percentiles> {
    let mut hists: BTreeMap<String, hdrhistogram::Histogram<u64>> = BTreeMap::new();
    let mut add = |name: String, us: f64| {
        if us.is_finite() && us >= 0.0 {
            stats::record(hists.entry(name).or_insert_with(stats::histogram), us.round() as u64);
        }
    };
    for r in results {
        if let Some(v) = r["verdict"].as_object() {
            // The worker stores each stage in microseconds (`_us`), and some in whole
            // milliseconds too (`_ms`, for Python readers); older servers only the latter.
            let has_micros = v.keys().any(|k| k.starts_with("dsxconnect_") && k.ends_with("_us"));
            for (k, val) in v {
                let Some(n) = val.as_f64() else { continue };
                let Some(stage) = k.strip_prefix("dsxconnect_") else { continue };
                if let Some(stage) = stage.strip_suffix("_us") {
                    add(stage.to_owned(), n);
                } else if let Some(stage) = stage.strip_suffix("_ms").filter(|s| !has_micros && !s.contains("_at")) {
                    add(stage.to_owned(), n * 1000.0);
                }
            }
            if let Some(us) = v.get("scan_duration_in_microseconds").and_then(Value::as_f64) {
                add("scanner".into(), us);
            }
        }
        if let Some(top) = r.as_object() {
            for (k, val) in top {
                if let (Some(ms), true) = (val.as_f64(), k.ends_with("_elapsed_ms") || k.ends_with("_wait_ms")) {
                    add(k.trim_end_matches("_ms").to_owned(), ms * 1000.0);
                }
            }
        }
    }
    hists.iter().map(|(k, h)| (k.clone(), Percentiles::of(h))).collect()
}

/// A readable name for a stage key.
fn stage_label(key: &str) -> String {
    match key {
        "read_elapsed" | "read_scan" => "read+scan (read_file streamed into the scanner)".into(),
        "request_elapsed" | "claim_to_result" => "claim → result built (in the worker)".into(),
        "queue_wait" => "queue wait (enqueue → claim)".into(),
        "scanner" => "scanner's own scan time".into(),
        other => other.replace('_', " "),
    }
}

fn stages_table(stages: &BTreeMap<String, Percentiles>) -> String {
    if stages.is_empty() {
        return String::new();
    }
    let mut s = format!("{:<48}{PERCENTILE_HEADER}  (ms)\n", "stage");
    for (k, p) in stages {
        s += &format!("{:<48}{}\n", stage_label(k), p.row());
    }
    s
}

async fn fetch_results(stack: &Stack, job_id: &str) -> anyhow::Result<Vec<Value>> {
    let results = stack.operator_get(&format!("scan/results/job/{job_id}")).await?.unwrap_or(Value::Null);
    match results {
        Value::Array(rows) => Ok(rows),
        other => bail!("scan/results/job/{job_id} is not a list: {other}"),
    }
}

/// Every expected file has exactly one result, nothing else has one, and the verdicts match.
fn verify(results: &[Value], asset: &Path, expected: &HashMap<String, bool>) -> anyhow::Result<BTreeMap<String, u64>> {
    let canonical = asset.canonicalize().unwrap_or_else(|_| asset.to_path_buf());
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut verdicts: BTreeMap<String, u64> = BTreeMap::new();
    let mut problems = Vec::new();
    for r in results {
        let location = r["scan_request"]["location"].as_str().unwrap_or_default();
        let rel = Path::new(location)
            .strip_prefix(asset)
            .or_else(|_| Path::new(location).strip_prefix(&canonical))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| location.to_owned());
        let verdict = r["verdict"]["verdict"].as_str().unwrap_or("(none)").to_owned();
        *verdicts.entry(verdict.clone()).or_default() += 1;
        match expected.get(&rel) {
            None => problems.push(format!("result for an unexpected location {location:?}")),
            Some(&malicious) => {
                let want = if malicious { "Malicious" } else { "Benign" };
                if verdict != want {
                    problems.push(format!("{rel}: verdict {verdict:?}, expected {want}"));
                }
            }
        }
        *seen.entry(rel).or_default() += 1;
    }
    for (rel, n) in &seen {
        if *n > 1 && expected.contains_key(rel) {
            problems.push(format!("{rel}: {n} results"));
        }
    }
    let missing = expected.keys().filter(|k| !seen.contains_key(*k)).count();
    if missing > 0 {
        problems.push(format!("{missing} files have no result"));
    }
    if !problems.is_empty() {
        problems.sort();
        let shown: Vec<_> = problems.iter().take(10).cloned().collect();
        bail!(
            "verification failed ({} problems, {} results for {} files; verdicts {verdicts:?}):\n  {}",
            problems.len(),
            results.len(),
            expected.len(),
            shown.join("\n  ")
        );
    }
    Ok(verdicts)
}

/// Redis traffic of a run, per scanned file.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RedisPerFile {
    /// Requests dsx-connect sent (its `dsxconnect_store_round_trips`; a pipeline or a script
    /// counts once).
    pub sent: f64,
    /// Commands Redis executed (`INFO commandstats`, every process and the commands scripts run).
    pub commandstats: f64,
}

/// (requests dsx-connect sent, commands Redis counted) so far, on the Redis store.
async fn round_trips(stack: &Stack, store: &Store) -> anyhow::Result<Option<(f64, f64)>> {
    let Store::Redis { url } = store else { return Ok(None) };
    // A server without the metric (an older build) reports no figure rather than zero.
    let Some(sent) = stack.metric("dsxconnect_store_round_trips").await? else { return Ok(None) };
    Ok(Some((sent, commandstats_calls(url).await?)))
}

/// The sum of `calls=` over `INFO commandstats`, over a plain RESP connection.
async fn commandstats_calls(url: &str) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let parsed = reqwest::Url::parse(url).with_context(|| format!("redis URL {url}"))?;
    let addr = format!("{}:{}", parsed.host_str().unwrap_or("127.0.0.1"), parsed.port().unwrap_or(6379));
    let mut conn = tokio::net::TcpStream::connect(&addr).await.with_context(|| format!("connect to {addr}"))?;
    conn.write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n").await?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        // `$<len>\r\n<len bytes>\r\n`
        if let Some(eol) = reply.iter().position(|&b| b == b'\n') {
            let len: usize = std::str::from_utf8(&reply[1..eol]).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
            if reply.len() >= eol + 1 + len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&reply);
    Ok(text
        .lines()
        .filter_map(|l| l.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse::<f64>().ok())
        .sum())
}

pub async fn pipeline(args: PipelineArgs) -> anyhow::Result<i32> {
    let bin_dir = stack::bin_dir(args.bin_dir.as_deref())?;
    let store = match args.store {
        StoreKind::Embedded => Store::Embedded,
        StoreKind::Redis => Store::Redis { url: args.redis_url.clone() },
    };
    let (dir, asset) = Stack::prepare()?;
    eprintln!("dsx-bench pipeline: writing {} files of {} bytes to {}", args.files, args.size, asset.display());
    let malicious = write_files(&asset, args.files, args.size, args.malicious_every)?;
    let dirs = args.files.clamp(1, 10);
    let expected: HashMap<String, bool> =
        (0..args.files).map(|i| (file_rel(i, dirs), is_malicious(i, args.malicious_every))).collect();

    let opts = StackOptions {
        bin_dir: &bin_dir,
        store: store.clone(),
        results_retain: args.files as usize + 1000,
        tls: args.tls,
    };
    let mut stack = Stack::start(dir, asset.clone(), opts).await?;
    eprintln!(
        "dsx-bench pipeline: dsx-connect ({} store{}) and filesystem-connector ready; full scan",
        store.name(),
        if args.tls { ", HTTPS" } else { "" }
    );
    let job_id = format!("bench-{}", uuid::Uuid::new_v4());
    let trips_before = round_trips(&stack, &store).await?;
    let cpu_before = stack.cpu_seconds();
    let others_before = crate::http::cpu_sample(&args.watch_pid);
    let (elapsed, enqueue_done, job) = run_job(&mut stack, &job_id, args.files, args.timeout).await?;
    let mut cpu = CpuUse::between(cpu_before, stack.cpu_seconds());
    let others_after = crate::http::cpu_sample(&args.watch_pid);
    for (name, _) in &args.watch_pid {
        if let (Some(a), Some(b)) = (others_after.get(name), others_before.get(name)) {
            cpu.others.insert(name.clone(), a - b);
        }
    }
    let trips_after = round_trips(&stack, &store).await?;
    let redis_per_file = match (trips_before, trips_after) {
        (Some((sent0, counted0)), Some((sent1, counted1))) => Some(RedisPerFile {
            sent: (sent1 - sent0) / args.files.max(1) as f64,
            commandstats: (counted1 - counted0) / args.files.max(1) as f64,
        }),
        _ => None,
    };
    let results = fetch_results(&stack, &job_id).await?;
    let verdicts = verify(&results, &asset, &expected).with_context(|| format!("job counters: {job}"))?;
    if job["processed_count"].as_u64() != Some(args.files) {
        bail!("job completed with processed_count {} for {} files: {job}", job["processed_count"], args.files);
    }
    let stages = stage_latencies(&results);
    let (store_file_bytes, store_used_bytes) = match store {
        Store::Embedded => (
            stack.metric("dsxconnect_store_file_bytes").await?.map(|v| v as u64),
            stack.metric("dsxconnect_store_used_bytes").await?.map(|v| v as u64),
        ),
        Store::Redis { .. } => (None, None),
    };
    stack.stop();

    let secs = elapsed.as_secs_f64();
    let bytes = (args.files - malicious) * args.size as u64 + malicious * EICAR.len() as u64;
    let report = PipelineReport {
        store: store.name().into(),
        tls: args.tls,
        files: args.files,
        size: args.size,
        malicious_expected: malicious,
        elapsed_s: secs,
        files_per_s: args.files as f64 / secs,
        mib_per_s: bytes as f64 / (1 << 20) as f64 / secs,
        enqueue_done_s: enqueue_done.map(|d| d.as_secs_f64()),
        results: results.len(),
        verdicts,
        job,
        stages_ms: stages,
        cpu_s: cpu,
        verified: true,
        store_file_bytes,
        store_used_bytes,
        store_bytes_per_file: store_used_bytes.map(|b| b as f64 / args.files.max(1) as f64),
        redis_per_file,
    };
    let mut table = format!(
        "pipeline: {} files x {} B on the {} store{}: {:.2} s, {:.0} files/s, {:.1} MiB/s{}\n",
        report.files,
        report.size,
        report.store,
        if report.tls { " over HTTPS" } else { "" },
        report.elapsed_s,
        report.files_per_s,
        report.mib_per_s,
        report.enqueue_done_s.map(|s| format!(" (all enqueued after {s:.2} s)")).unwrap_or_default()
    );
    table += &format!("verified: {} results, one per file; verdicts {:?}\n", report.results, report.verdicts);
    table += &report.cpu_s.line(secs);
    if let (Some(file), Some(used), Some(per_file)) =
        (report.store_file_bytes, report.store_used_bytes, report.store_bytes_per_file)
    {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        table += &format!(
            "store: {:.1} MiB in use ({per_file:.0} bytes per scanned file), file {:.1} MiB (free pages are given back by compaction when idle)\n",
            mib(used),
            mib(file)
        );
    }
    if let Some(r) = &report.redis_per_file {
        table += &format!(
            "redis per file: {:.2} requests sent by dsx-connect, {:.2} commands counted by INFO commandstats (script-internal ones included)\n",
            r.sent, r.commandstats
        );
    }
    table += &stages_table(&report.stages_ms);
    stats::emit(&table, &report, args.json.as_deref())?;
    Ok(0)
}

pub async fn large_file(args: LargeFileArgs) -> anyhow::Result<i32> {
    if args.size_mib == 0 {
        bail!("--size-mib must be at least 1");
    }
    let bin_dir = stack::bin_dir(args.bin_dir.as_deref())?;
    let (dir, asset) = Stack::prepare()?;
    eprintln!("dsx-bench large-file: writing {} MiB of random bytes", args.size_mib);
    write_large(&asset.join("large.bin"), args.size_mib)?;
    let opts = StackOptions { bin_dir: &bin_dir, store: Store::Embedded, results_retain: 1000, tls: false };
    let mut stack = Stack::start(dir, asset, opts).await?;
    let pid = stack.server_pid();
    let before = stack::proc_status_kib(pid, "VmRSS")?;
    let job_id = format!("bench-large-{}", uuid::Uuid::new_v4());
    let cpu_before = stack.cpu_seconds();
    let (elapsed, _, job) = run_job(&mut stack, &job_id, 1, args.timeout).await?;
    let cpu = CpuUse::between(cpu_before, stack.cpu_seconds());
    let peak = stack::proc_status_kib(pid, "VmHWM")?;
    let results = fetch_results(&stack, &job_id).await?;
    let [result] = results.as_slice() else {
        bail!("expected one result for one file, got {}; job: {job}", results.len());
    };
    let verdict = result["verdict"]["verdict"].as_str().unwrap_or("(none)").to_owned();
    let file_size = result["verdict"]["file_info"]["file_size_in_bytes"]
        .as_u64()
        .or_else(|| result["scan_request"]["size_in_bytes"].as_u64())
        .unwrap_or(0);
    let expected_size = args.size_mib << 20;
    if verdict != "Benign" || file_size != expected_size {
        bail!("large file: verdict {verdict:?}, size {file_size}; expected Benign, {expected_size}");
    }
    let stages = stage_latencies(&results);
    stack.stop();
    let secs = elapsed.as_secs_f64();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let report = LargeFileReport {
        size_mib: args.size_mib,
        elapsed_s: secs,
        mib_per_s: args.size_mib as f64 / secs,
        verdict,
        file_size,
        rss_before_mib: mib(before),
        rss_peak_mib: mib(peak),
        rss_growth_mib: mib(peak.saturating_sub(before)),
        stages_ms: stages,
        cpu_s: cpu,
    };
    let table = format!(
        "large file: {} MiB, verdict {}, {:.2} s, {:.0} MiB/s\n\
         dsx-connect RSS before: {:.1} MiB, peak: {:.1} MiB, growth: {:.1} MiB\n{}{}",
        report.size_mib,
        report.verdict,
        report.elapsed_s,
        report.mib_per_s,
        report.rss_before_mib,
        report.rss_peak_mib,
        report.rss_growth_mib,
        report.cpu_s.line(secs),
        stages_table(&report.stages_ms)
    );
    stats::emit(&table, &report, args.json.as_deref())?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_nth_file_is_malicious() {
        let n = (0..60).filter(|&i| is_malicious(i, 20)).count();
        assert_eq!(n, 3);
        assert_eq!((0..60).filter(|&i| is_malicious(i, 0)).count(), 0);
    }

    #[test]
    fn stages_from_results() {
        let rows: Vec<Value> = (1..=100)
            .map(|i| {
                json!({"verdict": {"dsxconnect_read_elapsed_ms": i, "dsxconnect_request_elapsed_ms": i + 1,
                "dsxconnect_enqueued_at_ms": 1_700_000_000_000u64, "scan_duration_in_microseconds": 50}, "queue_wait_ms": 3})
            })
            .collect();
        let s = stage_latencies(&rows);
        assert_eq!(s.keys().collect::<Vec<_>>(), ["queue_wait", "read_elapsed", "request_elapsed", "scanner"]);
        assert!((s["read_elapsed"].p50 - 50.0).abs() < 0.1);
        assert!((s["scanner"].max - 0.05).abs() < 0.001);

        // This server's rows: microsecond stages win over their millisecond twins.
        let rows: Vec<Value> = (1..=100)
            .map(|i| {
                json!({"verdict": {"dsxconnect_read_scan_us": i * 10, "dsxconnect_read_elapsed_ms": 0,
                "dsxconnect_claim_to_result_us": i * 20, "dsxconnect_request_elapsed_ms": 0,
                "dsxconnect_queue_wait_us": 7}})
            })
            .collect();
        let s = stage_latencies(&rows);
        assert_eq!(s.keys().collect::<Vec<_>>(), ["claim_to_result", "queue_wait", "read_scan"]);
        assert!((s["read_scan"].p50 - 0.5).abs() < 0.01, "{:?}", s["read_scan"]);
    }

    #[test]
    fn verification_catches_missing_duplicate_and_wrong_verdicts() {
        let asset = Path::new("/tmp/asset");
        let expected: HashMap<String, bool> = [("d00/a".to_owned(), false), ("d01/b".to_owned(), true)].into();
        let row = |loc: &str, v: &str| json!({"scan_request": {"location": loc}, "verdict": {"verdict": v}});
        let good = [row("/tmp/asset/d00/a", "Benign"), row("/tmp/asset/d01/b", "Malicious")];
        let counts = verify(&good, asset, &expected).unwrap();
        assert_eq!(counts["Benign"], 1);
        assert_eq!(counts["Malicious"], 1);
        assert!(verify(&good[..1], asset, &expected).unwrap_err().to_string().contains("no result"));
        let dup = [good[0].clone(), good[0].clone(), good[1].clone()];
        assert!(verify(&dup, asset, &expected).unwrap_err().to_string().contains("2 results"));
        let wrong = [row("/tmp/asset/d00/a", "Malicious"), good[1].clone()];
        assert!(verify(&wrong, asset, &expected).is_err());
        let extra = [good[0].clone(), good[1].clone(), row("/elsewhere", "Benign")];
        assert!(verify(&extra, asset, &expected).is_err());
    }
}

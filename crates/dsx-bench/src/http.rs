//! `dsx-bench http`: closed-loop load on one connector-facing endpoint of a running server.
//!
//! Every request is built and signed when it is sent (new timestamp and nonce), so the
//! signing cost a real connector pays is inside the measured latency.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use dsx_hmac::{authorization_header, generate_nonce, unix_now, SigningKey};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::stats::{self, Percentiles, PERCENTILE_HEADER};
use crate::PREFIX;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// `POST scan/auth_check`, empty body: the cost of the connector guard alone.
    AuthCheck,
    /// `POST scan/request` with a ScanRequest body: enqueue only (run the server with `--role api`).
    ScanRequest,
    /// `POST connectors/register` bursts with the enrollment token and a fresh uuid each time.
    Register,
}

#[derive(Args, Debug)]
pub struct HttpArgs {
    /// dsx-connect base URL.
    #[arg(long, default_value = "http://127.0.0.1:8586")]
    pub url: String,
    /// What to send.
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Concurrent workers, each sending its next request when the previous one is answered.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Measured time (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = stats::parse_duration)]
    pub duration: Duration,
    /// Time before the measurement starts: requests are sent but not counted.
    #[arg(long, default_value = "2s", value_parser = stats::parse_duration)]
    pub warmup: Duration,
    /// Connectors to enroll at setup; worker i signs as connector i mod N.
    #[arg(long, default_value_t = 4)]
    pub connectors: usize,
    /// Enrollment token of the server (never printed).
    #[arg(long, env = "DSXCONNECT_ENROLLMENT_TOKEN", hide_env_values = true)]
    pub enrollment_token: Option<String>,
    /// Send unsigned requests, for a server running with auth off.
    #[arg(long)]
    pub no_auth: bool,
    /// Write the report as JSON to FILE (`-`: stdout; the table then goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also report the CPU time a local process used in the measured window, as NAME=PID
    /// (repeatable; e.g. `--watch-pid dsx-connect=1234 --watch-pid redis=1200`).
    /// dsx-bench's own CPU time is always reported.
    #[arg(long, value_name = "NAME=PID", value_parser = parse_watch)]
    pub watch_pid: Vec<(String, u32)>,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = stats::parse_duration)]
    pub timeout: Duration,
    /// Trust only this CA bundle (PEM) for an https `--url`.
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    /// Do not check the server's certificate (only when asked for; prints a warning).
    #[arg(long)]
    pub insecure: bool,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::AuthCheck => "auth-check",
            Scenario::ScanRequest => "scan-request",
            Scenario::Register => "register",
        }
    }
}

/// How requests authenticate in this run.
fn mode(scenario: Scenario, auth: bool) -> &'static str {
    match (scenario, auth) {
        (_, false) => "unsigned, auth off",
        (Scenario::Register, true) => "enrollment token",
        (_, true) => "signed with DSX-HMAC",
    }
}

/// One enrolled connector. The secret lives in the signing key only; `Debug` shows the uuid.
#[derive(Clone)]
struct Enrolled {
    uuid: Uuid,
    creds: Option<(String, Arc<SigningKey>)>,
    body: Value,
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Enrolled({}, signed: {})", self.uuid, self.creds.is_some())
    }
}

#[derive(Debug, Serialize)]
pub struct HttpReport {
    pub scenario: Scenario,
    pub url: String,
    pub auth: bool,
    pub concurrency: usize,
    pub connectors: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Wall time of the measured window (until the last counted request was answered).
    pub elapsed_s: f64,
    /// Requests counted: started after the warm-up, before the end.
    pub requests: u64,
    pub ok: u64,
    pub error_count: u64,
    /// By kind: `status_<code>`, `timeout`, `connect`, `transport`.
    pub errors: BTreeMap<String, u64>,
    /// Successful requests per second.
    pub rps: f64,
    /// Latency of successful requests, milliseconds.
    pub latency_ms: Percentiles,
    /// CPU seconds (user + system) used in the measured window: dsx-bench and each --watch-pid.
    pub cpu_s: BTreeMap<String, f64>,
    /// The same per successful request, microseconds.
    pub cpu_us_per_request: BTreeMap<String, f64>,
}

pub(crate) fn parse_watch(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected NAME=PID"))?;
    let pid: u32 = pid.trim().parse().map_err(|_| format!("{s:?}: PID is not a number"))?;
    if name.trim().is_empty() {
        return Err(format!("{s:?}: empty name"));
    }
    Ok((name.trim().to_owned(), pid))
}

/// CPU seconds so far of dsx-bench itself and each watched process (missing ones are left out).
pub(crate) fn cpu_sample(watch: &[(String, u32)]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if let Ok(s) = crate::stack::proc_cpu_seconds(std::process::id()) {
        out.insert("dsx-bench".to_owned(), s);
    }
    for (name, pid) in watch {
        if let Ok(s) = crate::stack::proc_cpu_seconds(*pid) {
            out.insert(name.clone(), s);
        }
    }
    out
}

struct Ctx {
    client: reqwest::Client,
    base: String,
    scenario: Scenario,
    auth: bool,
    enrollment_token: Option<String>,
    connectors: Vec<Enrolled>,
    job_id: String,
}

struct WorkerOutcome {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    requests: u64,
    last_done: Instant,
}

pub fn connector_body(uuid: Uuid) -> Value {
    json!({
        "name": "bench-connector",
        "display_name": "Bench",
        "uuid": uuid,
        "url": "http://127.0.0.1:9/bench-connector",
        "status": "ready",
        "item_action": "nothing",
        "asset": "/bench",
    })
}

pub async fn run(args: HttpArgs) -> anyhow::Result<i32> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let auth = !args.no_auth;
    let token = args.enrollment_token.clone().filter(|t| !t.trim().is_empty());
    if auth && token.is_none() {
        bail!("--enrollment-token (or DSXCONNECT_ENROLLMENT_TOKEN) is required unless --no-auth");
    }
    let base = args.url.trim_end_matches('/').to_owned();
    if args.insecure {
        eprintln!("dsx-bench: warning: --insecure: the server's certificate is not checked");
    }
    let tls = dsx_service::ClientTls { verify: !args.insecure, ca_bundle: args.ca_bundle.clone(), identity: None };
    let builder =
        reqwest::Client::builder().timeout(args.timeout).pool_max_idle_per_host(args.concurrency * 2).tcp_nodelay(true);
    let client = dsx_service::http_client(builder, &tls).map_err(anyhow::Error::msg)?;
    preflight(&client, &base).await?;

    let mut connectors = Vec::new();
    if args.scenario != Scenario::Register {
        for _ in 0..args.connectors.max(1) {
            connectors.push(enroll(&client, &base, token.as_deref(), auth).await?);
        }
    }
    let ctx = Arc::new(Ctx {
        client,
        base: base.clone(),
        scenario: args.scenario,
        auth,
        enrollment_token: token,
        connectors,
        job_id: format!("bench-{}", Uuid::new_v4()),
    });

    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    eprintln!(
        "dsx-bench http: {} on {base}, {} workers, {:.1} s warm-up + {:.1} s measured, {}",
        args.scenario.name(),
        args.concurrency,
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64(),
        mode(args.scenario, auth)
    );
    for (name, pid) in &args.watch_pid {
        crate::stack::proc_cpu_seconds(*pid).with_context(|| format!("--watch-pid {name}={pid}"))?;
    }
    let watch = args.watch_pid.clone();
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        cpu_sample(&watch)
    });
    let mut handles = Vec::new();
    for w in 0..args.concurrency {
        let ctx = Arc::clone(&ctx);
        handles.push(tokio::spawn(async move { worker(ctx, w, measure_from, end).await }));
    }
    let mut hist = stats::histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut requests = 0;
    let mut last_done = measure_from;
    for h in handles {
        let out = h.await.context("worker panicked")?;
        hist.add(&out.hist).context("merge histograms")?;
        for (k, v) in out.errors {
            *errors.entry(k).or_default() += v;
        }
        requests += out.requests;
        last_done = last_done.max(out.last_done);
    }
    let cpu_after = cpu_sample(&args.watch_pid);
    let cpu_before = sampler.await.context("CPU sampler")?;
    unregister(&ctx).await;

    let elapsed = last_done.saturating_duration_since(measure_from).max(Duration::from_millis(1));
    let ok = hist.len();
    let error_count: u64 = errors.values().sum();
    let cpu_s: BTreeMap<String, f64> =
        cpu_after.iter().filter_map(|(k, a)| cpu_before.get(k).map(|b| (k.clone(), a - b))).collect();
    let cpu_us_per_request = cpu_s.iter().map(|(k, s)| (k.clone(), s * 1e6 / ok.max(1) as f64)).collect();
    let report = HttpReport {
        scenario: args.scenario,
        url: base,
        auth,
        concurrency: args.concurrency,
        connectors: ctx.connectors.len(),
        warmup_s: args.warmup.as_secs_f64(),
        duration_s: args.duration.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        requests,
        ok,
        error_count,
        errors,
        rps: ok as f64 / elapsed.as_secs_f64(),
        latency_ms: Percentiles::of(&hist),
        cpu_s,
        cpu_us_per_request,
    };
    stats::emit(&table(&report), &report, args.json.as_deref())?;
    Ok(if report.ok == 0 { 1 } else { 0 })
}

fn table(r: &HttpReport) -> String {
    let mut s = String::new();
    s += &format!(
        "scenario {} ({}) on {}, concurrency {}, {:.1} s measured after {:.1} s warm-up\n",
        r.scenario.name(),
        mode(r.scenario, r.auth),
        r.url,
        r.concurrency,
        r.elapsed_s,
        r.warmup_s
    );
    s += &format!("{:>10} {:>10} {:>8} {:>10}   latency ms:{PERCENTILE_HEADER}\n", "requests", "ok", "errors", "req/s");
    s += &format!(
        "{:>10} {:>10} {:>8} {:>10.1}              {}\n",
        r.requests,
        r.ok,
        r.error_count,
        r.rps,
        r.latency_ms.row()
    );
    for (kind, n) in &r.errors {
        s += &format!("  error {kind}: {n}\n");
    }
    if !r.cpu_s.is_empty() {
        let parts: Vec<String> = r
            .cpu_s
            .iter()
            .map(|(k, v)| format!("{k} {v:.2} s ({:.0} µs/request)", r.cpu_us_per_request.get(k).unwrap_or(&0.0)))
            .collect();
        s += &format!("  CPU in the measured window: {}\n", parts.join(", "));
    }
    s
}

/// One line naming the URL when the server cannot be reached.
async fn preflight(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let url = format!("{base}{PREFIX}/healthz");
    match client.get(&url).timeout(Duration::from_secs(5)).send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => bail!("dsx-connect at {base} answered {} on {url}", resp.status()),
        Err(err) => bail!("cannot reach dsx-connect at {base}: {}", root_cause(&err)),
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

async fn enroll(client: &reqwest::Client, base: &str, token: Option<&str>, auth: bool) -> anyhow::Result<Enrolled> {
    let uuid = Uuid::new_v4();
    let body = connector_body(uuid);
    let mut req = client.post(format!("{base}{PREFIX}/connectors/register")).json(&body);
    if let Some(t) = token {
        req = req.header("X-Enrollment-Token", t);
    }
    let resp = req.send().await.with_context(|| format!("register a bench connector at {base}"))?;
    let status = resp.status();
    if !status.is_success() {
        let hint = match status.as_u16() {
            401 | 403 => ": check --enrollment-token / DSXCONNECT_ENROLLMENT_TOKEN",
            429 => ": registration is rate limited (DSXCONNECT_AUTH__REGISTER_RATE_PER_MINUTE=0 lifts it)",
            _ => "",
        };
        bail!("registration at {base} answered {status}{hint}");
    }
    let json: Value = resp.json().await.context("registration answer is not JSON")?;
    let creds = if auth {
        let key_id = json["hmac_key_id"].as_str();
        let secret = json["hmac_secret"].as_str();
        match (key_id, secret) {
            (Some(k), Some(s)) => Some((k.to_owned(), Arc::new(SigningKey::new(s)))),
            _ => bail!("registration at {base} returned no HMAC credentials: is auth off there? (use --no-auth)"),
        }
    } else {
        None
    };
    Ok(Enrolled { uuid, creds, body })
}

/// Best effort: remove the bench connectors again (signed `DELETE connectors/unregister`).
async fn unregister(ctx: &Ctx) {
    for c in &ctx.connectors {
        let path = format!("{PREFIX}/connectors/unregister/{}", c.uuid);
        let mut req = ctx.client.delete(format!("{}{path}", ctx.base));
        if let Some((key_id, key)) = &c.creds {
            req = req.header(
                "Authorization",
                authorization_header(key, key_id, "DELETE", &path, unix_now(), &generate_nonce(), b""),
            );
        }
        let _ = req.send().await;
    }
}

async fn worker(ctx: Arc<Ctx>, w: usize, measure_from: Instant, end: Instant) -> WorkerOutcome {
    let mut out =
        WorkerOutcome { hist: stats::histogram(), errors: BTreeMap::new(), requests: 0, last_done: measure_from };
    let mut seq: u64 = 0;
    loop {
        let started = Instant::now();
        if started >= end {
            break;
        }
        seq += 1;
        let result = send(&ctx, w, seq).await;
        let done = Instant::now();
        if started < measure_from {
            continue;
        }
        out.requests += 1;
        out.last_done = done;
        match result {
            Ok(()) => stats::record(&mut out.hist, (done - started).as_micros() as u64),
            Err(kind) => *out.errors.entry(kind).or_default() += 1,
        }
    }
    out
}

/// Build, sign and send one request; `Err(kind)` for anything but a 2xx answer.
async fn send(ctx: &Ctx, w: usize, seq: u64) -> Result<(), String> {
    let (path, body, connector) = match ctx.scenario {
        Scenario::AuthCheck => (format!("{PREFIX}/scan/auth_check"), Vec::new(), Some(w % ctx.connectors.len())),
        Scenario::ScanRequest => {
            let c = w % ctx.connectors.len();
            let mut req = json!({
                "location": format!("/bench/w{w}/item-{seq}.bin"),
                "metainfo": format!("bench w{w} #{seq}"),
                "connector_url": "http://127.0.0.1:9/bench-connector",
                "size_in_bytes": 4096,
                // A job belongs to one connector: one job per connector of the run.
                "scan_job_id": format!("{}-c{c}", ctx.job_id),
            });
            if !ctx.auth {
                // Without a key the body names the connector (required when auth is off).
                req["connector"] = ctx.connectors[c].body.clone();
            }
            (format!("{PREFIX}/scan/request"), serde_json::to_vec(&req).unwrap_or_default(), Some(c))
        }
        Scenario::Register => (
            format!("{PREFIX}/connectors/register"),
            serde_json::to_vec(&connector_body(Uuid::new_v4())).unwrap_or_default(),
            None,
        ),
    };
    let mut req = ctx.client.post(format!("{}{path}", ctx.base));
    if !body.is_empty() {
        req = req.header("Content-Type", "application/json");
    }
    if ctx.auth {
        match connector.and_then(|c| ctx.connectors[c].creds.as_ref()) {
            Some((key_id, key)) => {
                let header = authorization_header(key, key_id, "POST", &path, unix_now(), &generate_nonce(), &body);
                req = req.header("Authorization", header);
            }
            None => {
                if let Some(t) = &ctx.enrollment_token {
                    req = req.header("X-Enrollment-Token", t);
                }
            }
        }
    }
    match req.body(body).send().await {
        Ok(resp) => {
            let status = resp.status();
            // Read the whole answer so the connection goes back to the pool.
            let _ = resp.bytes().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("status_{}", status.as_u16()))
            }
        }
        Err(err) if err.is_timeout() => Err("timeout".into()),
        Err(err) if err.is_connect() => Err("connect".into()),
        Err(_) => Err("transport".into()),
    }
}

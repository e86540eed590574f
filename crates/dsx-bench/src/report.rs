//! `dsx-bench report`: turn one bench run's outputs (criterion text, the JSON of the other
//! subcommands) into docs/performance.md, with each target marked PASS or MISS.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use crate::stats::fmt_ms;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Directory with the run's outputs.
    #[arg(long)]
    pub dir: PathBuf,
    /// Where to write the Markdown.
    #[arg(long, default_value = "docs/performance.md")]
    pub out: PathBuf,
    /// The run used the small sizes of `bench.sh --quick`.
    #[arg(long)]
    pub quick: bool,
    /// An extra line for the list of run details at the top (repeatable).
    #[arg(long)]
    pub note: Vec<String>,
}

/// One criterion result: `time: [lo mid hi]` in nanoseconds, throughput in bytes/s if given.
#[derive(Debug, Clone, PartialEq)]
pub struct CriterionResult {
    pub name: String,
    pub time_ns: [f64; 3],
    pub thrpt_bps: Option<[f64; 3]>,
}

fn time_unit_ns(unit: &str) -> Option<f64> {
    Some(match unit {
        "ps" => 1e-3,
        "ns" => 1.0,
        "µs" | "us" | "μs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    })
}

fn thrpt_unit_bps(unit: &str) -> Option<f64> {
    Some(match unit {
        "B/s" => 1.0,
        "KiB/s" => 1024.0,
        "MiB/s" => 1024.0 * 1024.0,
        "GiB/s" => 1024.0 * 1024.0 * 1024.0,
        "TiB/s" => 1024.0f64.powi(4),
        "KB/s" => 1e3,
        "MB/s" => 1e6,
        "GB/s" => 1e9,
        _ => return None,
    })
}

/// `[1.2 µs 1.3 µs 1.4 µs]` → three values scaled by `unit`.
fn triple(text: &str, unit: fn(&str) -> Option<f64>) -> Option<[f64; 3]> {
    let inner = text.split_once('[')?.1.split_once(']')?.0;
    let parts: Vec<&str> = inner.split_whitespace().collect();
    if parts.len() != 6 {
        return None;
    }
    let mut out = [0.0; 3];
    for i in 0..3 {
        out[i] = parts[2 * i].parse::<f64>().ok()? * unit(parts[2 * i + 1])?;
    }
    Some(out)
}

/// Parse criterion's text output (names, `time:` and `thrpt:` lines).
pub fn parse_criterion(text: &str) -> Vec<CriterionResult> {
    let mut out: Vec<CriterionResult> = Vec::new();
    let mut pending_name = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(i) = line.find("time:") {
            let before = line[..i].trim();
            let name = if before.is_empty() { pending_name.clone() } else { before.to_owned() };
            if let Some(t) = triple(&line[i..], time_unit_ns) {
                out.push(CriterionResult { name, time_ns: t, thrpt_bps: None });
            }
        } else if let Some(i) = line.find("thrpt:") {
            if let (Some(last), Some(t)) = (out.last_mut(), triple(&line[i..], thrpt_unit_bps)) {
                last.thrpt_bps = Some(t);
            }
        } else if !trimmed.is_empty()
            && !line.starts_with(char::is_whitespace)
            && !trimmed.starts_with("Benchmarking")
            && !trimmed.starts_with("Found")
            && !trimmed.starts_with("Running")
            && !trimmed.starts_with("Gnuplot")
            && !trimmed.contains("outlier")
        {
            pending_name = trimmed.to_owned();
        }
    }
    out
}

fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.3} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.3} ms", ns / 1e6)
    } else {
        format!("{:.3} s", ns / 1e9)
    }
}

fn fmt_bps(bps: f64) -> String {
    if bps >= 1e9 {
        format!("{:.2} GB/s", bps / 1e9)
    } else {
        format!("{:.1} MB/s", bps / 1e6)
    }
}

fn read_json(dir: &Path, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(name)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Every repetition of one benchmark: `STEM.json`, then `STEM.1.json`, `STEM.2.json`, … in order.
fn read_runs(dir: &Path, stem: &str) -> Vec<Value> {
    let single = read_json(dir, &format!("{stem}.json"));
    single.into_iter().chain((1..).map_while(|n| read_json(dir, &format!("{stem}.{n}.json")))).collect()
}

/// The middle value (the lower middle of an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len().saturating_sub(1) / 2).copied()
}

/// The run whose `key` is the median of all runs': the one the detail tables show.
fn median_run(runs: &[Value], key: impl Fn(&Value) -> Option<f64>) -> Option<Value> {
    let middle = median(runs.iter().filter_map(&key).collect())?;
    runs.iter().find(|v| key(v) == Some(middle)).cloned()
}

/// dsx-connect CPU per file of one pipeline run, µs.
fn cpu_per_file(v: &Value) -> Option<f64> {
    Some(num(v, &["cpu_s", "dsx_connect"])? * 1e6 / num(v, &["files"])?.max(1.0))
}

fn files_per_s(v: &Value) -> Option<f64> {
    num(v, &["files_per_s"])
}

/// `a, b, c` of one figure over the runs, in run order.
fn list_runs(runs: &[Value], key: impl Fn(&Value) -> Option<f64>, fmt: fn(f64) -> String) -> String {
    runs.iter().filter_map(key).map(fmt).collect::<Vec<_>>().join(", ")
}

fn whole(x: f64) -> String {
    format!("{x:.0}")
}

fn run_text(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

struct Machine {
    cpus: usize,
    model: String,
    kernel: String,
    memory: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:").and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
        })
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    Machine { cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), model, kernel, memory }
}

/// A target row: name, measured text, Some(pass) or None when not measured, and why a
/// measured value is not judged (a run smaller than the target's size).
struct Target {
    name: &'static str,
    measured: String,
    pass: Option<bool>,
    not_judged: Option<String>,
}

impl Target {
    fn result(&self) -> String {
        match (&self.not_judged, self.pass) {
            (Some(why), Some(_)) => format!("n/a ({why})"),
            (_, Some(true)) => "PASS".into(),
            (_, Some(false)) => "MISS".into(),
            (_, None) => "not run".into(),
        }
    }
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

pub fn run(args: ReportArgs) -> anyhow::Result<i32> {
    let text = render(&args.dir, args.quick, &args.note);
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, text).with_context(|| format!("write {}", args.out.display()))?;
    eprintln!("dsx-bench report: wrote {}", args.out.display());
    Ok(0)
}

fn http_row(label: &str, v: Option<&Value>) -> String {
    let Some(v) = v else { return format!("| {label} | not run | | | | | | |\n") };
    let ms = |k: &str| num(v, &["latency_ms", k]).map(fmt_ms).unwrap_or_default();
    format!(
        "| {label} | {} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
        v["concurrency"],
        num(v, &["rps"]).unwrap_or(0.0),
        ms("p50"),
        ms("p90"),
        ms("p99"),
        ms("p999"),
        ms("max"),
        match v["error_count"].as_u64() {
            Some(0) | None => "0".to_owned(),
            Some(n) => format!("{n} {}", v["errors"]),
        }
    )
}

pub fn render(dir: &Path, quick: bool, notes: &[String]) -> String {
    let m = machine();
    let commit = run_text("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = run_text("git", &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let date = run_text("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "unknown".into());

    let verify = parse_criterion(&std::fs::read_to_string(dir.join("criterion-verify.txt")).unwrap_or_default());
    let matcher = parse_criterion(&std::fs::read_to_string(dir.join("criterion-matcher.txt")).unwrap_or_default());
    let store_turns = parse_criterion(&std::fs::read_to_string(dir.join("criterion-store.txt")).unwrap_or_default());
    // `auth_check` may run several times, auth off and on taking turns: p99 and req/s are
    // judged by their medians, and the detail rows show the run with the median p99.
    let p99_of = |v: &Value| num(v, &["latency_ms", "p99"]);
    let rps_of = |v: &Value| num(v, &["rps"]);
    let (on_runs, off_runs) = (read_runs(dir, "http-auth-on"), read_runs(dir, "http-auth-off"));
    let on = median_run(&on_runs, p99_of);
    let off = median_run(&off_runs, p99_of);
    let scan_cpu = |v: &Value| num(v, &["cpu_us_per_request", "dsx-connect"]);
    let scan_runs = read_runs(dir, "http-scan-request");
    let scan = median_run(&scan_runs, scan_cpu);
    let base_scan_runs = read_runs(dir, "baseline-http-scan-request");
    let base_scan = median_run(&base_scan_runs, scan_cpu);
    let register = read_json(dir, "http-register.json");
    // Pipelines may run several times (alternating with the baseline build): the figures
    // judged are the medians, and the detail tables show the run with the median CPU per file.
    let runs_embedded = read_runs(dir, "pipeline-embedded");
    let runs_redis = read_runs(dir, "pipeline-redis");
    let runs_base_embedded = read_runs(dir, "baseline-pipeline-embedded");
    let runs_base_redis = read_runs(dir, "baseline-pipeline-redis");
    let pipe_embedded = median_run(&runs_embedded, cpu_per_file);
    let pipe_redis = median_run(&runs_redis, cpu_per_file);
    let base_embedded = median_run(&runs_base_embedded, cpu_per_file);
    let base_redis = median_run(&runs_base_redis, cpu_per_file);
    let runs_tls = read_runs(dir, "pipeline-embedded-tls");
    let pipe_tls = median_run(&runs_tls, cpu_per_file);
    let large = read_json(dir, "large-file.json");

    let verify_small = verify.iter().find(|r| r.name == "verify/0");
    let verify_large = verify.iter().find(|r| r.name == "verify/1048576");
    let ratio = match (
        median(on_runs.iter().filter_map(rps_of).collect()),
        median(off_runs.iter().filter_map(rps_of).collect()),
    ) {
        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
        _ => None,
    };
    let p99 = median(on_runs.iter().filter_map(p99_of).collect());
    // "…, median of 3 runs: a, b, c" when there was more than one (`auth_check`, `scan/request`).
    let over_runs = |runs: &[Value], key: &dyn Fn(&Value) -> Option<f64>, fmt: fn(f64) -> String| {
        if runs.len() < 2 {
            return String::new();
        }
        format!(", median of {} runs: {}", runs.len(), list_runs(runs, key, fmt))
    };
    let median_of = |runs: &[Value], key: fn(&Value) -> Option<f64>| median(runs.iter().filter_map(key).collect());
    let embedded_files_per_s = median_of(&runs_embedded, files_per_s);
    let growth = large.as_ref().and_then(|v| num(v, &["rss_growth_mib"]));
    let concurrency = on.as_ref().and_then(|v| v["concurrency"].as_u64());
    let pipe_files = pipe_embedded.as_ref().and_then(|v| v["files"].as_u64());
    let tls_files_per_s = median_of(&runs_tls, files_per_s);
    let tls_ratio = match (tls_files_per_s, embedded_files_per_s) {
        (Some(t), Some(p)) if p > 0.0 => Some(t / p),
        _ => None,
    };
    let large_mib = large.as_ref().and_then(|v| v["size_mib"].as_u64());
    let (cpu_embedded, cpu_redis) = (median_of(&runs_embedded, cpu_per_file), median_of(&runs_redis, cpu_per_file));
    // The baseline build's figure from the same run: on a noisy machine the ratio is the
    // steadier number.
    let cpu_with_baseline = |now: Option<f64>, runs: &[Value], before: &[Value]| {
        now.map(|c| {
            let spread = if runs.len() > 1 { format!(", median of {} runs", runs.len()) } else { String::new() };
            match median_of(before, cpu_per_file) {
                Some(b) if b > 0.0 => format!("{c:.0} µs{spread} (baseline build {b:.0} µs, {:.2} ×)", c / b),
                _ => format!("{c:.0} µs{spread}"),
            }
        })
    };
    let sent = pipe_redis.as_ref().and_then(|v| num(v, &["redis_per_file", "sent"]));
    let counted = pipe_redis.as_ref().and_then(|v| num(v, &["redis_per_file", "commandstats"]));
    let speedup = |now: &[Value], before: &[Value]| {
        let (now, before) = (median_of(now, files_per_s)?, median_of(before, files_per_s)?);
        (before > 0.0).then_some((now, before, now / before))
    };
    let (speedup_embedded, speedup_redis) =
        (speedup(&runs_embedded, &runs_base_embedded), speedup(&runs_redis, &runs_base_redis));
    let fmt_speedup = |s: Option<(f64, f64, f64)>| {
        s.map(|(now, before, r)| format!("{now:.0} vs {before:.0} files/s ({r:.2} ×)")).unwrap_or_default()
    };
    let scan_request_cpu = median(scan_runs.iter().filter_map(scan_cpu).collect());
    let targets = [
        Target {
            name: "signed `scan/auth_check` p99 < 5 ms at concurrency 32 (Redis)",
            measured: p99
                .map(|p| format!("{} ms{}", fmt_ms(p), over_runs(&on_runs, &p99_of, fmt_ms)))
                .unwrap_or_default(),
            pass: p99.map(|p| p < 5.0),
            not_judged: concurrency.filter(|&c| c != 32).map(|c| format!("run at concurrency {c}")),
        },
        Target {
            name: "auth on ≥ 0.85 × auth off (`auth_check` req/s, same run)",
            measured: ratio
                .map(|r| {
                    let spread = if on_runs.len() > 1 { ", medians of the runs' req/s" } else { "" };
                    format!("{r:.2} ×{spread}")
                })
                .unwrap_or_default(),
            pass: ratio.map(|r| r >= 0.85),
            not_judged: None,
        },
        Target {
            name: "verify < 2 µs, small request (`verify/0`)",
            measured: verify_small.map(|r| fmt_ns(r.time_ns[1])).unwrap_or_default(),
            pass: verify_small.map(|r| r.time_ns[1] < 2000.0),
            not_judged: None,
        },
        Target {
            name: "body hashing ≥ 1 GB/s (`verify/1048576`)",
            measured: verify_large.and_then(|r| r.thrpt_bps).map(|t| fmt_bps(t[1])).unwrap_or_default(),
            pass: verify_large.and_then(|r| r.thrpt_bps).map(|t| t[1] >= 1e9),
            not_judged: None,
        },
        Target {
            name: "pipeline ≥ 2,000 files/s, 10,000 × 4 KiB (embedded store)",
            measured: embedded_files_per_s.map(|f| format!("{f:.0} files/s")).unwrap_or_default(),
            pass: embedded_files_per_s.map(|f| f >= 2000.0),
            not_judged: pipe_files.filter(|&n| n != 10_000).map(|n| format!("{n}-file run")),
        },
        Target {
            name: "HTTPS on both connector hops costs < 15 % of files/s (4 KiB files, embedded, same run)",
            measured: tls_ratio
                .map(|r| {
                    format!(
                        "{:.0} vs {:.0} files/s ({:+.1} %)",
                        tls_files_per_s.unwrap_or(0.0),
                        embedded_files_per_s.unwrap_or(0.0),
                        (r - 1.0) * 100.0
                    )
                })
                .unwrap_or_default(),
            pass: tls_ratio.map(|r| r >= 0.85),
            not_judged: None,
        },
        Target {
            name: "dsx-connect CPU per file ≤ 150 µs, 10,000 × 4 KiB pipeline (embedded store)",
            measured: cpu_with_baseline(cpu_embedded, &runs_embedded, &runs_base_embedded).unwrap_or_default(),
            pass: cpu_embedded.map(|c| c <= 150.0),
            not_judged: pipe_files.filter(|&n| n != 10_000).map(|n| format!("{n}-file run")),
        },
        Target {
            name: "dsx-connect CPU per file ≤ 120 µs, 10,000 × 4 KiB pipeline (Redis)",
            measured: cpu_with_baseline(cpu_redis, &runs_redis, &runs_base_redis).unwrap_or_default(),
            pass: cpu_redis.map(|c| c <= 120.0),
            not_judged: None,
        },
        Target {
            name: "Redis requests dsx-connect sends per file ≤ 5 (happy path)",
            measured: sent
                .map(|s| format!("{s:.2} sent ({:.1} commands in INFO commandstats)", counted.unwrap_or(0.0)))
                .unwrap_or_default(),
            pass: sent.map(|s| s <= 5.0),
            not_judged: None,
        },
        Target {
            name: "pipeline files/s ≥ 2 × the baseline build, same run (embedded store)",
            measured: fmt_speedup(speedup_embedded),
            pass: speedup_embedded.map(|(_, _, r)| r >= 2.0),
            not_judged: None,
        },
        Target {
            name: "pipeline files/s ≥ 2 × the baseline build, same run (Redis)",
            measured: fmt_speedup(speedup_redis),
            pass: speedup_redis.map(|(_, _, r)| r >= 2.0),
            not_judged: None,
        },
        Target {
            name: "`scan/request` dsx-connect CPU per request ≤ 30 µs (auth on, Redis)",
            measured: scan_request_cpu
                .map(|c| {
                    let runs = over_runs(&scan_runs, &scan_cpu, whole);
                    match median(base_scan_runs.iter().filter_map(scan_cpu).collect()) {
                        Some(b) if b > 0.0 => format!("{c:.1} µs{runs} (baseline build {b:.1} µs, {:.2} ×)", c / b),
                        _ => format!("{c:.1} µs{runs}"),
                    }
                })
                .unwrap_or_default(),
            pass: scan_request_cpu.map(|c| c <= 30.0),
            not_judged: None,
        },
        Target {
            name: "1 GiB file: dsx-connect RSS growth < 64 MiB",
            measured: growth.map(|g| format!("{g:.1} MiB")).unwrap_or_default(),
            pass: growth.map(|g| g < 64.0),
            not_judged: large_mib.filter(|&m| m != 1024).map(|m| format!("{m} MiB run")),
        },
    ];

    let mut s = String::new();
    s += "# Performance\n\n";
    s += "<!-- Written by `bash scripts/bench.sh`; edit the generator (crates/dsx-bench/src/report.rs), not this file. -->\n\n";
    if quick {
        s += "**Quick run** (`bench.sh --quick`): small sizes and short durations, for a fast look only. \
              Targets that depend on size (pipeline, large file) are not meaningful here.\n\n";
    }
    s += &format!(
        "- Date: {date}\n- Commit: `{commit}`{}\n- Machine: {} CPUs ({}), {} memory, Linux {}\n",
        if dirty { " (working tree had uncommitted changes)" } else { "" },
        m.cpus,
        m.model,
        m.memory,
        m.kernel
    );
    s += &format!(
        "- Load generator and servers share the same {} CPUs: every number below includes the cost of \
         the client (dsx-bench signing and sending, or the connector) competing with the server. \
         The machine is a shared VM and noisy; compare ratios measured in the same run, and read absolute \
         numbers only as context.\n",
        m.cpus
    );
    for n in notes {
        s += &format!("- {n}\n");
    }

    s += "\n## Targets\n\n| target | measured | result |\n| --- | --- | --- |\n";
    for t in &targets {
        s += &format!("| {} | {} | {} |\n", t.name, if t.measured.is_empty() { "—" } else { &t.measured }, t.result());
    }

    s += "\n## Micro-benchmarks (criterion)\n\n";
    s += "`cargo bench -p dsx-hmac --bench verify` and `cargo bench -p dsx-filter --bench matcher` with short \
          warm-up and measurement times. Time is criterion's [low, estimate, high] interval; throughput is the \
          estimate, in decimal units (1 GB = 10⁹ bytes). `verify/N` is the server-side check of a request with \
          an N-byte body (parse, key schedule, freshness, HMAC), without the store.\n\n";
    s += "| benchmark | time (low / estimate / high) | throughput |\n| --- | --- | --- |\n";
    if verify.is_empty() && matcher.is_empty() {
        s += "| not run | | |\n";
    }
    for r in verify.iter().chain(matcher.iter()) {
        s += &format!(
            "| `{}` | {} / **{}** / {} | {} |\n",
            r.name.replace('|', "\\|"),
            fmt_ns(r.time_ns[0]),
            fmt_ns(r.time_ns[1]),
            fmt_ns(r.time_ns[2]),
            r.thrpt_bps.map(|t| fmt_bps(t[1])).unwrap_or_default()
        );
    }

    if !store_turns.is_empty() {
        s += "\n`cargo bench -p dsx-store --bench cycle`: one turn of the embedded store as the pipeline drives it \
              (32 tasks enqueued in one request, claimed in one call, then completed with their results), \
              timed in **CPU time of the whole process** (every thread, including the store's write and flush \
              threads), not wall time. `turn_32_files` completes all 32 at once, so they share the write \
              thread's transactions; `…_commit_each` completes them one after another, one redb commit each: \
              the difference is what a commit costs on its own.\n\n";
        s += "| benchmark | CPU per turn (low / estimate / high) | CPU per file |\n| --- | --- | --- |\n";
        for r in &store_turns {
            s += &format!(
                "| `{}` | {} / **{}** / {} | {} |\n",
                r.name,
                fmt_ns(r.time_ns[0]),
                fmt_ns(r.time_ns[1]),
                fmt_ns(r.time_ns[2]),
                fmt_ns(r.time_ns[1] / 32.0)
            );
        }
    }

    s += "\n## HTTP load (Redis store)\n\n";
    s += "`dsx-bench http`: closed loop, each worker sends its next request when the previous one is \
          answered; every request is signed when sent (fresh timestamp and nonce), so the client's signing \
          cost is inside the latency. The servers run `dsx-connect serve --role api` (no scan workers). \
          Latencies in milliseconds, of successful requests after the warm-up.\n\n";
    s += "| scenario | concurrency | req/s | p50 | p90 | p99 | p99.9 | max | errors |\n";
    s += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    s += &http_row("`scan/auth_check`, auth on (signed)", on.as_ref());
    s += &http_row("`scan/auth_check`, auth off (unsigned)", off.as_ref());
    s += &http_row("`scan/request` (enqueue), auth on", scan.as_ref());
    s += &http_row("`connectors/register` burst (enrollment token)", register.as_ref());
    if base_scan.is_some() {
        s += &http_row("baseline build: `scan/request` (enqueue), auth on", base_scan.as_ref());
    }
    if let Some(r) = ratio {
        s += &format!("\nAuth on / auth off, `auth_check` req/s in this run: **{r:.2}**.\n");
    }
    let http_runs = [
        ("`scan/auth_check`, auth on", &on),
        ("`scan/auth_check`, auth off", &off),
        ("`scan/request`, auth on", &scan),
        ("`connectors/register`", &register),
        ("baseline build: `scan/request`, auth on", &base_scan),
    ];
    let mut cpu_names: Vec<String> = http_runs
        .iter()
        .filter_map(|(_, v)| {
            v.as_ref()?.get("cpu_us_per_request")?.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>())
        })
        .flatten()
        .collect();
    cpu_names.sort();
    cpu_names.dedup();
    if !cpu_names.is_empty() {
        s += "\nCPU time per successful request in the measured window (µs, user + system, from `/proc/<pid>/stat`); \
              all processes share the machine's CPUs:\n\n";
        s += &format!("| scenario | {} |\n|{}\n", cpu_names.join(" | "), " --- |".repeat(cpu_names.len() + 1));
        for (label, v) in http_runs {
            let Some(v) = v else { continue };
            let cells: Vec<String> = cpu_names
                .iter()
                .map(|n| num(v, &["cpu_us_per_request", n]).map(|x| format!("{x:.1}")).unwrap_or_default())
                .collect();
            s += &format!("| {label} | {} |\n", cells.join(" | "));
        }
    }

    s += "\n## Pipeline (full scan, end to end)\n\n";
    s += "`dsx-bench pipeline`: the real `filesystem-connector` enqueues a full scan of generated files, \
          `dsx-connect serve --role all` (auth on, built-in scanner) reads each file back from the connector, \
          scans it and stores the result. Time runs from the full-scan trigger until the job is `completed`; \
          every file is then checked to have exactly one result with the right verdict. The HTTPS row is the \
          same run with `--tls`: both connector hops (connector → dsx-connect and dsx-connect → connector, which \
          carries the file bytes) over TLS 1.3 with a test CA, every client verifying; the scanner is in-process \
          in every row.\n\n";
    s += "| store | files × size | elapsed | files/s | MiB/s | all enqueued after | results verified |\n";
    s += "| --- | --- | --- | --- | --- | --- | --- |\n";
    let pipelines = [
        ("embedded", &pipe_embedded),
        ("Redis", &pipe_redis),
        ("embedded, HTTPS", &pipe_tls),
        ("baseline build, embedded", &base_embedded),
        ("baseline build, Redis", &base_redis),
    ];
    for (label, v) in pipelines {
        match v {
            None => s += &format!("| {label} | not run | | | | | |\n"),
            Some(v) => {
                s += &format!(
                    "| {label} | {} × {} B | {:.2} s | **{:.0}** | {:.1} | {} | {} |\n",
                    v["files"],
                    v["size"],
                    num(v, &["elapsed_s"]).unwrap_or(0.0),
                    num(v, &["files_per_s"]).unwrap_or(0.0),
                    num(v, &["mib_per_s"]).unwrap_or(0.0),
                    num(v, &["enqueue_done_s"]).map(|x| format!("{x:.2} s")).unwrap_or_else(|| "—".into()),
                    if v["verified"] == true { "yes" } else { "no" }
                )
            }
        }
    }
    let repeated = [
        ("embedded", &runs_embedded),
        ("Redis", &runs_redis),
        ("embedded, HTTPS", &runs_tls),
        ("baseline build, embedded", &runs_base_embedded),
        ("baseline build, Redis", &runs_base_redis),
    ];
    if repeated.iter().any(|(_, runs)| runs.len() > 1) {
        s += "\nEach pipeline above ran several times, the current and the baseline build taking turns; a row \
              shows the run with the median dsx-connect CPU per file, and the targets use the medians. Every run, \
              in order:\n\n| store | dsx-connect CPU per file (µs) | files/s |\n| --- | --- | --- |\n";
        for (label, runs) in repeated {
            if !runs.is_empty() {
                s += &format!(
                    "| {label} | {} | {} |\n",
                    list_runs(runs, cpu_per_file, whole),
                    list_runs(runs, files_per_s, whole)
                );
            }
        }
    }
    for (label, v) in pipelines {
        let Some(v) = v else { continue };
        if let (Some(e), Some(c), Some(b)) =
            (num(v, &["elapsed_s"]), num(v, &["cpu_s", "dsx_connect"]), num(v, &["cpu_s", "connector"]))
        {
            s += &format!(
                "\nCPU during the {label} run ({e:.2} s on {} CPUs): dsx-connect {c:.2} s ({:.0}% of one CPU), \
                 filesystem-connector {b:.2} s ({:.0}%)",
                v["cpu_s"]["cpus"],
                100.0 * c / e,
                100.0 * b / e
            );
            if let Some(others) = v["cpu_s"]["others"].as_object() {
                for (name, secs) in others {
                    if let Some(x) = secs.as_f64() {
                        s += &format!(", {name} {x:.2} s ({:.0}%)", 100.0 * x / e);
                    }
                }
            }
            if let Some(files) = num(v, &["files"]) {
                s += &format!("; {:.0} µs of dsx-connect CPU per file", c * 1e6 / files);
            }
            s += ".\n";
            if let (Some(sent), Some(counted)) =
                (num(v, &["redis_per_file", "sent"]), num(v, &["redis_per_file", "commandstats"]))
            {
                s += &format!(
                    "\nRedis per file: **{sent:.2} requests sent by dsx-connect** (its \
                     `dsxconnect_store_round_trips`; a pipeline or a script counts once), {counted:.1} commands \
                     executed by Redis (`INFO commandstats`: every process, commands run inside scripts included).\n"
                );
            }
            if let (Some(used), Some(file), Some(per_file)) =
                (num(v, &["store_used_bytes"]), num(v, &["store_file_bytes"]), num(v, &["store_bytes_per_file"]))
            {
                s += &format!(
                    "\nEmbedded store after the run: {:.1} MiB in use, **{per_file:.0} bytes per scanned file**; \
                     the file is {:.1} MiB (free pages are reused, and given back to the disk by compaction once \
                     the store is idle).\n",
                    used / (1u64 << 20) as f64,
                    file / (1u64 << 20) as f64
                );
            }
        }
    }
    let stage_names = |v: &Value| -> Vec<String> {
        v["stages_ms"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
    };
    for (label, v) in [("embedded", &pipe_embedded), ("Redis", &pipe_redis)] {
        let Some(v) = v else { continue };
        let names = stage_names(v);
        if names.is_empty() {
            continue;
        }
        s += &format!(
            "\nPer-item stage latency, {label} store (ms, from the stored results, which keep the \
             worker's stage timings and the scanner's time in microseconds):\n\n\
             | stage | p50 | p90 | p99 | p99.9 | max |\n| --- | --- | --- | --- | --- | --- |\n"
        );
        for n in names {
            let p = |k: &str| num(v, &["stages_ms", &n, k]).map(fmt_ms).unwrap_or_default();
            s += &format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                stage_doc(&n),
                p("p50"),
                p("p90"),
                p("p99"),
                p("p999"),
                p("max")
            );
        }
    }

    s += "\n## Large file\n\n";
    s += "`dsx-bench large-file`: one file of random bytes, full scan on the embedded store. Memory is \
          dsx-connect's `VmRSS` before the scan and `VmHWM` (peak) at the end, from `/proc/<pid>/status`.\n\n";
    match &large {
        None => s += "Not run.\n",
        Some(v) => {
            s += "| size | elapsed | MiB/s | RSS before | RSS peak | growth |\n| --- | --- | --- | --- | --- | --- |\n";
            s += &format!(
                "| {} MiB | {:.2} s | {:.0} | {:.1} MiB | {:.1} MiB | **{:.1} MiB** |\n",
                v["size_mib"],
                num(v, &["elapsed_s"]).unwrap_or(0.0),
                num(v, &["mib_per_s"]).unwrap_or(0.0),
                num(v, &["rss_before_mib"]).unwrap_or(0.0),
                num(v, &["rss_peak_mib"]).unwrap_or(0.0),
                num(v, &["rss_growth_mib"]).unwrap_or(0.0)
            );
        }
    }

    s += "\n## Reproducing\n\n";
    s += "```sh\nbash scripts/bench.sh            # full sizes, rewrites this file\nbash scripts/bench.sh --quick    # small sizes\n```\n\n";
    s += "Single runs: `target/release/dsx-bench http --help`, `… pipeline --help`, `… large-file --help`. \
          `dsx-bench` looks for `dsx-connect` and `filesystem-connector` next to itself (or `--bin-dir`).\n";
    s
}

fn stage_doc(key: &str) -> String {
    match key {
        "queue_wait" => "queue wait: enqueued (intake commit) → claimed by a worker".into(),
        "read_elapsed" | "read_scan" => "read+scan: `read_file` from the connector streamed into the scanner".into(),
        "request_elapsed" | "claim_to_result" => "claim → result built, in the worker".into(),
        "scanner" => "scanner's own time (`scan_duration_in_microseconds`)".into(),
        other => format!("`{other}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
verify/0                time:   [374.47 ns 375.30 ns 376.26 ns]
                        thrpt:  [2.5346 MiB/s 2.5411 MiB/s 2.5468 MiB/s]
Found 3 outliers among 100 measurements (3.00%)
verify/1048576          time:   [612.10 µs 615.00 µs 618.20 µs]
                        thrpt:  [1.5797 GiB/s 1.5879 GiB/s 1.5954 GiB/s]
                 change:
                        time:   [-1.0% +0.2% +1.1%] (p = 0.70 > 0.05)
matches \"sub1 -tmp --exclude sub2\" x1050
                        time:   [12.100 us 12.200 us 12.300 us]
sign/small              time:   [1.0100 µs 1.0200 µs 1.0300 µs]
";

    #[test]
    fn parses_criterion_output() {
        let r = parse_criterion(SAMPLE);
        assert_eq!(r.len(), 4, "{r:?}");
        assert_eq!(r[0].name, "verify/0");
        assert!((r[0].time_ns[1] - 375.30).abs() < 1e-9);
        assert!((r[1].time_ns[1] - 615_000.0).abs() < 1e-6);
        let t = r[1].thrpt_bps.unwrap();
        assert!((t[1] - 1.5879 * 1024.0 * 1024.0 * 1024.0).abs() < 1.0);
        assert_eq!(r[2].name, "matches \"sub1 -tmp --exclude sub2\" x1050");
        assert!((r[2].time_ns[0] - 12_100.0).abs() < 1e-6);
        assert_eq!(r[3].name, "sign/small");
        assert!(r[3].thrpt_bps.is_none());
    }

    #[test]
    fn repeated_runs_are_judged_by_their_medians() {
        let dir = tempfile::tempdir().unwrap();
        let run = |cpu_s: f64, fps: f64| {
            serde_json::json!({"files": 10000, "size": 4096, "elapsed_s": 4.0, "files_per_s": fps,
                "mib_per_s": 9.0, "verified": true, "cpu_s": {"dsx_connect": cpu_s, "connector": 1.0, "cpus": 2}})
        };
        // CPU per file 300, 140, 200 µs: the median, 200, is judged against ≤ 150 µs.
        for (n, (cpu, fps)) in [(3.0, 2500.0), (1.4, 3000.0), (2.0, 2000.0)].into_iter().enumerate() {
            std::fs::write(dir.path().join(format!("pipeline-embedded.{}.json", n + 1)), run(cpu, fps).to_string())
                .unwrap();
        }
        for (n, (cpu, fps)) in [(5.0, 1000.0), (6.0, 1250.0), (4.0, 1200.0)].into_iter().enumerate() {
            std::fs::write(
                dir.path().join(format!("baseline-pipeline-embedded.{}.json", n + 1)),
                run(cpu, fps).to_string(),
            )
            .unwrap();
        }
        let scan = |cpu: f64| serde_json::json!({"concurrency": 32, "rps": 1000.0, "cpu_us_per_request": {"dsx-connect": cpu}});
        for (n, cpu) in [40.0, 30.0, 35.0].into_iter().enumerate() {
            std::fs::write(dir.path().join(format!("http-scan-request.{}.json", n + 1)), scan(cpu).to_string())
                .unwrap();
        }
        std::fs::write(dir.path().join("baseline-http-scan-request.1.json"), scan(70.0).to_string()).unwrap();
        for (n, (cpu, fps)) in [(3.0, 2400.0), (3.1, 2100.0), (2.9, 2300.0)].into_iter().enumerate() {
            std::fs::write(dir.path().join(format!("pipeline-embedded-tls.{}.json", n + 1)), run(cpu, fps).to_string())
                .unwrap();
        }
        let http = |rps: f64, p99: f64| {
            serde_json::json!({"concurrency": 32, "rps": rps, "error_count": 0, "errors": {},
                "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": p99, "p999": 7.0, "max": 9.0}})
        };
        // One slow minute (p99 6 ms) does not decide: the median p99 is 4 ms.
        for (n, (rps, p99)) in [(700.0, 6.0), (900.0, 4.0), (800.0, 3.0)].into_iter().enumerate() {
            std::fs::write(dir.path().join(format!("http-auth-on.{}.json", n + 1)), http(rps, p99).to_string())
                .unwrap();
        }
        for (n, rps) in [1000.0, 1200.0, 900.0].into_iter().enumerate() {
            std::fs::write(dir.path().join(format!("http-auth-off.{}.json", n + 1)), http(rps, 2.0).to_string())
                .unwrap();
        }
        let md = render(dir.path(), false, &[]);
        assert!(md.contains("| 4.000 ms, median of 3 runs: 6.000, 4.000, 3.000 | PASS |"), "{md}");
        // Median req/s 800 on against 1000 off.
        assert!(md.contains("| 0.80 ×, medians of the runs' req/s | MISS |"), "{md}");
        // The detail row is the auth-on run with the median p99 (900 req/s).
        assert!(md.contains("| `scan/auth_check`, auth on (signed) | 32 | 900 |"), "{md}");
        // HTTPS: median 2300 files/s against the plain median 2500 (-8 %).
        assert!(md.contains("| 2300 vs 2500 files/s (-8.0 %) | PASS |"), "{md}");
        assert!(
            md.contains("| 35.0 µs, median of 3 runs: 40, 30, 35 (baseline build 70.0 µs, 0.50 ×) | MISS |"),
            "{md}"
        );
        assert!(md.contains("| 200 µs, median of 3 runs (baseline build 500 µs, 0.40 ×) | MISS |"), "{md}");
        // files/s medians: 2500 now, 1200 before.
        assert!(md.contains("| 2500 vs 1200 files/s (2.08 ×) | PASS |"), "{md}");
        assert!(md.contains("| 2500 files/s | PASS |"), "{md}");
        assert!(md.contains("| embedded | 300, 140, 200 | 2500, 3000, 2000 |"), "{md}");
        // The detail row is the run with the median CPU per file (2000 files/s).
        assert!(md.contains("| embedded | 10000 × 4096 B | 4.00 s | **2000** |"), "{md}");
    }

    #[test]
    fn render_marks_targets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("criterion-verify.txt"), SAMPLE).unwrap();
        let http = |rps: f64, p99: f64| {
            serde_json::json!({"concurrency": 32, "rps": rps, "error_count": 0, "errors": {},
                "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": p99, "p999": 7.0, "max": 9.0}})
        };
        std::fs::write(dir.path().join("http-auth-on.json"), http(800.0, 4.0).to_string()).unwrap();
        std::fs::write(dir.path().join("http-auth-off.json"), http(1000.0, 3.0).to_string()).unwrap();
        let md = render(dir.path(), false, &[]);
        assert!(md.contains("| 4.000 ms | PASS |"), "{md}");
        assert!(md.contains("| 0.80 × | MISS |"), "{md}");
        assert!(md.contains("| 375.3 ns | PASS |"), "{md}");
        assert!(md.contains("| 1.70 GB/s | PASS |"), "{md}");
        assert!(md.contains("| — | not run |"), "{md}");
    }
}

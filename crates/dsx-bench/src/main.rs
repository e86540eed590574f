//! dsx-bench: the performance harness of dsx-connect (see docs/performance.md).

#![forbid(unsafe_code)]

mod http;
mod pipeline;
mod report;
mod stack;
mod stats;

use clap::{Parser, Subcommand};

/// API prefix of dsx-connect.
pub const PREFIX: &str = "/dsx-connect/api/v1";

/// Performance harness for dsx-connect: HTTP load on the connector API, end-to-end pipeline
/// and large-file runs with the real binaries, and the report `scripts/bench.sh` publishes.
#[derive(Parser)]
#[command(name = "dsx-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Closed-loop HTTP load on a running server (auth-check, scan-request, register).
    ///
    /// Setup enrolls `--connectors` connectors with the enrollment token and keeps their keys in
    /// memory only. Then `--concurrency` workers send requests back to back for `--warmup` plus
    /// `--duration`; requests started during the warm-up are not counted. Every request is signed
    /// when sent (fresh timestamp and nonce), so the signing cost is part of the latency.
    ///
    /// Server setup per scenario: `scan-request` should run against `dsx-connect serve --role api`
    /// so no worker drains the queue; `register` needs DSXCONNECT_AUTH__REGISTER_RATE_PER_MINUTE=0
    /// on the server, otherwise its 429 answers count as errors. `--no-auth` sends the same
    /// requests unsigned, for a server with DSXCONNECT_AUTH__ENABLED=false.
    ///
    /// Exits 1 when no request succeeded, 2 on a setup error (e.g. server unreachable).
    Http(http::HttpArgs),
    /// Full scan of generated files through the real server and connector; files/s, stage latencies.
    ///
    /// Writes the files into a temp dir, starts `dsx-connect serve --role all` (auth on with
    /// generated tokens, built-in scanner, embedded store or Redis) and `filesystem-connector`
    /// (auth on, item action `nothing`), triggers a full scan as the operator and polls the job
    /// until `completed`. Then checks that every file has exactly one result and that the
    /// verdicts match, and reports files/s and per-stage latency percentiles from the stored
    /// results. The binaries are taken from --bin-dir, else from this executable's directory.
    Pipeline(pipeline::PipelineArgs),
    /// One large file through the real stack: MiB/s and dsx-connect's RSS growth.
    ///
    /// Same stack as `pipeline` on the embedded store, one file of random bytes. Memory is
    /// dsx-connect's VmRSS before the scan and VmHWM (peak) at the end, from /proc/<pid>/status.
    LargeFile(pipeline::LargeFileArgs),
    /// Write docs/performance.md from the outputs of a bench run (used by scripts/bench.sh).
    ///
    /// Reads from --dir (missing files show as "not run"): criterion-verify.txt,
    /// criterion-matcher.txt, http-auth-on.json, http-auth-off.json, http-scan-request.json,
    /// http-register.json, pipeline-embedded.json, pipeline-redis.json, pipeline-embedded-tls.json,
    /// large-file.json.
    Report(report::ReportArgs),
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Http(args) => http::run(args).await,
            Command::Pipeline(args) => pipeline::pipeline(args).await,
            Command::LargeFile(args) => pipeline::large_file(args).await,
            Command::Report(args) => report::run(args),
        }
    });
    // Stop the runtime before exiting so spawned children are dropped (and stopped) first.
    drop(runtime);
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("dsx-bench: error: {err:#}");
            std::process::exit(2);
        }
    }
}

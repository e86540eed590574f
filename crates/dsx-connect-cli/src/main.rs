//! The `dsx-connect` binary: `serve`, `scanner serve`, the operator CLI (`admin`, `sign`) and
//! `quickstart`, which runs a filesystem connector in the same process.

#![forbid(unsafe_code)]

mod cli;
mod quickstart;

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dsx_connect::app::Role;
use dsx_connect::config::{parse_listen, Settings};

/// mimalloc instead of the system allocator: the request path allocates per request, and
/// glibc malloc took about a tenth of the server's CPU in the `scan/request` profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// dsx-connect: orchestrates malware scanning of file repositories through connectors.
#[derive(Parser)]
#[command(name = "dsx-connect", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server (configuration from DSXCONNECT_* environment variables).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:8586", value_parser = parse_listen, env = "DSXCONNECT_LISTEN")]
        listen: SocketAddr,
        /// `api` serves HTTP only, `worker` runs scan workers only (plus health probes), `all` both.
        #[arg(long, value_enum, default_value = "all", env = "DSXCONNECT_ROLE")]
        role: Role,
    },
    /// Operator commands over the operator API.
    Admin {
        /// dsx-connect base URL (with or without `/dsx-connect/api/v1`).
        #[arg(long, default_value = "http://127.0.0.1:8586", env = "DSXCONNECT_URL")]
        url: String,
        /// Operator token (`Authorization: Bearer`).
        #[arg(long, env = "DSXCONNECT_OPERATOR_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the server's JSON (for scripts) instead of tables.
        #[arg(long, global = true)]
        json: bool,
        /// Trust only this CA bundle (PEM) for an https `--url`.
        #[arg(long, env = "DSXCONNECT_CA_BUNDLE", global = true)]
        ca_bundle: Option<std::path::PathBuf>,
        /// Do not check the server's certificate (lab use only; prints a warning).
        #[arg(long, global = true)]
        insecure: bool,
        /// Client certificate (PEM) to present, with `--client-key`.
        #[arg(long, env = "DSXCONNECT_CLIENT_CERT", global = true, requires = "client_key")]
        client_cert: Option<std::path::PathBuf>,
        /// Client certificate's private key (PEM).
        #[arg(long, env = "DSXCONNECT_CLIENT_KEY", global = true, requires = "client_cert")]
        client_key: Option<std::path::PathBuf>,
        #[command(subcommand)]
        command: cli::AdminCommand,
    },
    /// Print a curl command signed with DSX-HMAC (the secret is read from a file).
    Sign {
        #[arg(long)]
        key_id: String,
        /// File holding the HMAC secret (first line).
        #[arg(long)]
        secret_file: std::path::PathBuf,
        /// HTTP method, e.g. POST.
        method: String,
        /// Full URL, e.g. http://127.0.0.1:8586/dsx-connect/api/v1/scan/auth_check
        url: String,
        /// Request body (JSON), if any.
        body: Option<String>,
    },
    /// The built-in scanner on the DSXA HTTP API (`POST /scan/binary/v2`).
    Scanner {
        #[command(subcommand)]
        command: ScannerCommand,
    },
    /// Everything on one machine, nothing to install: dsx-connect with auth on, the built-in
    /// scanner, a filesystem connector on a sample folder (benign + EICAR files), a full scan.
    Quickstart {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8586", value_parser = parse_listen)]
        listen: SocketAddr,
        /// Where the store, the connector's uuid and the sample folder live.
        #[arg(long, default_value = "./data/quickstart")]
        data_dir: std::path::PathBuf,
        /// Stop after the scan instead of serving until Ctrl-C.
        #[arg(long)]
        exit_after_scan: bool,
    },
}

#[derive(Subcommand)]
enum ScannerCommand {
    /// Serve the built-in engine (EICAR test file + SHA-256 blocklist).
    Serve {
        #[arg(long, default_value = "0.0.0.0:5000", value_parser = parse_listen)]
        listen: SocketAddr,
        /// SHA-256 blocklist, one hex digest per line.
        #[arg(long, env = "DSXCONNECT_SCANNER__BLOCKLIST_FILE")]
        blocklist_file: Option<std::path::PathBuf>,
        /// Token required in `AUTH_TOKEN`/`AUTH` headers.
        #[arg(long, env = "DSXCONNECT_SCANNER__AUTH_TOKEN", hide_env_values = true)]
        auth_token: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line, whatever RUST_BACKTRACE says: these are user errors (bad flags, a
            // refused token, an unreachable server), not bugs.
            eprintln!("error: {}", format!("{err:#}").replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if matches!(cli.command, Command::Quickstart { .. }) && std::env::var_os("DSXCONNECT_LOG_LEVEL").is_none() {
        // Keep the quickstart's terminal readable: warnings only, unless asked for more.
        std::env::set_var("DSXCONNECT_LOG_LEVEL", "warn");
    }
    dsx_service::init_logging("DSXCONNECT");
    match cli.command {
        Command::Serve { listen, role } => {
            let settings = Settings::from_env()?;
            let state = dsx_connect::app::build_state_for(settings, role)?;
            let listener =
                tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listen on {listen}"))?;
            dsx_connect::app::serve_role(state, listener, role, dsx_service::shutdown_signal()).await
        }
        Command::Scanner { command: ScannerCommand::Serve { listen, blocklist_file, auth_token } } => {
            let engine = match blocklist_file {
                Some(path) => dsx_scanner::BuiltinScanner::with_blocklist_file(&path)?,
                None => dsx_scanner::BuiltinScanner::new(),
            };
            let listener =
                tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listen on {listen}"))?;
            let limits = dsx_service::ServerLimits::from_env(dsx_service::http::DSXCONNECT_LIMITS)
                .map_err(anyhow::Error::msg)?;
            // Same TLS options as the server (DSXCONNECT_USE_TLS, DSXCONNECT_TLS_*).
            let tls = match dsx_service::tls::ServerTlsFiles::from_env(dsx_service::tls::DSXCONNECT_TLS)
                .map_err(anyhow::Error::msg)?
            {
                Some(files) => Some(dsx_service::ServerTls::load(&files).map_err(anyhow::Error::msg)?),
                None => None,
            };
            tracing::info!(listen = %listener.local_addr()?, tls = tls.is_some(), "built-in scanner serving the DSXA API");
            let engine = std::sync::Arc::new(engine);
            dsx_scanner::serve(listener, engine, auth_token, limits, tls, dsx_service::shutdown_signal()).await?;
            Ok(())
        }
        Command::Admin { url, token, json, ca_bundle, insecure, client_cert, client_key, command } => {
            if insecure {
                eprintln!("warning: --insecure: the server's certificate is not checked");
            }
            let tls = dsx_service::ClientTls { verify: !insecure, ca_bundle, identity: client_cert.zip(client_key) };
            cli::admin(cli::Operator { url, token, json, tls }, command).await
        }
        Command::Sign { key_id, secret_file, method, url, body } => {
            let secret =
                std::fs::read_to_string(&secret_file).with_context(|| format!("read {}", secret_file.display()))?;
            let secret = secret.lines().next().unwrap_or_default().trim();
            anyhow::ensure!(!secret.is_empty(), "{} is empty", secret_file.display());
            println!("{}", cli::signed_curl(&key_id, secret, &method, &url, body.as_deref())?);
            Ok(())
        }
        Command::Quickstart { listen, data_dir, exit_after_scan } => {
            quickstart::run(quickstart::QuickstartOptions { listen, data_dir, exit_after_scan }).await
        }
    }
}

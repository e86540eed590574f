use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dsx_connect::app::Role;
use dsx_connect::config::{parse_listen, Settings};

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
    /// The built-in scanner on the DSXA HTTP API (`POST /scan/binary/v2`).
    Scanner {
        #[command(subcommand)]
        command: ScannerCommand,
    },
    /// Start a local dsx-connect with auth on and freshly generated tokens (embedded store;
    /// nothing else to install). Prints the tokens once.
    Quickstart {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8586", value_parser = parse_listen)]
        listen: SocketAddr,
        /// Where the embedded store keeps its data.
        #[arg(long, default_value = "./data/quickstart")]
        data_dir: std::path::PathBuf,
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

fn random_token() -> String {
    use base64::Engine;
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn quickstart(listen: SocketAddr, data_dir: std::path::PathBuf) -> anyhow::Result<()> {
    let enrollment = random_token();
    let operator = random_token();
    let data = data_dir.display().to_string();
    let vars = [
        ("DSXCONNECT_AUTH__ENABLED", "true"),
        ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN", enrollment.as_str()),
        ("DSXCONNECT_AUTH__ADMIN_TOKENS", operator.as_str()),
        ("DSXCONNECT_DATA_DIR", data.as_str()),
    ];
    // Quickstart settings win over the environment, except for the rest of DSXCONNECT_*.
    let settings = Settings::from_lookup(|k| {
        vars.iter().find(|(name, _)| *name == k).map(|(_, v)| v.to_string()).or_else(|| match k {
            "DSXCONNECT_REDIS_URL" => None,
            _ => std::env::var(k).ok(),
        })
    })?;
    let state = dsx_connect::build_state(settings)?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listen on {listen}"))?;
    let base = format!("http://{listen}");
    println!(
        "\ndsx-connect quickstart (auth enabled, embedded store at {data})\n\
         \n  API:               {base}/dsx-connect/api/v1\
         \n  enrollment token:  {enrollment}   (DSXCONNECT_ENROLLMENT_TOKEN for connectors)\
         \n  operator token:    {operator}   (Authorization: Bearer … for the operator API)\
         \n\nThese tokens are shown once and not stored. Press Ctrl-C to stop.\n"
    );
    dsx_connect::serve(state, listener, dsx_service::shutdown_signal()).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    dsx_service::init_logging("DSXCONNECT");
    match cli.command {
        Command::Serve { listen, role } => {
            let settings = Settings::from_env()?;
            let state = dsx_connect::build_state(settings)?;
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
            tracing::info!(listen = %listener.local_addr()?, "built-in scanner serving the DSXA API");
            tokio::select! {
                served = dsx_scanner::serve(listener, std::sync::Arc::new(engine), auth_token) => served.map_err(anyhow::Error::from),
                _ = dsx_service::shutdown_signal() => Ok(()),
            }
        }
        Command::Quickstart { listen, data_dir } => quickstart(listen, data_dir).await,
    }
}

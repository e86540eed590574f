use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
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

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("DSXCONNECT_LOG_LEVEL")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("DSXCONNECT_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
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
    dsx_connect::serve(state, listener, shutdown_signal()).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve { listen } => {
            let settings = Settings::from_env()?;
            let state = dsx_connect::build_state(settings)?;
            let listener =
                tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listen on {listen}"))?;
            dsx_connect::serve(state, listener, shutdown_signal()).await
        }
        Command::Quickstart { listen, data_dir } => quickstart(listen, data_dir).await,
    }
}

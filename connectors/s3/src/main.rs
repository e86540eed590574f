#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use dsx_connector::{ConnectorDefaults, ConnectorSettings};
use dsx_model::ItemAction;
use s3_connector::{S3Repo, S3Settings};

/// mimalloc, as dsx-connect uses: every request allocates, and the system allocator cost
/// about a tenth of the CPU on the request path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULTS: ConnectorDefaults =
    ConnectorDefaults { name: "aws-s3-connector", display_name: "AWS S3", item_action: ItemAction::Move, port: 8600 };

/// dsx-connect connector for an S3 bucket (configuration from DSXCONNECTOR_* and the AWS
/// credential chain).
#[derive(Parser)]
#[command(name = "s3-connector", version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8600", env = "DSXCONNECTOR_LISTEN")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    dsx_service::init_logging("DSXCONNECTOR");
    let settings = ConnectorSettings::from_env(&DEFAULTS)?;
    let s3 = S3Settings::from_env(&settings.asset, &settings.item_action_move_metainfo)?;
    let repo = S3Repo::new(s3).await?;
    dsx_connector::run(settings, Arc::new(repo), cli.listen).await
}

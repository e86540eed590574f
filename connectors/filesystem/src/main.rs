#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use dsx_connector::{ConnectorDefaults, ConnectorSettings};
use dsx_model::ItemAction;
use filesystem_connector::FilesystemRepo;

/// mimalloc, as dsx-connect uses: every request allocates, and the system allocator cost
/// about a tenth of the CPU on the request path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULTS: ConnectorDefaults = ConnectorDefaults {
    name: "filesystem-connector",
    display_name: "Filesystem",
    item_action: ItemAction::Move,
    port: 8620,
};

/// dsx-connect connector for a folder (configuration from DSXCONNECTOR_* variables).
#[derive(Parser)]
#[command(name = "filesystem-connector", version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8620", env = "DSXCONNECTOR_LISTEN")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    dsx_service::init_logging("DSXCONNECTOR");
    let settings = ConnectorSettings::from_env(&DEFAULTS)?;
    let repo = FilesystemRepo::new(&settings.asset, &settings.item_action_move_metainfo)?;
    dsx_connector::run(settings, Arc::new(repo), cli.listen).await
}

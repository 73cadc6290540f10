//! `coffer-node`: the store node daemon.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use coffer_node::config::NodeConfig;
use tracing_subscriber::EnvFilter;

/// Serves Coffer clients and operators over gRPC with TLS 1.3.
///
/// Stops cleanly on SIGTERM or SIGINT; a crash loses nothing committed.
#[derive(Parser)]
#[command(name = "coffer-node", version)]
struct Cli {
    /// The node's TOML configuration.
    #[arg(long, short, env = "COFFER_NODE_CONFIG")]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = NodeConfig::load(&cli.config)?;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log))
        .with_context(|| format!("bad log level `{}` in {}", config.log, cli.config.display()))?;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(coffer_node::server::run(config))
}

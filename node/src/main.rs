//! `coffer-node`: the store node daemon.

use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use coffer_proto::config::NodeConfig;
use tracing_subscriber::EnvFilter;

/// Serves Coffer clients and operators over gRPC with TLS 1.3.
///
/// Stops cleanly on SIGTERM or SIGINT; a crash loses nothing committed.
#[derive(Parser)]
#[command(name = "coffer-node", version)]
struct Cli {
    /// The node's TOML configuration (needed to serve or to rebuild).
    #[arg(long, short, env = "COFFER_NODE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Rebuilds the store's index from its pack files, with the node
    /// stopped: the repair for a store the node refuses to open (lost,
    /// rolled-back or replaced index). Removes nothing; account records
    /// come back from the group when the node starts.
    RebuildIndex,
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff): `coffer-node man | man -l -`.
    Man,
}

fn main() -> anyhow::Result<()> {
    coffer_proto::pipe::end_quietly_on_closed_pipe();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Completions { shell }) => {
            clap_complete::generate(shell, &mut Cli::command(), "coffer-node", &mut std::io::stdout());
            return Ok(());
        }
        Some(Command::Man) => {
            return Ok(clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?);
        }
        _ => {}
    }
    let path = cli.config.context("give the node's configuration: --config FILE or COFFER_NODE_CONFIG")?;
    let config = NodeConfig::load(&path)?;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log))
        .with_context(|| format!("bad log level `{}` in {}", config.log, path.display()))?;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Some(Command::RebuildIndex) = cli.command {
        return rebuild_index(&config);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(coffer_node::run(config))
}

fn rebuild_index(config: &NodeConfig) -> anyhow::Result<()> {
    let lost = |id| coffer_store::AccountRecord {
        id,
        name: format!("recovered-{id}"),
        key_fingerprint: String::new(),
        limits: coffer_store::Limits::UNLIMITED,
        frozen: false,
        created_ns: 0,
    };
    let reports = coffer_store::Store::rebuild_index(&config.data, &config.discs, lost)
        .with_context(|| format!("rebuilding the index of {}", config.data.display()))?;
    for r in &reports {
        println!(
            "{}: {} objects, {} repairs, {} problems",
            r.account,
            r.objects_checked,
            r.repairs.len(),
            r.problems.len()
        );
        for line in r.repairs.iter().chain(&r.problems) {
            println!("  {line}");
        }
    }
    println!("index rebuilt from the packs of {} accounts", reports.len());
    Ok(())
}

//! `coffer-admin`: certificates, accounts, checks and reports for Coffer's
//! store nodes (Box Backup's bbstoreaccounts and bbstored-certs).
//!
//! - `ca`: the certificate authority (offline, on a directory).
//! - `quickstart`: a ready loopback setup of nodes, admin and client.
//! - `account`, `usage`, `housekeep`, `status`, `raid`, `cluster`: talk to a
//!   node's admin service over TLS with an admin certificate. Account
//!   changes go through the server group from whichever node is named.
//! - `account`: creating, showing and changing accounts (`coffer-admin account ...`).
//! - `migrate`: moving an account between nodes, run on its source node.
//! - `group`: account groups, whose accounts share limits.
//! - `nodes`: the first configured node that answers, and asking every
//!   member of the group for group-wide `usage` and `status`.
//! - `findings`: `report`, what in the whole group needs an operator.

mod account;
mod ca;
mod config;
mod findings;
mod group;
mod migrate;
mod nodes;
mod quickstart;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{CommandFactory, Parser, Subcommand};
use coffer_proto::StoreUrl;
use coffer_proto::tls::{Role, TlsFiles};
use coffer_proto::wire::{self, admin_client::AdminClient};
use tonic::transport::Channel;

use crate::account::{AccountCommand, account_command};
use crate::ca::CertificateAuthority;
use crate::config::AdminConfig;
use crate::findings::ReportArgs;
use crate::group::GroupCommand;
use crate::quickstart::Quickstart;

/// Manage Coffer store nodes: certificates, accounts, checks and usage.
///
/// Exit status: 0 on success, 1 when a check finds problems, 2 on any error.
#[derive(Parser)]
#[command(name = "coffer-admin", version)]
struct Cli {
    /// A TOML configuration file (node addresses and [tls]); flags override it.
    #[arg(long, env = "COFFER_ADMIN_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The node to talk to: coffer://HOST:PORT (default: the first of the
    /// config's `node` and `nodes` that answers).
    #[arg(long, global = true)]
    node: Option<String>,
    /// The admin certificate.
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// The private key of --cert.
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    /// The certificate authority that signed the node's certificate.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The certificate authority.
    Ca {
        /// The CA's directory (holds ca.crt and ca.key; certificates are written here).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Write a ready-to-run loopback setup: CA, nodes, an admin and a client.
    Quickstart {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        nodes: u16,
        #[arg(long, default_value_t = 7101)]
        base_port: u16,
        /// The loopback address the nodes listen on: 127.0.0.1, or ::1 for IPv6.
        #[arg(long, default_value = "127.0.0.1")]
        address: std::net::IpAddr,
        /// The client account to create.
        #[arg(long, default_value = "client")]
        account: String,
        /// Disc directories per node: 1, or 3 for RAID (DIR/nodeK/disc1..3).
        #[arg(long, default_value_t = 1)]
        discs: u8,
        /// Raft log entries between snapshots of the account database.
        #[arg(long, default_value_t = 1000)]
        snapshot_every: u64,
        #[arg(long)]
        json: bool,
    },
    /// The node's RAID pack files.
    Raid {
        #[command(subcommand)]
        command: RaidCommand,
    },
    /// Accounts on the node.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Current, old-version and deleted bytes per account, on every node of
    /// the group (marking those that did not answer).
    Usage {
        /// One account (all when left out).
        account: Option<String>,
        /// The accounts of one account group, and the group's total.
        #[arg(long, conflicts_with = "account")]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Account groups: accounts that share soft and hard limits.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// What in the whole group needs attention: nodes down or lagging,
    /// lost discs, syncs owed, replicas that disagree, stale writers,
    /// silent or failing clients, soft limits passed. Exit status 1 when
    /// anything does (for cron and monitoring).
    Report(ReportArgs),
    /// Run housekeeping now: retention (on accounts this node is primary
    /// of), soft-limit deletions and collection of stale uploads.
    Housekeep {
        account: Option<String>,
        /// Only list what the accounts' retention policies would keep and forget.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete a node's copy of an account the group no longer places there
    /// (left by a move), once a replica holds everything in it.
    Purge {
        account: String,
        /// The node whose copy goes (`--node` names the node to talk to).
        #[arg(long)]
        from: String,
        #[arg(long)]
        json: bool,
    },
    /// Fast-sync an account with each of its other replicas now, from this node.
    Sync {
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// Move an account to another node: add it, fast-sync, move the
    /// primary there, remove the source. Run again to resume a cut-short move.
    Migrate {
        account: String,
        /// The node that takes the account.
        #[arg(long)]
        to: String,
        /// The node that gives it up (default: the account's primary).
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Each node's name, version, connection and sync counts, for every
    /// node of the group (marking those that did not answer).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The server group: its members and their Raft state.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff): `coffer-admin man | man -l -`.
    Man,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Start a new group with the node (--node) as its first member.
    Init {
        #[arg(long)]
        json: bool,
    },
    /// Let the node called NAME join the group (what `join` does first).
    Allow {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Have the node (--node) join the group that the node at ADDRESS
    /// (HOST:PORT) belongs to: that node is asked to let it in, then it
    /// joins.
    Join {
        address: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a node, by name or id, from the group.
    Leave {
        #[arg(value_name = "NODE")]
        member: String,
        #[arg(long)]
        json: bool,
    },
    /// Leader, term, and each member's state, log index and lag.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RaidCommand {
    /// Read every stripe of every pack file and report the damaged ones.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Regenerate missing or damaged stripes from the others (after a disc is replaced).
    Rebuild {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the certificate authority.
    Init,
    /// Issue a node certificate (NAME.crt, NAME.key).
    IssueNode {
        name: String,
        /// Host names and addresses clients use to reach the node.
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
    },
    /// Issue a client certificate for ACCOUNT (ACCOUNT.crt, ACCOUNT.key). It
    /// names the account's id, which is looked up on the node given by
    /// --node/--config unless --account-id gives it.
    IssueClient {
        account: String,
        #[arg(long)]
        account_id: Option<u64>,
    },
    /// Issue an operator certificate (NAME.crt, NAME.key).
    IssueAdmin { name: String },
    /// Revoke the certificate issued as NAME: it joins the revocation list
    /// (ca.crl), which nodes reread on SIGHUP and refuse at the handshake.
    Revoke { name: String },
}

fn main() -> ExitCode {
    coffer_proto::pipe::end_quietly_on_closed_pipe();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) if coffer_proto::pipe::is_closed_pipe(e.as_ref()) => coffer_proto::pipe::die_of_sigpipe(),
        Err(e) => {
            eprintln!("coffer-admin: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Ca { dir, command: CaCommand::IssueClient { account, account_id: None } } => {
            let id = account_id_on_node(&cli, account).with_context(|| {
                format!("looking up account `{account}` (create it first, or give --account-id)")
            })?;
            let command = CaCommand::IssueClient { account: account.clone(), account_id: Some(id) };
            return ca_command(dir, &command);
        }
        Command::Ca { dir, command } => return ca_command(dir, command),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "coffer-admin", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Quickstart { dir, nodes, base_port, address, account, discs, snapshot_every, json } => {
            let written = Quickstart {
                dir: dir.clone(),
                nodes: *nodes,
                base_port: *base_port,
                address: *address,
                account: account.clone(),
                discs: *discs,
                snapshot_every: *snapshot_every,
            }
            .run()?;
            if *json {
                println!("{}", serde_json::to_string(&written)?);
            } else {
                print!("{}", quickstart::describe(&written, dir));
            }
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let (mut admin, tls) = connect(&cli).await?;
        match cli.command {
            Command::Migrate { account, to, from, json } => {
                let reply = migrate::migrate(&mut admin, &tls, &account, &to, from.as_deref()).await?;
                report::migrate(&reply, json)?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Purge { account, from, json } => {
                let reply = migrate::purge(&mut admin, &tls, &account, &from).await?;
                report::purge(&account, &from, &reply, json)?;
                Ok(ExitCode::SUCCESS)
            }
            command => node_command(&mut admin, &tls, command).await,
        }
    })
}

/// The id the group gave account `name`, asked of the node in --node/--config.
fn account_id_on_node(cli: &Cli, name: &str) -> Result<u64> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let (mut admin, _) = connect(cli).await?;
        let query = wire::AccountQuery { name: name.to_string(), ..Default::default() };
        let reply = admin.accounts(query).await.map_err(|s| anyhow!("{}", s.message()))?;
        let accounts = reply.into_inner().accounts;
        accounts.first().map(|a| a.id).ok_or_else(|| anyhow!("no account `{name}`"))
    })
}

fn ca_command(dir: &std::path::Path, command: &CaCommand) -> Result<ExitCode> {
    let (role, hosts, file) = match command {
        CaCommand::Init => {
            let ca = CertificateAuthority::init(dir)?;
            println!("Created certificate authority {}", ca.cert_path().display());
            return Ok(ExitCode::SUCCESS);
        }
        CaCommand::IssueNode { name, hosts } => (Role::Node(name.clone()), hosts.clone(), name),
        CaCommand::IssueClient { account, .. } => (Role::Client(account.clone()), Vec::new(), account),
        CaCommand::IssueAdmin { name } => (Role::Admin(name.clone()), Vec::new(), name),
        CaCommand::Revoke { name } => {
            let ca = CertificateAuthority::open(dir)?;
            let serial = ca.revoke(name)?;
            println!(
                "Revoked {name} (serial {serial}); {} lists it. Send SIGHUP to every node (or restart it) \
                 so that it rereads the list.",
                ca.crl_path().display()
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
    coffer_proto::names::validate_account_name(file).map_err(|e| anyhow!(e))?;
    let account = match command {
        CaCommand::IssueClient { account_id, .. } => *account_id,
        _ => None,
    };
    let issued = CertificateAuthority::open(dir)?.issue(&role, account, &hosts, dir, file)?;
    println!("Issued {role}: {} and {}", issued.cert.display(), issued.key.display());
    Ok(ExitCode::SUCCESS)
}

/// Connects to the node named by `--node`, or else to the first of the
/// config file's `node` and `nodes` that answers; returns the client and
/// the TLS files it used.
async fn connect(cli: &Cli) -> Result<(AdminClient<Channel>, TlsFiles)> {
    let config = match &cli.config {
        Some(path) => AdminConfig::load(path)?,
        None => AdminConfig::default(),
    };
    let urls: Vec<String> = match &cli.node {
        Some(node) => vec![node.clone()],
        None => config.node.iter().chain(&config.nodes).cloned().collect(),
    };
    if urls.is_empty() {
        bail!("no node given: use --node coffer://HOST:PORT, or `node` and `nodes` in --config");
    }
    let tls = TlsFiles::from_flags(&cli.cert, &cli.key, &cli.ca)?
        .or(config.tls)
        .ok_or_else(|| anyhow!("no admin certificate: give --cert, --key and --ca, or [tls] in --config"))?;
    Ok((nodes::first_answering(&urls, &tls).await?, tls))
}

async fn node_command(
    admin: &mut AdminClient<Channel>,
    tls: &TlsFiles,
    command: Command,
) -> Result<ExitCode> {
    let status = |s: tonic::Status| anyhow!("{}", s.message());
    match command {
        Command::Account { command } => return account_command(admin, command).await,
        Command::Usage { account, group, json } => {
            let query = wire::AccountQuery { name: account.unwrap_or_default(), request_id: String::new() };
            let mut answers = nodes::ask_every_node(admin, tls, |mut node| {
                let query = query.clone();
                async move { node.usage(query).await.map(tonic::Response::into_inner) }
            })
            .await?;
            let Some(group) = group else { return report::usage(&answers, json).map(|()| ExitCode::SUCCESS) };
            let request = wire::GroupRequest { name: group, ..Default::default() };
            let groups = admin.groups(request).await.map_err(status)?.into_inner().groups;
            for answer in &mut answers {
                if let Ok(usage) = &mut answer.reply {
                    usage.accounts.retain(|a| groups.iter().any(|g| g.accounts.contains(&a.account)));
                }
            }
            report::usage(&answers, json)?;
            if !json {
                println!();
                group::print(&groups, false)?;
            }
        }
        Command::Group { command } => group::group_command(admin, command).await?,
        Command::Report(args) => {
            let attention = findings::report(admin, tls, &args).await?;
            return Ok(if attention { ExitCode::from(1) } else { ExitCode::SUCCESS });
        }
        Command::Housekeep { account, dry_run, json } => {
            let r = admin
                .housekeep(wire::HousekeepRequest { name: account.unwrap_or_default(), dry_run })
                .await
                .map_err(status)?;
            report::housekeep(&r.into_inner(), dry_run, json)?;
        }
        Command::Raid { command } => {
            let (reply, json) = match command {
                RaidCommand::Check { json } => (admin.raid_check(wire::RaidRequest {}).await, json),
                RaidCommand::Rebuild { json } => (admin.raid_rebuild(wire::RaidRequest {}).await, json),
            };
            let clean = report::raid(&reply.map_err(status)?.into_inner(), json)?;
            return Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        Command::Migrate { .. } | Command::Purge { .. } => unreachable!("handled in run"),
        Command::Sync { account, json } => {
            let r = admin.sync(wire::AccountQuery { name: account, request_id: String::new() });
            let clean = report::sync(&r.await.map_err(status)?.into_inner(), json)?;
            return Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        Command::Status { json } => {
            let answers = nodes::ask_every_node(admin, tls, |mut node| async move {
                node.status(wire::StatusRequest {}).await.map(tonic::Response::into_inner)
            })
            .await?;
            report::status(&answers, json)?;
        }
        Command::Cluster { command } => {
            let (reply, json) = match command {
                ClusterCommand::Init { json } => {
                    (admin.cluster_init(wire::ClusterRequest::default()).await, json)
                }
                ClusterCommand::Allow { name, json } => (
                    admin.cluster_allow(wire::ClusterRequest { address: String::new(), node: name }).await,
                    json,
                ),
                ClusterCommand::Join { address, json } => {
                    let name = admin.status(wire::StatusRequest {}).await.map_err(status)?.into_inner().node;
                    let (host, port) = StoreUrl::node(&address)?;
                    let mut member = nodes::admin_client(&host, port, tls).await?;
                    let allow = wire::ClusterRequest { address: String::new(), node: name };
                    member.cluster_allow(allow).await.map_err(status)?;
                    (admin.cluster_join(wire::ClusterRequest { address, node: String::new() }).await, json)
                }
                ClusterCommand::Leave { member, json } => (
                    admin.cluster_leave(wire::ClusterRequest { address: String::new(), node: member }).await,
                    json,
                ),
                ClusterCommand::Status { json } => {
                    (admin.cluster_status(wire::ClusterRequest::default()).await, json)
                }
            };
            report::cluster(&reply.map_err(status)?.into_inner(), json)?;
        }
        Command::Ca { .. } | Command::Quickstart { .. } | Command::Completions { .. } | Command::Man => {
            unreachable!("handled without a node")
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `coffer-admin group ...`: account groups, whose accounts share soft and
//! hard limits and a silence threshold.

use anyhow::{Result, anyhow};
use clap::Subcommand;
use coffer_client::backup::human_bytes;
use coffer_proto::id::new_request_id;
use coffer_proto::wire::{self, admin_client::AdminClient};
use serde_json::json;
use tonic::transport::Channel;

use crate::account::{limit, set_silent_after};
use crate::report::{limit_json, limit_text};

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Create a group with limits over the sum of its accounts ("100GiB" or "unlimited").
    Create {
        name: String,
        /// Above this, `report` and the node's alerts flag the group (default: the hard limit).
        #[arg(long)]
        soft: Option<String>,
        /// Uploads that would take the group's accounts past this are refused.
        #[arg(long, default_value = "unlimited")]
        hard: String,
    },
    /// Change a group's limits.
    SetLimit {
        name: String,
        #[arg(long)]
        soft: String,
        #[arg(long)]
        hard: String,
    },
    /// After how long without a backup its accounts are reported silent
    /// ("36h"; "default" for the nodes' `[alerts] silent_after`).
    SetSilentAfter { name: String, after: String },
    /// Show one group, or all: limits, accounts and their usage.
    Info {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a group that has no accounts left.
    Delete { name: String },
}

pub async fn group_command(admin: &mut AdminClient<Channel>, command: GroupCommand) -> Result<()> {
    let status = |s: tonic::Status| anyhow!("{}", s.message());
    let request = |name: String, soft: &str, hard: &str| -> Result<wire::GroupRequest> {
        Ok(wire::GroupRequest {
            name,
            soft_limit: limit(soft)?,
            hard_limit: limit(hard)?,
            request_id: new_request_id(),
        })
    };
    let group = match command {
        GroupCommand::Create { name, soft, hard } => {
            let soft = soft.unwrap_or_else(|| hard.clone());
            admin.create_group(request(name, &soft, &hard)?).await.map_err(status)?.into_inner()
        }
        GroupCommand::SetLimit { name, soft, hard } => {
            admin.set_group_limits(request(name, &soft, &hard)?).await.map_err(status)?.into_inner()
        }
        GroupCommand::SetSilentAfter { name, after } => {
            set_silent_after(admin, &name, true, &after).await?;
            let request = wire::GroupRequest { name, ..Default::default() };
            let list = admin.groups(request).await.map_err(status)?.into_inner();
            return print(&list.groups, false);
        }
        GroupCommand::Delete { name } => {
            let request =
                wire::GroupRequest { name: name.clone(), request_id: new_request_id(), ..Default::default() };
            admin.delete_group(request).await.map_err(status)?;
            println!("Deleted account group {name}.");
            return Ok(());
        }
        GroupCommand::Info { name, json } => {
            let request = wire::GroupRequest { name: name.unwrap_or_default(), ..Default::default() };
            let list = admin.groups(request).await.map_err(status)?.into_inner();
            return print(&list.groups, json);
        }
    };
    print(&[group], false)
}

pub fn print(groups: &[wire::AccountGroup], as_json: bool) -> Result<()> {
    if as_json {
        let list: Vec<_> = groups
            .iter()
            .map(|g| {
                json!({
                    "name": g.name, "soft_limit": limit_json(g.soft_limit), "hard_limit": limit_json(g.hard_limit),
                    "silent_after_secs": g.silent_after_secs, "accounts": g.accounts, "used_bytes": g.used_bytes,
                })
            })
            .collect();
        println!("{}", serde_json::to_string(&list)?);
        return Ok(());
    }
    println!("{:<20} {:>10} {:>10} {:>10} {:>12}  ACCOUNTS", "GROUP", "USED", "SOFT", "HARD", "SILENT AFTER");
    for g in groups {
        let silent = match g.silent_after_secs {
            0 => "default".to_string(),
            s => humantime::format_duration(std::time::Duration::from_secs(s)).to_string(),
        };
        println!(
            "{:<20} {:>10} {:>10} {:>10} {:>12}  {}",
            g.name,
            human_bytes(g.used_bytes),
            limit_text(g.soft_limit),
            limit_text(g.hard_limit),
            silent,
            g.accounts.join(", ")
        );
    }
    Ok(())
}

//! `coffer-admin account ...`: creating, showing and changing accounts
//! through whichever node answers (changes reach the group's leader).

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use coffer_proto::id::new_request_id;
use coffer_proto::wire::{self, admin_client::AdminClient};
use tonic::transport::Channel;

use crate::report;

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Create an account with limits such as "10GiB" (or "unlimited").
    Create {
        name: String,
        /// Above this, housekeeping deletes the oldest backup sets (default: the hard limit).
        #[arg(long)]
        soft: Option<String>,
        /// Uploads past this are refused.
        #[arg(long, default_value = "unlimited")]
        hard: String,
        /// The account group it belongs to (see `coffer-admin group`).
        #[arg(long)]
        group: Option<String>,
    },
    /// Show one account, or all.
    Info {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change an account's limits.
    SetLimit {
        name: String,
        #[arg(long)]
        soft: String,
        #[arg(long)]
        hard: String,
    },
    /// Set which backup sets housekeeping keeps on the account's primary
    /// (`--keep-daily 7 --keep-weekly 4 ...`); no rules keeps every set.
    SetRetention {
        name: String,
        #[command(flatten)]
        keep: coffer_client::keep::KeepArgs,
    },
    /// Move an account into an account group, or out of any (no GROUP).
    SetGroup { name: String, group: Option<String> },
    /// After how long without a backup `report` calls the account silent
    /// ("36h"; "default" for its group's or the nodes' threshold).
    SetSilentAfter { name: String, after: String },
    /// Refuse writes to an account; reads go on.
    Freeze { name: String },
    /// Allow writes again.
    Thaw { name: String },
    /// Delete an account and everything it stored.
    Delete {
        name: String,
        /// Required: deleting cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Verify every object's CRC and every reference; --fix rebuilds the index from the packs.
    Check {
        name: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        fix: bool,
        #[arg(long)]
        json: bool,
    },
}

/// A duration from the command line ("36h", "2d"), or "default" (0).
fn duration_secs(text: &str) -> Result<u64> {
    if text.eq_ignore_ascii_case("default") {
        return Ok(0);
    }
    let duration =
        humantime::parse_duration(text).with_context(|| format!("`{text}` is not a duration such as 36h"))?;
    match duration.as_secs() {
        0 => bail!("a threshold under a second would call every account silent"),
        secs => Ok(secs),
    }
}

/// Sets the silence threshold of an account, or of a group (`group`),
/// from a duration such as "36h" or "default".
pub async fn set_silent_after(
    admin: &mut AdminClient<Channel>,
    name: &str,
    group: bool,
    after: &str,
) -> Result<()> {
    let request = wire::SilentAfterRequest {
        name: name.to_string(),
        group,
        secs: duration_secs(after)?,
        request_id: new_request_id(),
    };
    admin.set_silent_after(request).await.map_err(|s| anyhow!("{}", s.message()))?;
    Ok(())
}

/// A byte limit from the command line: "10GiB", "500MB", "unlimited".
pub fn limit(text: &str) -> Result<u64> {
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(0);
    }
    match parse_size::parse_size(text).with_context(|| format!("`{text}` is not a size such as 10GiB"))? {
        0 => bail!("a limit of 0 bytes would refuse every upload; say `unlimited` for no limit"),
        n => Ok(n),
    }
}

pub async fn account_command(admin: &mut AdminClient<Channel>, command: AccountCommand) -> Result<ExitCode> {
    let status = |s: tonic::Status| anyhow!("{}", s.message());
    match command {
        AccountCommand::Create { name, soft, hard, group } => {
            let soft = soft.as_deref().unwrap_or(&hard);
            let request = wire::CreateAccountRequest {
                name,
                soft_limit: limit(soft)?,
                hard_limit: limit(&hard)?,
                request_id: new_request_id(),
                group: group.unwrap_or_default(),
            };
            let account = admin.create_account(request).await.map_err(status)?.into_inner();
            println!("Created account {} (id {}).", account.name, account.id);
            println!(
                "Issue its certificate with: coffer-admin ca issue-client {} --account-id {}",
                account.name, account.id
            );
        }
        AccountCommand::Info { name, json } => {
            let list = admin
                .accounts(wire::AccountQuery { name: name.unwrap_or_default(), request_id: String::new() })
                .await
                .map_err(status)?;
            report::accounts(&list.into_inner().accounts, json)?;
        }
        AccountCommand::SetLimit { name, soft, hard } => {
            let request = wire::SetLimitsRequest {
                name,
                soft_limit: limit(&soft)?,
                hard_limit: limit(&hard)?,
                request_id: new_request_id(),
            };
            let account = admin.set_limits(request).await.map_err(status)?.into_inner();
            report::accounts(&[account], false)?;
        }
        AccountCommand::SetRetention { name, keep } => {
            let request = wire::SetRetentionRequest {
                name,
                retention: Some(keep.policy()?.to_wire()),
                request_id: new_request_id(),
            };
            let account = admin.set_retention(request).await.map_err(status)?.into_inner();
            report::accounts(&[account], false)?;
        }
        AccountCommand::SetGroup { name, group } => {
            let request = wire::SetAccountGroupRequest {
                name,
                group: group.unwrap_or_default(),
                request_id: new_request_id(),
            };
            let account = admin.set_account_group(request).await.map_err(status)?.into_inner();
            report::accounts(&[account], false)?;
        }
        AccountCommand::SetSilentAfter { name, after } => {
            set_silent_after(admin, &name, false, &after).await?;
            let query = wire::AccountQuery { name, request_id: String::new() };
            report::accounts(&admin.accounts(query).await.map_err(status)?.into_inner().accounts, false)?;
        }
        AccountCommand::Freeze { name } => {
            admin
                .set_frozen(wire::SetFrozenRequest {
                    name: name.clone(),
                    frozen: true,
                    request_id: new_request_id(),
                })
                .await
                .map_err(status)?;
            println!("Account {name} is frozen: clients can restore but not back up.");
        }
        AccountCommand::Thaw { name } => {
            admin
                .set_frozen(wire::SetFrozenRequest {
                    name: name.clone(),
                    frozen: false,
                    request_id: new_request_id(),
                })
                .await
                .map_err(status)?;
            println!("Account {name} accepts backups again.");
        }
        AccountCommand::Delete { name, yes } => {
            if !yes {
                bail!("deleting account {name} destroys all its backups; add --yes to confirm");
            }
            let r = admin
                .delete_account(wire::AccountQuery { name: name.clone(), request_id: new_request_id() })
                .await
                .map_err(status)?;
            let r = r.into_inner();
            println!("Deleted account {name}: {} objects, {} bytes of packs.", r.objects, r.bytes);
        }
        AccountCommand::Check { name, all, fix, json } => {
            let request = wire::CheckRequest { name: name.unwrap_or_default(), all, fix };
            let reply = admin.check(request).await.map_err(status)?.into_inner();
            let clean = report::check(&reply, json)?;
            return Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
    }
    Ok(ExitCode::SUCCESS)
}

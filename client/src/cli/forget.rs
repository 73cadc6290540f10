//! `coffer forget`: one backup set by id, or every set a retention policy
//! does not keep (`--keep-last 3 --keep-daily 7 ...`, the store engine's
//! `retention` rules), for a local store or the account's own sets on a
//! node. `--dry-run` lists what would go and forgets nothing.

use anyhow::{Context, Result, bail};
use clap::Args;
use coffer_client::Repository;
use coffer_client::backup::human_bytes;
use coffer_client::browse::Catalog;
use coffer_client::timefmt;
use coffer_proto::ObjectId;
use coffer_store::ForgetReport;
use coffer_store::retention::{Decision, RetentionPolicy};
use serde_json::json;

/// The retention rules, as restic and borg users write them.
#[derive(Args, Clone, Default)]
pub struct Keep {
    /// Keep the N newest sets.
    #[arg(long, default_value_t = 0)]
    keep_last: u32,
    /// Keep the newest set of each of the N most recent hours that have one.
    #[arg(long, default_value_t = 0)]
    keep_hourly: u32,
    /// ... of days (UTC).
    #[arg(long, default_value_t = 0)]
    keep_daily: u32,
    /// ... of ISO weeks.
    #[arg(long, default_value_t = 0)]
    keep_weekly: u32,
    #[arg(long, default_value_t = 0)]
    keep_monthly: u32,
    #[arg(long, default_value_t = 0)]
    keep_yearly: u32,
    /// Keep every set this close to the newest ("30d", "12h").
    #[arg(long)]
    keep_within: Option<String>,
}

impl Keep {
    fn policy(&self) -> Result<RetentionPolicy> {
        let keep_within = match &self.keep_within {
            Some(text) => Some(
                humantime::parse_duration(text)
                    .with_context(|| format!("--keep-within {text}: not a duration"))?,
            ),
            None => None,
        };
        Ok(RetentionPolicy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within,
        })
    }
}

pub fn forget(repo: &Repository, set_id: Option<&str>, keep: &Keep, dry_run: bool, json: bool) -> Result<()> {
    let policy = keep.policy()?;
    let _lock = repo.cache.lock_writer("coffer forget")?;
    let catalog = Catalog::load(repo)?;
    match (set_id, policy.is_empty()) {
        (Some(_), false) => bail!("give a set id or --keep-* rules, not both"),
        (None, true) => bail!("nothing to forget: give a set id, or --keep-* rules"),
        (Some(prefix), true) => {
            let set = catalog.find_set(prefix)?;
            if dry_run {
                println!(
                    "Would forget backup set {} ({}).",
                    set.id.short(),
                    timefmt::format(set.header.time_ns)
                );
                return Ok(());
            }
            let report = forget_one(repo, &set.id)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "Forgot backup set {}: freed {} objects ({}), rewrote {} and deleted {} pack files.",
                    set.id.short(),
                    report.objects_freed,
                    human_bytes(report.bytes_freed),
                    report.packs_rewritten,
                    report.packs_deleted
                );
            }
            Ok(())
        }
        (None, false) => by_policy(repo, &catalog, &policy, dry_run, json),
    }
}

fn forget_one(repo: &Repository, id: &ObjectId) -> Result<ForgetReport> {
    let before = repo.backend.position()?;
    let report = repo.backend.forget(id)?;
    repo.cache.record_change(before, repo.backend.position()?, None, Some(*id));
    Ok(report)
}

fn by_policy(
    repo: &Repository,
    catalog: &Catalog,
    policy: &RetentionPolicy,
    dry_run: bool,
    json: bool,
) -> Result<()> {
    let sets: Vec<(ObjectId, i64)> = catalog.sets.iter().map(|s| (s.id, s.header.time_ns)).collect();
    let decisions = policy.apply(&sets);
    let (mut objects, mut bytes) = (0, 0);
    // Oldest first, so a kill part way leaves the newest sets.
    for d in decisions.iter().rev().filter(|d| !d.keep && !dry_run) {
        let report = forget_one(repo, &d.id)?;
        (objects, bytes) = (objects + report.objects_freed, bytes + report.bytes_freed);
    }
    let forgotten = decisions.iter().filter(|d| !d.keep).count();
    if json {
        let sets: Vec<_> = decisions.iter().map(describe).collect();
        let summary = json!({ "dry_run": dry_run, "sets": sets, "forgotten": forgotten, "objects_freed": objects, "bytes_freed": bytes });
        println!("{summary}");
        return Ok(());
    }
    for d in &decisions {
        let what = if d.keep { format!("keep    ({})", d.reasons.join(", ")) } else { "forget".into() };
        println!("{}  {}  {what}", d.id.short(), timefmt::format(d.time_ns));
    }
    let verb = if dry_run { "Would forget" } else { "Forgot" };
    println!(
        "{verb} {forgotten} of {} sets; freed {objects} objects ({}).",
        decisions.len(),
        human_bytes(bytes)
    );
    Ok(())
}

fn describe(d: &Decision) -> serde_json::Value {
    json!({
        "id": d.id.to_hex(),
        "time": timefmt::format(d.time_ns),
        "time_ns": d.time_ns,
        "keep": d.keep,
        "reasons": d.reasons,
    })
}

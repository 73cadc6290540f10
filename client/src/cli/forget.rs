//! `coffer forget`: one backup set by id, or every set a retention policy
//! does not keep (`--keep-last 3 --keep-daily 7 ...`, the rules of
//! `coffer_proto::retention` that nodes apply too), for a local store or the
//! account's own sets on a node. `--dry-run` lists what would go and forgets
//! nothing.

use anyhow::{Result, bail};
use coffer_client::Repository;
use coffer_client::backup::human_bytes;
use coffer_client::browse::Catalog;
use coffer_client::keep::KeepArgs;
use coffer_client::timefmt;
use coffer_proto::ObjectId;
use coffer_proto::retention::{Decision, RetentionPolicy};
use coffer_store::ForgetReport;
use serde_json::json;

pub fn forget(
    repo: &Repository,
    set_id: Option<&str>,
    keep: &KeepArgs,
    dry_run: bool,
    json: bool,
) -> Result<()> {
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

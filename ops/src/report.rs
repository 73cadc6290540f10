//! Printing what the node answers: tables for people, JSON for scripts.

use anyhow::Result;
use coffer_client::backup::human_bytes;
use coffer_client::timefmt;
use coffer_proto::retention::RetentionPolicy;
use coffer_proto::wire;
use serde_json::json;

use crate::nodes::Answer;

pub fn limit_text(bytes: u64) -> String {
    if bytes == u64::MAX { "unlimited".into() } else { human_bytes(bytes) }
}

pub fn limit_json(bytes: u64) -> serde_json::Value {
    if bytes == u64::MAX { serde_json::Value::Null } else { json!(bytes) }
}

pub fn accounts(accounts: &[wire::Account], as_json: bool) -> Result<()> {
    if as_json {
        let list: Vec<_> = accounts
            .iter()
            .map(|a| {
                let u = a.usage.unwrap_or_default();
                json!({
                    "id": a.id, "name": a.name, "soft_limit": limit_json(a.soft_limit),
                    "hard_limit": limit_json(a.hard_limit), "frozen": a.frozen,
                    "key_fingerprint": a.key_fingerprint, "marker": a.marker, "created_ns": a.created_ns,
                    "live_bytes": u.live_bytes, "pack_bytes": u.pack_bytes, "objects": u.objects,
                    "packs": u.packs, "sets": u.sets, "replicas": a.replicas, "primary": a.primary,
                    "held_here": a.held_here, "sets_digest": a.sets_digest,
                    "retention": retention_json(a), "group": a.group,
                    "hard_limit_now": limit_json(a.hard_limit_now), "silent_after_secs": a.silent_after_secs,
                    "activity": activity_json(a),
                })
            })
            .collect();
        println!("{}", serde_json::to_string(&list)?);
        return Ok(());
    }
    println!(
        "{:>4}  {:<20} {:>10} {:>10} {:>10} {:>5} {:>7}  {:<12} REPLICAS (PRIMARY FIRST)",
        "ID", "NAME", "USED", "SOFT", "HARD", "SETS", "MARKER", "STATE"
    );
    for a in accounts {
        let u = a.usage.unwrap_or_default();
        let state = match (a.frozen, a.key_fingerprint.is_empty()) {
            (true, _) => "frozen",
            (false, true) => "no keys yet",
            (false, false) => "active",
        };
        let mut replicas = vec![a.primary.clone()];
        replicas.extend(a.replicas.iter().filter(|r| **r != a.primary).cloned());
        println!(
            "{:>4}  {:<20} {:>10} {:>10} {:>10} {:>5} {:>7}  {state:<12} {}",
            a.id,
            a.name,
            human_bytes(u.live_bytes),
            limit_text(a.soft_limit),
            limit_text(a.hard_limit),
            u.sets,
            a.marker,
            replicas.join(", ")
        );
    }
    for a in accounts.iter().filter(|a| !retention(a).is_empty()) {
        println!("{}: retention {}", a.name, retention(a));
    }
    for a in accounts.iter().filter(|a| !a.group.is_empty()) {
        println!("{}: account group {} (may hold {} now)", a.name, a.group, limit_text(a.hard_limit_now));
    }
    for a in accounts {
        println!("{}: {}", a.name, activity_text(a.activity.as_ref().cloned().unwrap_or_default()));
    }
    Ok(())
}

fn when(ns: i64) -> String {
    if ns == 0 { "never".into() } else { timefmt::format(ns) }
}

fn activity_text(c: wire::ClientActivity) -> String {
    let mut text = format!("last backup {}", when(c.commit_ns));
    if c.login_ns != 0 {
        text += &format!(
            "; last login {} from {} (coffer {}) at {}",
            when(c.login_ns),
            c.host,
            c.client_version,
            c.node
        );
    }
    if c.error_ns > c.commit_ns {
        text += &format!("; FAILED {}: {}", when(c.error_ns), c.error);
    }
    text
}

fn activity_json(a: &wire::Account) -> serde_json::Value {
    let c = a.activity.clone().unwrap_or_default();
    json!({
        "login_ns": c.login_ns, "client_version": c.client_version, "host": c.host, "node": c.node,
        "commit_ns": c.commit_ns, "error": c.error, "error_ns": c.error_ns, "live_bytes": c.live_bytes,
    })
}

/// A node that did not answer, as JSON.
fn unanswered(node: &str, error: &str) -> serde_json::Value {
    json!({ "node": node, "answered": false, "error": error })
}

pub fn usage(answers: &[Answer<wire::UsageReport>], as_json: bool) -> Result<()> {
    if as_json {
        let list: Vec<_> = answers
            .iter()
            .map(|a| match &a.reply {
                Ok(report) => {
                    let accounts: Vec<_> = report.accounts.iter().map(|a| json!({
                    "account": a.account, "current_bytes": a.current_bytes, "old_bytes": a.old_bytes,
                    "deleted_bytes": a.deleted_bytes, "sets": a.sets,
                    "soft_limit": limit_json(a.soft_limit), "hard_limit": limit_json(a.hard_limit),
                })).collect();
                    let discs: Vec<_> =
                        report.discs.iter().map(|d| json!({"path": d.path, "bytes": d.bytes})).collect();
                    json!({ "node": a.node, "answered": true, "accounts": accounts, "discs": discs })
                }
                Err(e) => unanswered(&a.node, e),
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    println!(
        "{:<12} {:<20} {:>10} {:>10} {:>10} {:>5} {:>10} {:>10}",
        "NODE", "ACCOUNT", "CURRENT", "OLD", "DELETED", "SETS", "SOFT", "HARD"
    );
    for answer in answers {
        let report = match &answer.reply {
            Ok(report) => report,
            Err(e) => {
                println!("{:<12} did not answer: {e}", answer.node);
                continue;
            }
        };
        for a in &report.accounts {
            println!(
                "{:<12} {:<20} {:>10} {:>10} {:>10} {:>5} {:>10} {:>10}",
                answer.node,
                a.account,
                human_bytes(a.current_bytes),
                human_bytes(a.old_bytes),
                human_bytes(a.deleted_bytes),
                a.sets,
                limit_text(a.soft_limit),
                limit_text(a.hard_limit)
            );
        }
    }
    println!();
    for answer in answers {
        for d in answer.reply.iter().flat_map(|r| &r.discs) {
            println!("{:<12} disc {:<50} {:>10}", answer.node, d.path, human_bytes(d.bytes));
        }
    }
    Ok(())
}

/// Prints a RAID check or rebuild; true when nothing is left damaged.
pub fn raid(r: &wire::RaidReport, as_json: bool) -> Result<bool> {
    let clean = r.damage.is_empty() && r.unrecoverable.is_empty();
    if as_json {
        let damage: Vec<_> = r
            .damage
            .iter()
            .map(|d| json!({"file": d.file, "stripe": d.stripe, "problem": d.problem}))
            .collect();
        let value = json!({
            "files": r.files, "discs": r.discs, "damage": damage,
            "stripes_rebuilt": r.stripes_rebuilt, "unrecoverable": r.unrecoverable,
        });
        println!("{value}");
        return Ok(clean);
    }
    for d in &r.damage {
        match d.stripe {
            Some(s) => println!("{}: stripe {s}: {}", d.file, d.problem),
            None => println!("{}: UNRECOVERABLE: {}", d.file, d.problem),
        }
    }
    if r.stripes_rebuilt > 0 {
        println!("rebuilt {} stripes", r.stripes_rebuilt);
    }
    println!("{} files on {} disc(s): {} damaged stripes", r.files, r.discs, r.damage.len());
    Ok(clean)
}

/// Prints a check report; true when no account has problems.
pub fn check(reply: &wire::CheckReply, as_json: bool) -> Result<bool> {
    let clean = reply.accounts.iter().all(|a| a.problems.is_empty());
    if as_json {
        let list: Vec<_> = reply
            .accounts
            .iter()
            .map(|a| {
                json!({
                    "account": a.account, "objects_checked": a.objects_checked,
                    "bytes_checked": a.bytes_checked, "problems": a.problems, "repairs": a.repairs,
                })
            })
            .collect();
        println!("{}", serde_json::to_string(&list)?);
        return Ok(clean);
    }
    for a in &reply.accounts {
        for r in &a.repairs {
            println!("{}: repaired: {r}", a.account);
        }
        for p in &a.problems {
            println!("{}: PROBLEM: {p}", a.account);
        }
        println!(
            "{}: checked {} objects ({}): {} problems, {} repairs",
            a.account,
            a.objects_checked,
            human_bytes(a.bytes_checked),
            a.problems.len(),
            a.repairs.len()
        );
    }
    Ok(clean)
}

/// An account's retention policy as the node sent it (an invalid one reads as none).
fn retention(a: &wire::Account) -> RetentionPolicy {
    a.retention.as_ref().and_then(|r| RetentionPolicy::from_wire(r).ok()).unwrap_or_default()
}

fn retention_json(a: &wire::Account) -> serde_json::Value {
    let r = retention(a);
    json!({
        "keep_last": r.keep_last, "keep_hourly": r.keep_hourly, "keep_daily": r.keep_daily,
        "keep_weekly": r.keep_weekly, "keep_monthly": r.keep_monthly, "keep_yearly": r.keep_yearly,
        "keep_within_secs": r.keep_within.map(|d| d.as_secs()),
    })
}

pub fn housekeep(reply: &wire::HousekeepReply, dry_run: bool, as_json: bool) -> Result<()> {
    if as_json {
        let decisions: Vec<_> = reply
            .decisions
            .iter()
            .map(|d| {
                json!({
                    "account": d.account, "id": hex::encode(&d.id), "time": timefmt::format(d.time_ns),
                    "time_ns": d.time_ns, "keep": d.keep, "reasons": d.reasons,
                })
            })
            .collect();
        let value = json!({
            "sets_expired": reply.sets_expired, "sets_forgotten": reply.sets_forgotten,
            "objects_freed": reply.objects_freed, "bytes_freed": reply.bytes_freed,
            "skipped": reply.skipped, "dry_run": dry_run, "decisions": decisions,
        });
        println!("{value}");
        return Ok(());
    }
    if dry_run {
        for d in &reply.decisions {
            let what = if d.keep { format!("keep    ({})", d.reasons.join(", ")) } else { "forget".into() };
            let id = hex::encode(&d.id);
            println!("{:<20} {}  {}  {what}", d.account, &id[..id.len().min(16)], timefmt::format(d.time_ns));
        }
        let going = reply.decisions.iter().filter(|d| !d.keep).count();
        match reply.decisions.len() {
            0 => println!("No account here has a retention policy: nothing would be forgotten."),
            sets => println!("Would forget {going} of {sets} sets (dry run: nothing changed)."),
        }
        return Ok(());
    }
    println!(
        "Forgot {} sets by retention and {} over soft limits; freed {} objects ({}).",
        reply.sets_expired,
        reply.sets_forgotten,
        reply.objects_freed,
        human_bytes(reply.bytes_freed)
    );
    for s in &reply.skipped {
        println!("skipped {s}");
    }
    Ok(())
}

pub fn status(answers: &[Answer<wire::NodeStatus>], as_json: bool) -> Result<()> {
    if as_json {
        let list: Vec<_> = answers.iter().map(|a| match &a.reply {
            Ok(s) => json!({
                "node": s.node, "answered": true, "version": s.version, "connections": s.connections,
                "handshakes_failed": s.handshakes_failed, "accounts": s.accounts, "started_ns": s.started_ns,
                "degraded_reads": s.degraded_reads,
                "sync": {
                    "syncs": s.syncs, "in_sync": s.syncs_in_sync, "failures": s.sync_failures,
                    "round_trips": s.sync_round_trips, "sets_copied": s.sets_synced,
                    "bytes_copied": s.bytes_synced, "owed": s.syncs_owed,
                },
            }),
            Err(e) => unanswered(&a.node, e),
        }).collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    for (i, answer) in answers.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let s = match &answer.reply {
            Ok(s) => s,
            Err(e) => {
                println!("node {} did not answer: {e}", answer.node);
                continue;
            }
        };
        println!("node {} (coffer {})", s.node, s.version);
        println!("accounts           {}", s.accounts);
        println!("connections        {}", s.connections);
        println!("refused handshakes {}", s.handshakes_failed);
        println!("degraded reads     {}", s.degraded_reads);
        println!(
            "fast syncs         {} ({} already in sync, {} failed), {} round trips",
            s.syncs, s.syncs_in_sync, s.sync_failures, s.sync_round_trips
        );
        println!("synced             {} sets, {}", s.sets_synced, human_bytes(s.bytes_synced));
        println!("syncs owed         {}", s.syncs_owed);
    }
    Ok(())
}

/// Prints each replica's sync; false when any failed.
pub fn migrate(reply: &wire::MigrateReply, as_json: bool) -> Result<()> {
    if as_json {
        let syncs: Vec<_> = reply.syncs.iter().map(sync_json).collect();
        let value = json!({
            "account": reply.account, "from": reply.from, "to": reply.to,
            "replicas": reply.replicas, "primary": reply.primary, "syncs": syncs,
            "purged_bytes": reply.purged_bytes,
            "purge_error": (!reply.purge_error.is_empty()).then_some(&reply.purge_error),
        });
        println!("{value}");
        return Ok(());
    }
    let copied: u64 = reply.syncs.iter().map(|s| s.bytes_copied).sum();
    println!(
        "Moved account {} from {} to {} in {} fast syncs ({} copied); it is now on {}, primary {}.",
        reply.account,
        reply.from,
        reply.to,
        reply.syncs.len(),
        human_bytes(copied),
        reply.replicas.join(", "),
        reply.primary
    );
    match reply.purge_error.as_str() {
        "" => println!("Purged the copy on {}: freed {}.", reply.from, human_bytes(reply.purged_bytes)),
        why => println!(
            "The copy on {} was kept ({why}); run `coffer-admin purge {} --from {}` later.",
            reply.from, reply.account, reply.from
        ),
    }
    Ok(())
}

pub fn purge(account: &str, node: &str, reply: &wire::PurgeReply, as_json: bool) -> Result<()> {
    if as_json {
        let syncs: Vec<_> = reply.syncs.iter().map(sync_json).collect();
        println!("{}", json!({ "account": account, "node": node, "bytes": reply.bytes, "syncs": syncs }));
        return Ok(());
    }
    println!(
        "Purged account {account} from {node}: freed {} after {} fast syncs.",
        human_bytes(reply.bytes),
        reply.syncs.len()
    );
    Ok(())
}

fn sync_json(p: &wire::SyncPeerReport) -> serde_json::Value {
    json!({
        "peer": p.peer, "error": (!p.error.is_empty()).then_some(&p.error),
        "round_trips": p.round_trips, "in_sync": p.in_sync, "sets_fetched": p.sets_fetched,
        "sets_sent": p.sets_sent, "tombstones_applied": p.tombstones_applied,
        "objects_copied": p.objects_copied, "bytes_copied": p.bytes_copied, "marker": p.marker,
    })
}

pub fn sync(reply: &wire::SyncReply, as_json: bool) -> Result<bool> {
    let clean = reply.peers.iter().all(|p| p.error.is_empty());
    if as_json {
        let peers: Vec<_> = reply.peers.iter().map(sync_json).collect();
        println!("{}", json!({ "peers": peers }));
        return Ok(clean);
    }
    if reply.peers.is_empty() {
        println!("The account has no other replica.");
    }
    for p in &reply.peers {
        if !p.error.is_empty() {
            println!("{}: failed: {}", p.peer, p.error);
        } else if p.in_sync {
            println!("{}: already in sync at marker {} (1 round trip)", p.peer, p.marker);
        } else {
            println!(
                "{}: fetched {} sets, sent {}, {} tombstones; {} objects ({}) in {} round trips; marker {}",
                p.peer,
                p.sets_fetched,
                p.sets_sent,
                p.tombstones_applied,
                p.objects_copied,
                human_bytes(p.bytes_copied),
                p.round_trips,
                p.marker
            );
        }
    }
    Ok(clean)
}

pub fn cluster(s: &wire::GroupStatus, as_json: bool) -> Result<()> {
    if as_json {
        let nodes: Vec<_> = s
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "id": n.id, "name": n.name, "address": n.address, "site": n.site, "state": n.state,
                    "log_index": n.log_index, "lag": n.lag,
                })
            })
            .collect();
        let value = json!({
            "reporter": s.reporter, "leader": s.leader, "leader_name": s.leader_name, "term": s.term,
            "last_log_index": s.last_log_index, "last_applied": s.last_applied,
            "snapshot_index": s.snapshot_index, "purged_index": s.purged_index, "nodes": nodes,
        });
        println!("{value}");
        return Ok(());
    }
    match s.leader {
        Some(id) => println!("leader {} (id {id}), term {}", s.leader_name, s.term),
        None => println!("no leader known to {} (term {}): the group has no quorum", s.reporter, s.term),
    }
    println!(
        "log: last {}, applied {}, snapshot {}, purged {}",
        s.last_log_index, s.last_applied, s.snapshot_index, s.purged_index
    );
    println!(
        "{:<18} {:<12} {:<22} {:<10} {:<9} {:>9} {:>6}",
        "ID", "NAME", "ADDRESS", "SITE", "STATE", "LOG", "LAG"
    );
    for n in &s.nodes {
        let log = n.log_index.map_or("-".to_string(), |i| i.to_string());
        println!(
            "{:<18} {:<12} {:<22} {:<10} {:<9} {:>9} {:>6}",
            n.id, n.name, n.address, n.site, n.state, log, n.lag
        );
    }
    Ok(())
}

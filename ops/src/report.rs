//! Printing what the node answers: tables for people, JSON for scripts.

use anyhow::Result;
use coffer_client::backup::human_bytes;
use coffer_proto::wire;
use serde_json::json;

fn limit(bytes: u64) -> String {
    if bytes == u64::MAX { "unlimited".into() } else { human_bytes(bytes) }
}

fn limit_json(bytes: u64) -> serde_json::Value {
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
                    "held_here": a.held_here,
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
            limit(a.soft_limit),
            limit(a.hard_limit),
            u.sets,
            a.marker,
            replicas.join(", ")
        );
    }
    Ok(())
}

pub fn usage(report: &wire::UsageReport, as_json: bool) -> Result<()> {
    if as_json {
        let list: Vec<_> = report
            .accounts
            .iter()
            .map(|a| {
                json!({
                    "account": a.account, "current_bytes": a.current_bytes, "old_bytes": a.old_bytes,
                    "deleted_bytes": a.deleted_bytes, "sets": a.sets,
                    "soft_limit": limit_json(a.soft_limit), "hard_limit": limit_json(a.hard_limit),
                })
            })
            .collect();
        let discs: Vec<_> = report.discs.iter().map(|d| json!({"path": d.path, "bytes": d.bytes})).collect();
        println!("{}", json!({"accounts": list, "discs": discs}));
        return Ok(());
    }
    println!(
        "{:<20} {:>10} {:>10} {:>10} {:>5} {:>10} {:>10}",
        "ACCOUNT", "CURRENT", "OLD", "DELETED", "SETS", "SOFT", "HARD"
    );
    for a in &report.accounts {
        println!(
            "{:<20} {:>10} {:>10} {:>10} {:>5} {:>10} {:>10}",
            a.account,
            human_bytes(a.current_bytes),
            human_bytes(a.old_bytes),
            human_bytes(a.deleted_bytes),
            a.sets,
            limit(a.soft_limit),
            limit(a.hard_limit)
        );
    }
    println!();
    for d in &report.discs {
        println!("disc {:<50} {:>10}", d.path, human_bytes(d.bytes));
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

pub fn housekeep(reply: &wire::HousekeepReply, as_json: bool) -> Result<()> {
    if as_json {
        let value = json!({
            "sets_forgotten": reply.sets_forgotten, "objects_freed": reply.objects_freed,
            "bytes_freed": reply.bytes_freed, "skipped": reply.skipped,
        });
        println!("{value}");
        return Ok(());
    }
    println!(
        "Forgot {} sets over soft limits; freed {} objects ({}).",
        reply.sets_forgotten,
        reply.objects_freed,
        human_bytes(reply.bytes_freed)
    );
    for s in &reply.skipped {
        println!("skipped {s}");
    }
    Ok(())
}

pub fn status(s: &wire::NodeStatus, as_json: bool) -> Result<()> {
    if as_json {
        let value = json!({
            "node": s.node, "version": s.version, "connections": s.connections,
            "handshakes_failed": s.handshakes_failed, "accounts": s.accounts, "started_ns": s.started_ns,
            "degraded_reads": s.degraded_reads,
        });
        println!("{value}");
        return Ok(());
    }
    println!("node {} (coffer {})", s.node, s.version);
    println!("accounts           {}", s.accounts);
    println!("connections        {}", s.connections);
    println!("refused handshakes {}", s.handshakes_failed);
    println!("degraded reads     {}", s.degraded_reads);
    Ok(())
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

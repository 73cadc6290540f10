//! `coffer-admin report`: what in the whole group needs an operator, in
//! one pass over every member — nodes down or lagging, lost discs and
//! degraded reads, syncs owed too long, replicas that disagree, stale
//! writers, silent clients, clients reporting failures, accounts and
//! groups over their soft limits. Meant for cron and monitoring: exit
//! status 1 when anything needs attention.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Args;
use coffer_client::backup::human_bytes;
use coffer_client::timefmt;
use coffer_proto::clock::now_ns;
use coffer_proto::tls::TlsFiles;
use coffer_proto::wire::{self, admin_client::AdminClient};
use serde::Serialize;
use tonic::transport::Channel;

use crate::nodes::{self, Answer};

/// Log entries a member may be behind the leader before it is lagging.
const LAGGING_ENTRIES: u64 = 100;

#[derive(Args)]
pub struct ReportArgs {
    /// A sync owed, or replicas that disagree, for longer than this need attention.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub out_of_step: Duration,
    /// A client holding an account's writer without a request for this long.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub stale_writer: Duration,
    #[arg(long)]
    pub json: bool,
}

/// One thing the report noticed.
#[derive(Debug, Serialize)]
pub struct Finding {
    pub kind: &'static str,
    pub subject: String,
    pub detail: String,
    /// Since when (ns since the epoch), when known.
    pub since_ns: Option<i64>,
    /// Whether it needs an operator (the rest is for information).
    pub attention: bool,
}

struct Findings {
    list: Vec<Finding>,
    now: i64,
}

impl Findings {
    fn add(
        &mut self,
        kind: &'static str,
        subject: &str,
        detail: String,
        since_ns: Option<i64>,
        attention: bool,
    ) {
        self.list.push(Finding { kind, subject: subject.to_string(), detail, since_ns, attention });
    }

    fn older_than(&self, since_ns: i64, limit: Duration) -> bool {
        since_ns != 0 && self.now - since_ns > limit.as_nanos() as i64
    }
}

/// Asks every member and prints the report; true when something needs attention.
pub async fn report(admin: &mut AdminClient<Channel>, tls: &TlsFiles, args: &ReportArgs) -> Result<bool> {
    let status = |s: tonic::Status| anyhow!("{}", s.message());
    let cluster = admin.cluster_status(wire::ClusterRequest::default()).await.map_err(status)?.into_inner();
    let statuses = nodes::ask_every_node(admin, tls, |mut node| async move {
        node.status(wire::StatusRequest {}).await.map(tonic::Response::into_inner)
    })
    .await?;
    let lists = nodes::ask_every_node(admin, tls, |mut node| async move {
        let all = wire::AccountQuery::default();
        node.accounts(all).await.map(|r| r.into_inner().accounts)
    })
    .await?;
    let groups = admin.groups(wire::GroupRequest::default()).await.map_err(status)?.into_inner().groups;
    let mut found = Findings { list: Vec::new(), now: now_ns() };
    members(&mut found, &cluster, &statuses);
    nodes_own(&mut found, &statuses, args);
    let accounts = lists.iter().find_map(|a| a.reply.as_ref().ok()).cloned().unwrap_or_default();
    clients(&mut found, &accounts, &groups);
    replicas(&mut found, &lists, &statuses, args);
    print(&found.list, &statuses, accounts.len(), args.json)?;
    Ok(found.list.iter().any(|f| f.attention))
}

/// Members down, lagging, or without a leader.
fn members(found: &mut Findings, cluster: &wire::GroupStatus, statuses: &[Answer<wire::NodeStatus>]) {
    if cluster.leader.is_none() && !cluster.nodes.is_empty() {
        found.add(
            "no-leader",
            &cluster.reporter,
            "the group has no leader: account changes are refused".into(),
            None,
            true,
        );
    }
    for answer in statuses {
        if let Err(e) = &answer.reply {
            found.add("node-down", &answer.node, format!("did not answer: {e}"), None, true);
        }
    }
    for m in cluster.nodes.iter().filter(|m| Some(m.id) != cluster.leader) {
        if m.log_index.is_none() || m.lag > LAGGING_ENTRIES {
            let detail = match m.log_index {
                None => "the leader has not reached it".to_string(),
                Some(_) => format!("{} log entries behind the leader", m.lag),
            };
            found.add("node-lagging", &m.name, detail, None, true);
        }
    }
}

/// Each node's discs, syncs owed and writers.
fn nodes_own(found: &mut Findings, statuses: &[Answer<wire::NodeStatus>], args: &ReportArgs) {
    for answer in statuses {
        let Ok(s) = &answer.reply else { continue };
        for dir in &s.discs_missing {
            let detail = format!(
                "disc {dir} has lost its label (gone); reads use parity: replace it, then `raid rebuild`"
            );
            found.add("disc-lost", &s.node, detail, None, true);
        }
        if s.degraded_reads > 0 && s.discs_missing.is_empty() {
            let detail =
                format!("{} reads rebuilt from parity since it started: run `raid check`", s.degraded_reads);
            found.add("degraded-reads", &s.node, detail, None, true);
        }
        for lag in &s.sync_lag {
            let late = found.older_than(lag.oldest_ns, args.out_of_step);
            let detail = format!("owes {} account(s) a fast sync to {}", lag.accounts, lag.peer);
            found.add("sync-owed", &s.node, detail, Some(lag.oldest_ns).filter(|t| *t != 0), late);
        }
        for w in s.writers.iter().filter(|w| w.idle_secs > args.stale_writer.as_secs()) {
            let detail = format!(
                "a client has held account {}'s writer without a request for {}s",
                w.account, w.idle_secs
            );
            found.add("stale-writer", &s.node, detail, None, true);
        }
    }
}

/// Silent clients, failures, and soft limits of accounts and groups.
fn clients(found: &mut Findings, accounts: &[wire::Account], groups: &[wire::AccountGroup]) {
    for a in accounts {
        let c = a.activity.clone().unwrap_or_default();
        let last = c.commit_ns.max(a.created_ns);
        if found.older_than(last, Duration::from_secs(a.silent_after_secs)) {
            let threshold = humantime::format_duration(Duration::from_secs(a.silent_after_secs));
            let detail = match c.commit_ns {
                0 => format!("has not backed up since it was created, {threshold} ago or more"),
                _ => format!("no backup for longer than {threshold}"),
            };
            found.add("silent", &a.name, detail, Some(last), true);
        }
        if c.error_ns > c.commit_ns && !c.error.is_empty() {
            let detail = format!("client on {} failed: {}", c.host, c.error);
            found.add("client-error", &a.name, detail, Some(c.error_ns), true);
        }
        if c.live_bytes > a.soft_limit {
            let detail =
                format!("holds {}, soft limit {}", human_bytes(c.live_bytes), human_bytes(a.soft_limit));
            found.add("over-soft-limit", &a.name, detail, None, true);
        }
    }
    for g in groups.iter().filter(|g| g.used_bytes > g.soft_limit) {
        let detail = format!(
            "its accounts hold {}, soft limit {}",
            human_bytes(g.used_bytes),
            human_bytes(g.soft_limit)
        );
        found.add("group-over-soft-limit", &g.name, detail, None, true);
    }
}

/// Accounts whose replicas hold different sets, and since when a sync of
/// them has been owed.
fn replicas(
    found: &mut Findings,
    lists: &[Answer<Vec<wire::Account>>],
    statuses: &[Answer<wire::NodeStatus>],
    args: &ReportArgs,
) {
    let mut held: BTreeMap<&str, Vec<(&str, u64, &str)>> = BTreeMap::new();
    for answer in lists {
        for a in answer.reply.iter().flatten().filter(|a| a.held_here) {
            held.entry(&a.name).or_default().push((&answer.node, a.marker, &a.sets_digest));
        }
    }
    let mut owed_since: BTreeMap<&str, i64> = BTreeMap::new();
    for o in statuses.iter().filter_map(|s| s.reply.as_ref().ok()).flat_map(|s| &s.owed) {
        let since = owed_since.entry(&o.account).or_insert(o.since_ns);
        *since = (*since).min(o.since_ns);
    }
    for (account, replicas) in held {
        if replicas.iter().all(|r| (r.1, r.2) == (replicas[0].1, replicas[0].2)) {
            continue;
        }
        let markers: Vec<String> =
            replicas.iter().map(|(node, marker, _)| format!("{node} at {marker}")).collect();
        let since = owed_since.get(account).copied().filter(|t| *t != 0);
        let late = since.is_none_or(|t| found.older_than(t, args.out_of_step));
        found.add(
            "replicas-differ",
            account,
            format!("replicas disagree: {}", markers.join(", ")),
            since,
            late,
        );
    }
}

fn print(
    list: &[Finding],
    statuses: &[Answer<wire::NodeStatus>],
    accounts: usize,
    as_json: bool,
) -> Result<()> {
    let attention = list.iter().filter(|f| f.attention).count();
    if as_json {
        let nodes: Vec<_> = statuses
            .iter()
            .map(|a| serde_json::json!({ "node": a.node, "answered": a.reply.is_ok(), "error": a.reply.as_ref().err() }))
            .collect();
        let value = serde_json::json!({ "attention": attention > 0, "findings": list, "nodes": nodes, "accounts": accounts });
        println!("{value}");
        return Ok(());
    }
    for f in list {
        let since = f.since_ns.map_or_else(String::new, |t| format!(" (since {})", timefmt::format(t)));
        let mark = if f.attention { "!" } else { " " };
        println!("{mark} {:<22} {:<20} {}{since}", f.kind, f.subject, f.detail);
    }
    match attention {
        0 => println!("All is well: {} node(s), {accounts} account(s).", statuses.len()),
        n => println!("{n} finding(s) need attention."),
    }
    Ok(())
}

//! Alerts: when the node calls for the operator. Each alert is logged and
//! given to the `[alerts] notify` program (event name as its argument, JSON
//! on its standard input), at most once per `repeat` for the same event and
//! subject.
//!
//! Every node watches its own discs and the syncs it owes; the group's
//! leader alone watches the accounts and the members, so that one silent
//! client makes one alert, not one per node.
//!
//! Events: `disc-lost`, `degraded-reads`, `sync-failing`,
//! `hard-limit-refused`, `over-soft-limit`, `group-over-soft-limit`,
//! `client-silent`, `node-unreachable`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use coffer_proto::clock::now_ns;
use coffer_proto::config::AlertsSection;
use coffer_replication::{NodeId, State};
use coffer_store::AccountId;
use serde_json::{Value, json};
use tonic::Status;
use tracing::warn;

use crate::node::Node;

/// How long a member has to answer the leader's probe.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Alerts {
    config: AlertsSection,
    /// When each (event, subject) was last raised.
    raised: Mutex<HashMap<(String, String), Instant>>,
    watch: Mutex<Watch>,
}

/// What the checks remember between passes.
#[derive(Default)]
struct Watch {
    degraded_reads: u64,
    /// Members the leader could not reach, since when.
    unreachable: HashMap<NodeId, Instant>,
}

impl Alerts {
    pub fn new(config: AlertsSection) -> Alerts {
        Alerts { config, raised: Mutex::default(), watch: Mutex::default() }
    }

    /// An account's silence threshold in seconds.
    pub fn silent_after_secs(&self, state: &State, account: &coffer_replication::Account) -> u64 {
        match state.silent_after_secs(account) {
            0 => self.config.silent_after.as_secs(),
            secs => secs,
        }
    }

    /// Logs the alert and runs the notify program, unless the same alert
    /// about the same subject went out within `repeat`.
    pub fn raise(&self, event: &str, subject: &str, mut detail: Value) {
        let key = (event.to_string(), subject.to_string());
        {
            let mut raised = self.raised.lock().unwrap();
            if raised.get(&key).is_some_and(|at| at.elapsed() < self.config.repeat) {
                return;
            }
            raised.insert(key, Instant::now());
        }
        detail["event"] = json!(event);
        detail["subject"] = json!(subject);
        detail["time_ns"] = json!(now_ns());
        warn!(event, subject, %detail, "alert");
        if let Some(program) = &self.config.notify {
            coffer_proto::notify::spawn(program.clone(), event.to_string(), detail.to_string());
        }
    }
}

/// An upload refused at the hard limit: alerts, and says whether the
/// account's own limit or its group's was reached.
pub fn refused_at_hard_limit(node: &Node, account: AccountId, refusal: Status) -> Status {
    let Some((name, group)) = node.group.read(|s| {
        let a = s.accounts.get(&account)?;
        let group = s.groups.get(&a.group).filter(|_| s.hard_limit(a) < a.hard_limit);
        Some((a.name.clone(), group.map(|g| (g.name.clone(), g.hard_limit, s.group_usage(&g.name)))))
    }) else {
        return refusal;
    };
    let message = match &group {
        Some((g, hard, used)) => format!(
            "account {name}'s upload refused: account group `{g}` is at its hard limit \
             (its accounts hold {used} of {hard} bytes)"
        ),
        None => refusal.message().to_string(),
    };
    let event = json!({ "account": name, "group": group.as_ref().map(|g| &g.0), "error": message });
    node.alerts.raise("hard-limit-refused", &name, event);
    Status::resource_exhausted(message)
}

/// Checks every `check_every`, for as long as the node runs.
pub async fn run(node: Arc<Node>) {
    let mut tick = tokio::time::interval(node.alerts.config.check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let here = node.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || own_checks(&here)).await {
            warn!(error = %e, "alert checks panicked");
        }
        let status = node.group.status().await;
        if status.leader == Some(node.group.id()) {
            group_checks(&node);
            unreachable_members(&node, &status).await;
        }
    }
}

/// This node's discs and the syncs it owes.
fn own_checks(node: &Node) {
    let alerts = &node.alerts;
    let discs = node.store.discs();
    for dir in discs.missing() {
        let dir = dir.display().to_string();
        alerts.raise("disc-lost", &dir, json!({ "node": node.name, "dir": dir }));
    }
    let degraded = discs.degraded_reads();
    let before = std::mem::replace(&mut alerts.watch.lock().unwrap().degraded_reads, degraded);
    if degraded > before {
        let detail = json!({ "node": node.name, "reads": degraded - before, "since_start": degraded });
        alerts.raise("degraded-reads", &node.name, detail);
    }
    let Ok(owed) = node.group.journal().owed() else { return };
    let limit = alerts.config.sync_failing_after.as_nanos() as i64;
    let now = now_ns();
    let mut oldest: HashMap<NodeId, (i64, usize)> = HashMap::new();
    for o in owed.iter().filter(|o| o.since_ns != 0 && now - o.since_ns > limit) {
        let entry = oldest.entry(o.peer).or_insert((o.since_ns, 0));
        entry.0 = entry.0.min(o.since_ns);
        entry.1 += 1;
    }
    for (peer, (since_ns, accounts)) in oldest {
        let peer = node.group.read(|s| s.member_name(peer));
        let detail = json!({ "node": node.name, "peer": peer, "accounts": accounts, "since_ns": since_ns });
        alerts.raise("sync-failing", &peer, detail);
    }
}

/// The accounts and members, on the leader.
fn group_checks(node: &Node) {
    let alerts = &node.alerts;
    let now = now_ns();
    node.group.read(|s| {
        for a in s.accounts.values() {
            let last = a.activity.commit_ns.max(a.created_ns);
            let threshold = alerts.silent_after_secs(s, a) as i64 * 1_000_000_000;
            if now - last > threshold {
                let detail = json!({
                    "account": a.name, "last_backup_ns": a.activity.commit_ns, "host": a.activity.host,
                    "last_login_ns": a.activity.login_ns, "error": a.activity.open_error(),
                });
                alerts.raise("client-silent", &a.name, detail);
            }
            if a.activity.live_bytes > a.soft_limit {
                let detail =
                    json!({ "account": a.name, "used": a.activity.live_bytes, "soft_limit": a.soft_limit });
                alerts.raise("over-soft-limit", &a.name, detail);
            }
        }
        for g in s.groups.values() {
            let used = s.group_usage(&g.name);
            if used > g.soft_limit {
                let detail = json!({ "group": g.name, "used": used, "soft_limit": g.soft_limit });
                alerts.raise("group-over-soft-limit", &g.name, detail);
            }
        }
    });
}

/// Members the leader cannot reach, for longer than `unreachable_after`.
async fn unreachable_members(node: &Node, status: &coffer_replication::GroupStatus) {
    let alerts = &node.alerts;
    for m in status.members.iter().filter(|m| m.id != node.group.id()) {
        let reachable = node.group.reachable(&m.member, PROBE_TIMEOUT).await;
        let mut watch = alerts.watch.lock().unwrap();
        if reachable {
            watch.unreachable.remove(&m.id);
            continue;
        }
        let since = *watch.unreachable.entry(m.id).or_insert_with(Instant::now);
        drop(watch);
        if since.elapsed() > alerts.config.unreachable_after {
            let detail = json!({ "node": m.member.name, "address": m.member.addr,
                "for_secs": since.elapsed().as_secs() });
            alerts.raise("node-unreachable", &m.member.name, detail);
        }
    }
}

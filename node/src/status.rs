//! The node's status for `coffer-admin status` and `report`: its counters,
//! discs, the fast syncs it owes and the writers open on it.

use std::sync::atomic::Ordering;

use coffer_proto::wire;
use coffer_replication::journal::Owed;
use tonic::Status;

use crate::node::Node;
use crate::rpc::status;

pub fn node_status(node: &Node) -> Result<wire::NodeStatus, Status> {
    let accounts = node.store.accounts().map_err(status)?.len() as u64;
    let c = &node.syncer.counters;
    let owed = node.group.journal().owed().unwrap_or_default();
    Ok(wire::NodeStatus {
        node: node.name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        connections: node.connections.load(Ordering::Relaxed),
        handshakes_failed: node.handshakes_failed.load(Ordering::Relaxed),
        accounts,
        started_ns: node.started_ns,
        degraded_reads: node.store.discs().degraded_reads(),
        syncs: c.syncs.load(Ordering::Relaxed),
        syncs_in_sync: c.in_sync.load(Ordering::Relaxed),
        sync_failures: c.failures.load(Ordering::Relaxed),
        sync_round_trips: c.round_trips.load(Ordering::Relaxed),
        sets_synced: c.sets_copied.load(Ordering::Relaxed),
        bytes_synced: c.bytes_copied.load(Ordering::Relaxed),
        syncs_owed: owed.len() as u64,
        discs_missing: node.store.discs().missing().iter().map(|d| d.display().to_string()).collect(),
        sync_lag: sync_lag(node, &owed),
        owed: oldest_owed(node, owed),
        writers: writers(node),
    })
}

/// Fast sync this node owes, per peer: how many accounts, since when.
pub fn sync_lag(node: &Node, owed: &[Owed]) -> Vec<wire::PeerLag> {
    let mut lag: std::collections::BTreeMap<u64, wire::PeerLag> = Default::default();
    for o in owed {
        let entry = lag.entry(o.peer).or_insert_with(|| wire::PeerLag {
            peer: node.group.read(|s| s.member_name(o.peer)),
            accounts: 0,
            oldest_ns: o.since_ns,
        });
        entry.accounts += 1;
        if o.since_ns != 0 {
            entry.oldest_ns = if entry.oldest_ns == 0 { o.since_ns } else { entry.oldest_ns.min(o.since_ns) };
        }
    }
    lag.into_values().collect()
}

/// The most (account, peer) syncs owed that a status lists.
const OWED_LISTED: usize = 1000;

/// Each sync owed, oldest first.
fn oldest_owed(node: &Node, mut owed: Vec<Owed>) -> Vec<wire::OwedSync> {
    owed.sort_by_key(|o| o.since_ns);
    owed.truncate(OWED_LISTED);
    node.group.read(|s| {
        owed.iter()
            .map(|o| wire::OwedSync {
                account: s
                    .accounts
                    .get(&o.account)
                    .map_or_else(|| format!("#{}", o.account), |a| a.name.clone()),
                peer: s.member_name(o.peer),
                since_ns: o.since_ns,
            })
            .collect()
    })
}

/// Every account writer open here, and how long its client has been quiet.
fn writers(node: &Node) -> Vec<wire::WriterInfo> {
    let holders: Vec<_> = node.writers.lock().unwrap().iter().map(|(id, c)| (*id, c.upgrade())).collect();
    holders
        .into_iter()
        .filter_map(|(id, holder)| {
            let holder = holder?;
            let last = {
                let session = holder.session.lock().unwrap();
                session.last_request.filter(|_| session.writer.is_some())?
            };
            let account = node.group.read(|s| s.accounts.get(&id).map(|a| a.name.clone()))?;
            Some(wire::WriterInfo { account, idle_secs: last.elapsed().as_secs() })
        })
        .collect()
}

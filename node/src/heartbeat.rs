//! Telling the group what this node saw of an account's clients: logins
//! (with the client's version, host and undelivered failure) and committed
//! backups (with the account's usage after them), as Raft heartbeats.
//!
//! Heartbeats are proposed in the background: a login or a commit never
//! waits for the group, and one that does not get through is logged and
//! left for the next (each carries the whole news, not a change).

use std::sync::Arc;
use std::time::Duration;

use coffer_proto::clock::now_ns;
use coffer_proto::wire;
use coffer_replication::activity::{Heartbeat, MAX_ERROR, MAX_HOST, MAX_VERSION, cut};
use coffer_replication::{Account, Command};
use coffer_store::AccountId;
use tracing::debug;

use crate::node::Node;

/// A login is reported at most this often per account, unless it brings
/// news (another version or host, a failure).
const LOGIN_EVERY: Duration = Duration::from_secs(60);

/// Reports a successful login, if it says anything the group does not know.
pub fn logged_in(node: &Arc<Node>, account: &Account, req: &wire::LoginRequest) {
    let now = now_ns();
    let known = &account.activity;
    let version = cut(&req.client_version, MAX_VERSION);
    let host = cut(&req.host, MAX_HOST);
    // A client's clock may be ahead; its failure cannot be newer than now.
    let error_ns = req.last_error_ns.min(now);
    let new_error = !req.last_error.is_empty() && error_ns > known.error_ns;
    let stale = now.saturating_sub(known.login_ns) > LOGIN_EVERY.as_nanos() as i64;
    if !(stale || new_error || version != known.client_version || host != known.host) {
        return;
    }
    let mut beat = Heartbeat {
        login_ns: now,
        client_version: version,
        host,
        node: node.group.id(),
        ..Default::default()
    };
    if new_error {
        beat.error = cut(&req.last_error, MAX_ERROR);
        beat.error_ns = error_ns;
    }
    propose(node, account.name.clone(), beat);
}

/// Reports a committed backup set and the account's usage after it.
pub fn committed(node: &Arc<Node>, account: AccountId, marker: u64) {
    report_usage(node, account, marker, now_ns());
}

/// Reports the account's usage after housekeeping or a forget freed space.
pub fn usage_changed(node: &Arc<Node>, account: AccountId) {
    match node.store.summary(account) {
        Ok((marker, _)) => report_usage(node, account, marker, 0),
        Err(e) => debug!(account, error = %e, "no usage to report"),
    }
}

fn report_usage(node: &Arc<Node>, account: AccountId, marker: u64, commit_ns: i64) {
    let name = node.group.read(|s| s.accounts.get(&account).map(|a| a.name.clone()));
    let (Some(name), Ok(usage)) = (name, node.store.usage(account)) else { return };
    let beat = Heartbeat { commit_ns, usage: Some((marker, usage.live_bytes)), ..Default::default() };
    propose(node, name, beat);
}

fn propose(node: &Arc<Node>, name: String, beat: Heartbeat) {
    let node = node.clone();
    tokio::spawn(async move {
        if let Err(e) = node.group.write(Command::Heartbeat { name: name.clone(), beat }).await {
            debug!(account = %name, error = %e, "heartbeat not recorded; the next one will be");
        }
    });
}

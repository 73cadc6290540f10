//! Moving an account from this node to another (DESIGN §5, Box Backup FR 7).
//!
//! Runs on the source node, in three steps, each a change to the account
//! database:
//! 1. `StartMigration`: the target joins the replica set, and from now on
//!    this node sends the account's clients to the other replicas.
//! 2. Fast sync with the target until the two agree, then `MovePrimary`.
//! 3. Once no client session here holds the account's writer any more (new
//!    logins have been redirected since step 1), a last fast sync, then
//!    `FinishMigration` takes this node out of the replica set.
//!
//! A migration cut short (a crash, no quorum) is resumed by running it
//! again: each step accepts the state the one before left. Then [`purge`]
//! deletes this node's copy, once a last fast sync with the target (which
//! copies anything it lacks) ends in agreement; a purge that cannot prove
//! that keeps the copy and says why, and `coffer-admin purge ACCOUNT --from NODE` runs it again.

use std::sync::Arc;
use std::time::Duration;

use coffer_proto::wire;
use coffer_replication::{Command, NodeId};
use coffer_store::AccountId;
use tonic::Status;
use tracing::info;

use crate::node::Node;
use crate::rpc::{group_status, status, sync_message};

/// Fast-sync passes allowed for the target to catch up, at each step.
const PASSES: u32 = 20;
/// Pause between passes that did not end in agreement.
const PAUSE: Duration = Duration::from_millis(500);
/// How long a client already writing here may take to finish.
const CLIENTS_LEAVE: Duration = Duration::from_secs(120);

/// Moves account `name` from this node to the node named `to`.
pub async fn migrate(node: &Arc<Node>, name: &str, to: &str) -> Result<wire::MigrateReply, Status> {
    let me = node.group.id();
    let account = node
        .group
        .read(|s| s.account_named(name).cloned())
        .ok_or_else(|| Status::not_found(format!("no account `{name}` in the server group")))?;
    let target = node
        .group
        .read(|s| s.members().into_iter().find(|(_, m, _)| m.name == to).map(|(id, _, _)| id))
        .ok_or_else(|| Status::not_found(format!("no node `{to}` in the server group")))?;
    if target == me {
        return Err(Status::invalid_argument(format!("node {to} is the source: migrate from another node")));
    }
    let write = |command: Command| async move { node.group.write(command).await.map_err(group_status) };
    write(Command::StartMigration { name: name.into(), from: me, to: target }).await?;
    info!(account = %name, to = %to, "migration started");
    let mut syncs = Vec::new();
    catch_up(node, account.id, target, &mut syncs).await?;
    write(Command::MovePrimary { name: name.into(), from: me, to: target }).await?;
    clients_leave(node, account.id).await?;
    catch_up(node, account.id, target, &mut syncs).await?;
    write(Command::FinishMigration { name: name.into(), from: me }).await?;
    info!(account = %name, to = %to, "migration finished");
    let (purged_bytes, purge_error) = match purge(node, name, &mut syncs).await {
        Ok(bytes) => (bytes, String::new()),
        Err(e) => (0, e.message().to_string()),
    };
    let now = node.group.read(|s| s.account_named(name).cloned()).unwrap_or(account);
    Ok(wire::MigrateReply {
        account: name.into(),
        from: node.name.clone(),
        to: to.into(),
        syncs,
        replicas: node.group.read(|s| now.replicas.iter().map(|id| s.member_name(*id)).collect()),
        primary: node.group.read(|s| s.member_name(now.primary)),
        purged_bytes,
        purge_error,
    })
}

/// Deletes this node's copy of account `name`, which the group no longer
/// places here, once a fast sync with one of its replicas ends with the
/// two in agreement: that replica then holds every set this copy holds.
/// Returns the bytes freed (0 when there was no copy).
pub async fn purge(
    node: &Arc<Node>,
    name: &str,
    syncs: &mut Vec<wire::SyncPeerReport>,
) -> Result<u64, Status> {
    let me = node.group.id();
    let account = node
        .group
        .read(|s| s.account_named(name).cloned())
        .ok_or_else(|| Status::not_found(format!("no account `{name}` in the server group")))?;
    if account.replicas.contains(&me) {
        return Err(Status::failed_precondition(format!(
            "account `{name}` is placed on node {}: migrate it away before purging",
            node.name
        )));
    }
    if node.store.account(account.id).is_err() {
        return Ok(0);
    }
    let mut last = Status::failed_precondition(format!("account `{name}` has no replica to hold it"));
    let replicas = std::iter::once(account.primary).chain(account.replicas.iter().copied());
    for replica in replicas.filter(|r| account.replicas.contains(r)) {
        match catch_up(node, account.id, replica, syncs).await {
            Ok(()) => {
                let store = node.store.clone();
                let bytes =
                    crate::rpc::blocking(move || store.delete_account(account.id).map_err(status)).await?;
                info!(account = %name, bytes, "purged this node's copy after the move");
                return Ok(bytes);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Fast-syncs with the target until a pass finds the two in agreement.
async fn catch_up(
    node: &Node,
    account: AccountId,
    target: NodeId,
    syncs: &mut Vec<wire::SyncPeerReport>,
) -> Result<(), Status> {
    let name = node.group.read(|s| s.member_name(target));
    for _ in 0..PASSES {
        let result = node.syncer.sync_with(account, target).await;
        let agreed = matches!(&result, Ok(r) if r.in_sync);
        syncs.push(sync_message(name.clone(), result));
        if agreed {
            return Ok(());
        }
        tokio::time::sleep(PAUSE).await;
    }
    let last = syncs.last().map(|s| s.error.clone()).unwrap_or_default();
    Err(Status::unavailable(format!(
        "node {name} did not catch up in {PASSES} fast syncs ({last}); run migrate again to resume"
    )))
}

/// Waits until no client holds the account's writer on this node.
async fn clients_leave(node: &Node, account: AccountId) -> Result<(), Status> {
    let deadline = tokio::time::Instant::now() + CLIENTS_LEAVE;
    loop {
        // Taking the writer for a moment proves nobody else has it.
        if node.store.background_writer(account).is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Status::unavailable(format!(
                "a client is still writing to the account on node {} after {CLIENTS_LEAVE:?}; \
                 run migrate again to resume",
                node.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

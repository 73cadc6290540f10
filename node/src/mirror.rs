//! Keeps the store engine's account records in line with the group's
//! account database.
//!
//! The group decides accounts (name, keys, limits, frozen, placement); the
//! engine enforces them on every write, from its own copy of the record.
//! This module copies each account this node holds into the engine, and
//! deletes the data of accounts the group has deleted. It reconciles the
//! whole database each time, so a missed change, a crash between the two
//! databases, or a delete refused while a client was writing is put right
//! on the next pass (every change, and every few seconds).
//!
//! An engine account the group has never heard of (an id at or above the
//! group's next account id) is left alone: an empty or half-joined group
//! database must never be a reason to delete data.

use std::sync::Arc;
use std::time::Duration;

use coffer_replication::Account;
use tracing::{debug, info, warn};

use coffer_store::{AccountRecord, Limits, StoreError};

use crate::node::Node;

/// How often the mirror runs even when nothing changed.
const RETRY: Duration = Duration::from_secs(5);

/// The engine's record of a group account. Its hard limit is the one in
/// force now: the account's, or less when its group's leaves less room
/// (from the usage the group's heartbeats reported, so uploads of two
/// accounts at once can pass the group's limit by what they store before
/// the next commit reports it).
pub fn record(account: &Account, hard_limit: u64) -> AccountRecord {
    AccountRecord {
        id: account.id,
        name: account.name.clone(),
        key_fingerprint: account.key_fingerprint.clone(),
        limits: Limits { soft: account.soft_limit, hard: hard_limit },
        frozen: account.frozen,
        created_ns: account.created_ns,
    }
}

/// Copies one account into the engine if this node holds it.
pub fn sync_account(node: &Node, account: &Account) -> Result<(), StoreError> {
    let hard_limit = node.group.read(|s| s.hard_limit(account));
    if account.replicas.contains(&node.group.id())
        && node.store.adopt_account(&record(account, hard_limit))?
    {
        debug!(account = %account.name, id = account.id, hard_limit, "account record updated from the group");
    }
    Ok(())
}

/// One full pass over the group's accounts.
pub fn sync_all(node: &Node) -> Result<(), StoreError> {
    let (accounts, next_account, ready) =
        node.group.read(|s| (s.accounts.clone(), s.next_account, s.last_applied.is_some()));
    if !ready {
        return Ok(());
    }
    for account in accounts.values() {
        sync_account(node, account)?;
    }
    for local in node.store.accounts()? {
        if local.id < next_account && !accounts.contains_key(&local.id) {
            match node.store.delete_account(local.id) {
                Ok(bytes) => info!(account = %local.name, bytes, "account deleted by the group"),
                Err(StoreError::AccountBusy(_)) => {
                    info!(account = %local.name, "deleted account still has a client writing; retrying")
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Runs [`sync_all`] on every change of the account database.
pub async fn run(node: Arc<Node>) {
    let mut changes = node.group.subscribe();
    loop {
        let pass = node.clone();
        match tokio::task::spawn_blocking(move || sync_all(&pass)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "could not bring account records in line with the group"),
            Err(e) => warn!(error = %e, "account mirror panicked"),
        }
        let _ = tokio::time::timeout(RETRY, changes.changed()).await;
    }
}

//! Counting references while accounts are quiet.
//!
//! A backup leaves the references of its trees and sets uncounted, and
//! whatever frees counts them first (the store's `counting`): left alone, the
//! first forget or housekeeping after a large first backup would count it all
//! while holding the account, half a minute for a million files. So the node
//! counts in the background, a slice of [`SLICE_TIME`] at a time, on
//! accounts that nothing else has wanted for [`QUIET`]. A client, a fast
//! sync or a replicated commit that wants the account then waits one slice
//! at most, and counting stops until the account is quiet again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_store::{AccountId, StoreError};
use tracing::{debug, warn};

use crate::node::Node;

/// How long an account must have been left alone before counting takes it.
const QUIET: Duration = Duration::from_secs(5);
/// How long one slice may read objects while holding the account.
const SLICE_TIME: Duration = Duration::from_millis(250);
/// How often accounts are looked at.
const TICK: Duration = Duration::from_secs(1);
/// How long an account whose counting failed is left for a check to repair.
const RETRY_FAILED: Duration = Duration::from_secs(3600);

pub async fn run(node: Arc<Node>) {
    let mut failed = HashMap::new();
    loop {
        tokio::time::sleep(TICK).await;
        let pass = {
            let node = node.clone();
            tokio::task::spawn_blocking(move || {
                count_quiet_accounts(&node, &mut failed);
                failed
            })
        };
        match pass.await {
            Ok(still_failed) => failed = still_failed,
            Err(e) => {
                warn!(error = %e, "background counting panicked");
                failed = HashMap::new();
            }
        }
    }
}

/// Counts every quiet account's uncounted objects, slice by slice, until
/// it is done or something else wants it. `failed` holds accounts whose
/// counting failed, and when.
fn count_quiet_accounts(node: &Node, failed: &mut HashMap<AccountId, Instant>) {
    failed.retain(|_, at| at.elapsed() < RETRY_FAILED);
    let accounts = match node.store.accounts() {
        Ok(accounts) => accounts,
        Err(e) => return warn!(error = %e, "background counting cannot list the accounts"),
    };
    for account in accounts {
        if failed.contains_key(&account.id) {
            continue;
        }
        match count_while_quiet(node, account.id) {
            Ok(0) => {}
            Ok(objects) => debug!(account = %account.name, objects, "references counted in the background"),
            Err(e) => {
                warn!(account = %account.name, error = %e, "background counting failed; a check repairs the account");
                failed.insert(account.id, Instant::now());
            }
        }
    }
}

/// Counts slices of the account while it stays quiet; how many objects.
fn count_while_quiet(node: &Node, account: AccountId) -> Result<u64, StoreError> {
    let mut total = 0;
    if !node.store.has_uncounted(account)? {
        return Ok(total);
    }
    loop {
        let mut writer = match node.store.counting_writer(account, QUIET) {
            Err(StoreError::AccountBusy(_)) => return Ok(total),
            other => other?,
        };
        let counted = writer.count_some(Some(SLICE_TIME))?;
        node.metrics.objects_counted.inc_by(counted.objects);
        total += counted.objects;
        if !counted.more {
            return Ok(total);
        }
    }
}

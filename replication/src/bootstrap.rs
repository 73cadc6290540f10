//! Starting a server group from nothing, on a node's Raft database while
//! the node is stopped: `coffer-admin quickstart` does this so that a fresh
//! loopback group works at once, whichever node starts first.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use crate::group::{Group, GroupConfig, GroupError};
use crate::types::{Applied, Command, Member};

/// How long the lone member may take to elect itself.
const ELECTION: Duration = Duration::from_secs(30);

/// An account the new group starts with, its keys already registered.
pub struct FirstAccount {
    pub name: String,
    pub key_fingerprint: String,
}

/// Makes `me` the only member of a new group in `raft_dir`, lets the nodes
/// named in `invite` join it, creates `accounts` (unlimited), and closes the
/// database again. Returns the ids the accounts were given, in order.
pub async fn bootstrap(
    raft_dir: &Path,
    me: Member,
    tls: Arc<ClientConfig>,
    invite: &[String],
    accounts: &[FirstAccount],
) -> Result<Vec<u64>, GroupError> {
    let group = Group::open(raft_dir, me, GroupConfig::default(), tls).await?;
    let created = async {
        group.initialize().await?;
        if !group.wait_for_leader(ELECTION).await {
            return Err(GroupError::Membership("the new group's only node did not become leader".into()));
        }
        for node in invite {
            group.write(Command::AllowJoin { node: node.clone() }).await?;
        }
        let mut ids = Vec::new();
        for account in accounts {
            let create = Command::CreateAccount {
                name: account.name.clone(),
                soft_limit: u64::MAX,
                hard_limit: u64::MAX,
                group: String::new(),
                created_ns: coffer_proto::clock::now_ns(),
            };
            match group.write(create).await? {
                Applied::Account(created) => ids.push(created.id),
                other => return Err(GroupError::Storage(format!("creating an account answered {other:?}"))),
            }
            let name = account.name.clone();
            group.write(Command::RegisterKeys { name, fingerprint: account.key_fingerprint.clone() }).await?;
        }
        Ok(ids)
    }
    .await;
    group.shutdown().await;
    created
}

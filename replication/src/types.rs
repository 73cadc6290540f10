//! The Raft type configuration and the commands the account database
//! accepts.
//!
//! Every command carries a request id chosen by whoever first received the
//! operator's request: a forward that is retried after a lost reply is then
//! applied once, and the retry gets the first outcome back.

use std::io::Cursor;

use coffer_proto::retention::RetentionPolicy;
use serde::{Deserialize, Serialize};

use crate::activity::Heartbeat;
use crate::state::{Account, AccountGroup};

/// A node's number in the group. Chosen at random when a node first opens its
/// data directory and never reused: a wiped node comes back as a new member.
pub type NodeId = u64;

/// What the group knows about a node, carried in Raft's membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    /// `host:port` that peers and clients connect to.
    pub addr: String,
    /// Site or zone; replicas of an account go to distinct sites when it can.
    #[serde(default)]
    pub site: String,
}

openraft::declare_raft_types!(
    /// Coffer's account database as openraft sees it.
    pub TypeConfig:
        D = Proposal,
        R = Outcome,
        Node = Member,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;

/// One change to the account database, as written to the Raft log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub request_id: String,
    pub command: Command,
}

impl Proposal {
    /// Checks every value a caller chose (names, fingerprint, request id)
    /// before the proposal goes anywhere near the log.
    pub fn validate(&self) -> Result<(), Refusal> {
        use coffer_proto::names::{validate_account_name, validate_fingerprint, validate_request_id};
        validate_request_id(&self.request_id).map_err(Refusal::Invalid)?;
        let name = |n: &str| validate_account_name(n).map_err(Refusal::InvalidName);
        match &self.command {
            Command::CreateAccount { name: n, group, .. } | Command::SetAccountGroup { name: n, group } => {
                name(n)?;
                if !group.is_empty() {
                    name(group)?;
                }
                Ok(())
            }
            Command::RegisterKeys { name: n, fingerprint } => {
                name(n)?;
                validate_fingerprint(fingerprint).map_err(Refusal::Invalid)
            }
            Command::AllowJoin { node } => name(node),
            Command::SetRetention { name: n, policy } => {
                name(n)?;
                policy.validate().map_err(Refusal::Invalid)
            }
            Command::Heartbeat { name: n, beat } => {
                name(n)?;
                beat.validate().map_err(Refusal::Invalid)
            }
            Command::SetLimits { name: n, .. }
            | Command::SetFrozen { name: n, .. }
            | Command::DeleteAccount { name: n }
            | Command::CreateGroup { name: n, .. }
            | Command::SetGroupLimits { name: n, .. }
            | Command::DeleteGroup { name: n }
            | Command::SetSilentAfter { name: n, .. }
            | Command::StartMigration { name: n, .. }
            | Command::MovePrimary { name: n, .. }
            | Command::FinishMigration { name: n, .. } => name(n),
        }
    }
}

/// The changes an operator (or a client's first login) can make. Limits of
/// `u64::MAX` mean "no limit". Times come from the proposer, so that every
/// replica applies the same value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    CreateAccount {
        name: String,
        soft_limit: u64,
        hard_limit: u64,
        group: String,
        created_ns: i64,
    },
    SetLimits {
        name: String,
        soft_limit: u64,
        hard_limit: u64,
    },
    SetFrozen {
        name: String,
        frozen: bool,
    },
    /// Which sets the account's primary keeps at housekeeping.
    SetRetention {
        name: String,
        policy: RetentionPolicy,
    },
    /// Records the key fingerprint of an account that has none yet.
    RegisterKeys {
        name: String,
        fingerprint: String,
    },
    DeleteAccount {
        name: String,
    },
    CreateGroup {
        name: String,
        soft_limit: u64,
        hard_limit: u64,
    },
    SetGroupLimits {
        name: String,
        soft_limit: u64,
        hard_limit: u64,
    },
    /// Refused while accounts still belong to the group.
    DeleteGroup {
        name: String,
    },
    /// Moves an account into a group, or out of any (`group` empty).
    SetAccountGroup {
        name: String,
        group: String,
    },
    /// The silence threshold of an account, or of a group (`group`).
    SetSilentAfter {
        name: String,
        group: bool,
        secs: u64,
    },
    /// What a node saw of the account's clients.
    Heartbeat {
        name: String,
        beat: Heartbeat,
    },
    /// An operator lets the node called `node` join the group: until it
    /// is a member, the group's nodes take its join request (and nothing
    /// else) from its certificate.
    AllowJoin {
        node: String,
    },
    /// Migration, step 1: `to` joins the replica set; `from` starts
    /// redirecting the account's clients.
    StartMigration {
        name: String,
        from: NodeId,
        to: NodeId,
    },
    /// Migration, step 2 (once `to` holds everything `from` does): `to`
    /// becomes the primary if `from` was.
    MovePrimary {
        name: String,
        from: NodeId,
        to: NodeId,
    },
    /// Migration, step 3: `from` leaves the replica set.
    FinishMigration {
        name: String,
        from: NodeId,
    },
}

/// What applying a command produced; refusals are part of the replicated
/// outcome, so every node answers a retried request the same way.
pub type Outcome = Result<Applied, Refusal>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Applied {
    Account(Account),
    Deleted(Account),
    Group(AccountGroup),
    /// A membership change or blank entry: nothing for the caller.
    Nothing,
}

/// Why the account database refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("account `{0}` already exists")]
    AccountExists(String),
    #[error("no account `{0}` in the group")]
    NoSuchAccount(String),
    #[error("account group `{0}` already exists")]
    GroupExists(String),
    #[error("no account group `{0}`")]
    NoSuchGroup(String),
    #[error("account group `{group}` still has {accounts} account(s); move or delete them first")]
    GroupInUse { group: String, accounts: usize },
    #[error("{0}")]
    InvalidName(String),
    /// A value other than a name that cannot go into the database.
    #[error("{0}")]
    Invalid(String),
    #[error("soft limit {soft} is above hard limit {hard}")]
    InvalidLimits { soft: u64, hard: u64 },
    #[error("the group has no voting members to place an account on")]
    NoNodes,
    #[error("cannot migrate account `{account}`: {problem}")]
    Migration { account: String, problem: String },
}

/// A snapshot in transit or at rest: the whole state as JSON bytes (the
/// default that `declare_raft_types!` picks, which needs `Cursor` in scope).
pub type SnapshotData = Cursor<Vec<u8>>;

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Log entries and proposals come from the disc and from other
        /// nodes: arbitrary bytes are an error, never a panic; whatever
        /// decodes is still validated before it is proposed.
        #[test]
        fn arbitrary_entries_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024)) {
            let _ = serde_json::from_slice::<Entry>(&bytes);
            if let Ok(proposal) = serde_json::from_slice::<Proposal>(&bytes) {
                let _ = proposal.validate();
            }
        }
    }

    #[test]
    fn a_retention_policy_beyond_a_century_is_refused_before_it_is_proposed() {
        let set = |secs: u64| Proposal {
            request_id: "r".into(),
            command: Command::SetRetention {
                name: "a".into(),
                policy: RetentionPolicy {
                    keep_within: Some(std::time::Duration::from_secs(secs)),
                    ..Default::default()
                },
            },
        };
        set(86_400).validate().unwrap();
        assert!(matches!(set(u64::MAX / 2).validate(), Err(Refusal::Invalid(_))));
    }

    #[test]
    fn oversized_values_are_refused_before_they_are_proposed() {
        let register = |fingerprint: String| Proposal {
            request_id: coffer_proto::id::new_request_id(),
            command: Command::RegisterKeys { name: "a".into(), fingerprint },
        };
        register("ab".repeat(32)).validate().unwrap();
        for bad in ["f".repeat(15 << 20), String::new(), "AB".repeat(32)] {
            assert!(matches!(register(bad).validate(), Err(Refusal::Invalid(_))));
        }
        let long_name = Proposal {
            request_id: "r".into(),
            command: Command::DeleteAccount { name: "n".repeat(1 << 20) },
        };
        assert!(matches!(long_name.validate(), Err(Refusal::InvalidName(_))));
        let long_id =
            Proposal { request_id: "r".repeat(65), command: Command::DeleteAccount { name: "n".into() } };
        assert!(matches!(long_id.validate(), Err(Refusal::Invalid(_))));
    }
}

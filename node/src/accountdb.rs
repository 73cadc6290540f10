//! How the node presents the group's account database on the wire: accounts
//! (with this replica's marker and usage), members, the group's status, and
//! the gRPC status for each group error.

use coffer_proto::wire;
use coffer_replication::{Account, GroupError, GroupStatus, NodeId, Refusal};
use tonic::Status;

use crate::error::StoreError;
use crate::server::Node;

/// Maps a group error to the gRPC status a caller sees.
pub fn group_status(e: GroupError) -> Status {
    let message = e.to_string();
    match e {
        GroupError::NoQuorum(_) | GroupError::Peer(_) | GroupError::NotLeader => Status::unavailable(message),
        GroupError::Refused(Refusal::AccountExists(_) | Refusal::GroupExists(_))
        | GroupError::AlreadyInGroup => Status::already_exists(message),
        GroupError::Refused(Refusal::NoSuchAccount(_) | Refusal::NoSuchGroup(_)) => {
            Status::not_found(message)
        }
        GroupError::Refused(Refusal::InvalidName(_) | Refusal::InvalidLimits { .. }) => {
            Status::invalid_argument(message)
        }
        GroupError::Refused(Refusal::NoNodes | Refusal::Migration { .. })
        | GroupError::NotInGroup
        | GroupError::Membership(_) => Status::failed_precondition(message),
        GroupError::Storage(_) => Status::internal(message),
    }
}

/// A member's name, or its number when the group no longer knows it.
pub fn member_name(node: &Node, id: NodeId) -> String {
    node.group.read(|s| s.member(id)).map_or_else(|| format!("#{id}"), |m| m.name)
}

/// The wire form of an account; marker and usage are this node's replica's,
/// zero when it does not hold the account.
pub fn account_message(node: &Node, a: &Account) -> Result<wire::Account, StoreError> {
    let held_here = node.store.account(a.id).is_ok();
    let (marker, usage, sets_digest) = if held_here {
        let (marker, digest) = node.store.summary(a.id)?;
        (marker, Some(usage_message(&node.store.usage(a.id)?)), hex::encode(digest.as_bytes()))
    } else {
        (0, None, String::new())
    };
    Ok(wire::Account {
        id: a.id,
        name: a.name.clone(),
        soft_limit: a.soft_limit,
        hard_limit: a.hard_limit,
        frozen: a.frozen,
        key_fingerprint: a.key_fingerprint.clone(),
        marker,
        created_ns: a.created_ns,
        usage,
        replicas: a.replicas.iter().map(|id| member_name(node, *id)).collect(),
        primary: member_name(node, a.primary),
        held_here,
        sets_digest,
    })
}

pub fn usage_message(u: &crate::store::Usage) -> wire::AccountUsage {
    wire::AccountUsage {
        live_bytes: u.live_bytes,
        pack_bytes: u.pack_bytes,
        objects: u.objects,
        packs: u.packs,
        sets: u.sets,
    }
}

/// Every member of the group, for a client's list of nodes.
pub fn members_message(node: &Node) -> Vec<wire::GroupNode> {
    node.group
        .read(|s| s.members())
        .into_iter()
        .map(|(id, m, voter)| wire::GroupNode {
            id,
            name: m.name,
            address: m.addr,
            site: m.site,
            state: if voter { "voter" } else { "learner" }.into(),
            log_index: None,
            lag: 0,
        })
        .collect()
}

pub fn status_message(s: GroupStatus) -> wire::GroupStatus {
    wire::GroupStatus {
        reporter: s.reporter,
        leader: s.leader,
        leader_name: s.leader_name,
        term: s.term,
        last_log_index: s.last_log_index,
        last_applied: s.last_applied,
        snapshot_index: s.snapshot_index,
        purged_index: s.purged_index,
        nodes: s
            .members
            .into_iter()
            .map(|m| wire::GroupNode {
                id: m.id,
                name: m.member.name,
                address: m.member.addr,
                site: m.member.site,
                state: m.state,
                log_index: m.log_index,
                lag: m.lag,
            })
            .collect(),
    }
}

//! The operator's account groups: accounts that share soft and hard
//! limits, and a silence threshold. Groups live in the replicated account
//! database; every change goes through the group's leader under the
//! operator's request id (see `admin_service`).

use std::sync::Arc;

use coffer_proto::wire;
use coffer_replication::{Applied, Command, Refusal};
use tonic::Status;
use tracing::info;

use crate::admin_service::limits;
use crate::node::Node;
use crate::rpc::{group_message, group_status, or_new_request_id};

/// Applies `command` and answers with the group it changed.
async fn write_group(
    node: &Node,
    request_id: String,
    command: Command,
) -> Result<wire::AccountGroup, Status> {
    match node.group.write_as(or_new_request_id(request_id), command).await.map_err(group_status)? {
        Applied::Group(group) => Ok(group_message(node, &group)),
        other => Err(Status::internal(format!("the group answered {other:?}"))),
    }
}

pub async fn create(node: Arc<Node>, r: wire::GroupRequest) -> Result<wire::AccountGroup, Status> {
    let l = limits(r.soft_limit, r.hard_limit);
    let command = Command::CreateGroup { name: r.name.clone(), soft_limit: l.soft, hard_limit: l.hard };
    let group = write_group(&node, r.request_id, command).await?;
    info!(group = %r.name, soft_limit = l.soft, hard_limit = l.hard, "account group created");
    Ok(group)
}

pub async fn set_limits(node: Arc<Node>, r: wire::GroupRequest) -> Result<wire::AccountGroup, Status> {
    let l = limits(r.soft_limit, r.hard_limit);
    let command = Command::SetGroupLimits { name: r.name.clone(), soft_limit: l.soft, hard_limit: l.hard };
    let group = write_group(&node, r.request_id, command).await?;
    info!(group = %r.name, soft_limit = l.soft, hard_limit = l.hard, "account group limits changed");
    Ok(group)
}

pub async fn delete(node: Arc<Node>, r: wire::GroupRequest) -> Result<wire::AccountGroup, Status> {
    let group = write_group(&node, r.request_id, Command::DeleteGroup { name: r.name.clone() }).await?;
    info!(group = %r.name, "account group deleted");
    Ok(group)
}

/// One group by name, or all of them.
pub fn list(node: &Node, name: &str) -> Result<wire::GroupList, Status> {
    let groups: Vec<_> = node
        .group
        .read(|s| s.groups.values().filter(|g| name.is_empty() || g.name == name).cloned().collect());
    if groups.is_empty() && !name.is_empty() {
        return Err(group_status(Refusal::NoSuchGroup(name.to_string()).into()));
    }
    Ok(wire::GroupList { groups: groups.iter().map(|g| group_message(node, g)).collect() })
}

pub async fn set_silent_after(node: Arc<Node>, r: wire::SilentAfterRequest) -> Result<(), Status> {
    let command = Command::SetSilentAfter { name: r.name.clone(), group: r.group, secs: r.secs };
    node.group.write_as(or_new_request_id(r.request_id), command).await.map_err(group_status)?;
    info!(name = %r.name, group = r.group, secs = r.secs, "silence threshold changed");
    Ok(())
}

//! The operator's gRPC service, open only to `admin:` certificates: accounts,
//! limits, freezing, checks and repairs, usage, housekeeping and node status.
//!
//! On the wire a limit of 0 means "no limit" (proto3's default), so a request
//! that leaves a limit out never locks an account out by accident.

use std::sync::Arc;
use std::time::Duration;

use coffer_proto::clock::now_ns;
use coffer_proto::retention::RetentionPolicy;
use coffer_proto::tls::Role;
use coffer_proto::wire::{self, admin_server};
use coffer_replication::{Account, Applied, Command, GroupError, Refusal};
use coffer_store::{AccountRecord, HousekeepReport, Limits, StoreError};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::groups;
use crate::mirror::{sync_account, sync_all};
use crate::node::Node;
use crate::rpc::{
    account_message, blocking, caller, group_status, or_new_request_id, raid_report, status, status_message,
    sync_message,
};

pub struct AdminService {
    node: Arc<Node>,
}

impl AdminService {
    pub fn new(node: Arc<Node>) -> Self {
        AdminService { node }
    }

    /// Checks the caller is an operator and hands back the node.
    fn authorise<T>(&self, req: &Request<T>) -> Result<Arc<Node>, Status> {
        match &caller(req)?.role {
            Role::Admin(_) => Ok(self.node.clone()),
            other => Err(Status::permission_denied(format!("{other} may not use the admin service"))),
        }
    }
}

/// Limits from the wire, where 0 means "no limit".
pub fn limits(soft: u64, hard: u64) -> Limits {
    let unlimited = |v: u64| if v == 0 { u64::MAX } else { v };
    Limits { soft: unlimited(soft), hard: unlimited(hard) }
}

/// The accounts a request names: one by name, or all when the name is empty.
fn named(node: &Node, name: &str) -> Result<Vec<AccountRecord>, StoreError> {
    if name.is_empty() { node.store.accounts() } else { Ok(vec![node.store.account_named(name)?]) }
}

/// One account's housekeeping: its report, or why it was skipped.
pub type Housekept = (String, Result<HousekeepReport, String>);

/// Runs housekeeping on the named account (all when `name` is empty); an
/// account with a client writing to it is skipped until the next pass.
pub fn housekeep_all(node: &Arc<Node>, name: &str) -> Result<Vec<Housekept>, StoreError> {
    let accounts = named(node, name)?;
    let cutoff = now_ns() - node.grace.as_nanos() as i64;
    node.metrics.housekeeping_runs.inc();
    Ok(accounts
        .into_iter()
        .map(|a| {
            let retention = retention_here(node, a.id);
            let result = node
                .store
                .writer(a.id)
                .and_then(|mut w| w.housekeep(cutoff, &retention))
                .map_err(|e| e.to_string());
            if let Ok(r) = &result {
                node.metrics.housekeeping_bytes_freed.inc_by(r.bytes_freed);
                node.metrics.forgot_sets("retention", r.sets_expired.len());
                node.metrics.forgot_sets("soft_limit", r.sets_forgotten.len());
                if !r.sets_forgotten.is_empty() || !r.sets_expired.is_empty() {
                    node.syncer.changed(a.id);
                    crate::heartbeat::usage_changed(node, a.id);
                }
            }
            (a.name, result)
        })
        .collect())
}

/// The account's retention policy if this node is its primary, else none:
/// one node decides, and its tombstones reach the other replicas by fast
/// sync (replicas deciding apart could each forget a set the other kept).
fn retention_here(node: &Node, account: u64) -> RetentionPolicy {
    let me = node.group.id();
    node.group
        .read(|s| s.accounts.get(&account).filter(|a| a.primary == me).map(|a| a.retention))
        .unwrap_or_default()
}

/// What each named account's retention policy would keep and forget, newest
/// first; accounts without a policy are left out.
fn retention_dry_run(node: &Node, name: &str) -> Result<Vec<wire::SetDecision>, StoreError> {
    let mut out = Vec::new();
    for a in named(node, name)? {
        let policy = node.group.read(|s| s.accounts.get(&a.id).map(|a| a.retention)).unwrap_or_default();
        if policy.is_empty() {
            continue;
        }
        for d in node.store.retention_decisions(a.id, &policy)? {
            out.push(wire::SetDecision {
                account: a.name.clone(),
                id: d.id.as_bytes().to_vec(),
                time_ns: d.time_ns,
                keep: d.keep,
                reasons: d.reasons.iter().map(|r| r.to_string()).collect(),
            });
        }
    }
    Ok(out)
}

/// Applies `command` through the group (under the operator's request id, so
/// a retried request is applied once) and answers with the account.
async fn write_account(
    node: Arc<Node>,
    request_id: String,
    command: Command,
) -> Result<Response<wire::Account>, Status> {
    let request_id = or_new_request_id(request_id);
    let account = match node.group.write_as(request_id, command).await.map_err(group_status)? {
        Applied::Account(account) => account,
        other => return Err(Status::internal(format!("the group answered {other:?}"))),
    };
    blocking(move || {
        sync_account(&node, &account).map_err(status)?;
        account_message(&node, &account).map_err(status)
    })
    .await
    .map(Response::new)
}

/// The group's status, once a leader is known (or after a short wait).
async fn group_status_reply(node: &Node) -> Result<Response<wire::GroupStatus>, Status> {
    node.group.wait_for_leader(Duration::from_secs(10)).await;
    Ok(Response::new(status_message(node.group.status().await)))
}

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    async fn create_account(
        &self,
        req: Request<wire::CreateAccountRequest>,
    ) -> Result<Response<wire::Account>, Status> {
        let node = self.authorise(&req)?;
        let r = req.into_inner();
        let l = limits(r.soft_limit, r.hard_limit);
        let command = Command::CreateAccount {
            name: r.name.clone(),
            soft_limit: l.soft,
            hard_limit: l.hard,
            group: r.group,
            created_ns: now_ns(),
        };
        let reply = write_account(node, r.request_id, command).await?;
        info!(account = %r.name, id = reply.get_ref().id, replicas = ?reply.get_ref().replicas, "account created");
        Ok(reply)
    }

    async fn accounts(
        &self,
        req: Request<wire::AccountQuery>,
    ) -> Result<Response<wire::AccountList>, Status> {
        let node = self.authorise(&req)?;
        let name = req.into_inner().name;
        let accounts: Vec<Account> = node
            .group
            .read(|s| s.accounts.values().filter(|a| name.is_empty() || a.name == name).cloned().collect());
        if accounts.is_empty() && !name.is_empty() {
            return Err(group_status(Refusal::NoSuchAccount(name).into()));
        }
        blocking(move || {
            let accounts = accounts
                .iter()
                .map(|a| account_message(&node, a).map_err(status))
                .collect::<Result<_, _>>()?;
            Ok(wire::AccountList { accounts })
        })
        .await
        .map(Response::new)
    }

    async fn set_limits(
        &self,
        req: Request<wire::SetLimitsRequest>,
    ) -> Result<Response<wire::Account>, Status> {
        let node = self.authorise(&req)?;
        let r = req.into_inner();
        let l = limits(r.soft_limit, r.hard_limit);
        let command = Command::SetLimits { name: r.name, soft_limit: l.soft, hard_limit: l.hard };
        write_account(node, r.request_id, command).await
    }

    async fn set_frozen(
        &self,
        req: Request<wire::SetFrozenRequest>,
    ) -> Result<Response<wire::Account>, Status> {
        let node = self.authorise(&req)?;
        let r = req.into_inner();
        info!(account = %r.name, frozen = r.frozen, "changing the account's frozen state");
        write_account(node, r.request_id, Command::SetFrozen { name: r.name, frozen: r.frozen }).await
    }

    /// Deletes the account from the group; every node that holds it deletes
    /// its data (a node with a client still writing does so when it stops).
    async fn delete_account(
        &self,
        req: Request<wire::AccountQuery>,
    ) -> Result<Response<wire::DeleteAccountReply>, Status> {
        let node = self.authorise(&req)?;
        let r = req.into_inner();
        let here = node.store.find_account(&r.name).map_err(status)?;
        let usage = match &here {
            Some(a) => Some(node.store.usage(a.id).map_err(status)?),
            None => None,
        };
        let request_id = or_new_request_id(r.request_id);
        node.group
            .write_as(request_id, Command::DeleteAccount { name: r.name.clone() })
            .await
            .map_err(group_status)?;
        let mirror = node.clone();
        blocking(move || sync_all(&mirror).map_err(status)).await?;
        info!(account = %r.name, "account deleted");
        let usage = usage.unwrap_or_default();
        Ok(Response::new(wire::DeleteAccountReply { objects: usage.objects, bytes: usage.pack_bytes }))
    }

    async fn check(&self, req: Request<wire::CheckRequest>) -> Result<Response<wire::CheckReply>, Status> {
        let node = self.authorise(&req)?;
        let r = req.into_inner();
        if r.all != r.name.is_empty() {
            return Err(Status::invalid_argument("name one account, or ask for all of them"));
        }
        blocking(move || {
            let mut accounts = Vec::new();
            for a in named(&node, &r.name).map_err(status)? {
                let c = node.store.check_account(a.id, r.fix).map_err(status)?;
                accounts.push(wire::AccountCheck {
                    account: c.account,
                    objects_checked: c.objects_checked,
                    bytes_checked: c.bytes_checked,
                    problems: c.problems,
                    repairs: c.repairs,
                });
            }
            Ok(wire::CheckReply { accounts })
        })
        .await
        .map(Response::new)
    }

    async fn usage(&self, req: Request<wire::AccountQuery>) -> Result<Response<wire::UsageReport>, Status> {
        let node = self.authorise(&req)?;
        let name = req.into_inner().name;
        blocking(move || {
            let mut accounts = Vec::new();
            for a in named(&node, &name).map_err(status)? {
                let s = node.store.space(a.id).map_err(status)?;
                accounts.push(wire::AccountSpace {
                    account: a.name,
                    current_bytes: s.current_bytes,
                    old_bytes: s.old_bytes,
                    deleted_bytes: s.deleted_bytes,
                    soft_limit: a.limits.soft,
                    hard_limit: a.limits.hard,
                    sets: s.sets,
                });
            }
            let discs = node.store.discs();
            let discs = discs
                .dirs()
                .iter()
                .zip(discs.usage().map_err(|e| status(e.into()))?)
                .map(|(path, bytes)| wire::DiscUsage { path: path.display().to_string(), bytes })
                .collect();
            Ok(wire::UsageReport { accounts, discs })
        })
        .await
        .map(Response::new)
    }

    async fn housekeep(
        &self,
        req: Request<wire::HousekeepRequest>,
    ) -> Result<Response<wire::HousekeepReply>, Status> {
        let node = self.authorise(&req)?;
        let r = req.into_inner();
        blocking(move || {
            if r.dry_run {
                let decisions = retention_dry_run(&node, &r.name).map_err(status)?;
                return Ok(wire::HousekeepReply { decisions, ..Default::default() });
            }
            let mut reply = wire::HousekeepReply::default();
            for (account, result) in housekeep_all(&node, &r.name).map_err(status)? {
                match result {
                    Ok(r) => {
                        reply.sets_expired += r.sets_expired.len() as u64;
                        reply.sets_forgotten += r.sets_forgotten.len() as u64;
                        reply.objects_freed += r.objects_freed;
                        reply.bytes_freed += r.bytes_freed;
                    }
                    Err(e) => reply.skipped.push(format!("{account}: {e}")),
                }
            }
            Ok(reply)
        })
        .await
        .map(Response::new)
    }

    async fn set_retention(
        &self,
        req: Request<wire::SetRetentionRequest>,
    ) -> Result<Response<wire::Account>, Status> {
        let node = self.authorise(&req)?;
        let r = req.into_inner();
        let policy = RetentionPolicy::from_wire(&r.retention.unwrap_or_default())
            .map_err(|e| Status::invalid_argument(format!("retention policy: {e}")))?;
        info!(account = %r.name, %policy, "changing the account's retention policy");
        write_account(node, r.request_id, Command::SetRetention { name: r.name, policy }).await
    }

    async fn status(&self, req: Request<wire::StatusRequest>) -> Result<Response<wire::NodeStatus>, Status> {
        let node = self.authorise(&req)?;
        blocking(move || crate::status::node_status(&node)).await.map(Response::new)
    }

    async fn raid_check(
        &self,
        req: Request<wire::RaidRequest>,
    ) -> Result<Response<wire::RaidReport>, Status> {
        let node = self.authorise(&req)?;
        blocking(move || {
            let discs = node.store.discs();
            let files = discs.names().map_err(|e| status(e.into()))?.len() as u64;
            let damage = discs.check().map_err(|e| status(e.into()))?;
            Ok(raid_report(discs, files, damage, Default::default()))
        })
        .await
        .map(Response::new)
    }

    async fn raid_rebuild(
        &self,
        req: Request<wire::RaidRequest>,
    ) -> Result<Response<wire::RaidReport>, Status> {
        let node = self.authorise(&req)?;
        blocking(move || {
            let discs = node.store.discs();
            let rebuilt = discs.rebuild().map_err(|e| status(e.into()))?;
            info!(stripes = rebuilt.stripes_rebuilt, "RAID rebuild done");
            let damage = discs.check().map_err(|e| status(e.into()))?;
            Ok(raid_report(discs, rebuilt.files_checked, damage, rebuilt))
        })
        .await
        .map(Response::new)
    }

    async fn cluster_init(
        &self,
        req: Request<wire::ClusterRequest>,
    ) -> Result<Response<wire::GroupStatus>, Status> {
        let node = self.authorise(&req)?;
        node.group.initialize().await.map_err(group_status)?;
        group_status_reply(&node).await
    }

    async fn cluster_join(
        &self,
        req: Request<wire::ClusterRequest>,
    ) -> Result<Response<wire::GroupStatus>, Status> {
        let node = self.authorise(&req)?;
        let address = req.into_inner().address;
        match node.group.join_via(&address).await {
            Ok(()) | Err(GroupError::AlreadyInGroup) => group_status_reply(&node).await,
            Err(e) => Err(group_status(e)),
        }
    }

    async fn cluster_leave(
        &self,
        req: Request<wire::ClusterRequest>,
    ) -> Result<Response<wire::GroupStatus>, Status> {
        let node = self.authorise(&req)?;
        node.group.leave(&req.into_inner().node).await.map_err(group_status)?;
        group_status_reply(&node).await
    }

    async fn cluster_allow(
        &self,
        req: Request<wire::ClusterRequest>,
    ) -> Result<Response<wire::GroupStatus>, Status> {
        let node = self.authorise(&req)?;
        let name = req.into_inner().node;
        node.group.write(Command::AllowJoin { node: name.clone() }).await.map_err(group_status)?;
        info!(node = %name, "node allowed to join");
        group_status_reply(&node).await
    }

    async fn cluster_status(
        &self,
        req: Request<wire::ClusterRequest>,
    ) -> Result<Response<wire::GroupStatus>, Status> {
        let node = self.authorise(&req)?;
        Ok(Response::new(status_message(node.group.status().await)))
    }

    async fn sync(&self, req: Request<wire::AccountQuery>) -> Result<Response<wire::SyncReply>, Status> {
        let node = self.authorise(&req)?;
        let name = req.into_inner().name;
        let account = node
            .group
            .read(|s| s.account_named(&name).map(|a| a.id))
            .ok_or_else(|| Status::not_found(format!("no account `{name}` in the server group")))?;
        if node.store.account(account).is_err() {
            return Err(Status::failed_precondition(format!(
                "account `{name}` is not held on node {}",
                node.name
            )));
        }
        let peers = node.syncer.sync_all_replicas(account).await;
        let peers = peers.into_iter().map(|(peer, result)| sync_message(peer, result)).collect();
        Ok(Response::new(wire::SyncReply { peers }))
    }

    async fn migrate(
        &self,
        req: Request<wire::MigrateRequest>,
    ) -> Result<Response<wire::MigrateReply>, Status> {
        let node = self.authorise(&req)?;
        let r = req.into_inner();
        Ok(Response::new(crate::migrate::migrate(&node, &r.account, &r.to).await?))
    }

    async fn create_group(
        &self,
        req: Request<wire::GroupRequest>,
    ) -> Result<Response<wire::AccountGroup>, Status> {
        let node = self.authorise(&req)?;
        groups::create(node, req.into_inner()).await.map(Response::new)
    }

    async fn set_group_limits(
        &self,
        req: Request<wire::GroupRequest>,
    ) -> Result<Response<wire::AccountGroup>, Status> {
        let node = self.authorise(&req)?;
        groups::set_limits(node, req.into_inner()).await.map(Response::new)
    }

    async fn delete_group(
        &self,
        req: Request<wire::GroupRequest>,
    ) -> Result<Response<wire::AccountGroup>, Status> {
        let node = self.authorise(&req)?;
        groups::delete(node, req.into_inner()).await.map(Response::new)
    }

    async fn groups(&self, req: Request<wire::GroupRequest>) -> Result<Response<wire::GroupList>, Status> {
        let node = self.authorise(&req)?;
        groups::list(&node, &req.into_inner().name).map(Response::new)
    }

    async fn set_account_group(
        &self,
        req: Request<wire::SetAccountGroupRequest>,
    ) -> Result<Response<wire::Account>, Status> {
        let node = self.authorise(&req)?;
        let r = req.into_inner();
        info!(account = %r.name, group = %r.group, "moving the account to another account group");
        write_account(node, r.request_id, Command::SetAccountGroup { name: r.name, group: r.group }).await
    }

    async fn set_silent_after(
        &self,
        req: Request<wire::SilentAfterRequest>,
    ) -> Result<Response<wire::SilentAfterReply>, Status> {
        let node = self.authorise(&req)?;
        groups::set_silent_after(node, req.into_inner()).await?;
        Ok(Response::new(wire::SilentAfterReply {}))
    }

    async fn purge(&self, req: Request<wire::AccountQuery>) -> Result<Response<wire::PurgeReply>, Status> {
        let node = self.authorise(&req)?;
        let mut syncs = Vec::new();
        let bytes = crate::migrate::purge(&node, &req.into_inner().name, &mut syncs).await?;
        Ok(Response::new(wire::PurgeReply { bytes, syncs }))
    }
}

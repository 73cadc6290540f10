//! The operator's gRPC service, open only to `admin:` certificates: accounts,
//! limits, freezing, checks and repairs, usage, housekeeping and node status.
//!
//! On the wire a limit of 0 means "no limit" (proto3's default), so a request
//! that leaves a limit out never locks an account out by accident.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use coffer_proto::tls::Role;
use coffer_proto::wire::{self, admin_server};
use tonic::{Request, Response, Status};
use tracing::info;

use coffer_raid::repair::RebuildReport;
use coffer_raid::{DiscSet, StripeDamage};

use crate::error::StoreError;
use crate::housekeeping::HousekeepReport;
use crate::index::{AccountRecord, Limits, now_ns};
use crate::server::Node;
use crate::service::{account_message, blocking, peer, status};
use crate::store::Store;

pub struct AdminService {
    node: Arc<Node>,
}

impl AdminService {
    pub fn new(node: Arc<Node>) -> Self {
        AdminService { node }
    }

    /// Checks the caller is an operator and hands back the node.
    fn authorise<T>(&self, req: &Request<T>) -> Result<Arc<Node>, Status> {
        match &peer(req)?.role {
            Role::Admin(_) => Ok(self.node.clone()),
            other => Err(Status::permission_denied(format!("{other} may not use the admin service"))),
        }
    }
}

fn limits(soft: u64, hard: u64) -> Limits {
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
pub fn housekeep_all(node: &Node, name: &str) -> Result<Vec<Housekept>, StoreError> {
    let accounts = named(node, name)?;
    let cutoff = now_ns() - node.grace.as_nanos() as i64;
    Ok(accounts
        .into_iter()
        .map(|a| {
            let result =
                node.store.writer(a.id).and_then(|mut w| w.housekeep(cutoff)).map_err(|e| e.to_string());
            (a.name, result)
        })
        .collect())
}

/// Applies `change` to the account called `name`; answers with the account.
async fn change_account(
    node: Arc<Node>,
    name: String,
    change: impl FnOnce(&Store, u64) -> Result<AccountRecord, StoreError> + Send + 'static,
) -> Result<Response<wire::Account>, Status> {
    blocking(move || {
        let id = node.store.account_named(&name).map_err(status)?.id;
        let record = change(&node.store, id).map_err(status)?;
        account_message(&node.store, &record).map_err(status)
    })
    .await
    .map(Response::new)
}

fn raid_report(
    discs: &DiscSet,
    files: u64,
    damage: Vec<StripeDamage>,
    rebuilt: RebuildReport,
) -> wire::RaidReport {
    wire::RaidReport {
        files,
        damage: damage
            .into_iter()
            .map(|d| wire::StripeDamage {
                file: d.name,
                stripe: d.stripe.map(|s| s as u32),
                problem: d.problem,
            })
            .collect(),
        stripes_rebuilt: rebuilt.stripes_rebuilt,
        unrecoverable: rebuilt.unrecoverable,
        discs: discs.stripes() as u32,
    }
}

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    async fn create_account(
        &self,
        req: Request<wire::CreateAccountRequest>,
    ) -> Result<Response<wire::Account>, Status> {
        let node = self.authorise(&req)?;
        let r = req.into_inner();
        blocking(move || {
            let record =
                node.store.create_account(&r.name, "", limits(r.soft_limit, r.hard_limit)).map_err(status)?;
            info!(account = %record.name, id = record.id, "account created");
            account_message(&node.store, &record).map_err(status)
        })
        .await
        .map(Response::new)
    }

    async fn accounts(
        &self,
        req: Request<wire::AccountQuery>,
    ) -> Result<Response<wire::AccountList>, Status> {
        let node = self.authorise(&req)?;
        let name = req.into_inner().name;
        blocking(move || {
            let accounts = named(&node, &name)
                .map_err(status)?
                .iter()
                .map(|r| account_message(&node.store, r).map_err(status))
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
        change_account(node, r.name, move |store, id| {
            store.set_limits(id, limits(r.soft_limit, r.hard_limit))
        })
        .await
    }

    async fn set_frozen(
        &self,
        req: Request<wire::SetFrozenRequest>,
    ) -> Result<Response<wire::Account>, Status> {
        let node = self.authorise(&req)?;
        let r = req.into_inner();
        change_account(node, r.name, move |store, id| {
            let record = store.set_frozen(id, r.frozen)?;
            info!(account = %record.name, frozen = r.frozen, "account frozen state changed");
            Ok(record)
        })
        .await
    }

    async fn delete_account(
        &self,
        req: Request<wire::AccountQuery>,
    ) -> Result<Response<wire::DeleteAccountReply>, Status> {
        let node = self.authorise(&req)?;
        let name = req.into_inner().name;
        blocking(move || {
            let account = node.store.account_named(&name).map_err(status)?;
            let usage = node.store.usage(account.id).map_err(status)?;
            let bytes = node.store.delete_account(account.id).map_err(status)?;
            info!(account = %name, bytes, "account deleted");
            Ok(wire::DeleteAccountReply { objects: usage.objects, bytes })
        })
        .await
        .map(Response::new)
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
        req: Request<wire::AccountQuery>,
    ) -> Result<Response<wire::HousekeepReply>, Status> {
        let node = self.authorise(&req)?;
        let name = req.into_inner().name;
        blocking(move || {
            let results = housekeep_all(&node, &name).map_err(status)?;
            let mut reply = wire::HousekeepReply::default();
            for (account, result) in results {
                match result {
                    Ok(r) => {
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

    async fn status(&self, req: Request<wire::StatusRequest>) -> Result<Response<wire::NodeStatus>, Status> {
        let node = self.authorise(&req)?;
        let accounts = node.store.accounts().map_err(status)?.len() as u64;
        Ok(Response::new(wire::NodeStatus {
            node: node.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            connections: node.connections.load(Ordering::Relaxed),
            handshakes_failed: node.handshakes_failed.load(Ordering::Relaxed),
            accounts,
            started_ns: node.started_ns,
            degraded_reads: node.store.discs().degraded_reads(),
        }))
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
}

//! What every gRPC service of the node shares: who is calling, running
//! blocking store work, checking ids from the wire, mapping errors to
//! statuses, and the wire form of accounts, sets, usage, the group, sync
//! and RAID reports.

use coffer_proto::ObjectId;
use coffer_proto::wire;
use coffer_raid::repair::RebuildReport;
use coffer_raid::{DiscSet, StripeDamage};
use coffer_replication::activity::Activity;
use coffer_replication::fastsync::{SyncError, SyncReport};
use coffer_replication::{Account, AccountGroup, GroupError, GroupStatus, Refusal};
use coffer_store::{SetRecord, StoreError, Usage};
use tonic::{Request, Status};

use crate::node::{Caller, Node};

/// The most ids one request may carry.
pub const MAX_IDS: usize = 65_536;

/// Maps a store error to the gRPC status a client sees; the message is the
/// store's own, which names the object, pack or account.
pub fn status(e: StoreError) -> Status {
    let message = e.to_string();
    match e {
        StoreError::InvalidName(_)
        | StoreError::InvalidLimits { .. }
        | StoreError::InvalidObject { .. }
        | StoreError::WrongKind { .. } => Status::invalid_argument(message),
        StoreError::AccountExists(_) => Status::already_exists(message),
        StoreError::NoSuchAccount(_)
        | StoreError::NoSuchSet(_)
        | StoreError::MissingObject(_)
        | StoreError::AccountDeleted(_) => Status::not_found(message),
        StoreError::Frozen(_) => Status::failed_precondition(message),
        StoreError::AccountBusy(_) => Status::aborted(message),
        StoreError::OverHardLimit { .. } => Status::resource_exhausted(message),
        StoreError::MissingReference { .. } => Status::failed_precondition(message),
        StoreError::CorruptObject { .. } | StoreError::CorruptPack { .. } | StoreError::CorruptIndex(_) => {
            Status::data_loss(message)
        }
        _ => Status::internal(message),
    }
}

/// Runs blocking store work (RocksDB, fsync) off the async threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Status::internal(format!("request failed: {e}")))?
}

/// Who is calling, from the connection's certificate.
pub fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions().get::<Caller>().cloned().ok_or_else(|| Status::unauthenticated("no TLS client identity"))
}

/// Parses ids from the wire; a wrong length is refused, naming its position.
pub fn parse_ids(raw: &[Vec<u8>]) -> Result<Vec<ObjectId>, Status> {
    if raw.len() > MAX_IDS {
        return Err(Status::invalid_argument(format!("{} ids in one request; at most {MAX_IDS}", raw.len())));
    }
    raw.iter().enumerate().map(|(i, bytes)| parse_id(bytes, i)).collect()
}

pub fn parse_id(bytes: &[u8], position: usize) -> Result<ObjectId, Status> {
    ObjectId::from_slice(bytes).ok_or_else(|| {
        Status::invalid_argument(format!(
            "id #{position} is {} bytes long; object ids are 32 bytes",
            bytes.len()
        ))
    })
}

pub fn set_message(id: &ObjectId, r: &SetRecord) -> wire::SetInfo {
    let h = &r.header;
    wire::SetInfo {
        id: id.as_bytes().to_vec(),
        time_ns: h.time_ns,
        marker: h.marker,
        roots: h.roots.iter().map(|r| r.as_bytes().to_vec()).collect(),
        files: h.stats.files,
        dirs: h.stats.dirs,
        bytes: h.stats.bytes,
        committed_ns: r.committed_ns,
        version: h.version as u32,
    }
}

/// Maps a fast-sync error to the status the calling node sees.
pub fn sync_status(e: SyncError) -> Status {
    match e {
        SyncError::Busy { .. } => Status::aborted(e.to_string()),
        other => Status::failed_precondition(other.to_string()),
    }
}

pub fn ids_message(ids: Vec<ObjectId>) -> Vec<Vec<u8>> {
    ids.into_iter().map(|id| id.as_bytes().to_vec()).collect()
}

/// The operator's request id, or a new one when the request carried none:
/// a change retried under the same id is applied once.
pub fn or_new_request_id(given: String) -> String {
    if given.is_empty() { coffer_proto::id::new_request_id() } else { given }
}

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
        GroupError::Refused(
            Refusal::InvalidName(_) | Refusal::Invalid(_) | Refusal::InvalidLimits { .. },
        ) => Status::invalid_argument(message),
        GroupError::Refused(Refusal::NoNodes | Refusal::Migration { .. } | Refusal::GroupInUse { .. })
        | GroupError::NotInGroup
        | GroupError::Membership(_) => Status::failed_precondition(message),
        GroupError::Storage(_) => Status::internal(message),
    }
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
        replicas: node.group.read(|s| a.replicas.iter().map(|id| s.member_name(*id)).collect()),
        primary: node.group.read(|s| s.member_name(a.primary)),
        held_here,
        sets_digest,
        retention: Some(a.retention.to_wire()),
        group: a.group.clone(),
        silent_after_secs: node.group.read(|s| node.alerts.silent_after_secs(s, a)),
        activity: Some(activity_message(node, &a.activity)),
        hard_limit_now: node.group.read(|s| s.hard_limit(a)),
    })
}

fn activity_message(node: &Node, a: &Activity) -> wire::ClientActivity {
    wire::ClientActivity {
        login_ns: a.login_ns,
        client_version: a.client_version.clone(),
        host: a.host.clone(),
        node: if a.login_ns == 0 { String::new() } else { node.group.read(|s| s.member_name(a.node)) },
        commit_ns: a.commit_ns,
        error: a.error.clone(),
        error_ns: a.error_ns,
        live_bytes: a.live_bytes,
    }
}

/// The wire form of an account group, with its accounts and their usage.
pub fn group_message(node: &Node, g: &AccountGroup) -> wire::AccountGroup {
    node.group.read(|s| wire::AccountGroup {
        name: g.name.clone(),
        soft_limit: g.soft_limit,
        hard_limit: g.hard_limit,
        silent_after_secs: g.silent_after_secs,
        accounts: s.group_accounts(&g.name).map(|a| a.name.clone()).collect(),
        used_bytes: s.group_usage(&g.name),
    })
}

pub fn usage_message(u: &Usage) -> wire::AccountUsage {
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

pub fn sync_message(peer: String, result: Result<SyncReport, SyncError>) -> wire::SyncPeerReport {
    match result {
        Err(e) => wire::SyncPeerReport { peer, error: e.to_string(), ..Default::default() },
        Ok(r) => wire::SyncPeerReport {
            peer,
            error: String::new(),
            round_trips: r.round_trips,
            in_sync: r.in_sync,
            sets_fetched: r.sets_fetched,
            sets_sent: r.sets_sent,
            tombstones_applied: r.tombstones_applied,
            objects_copied: r.objects_copied,
            bytes_copied: r.bytes_copied,
            marker: r.marker,
        },
    }
}

pub fn raid_report(
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

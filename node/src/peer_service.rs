//! The node-to-node gRPC service, open only to `node:` certificates: Raft's
//! messages and requests forwarded to the leader, handed to the group; and
//! the far side of fast sync, answered by this node's [`LocalReplica`] of
//! the account.

use std::sync::Arc;

use coffer_proto::SetsDigest;
use coffer_proto::tls::Role;
use coffer_proto::wire::{self, peer_server};
use coffer_replication::fastsync::{Probe, Replica, Summary};
use coffer_replication::{Group, State};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::mirror::sync_account;
use crate::node::Node;
use crate::replica::LocalReplica;
use crate::rpc::{blocking, caller, ids_message, parse_ids, status, sync_status};
use crate::transfer::stream_objects;

pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    pub fn new(node: Arc<Node>) -> Self {
        PeerService { node }
    }

    /// This node's replica of `account`, which the group must place here.
    async fn replica(&self, account: u64) -> Result<LocalReplica, Status> {
        let node = self.node.clone();
        let record = node
            .group
            .read(|s| s.accounts.get(&account).cloned())
            .ok_or_else(|| Status::not_found(format!("no account #{account} in the group")))?;
        if !record.replicas.contains(&node.group.id()) {
            return Err(Status::failed_precondition(format!(
                "account `{}` is not held on node {}",
                record.name, node.name
            )));
        }
        let store = node.store.clone();
        let name = node.name.clone();
        blocking(move || sync_account(&node, &record).map_err(status)).await?;
        Ok(LocalReplica::new(store, account, &name))
    }

    /// Checks the caller is a node of this group (see [`admitted`]).
    /// Hearing from it means it is reachable (again), so syncs owed to it
    /// need not wait out their backoff.
    fn authorise<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.authorise_joining(req, None)
    }

    /// Like [`Self::authorise`]; `joining` is the name a join request asks
    /// to join under, which an invited node may send before it is a member.
    fn authorise_joining<T>(&self, req: &Request<T>, joining: Option<&str>) -> Result<(), Status> {
        let name = match &caller(req)?.role {
            Role::Node(name) => name.clone(),
            other => return Err(Status::permission_denied(format!("{other} may not use the peer service"))),
        };
        if !self.node.group.read(|s| admitted(s, &name, joining)) {
            return Err(Status::permission_denied(format!(
                "node `{name}` is not a member of this group; an operator lets a node in with \
                 `coffer-admin cluster join`"
            )));
        }
        self.node.syncer.heard_from(&name);
        Ok(())
    }

    /// The account changed here by sync: the other replicas may want it too.
    fn changed(&self, account: u64) {
        self.node.syncer.changed(account);
    }
}

/// Whether node `name` may call this node: a member of the group; any node
/// while this one is in no group yet (so that a leader can bring it in);
/// and, for its own join request only, a node an operator invited. A node
/// that left the group can do nothing more here.
fn admitted(state: &State, name: &str, joining: Option<&str>) -> bool {
    let in_a_group = state.membership.membership().nodes().next().is_some();
    state.is_member(name) || !in_a_group || (joining == Some(name) && state.invited.contains(name))
}

#[tonic::async_trait]
impl peer_server::Peer for PeerService {
    async fn raft(&self, req: Request<wire::PeerMessage>) -> Result<Response<wire::PeerMessage>, Status> {
        self.authorise(&req)?;
        let message = req.into_inner();
        let json = self
            .node
            .group
            .handle_raft(&message.kind, &message.json)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(wire::PeerMessage { kind: message.kind, json }))
    }

    async fn forward(&self, req: Request<wire::PeerMessage>) -> Result<Response<wire::PeerMessage>, Status> {
        let joining = Group::join_request_name(&req.get_ref().json);
        self.authorise_joining(&req, joining.as_deref())?;
        let message = req.into_inner();
        let json = self.node.group.handle_forward(&message.json).await;
        Ok(Response::new(wire::PeerMessage { kind: message.kind, json }))
    }

    async fn sync_state(
        &self,
        req: Request<wire::SyncStateRequest>,
    ) -> Result<Response<wire::SyncStateReply>, Status> {
        self.authorise(&req)?;
        let req = req.into_inner();
        let probe = SetsDigest::from_slice(&req.digest).map(|digest| Summary { marker: req.marker, digest });
        let probe = self.replica(req.account).await?.state(probe).await.map_err(sync_status)?;
        let reply = match probe {
            Probe::InSync(s) => wire::SyncStateReply {
                marker: s.marker,
                digest: s.digest.as_bytes().to_vec(),
                in_sync: true,
                ..Default::default()
            },
            Probe::Differs(s, listing) => wire::SyncStateReply {
                marker: s.marker,
                digest: s.digest.as_bytes().to_vec(),
                in_sync: false,
                sets: listing
                    .sets
                    .into_iter()
                    .map(|(id, committed_ns)| wire::SyncSet { id: id.as_bytes().to_vec(), committed_ns })
                    .collect(),
                tombstones: ids_message(listing.tombstones.into_iter().collect()),
            },
        };
        Ok(Response::new(reply))
    }

    async fn sync_missing(&self, req: Request<wire::SyncIds>) -> Result<Response<wire::SyncIds>, Status> {
        self.authorise(&req)?;
        let req = req.into_inner();
        let ids = parse_ids(&req.ids)?;
        let missing = self.replica(req.account).await?.missing(ids).await.map_err(sync_status)?;
        Ok(Response::new(wire::SyncIds { account: req.account, ids: ids_message(missing) }))
    }

    type SyncFetchStream = ReceiverStream<Result<wire::ObjectBatch, Status>>;

    async fn sync_fetch(
        &self,
        req: Request<wire::SyncIds>,
    ) -> Result<Response<Self::SyncFetchStream>, Status> {
        self.authorise(&req)?;
        let req = req.into_inner();
        let ids = parse_ids(&req.ids)?;
        self.replica(req.account).await?;
        Ok(Response::new(stream_objects(self.node.store.clone(), req.account, ids, None)))
    }

    async fn sync_put(&self, req: Request<wire::SyncObjects>) -> Result<Response<wire::SyncAck>, Status> {
        self.authorise(&req)?;
        let req = req.into_inner();
        let ids = parse_ids(&req.objects.iter().map(|o| o.id.clone()).collect::<Vec<_>>())?;
        let objects = ids.into_iter().zip(req.objects.into_iter().map(|o| o.envelope)).collect();
        self.replica(req.account).await?.put(objects).await.map_err(sync_status)?;
        Ok(Response::new(wire::SyncAck { marker: 0 }))
    }

    async fn sync_commit(
        &self,
        req: Request<wire::SyncCommitRequest>,
    ) -> Result<Response<wire::SyncAck>, Status> {
        self.authorise(&req)?;
        let req = req.into_inner();
        let id = parse_ids(std::slice::from_ref(&req.id))?[0];
        let replica = self.replica(req.account).await?;
        let marker = replica.commit(id, req.envelope, req.committed_ns).await.map_err(sync_status)?;
        self.changed(req.account);
        Ok(Response::new(wire::SyncAck { marker }))
    }

    async fn sync_bury(&self, req: Request<wire::SyncIds>) -> Result<Response<wire::SyncAck>, Status> {
        self.authorise(&req)?;
        let req = req.into_inner();
        let ids = parse_ids(&req.ids)?;
        let marker = self.replica(req.account).await?.bury(ids).await.map_err(sync_status)?;
        self.changed(req.account);
        Ok(Response::new(wire::SyncAck { marker }))
    }

    async fn sync_adopt(
        &self,
        req: Request<wire::SyncAdoptRequest>,
    ) -> Result<Response<wire::SyncAck>, Status> {
        self.authorise(&req)?;
        let req = req.into_inner();
        let marker = self.replica(req.account).await?.adopt(req.marker).await.map_err(sync_status)?;
        Ok(Response::new(wire::SyncAck { marker }))
    }
}

//! The node-to-node gRPC service, open only to `node:` certificates: Raft's
//! messages and requests forwarded to the leader, handed to the group.

use std::sync::Arc;

use coffer_proto::tls::Role;
use coffer_proto::wire::{self, peer_server};
use coffer_replication::Group;
use tonic::{Request, Response, Status};

use crate::service::peer;

pub struct PeerService {
    group: Arc<Group>,
}

impl PeerService {
    pub fn new(group: Arc<Group>) -> Self {
        PeerService { group }
    }
}

fn authorise<T>(req: &Request<T>) -> Result<(), Status> {
    match &peer(req)?.role {
        Role::Node(_) => Ok(()),
        other => Err(Status::permission_denied(format!("{other} may not use the peer service"))),
    }
}

#[tonic::async_trait]
impl peer_server::Peer for PeerService {
    async fn raft(&self, req: Request<wire::PeerMessage>) -> Result<Response<wire::PeerMessage>, Status> {
        authorise(&req)?;
        let message = req.into_inner();
        let json = self
            .group
            .handle_raft(&message.kind, &message.json)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(wire::PeerMessage { kind: message.kind, json }))
    }

    async fn forward(&self, req: Request<wire::PeerMessage>) -> Result<Response<wire::PeerMessage>, Status> {
        authorise(&req)?;
        let message = req.into_inner();
        let json = self.group.handle_forward(&message.json).await;
        Ok(Response::new(wire::PeerMessage { kind: message.kind, json }))
    }
}

//! Raft's network: node to node over the `Peer` gRPC service, TLS with the
//! node's own certificate.
//!
//! There is one tonic channel per peer address, kept for the life of the
//! process; tonic reconnects it when the peer comes back. Raft messages and
//! forwarded requests travel as JSON in a `PeerMessage`; the reply carries
//! the remote `Result`, so a refusal on the far side arrives as itself, not
//! as a transport error.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use coffer_proto::StoreUrl;
use coffer_proto::wire::PeerMessage;
use coffer_proto::wire::peer_client::PeerClient;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use rustls::ClientConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use crate::types::{Member, NodeId, TypeConfig};

/// Why a call to a peer failed before the peer could answer it.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer {addr}: {problem}")]
    Unreachable { addr: String, problem: String },
    #[error("peer {addr} sent a reply that does not decode: {problem}")]
    BadReply { addr: String, problem: String },
}

/// The channels to every peer this node has talked to.
pub struct Peers {
    tls: Arc<ClientConfig>,
    /// Peer address → the address to dial instead (a tunnel or proxy).
    routes: BTreeMap<String, String>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Peers {
    pub fn new(tls: Arc<ClientConfig>, routes: BTreeMap<String, String>) -> Self {
        Peers { tls, routes, channels: Mutex::new(HashMap::new()) }
    }

    fn channel(&self, addr: &str) -> Result<Channel, PeerError> {
        let mut channels = self.channels.lock().unwrap();
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let unreachable = |problem: String| PeerError::Unreachable { addr: addr.to_string(), problem };
        let dial = self.routes.get(addr).map_or(addr, String::as_str);
        let (host, port) = StoreUrl::node(dial).map_err(|e| unreachable(e.to_string()))?;
        let channel = coffer_proto::tls::connect_lazy(&host, port, self.tls.clone())
            .map_err(|e| unreachable(e.to_string()))?;
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// A client of the `Peer` service at `addr`, on the shared channel.
    pub fn client(&self, addr: &str) -> Result<PeerClient<Channel>, PeerError> {
        Ok(PeerClient::new(self.channel(addr)?)
            .max_decoding_message_size(coffer_proto::tls::MAX_MESSAGE)
            .max_encoding_message_size(coffer_proto::tls::MAX_MESSAGE))
    }

    /// Sends `request` as `kind` to the `Raft` or `Forward` method and decodes
    /// the reply.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        forward: bool,
        kind: &str,
        request: &Req,
    ) -> Result<Resp, PeerError> {
        let mut client = self.client(addr)?;
        let message = PeerMessage { kind: kind.to_string(), json: crate::logstore::encode(request) };
        let reply = if forward { client.forward(message).await } else { client.raft(message).await };
        let reply = reply.map_err(|status| PeerError::Unreachable {
            addr: addr.to_string(),
            problem: format!("{:?}: {}", status.code(), status.message()),
        })?;
        serde_json::from_slice(&reply.into_inner().json)
            .map_err(|e| PeerError::BadReply { addr: addr.to_string(), problem: e.to_string() })
    }
}

/// Hands openraft one [`PeerConnection`] per target.
#[derive(Clone)]
pub struct Network {
    peers: Arc<Peers>,
}

impl Network {
    pub fn new(peers: Arc<Peers>) -> Self {
        Network { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerConnection {
        PeerConnection { peers: self.peers.clone(), target, addr: node.addr.clone() }
    }
}

pub struct PeerConnection {
    peers: Arc<Peers>,
    target: NodeId,
    addr: String,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, Member, RaftError<NodeId, E>>>;

impl PeerConnection {
    async fn send<Req, Resp, E>(&self, kind: &str, request: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let call =
            self.peers.call::<Req, Result<Resp, RaftError<NodeId, E>>>(&self.addr, false, kind, request);
        let reply = match tokio::time::timeout(option.hard_ttl(), call).await {
            Err(_) => {
                let late =
                    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{} timed out", self.addr));
                return Err(RPCError::Unreachable(Unreachable::new(&late)));
            }
            Ok(Err(e @ PeerError::Unreachable { .. })) => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Err(e)) => return Err(RPCError::Network(NetworkError::new(&e))),
            Ok(Ok(reply)) => reply,
        };
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.send("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.send("snapshot", &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        self.send("vote", &rpc, &option).await
    }
}

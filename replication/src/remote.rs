//! A peer's replica of one account, reached over the `Peer` service: the far
//! side of a fast sync. Each method is one call, counted, so a sync can
//! report its round trips.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use coffer_proto::wire::{self, peer_client::PeerClient};
use coffer_proto::{ObjectId, SetsDigest};
use tonic::transport::Channel;

use crate::fastsync::{Listing, Probe, Replica, Summary, SyncError};
use crate::network::Peers;

pub struct RemoteReplica {
    peers: Arc<Peers>,
    /// The peer's node name, for messages.
    name: String,
    addr: String,
    account: u64,
    calls: AtomicU64,
}

impl RemoteReplica {
    pub fn new(peers: Arc<Peers>, name: &str, addr: &str, account: u64) -> Self {
        RemoteReplica { peers, name: name.into(), addr: addr.into(), account, calls: AtomicU64::new(0) }
    }

    fn client(&self) -> Result<PeerClient<Channel>, SyncError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.peers.client(&self.addr).map_err(|e| self.refused(e.to_string()))
    }

    fn refused(&self, problem: String) -> SyncError {
        SyncError::Replica { replica: self.name.clone(), problem }
    }

    fn status(&self, status: tonic::Status) -> SyncError {
        match status.code() {
            tonic::Code::Aborted => SyncError::Busy { replica: self.name.clone() },
            code => self.refused(format!("{code:?}: {}", status.message())),
        }
    }

    fn id(&self, bytes: &[u8]) -> Result<ObjectId, SyncError> {
        ObjectId::from_slice(bytes)
            .ok_or_else(|| self.refused(format!("sent a {}-byte object id", bytes.len())))
    }

    fn ids_message(&self, ids: &[ObjectId]) -> wire::SyncIds {
        wire::SyncIds { account: self.account, ids: ids.iter().map(|id| id.as_bytes().to_vec()).collect() }
    }

    fn listing(&self, reply: &wire::SyncStateReply) -> Result<Listing, SyncError> {
        let mut listing = Listing::default();
        for set in &reply.sets {
            listing.sets.insert(self.id(&set.id)?, set.committed_ns);
        }
        for id in &reply.tombstones {
            listing.tombstones.insert(self.id(id)?);
        }
        Ok(listing)
    }
}

impl Replica for RemoteReplica {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn round_trips(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    async fn state(&self, probe: Option<Summary>) -> Result<Probe, SyncError> {
        let request = wire::SyncStateRequest {
            account: self.account,
            marker: probe.map_or(0, |p| p.marker),
            digest: probe.map(|p| p.digest.as_bytes().to_vec()).unwrap_or_default(),
        };
        let reply = self.client()?.sync_state(request).await.map_err(|s| self.status(s))?.into_inner();
        let digest = SetsDigest::from_slice(&reply.digest)
            .ok_or_else(|| self.refused("sent a malformed digest".into()))?;
        let summary = Summary { marker: reply.marker, digest };
        if reply.in_sync {
            return Ok(Probe::InSync(summary));
        }
        Ok(Probe::Differs(summary, self.listing(&reply)?))
    }

    async fn missing(&self, ids: Vec<ObjectId>) -> Result<Vec<ObjectId>, SyncError> {
        let reply = self.client()?.sync_missing(self.ids_message(&ids)).await.map_err(|s| self.status(s))?;
        reply.into_inner().ids.iter().map(|id| self.id(id)).collect()
    }

    async fn fetch(&self, ids: Vec<ObjectId>) -> Result<Vec<(ObjectId, Vec<u8>)>, SyncError> {
        let mut stream =
            self.client()?.sync_fetch(self.ids_message(&ids)).await.map_err(|s| self.status(s))?.into_inner();
        let mut objects = Vec::with_capacity(ids.len());
        while let Some(batch) = stream.message().await.map_err(|s| self.status(s))? {
            for object in batch.objects {
                objects.push((self.id(&object.id)?, object.envelope));
            }
        }
        Ok(objects)
    }

    async fn put(&self, objects: Vec<(ObjectId, Vec<u8>)>) -> Result<(), SyncError> {
        let objects = objects
            .into_iter()
            .map(|(id, envelope)| wire::StoredObject { id: id.as_bytes().to_vec(), envelope })
            .collect();
        let request = wire::SyncObjects { account: self.account, objects };
        self.client()?.sync_put(request).await.map_err(|s| self.status(s))?;
        Ok(())
    }

    async fn commit(&self, id: ObjectId, envelope: Vec<u8>, committed_ns: i64) -> Result<u64, SyncError> {
        let request = wire::SyncCommitRequest {
            account: self.account,
            id: id.as_bytes().to_vec(),
            envelope,
            committed_ns,
        };
        let reply = self.client()?.sync_commit(request).await.map_err(|s| self.status(s))?;
        Ok(reply.into_inner().marker)
    }

    async fn bury(&self, ids: Vec<ObjectId>) -> Result<u64, SyncError> {
        let reply = self.client()?.sync_bury(self.ids_message(&ids)).await.map_err(|s| self.status(s))?;
        Ok(reply.into_inner().marker)
    }

    async fn adopt(&self, marker: u64) -> Result<u64, SyncError> {
        let request = wire::SyncAdoptRequest { account: self.account, marker };
        let reply = self.client()?.sync_adopt(request).await.map_err(|s| self.status(s))?;
        Ok(reply.into_inner().marker)
    }
}

//! This node's replica of one account, as fast sync sees it: the
//! [`Replica`] trait over the store engine. The peer service answers a
//! remote sync with the same calls.
//!
//! Writes take the account's writer for one call at a time through
//! [`Store::background_writer`], which gives way to clients: while a client
//! writes to the account, or waits to, the sync stops with "busy" and the
//! journal brings it back later.

use coffer_proto::ObjectId;
use coffer_replication::fastsync::{Listing, Probe, Replica, Summary, SyncError};

use coffer_store::{AccountId, AccountWriter, OpenPacks, Store, StoreError};

pub struct LocalReplica {
    store: Store,
    account: AccountId,
    /// This node's name, for messages.
    name: String,
}

impl LocalReplica {
    pub fn new(store: Store, account: AccountId, name: &str) -> Self {
        LocalReplica { store, account, name: name.into() }
    }

    fn error(&self, e: StoreError) -> SyncError {
        match e {
            StoreError::AccountBusy(_) => SyncError::Busy { replica: self.name.clone() },
            other => SyncError::Replica { replica: self.name.clone(), problem: other.to_string() },
        }
    }

    /// Runs store work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store, AccountId) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, SyncError> {
        let (store, account) = (self.store.clone(), self.account);
        match tokio::task::spawn_blocking(move || work(&store, account)).await {
            Ok(result) => result.map_err(|e| self.error(e)),
            Err(e) => {
                Err(SyncError::Replica { replica: self.name.clone(), problem: format!("sync task: {e}") })
            }
        }
    }

    /// Runs `work` with the account's writer, if no client wants it.
    async fn writing<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut AccountWriter) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, SyncError> {
        self.blocking(move |store, account| work(&mut store.background_writer(account)?)).await
    }
}

impl Replica for LocalReplica {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn round_trips(&self) -> u64 {
        0
    }

    async fn state(&self, probe: Option<Summary>) -> Result<Probe, SyncError> {
        self.blocking(move |store, account| {
            let (marker, digest) = store.summary(account)?;
            let summary = Summary { marker, digest };
            if probe == Some(summary) {
                return Ok(Probe::InSync(summary));
            }
            let listing = Listing {
                sets: store.sets(account)?.into_iter().map(|(id, r)| (id, r.committed_ns)).collect(),
                tombstones: store.tombstones(account)?.into_iter().map(|(id, _)| id).collect(),
            };
            Ok(Probe::Differs(summary, listing))
        })
        .await
    }

    async fn missing(&self, ids: Vec<ObjectId>) -> Result<Vec<ObjectId>, SyncError> {
        self.blocking(move |store, account| {
            let present = store.has_many(account, &ids)?;
            Ok(ids.into_iter().zip(present).filter(|(_, p)| !p).map(|(id, _)| id).collect())
        })
        .await
    }

    async fn fetch(&self, ids: Vec<ObjectId>) -> Result<Vec<(ObjectId, Vec<u8>)>, SyncError> {
        self.blocking(move |store, account| {
            let mut packs = OpenPacks::default();
            ids.into_iter().map(|id| Ok((id, store.get_from(&mut packs, account, &id)?))).collect()
        })
        .await
    }

    async fn put(&self, objects: Vec<(ObjectId, Vec<u8>)>) -> Result<(), SyncError> {
        self.writing(move |w| {
            for (id, envelope) in objects {
                w.put(id, &envelope)?;
            }
            w.flush()
        })
        .await
    }

    async fn commit(&self, id: ObjectId, envelope: Vec<u8>, committed_ns: i64) -> Result<u64, SyncError> {
        self.writing(move |w| w.commit_set_at(id, &envelope, committed_ns)).await
    }

    async fn bury(&self, ids: Vec<ObjectId>) -> Result<u64, SyncError> {
        self.writing(move |w| {
            for id in &ids {
                w.bury(id)?;
            }
            w.marker()
        })
        .await
    }

    async fn adopt(&self, marker: u64) -> Result<u64, SyncError> {
        self.writing(move |w| w.adopt_marker(marker)).await
    }
}

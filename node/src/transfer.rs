//! Objects streamed out of the node (downloads, fast-sync fetches), and how
//! many transfers one account may run at once.
//!
//! A signed-in client must not starve the node. Each account may run at most
//! [`MAX_TRANSFERS`] uploads and downloads at a time; a download reads each
//! batch on a blocking thread but waits for its reader on the async side,
//! and gives up on a reader that takes nothing for [`STALLED_READER`], so a
//! client that opens downloads and never reads them holds neither a blocking
//! thread nor memory for long.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_proto::ObjectId;
use coffer_proto::batch::Batcher;
use coffer_proto::wire;
use coffer_store::{AccountId, OpenPacks, Store};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::debug;

use crate::rpc::status;

/// Uploads and downloads one account may run at once.
pub const MAX_TRANSFERS: usize = 32;
/// How long a download waits for its reader to take the next batch.
pub const STALLED_READER: Duration = Duration::from_secs(60);
/// Download batches are cut at about this many bytes.
const DOWNLOAD_BATCH: usize = 4 << 20;

/// The transfers running for each account.
#[derive(Default)]
pub struct Transfers {
    running: Mutex<HashMap<AccountId, Arc<Semaphore>>>,
}

impl Transfers {
    /// A place for one more transfer of `account`, held until the permit
    /// is dropped; refused at once when the account has its fill.
    pub fn start(&self, account: AccountId) -> Result<OwnedSemaphorePermit, Status> {
        let semaphore = self
            .running
            .lock()
            .unwrap()
            .entry(account)
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_TRANSFERS)))
            .clone();
        semaphore.try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "account #{account} already has {MAX_TRANSFERS} uploads and downloads running; \
                 finish or cancel some first"
            ))
        })
    }
}

/// Streams objects of an account in batches of about 4 MiB (never past the
/// transport's limit), each id once; a missing or corrupt object ends the
/// stream with its error. `permit`, if any, is held until the stream ends.
pub fn stream_objects(
    store: Store,
    account: AccountId,
    ids: Vec<ObjectId>,
    permit: Option<OwnedSemaphorePermit>,
) -> ReceiverStream<Result<wire::ObjectBatch, Status>> {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let _permit = permit;
        let mut seen = HashSet::new();
        let ids: Vec<ObjectId> = ids.into_iter().filter(|id| seen.insert(*id)).collect();
        let mut reading = Some(Reading {
            ids: ids.into_iter(),
            batcher: Batcher::new(DOWNLOAD_BATCH),
            packs: OpenPacks::default(),
        });
        while let Some(mut state) = reading.take() {
            let store = store.clone();
            let Ok((state, messages)) = tokio::task::spawn_blocking(move || {
                let messages = state.next(&store, account);
                (state, messages)
            })
            .await
            else {
                return;
            };
            if messages.is_empty() {
                return;
            }
            let ended = matches!(messages.last(), Some(Err(_)));
            for message in messages {
                match tokio::time::timeout(STALLED_READER, tx.send(message)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        return debug!(account, "download stopped: its reader took nothing for a minute");
                    }
                }
            }
            if !ended {
                reading = Some(state);
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Where a download is: the ids still to read and the batch being filled.
struct Reading {
    ids: std::vec::IntoIter<ObjectId>,
    batcher: Batcher<wire::StoredObject>,
    /// Kept open from one batch to the next.
    packs: OpenPacks,
}

impl Reading {
    /// Reads until a batch is ready: the messages to send next (none when
    /// everything was sent; a batch then an error when an object cannot be read).
    fn next(&mut self, store: &Store, account: AccountId) -> Vec<Result<wire::ObjectBatch, Status>> {
        let batch = |objects| Ok(wire::ObjectBatch { objects });
        for id in self.ids.by_ref() {
            match store.get_from(&mut self.packs, account, &id) {
                Ok(envelope) => {
                    let len = envelope.len();
                    let object = wire::StoredObject { id: id.as_bytes().to_vec(), envelope };
                    if let Some(ready) = self.batcher.push(object, len) {
                        return vec![batch(ready)];
                    }
                }
                Err(e) => {
                    let pending = (!self.batcher.is_empty()).then(|| batch(self.batcher.take()));
                    return pending.into_iter().chain([Err(status(e))]).collect();
                }
            }
        }
        if self.batcher.is_empty() { Vec::new() } else { vec![batch(self.batcher.take())] }
    }
}

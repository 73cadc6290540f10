//! A node session's upload pipeline.
//!
//! Objects handed over by the scanner's threads are cut into batches on the
//! caller's thread. A task on the network runtime asks the node, with one
//! `Have` per batch, which of them it already holds (left by an interrupted
//! run, or put by another path), drops those, and sends the rest down one
//! long-lived upload stream. Each step has a bounded queue, so reading and
//! sealing, the existence checks and the transfer overlap with several
//! batches in flight, and memory stays bounded: a few batches per queue.
//!
//! Ordering is kept end to end, so a tree always reaches the node after the
//! chunks it names (the node refuses an object naming one it lacks). What
//! the node says it holds is knowledge about that node: the session counts
//! everything handed to the pipeline as vouched for (see `remote`).

use coffer_proto::batch::Batcher;
use coffer_proto::wire::store_client::StoreClient;
use coffer_proto::wire::{self, ObjectBatch, StoredObject};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

/// Upload batches are sent once they hold this many bytes (and cut before
/// an object that would take them past the transport's limit).
const UPLOAD_BATCH: usize = 2 << 20;
/// ...or this many objects, so one `Have` names them all.
const BATCH_OBJECTS: usize = 8_192;
/// Batches waiting for their existence check.
const CHECK_QUEUE: usize = 2;
/// Checked batches waiting for the transport.
const SEND_QUEUE: usize = 4;

/// Objects the node turned out to hold already, so not sent again.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub objects: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for Skipped {
    fn add_assign(&mut self, other: Skipped) {
        self.objects += other.objects;
        self.bytes += other.bytes;
    }
}

/// The pipeline has stopped (the node ended the upload, or a check
/// failed); [`Upload::finish`] says why.
#[derive(Debug)]
pub struct Stopped;

pub struct Upload {
    batch: Batcher<StoredObject>,
    checks: mpsc::Sender<Vec<StoredObject>>,
    task: JoinHandle<Result<Skipped, Status>>,
}

impl Upload {
    pub fn open(runtime: &Runtime, client: StoreClient<Channel>) -> Upload {
        let (checks, batches) = mpsc::channel(CHECK_QUEUE);
        let task = runtime.spawn(run(client, batches));
        Upload { batch: Batcher::new(UPLOAD_BATCH).at_most(BATCH_OBJECTS), checks, task }
    }

    /// Adds an object; a full batch enters the pipeline, waiting while its
    /// queue is full.
    pub fn push(&mut self, runtime: &Runtime, object: StoredObject) -> Result<(), Stopped> {
        let len = object.envelope.len();
        match self.batch.push(object, len) {
            Some(ready) => runtime.block_on(self.checks.send(ready)).map_err(|_| Stopped),
            None => Ok(()),
        }
    }

    /// Sends what is left, closes the stream and waits until the node has
    /// made everything durable.
    pub fn finish(mut self, runtime: &Runtime) -> Result<Skipped, Status> {
        if !self.batch.is_empty() {
            // A stopped pipeline's reason comes from the task below.
            let _ = runtime.block_on(self.checks.send(self.batch.take()));
        }
        drop(self.checks);
        runtime.block_on(self.task).map_err(|e| Status::internal(format!("upload task failed: {e}")))?
    }
}

/// The pipeline's task: checks each batch, then queues the rest for the
/// upload stream; ends when the caller closes its queue, with the node's
/// answer to the whole upload.
async fn run(
    mut client: StoreClient<Channel>,
    mut batches: mpsc::Receiver<Vec<StoredObject>>,
) -> Result<Skipped, Status> {
    let (send, outgoing) = mpsc::channel(SEND_QUEUE);
    let mut uploader = client.clone();
    let reply = tokio::spawn(async move { uploader.upload(ReceiverStream::new(outgoing)).await });
    let mut skipped = Skipped::default();
    let checked = async {
        while let Some(objects) = batches.recv().await {
            let objects = drop_held(&mut client, objects, &mut skipped).await?;
            if !objects.is_empty() && send.send(ObjectBatch { objects }).await.is_err() {
                break; // The node ended the stream; its reply says why.
            }
        }
        Ok::<_, Status>(())
    }
    .await;
    // Whatever arrived is kept by the node; closing the stream asks it to
    // make that durable, even when a check failed.
    drop(send);
    let replied = reply.await.map_err(|e| Status::internal(format!("upload task failed: {e}")))?;
    replied?;
    checked?;
    Ok(skipped)
}

/// The objects of a batch the node does not hold yet.
async fn drop_held(
    client: &mut StoreClient<Channel>,
    objects: Vec<StoredObject>,
    skipped: &mut Skipped,
) -> Result<Vec<StoredObject>, Status> {
    let ids = objects.iter().map(|o| o.id.clone()).collect();
    let present = client.have(wire::HaveRequest { ids }).await?.into_inner().present;
    if present.len() != objects.len() {
        return Err(Status::internal(format!(
            "the node answered {} flags for {} ids",
            present.len(),
            objects.len()
        )));
    }
    let mut missing = Vec::with_capacity(objects.len());
    for (object, held) in objects.into_iter().zip(present) {
        if held {
            *skipped += Skipped { objects: 1, bytes: object.envelope.len() as u64 };
        } else {
            missing.push(object);
        }
    }
    Ok(missing)
}

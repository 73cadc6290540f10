//! Fast sync: bringing two replicas of one account to the same backup sets.
//!
//! The algorithm is written once, over the [`Replica`] trait, and runs
//! between this node's copy of the account (the node crate implements it on
//! its store engine) and a peer's copy (over the `Peer` service, see
//! [`crate::remote`]):
//!
//! 1. Send our summary (client store marker and [`SetsDigest`]). When the
//!    peer's summary is equal the sync is over, in one round trip.
//! 2. Otherwise the peer answers with its set ids and tombstones. Tombstones
//!    are applied first on both sides, so a set forgotten anywhere is never
//!    copied back from a replica that still holds it.
//! 3. Sets one side lacks are copied to it (in both directions: a union, so
//!    two replicas that both took backups during a partition end up with
//!    both). Copying walks the set's trees top-down, asking the receiver in
//!    batches which objects it lacks and fetching only those; every object's
//!    CRC is verified as it arrives; chunks are stored at once and trees
//!    after everything they name, and the set itself last. An interrupted
//!    sync therefore leaves a consistent store, and the next one fetches only
//!    what is still missing.
//! 4. Both sides raise their marker to the greater of the two, so a client
//!    sees the same marker on either and knows they agree.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;

use coffer_proto::batch::Batcher;
use coffer_proto::object;
use coffer_proto::{ObjectId, SetsDigest};
use serde::Serialize;

/// Objects asked for in one fetch; chunks are at most 4 MiB.
const FETCH_BATCH: usize = 16;
/// Ids asked about in one existence check.
const MISSING_BATCH: usize = 16_384;
/// Objects are stored in batches of about this many bytes.
const PUT_BATCH: usize = 8 << 20;

/// What a replica reports first: enough to know whether it agrees with another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub marker: u64,
    pub digest: SetsDigest,
}

/// A replica's backup sets (with the time each was first committed) and tombstones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub sets: BTreeMap<ObjectId, i64>,
    pub tombstones: BTreeSet<ObjectId>,
}

/// The answer to [`Replica::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Same summary as the one the caller sent.
    InSync(Summary),
    Differs(Summary, Listing),
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{replica}: {problem}")]
    Replica { replica: String, problem: String },
    #[error("{replica} is busy with this account: a client has priority")]
    Busy { replica: String },
    #[error("{replica} sent object {id}, which fails its check: {problem}")]
    BadObject { replica: String, id: ObjectId, problem: String },
}

/// One copy of one account, as fast sync needs to see it.
///
/// Every call that changes the replica is durable when it returns.
pub trait Replica: Sync {
    /// Who this is, for errors and logs.
    fn name(&self) -> String;
    /// Calls made over the network so far (0 for a local replica).
    fn round_trips(&self) -> u64;
    /// The replica's summary, and its listing unless `probe` equals the summary.
    fn state(&self, probe: Option<Summary>) -> impl Future<Output = Result<Probe, SyncError>> + Send;
    /// Which of `ids` the replica lacks.
    fn missing(&self, ids: Vec<ObjectId>) -> impl Future<Output = Result<Vec<ObjectId>, SyncError>> + Send;
    /// The envelopes of `ids`, which the replica holds.
    fn fetch(
        &self,
        ids: Vec<ObjectId>,
    ) -> impl Future<Output = Result<Vec<(ObjectId, Vec<u8>)>, SyncError>> + Send;
    /// Stores chunks and trees, each tree after the objects it names.
    fn put(&self, objects: Vec<(ObjectId, Vec<u8>)>) -> impl Future<Output = Result<(), SyncError>> + Send;
    /// Commits a set whose objects are all present; returns the marker.
    fn commit(
        &self,
        id: ObjectId,
        envelope: Vec<u8>,
        committed_ns: i64,
    ) -> impl Future<Output = Result<u64, SyncError>> + Send;
    /// Applies tombstones; returns the marker.
    fn bury(&self, ids: Vec<ObjectId>) -> impl Future<Output = Result<u64, SyncError>> + Send;
    /// Raises the marker to at least `marker`; returns the marker.
    fn adopt(&self, marker: u64) -> impl Future<Output = Result<u64, SyncError>> + Send;
}

/// What one sync did, seen from the node that ran it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub peer: String,
    /// Calls to the peer: 1 when the replicas already agreed.
    pub round_trips: u64,
    pub in_sync: bool,
    pub sets_fetched: u64,
    pub sets_sent: u64,
    pub tombstones_applied: u64,
    pub objects_copied: u64,
    pub bytes_copied: u64,
    /// The marker both replicas report afterwards.
    pub marker: u64,
}

/// Brings `local` and `remote` to the union of their sets, less every set
/// either has forgotten.
pub async fn sync<L: Replica, R: Replica>(local: &L, remote: &R) -> Result<SyncReport, SyncError> {
    let trips_before = remote.round_trips();
    let mut report = SyncReport { peer: remote.name(), ..SyncReport::default() };
    let Probe::Differs(mine, my_list) = local.state(None).await? else {
        unreachable!("a replica asked without a probe lists itself")
    };
    let (theirs, their_list) = match remote.state(Some(mine)).await? {
        Probe::InSync(summary) => {
            report.in_sync = true;
            report.marker = summary.marker;
            report.round_trips = remote.round_trips() - trips_before;
            return Ok(report);
        }
        Probe::Differs(summary, listing) => (summary, listing),
    };
    let (mut my_marker, mut their_marker) = (mine.marker, theirs.marker);

    let bury_here: Vec<_> = their_list.tombstones.difference(&my_list.tombstones).copied().collect();
    let bury_there: Vec<_> = my_list.tombstones.difference(&their_list.tombstones).copied().collect();
    report.tombstones_applied = (bury_here.len() + bury_there.len()) as u64;
    if !bury_here.is_empty() {
        my_marker = local.bury(bury_here).await?;
    }
    if !bury_there.is_empty() {
        their_marker = remote.bury(bury_there).await?;
    }

    let dead: BTreeSet<_> = my_list.tombstones.union(&their_list.tombstones).copied().collect();
    let fetch = lacking(&their_list, &my_list, &dead);
    let send = lacking(&my_list, &their_list, &dead);
    report.sets_fetched = fetch.len() as u64;
    report.sets_sent = send.len() as u64;
    for (set, committed_ns) in fetch {
        my_marker = copy_set(remote, local, set, committed_ns, &mut report).await?;
    }
    for (set, committed_ns) in send {
        their_marker = copy_set(local, remote, set, committed_ns, &mut report).await?;
    }

    let marker = my_marker.max(their_marker);
    if my_marker < marker {
        local.adopt(marker).await?;
    }
    if their_marker < marker {
        remote.adopt(marker).await?;
    }
    report.marker = marker;
    report.round_trips = remote.round_trips() - trips_before;
    Ok(report)
}

/// Copies one set that `local` just committed, and whatever it names that
/// `remote` lacks, to `remote`: what a replicated commit waits for. One
/// direction only, so it never needs `local`'s writer (the committing
/// client holds it). Returns `remote`'s marker.
pub async fn push_set<L: Replica, R: Replica>(
    local: &L,
    remote: &R,
    set: ObjectId,
    committed_ns: i64,
) -> Result<SyncReport, SyncError> {
    let mut report = SyncReport { peer: remote.name(), sets_sent: 1, ..SyncReport::default() };
    report.marker = copy_set(local, remote, set, committed_ns, &mut report).await?;
    report.round_trips = remote.round_trips();
    Ok(report)
}

/// Sets `from` holds that `to` neither holds nor has forgotten, oldest first.
fn lacking(from: &Listing, to: &Listing, dead: &BTreeSet<ObjectId>) -> Vec<(ObjectId, i64)> {
    let mut sets: Vec<_> = from
        .sets
        .iter()
        .filter(|(id, _)| !to.sets.contains_key(*id) && !dead.contains(*id))
        .map(|(id, at)| (*id, *at))
        .collect();
    sets.sort_by_key(|(id, at)| (*at, *id));
    sets
}

/// Copies one set and whatever it names that `dst` lacks; returns `dst`'s marker.
async fn copy_set<S: Replica, D: Replica>(
    src: &S,
    dst: &D,
    set: ObjectId,
    committed_ns: i64,
    report: &mut SyncReport,
) -> Result<u64, SyncError> {
    let (_, envelope) = fetch_checked(src, vec![set]).await?.pop().expect("one object asked, one checked");
    let roots = decoded(src, &set, &envelope)?.refs;
    copy_objects(src, dst, roots, report).await?;
    report.bytes_copied += envelope.len() as u64;
    report.objects_copied += 1;
    dst.commit(set, envelope, committed_ns).await
}

/// Copies the objects under `roots` that `dst` lacks: chunks as they arrive,
/// trees once all they name is stored.
async fn copy_objects<S: Replica, D: Replica>(
    src: &S,
    dst: &D,
    roots: Vec<ObjectId>,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let mut trees: HashMap<ObjectId, (Vec<u8>, Vec<ObjectId>)> = HashMap::new();
    let mut seen: HashSet<ObjectId> = roots.iter().copied().collect();
    let mut frontier = missing_on(dst, roots).await?;
    let mut chunks = PutBatch::default();
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for ids in frontier.chunks(FETCH_BATCH) {
            for (id, envelope) in fetch_checked(src, ids.to_vec()).await? {
                let refs = decoded(src, &id, &envelope)?.refs;
                report.objects_copied += 1;
                report.bytes_copied += envelope.len() as u64;
                if refs.is_empty() {
                    chunks.add(dst, id, envelope).await?;
                } else {
                    next.extend(refs.iter().copied().filter(|r| seen.insert(*r)));
                    trees.insert(id, (envelope, refs));
                }
            }
        }
        frontier = missing_on(dst, next).await?;
    }
    chunks.finish(dst).await?;
    let mut batch = PutBatch::default();
    for id in tree_order(&trees) {
        let (envelope, _) = trees.remove(&id).expect("ordered trees are pending");
        batch.add(dst, id, envelope).await?;
    }
    batch.finish(dst).await
}

/// Pending trees in an order where each comes after the pending trees it names.
fn tree_order(trees: &HashMap<ObjectId, (Vec<u8>, Vec<ObjectId>)>) -> Vec<ObjectId> {
    let mut order = Vec::with_capacity(trees.len());
    let mut placed = HashSet::new();
    let mut roots: Vec<_> = trees.keys().copied().collect();
    roots.sort();
    for root in roots {
        // Iterative post-order: (id, children already pushed?).
        let mut stack = vec![(root, false)];
        while let Some((id, expanded)) = stack.pop() {
            if placed.contains(&id) {
                continue;
            }
            if expanded {
                placed.insert(id);
                order.push(id);
                continue;
            }
            stack.push((id, true));
            let refs = &trees[&id].1;
            stack.extend(
                refs.iter().filter(|r| trees.contains_key(*r) && !placed.contains(*r)).map(|r| (*r, false)),
            );
        }
    }
    order
}

async fn missing_on<D: Replica>(dst: &D, ids: Vec<ObjectId>) -> Result<Vec<ObjectId>, SyncError> {
    let mut missing = Vec::new();
    for batch in ids.chunks(MISSING_BATCH) {
        missing.extend(dst.missing(batch.to_vec()).await?);
    }
    Ok(missing)
}

/// Fetches `ids` and refuses any answer that is not exactly those objects.
async fn fetch_checked<S: Replica>(
    src: &S,
    ids: Vec<ObjectId>,
) -> Result<Vec<(ObjectId, Vec<u8>)>, SyncError> {
    let objects = src.fetch(ids.clone()).await?;
    let answered: Vec<_> = objects.iter().map(|(id, _)| *id).collect();
    if answered != ids {
        return Err(SyncError::Replica {
            replica: src.name(),
            problem: format!("asked for {} objects, answered with {} others", ids.len(), answered.len()),
        });
    }
    Ok(objects)
}

/// Decodes an envelope, which verifies its CRC.
fn decoded<'a, S: Replica>(
    src: &S,
    id: &ObjectId,
    envelope: &'a [u8],
) -> Result<object::Object<'a>, SyncError> {
    let object = object::decode(envelope).map_err(|e| SyncError::BadObject {
        replica: src.name(),
        id: *id,
        problem: e.to_string(),
    })?;
    Ok(object)
}

/// Objects on their way to a replica, sent once they fill a batch (and
/// never past the transport's limit).
struct PutBatch(Batcher<(ObjectId, Vec<u8>)>);

impl Default for PutBatch {
    fn default() -> Self {
        PutBatch(Batcher::new(PUT_BATCH))
    }
}

impl PutBatch {
    async fn add<D: Replica>(&mut self, dst: &D, id: ObjectId, envelope: Vec<u8>) -> Result<(), SyncError> {
        let len = envelope.len();
        match self.0.push((id, envelope), len) {
            Some(objects) => dst.put(objects).await,
            None => Ok(()),
        }
    }

    async fn finish<D: Replica>(mut self, dst: &D) -> Result<(), SyncError> {
        let objects = self.0.take();
        if objects.is_empty() { Ok(()) } else { dst.put(objects).await }
    }
}

#[cfg(test)]
#[path = "fastsync_tests.rs"]
mod tests;

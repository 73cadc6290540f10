//! Housekeeping: forgetting backup sets, freeing objects, reclaiming space.
//!
//! Freeing starts by counting the references not yet counted (`counting`).
//! Forgetting a set drops its root reference; every object whose count reaches
//! zero is freed and drops one reference from each object it names, and so on
//! down. The work is proportional to what is freed, never to the size of the
//! store. Objects uploaded but never referenced (an interrupted backup) are
//! kept for a grace period so the next run can reuse them, then collected.
//! Packs whose live fraction falls under half are rewritten, keeping only live
//! objects; a pack holding an object that fails its CRC is left alone rather
//! than risk losing anything else in it. A pass first forgets the sets the
//! account's retention policy does not keep, then applies the soft limit.

use std::collections::{BTreeSet, HashSet, VecDeque};

use coffer_proto::retention::{Decision, RetentionPolicy};
use coffer_proto::{ObjectId, ObjectKind, object};
use tracing::warn;

use crate::error::{Result, StoreError};
use crate::index;
use crate::packfile::{self, PackWriter};
use crate::writer::AccountWriter;

/// What forgetting a set reclaimed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ForgetReport {
    pub objects_freed: u64,
    pub bytes_freed: u64,
    pub packs_rewritten: u64,
    pub packs_deleted: u64,
    pub marker: u64,
}

/// What a grace-period collection reclaimed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub objects_freed: u64,
    pub bytes_freed: u64,
    pub packs_rewritten: u64,
    pub packs_deleted: u64,
}

/// What one housekeeping pass over an account did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct HousekeepReport {
    /// Sets forgotten because the retention policy did not keep them, oldest first.
    pub sets_expired: Vec<ObjectId>,
    /// Sets forgotten because the account was over its soft limit, oldest first.
    pub sets_forgotten: Vec<ObjectId>,
    pub objects_freed: u64,
    pub bytes_freed: u64,
}

#[derive(Default)]
struct Freed {
    objects: u64,
    bytes: u64,
    packs: BTreeSet<u64>,
}

/// The account's sets and their times, oldest first.
fn set_times(store: &crate::Store, account: u64) -> Result<Vec<(ObjectId, i64)>> {
    Ok(store.sets(account)?.into_iter().map(|(id, r)| (id, r.header.time_ns)).collect())
}

impl crate::Store {
    /// What `retention` would keep and forget of the account's sets, newest
    /// first (a dry run of housekeeping's first step).
    pub fn retention_decisions(&self, account: u64, retention: &RetentionPolicy) -> Result<Vec<Decision>> {
        Ok(retention.apply(&set_times(self, account)?))
    }
}

impl AccountWriter {
    /// Forgets a backup set and reclaims what only it used.
    pub fn forget_set(&mut self, set: &ObjectId) -> Result<ForgetReport> {
        self.count_references()?;
        if !self.set_known(set)? {
            return Err(StoreError::NoSuchSet(set.to_string()));
        }
        self.pending.sets.insert(*set, None);
        self.pending.tombstones.push((*set, coffer_proto::clock::now_ns()));
        let mut freed = Freed::default();
        self.release(vec![*set], &mut freed)?;
        self.pending.bump_marker = true;
        self.flush()?;
        let (rewritten, deleted) = self.compact(&freed.packs)?;
        Ok(ForgetReport {
            objects_freed: freed.objects,
            bytes_freed: freed.bytes,
            packs_rewritten: rewritten,
            packs_deleted: deleted,
            marker: self.marker()?,
        })
    }

    /// The periodic pass: forget the sets `retention` does not keep; then,
    /// while the account is over its soft limit, its oldest set (never the
    /// newest); then collect uploads that stayed unreferenced since before
    /// `cutoff_ns`. The sets are listed once: beyond that, the pass costs
    /// what it frees.
    pub fn housekeep(&mut self, cutoff_ns: i64, retention: &RetentionPolicy) -> Result<HousekeepReport> {
        let soft = self.store.account(self.account)?.limits.soft;
        let mut report = HousekeepReport::default();
        let listed = set_times(&self.store, self.account)?;
        let expired: HashSet<ObjectId> =
            retention.apply(&listed).into_iter().filter(|d| !d.keep).map(|d| d.id).collect();
        let mut sets = VecDeque::from(listed);
        // Oldest first, so a kill part way leaves the newest sets.
        for (id, _) in sets.iter().filter(|(id, _)| expired.contains(id)) {
            let forgot = self.forget_set(id)?;
            tracing::info!(account = self.account, set = %id, "not kept by the retention policy: forgot it");
            report.sets_expired.push(*id);
            report.objects_freed += forgot.objects_freed;
            report.bytes_freed += forgot.bytes_freed;
        }
        sets.retain(|(id, _)| !expired.contains(id));
        while sets.len() >= 2 && self.used > soft {
            let (oldest, _) = sets.pop_front().expect("two or more");
            let forgot = self.forget_set(&oldest)?;
            tracing::info!(account = self.account, set = %oldest, "over the soft limit: forgot the oldest set");
            report.sets_forgotten.push(oldest);
            report.objects_freed += forgot.objects_freed;
            report.bytes_freed += forgot.bytes_freed;
        }
        let gc = self.collect_unreferenced(cutoff_ns)?;
        report.objects_freed += gc.objects_freed;
        report.bytes_freed += gc.bytes_freed;
        Ok(report)
    }

    /// Frees objects that have stayed unreferenced since before `cutoff_ns`.
    pub fn collect_unreferenced(&mut self, cutoff_ns: i64) -> Result<GcReport> {
        self.count_references()?;
        let candidates = index::scan_account::<i64>(self.store.db(), index::CF_UNREFERENCED, self.account)?;
        let mut freed = Freed::default();
        let mut released = Vec::new();
        for (key, since) in candidates {
            if since >= cutoff_ns {
                continue;
            }
            let id = index::id_from_suffix(&key)?;
            match self.entry(&id)? {
                Some(e) if e.refcount == 0 && e.kind != ObjectKind::Set => {
                    self.free(id, &mut freed, &mut released)?
                }
                _ => {
                    self.pending.unreferenced.insert(id, None);
                }
            }
        }
        self.release(released, &mut freed)?;
        self.flush()?;
        let (rewritten, deleted) = self.compact(&freed.packs)?;
        Ok(GcReport {
            objects_freed: freed.objects,
            bytes_freed: freed.bytes,
            packs_rewritten: rewritten,
            packs_deleted: deleted,
        })
    }

    /// Drops one reference from each of `ids`, freeing what reaches zero.
    fn release(&mut self, ids: Vec<ObjectId>, freed: &mut Freed) -> Result<()> {
        let mut work = ids;
        while let Some(id) = work.pop() {
            let Some(mut entry) = self.entry(&id)? else {
                warn!(object = %id, "releasing a reference to an object that is not in the store");
                continue;
            };
            if entry.refcount == 0 {
                warn!(object = %id, "reference count already zero; index damaged, run a check");
                continue;
            }
            entry.refcount -= 1;
            if entry.refcount > 0 {
                self.pending.objects.insert(id, Some(entry));
            } else {
                self.free(id, freed, &mut work)?;
            }
        }
        Ok(())
    }

    /// Removes one object whose count is zero; queues its references for release.
    fn free(&mut self, id: ObjectId, freed: &mut Freed, work: &mut Vec<ObjectId>) -> Result<()> {
        let entry = self.entry(&id)?.ok_or(StoreError::MissingObject(id))?;
        if entry.kind != ObjectKind::Chunk {
            let bytes = self.store.read_entry(self.account, &id, &entry)?;
            let obj = object::decode(&bytes).map_err(|source| StoreError::InvalidObject { id, source })?;
            work.extend(obj.refs);
        }
        self.pending.objects.insert(id, None);
        self.pending.unreferenced.insert(id, None);
        self.update_pack(entry.pack, |p| {
            p.live_bytes -= entry.len as u64;
            p.live_objects -= 1;
        })?;
        freed.objects += 1;
        freed.bytes += entry.len as u64;
        self.release_bytes(entry.len as u64);
        freed.packs.insert(entry.pack);
        if !work.is_empty() && freed.objects.is_multiple_of(50_000) {
            // Bound the memory of one huge release.
            self.flush()?;
        }
        Ok(())
    }

    /// Deletes empty packs and rewrites those now less than half live.
    /// Returns (rewritten, deleted).
    fn compact(&mut self, packs: &BTreeSet<u64>) -> Result<(u64, u64)> {
        let (mut rewritten, mut deleted) = (0, 0);
        let mut out: Option<PackWriter> = None;
        for &pack in packs {
            let Some(stats) = self.pack_stats(pack)? else { continue };
            if stats.live_objects == 0 {
                self.pending.packs.insert(pack, None);
                self.pending.obsolete_packs.push(pack);
                deleted += 1;
            } else if stats.live_bytes * 2 < stats.bytes {
                match self.rewrite(pack, &mut out) {
                    Ok(()) => rewritten += 1,
                    Err(e) => warn!(pack, error = %e, "pack not rewritten; it keeps its objects"),
                }
            }
        }
        if let Some(w) = out {
            self.commit_pack(w)?;
        }
        self.flush()?;
        Ok((rewritten, deleted))
    }

    fn rewrite(&mut self, pack: u64, out: &mut Option<PackWriter>) -> Result<()> {
        let name = packfile::pack_name(self.account, pack);
        let mut moves = Vec::new();
        for e in packfile::read_trailer(self.store.discs(), &name)? {
            if let Some(entry) = self.entry(&e.id)?.filter(|x| x.pack == pack && x.offset == e.offset) {
                let bytes = self.store.read_entry(self.account, &e.id, &entry)?;
                moves.push((e.id, entry, bytes));
            }
        }
        for (id, mut entry, bytes) in moves {
            if out.is_none() {
                let new = self.store.inner.next_pack.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                *out = Some(PackWriter::create(self.store.discs(), self.account, new)?);
            }
            let w = out.as_mut().unwrap();
            entry.offset = w.append(id, &bytes)?;
            entry.pack = w.pack;
            let (new_pack, len) = (w.pack, entry.len as u64);
            self.pending.objects.insert(id, Some(entry));
            self.update_pack(new_pack, |p| {
                p.live_bytes += len;
                p.objects += 1;
                p.live_objects += 1;
            })?;
        }
        self.pending.packs.insert(pack, None);
        self.pending.obsolete_packs.push(pack);
        Ok(())
    }
}

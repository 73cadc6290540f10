//! Counting references late.
//!
//! Storing a tree or set leaves the counts of what it names alone and records
//! it as `uncounted`: one index record, where raising each count at once
//! wrote one per object named (a changed directory's run of entries names
//! about eight objects, most of them unchanged, so a small change paid
//! mostly for recounting what it did not change). Counts decide only what to
//! free, so whatever frees (forgetting a set, collecting unreferenced
//! uploads) first counts: it reads each uncounted object back from its pack
//! and raises the counts of what it names, in the same batch that clears its
//! `uncounted` record. Until then a count may be lower than the references
//! held, never higher, and nothing is freed on it.
//!
//! An uncounted object that cannot be read stops the counting with its
//! error: freeing on counts that miss its references could free what it
//! names, so housekeeping waits for a check to repair the account.

use std::collections::BTreeMap;

use coffer_proto::{ObjectId, object};

use crate::error::{Result, StoreError};
use crate::index;
use crate::packfile::OpenPacks;
use crate::writer::AccountWriter;

/// Distinct objects whose counts one batch raises: bounds the writer's
/// memory when a million-file first backup is counted.
const BATCH: usize = 100_000;

impl AccountWriter {
    /// Counts the references of every uncounted tree and set of the account.
    /// Returns how many objects it counted.
    pub fn count_references(&mut self) -> Result<u64> {
        self.flush()?;
        let counted = self.count_uncounted();
        if counted.is_err() {
            // Counts raised since the last flush, without the records they
            // clear, would be counted again: drop them.
            self.pending = Default::default();
        }
        counted
    }

    fn count_uncounted(&mut self) -> Result<u64> {
        let db = self.store.db();
        let mut todo = Vec::new();
        for (key, ()) in index::scan_account::<()>(db, index::CF_UNCOUNTED, self.account)? {
            let id = index::id_from_suffix(&key)?;
            let entry = self.store.entry(self.account, &id)?.ok_or_else(|| {
                StoreError::CorruptIndex(format!("uncounted object {id} has no record; run a check"))
            })?;
            todo.push((id, entry));
        }
        // In pack order, so each pack is read front to back.
        todo.sort_by_key(|(_, e)| (e.pack, e.offset));
        let mut packs = OpenPacks::default();
        let mut named = BTreeMap::new();
        for (id, entry) in &todo {
            let bytes = self.store.read_entry_from(&mut packs, self.account, id, entry)?;
            let obj =
                object::decode(&bytes).map_err(|source| StoreError::InvalidObject { id: *id, source })?;
            for r in obj.refs {
                *named.entry(r).or_default() += 1;
            }
            self.pending.uncounted.insert(*id, false);
            if named.len() >= BATCH {
                self.raise_counts(std::mem::take(&mut named))?;
                self.flush()?;
            }
        }
        self.raise_counts(named)?;
        self.flush()?;
        Ok(todo.len() as u64)
    }

    /// Adds `n` to the count of each object in `named`, reading their
    /// entries in one batch, in key order.
    fn raise_counts(&mut self, named: BTreeMap<ObjectId, u64>) -> Result<()> {
        let ids: Vec<ObjectId> = named.keys().copied().collect();
        let stored = self.store.entries(self.account, &ids)?;
        for ((id, n), stored) in named.into_iter().zip(stored) {
            let entry = match self.pending.objects.remove(&id) {
                Some(pending) => pending,
                None => stored,
            };
            let mut entry = entry.ok_or(StoreError::MissingObject(id))?;
            if entry.refcount == 0 {
                self.pending.unreferenced.insert(id, None);
            }
            entry.refcount += n;
            self.pending.objects.insert(id, Some(entry));
        }
        Ok(())
    }
}

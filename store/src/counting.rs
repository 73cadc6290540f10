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
//! Counting goes in slices, each one durable batch. A store node counts in
//! the background, a slice of a fraction of a second at a time, through
//! [`Store::counting_writer`], which only takes an account nothing else has
//! wanted for a while: so whatever frees after a large backup finds little
//! left to count, and anything that wants the account waits one slice at most.
//!
//! An uncounted object that cannot be read stops the counting with its
//! error: freeing on counts that miss its references could free what it
//! names, so housekeeping waits for a check to repair the account.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coffer_proto::{ObjectId, object};

use crate::error::{Result, StoreError};
use crate::index;
use crate::packfile::OpenPacks;
use crate::store::{AccountId, Store};
use crate::writer::AccountWriter;

/// Uncounted objects one slice takes on: about eight references each, so a
/// slice raises some 80,000 counts with one batched read.
const SLICE: usize = 10_000;

/// What one slice of counting did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// Objects whose references were counted.
    pub objects: u64,
    /// Whether uncounted objects remain.
    pub more: bool,
}

impl Store {
    /// The account's writer for counting in the background, if nothing else
    /// has asked for or let go of the account's writer for `quiet`, and no
    /// client waits for it; else `AccountBusy`. Counting gives way to every
    /// other writer, and this one's coming and going does not count as
    /// wanting the account.
    pub fn counting_writer(&self, account: AccountId, quiet: Duration) -> Result<AccountWriter> {
        let wanted = self.inner.wanted.lock().unwrap().get(&account).is_some_and(|t| t.elapsed() < quiet);
        if wanted || self.client_waiting(account) {
            return Err(StoreError::AccountBusy(account));
        }
        let mut writer = self.take_writer(account)?;
        writer.counts_in_background = true;
        Ok(writer)
    }

    /// Whether the account holds objects whose references are not counted yet.
    pub fn has_uncounted(&self, account: AccountId) -> Result<bool> {
        Ok(!index::first_ids(self.db(), index::CF_UNCOUNTED, account, 1)?.is_empty())
    }
}

impl AccountWriter {
    /// Counts the references of every uncounted tree and set of the account.
    /// Returns how many objects it counted.
    pub fn count_references(&mut self) -> Result<u64> {
        let mut total = 0;
        loop {
            let counted = self.count_some(None)?;
            total += counted.objects;
            if !counted.more {
                return Ok(total);
            }
        }
    }

    /// Counts one slice of the uncounted objects, durably; with a `budget`,
    /// stops reading objects once it is spent (counting at least one).
    pub fn count_some(&mut self, budget: Option<Duration>) -> Result<Counted> {
        self.flush()?;
        let counted = self.count_slice(budget.map(|b| Instant::now() + b));
        if counted.is_err() {
            // Counts raised since the last flush, without the records they
            // clear, would be counted again: drop them.
            self.pending = Default::default();
        }
        counted
    }

    fn count_slice(&mut self, deadline: Option<Instant>) -> Result<Counted> {
        let mut ids = index::first_ids(self.store.db(), index::CF_UNCOUNTED, self.account, SLICE + 1)?;
        let mut more = ids.len() > SLICE;
        ids.truncate(SLICE);
        let mut todo = Vec::with_capacity(ids.len());
        for (id, entry) in ids.iter().zip(self.store.entries(self.account, &ids)?) {
            let entry = entry.ok_or_else(|| {
                StoreError::CorruptIndex(format!("uncounted object {id} has no record; run a check"))
            })?;
            todo.push((*id, entry));
        }
        // In pack order, so each pack is read front to back.
        todo.sort_by_key(|(_, e)| (e.pack, e.offset));
        let mut packs = OpenPacks::default();
        let mut named = BTreeMap::new();
        let mut objects = 0;
        for (id, entry) in &todo {
            if objects > 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                more = true;
                break;
            }
            let bytes = self.store.read_entry_from(&mut packs, self.account, id, entry)?;
            let obj =
                object::decode(&bytes).map_err(|source| StoreError::InvalidObject { id: *id, source })?;
            for r in obj.refs {
                *named.entry(r).or_default() += 1;
            }
            self.pending.uncounted.insert(*id, false);
            objects += 1;
        }
        self.raise_counts(named)?;
        self.flush()?;
        Ok(Counted { objects, more })
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

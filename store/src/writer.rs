//! The single writer of an account.
//!
//! Changes accumulate in memory (an overlay over the index) while objects are
//! appended to an open pack. [`AccountWriter::flush`] first commits the pack
//! (synced, renamed into place), then writes every index change in one synced
//! RocksDB batch. A crash before the batch leaves an unrecorded pack, removed
//! at the next open; a crash after it leaves everything committed. Objects
//! already flushed survive an interrupted backup, which is what makes uploads
//! resumable.
//!
//! Reference counting: storing an object is refused if anything it names is
//! missing, so whatever a committed set names is present. The counts of what
//! it names are raised later, before anything is freed (see `counting`). A
//! backup set is a root: it holds one reference of its own.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use coffer_proto::object::{self, Object};
use coffer_proto::{ObjectId, ObjectKind, SetHeader};
use rocksdb::WriteBatch;

use crate::error::{Result, StoreError};
use crate::index::{self, ObjectEntry, PackStats, SetRecord};
use crate::packfile::{self, PackWriter};
use crate::store::{AccountId, Store};

/// Packs are committed once they reach this size.
pub const DEFAULT_PACK_TARGET: u64 = 32 << 20;

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored; the envelope's length in bytes.
    Stored(u64),
    /// The account already held the object; nothing changed.
    AlreadyPresent,
}

/// Index changes not yet written: `None` deletes a record.
#[derive(Default)]
pub(crate) struct Pending {
    pub objects: HashMap<ObjectId, Option<ObjectEntry>>,
    pub packs: HashMap<u64, Option<PackStats>>,
    pub unreferenced: HashMap<ObjectId, Option<i64>>,
    /// Trees and sets whose references are to be counted (`true`) or now are.
    pub uncounted: HashMap<ObjectId, bool>,
    pub sets: HashMap<ObjectId, Option<SetRecord>>,
    pub tombstones: Vec<(ObjectId, i64)>,
    pub bump_marker: bool,
    /// Packs to delete once the batch that stops naming them is durable.
    pub obsolete_packs: Vec<u64>,
    /// Packs committed and announced (see `recovery`), which the batch records.
    pub announced: Vec<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.objects.is_empty()
            && self.packs.is_empty()
            && self.unreferenced.is_empty()
            && self.uncounted.is_empty()
            && self.sets.is_empty()
            && self.tombstones.is_empty()
            && !self.bump_marker
    }
}

pub struct AccountWriter {
    pub(crate) store: Store,
    pub(crate) account: AccountId,
    pack: Option<PackWriter>,
    pack_target: u64,
    pub(crate) pending: Pending,
    /// Live bytes of the account including unflushed puts, against `hard_limit`.
    pub(crate) used: u64,
    hard_limit: u64,
    /// Whether the account's being frozen stops this writer (a client's; fast
    /// sync keeps replicas of a frozen account in step).
    stops_when_frozen: bool,
    /// Whether this writer counts in the background, which must not keep
    /// the account from looking quiet (see `counting`).
    pub(crate) counts_in_background: bool,
    /// The store's account-change count when the record was last read.
    seen_changes: u64,
}

impl AccountWriter {
    pub(crate) fn new(store: Store, account: AccountId) -> Result<Self> {
        let seen_changes = store.inner.account_changes.load(Ordering::SeqCst);
        let hard_limit = store.account(account)?.limits.hard;
        let used = store.usage(account)?.live_bytes;
        Ok(AccountWriter {
            store,
            account,
            pack: None,
            pack_target: DEFAULT_PACK_TARGET,
            pending: Pending::default(),
            used,
            hard_limit,
            stops_when_frozen: false,
            counts_in_background: false,
            seen_changes,
        })
    }

    /// Makes this a client's writer, which freezing the account stops.
    pub fn stop_when_frozen(&mut self) {
        self.stops_when_frozen = true;
        self.seen_changes = u64::MAX;
    }

    /// Picks up a change to the account made since this writer last looked
    /// (one atomic load when there was none): a new hard limit, a freeze, a
    /// deletion. Runs before every object, so a change made while a session
    /// is open takes effect at its next object.
    fn follow_account(&mut self) -> Result<()> {
        let changes = self.store.inner.account_changes.load(Ordering::SeqCst);
        if changes == self.seen_changes {
            return Ok(());
        }
        let record = self.store.account(self.account)?;
        if self.store.inner.doomed.lock().unwrap().contains(&self.account) {
            return Err(StoreError::AccountDeleted(record.name));
        }
        if self.stops_when_frozen && record.frozen {
            return Err(StoreError::Frozen(record.name));
        }
        self.hard_limit = record.limits.hard;
        self.seen_changes = changes;
        Ok(())
    }

    pub fn account(&self) -> AccountId {
        self.account
    }

    pub fn set_pack_target(&mut self, bytes: u64) {
        self.pack_target = bytes.max(1);
    }

    /// Counts bytes freed by housekeeping against the hard limit.
    pub(crate) fn release_bytes(&mut self, bytes: u64) {
        self.used = self.used.saturating_sub(bytes);
    }

    /// The object's entry as this writer sees it (including unflushed changes).
    pub(crate) fn entry(&self, id: &ObjectId) -> Result<Option<ObjectEntry>> {
        match self.pending.objects.get(id) {
            Some(e) => Ok(e.clone()),
            None => self.store.entry(self.account, id),
        }
    }

    pub fn has(&self, id: &ObjectId) -> Result<bool> {
        Ok(self.entry(id)?.is_some())
    }

    pub(crate) fn pack_stats(&self, pack: u64) -> Result<Option<PackStats>> {
        match self.pending.packs.get(&pack) {
            Some(p) => Ok(p.clone()),
            None => index::get(self.store.db(), index::CF_PACKS, &index::pack_key(self.account, pack)),
        }
    }

    pub(crate) fn update_pack(&mut self, pack: u64, f: impl FnOnce(&mut PackStats)) -> Result<()> {
        let mut stats = self.pack_stats(pack)?.unwrap_or_default();
        f(&mut stats);
        self.pending.packs.insert(pack, Some(stats));
        Ok(())
    }

    /// Stores a chunk or tree. Idempotent: storing an object again changes nothing.
    pub fn put(&mut self, id: ObjectId, envelope: &[u8]) -> Result<PutOutcome> {
        let obj = object::decode(envelope).map_err(|source| StoreError::InvalidObject { id, source })?;
        if obj.kind == ObjectKind::Set {
            return Err(StoreError::WrongKind { id, expected: "chunk or tree", found: obj.kind.name() });
        }
        self.put_decoded(id, envelope, &obj, 0)
    }

    fn put_decoded(
        &mut self,
        id: ObjectId,
        envelope: &[u8],
        obj: &Object,
        refcount: u64,
    ) -> Result<PutOutcome> {
        self.follow_account()?;
        if self.has(&id)? {
            return Ok(PutOutcome::AlreadyPresent);
        }
        let len = envelope.len() as u64;
        if self.used.saturating_add(len) > self.hard_limit {
            return Err(StoreError::OverHardLimit {
                account: self.store.account(self.account)?.name,
                used: self.used,
                limit: self.hard_limit,
            });
        }
        for r in &obj.refs {
            if !self.has(r)? {
                return Err(StoreError::MissingReference { kind: obj.kind.name(), object: id, missing: *r });
            }
        }
        self.defer_counting(id, &obj.refs);
        let pack = self.open_pack()?;
        let offset = pack.append(id, envelope)?;
        let pack_id = pack.pack;
        self.used += len;
        let len = len as u32;
        let entry = ObjectEntry { pack: pack_id, offset, len, crc: obj.crc, kind: obj.kind, refcount };
        self.pending.objects.insert(id, Some(entry));
        self.update_pack(pack_id, |p| {
            p.live_bytes += len as u64;
            p.objects += 1;
            p.live_objects += 1;
        })?;
        if refcount == 0 {
            self.pending.unreferenced.insert(id, Some(coffer_proto::clock::now_ns()));
        }
        if self.pack.as_ref().is_some_and(|p| p.len() >= self.pack_target) {
            self.flush()?;
        }
        Ok(PutOutcome::Stored(len as u64))
    }

    /// Records `id` as uncounted: one index record, where counting at once
    /// wrote one per object it names.
    fn defer_counting(&mut self, id: ObjectId, refs: &[ObjectId]) {
        if refs.is_empty() {
            return;
        }
        for r in refs {
            // An object put since the last flush has its unreferenced record
            // only here, and is named before it is written: dropping the
            // record spares the index a write, and a tombstone when `id` is
            // counted. Without it the object is never collected as an
            // unreferenced upload, which only an object nothing names needs.
            if matches!(self.pending.unreferenced.get(r), Some(Some(_))) {
                self.pending.unreferenced.remove(r);
            }
        }
        self.pending.uncounted.insert(id, true);
    }

    fn open_pack(&mut self) -> Result<&mut PackWriter> {
        if self.pack.is_none() {
            let id = self.store.inner.next_pack.fetch_add(1, Ordering::SeqCst);
            self.pack = Some(PackWriter::create(self.store.discs(), self.account, id)?);
        }
        Ok(self.pack.as_mut().unwrap())
    }

    /// Commits a backup set: stores it as a root, records it, advances the
    /// client store marker, and makes it all durable. Returns the new marker.
    pub fn commit_set(&mut self, id: ObjectId, envelope: &[u8]) -> Result<u64> {
        self.commit_set_at(id, envelope, coffer_proto::clock::now_ns())
    }

    /// [`Self::commit_set`], recording `committed_ns` as the commit time: fast
    /// sync keeps the time the set was first committed on any replica.
    pub fn commit_set_at(&mut self, id: ObjectId, envelope: &[u8], committed_ns: i64) -> Result<u64> {
        let obj = object::decode(envelope).map_err(|source| StoreError::InvalidObject { id, source })?;
        if obj.kind != ObjectKind::Set {
            return Err(StoreError::WrongKind { id, expected: "backup set", found: obj.kind.name() });
        }
        let corrupt = |problem: String| StoreError::CorruptObject { id, pack: 0, offset: 0, problem };
        let (header, _) = SetHeader::decode_body(obj.body).map_err(|e| corrupt(e.to_string()))?;
        if header.roots != obj.refs {
            return Err(corrupt("set header roots differ from the envelope's references".into()));
        }
        if self.has(&id)? {
            return self.marker();
        }
        if self.buried(&id)? {
            return Err(StoreError::NoSuchSet(format!(
                "{id} (it was forgotten and cannot be committed again)"
            )));
        }
        self.put_decoded(id, envelope, &obj, 1)?;
        self.pending.sets.insert(id, Some(SetRecord { header, committed_ns }));
        self.pending.bump_marker = true;
        self.flush()?;
        self.marker()
    }

    fn buried(&self, id: &ObjectId) -> Result<bool> {
        let key = index::object_key(self.account, id);
        Ok(self.pending.tombstones.iter().any(|(t, _)| t == id)
            || index::get::<i64>(self.store.db(), index::CF_TOMBSTONES, &key)?.is_some())
    }

    /// Applies a tombstone another replica holds: forgets the set if this
    /// replica has it, and in any case remembers it as forgotten, so that a
    /// third replica that still has the set cannot bring it back here.
    /// Returns the marker.
    pub fn bury(&mut self, id: &ObjectId) -> Result<u64> {
        if self.set_known(id)? {
            return Ok(self.forget_set(id)?.marker);
        }
        if !self.buried(id)? {
            self.pending.tombstones.push((*id, coffer_proto::clock::now_ns()));
            self.pending.bump_marker = true;
            self.flush()?;
        }
        self.marker()
    }

    /// Raises the client store marker to `marker` if it is lower; fast sync's
    /// last step, after which both replicas report the same marker.
    pub fn adopt_marker(&mut self, marker: u64) -> Result<u64> {
        self.flush()?;
        if marker > self.marker()? {
            let mut batch = WriteBatch::default();
            let meta = index::cf(self.store.db(), index::CF_META);
            batch.put_cf(meta, index::marker_key(self.account), index::encode(&marker));
            self.store.write_synced(batch)?;
        }
        self.marker()
    }

    /// The account's current client store marker (as committed).
    pub fn marker(&self) -> Result<u64> {
        self.store.marker(self.account)
    }

    /// Makes everything stored so far durable.
    pub fn flush(&mut self) -> Result<()> {
        let result = self.try_flush();
        if result.is_err() {
            // Nothing of a failed flush is committed; start again from the index.
            self.pack = None;
            self.pending = Pending::default();
            self.used = self.store.usage(self.account).map_or(self.used, |u| u.live_bytes);
        }
        result
    }

    fn try_flush(&mut self) -> Result<()> {
        if self.pending.is_empty() && self.pack.as_ref().is_none_or(|p| p.is_empty()) {
            return Ok(());
        }
        if let Some(pack) = self.pack.take() {
            self.commit_pack(pack)?;
        }
        let batch = self.build_batch()?;
        self.store.write_synced(batch)?;
        for pack in std::mem::take(&mut self.pending.obsolete_packs) {
            let name = packfile::pack_name(self.account, pack);
            if let Err(e) = self.store.discs().remove(&name) {
                tracing::warn!(pack = %name, error = %e, "could not remove a rewritten pack");
            }
        }
        self.pending = Pending::default();
        Ok(())
    }

    /// Commits a pack file, announced first so that crash recovery may
    /// remove it if the index write that follows never happens.
    pub(crate) fn commit_pack(&mut self, pack: PackWriter) -> Result<()> {
        let id = pack.pack;
        self.store.announce_pack(self.account, id)?;
        self.pending.announced.push(id);
        let size = pack.commit()?;
        self.update_pack(id, |p| p.bytes = size)
    }

    fn build_batch(&mut self) -> Result<WriteBatch> {
        let db = self.store.db();
        let account = self.account;
        let mut batch = WriteBatch::default();
        let objects = index::cf(db, index::CF_OBJECTS);
        for (id, entry) in &self.pending.objects {
            let key = index::object_key(account, id);
            match entry {
                Some(e) => batch.put_cf(objects, key, index::encode(e)),
                None => batch.delete_cf(objects, key),
            }
        }
        let packs = index::cf(db, index::CF_PACKS);
        for (pack, stats) in &self.pending.packs {
            match stats {
                Some(s) => batch.put_cf(packs, index::pack_key(account, *pack), index::encode(s)),
                None => batch.delete_cf(packs, index::pack_key(account, *pack)),
            }
        }
        let unreferenced = index::cf(db, index::CF_UNREFERENCED);
        for (id, since) in &self.pending.unreferenced {
            match since {
                Some(t) => batch.put_cf(unreferenced, index::object_key(account, id), index::encode(t)),
                None => batch.delete_cf(unreferenced, index::object_key(account, id)),
            }
        }
        let uncounted = index::cf(db, index::CF_UNCOUNTED);
        for (id, waiting) in &self.pending.uncounted {
            match waiting {
                true => batch.put_cf(uncounted, index::object_key(account, id), []),
                false => batch.delete_cf(uncounted, index::object_key(account, id)),
            }
        }
        let sets = index::cf(db, index::CF_SETS);
        for (id, record) in &self.pending.sets {
            match record {
                Some(r) => batch.put_cf(sets, index::object_key(account, id), index::encode(r)),
                None => batch.delete_cf(sets, index::object_key(account, id)),
            }
        }
        for (id, when) in &self.pending.tombstones {
            batch.put_cf(
                index::cf(db, index::CF_TOMBSTONES),
                index::object_key(account, id),
                index::encode(when),
            );
        }
        if !self.pending.sets.is_empty() || !self.pending.tombstones.is_empty() {
            let mut digest = self.store.digest(account)?;
            // Every pending set change flips a set that was there, or adds one that was not.
            self.pending.sets.keys().for_each(|id| digest.toggle_set(id));
            self.pending.tombstones.iter().for_each(|(id, _)| digest.toggle_tombstone(id));
            batch.put_cf(index::cf(db, index::CF_META), index::digest_key(account), index::encode(&digest));
        }
        if self.pending.bump_marker {
            let marker = self.store.marker(account)? + 1;
            batch.put_cf(index::cf(db, index::CF_META), index::marker_key(account), index::encode(&marker));
        }
        for pack in &self.pending.announced {
            self.store.settle_announcement(&mut batch, account, *pack);
        }
        Ok(batch)
    }

    /// Whether a backup set is committed, as this writer sees it.
    pub(crate) fn set_known(&self, id: &ObjectId) -> Result<bool> {
        match self.pending.sets.get(id) {
            Some(record) => Ok(record.is_some()),
            None => Ok(self.store.set_record(self.account, id)?.is_some()),
        }
    }
}

impl Drop for AccountWriter {
    fn drop(&mut self) {
        // An uncommitted pack removes its temporaries as it drops.
        self.pack = None;
        if !self.counts_in_background {
            self.store.note_wanted(self.account);
        }
        self.store.inner.writers.lock().unwrap().remove(&self.account);
    }
}

//! Checking an account's store, and rebuilding its index from its packs.
//!
//! A check reads every object the index names and verifies its CRC, that
//! every reference it holds points at a present object, that every recorded
//! reference count equals the references actually held (plus one for a
//! committed set; references of an object not yet counted are not held yet,
//! see `counting`), and that each pack's live-byte accounting adds up.
//!
//! A repair (`fix`) trusts the packs, which are self-describing: it reads
//! every pack's trailer (or walks the pack when the trailer is damaged),
//! keeps every object whose CRC holds, recounts references, re-derives the
//! sets from the set objects (never resurrecting a forgotten one), and writes
//! the account's whole index in one batch. Objects that come back with no
//! references are treated as fresh uploads and collected after the grace
//! period. The client store marker advances so clients refresh their caches.
//!
//! Both take the account's writer, so neither runs while a client writes.

use std::collections::{HashMap, HashSet};

use coffer_proto::{ObjectId, ObjectKind, SetHeader, object};
use rocksdb::WriteBatch;

use crate::error::Result;
use crate::index::{self, ObjectEntry, PackStats, SetRecord};
use crate::packfile::{self, PackEntry};
use crate::store::{AccountId, Store};

/// How long a check waits for a client's writer to come free.
const WRITER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// What a check found and, with `fix`, what it repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckReport {
    pub account: String,
    pub objects_checked: u64,
    pub bytes_checked: u64,
    pub problems: Vec<String>,
    pub repairs: Vec<String>,
}

/// One object as found on disk: where it is and what it names.
struct Found {
    entry: ObjectEntry,
    refs: Vec<ObjectId>,
    set_header: Option<SetHeader>,
}

impl Store {
    /// Verifies an account; with `fix`, rebuilds its index from its packs first.
    pub fn check_account(&self, account: AccountId, fix: bool) -> Result<CheckReport> {
        let _writer = self.writer_within(account, WRITER_WAIT)?;
        let mut report = CheckReport { account: self.account(account)?.name, ..CheckReport::default() };
        if fix {
            self.rebuild_account_index(account, &mut report)?;
        }
        self.verify(account, &mut report)?;
        Ok(report)
    }

    fn verify(&self, account: AccountId, report: &mut CheckReport) -> Result<()> {
        let objects = self.objects(account)?;
        let uncounted = self.uncounted(account)?;
        for id in uncounted.iter().filter(|id| !objects.contains_key(*id)) {
            report.problems.push(format!("object {id} is listed as uncounted but is not in the store"));
        }
        let mut counted: HashMap<ObjectId, u64> = HashMap::new();
        let mut live: HashMap<u64, (u64, u64)> = HashMap::new();
        for (id, entry) in &objects {
            report.objects_checked += 1;
            report.bytes_checked += entry.len as u64;
            let l = live.entry(entry.pack).or_default();
            l.0 += entry.len as u64;
            l.1 += 1;
            let bytes = match self.read_entry(account, id, entry) {
                Ok(b) => b,
                Err(e) => {
                    report.problems.push(e.to_string());
                    continue;
                }
            };
            let obj = object::decode(&bytes).expect("read_entry verified the envelope");
            for r in &obj.refs {
                if !uncounted.contains(id) {
                    *counted.entry(*r).or_default() += 1;
                }
                if !objects.contains_key(r) {
                    report
                        .problems
                        .push(format!("{} {id} references {r}, which is missing", obj.kind.name()));
                }
            }
        }
        for (id, _) in self.sets(account)? {
            *counted.entry(id).or_default() += 1;
            if !objects.contains_key(&id) {
                report.problems.push(format!("backup set {id} is listed but its object is missing"));
            }
        }
        for (id, entry) in &objects {
            let held = counted.get(id).copied().unwrap_or(0);
            if entry.refcount != held {
                report.problems.push(format!(
                    "object {id}: reference count is {} but {held} references are held",
                    entry.refcount
                ));
            }
        }
        for (key, stats) in index::scan_account::<PackStats>(self.db(), index::CF_PACKS, account)? {
            let pack = u64::from_be_bytes(key[..8].try_into().unwrap());
            let (bytes, count) = live.remove(&pack).unwrap_or_default();
            if (stats.live_bytes, stats.live_objects) != (bytes, count) {
                report.problems.push(format!(
                    "pack {pack:016x}: records {} live bytes in {} objects, index holds {bytes} in {count}",
                    stats.live_bytes, stats.live_objects
                ));
            }
            let name = packfile::pack_name(account, pack);
            if !self.discs().exists(&name) {
                report.problems.push(format!("pack file {name} is missing"));
            }
        }
        for pack in live.keys() {
            report.problems.push(format!("objects are indexed in pack {pack:016x}, which has no record"));
        }
        Ok(())
    }

    /// The account's objects whose references are not counted yet.
    fn uncounted(&self, account: AccountId) -> Result<HashSet<ObjectId>> {
        Ok(index::first_ids(self.db(), index::CF_UNCOUNTED, account, usize::MAX)?.into_iter().collect())
    }

    fn rebuild_account_index(&self, account: AccountId, report: &mut CheckReport) -> Result<()> {
        let tombstones: HashSet<ObjectId> = self.tombstones(account)?.into_iter().map(|(id, _)| id).collect();
        let old_sets: HashMap<ObjectId, SetRecord> = self.sets(account)?.into_iter().collect();
        let old_objects = self.objects(account)?;
        let mut found: HashMap<ObjectId, Found> = HashMap::new();
        let mut packs: HashMap<u64, PackStats> = HashMap::new();
        for (pack, name) in self.account_pack_files(account)? {
            let entries = packfile::read_trailer(self.discs(), &name).or_else(|e| {
                report.repairs.push(format!("{e}; recovered its objects by walking the pack"));
                packfile::scan_entries(self.discs(), &name)
            })?;
            let size = self.discs().open_file(&name).map(|f| f.len()).unwrap_or(0);
            let stats = packs.entry(pack).or_insert(PackStats { bytes: size, ..PackStats::default() });
            for e in entries {
                stats.objects += 1;
                if found.contains_key(&e.id) || tombstones.contains(&e.id) {
                    continue;
                }
                match read_found(self.discs(), &name, pack, &e) {
                    Ok(f) => {
                        stats.live_bytes += e.len as u64;
                        stats.live_objects += 1;
                        found.insert(e.id, f);
                    }
                    Err(problem) => report
                        .repairs
                        .push(format!("dropped damaged object {} in pack {pack:016x}: {problem}", e.id)),
                }
            }
        }
        let mut counts: HashMap<ObjectId, u64> = HashMap::new();
        for (id, f) in &found {
            for r in f.refs.iter().filter(|r| found.contains_key(*r)) {
                *counts.entry(*r).or_default() += 1;
            }
            if f.set_header.is_some() {
                *counts.entry(*id).or_default() += 1;
            }
        }
        for id in old_objects.keys().filter(|id| !found.contains_key(*id)) {
            report.repairs.push(format!("removed index record of object {id}, which no pack holds intact"));
        }
        let db = self.db();
        let (from, to) = (index::account_key(account), index::account_key(account + 1));
        let mut batch = WriteBatch::default();
        let families =
            [index::CF_OBJECTS, index::CF_PACKS, index::CF_SETS, index::CF_UNREFERENCED, index::CF_UNCOUNTED];
        for family in families {
            batch.delete_range_cf(index::cf(db, family), from, to);
        }
        let now = coffer_proto::clock::now_ns();
        for (id, mut f) in found {
            f.entry.refcount = counts.get(&id).copied().unwrap_or(0);
            let key = index::object_key(account, &id);
            match old_objects.get(&id) {
                None => report.repairs.push(format!("indexed object {id} found in a pack")),
                Some(old) if old.refcount != f.entry.refcount => report.repairs.push(format!(
                    "object {id}: reference count {} corrected to {}",
                    old.refcount, f.entry.refcount
                )),
                _ => {}
            }
            if f.entry.refcount == 0 {
                batch.put_cf(index::cf(db, index::CF_UNREFERENCED), key, index::encode(&now));
            }
            if let Some(header) = f.set_header.take() {
                let committed_ns = old_sets.get(&id).map_or(header.time_ns, |r| r.committed_ns);
                if !old_sets.contains_key(&id) {
                    report.repairs.push(format!("restored backup set {id} to the set list"));
                }
                batch.put_cf(
                    index::cf(db, index::CF_SETS),
                    key,
                    index::encode(&SetRecord { header, committed_ns }),
                );
            }
            batch.put_cf(index::cf(db, index::CF_OBJECTS), key, index::encode(&f.entry));
        }
        for (pack, stats) in packs {
            batch.put_cf(
                index::cf(db, index::CF_PACKS),
                index::pack_key(account, pack),
                index::encode(&stats),
            );
        }
        let marker = self.marker(account)? + 1;
        batch.put_cf(index::cf(db, index::CF_META), index::marker_key(account), index::encode(&marker));
        batch.delete_cf(index::cf(db, index::CF_META), index::digest_key(account));
        self.write_synced(batch)
    }
}

/// Reads one pack entry and verifies it; the error says what is wrong.
fn read_found(discs: &coffer_raid::DiscSet, name: &str, pack: u64, e: &PackEntry) -> Result<Found, String> {
    let bytes = packfile::read_at(discs, name, e.offset, e.len).map_err(|e| e.to_string())?;
    let obj = object::decode(&bytes).map_err(|e| e.to_string())?;
    let set_header = match obj.kind {
        ObjectKind::Set => Some(SetHeader::decode_body(obj.body).map_err(|e| e.to_string())?.0),
        _ => None,
    };
    let entry = ObjectEntry { pack, offset: e.offset, len: e.len, crc: obj.crc, kind: obj.kind, refcount: 0 };
    Ok(Found { entry, refs: obj.refs, set_header })
}

//! A store: one RocksDB index and a directory of pack files, holding any
//! number of accounts.
//!
//! Directory layout:
//!
//! ```text
//! STORE                     "coffer-store 1": marks the directory as a store
//! index/                    RocksDB (see `index`)
//! packs/<account>/<pack>.pack   RAID files, unless the node names other discs
//! ```
//!
//! Pack files are RAID files (`coffer_raid`) on a disc set: by default the one
//! directory `packs/`, or three directories given by the node's config. Opening
//! a store removes what a crash can leave behind, and refuses a store whose
//! index does not match its discs (see `recovery`).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use coffer_proto::{ObjectId, SetsDigest, object};
use rocksdb::DB;

use crate::error::{Result, StoreError};
use crate::index::{self, ObjectEntry, PackStats, SetRecord};
use crate::packfile::{self, OpenPacks};
use crate::writer::AccountWriter;
use coffer_raid::DiscSet;

pub type AccountId = u64;

const STORE_MARK: &str = "coffer-store 1\n";

/// Bytes an account holds, as reported to users and operators.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Bytes of live objects.
    pub live_bytes: u64,
    /// Bytes of pack files on disk, including space not yet reclaimed.
    pub pack_bytes: u64,
    pub objects: u64,
    pub packs: u64,
    pub sets: u64,
}

/// A handle to an open store; cheap to clone and share between threads.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: DB,
    pub(crate) root: PathBuf,
    pub(crate) discs: DiscSet,
    pub(crate) writers: Mutex<HashSet<AccountId>>,
    /// Clients waiting for an account's writer, by account: fast sync yields to them.
    waiting: Mutex<HashMap<AccountId, usize>>,
    /// When anything but background counting last asked for or let go of
    /// an account's writer: counting waits for the account to be quiet.
    pub(crate) wanted: Mutex<HashMap<AccountId, std::time::Instant>>,
    /// Serialises read-modify-write of account records.
    pub(crate) accounts_lock: Mutex<()>,
    pub(crate) next_pack: AtomicU64,
    /// Serialises writes of the recorded next pack number.
    pub(crate) pack_numbers: Mutex<()>,
    /// Bumped on every change of an account record, so open writers notice
    /// a freeze, a new hard limit or a deletion at their next object.
    pub(crate) account_changes: AtomicU64,
    /// Accounts the group deleted while a writer was open: that writer
    /// refuses everything, and the deletion completes once it is gone.
    pub(crate) doomed: Mutex<HashSet<AccountId>>,
}

impl Store {
    /// Creates a new, empty store in `root` (which may exist but must not
    /// hold a store), with its packs in `root/packs`.
    pub fn create(root: &Path) -> Result<Store> {
        Self::create_on(root, &[root.join("packs")])
    }

    /// Creates a store whose packs live on the disc set `discs` (1 or 3 directories).
    pub fn create_on(root: &Path, discs: &[PathBuf]) -> Result<Store> {
        if root.join("STORE").exists() {
            return Err(StoreError::AlreadyExists(root.to_path_buf()));
        }
        coffer_raid::durable::create_dir_all(root)?;
        let store = Self::open_dirs(root, discs)?;
        let packs = store.pack_files()?.len();
        if packs > 0 {
            // The discs hold another store's packs, or this one's without its index.
            return Err(StoreError::IndexLost { root: root.to_path_buf(), packs });
        }
        store.discs().settle()?;
        write_mark(root)?;
        Ok(store)
    }

    /// Opens an existing store, cleaning up after any crash.
    pub fn open(root: &Path) -> Result<Store> {
        Self::open_on(root, &[root.join("packs")])
    }

    pub fn open_on(root: &Path, discs: &[PathBuf]) -> Result<Store> {
        let store = Self::open_unchecked(root, discs)?;
        store.recover()?;
        Ok(store)
    }

    /// Opens a store without recovery, its discs as found (not yet
    /// settled), for [`Store::recover`] or for rebuilding its index (which
    /// marks a directory whose `STORE` file was lost as a store again).
    pub(crate) fn open_unchecked(root: &Path, discs: &[PathBuf]) -> Result<Store> {
        if !root.join("STORE").exists() {
            coffer_raid::durable::create_dir_all(root)?;
            write_mark(root)?;
        }
        match fs::read_to_string(root.join("STORE")) {
            Ok(s) if s == STORE_MARK => Self::open_dirs(root, discs),
            _ => Err(StoreError::NotAStore(root.to_path_buf())),
        }
    }

    fn open_dirs(root: &Path, discs: &[PathBuf]) -> Result<Store> {
        let db = index::open_db(&root.join("index")).map_err(|e| match e {
            StoreError::Db(e) if e.to_string().contains("lock") => StoreError::InUse(root.to_path_buf()),
            other => other,
        })?;
        let next_pack = index::get::<u64>(&db, index::CF_META, index::META_NEXT_PACK)?.unwrap_or(1);
        let discs = DiscSet::open_as_found(discs)?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                root: root.to_path_buf(),
                discs,
                writers: Mutex::new(HashSet::new()),
                waiting: Mutex::new(HashMap::new()),
                wanted: Mutex::new(HashMap::new()),
                accounts_lock: Mutex::new(()),
                next_pack: AtomicU64::new(next_pack),
                pack_numbers: Mutex::new(()),
                account_changes: AtomicU64::new(0),
                doomed: Mutex::new(HashSet::new()),
            }),
        })
    }

    pub(crate) fn all_pack_ids(&self) -> Result<Vec<(u64, u64)>> {
        let db = &self.inner.db;
        let mut out = Vec::new();
        for item in db.iterator_cf(index::cf(db, index::CF_PACKS), rocksdb::IteratorMode::Start) {
            let (key, _) = item?;
            let account = u64::from_be_bytes(key[..8].try_into().unwrap());
            out.push((account, u64::from_be_bytes(key[8..16].try_into().unwrap())));
        }
        Ok(out)
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The disc set holding the pack files.
    pub fn discs(&self) -> &DiscSet {
        &self.inner.discs
    }

    pub(crate) fn db(&self) -> &DB {
        &self.inner.db
    }

    /// The single writer of an account; fails with `AccountBusy` while another exists.
    pub fn writer(&self, account: AccountId) -> Result<AccountWriter> {
        self.note_wanted(account);
        self.take_writer(account)
    }

    /// Records that something other than background counting wants the account.
    pub(crate) fn note_wanted(&self, account: AccountId) {
        self.inner.wanted.lock().unwrap().insert(account, std::time::Instant::now());
    }

    pub(crate) fn take_writer(&self, account: AccountId) -> Result<AccountWriter> {
        self.account(account)?;
        if !self.inner.writers.lock().unwrap().insert(account) {
            return Err(StoreError::AccountBusy(account));
        }
        AccountWriter::new(self.clone(), account).inspect_err(|_| {
            self.inner.writers.lock().unwrap().remove(&account);
        })
    }

    /// The account's writer, waiting up to `wait` for a busy one to come free.
    /// While this waits, [`Store::background_writer`] refuses the account,
    /// so a client never queues behind a stream of fast-sync batches.
    pub fn writer_within(&self, account: AccountId, wait: std::time::Duration) -> Result<AccountWriter> {
        let deadline = std::time::Instant::now() + wait;
        let _waiting = Waiting::register(self, account);
        loop {
            match self.writer(account) {
                Err(StoreError::AccountBusy(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// Whether a client is waiting for the account's writer.
    pub fn client_waiting(&self, account: AccountId) -> bool {
        self.inner.waiting.lock().unwrap().contains_key(&account)
    }

    /// The account's writer for background work (fast sync), which gives way
    /// to clients: busy while a client holds the writer or waits for it.
    pub fn background_writer(&self, account: AccountId) -> Result<AccountWriter> {
        if self.client_waiting(account) {
            return Err(StoreError::AccountBusy(account));
        }
        self.writer(account)
    }

    /// The account's client store marker and the digest of its set ids and
    /// tombstones: together, what two replicas compare to know they agree.
    pub fn summary(&self, account: AccountId) -> Result<(u64, SetsDigest)> {
        Ok((self.marker(account)?, self.digest(account)?))
    }

    pub(crate) fn digest(&self, account: AccountId) -> Result<SetsDigest> {
        if let Some(digest) = index::get(self.db(), index::CF_META, &index::digest_key(account))? {
            return Ok(digest);
        }
        let sets = self.sets(account)?;
        let tombstones = self.tombstones(account)?;
        Ok(SetsDigest::of(sets.iter().map(|(id, _)| id), tombstones.iter().map(|(id, _)| id)))
    }

    pub fn entry(&self, account: AccountId, id: &ObjectId) -> Result<Option<ObjectEntry>> {
        index::get(self.db(), index::CF_OBJECTS, &index::object_key(account, id))
    }

    /// The entries of `ids`, in order, read in one batch.
    pub(crate) fn entries(&self, account: AccountId, ids: &[ObjectId]) -> Result<Vec<Option<ObjectEntry>>> {
        let db = self.db();
        let family = index::cf(db, index::CF_OBJECTS);
        let keys: Vec<_> = ids.iter().map(|id| (family, index::object_key(account, id))).collect();
        db.multi_get_cf(keys)
            .into_iter()
            .map(|r| r?.map(|v| index::decode(index::CF_OBJECTS, &v)).transpose())
            .collect()
    }

    /// Which of `ids` the account already holds (one flag per id, in order).
    pub fn has_many(&self, account: AccountId, ids: &[ObjectId]) -> Result<Vec<bool>> {
        let db = self.db();
        let family = index::cf(db, index::CF_OBJECTS);
        let keys: Vec<_> = ids.iter().map(|id| (family, index::object_key(account, id))).collect();
        db.multi_get_cf(keys).into_iter().map(|r| Ok(r?.is_some())).collect()
    }

    /// Reads one object's envelope and verifies its CRC.
    pub fn get(&self, account: AccountId, id: &ObjectId) -> Result<Vec<u8>> {
        self.get_from(&mut OpenPacks::default(), account, id)
    }

    /// [`Store::get`] for one of many reads, through packs kept open.
    pub fn get_from(&self, packs: &mut OpenPacks, account: AccountId, id: &ObjectId) -> Result<Vec<u8>> {
        // A pack held open cannot change under it: a rewrite goes to a
        // pack of a new id, and the index then names that one.
        let entry = self.entry(account, id)?.ok_or(StoreError::MissingObject(*id))?;
        self.read_entry_from(packs, account, id, &entry)
    }

    pub(crate) fn read_entry(
        &self,
        account: AccountId,
        id: &ObjectId,
        entry: &ObjectEntry,
    ) -> Result<Vec<u8>> {
        self.read_entry_from(&mut OpenPacks::default(), account, id, entry)
    }

    pub(crate) fn read_entry_from(
        &self,
        packs: &mut OpenPacks,
        account: AccountId,
        id: &ObjectId,
        entry: &ObjectEntry,
    ) -> Result<Vec<u8>> {
        let name = packfile::pack_name(account, entry.pack);
        let corrupt = |problem: String| StoreError::CorruptObject {
            id: *id,
            pack: entry.pack,
            offset: entry.offset,
            problem,
        };
        let bytes =
            packs.read_at(&self.inner.discs, &name, entry.offset, entry.len).map_err(|e| match e {
                StoreError::Raid(e) => corrupt(e.to_string()),
                other => other,
            })?;
        let object = object::decode(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if object.crc != entry.crc || object.kind != entry.kind {
            return Err(corrupt("object in pack differs from the index record".into()));
        }
        Ok(bytes)
    }

    /// One committed backup set's record, if the account has it.
    pub fn set_record(&self, account: AccountId, id: &ObjectId) -> Result<Option<SetRecord>> {
        index::get(self.db(), index::CF_SETS, &index::object_key(account, id))
    }

    /// The committed backup sets of an account, oldest first.
    pub fn sets(&self, account: AccountId) -> Result<Vec<(ObjectId, SetRecord)>> {
        let mut sets = index::scan_account::<SetRecord>(self.db(), index::CF_SETS, account)?
            .into_iter()
            .map(|(k, v)| Ok((index::id_from_suffix(&k)?, v)))
            .collect::<Result<Vec<_>>>()?;
        sets.sort_by_key(|(id, r)| (r.header.time_ns, *id));
        Ok(sets)
    }

    /// Ids of backup sets that were forgotten, with when.
    pub fn tombstones(&self, account: AccountId) -> Result<Vec<(ObjectId, i64)>> {
        index::scan_account::<i64>(self.db(), index::CF_TOMBSTONES, account)?
            .into_iter()
            .map(|(k, v)| Ok((index::id_from_suffix(&k)?, v)))
            .collect()
    }

    pub fn usage(&self, account: AccountId) -> Result<Usage> {
        let packs = index::scan_account::<PackStats>(self.db(), index::CF_PACKS, account)?;
        let mut usage = Usage { sets: self.sets(account)?.len() as u64, ..Usage::default() };
        for (_, p) in packs {
            usage.live_bytes += p.live_bytes;
            usage.pack_bytes += p.bytes;
            usage.objects += p.live_objects;
            usage.packs += 1;
        }
        Ok(usage)
    }

    /// Every object entry of an account (for checks).
    pub fn objects(&self, account: AccountId) -> Result<HashMap<ObjectId, ObjectEntry>> {
        index::scan_account::<ObjectEntry>(self.db(), index::CF_OBJECTS, account)?
            .into_iter()
            .map(|(k, v)| Ok((index::id_from_suffix(&k)?, v)))
            .collect()
    }
}

/// Marks `root` as a store, durably.
fn write_mark(root: &Path) -> Result<()> {
    Ok(coffer_raid::durable::write_file(&root.join("STORE"), STORE_MARK.as_bytes())?)
}

/// A client's place in the queue for an account's writer, held while it waits.
struct Waiting<'a> {
    store: &'a Store,
    account: AccountId,
}

impl<'a> Waiting<'a> {
    fn register(store: &'a Store, account: AccountId) -> Self {
        *store.inner.waiting.lock().unwrap().entry(account).or_default() += 1;
        Waiting { store, account }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = self.store.inner.waiting.lock().unwrap();
        if let Some(n) = waiting.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.account);
            }
        }
    }
}

impl Store {
    /// Every committed pack file: (account, pack, RAID file name).
    pub(crate) fn pack_files(&self) -> Result<Vec<(u64, u64, String)>> {
        let names = self.inner.discs.names()?;
        Ok(names.into_iter().filter_map(|n| packfile::parse_pack_name(&n).map(|(a, p)| (a, p, n))).collect())
    }

    /// The committed pack files of one account: (pack, RAID file name).
    pub(crate) fn account_pack_files(&self, account: AccountId) -> Result<Vec<(u64, String)>> {
        Ok(self.pack_files()?.into_iter().filter(|(a, _, _)| *a == account).map(|(_, p, n)| (p, n)).collect())
    }
}

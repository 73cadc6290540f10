//! Crash recovery: what opening a store may remove, and what it must refuse.
//!
//! A pack file becomes part of the store in two steps: the RAID layer commits
//! it (rename), then one synced index write records it. A crash between the
//! two leaves a committed pack the index does not know. Deleting such a pack
//! is safe only when the index *proves* it was never recorded, so before a
//! pack is committed its number is *announced*: a synced index write records
//! "(account, pack) is being committed" and raises the recorded next pack
//! number past it. The write that records the pack clears the announcement.
//!
//! On open, with that invariant (every committed pack is below the recorded
//! next pack number):
//! - an unknown pack that is announced was never recorded: it is removed;
//! - any other unknown pack is moved aside (`aside/` on the disc set), never
//!   deleted: the index cannot prove it garbage;
//! - a pack at or above the recorded next number means the index is older
//!   than the discs (restored from a copy, rolled back): opening is refused;
//! - packs on the discs with no index at all (a lost index directory), or an
//!   index whose packs are all absent from the discs (discs pointed at the
//!   wrong directories), are refused too.
//!
//! A refused store is repaired with [`Store::rebuild_index`] (`coffer-node
//! rebuild-index`, `coffer repair` for a local store), which rebuilds every
//! account's records from the packs' self-describing trailers.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rocksdb::{Direction, IteratorMode, WriteBatch};
use tracing::{info, warn};

use crate::CheckReport;
use crate::error::{Result, StoreError};
use crate::index::{self, AccountRecord};
use crate::packfile;
use crate::store::{AccountId, Store};

/// Prefix of announcement keys in `meta`, followed by the pack key.
const ANNOUNCED: &[u8] = b"announced";

fn announced_key(account: AccountId, pack: u64) -> Vec<u8> {
    [ANNOUNCED, &index::pack_key(account, pack)[..]].concat()
}

impl Store {
    /// Records, durably, that `pack` of `account` is about to be committed.
    pub(crate) fn announce_pack(&self, account: AccountId, pack: u64) -> Result<()> {
        // One at a time, so the recorded next number never goes down.
        let _numbers = self.inner.pack_numbers.lock().unwrap();
        let next = self.inner.next_pack.load(Ordering::SeqCst).max(pack + 1);
        let meta = index::cf(self.db(), index::CF_META);
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, announced_key(account, pack), []);
        batch.put_cf(meta, index::META_NEXT_PACK, index::encode(&next));
        self.write_synced(batch)
    }

    /// Adds to `batch` the clearing of an announcement, for the write that
    /// records the pack (or gives it up).
    pub(crate) fn settle_announcement(&self, batch: &mut WriteBatch, account: AccountId, pack: u64) {
        batch.delete_cf(index::cf(self.db(), index::CF_META), announced_key(account, pack));
    }

    fn announced(&self) -> Result<HashSet<(AccountId, u64)>> {
        let db = self.db();
        let mut out = HashSet::new();
        for item in
            db.iterator_cf(index::cf(db, index::CF_META), IteratorMode::From(ANNOUNCED, Direction::Forward))
        {
            let (key, _) = item?;
            let Some(rest) = key.strip_prefix(ANNOUNCED).filter(|r| r.len() == 16) else { break };
            let account = u64::from_be_bytes(rest[..8].try_into().unwrap());
            out.insert((account, u64::from_be_bytes(rest[8..].try_into().unwrap())));
        }
        Ok(out)
    }

    /// Cleans up after a crash, or refuses a store whose index does not
    /// match its discs; see the module comment.
    pub(crate) fn recover(&self) -> Result<()> {
        let files = self.pack_files()?;
        let known: HashSet<(AccountId, u64)> = self.all_pack_ids()?.into_iter().collect();
        let recorded_next = index::get::<u64>(self.db(), index::CF_META, index::META_NEXT_PACK)?;
        if !known.is_empty() && !files.iter().any(|(a, p, _)| known.contains(&(*a, *p))) {
            return Err(StoreError::PacksNotFound {
                discs: self.discs().dirs().to_vec(),
                recorded: known.len(),
            });
        }
        if !files.is_empty() {
            let Some(next) = recorded_next else {
                return Err(StoreError::IndexLost { root: self.root().to_path_buf(), packs: files.len() });
            };
            if let Some((_, _, name)) = files.iter().find(|(_, p, _)| *p >= next) {
                return Err(StoreError::IndexBehind {
                    root: self.root().to_path_buf(),
                    pack: name.clone(),
                    next,
                });
            }
        }
        // Only now, with the index shown to be this store's, may a crash's
        // leftovers on the discs be settled: a refused store stays as found.
        self.discs().settle()?;
        let announced = self.announced()?;
        for (account, pack, name) in files {
            self.inner.next_pack.fetch_max(pack + 1, Ordering::SeqCst);
            if known.contains(&(account, pack)) {
                continue;
            }
            if announced.contains(&(account, pack)) {
                info!(pack = %name, "removing a pack whose commit the index never recorded");
                self.discs().remove(&name)?;
            } else {
                let aside = format!("{}/{}", packfile::ASIDE, name.replace('/', "-"));
                warn!(pack = %name, to = %aside, "the index does not know this pack; moving it aside");
                self.discs().rename(&name, &aside)?;
            }
        }
        let mut batch = WriteBatch::default();
        announced.iter().for_each(|(a, p)| self.settle_announcement(&mut batch, *a, *p));
        self.write_synced(batch)
    }

    /// Rebuilds the index of every account that has packs on the discs,
    /// from the packs themselves: the repair for a store that
    /// [`Store::open`] refuses (lost, rolled-back or replaced index).
    /// Nothing on the discs is removed. An account whose record was lost
    /// gets `lost(id)` (the node's group then brings the real one back).
    pub fn rebuild_index(
        root: &Path,
        discs: &[PathBuf],
        lost: impl Fn(AccountId) -> AccountRecord,
    ) -> Result<Vec<CheckReport>> {
        let store = Store::open_unchecked(root, discs)?;
        store.discs().settle()?;
        let files = store.pack_files()?;
        let accounts: BTreeSet<AccountId> = files.iter().map(|(a, _, _)| *a).collect();
        for (_, pack, _) in &files {
            store.inner.next_pack.fetch_max(pack + 1, Ordering::SeqCst);
        }
        let mut reports = Vec::new();
        for account in accounts {
            if store.account(account).is_err() {
                store.adopt_account(&lost(account))?;
            }
            reports.push(store.check_account(account, true)?);
        }
        let next = store.inner.next_pack.load(Ordering::SeqCst);
        let mut batch = WriteBatch::default();
        batch.put_cf(index::cf(store.db(), index::CF_META), index::META_NEXT_PACK, index::encode(&next));
        store.write_synced(batch)?;
        Ok(reports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packfile::PackWriter;

    #[test]
    fn a_pack_announced_and_committed_but_never_recorded_is_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let account = store.create_account("alice", "fp", index::Limits::UNLIMITED).unwrap().id;
        let pack = store.inner.next_pack.fetch_add(1, Ordering::SeqCst);
        let mut writer = PackWriter::create(store.discs(), account, pack).unwrap();
        writer.append(coffer_proto::ObjectId([1; 32]), b"not even an object").unwrap();
        // The crash comes after the commit, before the index write.
        store.announce_pack(account, pack).unwrap();
        writer.commit().unwrap();
        let name = packfile::pack_name(account, pack);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(!store.discs().exists(&name));
        assert!(store.announced().unwrap().is_empty());
        assert!(store.discs().names().unwrap().is_empty(), "nothing moved aside either");
    }
}

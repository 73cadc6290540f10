//! Accounts: creating, finding, adopting and deleting them.
//!
//! An account record holds what an operator decides (name, limits, frozen,
//! the registered key fingerprint). A store node adopts the records its
//! server group decides; a local store creates its one account. Changes to
//! records are serialised by one lock; the writer never touches the record
//! (the client store marker lives under its own key), so a client backing up
//! and an operator changing a limit cannot overwrite each other.

use rocksdb::WriteBatch;

use crate::error::{Result, StoreError};
use crate::index::{self, AccountRecord, Limits};
use crate::store::{AccountId, Store};

/// Checks that `name` can name an account (and a certificate).
fn validate_name(name: &str) -> Result<()> {
    coffer_proto::names::validate_account_name(name).map_err(StoreError::InvalidName)
}

impl Store {
    /// Creates an account and returns its record.
    pub fn create_account(&self, name: &str, key_fingerprint: &str, limits: Limits) -> Result<AccountRecord> {
        validate_name(name)?;
        if limits.soft > limits.hard {
            return Err(StoreError::InvalidLimits { soft: limits.soft, hard: limits.hard });
        }
        let _guard = self.inner.accounts_lock.lock().unwrap();
        if self.find_account(name)?.is_some() {
            return Err(StoreError::AccountExists(name.to_string()));
        }
        let db = self.db();
        let id = index::get::<u64>(db, index::CF_META, index::META_NEXT_ACCOUNT)?.unwrap_or(1);
        let record = AccountRecord {
            id,
            name: name.to_string(),
            key_fingerprint: key_fingerprint.to_string(),
            limits,
            frozen: false,
            created_ns: coffer_proto::clock::now_ns(),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(index::cf(db, index::CF_ACCOUNTS), index::account_key(id), index::encode(&record));
        batch.put_cf(index::cf(db, index::CF_META), index::META_NEXT_ACCOUNT, index::encode(&(id + 1)));
        batch.put_cf(index::cf(db, index::CF_META), index::marker_key(id), index::encode(&1u64));
        self.write_synced(batch)?;
        Ok(record)
    }

    /// Makes `record`, id and all, this store's account record: a store
    /// node copies the records the server group decides. A new account
    /// starts at marker 1. Returns whether anything changed.
    pub fn adopt_account(&self, record: &AccountRecord) -> Result<bool> {
        validate_name(&record.name)?;
        let _guard = self.inner.accounts_lock.lock().unwrap();
        let db = self.db();
        let key = index::account_key(record.id);
        let existing = index::get::<AccountRecord>(db, index::CF_ACCOUNTS, &key)?;
        if existing.as_ref() == Some(record) {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(index::cf(db, index::CF_ACCOUNTS), key, index::encode(record));
        self.inner.account_changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if existing.is_none() {
            batch.put_cf(index::cf(db, index::CF_META), index::marker_key(record.id), index::encode(&1u64));
            let next = index::get::<u64>(db, index::CF_META, index::META_NEXT_ACCOUNT)?.unwrap_or(1);
            let next = next.max(record.id + 1);
            batch.put_cf(index::cf(db, index::CF_META), index::META_NEXT_ACCOUNT, index::encode(&next));
        }
        self.write_synced(batch)?;
        Ok(true)
    }

    pub fn account(&self, id: AccountId) -> Result<AccountRecord> {
        index::get(self.db(), index::CF_ACCOUNTS, &index::account_key(id))?
            .ok_or_else(|| StoreError::NoSuchAccount(id.to_string()))
    }

    pub fn accounts(&self) -> Result<Vec<AccountRecord>> {
        let db = self.db();
        let mut out = Vec::new();
        for item in db.iterator_cf(index::cf(db, index::CF_ACCOUNTS), rocksdb::IteratorMode::Start) {
            let (_, value) = item?;
            out.push(index::decode(index::CF_ACCOUNTS, &value)?);
        }
        Ok(out)
    }

    pub fn find_account(&self, name: &str) -> Result<Option<AccountRecord>> {
        Ok(self.accounts()?.into_iter().find(|a| a.name == name))
    }

    /// The account called `name`, or a `NoSuchAccount` error naming it.
    pub fn account_named(&self, name: &str) -> Result<AccountRecord> {
        self.find_account(name)?.ok_or_else(|| StoreError::NoSuchAccount(name.to_string()))
    }

    /// The account's client store marker: it grows with every committed change.
    pub fn marker(&self, id: AccountId) -> Result<u64> {
        Ok(index::get::<u64>(self.db(), index::CF_META, &index::marker_key(id))?.unwrap_or(0))
    }

    /// Deletes an account and everything it stored. Fails with `AccountBusy`
    /// while a client is writing to it, whose writer then refuses its next
    /// object, so the deletion succeeds once the client has gone. Returns
    /// the bytes of packs removed.
    pub fn delete_account(&self, id: AccountId) -> Result<u64> {
        let writer = self.writer(id).inspect_err(|e| {
            if matches!(e, StoreError::AccountBusy(_)) && self.inner.doomed.lock().unwrap().insert(id) {
                self.inner.account_changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })?;
        let _guard = self.inner.accounts_lock.lock().unwrap();
        let pack_bytes = self.usage(id)?.pack_bytes;
        let db = self.db();
        let (from, to) = (index::account_key(id), index::account_key(id + 1));
        let mut batch = WriteBatch::default();
        for family in index::ACCOUNT_FAMILIES {
            batch.delete_range_cf(index::cf(db, family), from, to);
        }
        batch.delete_cf(index::cf(db, index::CF_META), index::marker_key(id));
        batch.delete_cf(index::cf(db, index::CF_META), index::digest_key(id));
        let packs = self.account_pack_files(id)?;
        self.write_synced(batch)?;
        for (_, name) in packs {
            self.discs().remove(&name)?;
        }
        drop(writer);
        self.inner.doomed.lock().unwrap().remove(&id);
        Ok(pack_bytes)
    }

    pub(crate) fn write_synced(&self, batch: WriteBatch) -> Result<()> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        Ok(self.db().write_opt(batch, &opts)?)
    }
}

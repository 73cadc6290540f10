//! The RocksDB index of a store and its record codecs.
//!
//! Column families, each keyed by account id (u64 big-endian) so an account's
//! records are contiguous:
//!
//! | family         | key                   | value                        |
//! |----------------|-----------------------|------------------------------|
//! | `accounts`     | account               | [`AccountRecord`]            |
//! | `objects`      | account, object id    | [`ObjectEntry`]              |
//! | `packs`        | account, pack id      | [`PackStats`]                |
//! | `sets`         | account, set id       | [`SetRecord`]                |
//! | `tombstones`   | account, set id       | time forgotten (i64 ns)      |
//! | `unreferenced` | account, object id    | time stored (i64 ns)         |
//! | `uncounted`    | account, object id    | empty: a tree or set whose references are not yet counted |
//! | `meta`         | name                  | store-wide counters          |
//! | `meta`         | "marker", account     | client store marker (u64)    |
//! | `meta`         | "digest", account     | [`SetsDigest`] of sets and tombstones |
//!
//! Values are postcard-encoded. `unreferenced` lists objects stored but not yet
//! named by any tree or set: the only candidates for grace-period collection,
//! so collection never scans the whole store. `uncounted` lists trees and
//! sets stored since references were last counted (see `counting`).
//!
//! [`SetsDigest`]: coffer_proto::SetsDigest

use std::path::Path;

use coffer_proto::{ObjectId, ObjectKind, SetHeader};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{Result, StoreError};

pub const CF_ACCOUNTS: &str = "accounts";
pub const CF_OBJECTS: &str = "objects";
pub const CF_PACKS: &str = "packs";
pub const CF_SETS: &str = "sets";
pub const CF_TOMBSTONES: &str = "tombstones";
pub const CF_UNREFERENCED: &str = "unreferenced";
pub const CF_UNCOUNTED: &str = "uncounted";
pub const CF_META: &str = "meta";
const FAMILIES: [&str; 8] =
    [CF_ACCOUNTS, CF_OBJECTS, CF_PACKS, CF_SETS, CF_TOMBSTONES, CF_UNREFERENCED, CF_UNCOUNTED, CF_META];

/// Families whose keys start with an account id: what deleting an account clears.
pub const ACCOUNT_FAMILIES: [&str; 7] =
    [CF_ACCOUNTS, CF_OBJECTS, CF_PACKS, CF_SETS, CF_TOMBSTONES, CF_UNREFERENCED, CF_UNCOUNTED];

pub const META_NEXT_PACK: &[u8] = b"next_pack";
pub const META_NEXT_ACCOUNT: &[u8] = b"next_account";

/// Where an object lives and how many references name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    pub pack: u64,
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
    pub kind: ObjectKind,
    pub refcount: u64,
}

/// Size accounting of one pack, kept so housekeeping knows which packs to
/// rewrite without reading them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackStats {
    pub bytes: u64,
    pub live_bytes: u64,
    pub objects: u64,
    pub live_objects: u64,
}

/// A committed backup set as the node sees it: its cleartext header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRecord {
    pub header: SetHeader,
    pub committed_ns: i64,
}

/// One account of the store: what an operator sets. The client store marker
/// and usage are per replica and kept apart (see [`marker_key`]), so this
/// record can later be replicated unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub id: u64,
    pub name: String,
    /// Hex fingerprint of the account's keys, checked at login; empty until
    /// the first `coffer init` registers one.
    pub key_fingerprint: String,
    pub limits: Limits,
    /// A frozen account can be read but not written.
    pub frozen: bool,
    pub created_ns: i64,
}

/// Storage limits of an account, in bytes of live objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Above this, housekeeping forgets the oldest sets (never the newest).
    pub soft: u64,
    /// Uploads that would pass this are refused.
    pub hard: u64,
}

impl Limits {
    pub const UNLIMITED: Limits = Limits { soft: u64::MAX, hard: u64::MAX };
}

/// Write-ahead log kept before the families holding the oldest are flushed.
const WAL_LIMIT: u64 = 64 << 20;

pub fn open_db(path: &Path) -> Result<DB> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_keep_log_file_num(4);
    // A write-ahead log is freed only once every family with data in it has
    // flushed, and by default RocksDB lets logs reach four times all
    // families' buffers (4 GiB here) first: a million-file backup and its
    // counting left 190 MB of log beside 130 MB of tables on a node.
    opts.set_max_total_wal_size(WAL_LIMIT);
    // RocksDB's own log opens with a ~130 KiB dump of its options: a local
    // store is opened by every backup, and its size is the user's.
    opts.set_log_level(rocksdb::LogLevel::Warn);
    let cfs = FAMILIES.iter().map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    Ok(DB::open_cf_descriptors(&opts, path, cfs)?)
}

pub fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name).expect("column family created at open")
}

pub fn account_key(account: u64) -> [u8; 8] {
    account.to_be_bytes()
}

/// Where an account's client store marker lives in `meta`.
pub fn marker_key(account: u64) -> [u8; 14] {
    meta_account_key(b"marker", account)
}

/// Where an account's [`SetsDigest`] lives in `meta`; absent means "compute
/// it from the sets and tombstones" (a store from before digests, or a
/// rebuilt index).
pub fn digest_key(account: u64) -> [u8; 14] {
    meta_account_key(b"digest", account)
}

fn meta_account_key(name: &[u8; 6], account: u64) -> [u8; 14] {
    let mut k = [0; 14];
    k[..6].copy_from_slice(name);
    k[6..].copy_from_slice(&account.to_be_bytes());
    k
}

pub fn object_key(account: u64, id: &ObjectId) -> [u8; 40] {
    let mut k = [0; 40];
    k[..8].copy_from_slice(&account.to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

pub fn pack_key(account: u64, pack: u64) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&account.to_be_bytes());
    k[8..].copy_from_slice(&pack.to_be_bytes());
    k
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("index record serializes")
}

pub fn decode<T: DeserializeOwned>(family: &str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::CorruptIndex(format!("{family}: {e}")))
}

pub fn get<T: DeserializeOwned>(db: &DB, family: &str, key: &[u8]) -> Result<Option<T>> {
    db.get_pinned_cf(cf(db, family), key)?.map(|v| decode(family, &v)).transpose()
}

/// Every record of one account in a family, in key order, with the key's
/// suffix after the account prefix.
pub fn scan_account<T: DeserializeOwned>(db: &DB, family: &str, account: u64) -> Result<Vec<(Vec<u8>, T)>> {
    let prefix = account_key(account);
    let mut out = Vec::new();
    for item in db.iterator_cf(cf(db, family), IteratorMode::From(&prefix, Direction::Forward)) {
        let (key, value) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        out.push((key[8..].to_vec(), decode(family, &value)?));
    }
    Ok(out)
}

/// The object ids of an account's first `limit` records in a family whose
/// keys end in an object id, in key order.
pub fn first_ids(db: &DB, family: &str, account: u64, limit: usize) -> Result<Vec<ObjectId>> {
    let prefix = account_key(account);
    let mut out = Vec::new();
    for item in db.iterator_cf(cf(db, family), IteratorMode::From(&prefix, Direction::Forward)) {
        let (key, _) = item?;
        if !key.starts_with(&prefix) || out.len() == limit {
            break;
        }
        out.push(id_from_suffix(&key[8..])?);
    }
    Ok(out)
}

pub fn id_from_suffix(suffix: &[u8]) -> Result<ObjectId> {
    ObjectId::from_slice(suffix).ok_or_else(|| StoreError::CorruptIndex("bad object key".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Index values come from the disc: anything that does not decode is
        /// a `CorruptIndex` error naming the family, never a panic.
        #[test]
        fn arbitrary_values_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = decode::<ObjectEntry>(CF_OBJECTS, &bytes);
            let _ = decode::<PackStats>(CF_PACKS, &bytes);
            let _ = decode::<SetRecord>(CF_SETS, &bytes);
            let _ = decode::<AccountRecord>(CF_ACCOUNTS, &bytes);
            let _ = decode::<u64>(CF_META, &bytes);
            if let Err(e) = decode::<i64>(CF_TOMBSTONES, &bytes) {
                proptest::prop_assert!(e.to_string().contains(CF_TOMBSTONES));
            }
        }
    }
}

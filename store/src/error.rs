//! Store errors. Each names what it concerns so an operator or a user can act
//! on it: the object, the pack file and offset, the account.

use std::path::PathBuf;

use coffer_proto::{ObjectError, ObjectId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("store index: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("{0} is not a Coffer store (no STORE file)")]
    NotAStore(PathBuf),
    #[error("{0} already holds a Coffer store")]
    AlreadyExists(PathBuf),
    #[error("the store at {0} is in use by another process")]
    InUse(PathBuf),
    #[error(
        "the store at {root} has {packs} pack files but no index (lost or replaced index directory); \
         refusing to open it, nothing was removed: rebuild the index from the packs \
         (`coffer-node rebuild-index`, or `coffer repair` for a local store)"
    )]
    IndexLost { root: PathBuf, packs: usize },
    #[error(
        "the store at {root} has pack {pack}, numbered past the index's next pack {next}: the index is \
         older than the discs (restored or rolled back); refusing to open it, nothing was removed: \
         rebuild the index from the packs (`coffer-node rebuild-index`, or `coffer repair`)"
    )]
    IndexBehind { root: PathBuf, pack: String, next: u64 },
    #[error(
        "the index records {recorded} packs but none of them is on the discs {discs:?}: are `discs` the \
         right directories? refusing to open the store, nothing was removed"
    )]
    PacksNotFound { discs: Vec<PathBuf>, recorded: usize },
    #[error("no account {0} in this store")]
    NoSuchAccount(String),
    #[error("account {0} already exists")]
    AccountExists(String),
    #[error("invalid account name {0}")]
    InvalidName(String),
    #[error("soft limit {soft} is above hard limit {hard}")]
    InvalidLimits { soft: u64, hard: u64 },
    #[error("account {account} would pass its hard limit ({used} of {limit} bytes used); upload refused")]
    OverHardLimit { account: String, used: u64, limit: u64 },
    #[error("account {0} is busy: another client is writing to it")]
    AccountBusy(u64),
    #[error("account `{0}` is frozen: it can be read but not written")]
    Frozen(String),
    #[error("account `{0}` was deleted")]
    AccountDeleted(String),
    #[error("object {0} is not in the store")]
    MissingObject(ObjectId),
    #[error("{kind} {object} references {missing}, which is not in the store")]
    MissingReference { kind: &'static str, object: ObjectId, missing: ObjectId },
    #[error("no backup set {0} in this store")]
    NoSuchSet(String),
    #[error("invalid object {id}: {source}")]
    InvalidObject { id: ObjectId, source: ObjectError },
    #[error("object {id} in pack {pack:016x} at offset {offset}: {problem}")]
    CorruptObject { id: ObjectId, pack: u64, offset: u64, problem: String },
    #[error("pack file {path}: {problem}")]
    CorruptPack { path: PathBuf, problem: String },
    #[error("pack storage: {0}")]
    Raid(#[from] coffer_raid::RaidError),
    #[error("corrupt index record: {0}")]
    CorruptIndex(String),
    #[error("wrong object kind for {id}: expected {expected}, found {found}")]
    WrongKind { id: ObjectId, expected: &'static str, found: &'static str },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

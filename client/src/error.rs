//! Client errors. Each names the file, object or setting concerned.

use std::path::PathBuf;

use coffer_node::StoreError;
use coffer_proto::ObjectId;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("keys file {path}: {problem}")]
    Keys { path: PathBuf, problem: String },
    #[error(
        "wrong keys file: this account's keys have fingerprint {expected}, the keys file given has {found}; \
         nothing was read or written"
    )]
    WrongKeys { expected: String, found: String },
    #[error("{what} {id}: {problem}")]
    Corrupt { what: &'static str, id: ObjectId, problem: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

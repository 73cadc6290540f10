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
    #[error("node {node}: {message}")]
    Node { node: String, message: String },
    #[error("node {node}: session lost ({message})")]
    SessionLost { node: String, message: String },
    #[error("the store changed since this client's cache was made (marker {expected}, now {found})")]
    StoreChanged { expected: u64, found: u64 },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Whether this is a problem with one file on disk (skip it and go on), as
    /// opposed to a problem with the store, which must stop a backup.
    pub fn is_about_a_file(&self) -> bool {
        matches!(self, Error::Io { .. })
    }

    /// Whether the store itself failed (unreachable, refused, changed).
    pub fn is_store_failure(&self) -> bool {
        matches!(
            self,
            Error::Store(_) | Error::Node { .. } | Error::SessionLost { .. } | Error::StoreChanged { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

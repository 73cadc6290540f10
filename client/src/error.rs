//! Client errors. Each names the file, object or setting concerned.

use std::path::PathBuf;

use coffer_proto::ObjectId;
use coffer_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: {source}", crate::names::show(path))]
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
    #[error("node {node}: unreachable ({message})")]
    Unreachable { node: String, message: String },
    /// The node does not hold the account (any more); `elsewhere` are the
    /// addresses of the nodes that do.
    #[error("node {node}: {message}")]
    NotHeld { node: String, message: String, elsewhere: Vec<String> },
    /// The session broke while uploads in it were not yet committed; the
    /// backup must start again (on whichever node the connector finds).
    #[error("node {node}: connection lost during the upload ({message})")]
    Interrupted { node: String, message: String },
    #[error("no store node answered: {tried}")]
    NoServer { tried: String },
    #[error("the store changed since this client's cache was made ({expected}; now {found})")]
    StoreChanged { expected: crate::backend::Position, found: crate::backend::Position },
    /// Asked to stop (`coffer ctl stop`, SIGTERM) at an object boundary:
    /// what reached the store stays, and the next backup skips it.
    #[error("the backup was stopped; the next one goes on from where it left off")]
    Stopped,
    /// Another coffer process is backing up with this cache.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    BadAddress(#[from] coffer_proto::address::BadStoreUrl),
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
            Error::Store(_)
                | Error::Node { .. }
                | Error::SessionLost { .. }
                | Error::Unreachable { .. }
                | Error::NotHeld { .. }
                | Error::Interrupted { .. }
                | Error::NoServer { .. }
                | Error::StoreChanged { .. }
        )
    }

    /// Whether another node may do better: this one is down, unreachable
    /// or does not hold the account.
    pub fn fails_over(&self) -> bool {
        matches!(self, Error::SessionLost { .. } | Error::Unreachable { .. } | Error::NotHeld { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! RAID errors, each naming the file (and stripe) concerned.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RaidError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("disc directory {dir}: {problem}")]
    Label { dir: PathBuf, problem: String },
    #[error("a disc set has 1 or 3 directories, not {0}")]
    DiscCount(usize),
    #[error("RAID file `{0}` already exists (not asked to overwrite it)")]
    Exists(String),
    #[error("RAID file `{0}` is already being written")]
    Busy(String),
    #[error("RAID file `{0}` does not exist")]
    NotFound(String),
    #[error("RAID file `{name}` cannot be read: {problem}")]
    Unrecoverable { name: String, problem: String },
    #[error("invalid RAID file name `{0}`")]
    BadName(String),
    #[error("read of {len} bytes at {offset} is past the end of `{name}` ({size} bytes)")]
    OutOfRange { name: String, offset: u64, len: usize, size: u64 },
}

impl RaidError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RaidError {
        let path = path.into();
        move |source| RaidError::Io { path, source }
    }
}

pub type Result<T, E = RaidError> = std::result::Result<T, E>;

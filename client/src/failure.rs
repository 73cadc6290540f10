//! The client's last failure, kept in its cache directory until a backup
//! succeeds, and sent with every login meanwhile: a client that failed
//! because it could not reach the group tells the group at its next login
//! (which merges repeats of the same report by its time).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Where it is kept in the cache directory.
pub const FAILURE_FILE: &str = "last-failure.json";

/// The longest file read back: a message is cut to 1 KiB by the node anyway.
const MAX_FILE: u64 = 16 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub time_ns: i64,
    pub message: String,
}

/// Records `message` as the last failure; a failure to record is logged.
pub fn record(path: &Path, message: &str) {
    let failure = Failure { time_ns: coffer_proto::clock::now_ns(), message: message.to_string() };
    let json = serde_json::to_vec(&failure).unwrap_or_default();
    if let Err(e) = crate::cache::write_private(path, &json) {
        tracing::warn!(path = %path.display(), error = %e, "could not keep the failure to report it later");
    }
}

/// The failure not yet followed by a good backup; a missing, oversized or
/// unreadable file is none.
pub fn load(path: &Path) -> Option<Failure> {
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() > MAX_FILE {
        return None;
    }
    serde_json::from_reader(file).ok()
}

pub fn clear(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// This machine's host name, as backup sets and the operator's reports show it.
pub fn host_name() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_kept_until_cleared_and_a_damaged_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FAILURE_FILE);
        assert_eq!(load(&path), None);
        record(&path, "no node answered");
        assert_eq!(load(&path).unwrap().message, "no node answered");
        clear(&path);
        assert_eq!(load(&path), None);
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(load(&path), None);
        std::fs::write(&path, vec![b' '; MAX_FILE as usize + 1]).unwrap();
        assert_eq!(load(&path), None);
    }
}

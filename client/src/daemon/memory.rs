//! What the daemon remembers across restarts, in `daemon.json` in the
//! account's cache directory: when it last backed up, and since when each
//! location removed from the configuration has been missing from it (its
//! data stays in new sets for `delete_redundant_locations_after`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

const FILE: &str = "daemon.json";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    pub last_success_ns: Option<i64>,
    /// Locations in the newest set but no longer configured, and since when.
    pub removed_since: BTreeMap<PathBuf, i64>,
    /// The last success time a `not-backed-up` event was sent for.
    pub silence_reported: Option<i64>,
}

impl Memory {
    /// The remembered state; a missing or unreadable file is a fresh start.
    pub fn load(dir: &Path) -> Memory {
        let path = dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), "ignoring unreadable daemon state: {e}");
                Memory::default()
            }),
            Err(_) => Memory::default(),
        }
    }

    pub fn save(&self, dir: &Path) {
        let bytes = serde_json::to_vec_pretty(self).expect("state serializes");
        if let Err(e) = crate::cache::write_private(&dir.join(FILE), &bytes) {
            tracing::warn!("cannot save the daemon's state: {e}");
        }
    }

    /// Of the locations `removed` from the configuration, those still kept:
    /// removed less than `keep` ago. Forgets locations configured again.
    pub fn redundant(&mut self, removed: &[PathBuf], keep: Duration) -> Vec<PathBuf> {
        let now = coffer_proto::clock::now_ns();
        self.removed_since.retain(|path, _| removed.contains(path));
        let mut kept = Vec::new();
        for path in removed {
            let since = *self.removed_since.entry(path.clone()).or_insert(now);
            if Duration::from_nanos((now - since).max(0) as u64) < keep {
                kept.push(path.clone());
            } else {
                tracing::info!(path = %path.display(), "a location removed from the configuration leaves the new set");
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_locations_stay_for_the_configured_time_and_are_forgotten_when_back() {
        let mut m = Memory::default();
        let old = PathBuf::from("/old");
        assert_eq!(m.redundant(std::slice::from_ref(&old), Duration::from_secs(3600)), vec![old.clone()]);
        assert!(m.redundant(std::slice::from_ref(&old), Duration::ZERO).is_empty(), "past its time it goes");
        assert!(m.redundant(&[], Duration::from_secs(3600)).is_empty());
        assert!(m.removed_since.is_empty(), "configured again: forgotten");
    }
}

//! The client's local cache of store metadata.
//!
//! Holds decrypted trees (by id) and backup-set envelopes, so that a backup in
//! which nothing changed needs no download, and the client store marker it
//! last saw. Trees are content-addressed and verified against their id when
//! read back, so they never go stale; when the store reports a marker other
//! than the one recorded, set envelopes are dropped and fetched again. The
//! cache is an optimisation only: any failure to write it is logged and
//! ignored.

use std::fs;
use std::path::{Path, PathBuf};

use coffer_proto::ObjectId;
use tracing::{debug, info};

use crate::keys::Keys;
use crate::tree::Tree;

pub struct Cache {
    dir: PathBuf,
}

/// The default cache root: `$COFFER_CACHE`, `$XDG_CACHE_HOME/coffer`, or `~/.cache/coffer`.
pub fn default_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("coffer");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("coffer")
}

impl Cache {
    /// Opens the cache of one store and account under `root`.
    pub fn open(root: &Path, store_key: &str, keys: &Keys, marker: u64) -> Cache {
        let name = blake3::hash(format!("{store_key}\n{}", keys.fingerprint()).as_bytes()).to_hex();
        let cache = Cache { dir: root.join(&name[..24]) };
        let recorded =
            fs::read_to_string(cache.dir.join("marker")).ok().and_then(|s| s.trim().parse::<u64>().ok());
        if recorded.is_some_and(|m| m != marker) {
            info!(recorded, marker, "store changed since this client last saw it; refreshing the cache");
            let _ = fs::remove_dir_all(cache.dir.join("sets"));
        }
        cache.record_marker(marker);
        cache
    }

    pub fn record_marker(&self, marker: u64) {
        self.write(&self.dir.join("marker"), marker.to_string().as_bytes());
    }

    fn tree_path(&self, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join("trees").join(&hex[..2]).join(hex)
    }

    pub fn tree(&self, keys: &Keys, id: &ObjectId) -> Option<Tree> {
        let plain = fs::read(self.tree_path(id)).ok()?;
        Tree::from_plaintext(keys, id, &plain)
            .inspect_err(|e| debug!(error = %e, "ignoring damaged cache entry"))
            .ok()
    }

    pub fn put_tree(&self, id: &ObjectId, plaintext: &[u8]) {
        self.write(&self.tree_path(id), plaintext);
    }

    pub fn set(&self, id: &ObjectId) -> Option<Vec<u8>> {
        fs::read(self.dir.join("sets").join(id.to_hex())).ok()
    }

    pub fn put_set(&self, id: &ObjectId, envelope: &[u8]) {
        self.write(&self.dir.join("sets").join(id.to_hex()), envelope);
    }

    fn write(&self, path: &Path, bytes: &[u8]) {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let result = path
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|_| fs::write(&tmp, bytes))
            .and_then(|_| fs::rename(&tmp, path));
        if let Err(e) = result {
            debug!(path = %path.display(), error = %e, "could not write to the cache");
        }
    }
}

//! The client's local cache of store metadata.
//!
//! Holds decrypted tree objects (appended to a few segment files, see
//! `trees`) and backup-set envelopes by id (content-addressed and verified
//! when read back, so they never go stale), and `sets.list`: the
//! complete list of the store's sets as of one [`Position`] (client store
//! marker and sets digest). With that list a backup in which nothing changed
//! needs neither a download nor, for a node, a connection. When the store
//! reports another position the list is dropped and fetched again. It also
//! holds `held.ids`, the record of objects known held (see `held`). The
//! cache is an optimisation only: any failure to write it is logged and
//! ignored.
//!
//! One process at a time writes to the account through a cache: a backup
//! or a daemon holds [`WriterLock`] (an `flock` on `writer.lock`, released
//! by the kernel if the process dies), and a second one is told who has it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use coffer_proto::ObjectId;
use tracing::{debug, info};

use crate::backend::Position;
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::tree;
use trees::Trees;

mod trees;

/// Proof that this process is the one writing through the cache.
pub struct WriterLock {
    _file: nix::fcntl::Flock<fs::File>,
}

pub struct Cache {
    dir: PathBuf,
    trees: Trees,
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
    pub fn open(root: &Path, store_key: &str, keys: &Keys) -> Cache {
        let name = blake3::hash(format!("{store_key}\n{}", keys.fingerprint()).as_bytes()).to_hex();
        // A cache made before it was private becomes private now.
        for dir in [root, &root.join(&name[..24])] {
            if fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o077 != 0) {
                let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
            }
        }
        let dir = root.join(&name[..24]);
        Cache { trees: Trees::new(dir.join("trees")), dir }
    }

    /// This account's directory in the cache.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the writer lock for `who` ("backup", "daemon"), or says which
    /// process holds it.
    pub fn lock_writer(&self, who: &str) -> Result<WriterLock> {
        use std::io::{Read, Seek, Write};
        let path = self.dir.join("writer.lock");
        let file = open_private(&path).map_err(Error::io(&path))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                let said = format!("{who} (pid {})", std::process::id());
                let written = locked
                    .set_len(0)
                    .and_then(|_| locked.rewind())
                    .and_then(|_| locked.write_all(said.as_bytes()));
                written.map_err(Error::io(&path))?;
                Ok(WriterLock { _file: locked })
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                Err(Error::Busy(format!(
                    "another coffer is writing to this account through the same cache: {}; wait for it to \
                     finish (with a daemon, use `coffer ctl sync`)",
                    if holder.is_empty() { "a process" } else { holder.trim() }
                )))
            }
            Err((_, errno)) => Err(Error::io(&path)(errno.into())),
        }
    }

    fn list_path(&self) -> PathBuf {
        self.dir.join("sets.list")
    }

    fn read_list(&self) -> Option<(Position, Vec<ObjectId>)> {
        let text = fs::read_to_string(self.list_path()).ok()?;
        let mut lines = text.lines();
        // A list from before positions had digests has no digest: not read.
        let position = Position::from_text(lines.next()?)?;
        let ids = lines.map(|l| l.parse::<ObjectId>().ok()).collect::<Option<Vec<_>>>()?;
        Some((position, ids))
    }

    /// The store's position at which the cached set list was complete.
    pub fn position(&self) -> Option<Position> {
        self.read_list().map(|(p, _)| p)
    }

    /// The cached list of set ids, if complete.
    pub fn set_ids(&self) -> Option<Vec<ObjectId>> {
        self.read_list().map(|(_, ids)| ids)
    }

    /// Drops the set list if the store is no longer where it was made.
    pub fn check_position(&self, position: Position) {
        if let Some(recorded) = self.position().filter(|p| *p != position) {
            info!(%recorded, %position, "store changed since this client last saw it; refreshing the cache");
            self.forget_sets();
        }
    }

    /// Records the complete list of sets as of `position`.
    pub fn record_sets(&self, position: Position, ids: impl IntoIterator<Item = ObjectId>) {
        let mut text = format!("{}\n", position.to_text());
        for id in ids {
            text.push_str(&id.to_hex());
            text.push('\n');
        }
        self.write(&self.list_path(), text.as_bytes());
    }

    /// Updates the list after this client changed the store from `before` to
    /// `after` by committing `added` or forgetting `removed`: kept only if
    /// nobody else changed it in between (the digest moved by exactly that).
    pub fn record_change(
        &self,
        before: Position,
        after: Position,
        added: Option<ObjectId>,
        removed: Option<ObjectId>,
    ) {
        let ours = moved_only_by(before, after, added, removed);
        match self.read_list() {
            Some((p, mut ids)) if p == before && ours => {
                ids.retain(|id| Some(*id) != removed);
                ids.extend(added);
                self.record_sets(after, ids);
            }
            _ => self.forget_sets(),
        }
    }

    /// Drops the set list: the next reader asks the store.
    pub fn forget_sets(&self) {
        let _ = fs::remove_file(self.list_path());
    }

    /// The plaintext of tree object `id`, if cached and intact.
    pub fn tree_object(&self, keys: &Keys, id: &ObjectId) -> Option<Vec<u8>> {
        if let Some(plain) = self.trees.get(id).filter(|plain| tree::plaintext_matches(keys, id, plain)) {
            return Some(plain);
        }
        // A cache from before segments kept a file per object.
        let hex = id.to_hex();
        let plain = fs::read(self.dir.join("trees").join(&hex[..2]).join(hex)).ok()?;
        if !tree::plaintext_matches(keys, id, &plain) {
            debug!(%id, "ignoring damaged cache entry");
            return None;
        }
        self.trees.put(id, &plain);
        Some(plain)
    }

    /// Caches tree object `id` unless the cache has it already (a changed
    /// directory's unchanged runs are cut again at every backup).
    pub fn keep_tree_object(&self, id: &ObjectId, plaintext: &[u8]) {
        self.trees.put(id, plaintext);
    }

    pub fn set(&self, id: &ObjectId) -> Option<Vec<u8>> {
        fs::read(self.dir.join("sets").join(id.to_hex())).ok()
    }

    pub fn put_set(&self, id: &ObjectId, envelope: &[u8]) {
        self.write(&self.dir.join("sets").join(id.to_hex()), envelope);
    }

    fn write(&self, path: &Path, bytes: &[u8]) {
        if let Err(e) = write_private(path, bytes) {
            debug!(path = %path.display(), error = %e, "could not write to the cache");
        }
    }
}

/// Whether the store moved from `before` to `after` by exactly this
/// client's commit of `added` or forgetting of `removed` (one marker step,
/// the digest toggled by those ids alone).
pub fn moved_only_by(
    before: Position,
    after: Position,
    added: Option<ObjectId>,
    removed: Option<ObjectId>,
) -> bool {
    let mut expected = before.digest;
    added.iter().for_each(|id| expected.toggle_set(id));
    removed.iter().for_each(|id| {
        expected.toggle_set(id);
        expected.toggle_tombstone(id);
    });
    after.marker == before.marker + 1 && after.digest == expected
}

/// Writes `bytes` to `path` whole (a temporary file renamed into place),
/// readable by the user alone: the cache holds decrypted listings. Missing
/// directories are made 0700.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    write_file(&tmp, bytes, fs::OpenOptions::new().truncate(true).create(true))?;
    fs::rename(&tmp, path)
}

/// Opens `path` to read and write, made (0600, in a 0700 directory) if
/// missing, as it is otherwise.
fn open_private(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
    fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)
}

fn write_file(path: &Path, bytes: &[u8], how: &mut fs::OpenOptions) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    how.write(true).mode(0o600);
    let mut file = match how.open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = path.parent().unwrap_or(Path::new("."));
            fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
            how.open(path)?
        }
        other => other?,
    };
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_object_cached_as_a_file_of_its_own_is_read_and_moved_into_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::from_master(&[7; crate::keys::MASTER_LEN]);
        let (plain, damaged) = (b"an old cache's tree".to_vec(), b"a damaged tree".to_vec());
        let (id, other) = (keys.object_id(&plain), keys.object_id(&damaged));
        let cache = Cache::open(dir.path(), "test", &keys);
        let old = |id: &ObjectId| {
            let hex = id.to_hex();
            cache.dir().join("trees").join(&hex[..2]).join(hex)
        };
        for (id, bytes) in [(id, &plain[..]), (other, b"not what it was")] {
            fs::create_dir_all(old(&id).parent().unwrap()).unwrap();
            fs::write(old(&id), bytes).unwrap();
        }
        assert_eq!(cache.tree_object(&keys, &id), Some(plain.clone()));
        assert_eq!(cache.tree_object(&keys, &other), None, "checked against its id");
        fs::remove_file(old(&id)).unwrap();
        drop(cache);

        let cache = Cache::open(dir.path(), "test", &keys);
        assert_eq!(cache.tree_object(&keys, &id), Some(plain));
    }
}

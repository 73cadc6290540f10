//! A client's view of one account in one store: the backend, the keys and
//! the cache together. Every object read through here is verified (CRC, then
//! the AES-GCM tag or HMAC, then the id) before it is used.

use std::path::{Path, PathBuf};

use coffer_proto::ObjectId;

use crate::backend::{Backend, LocalBackend, StoreUrl};
use crate::backupset::BackupSet;
use crate::cache::Cache;
use crate::crypto;
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::tree::Tree;

pub struct Repository {
    pub backend: Box<dyn Backend>,
    pub keys: Keys,
    pub cache: Cache,
    /// Paths a backup must never descend into (the local store itself).
    pub private_paths: Vec<PathBuf>,
}

impl Repository {
    /// Creates a keys file and the store's account for it.
    pub fn init(url: &str, keys_path: &Path, cache_root: &Path) -> Result<Repository> {
        let StoreUrl::Local(root) = StoreUrl::parse(url)?;
        if keys_path.exists() {
            return Err(Error::Keys {
                path: keys_path.to_path_buf(),
                problem: "already exists; refusing to overwrite it".into(),
            });
        }
        let keys = Keys::create(keys_path)?;
        match LocalBackend::init(&root, &keys) {
            Ok(backend) => Ok(Self::assemble(Box::new(backend), keys, cache_root, root)),
            Err(e) => {
                // A keys file for a store that was never set up would only mislead.
                let _ = std::fs::remove_file(keys_path);
                Err(e)
            }
        }
    }

    pub fn open(url: &str, keys_path: &Path, cache_root: &Path) -> Result<Repository> {
        let StoreUrl::Local(root) = StoreUrl::parse(url)?;
        let keys = Keys::load(keys_path)?;
        let backend = LocalBackend::open(&root, &keys)?;
        Ok(Self::assemble(Box::new(backend), keys, cache_root, root))
    }

    fn assemble(backend: Box<dyn Backend>, keys: Keys, cache_root: &Path, store_root: PathBuf) -> Repository {
        let marker = backend.marker().unwrap_or(0);
        let cache = Cache::open(cache_root, &backend.cache_key(), &keys, marker);
        let private_paths = [store_root, cache_root.to_path_buf()]
            .into_iter()
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect();
        Repository { backend, keys, cache, private_paths }
    }

    pub fn tree(&self, id: &ObjectId) -> Result<Tree> {
        if let Some(tree) = self.cache.tree(&self.keys, id) {
            return Ok(tree);
        }
        let tree = Tree::open(&self.keys, id, &self.backend.get(id)?)?;
        self.cache.put_tree(id, &tree.plaintext());
        Ok(tree)
    }

    pub fn chunk(&self, id: &ObjectId) -> Result<Vec<u8>> {
        crypto::open_chunk(&self.keys, id, &self.backend.get(id)?)
    }

    /// Every committed backup set, oldest first.
    pub fn sets(&self) -> Result<Vec<BackupSet>> {
        self.backend.sets()?.into_iter().map(|(id, _)| self.set(&id)).collect()
    }

    fn set(&self, id: &ObjectId) -> Result<BackupSet> {
        if let Some(set) = self.cache.set(id).and_then(|env| BackupSet::open(&self.keys, id, &env).ok()) {
            return Ok(set);
        }
        let envelope = self.backend.get(id)?;
        let set = BackupSet::open(&self.keys, id, &envelope)?;
        self.cache.put_set(id, &envelope);
        Ok(set)
    }
}

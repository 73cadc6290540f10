//! A client's view of one account in one store: the backend, the keys and
//! the cache together. Every object read through here is verified (CRC, then
//! the AES-GCM tag or HMAC, then the id) before it is used.

use std::path::{Path, PathBuf};

use coffer_proto::{ObjectId, StoreUrl};

use coffer_proto::tls::TlsFiles;

use crate::backend::{Backend, LocalBackend};
use crate::backupset::BackupSet;
use crate::cache::Cache;
use crate::crypto;
use crate::error::{Error, Result};
use crate::failover::{Policy, Servers};
use crate::failure::FAILURE_FILE;
use crate::held::Held;
use crate::keys::Keys;
use crate::remote::{Access, Group, RemoteBackend, learnt_servers};
use crate::tree::{self, Tree};

/// The server group's nodes as the last login reported them, in the cache
/// directory (JSON: id, name, address, site of each).
pub const GROUP_FILE: &str = "group.json";

pub struct Repository {
    pub backend: Box<dyn Backend>,
    pub keys: Keys,
    pub cache: Cache,
    /// Paths a backup never takes: the local store, the cache, the keys file.
    pub private_paths: Vec<PathBuf>,
    /// Where the last failed backup is kept until one succeeds.
    pub failure_file: PathBuf,
    /// What the store is known to hold, for the backup running now.
    pub held: Held,
}

/// Chunk ids asked for in one streamed request by [`Repository::chunks`].
const FETCH_WINDOW: usize = 1024;

/// Where S, the last node that worked, is kept in the cache directory.
pub const LAST_NODE_FILE: &str = "last-node";

/// Which store, and for a node, the TLS files that prove who we are.
#[derive(Debug, Clone)]
pub struct StoreSpec {
    /// The store, for a node the primary.
    pub url: String,
    /// The server group's other nodes, in the order to fail over to them.
    pub others: Vec<String>,
    /// Whether to use other nodes than `url` at all.
    pub failover: bool,
    pub tls: Option<TlsFiles>,
}

impl StoreSpec {
    /// The configured nodes, then those the last login reported.
    fn group(&self, host: &str, port: u16, cache_root: &Path) -> Result<Group> {
        let tls = self.tls.clone().ok_or_else(|| {
            Error::Invalid(format!(
                "store {} is a node: give --cert, --key and --ca (or a [tls] section in --config)",
                self.url
            ))
        })?;
        for other in &self.others {
            if !matches!(StoreUrl::parse(other)?, StoreUrl::Remote { .. }) {
                return Err(Error::Invalid(format!("`nodes` lists {other}, which is not a coffer:// node")));
            }
        }
        let group_file = cache_root.join(GROUP_FILE);
        let this = format!("{host}:{port}");
        let (servers, policy) = match self.failover {
            true => {
                let configured: Vec<String> = [this].into_iter().chain(self.others.clone()).collect();
                let last = Some(cache_root.join(LAST_NODE_FILE));
                (Servers::new(&configured, &learnt_servers(&group_file), last), Policy::default())
            }
            // One node, asked once: the caller wants that node's answer.
            false => (
                Servers::new(&[this], &[], None),
                Policy { rounds: 1, redirects: false, ..Policy::default() },
            ),
        };
        let failure_file = Some(cache_root.join(FAILURE_FILE));
        Ok(Group { servers, tls, group_file: Some(group_file), failure_file, policy })
    }
}

impl Repository {
    /// Creates a keys file and sets the store up for it: a local store gets
    /// its account; a node's account records the keys' fingerprint.
    pub fn init(spec: &StoreSpec, keys_path: &Path, cache_root: &Path) -> Result<Repository> {
        if keys_path.exists() {
            return Err(Error::Keys {
                path: keys_path.to_path_buf(),
                problem: "already exists; refusing to overwrite it".into(),
            });
        }
        let keys = Keys::create(keys_path)?;
        let result = match StoreUrl::parse(&spec.url)? {
            StoreUrl::Local(root) => LocalBackend::init(&root, &keys)
                .map(|b| Self::assemble(Box::new(b), keys, cache_root, Some(root))),
            StoreUrl::Remote { host, port } => spec.group(&host, port, cache_root).and_then(|group| {
                let backend = RemoteBackend::new(group, keys.fingerprint(), Access::Read)?.registering_keys();
                backend.position()?;
                Ok(Self::assemble(Box::new(backend), keys, cache_root, None))
            }),
        };
        if result.is_err() {
            // A keys file for a store that was never set up would only mislead.
            let _ = std::fs::remove_file(keys_path);
        }
        result
    }

    pub fn open(spec: &StoreSpec, keys_path: &Path, cache_root: &Path, access: Access) -> Result<Repository> {
        Self::open_with(spec, keys_path, cache_root, access, false)
    }

    /// Opens a store for writing with an existing keys file, registering
    /// its fingerprint with a node account that has none yet (`coffer copy`
    /// seeding a new account from another store).
    pub fn open_registering(spec: &StoreSpec, keys_path: &Path, cache_root: &Path) -> Result<Repository> {
        Self::open_with(spec, keys_path, cache_root, Access::Write, true)
    }

    fn open_with(
        spec: &StoreSpec,
        keys_path: &Path,
        cache_root: &Path,
        access: Access,
        register: bool,
    ) -> Result<Repository> {
        let keys = Keys::load(keys_path)?;
        let mut repo = match StoreUrl::parse(&spec.url)? {
            StoreUrl::Local(root) => {
                let backend = LocalBackend::open(&root, &keys)?;
                Self::assemble(Box::new(backend), keys, cache_root, Some(root))
            }
            StoreUrl::Remote { host, port } => {
                let mut backend =
                    RemoteBackend::new(spec.group(&host, port, cache_root)?, keys.fingerprint(), access)?;
                if register {
                    backend = backend.registering_keys();
                }
                Self::assemble(Box::new(backend), keys, cache_root, None)
            }
        };
        repo.private_paths.extend(std::fs::canonicalize(keys_path));
        Ok(repo)
    }

    /// Local stores report their position at once; a node's is checked against
    /// the cache's at login (see `remote`), so opening never connects.
    fn assemble(
        backend: Box<dyn Backend>,
        keys: Keys,
        cache_root: &Path,
        local: Option<PathBuf>,
    ) -> Repository {
        let cache = Cache::open(cache_root, &backend.cache_key(), &keys);
        match &local {
            Some(_) => match backend.position() {
                Ok(position) => cache.check_position(position),
                Err(_) => cache.forget_sets(),
            },
            None => backend.expect_position(cache.position()),
        }
        let private_paths = local
            .into_iter()
            .chain([cache_root.to_path_buf()])
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect();
        let failure_file = cache_root.join(FAILURE_FILE);
        Repository { backend, keys, cache, private_paths, failure_file, held: Held::default() }
    }

    /// Runs `op`; if the store changed under the cache, refreshes the cache and runs it again.
    pub fn fresh<T>(&self, op: impl Fn() -> Result<T>) -> Result<T> {
        match op() {
            Err(Error::StoreChanged { found, .. }) => {
                self.cache.check_position(found);
                self.backend.start_over();
                op()
            }
            other => other,
        }
    }

    /// A directory's tree, from however many objects it is stored as.
    pub fn tree(&self, id: &ObjectId) -> Result<Tree> {
        Tree::load(&self.keys, id, &mut |ids| self.tree_objects(ids))
    }

    /// Tree objects' verified plaintexts, in order: from the cache, and
    /// what it lacks from the store, a window of ids per request.
    fn tree_objects(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>> {
        let mut plains: Vec<Option<Vec<u8>>> =
            ids.iter().map(|id| self.cache.tree_object(&self.keys, id)).collect();
        let missing: Vec<ObjectId> =
            ids.iter().zip(&plains).filter(|(_, plain)| plain.is_none()).map(|(id, _)| *id).collect();
        let mut fetched = Vec::with_capacity(missing.len());
        let open = |id: &ObjectId, envelope: &[u8]| {
            let plain = tree::open_object(&self.keys, id, envelope)?;
            self.cache.keep_tree_object(id, &plain);
            Ok(plain)
        };
        self.fetch(&missing, open, |plain| {
            fetched.push(plain);
            Ok(())
        })?;
        let mut fetched = fetched.into_iter();
        plains
            .iter_mut()
            .map(|plain| plain.take().or_else(|| fetched.next()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                Error::Invalid(format!("the store sent fewer than the {} objects asked", missing.len()))
            })
    }

    /// Stores a directory's tree (sealing the objects the store lacks, each
    /// after those it names), caching its plaintexts; `before_upload` is
    /// told the size of each object about to go up.
    pub fn store_tree(
        &self,
        tree: &Tree,
        mut before_upload: impl FnMut(usize) -> Result<()>,
    ) -> Result<ObjectId> {
        let (id, objects) = tree.objects(&self.keys);
        let ids: Vec<ObjectId> = objects.iter().map(|o| o.id).collect();
        let present = self.known_held(&ids)?;
        for (object, present) in objects.iter().zip(present) {
            self.held.tree_stored(object.id, &object.refs);
            self.cache.keep_tree_object(&object.id, &object.plaintext);
            if !present {
                let envelope = object.envelope(&self.keys);
                before_upload(envelope.len())?;
                self.backend.put(object.id, &envelope)?;
            }
        }
        Ok(id)
    }

    /// Which of `ids` the store is known to hold without a round trip;
    /// the rest are sealed and put (see `held`).
    pub fn known_held(&self, ids: &[ObjectId]) -> Result<Vec<bool>> {
        self.held.known(&self.cache, &*self.backend, ids)
    }

    pub fn chunk(&self, id: &ObjectId) -> Result<Vec<u8>> {
        crypto::open_chunk(&self.keys, id, &self.backend.get(id)?)
    }

    /// Chunks' verified plaintexts, in order, each given to `each` as it
    /// arrives: a window of ids per request, streamed back.
    pub fn chunks(&self, ids: &[ObjectId], each: impl FnMut(Vec<u8>) -> Result<()>) -> Result<()> {
        self.fetch(ids, |id, envelope| crypto::open_chunk(&self.keys, id, envelope), each)
    }

    /// Objects from the store, a window of ids per request, each verified
    /// by `open` and given to `each` in order as it arrives.
    fn fetch<T>(
        &self,
        ids: &[ObjectId],
        open: impl Fn(&ObjectId, &[u8]) -> Result<T>,
        mut each: impl FnMut(T) -> Result<()>,
    ) -> Result<()> {
        for window in ids.chunks(FETCH_WINDOW) {
            let mut next = window.iter();
            self.backend.get_many(window, &mut |envelope| {
                let id = next.next().ok_or_else(|| Error::Invalid("more objects than asked for".into()))?;
                each(open(id, &envelope)?)
            })?;
        }
        Ok(())
    }

    /// Every committed backup set, oldest first, as the store lists them now.
    pub fn sets(&self) -> Result<Vec<BackupSet>> {
        let (ids, position) = self.fresh(|| Ok((self.backend.sets()?, self.backend.position()?)))?;
        let sets = ids.into_iter().map(|(id, _)| self.set(&id)).collect::<Result<Vec<_>>>()?;
        self.cache.record_sets(position, sets.iter().map(|s| s.id));
        Ok(sets)
    }

    /// The sets as the cache last saw them complete, without asking the
    /// store; None when the cache holds no complete list.
    pub fn cached_sets(&self) -> Option<Vec<BackupSet>> {
        let ids = self.cache.set_ids()?;
        let mut sets = Vec::new();
        for id in ids {
            let envelope = self.cache.set(&id)?;
            sets.push(BackupSet::open(&self.keys, &id, &envelope).ok()?);
        }
        sets.sort_by_key(|s| (s.header.time_ns, s.id));
        Some(sets)
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

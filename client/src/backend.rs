//! Where a client's objects go: the store behind a `--store` URL.
//!
//! [`Backend`] is the seam between the client and a store. This module holds
//! the local backend (`file://DIR`); `remote` holds the node backend. The local backend runs the node's store engine
//! in-process: serverless backup to a local or removable drive. A local store
//! holds one account, `local`, created by `coffer init`.

use std::path::Path;
use std::sync::Mutex;

use coffer_proto::{ObjectId, SetsDigest, StoreUrl};
use coffer_store::{
    AccountId, AccountRecord, AccountWriter, ForgetReport, Limits, PutOutcome, SetRecord, Store, StoreError,
    Usage,
};

use crate::error::{Error, Result};
use crate::keys::Keys;
pub use crate::upload::Skipped;

pub const LOCAL_ACCOUNT: &str = "local";

/// The operations a client needs from a store.
pub trait Backend: Send + Sync {
    /// Which of `ids` the store holds, one flag per id.
    fn has_many(&self, ids: &[ObjectId]) -> Result<Vec<bool>>;
    /// Which of `ids` the store is known to hold, without asking it when
    /// that costs a round trip: the rest may be put, and a node backend's
    /// upload drops what the node turns out to hold (see `remote`).
    fn known_held(&self, ids: &[ObjectId]) -> Result<Vec<bool>> {
        self.has_many(ids)
    }
    /// Stores an object. `Stored` may be counted for an object a node then
    /// turns out to hold; [`Backend::take_skipped`] tells how many.
    fn put(&self, id: ObjectId, envelope: &[u8]) -> Result<PutOutcome>;
    /// Objects put since the last call that the store turned out to hold
    /// already, and so did not store again.
    fn take_skipped(&self) -> Skipped {
        Skipped::default()
    }
    /// Makes every object put so far durable.
    fn flush(&self) -> Result<()>;
    /// Commits a backup set.
    fn commit_set(&self, id: ObjectId, envelope: &[u8]) -> Result<Committed>;
    fn get(&self, id: &ObjectId) -> Result<Vec<u8>>;
    /// Objects by id, given to `each` in the order asked as they arrive (a
    /// node streams them back: one request, no round trip per object).
    fn get_many(&self, ids: &[ObjectId], each: &mut dyn FnMut(Vec<u8>) -> Result<()>) -> Result<()> {
        ids.iter().try_for_each(|id| each(self.get(id)?))
    }
    /// Committed sets, oldest first.
    fn sets(&self) -> Result<Vec<(ObjectId, SetRecord)>>;
    fn forget(&self, id: &ObjectId) -> Result<ForgetReport>;
    /// Where the account stands, as of the last thing this backend did or
    /// learnt (a node's login, commit or forget; a local store's index).
    fn position(&self) -> Result<Position>;
    fn usage(&self) -> Result<Usage>;
    /// Something that names this store for the client's cache.
    fn cache_key(&self) -> String;
    /// Tells a lazily connecting backend which position the cache was made
    /// at, so that its first operation can report a changed store.
    fn expect_position(&self, _position: Option<Position>) {}
    /// The caller starts its work again after [`Error::Interrupted`] or
    /// [`Error::StoreChanged`]: nothing it learnt before is relied on.
    ///
    /// [`Error::Interrupted`]: crate::error::Error::Interrupted
    /// [`Error::StoreChanged`]: crate::error::Error::StoreChanged
    fn start_over(&self) {}
    /// The name of the node serving this client now, if it is a node.
    fn node(&self) -> Option<String> {
        None
    }
}

/// Where an account's store stands: its client store marker and the digest
/// of its set ids and tombstones. Two replicas that each took a backup while
/// cut off from each other share a marker; the digest tells them apart, so
/// a cache made on one is never taken for the other's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub marker: u64,
    pub digest: SetsDigest,
}

impl Position {
    /// The form the client's cache writes (`MARKER DIGEST-HEX`).
    pub fn to_text(&self) -> String {
        format!("{} {}", self.marker, hex::encode(self.digest.as_bytes()))
    }

    /// Reads [`Position::to_text`]'s form; `None` for anything else.
    pub fn from_text(text: &str) -> Option<Position> {
        let (marker, digest) = text.split_once(' ')?;
        let digest = SetsDigest::from_slice(&hex::decode(digest).ok()?)?;
        Some(Position { marker: marker.parse().ok()?, digest })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "marker {}, sets digest {}", self.marker, hex::encode(&self.digest.as_bytes()[..6]))
    }
}

/// What a commit achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The new client store marker.
    pub marker: u64,
    /// Nodes holding the set when the commit was acknowledged (1 for a local
    /// store), and how many the store was configured to wait for.
    pub replicas: u32,
    pub replicas_wanted: u32,
}

/// The node's store engine, in this process.
pub struct LocalBackend {
    store: Store,
    account: AccountId,
    writer: Mutex<Option<AccountWriter>>,
}

/// How long opening a local store waits for another process (the daemon
/// mid-run, a restore) to let go of it.
const IN_USE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Opens a local store, waiting while another process has it open: one
/// process at a time holds its index.
fn open_when_free(root: &Path) -> Result<Store> {
    let deadline = std::time::Instant::now() + IN_USE_WAIT;
    let mut said = false;
    loop {
        match Store::open(root) {
            Err(StoreError::InUse(_)) if std::time::Instant::now() < deadline => {
                if !std::mem::replace(&mut said, true) {
                    tracing::info!(store = %root.display(), "the store is in use by another process; waiting");
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return Ok(other?),
        }
    }
}

impl LocalBackend {
    /// Creates the store if needed and its account for these keys.
    pub fn init(root: &Path, keys: &Keys) -> Result<LocalBackend> {
        let store = if root.join("STORE").exists() { Store::open(root)? } else { Store::create(root)? };
        if store.find_account(LOCAL_ACCOUNT)?.is_some() {
            return Err(Error::Invalid(format!("{} already holds an initialised store", root.display())));
        }
        let account = store.create_account(LOCAL_ACCOUNT, &keys.fingerprint(), Limits::UNLIMITED)?;
        Ok(LocalBackend { store, account: account.id, writer: Mutex::new(None) })
    }

    /// Opens the store and checks that `keys` are this account's keys.
    pub fn open(root: &Path, keys: &Keys) -> Result<LocalBackend> {
        let store = open_when_free(root)?;
        let account = store
            .find_account(LOCAL_ACCOUNT)?
            .ok_or_else(|| Error::Invalid(format!("{} has no account; run `coffer init`", root.display())))?;
        if account.key_fingerprint != keys.fingerprint() {
            return Err(Error::WrongKeys { expected: account.key_fingerprint, found: keys.fingerprint() });
        }
        Ok(LocalBackend { store, account: account.id, writer: Mutex::new(None) })
    }

    fn with_writer<T>(&self, f: impl FnOnce(&mut AccountWriter) -> Result<T, StoreError>) -> Result<T> {
        let mut guard = self.writer.lock().unwrap();
        if guard.is_none() {
            *guard = Some(self.store.writer(self.account)?);
        }
        Ok(f(guard.as_mut().unwrap())?)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// `coffer repair`: rebuilds a local store's index from its packs; the
/// account comes back under `keys`. Says what it found.
pub fn repair_local(url: &str, keys: &Path) -> Result<String> {
    let StoreUrl::Local(root) = StoreUrl::parse(url)? else {
        return Err(Error::Invalid(format!(
            "{url} is a store node: its operator repairs it (`coffer-node rebuild-index`)"
        )));
    };
    let keys = Keys::load(keys)?;
    let account = |id| AccountRecord {
        id,
        name: LOCAL_ACCOUNT.into(),
        key_fingerprint: keys.fingerprint(),
        limits: Limits::UNLIMITED,
        frozen: false,
        created_ns: 0,
    };
    let reports = Store::rebuild_index(&root, &[root.join("packs")], account)?;
    let objects: u64 = reports.iter().map(|r| r.objects_checked).sum();
    let problems: Vec<&String> = reports.iter().flat_map(|r| &r.problems).collect();
    let mut out = format!("rebuilt the index of {}: {objects} objects", root.display());
    for p in problems {
        out.push_str(&format!("\nproblem: {p}"));
    }
    Ok(out)
}

impl Backend for LocalBackend {
    fn has_many(&self, ids: &[ObjectId]) -> Result<Vec<bool>> {
        Ok(self.store.has_many(self.account, ids)?)
    }

    fn put(&self, id: ObjectId, envelope: &[u8]) -> Result<PutOutcome> {
        self.with_writer(|w| w.put(id, envelope))
    }

    fn flush(&self) -> Result<()> {
        match self.writer.lock().unwrap().as_mut() {
            Some(w) => Ok(w.flush()?),
            None => Ok(()),
        }
    }

    fn commit_set(&self, id: ObjectId, envelope: &[u8]) -> Result<Committed> {
        let marker = self.with_writer(|w| w.commit_set(id, envelope))?;
        Ok(Committed { marker, replicas: 1, replicas_wanted: 1 })
    }

    fn get(&self, id: &ObjectId) -> Result<Vec<u8>> {
        Ok(self.store.get(self.account, id)?)
    }

    fn sets(&self) -> Result<Vec<(ObjectId, SetRecord)>> {
        Ok(self.store.sets(self.account)?)
    }

    fn forget(&self, id: &ObjectId) -> Result<ForgetReport> {
        self.with_writer(|w| w.forget_set(id))
    }

    fn position(&self) -> Result<Position> {
        let (marker, digest) = self.store.summary(self.account)?;
        Ok(Position { marker, digest })
    }

    fn usage(&self) -> Result<Usage> {
        Ok(self.store.usage(self.account)?)
    }

    fn cache_key(&self) -> String {
        format!("file://{}", self.store.root().display())
    }
}

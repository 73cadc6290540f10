//! The state machine: applies committed entries to the [`State`] and keeps
//! it in RocksDB, and builds and installs snapshots.
//!
//! The whole state also lives in memory behind a lock, so reads (an account
//! at login, placement) never touch the disc. Each apply writes the keys it
//! changed and the new last-applied id in one batch, so after a crash the
//! database is at some applied index and Raft replays the log from there.
//! A snapshot is the whole state as JSON; it is small (one record per
//! account), and installing one replaces the state in one batch.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{OptionalSend, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{DB, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::logstore::{CF_SM, CF_SNAPSHOT, cf, encode, get, write_synced};
use crate::state::{Key, State};
use crate::types::{
    Entry, LogId, NodeId, Outcome, Snapshot, SnapshotData, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};

const SNAPSHOT_META: &[u8] = b"meta";
const SNAPSHOT_DATA: &[u8] = b"data";

/// The state as readers see it, and a counter that moves on every change.
pub struct Shared {
    pub state: RwLock<State>,
    pub changed: watch::Sender<u64>,
}

impl Shared {
    fn replace(&self, state: State) {
        *self.state.write().unwrap() = state;
        self.notify();
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

#[derive(Clone)]
pub struct StateMachine {
    db: Arc<DB>,
    shared: Arc<Shared>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    next_account: u64,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    #[serde(default)]
    invited: std::collections::BTreeSet<String>,
}

fn sm_key(key: &Key) -> Vec<u8> {
    match key {
        Key::Account(id) => [b"a".as_slice(), &id.to_be_bytes()].concat(),
        Key::Group(name) => [b"g", name.as_bytes()].concat(),
        Key::Request(id) => [b"r", id.as_bytes()].concat(),
        Key::Meta => b"m".to_vec(),
    }
}

fn decode_err(key: &[u8], e: serde_json::Error) -> StorageIOError<NodeId> {
    StorageIOError::read_state_machine(&std::io::Error::other(format!(
        "state machine key {}: {e}",
        String::from_utf8_lossy(key)
    )))
}

impl StateMachine {
    /// Loads the state written by earlier runs.
    pub fn open(db: Arc<DB>) -> Result<StateMachine, StorageError> {
        let mut state = State::default();
        for item in db.iterator_cf(cf(&db, CF_SM), IteratorMode::Start) {
            let (key, value) = item.map_err(|e| StorageIOError::read_state_machine(&e))?;
            let bad = |e| decode_err(&key, e);
            match key.first() {
                Some(b'a') => {
                    let account: crate::state::Account = serde_json::from_slice(&value).map_err(bad)?;
                    state.accounts.insert(account.id, account);
                }
                Some(b'g') => {
                    let group: crate::state::AccountGroup = serde_json::from_slice(&value).map_err(bad)?;
                    state.groups.insert(group.name.clone(), group);
                }
                Some(b'r') => {
                    let id = String::from_utf8_lossy(&key[1..]).into_owned();
                    state.requests.insert(id, serde_json::from_slice(&value).map_err(bad)?);
                }
                Some(b'm') => {
                    let meta: Meta = serde_json::from_slice(&value).map_err(bad)?;
                    state.next_account = meta.next_account;
                    state.last_applied = meta.last_applied;
                    state.membership = meta.membership;
                    state.invited = meta.invited;
                }
                _ => return Err(decode_err(&key, serde::de::Error::custom("unknown key")).into()),
            }
        }
        let (changed, _) = watch::channel(0);
        Ok(StateMachine { db, shared: Arc::new(Shared { state: RwLock::new(state), changed }) })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Puts the current value of each key (or deletes it) into `batch`.
    fn persist(&self, state: &State, keys: &[Key], batch: &mut WriteBatch) {
        let family = cf(&self.db, CF_SM);
        for key in keys {
            let value = match key {
                Key::Account(id) => state.accounts.get(id).map(encode),
                Key::Group(name) => state.groups.get(name).map(encode),
                Key::Request(id) => state.requests.get(id).map(encode),
                Key::Meta => Some(encode(&Meta {
                    next_account: state.next_account,
                    last_applied: state.last_applied,
                    membership: state.membership.clone(),
                    invited: state.invited.clone(),
                })),
            };
            match value {
                Some(v) => batch.put_cf(family, sm_key(key), v),
                None => batch.delete_cf(family, sm_key(key)),
            }
        }
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8], batch: &mut WriteBatch) {
        batch.put_cf(cf(&self.db, CF_SNAPSHOT), SNAPSHOT_META, encode(meta));
        batch.put_cf(cf(&self.db, CF_SNAPSHOT), SNAPSHOT_DATA, data);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let state = self.shared.state.read().unwrap().clone();
        let data = encode(&state);
        let last = state.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: state.membership.clone(),
            snapshot_id: format!("{}-{}", last.map_or(0, |l| l.leader_id.term), last.map_or(0, |l| l.index)),
        };
        let mut batch = WriteBatch::default();
        self.save_snapshot(&meta, &data, &mut batch);
        write_synced(&self.db, batch)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.shared.state.read().unwrap();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Applied in place: the entries are committed, so readers may see
        // them at once; a failed write is fatal to openraft, and a restart
        // replays the log from the last batch that reached the disc.
        let mut state = self.shared.state.write().unwrap();
        let mut outcomes = Vec::new();
        let mut keys = Vec::new();
        for entry in entries {
            let (outcome, changed) = state.apply(&entry);
            outcomes.push(outcome);
            keys.extend(changed);
        }
        keys.sort();
        keys.dedup();
        let mut batch = WriteBatch::default();
        self.persist(&state, &keys, &mut batch);
        write_synced(&self.db, batch).map_err(|e| StorageIOError::write_state_machine(&e))?;
        drop(state);
        self.shared.notify();
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut state: State = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        let family = cf(&self.db, CF_SM);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(family, [0u8].as_slice(), [0xffu8; 9].as_slice());
        let keys: Vec<Key> = state
            .accounts
            .keys()
            .map(|id| Key::Account(*id))
            .chain(state.groups.keys().map(|g| Key::Group(g.clone())))
            .chain(state.requests.keys().map(|r| Key::Request(r.clone())))
            .chain([Key::Meta])
            .collect();
        self.persist(&state, &keys, &mut batch);
        self.save_snapshot(meta, &data, &mut batch);
        write_synced(&self.db, batch).map_err(|e| StorageIOError::write_state_machine(&e))?;
        self.shared.replace(state);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some(meta) = get::<SnapshotMeta>(&self.db, CF_SNAPSHOT, SNAPSHOT_META)? else {
            return Ok(None);
        };
        let data = self
            .db
            .get_cf(cf(&self.db, CF_SNAPSHOT), SNAPSHOT_DATA)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?
            .unwrap_or_default();
        Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

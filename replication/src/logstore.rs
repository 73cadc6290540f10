//! The Raft log and vote in RocksDB.
//!
//! One RocksDB database (`DATA/raft`) holds the whole replication state in
//! five column families: `log` (entries by big-endian index), `raft` (vote,
//! committed and purged log ids, this node's id), `sm` (the state machine's
//! keys), `snapshot` (the current snapshot) and `journal` (see
//! [`crate::journal`]). Votes and appended entries are
//! written with a synced write before openraft is told they are durable: a
//! node that acknowledged a vote or an entry still has it after a power cut.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError, Vote};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

pub const CF_LOG: &str = "log";
pub const CF_RAFT: &str = "raft";
pub const CF_SM: &str = "sm";
pub const CF_SNAPSHOT: &str = "snapshot";

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";
const NODE_ID: &[u8] = b"node_id";

/// Opens (creating if needed) the replication database.
pub fn open_db(dir: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let families = [CF_LOG, CF_RAFT, CF_SM, CF_SNAPSHOT, crate::journal::CF_JOURNAL]
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(&options, dir, families)?))
}

pub fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name).expect("column families are created at open")
}

pub fn write_synced(db: &DB, batch: WriteBatch) -> Result<(), rocksdb::Error> {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    db.write_opt(batch, &options)
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("replication types serialise")
}

/// Reads and decodes one JSON value; a value that does not decode is named.
pub fn get<T: DeserializeOwned>(
    db: &DB,
    family: &str,
    key: &[u8],
) -> Result<Option<T>, StorageIOError<NodeId>> {
    let Some(bytes) = db.get_cf(cf(db, family), key).map_err(|e| StorageIOError::read(&e))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| StorageIOError::read(&e))
}

/// This node's id: read from the database, or chosen at random on first use.
/// A wiped data directory therefore never brings an old id back.
pub fn node_id(db: &DB) -> Result<NodeId, StorageIOError<NodeId>> {
    if let Some(id) = get::<NodeId>(db, CF_RAFT, NODE_ID)? {
        return Ok(id);
    }
    // Below 2^53, so the id survives any JSON reader as a number.
    let id = rand::random::<u64>() & ((1 << 53) - 1) | 1;
    let mut batch = WriteBatch::default();
    batch.put_cf(cf(db, CF_RAFT), NODE_ID, encode(&id));
    write_synced(db, batch).map_err(|e| StorageIOError::write(&e))?;
    Ok(id)
}

/// The log and vote storage handed to openraft; cheap to clone (the log
/// reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> Self {
        LogStore { db }
    }

    fn put_synced(&self, key: &[u8], value: Vec<u8>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_RAFT), key, value);
        write_synced(&self.db, batch).map_err(|e| StorageIOError::write(&e).into())
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        match self.db.iterator_cf(cf(&self.db, CF_LOG), IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (_, bytes) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: Entry =
                    serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read_logs(&e))?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

fn start_of(range: &impl RangeBounds<u64>) -> u64 {
    match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i + 1,
        Bound::Unbounded => 0,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = start_of(&range).to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut entries = Vec::new();
        for item in self.db.iterator_cf(cf(&self.db, CF_LOG), mode) {
            let (key, bytes) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                StorageIOError::read_logs(&std::io::Error::other(format!("log key of {} bytes", key.len())))
            })?);
            if !range.contains(&index) {
                break;
            }
            entries.push(
                serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read_log_at_index(index, &e))?,
            );
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = get::<LogId>(&self.db, CF_RAFT, PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_synced(VOTE, encode(vote))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(get(&self.db, CF_RAFT, VOTE)?)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_synced(COMMITTED, encode(&committed))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(get::<Option<LogId>>(&self.db, CF_RAFT, COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(cf(&self.db, CF_LOG), entry.log_id.index.to_be_bytes(), encode(&entry));
        }
        let result = write_synced(&self.db, batch).map_err(std::io::Error::other);
        let failed = result.as_ref().err().map(|e| StorageIOError::write_logs(e).into());
        callback.log_io_completed(result);
        failed.map_or(Ok(()), Err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(&self.db, CF_LOG), log_id.index.to_be_bytes(), u64::MAX.to_be_bytes());
        batch.delete_cf(cf(&self.db, CF_LOG), u64::MAX.to_be_bytes());
        write_synced(&self.db, batch).map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purged id goes first: a crash in between leaves entries that
        // are merely redundant, never a gap below the recorded start.
        self.put_synced(PURGED, encode(&log_id))?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(&self.db, CF_LOG), 0u64.to_be_bytes(), (log_id.index + 1).to_be_bytes());
        write_synced(&self.db, batch).map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

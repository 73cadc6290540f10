//! The fast-sync journal: which accounts changed here since this node last
//! synced them with each peer (FR 8.5, "optimised fast sync").
//!
//! It lives in the replication database (column family `journal`, key: peer
//! node id then account id, both big-endian; value: the sequence number of
//! the latest change, then the time the peer first became owed it, both
//! big-endian), so a restarted node still knows whom it owes a sync and
//! since when.
//! Writes go through RocksDB's log without an fsync: they survive a killed
//! process, and what a power cut loses, the periodic anti-entropy pass
//! finds. A sync that succeeds clears an entry only if no newer change came
//! in while it ran.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rocksdb::{DB, IteratorMode, WriteBatch};

use crate::logstore::cf;
use crate::types::NodeId;

pub const CF_JOURNAL: &str = "journal";

/// One account that one peer has yet to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owed {
    pub peer: NodeId,
    pub account: u64,
    pub seq: u64,
    /// Since when (ns since the epoch) the peer has been owed the account:
    /// the oldest change it has not received. 0 when not recorded.
    pub since_ns: i64,
}

pub struct Journal {
    db: Arc<DB>,
    /// Serialises "clear if unchanged" against new marks.
    lock: Mutex<()>,
    seq: AtomicU64,
}

fn key(peer: NodeId, account: u64) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&peer.to_be_bytes());
    k[8..].copy_from_slice(&account.to_be_bytes());
    k
}

impl Journal {
    pub fn open(db: Arc<DB>) -> Result<Journal, rocksdb::Error> {
        let journal = Journal { db, lock: Mutex::new(()), seq: AtomicU64::new(0) };
        let highest = journal.owed()?.iter().map(|o| o.seq).max().unwrap_or(0);
        journal.seq.store(highest, Ordering::SeqCst);
        Ok(journal)
    }

    /// Records that `account` changed here and each of `peers` should hear of it.
    pub fn mark(&self, account: u64, peers: &[NodeId]) -> Result<(), rocksdb::Error> {
        let _guard = self.lock.lock().unwrap();
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let now = coffer_proto::clock::now_ns();
        let mut batch = WriteBatch::default();
        for peer in peers {
            let k = key(*peer, account);
            let earlier = self.db.get_cf(cf(&self.db, CF_JOURNAL), k)?.and_then(|v| decode(&v));
            let since = earlier.map(|(_, since)| since).filter(|s| *s != 0).unwrap_or(now);
            let mut value = [0; 16];
            value[..8].copy_from_slice(&seq.to_be_bytes());
            value[8..].copy_from_slice(&since.to_be_bytes());
            batch.put_cf(cf(&self.db, CF_JOURNAL), k, value);
        }
        self.db.write(batch)
    }

    /// Everything owed, by peer then account.
    pub fn owed(&self) -> Result<Vec<Owed>, rocksdb::Error> {
        let mut owed = Vec::new();
        for item in self.db.iterator_cf(cf(&self.db, CF_JOURNAL), IteratorMode::Start) {
            let (k, v) = item?;
            // A record of any other shape (a damaged database) is skipped,
            // never a panic; anti-entropy covers what it meant.
            let Some((peer, account)) = k.split_at_checked(8) else { continue };
            let (Ok(peer), Ok(account), Some((seq, since_ns))) =
                (peer.try_into(), account.try_into(), decode(&v))
            else {
                continue;
            };
            owed.push(Owed {
                peer: u64::from_be_bytes(peer),
                account: u64::from_be_bytes(account),
                seq,
                since_ns,
            });
        }
        Ok(owed)
    }

    /// Clears what a successful sync delivered, unless the account changed again since.
    pub fn settle(&self, owed: Owed) -> Result<(), rocksdb::Error> {
        let _guard = self.lock.lock().unwrap();
        let k = key(owed.peer, owed.account);
        let current = self.db.get_cf(cf(&self.db, CF_JOURNAL), k)?;
        if current.and_then(|v| decode(&v)).is_some_and(|(seq, _)| seq == owed.seq) {
            self.db.delete_cf(cf(&self.db, CF_JOURNAL), k)?;
        }
        Ok(())
    }

    /// Forgets a peer entirely (it left the group) or an account (deleted).
    pub fn forget(&self, keep: impl Fn(&Owed) -> bool) -> Result<(), rocksdb::Error> {
        let _guard = self.lock.lock().unwrap();
        let mut batch = WriteBatch::default();
        for o in self.owed()?.into_iter().filter(|o| !keep(o)) {
            batch.delete_cf(cf(&self.db, CF_JOURNAL), key(o.peer, o.account));
        }
        self.db.write(batch)
    }
}

/// A value's sequence number and owed-since time; values written before
/// the time was kept are 8 bytes long and have none (0).
fn decode(value: &[u8]) -> Option<(u64, i64)> {
    let seq = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    match value.len() {
        8 => Some((seq, 0)),
        16 => Some((seq, i64::from_be_bytes(value[8..].try_into().ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopening_and_keeps_changes_made_during_a_sync() {
        let dir = tempfile_dir();
        let db = crate::logstore::open_db(&dir).unwrap();
        let journal = Journal::open(db.clone()).unwrap();
        journal.mark(7, &[1, 2]).unwrap();
        let owed = journal.owed().unwrap();
        assert_eq!(owed.len(), 2);
        let since = owed[0].since_ns;
        assert!(since > 0);
        // A change arrives while the sync with peer 1 runs: the entry stays.
        journal.mark(7, &[1]).unwrap();
        journal.settle(owed[0]).unwrap();
        journal.settle(owed[1]).unwrap();
        drop(journal);
        drop(db);
        let db = crate::logstore::open_db(&dir).unwrap();
        let journal = Journal::open(db.clone()).unwrap();
        let left = journal.owed().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].peer, left[0].account), (1, 7));
        assert_eq!(left[0].since_ns, since, "owed since the first change it has not received");
        journal.mark(8, &[3]).unwrap();
        assert!(journal.owed().unwrap().iter().all(|o| o.seq <= left[0].seq + 1));
        journal.forget(|o| o.peer != 1).unwrap();
        assert_eq!(journal.owed().unwrap().len(), 1);
        // Records of other shapes are skipped, whatever their bytes.
        for (key, value) in [(&b"\x01"[..], &b"x"[..]), (&[0; 16][..], &[1; 3][..]), (&[], &[])] {
            db.put_cf(cf(&db, CF_JOURNAL), key, value).unwrap();
        }
        assert_eq!(journal.owed().unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("coffer-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}

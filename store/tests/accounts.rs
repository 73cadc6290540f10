//! Accounts in the store engine: limits, retention and soft-limit
//! housekeeping, checks and repairs from the packs, deletion.

mod common;

use coffer_proto::ObjectId;
use coffer_proto::retention::RetentionPolicy;
use coffer_store::{AccountRecord, Limits, Store, StoreError};
use common::{chunk, file_offset, pack_file, set, tree};

/// Commits set `n` holding one tree of one fresh chunk of `len` bytes.
fn backup(store: &Store, account: u64, n: u8, len: usize) -> ObjectId {
    let mut w = store.writer(account).unwrap();
    let (c, ce) = chunk(n, len);
    let (t, te) = tree(n + 100, &[c]);
    let (s, se) = set(n + 200, &[t], n as i64);
    w.put(c, &ce).unwrap();
    w.put(t, &te).unwrap();
    w.commit_set(s, &se).unwrap();
    s
}

fn set_ids(store: &Store, account: u64) -> Vec<ObjectId> {
    store.sets(account).unwrap().into_iter().map(|(id, _)| id).collect()
}

#[test]
fn hard_limit_refuses_the_put_that_would_pass_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let id = store.create_account("a", "fp", Limits { soft: 250_000, hard: 250_000 }).unwrap().id;
    let mut w = store.writer(id).unwrap();
    w.put(chunk(1, 100_000).0, &chunk(1, 100_000).1).unwrap();
    w.put(chunk(2, 100_000).0, &chunk(2, 100_000).1).unwrap();
    let err = w.put(chunk(3, 100_000).0, &chunk(3, 100_000).1).unwrap_err();
    assert!(matches!(err, StoreError::OverHardLimit { .. }), "{err}");
    assert!(err.to_string().contains("hard limit"), "{err}");
    w.flush().unwrap();
    assert_eq!(store.usage(id).unwrap().objects, 2, "what fit is kept");
    assert!(matches!(
        store.create_account("b", "", Limits { soft: 2, hard: 1 }),
        Err(StoreError::InvalidLimits { .. })
    ));
}

#[test]
fn housekeeping_forgets_oldest_sets_over_the_soft_limit_but_never_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let id = store.create_account("a", "fp", Limits { soft: 150_000, hard: u64::MAX }).unwrap().id;
    let sets: Vec<_> = (1..=3).map(|n| backup(&store, id, n, 100_000)).collect();
    let report = store.writer(id).unwrap().housekeep(0, &RetentionPolicy::default()).unwrap();
    assert_eq!(report.sets_forgotten, vec![sets[0], sets[1]]);
    assert_eq!(set_ids(&store, id), vec![sets[2]]);
    // One set alone above the soft limit is kept.
    let record = store.account(id).unwrap();
    store.adopt_account(&AccountRecord { limits: Limits { soft: 1, hard: u64::MAX }, ..record }).unwrap();
    assert!(
        store
            .writer(id)
            .unwrap()
            .housekeep(0, &RetentionPolicy::default())
            .unwrap()
            .sets_forgotten
            .is_empty()
    );
    assert_eq!(set_ids(&store, id), vec![sets[2]]);
}

#[test]
fn housekeeping_forgets_what_retention_does_not_keep_then_applies_the_soft_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let id = store.create_account("a", "fp", Limits { soft: 150_000, hard: u64::MAX }).unwrap().id;
    let sets: Vec<_> = (1..=5).map(|n| backup(&store, id, n, 100_000)).collect();
    let keep_three = RetentionPolicy { keep_last: 3, ..Default::default() };
    let decisions = store.retention_decisions(id, &keep_three).unwrap();
    let would_go: Vec<ObjectId> = decisions.iter().filter(|d| !d.keep).map(|d| d.id).collect();
    assert_eq!(would_go, vec![sets[1], sets[0]], "newest first");
    assert_eq!(set_ids(&store, id).len(), 5, "deciding forgets nothing");

    let report = store.writer(id).unwrap().housekeep(0, &keep_three).unwrap();
    assert_eq!(report.sets_expired, vec![sets[0], sets[1]], "oldest first");
    // Three sets of 100 kB each are over the 150 kB soft limit: the oldest
    // of what retention kept goes next, then the next, never the newest.
    assert_eq!(report.sets_forgotten, vec![sets[2], sets[3]]);
    assert_eq!(set_ids(&store, id), vec![sets[4]]);
    assert_eq!(report.objects_freed, 4 * 3, "each set's set, tree and chunk");
    assert!(store.usage(id).unwrap().live_bytes <= 150_000);
}

#[test]
fn space_counts_as_deleted_only_what_no_set_reaches_not_the_packs_framing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let id = store.create_account("a", "fp", Limits::UNLIMITED).unwrap().id;
    backup(&store, id, 1, 50_000);
    backup(&store, id, 2, 60_000);
    let space = store.space(id).unwrap();
    assert_eq!(space.deleted_bytes, 0, "two packs of live objects hold nothing deleted: {space:?}");
    assert!(space.current_bytes > 60_000 && space.current_bytes < 61_000, "{space:?}");
    assert!(space.old_bytes > 50_000 && space.old_bytes < 51_000, "{space:?}");

    // An upload no set reaches is deleted space, byte for byte.
    let (c, envelope) = chunk(9, 30_000);
    let mut w = store.writer(id).unwrap();
    w.put(c, &envelope).unwrap();
    w.flush().unwrap();
    assert_eq!(store.space(id).unwrap().deleted_bytes, envelope.len() as u64);
}

#[test]
fn check_finds_damage_and_fix_rebuilds_the_index_from_the_packs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let id = store.create_account("a", "fp", Limits::UNLIMITED).unwrap().id;
    let keep = backup(&store, id, 1, 50_000);
    let forgotten = backup(&store, id, 2, 50_000);
    let damaged = backup(&store, id, 3, 50_000);
    store.writer(id).unwrap().forget_set(&forgotten).unwrap();

    let clean = store.check_account(id, false).unwrap();
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);
    assert_eq!(clean.objects_checked, 6);
    let nothing = store.check_account(id, true).unwrap();
    assert!(nothing.problems.is_empty() && nothing.repairs.is_empty(), "{nothing:?}");
    assert_eq!(set_ids(&store, id), vec![keep, damaged], "a forgotten set must not come back");

    // Rot one byte of set 3's chunk.
    let chunk3 = ObjectId([3; 32]);
    let entry = store.entry(id, &chunk3).unwrap().unwrap();
    let pack = pack_file(dir.path(), id, entry.pack);
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[file_offset(entry.offset + entry.len as u64 - 1)] ^= 0x40;
    std::fs::write(&pack, bytes).unwrap();

    let found = store.check_account(id, false).unwrap();
    assert!(found.problems.iter().any(|p| p.contains("CRC") && p.contains(&chunk3.to_string())), "{found:?}");
    let fixed = store.check_account(id, true).unwrap();
    assert!(
        fixed.repairs.iter().any(|r| r.contains("dropped damaged object") && r.contains(&chunk3.to_string()))
    );
    // The set that needed the chunk is honestly reported as incomplete; the other is intact.
    assert!(fixed.problems.iter().any(|p| p.contains(&format!("references {chunk3}"))), "{fixed:?}");
    assert!(store.get(id, &ObjectId([1; 32])).is_ok());
    assert!(store.entry(id, &chunk3).unwrap().is_none());
}

#[test]
fn deleting_an_account_removes_its_data_and_waits_for_its_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let a = store.create_account("a", "fp", Limits::UNLIMITED).unwrap().id;
    let b = store.create_account("b", "fp", Limits::UNLIMITED).unwrap().id;
    backup(&store, a, 1, 10_000);
    let kept = backup(&store, b, 2, 10_000);
    let writer = store.writer(a).unwrap();
    assert!(matches!(store.delete_account(a), Err(StoreError::AccountBusy(_))));
    drop(writer);
    store.delete_account(a).unwrap();
    assert!(store.find_account("a").unwrap().is_none());
    assert!(store.objects(a).unwrap().is_empty());
    assert_eq!(set_ids(&store, b), vec![kept]);
    assert!(store.check_account(b, false).unwrap().problems.is_empty());
    let record = store.account(b).unwrap();
    assert!(store.adopt_account(&AccountRecord { frozen: true, ..record }).unwrap());
    assert!(store.account(b).unwrap().frozen);
    assert!(Store::open(dir.path()).is_err(), "the store stays locked while open");
}

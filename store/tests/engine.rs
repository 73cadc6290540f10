//! The store engine through its public API: reference counts, set commits,
//! forgetting, compaction, grace-period collection and crash leftovers.

mod common;

use coffer_proto::ObjectId;
use std::time::Duration;

use coffer_store::{Counted, PutOutcome, Store, StoreError};
use common::{chunk, file_offset, pack_file, set, tree};

fn new_store() -> (tempfile::TempDir, Store, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let account = store.create_account("alice", "fp", coffer_store::Limits::UNLIMITED).unwrap().id;
    (dir, store, account)
}

#[test]
fn reference_counts_forget_and_reclaim() {
    let (dir, store, acct) = new_store();
    let mut w = store.writer(acct).unwrap();
    assert!(matches!(store.writer(acct), Err(StoreError::AccountBusy(_))));

    let (c1, e1) = chunk(1, 100_000);
    let (c2, e2) = chunk(2, 100_000);
    let (c3, e3) = chunk(3, 100_000);
    for (id, e) in [(c1, &e1), (c2, &e2), (c3, &e3)] {
        assert!(matches!(w.put(id, e).unwrap(), PutOutcome::Stored(_)));
    }
    assert_eq!(w.put(c1, &e1).unwrap(), PutOutcome::AlreadyPresent);
    let (t1, te1) = tree(11, &[c1, c2]);
    let (t2, te2) = tree(12, &[c2, c3]);
    w.put(t1, &te1).unwrap();
    w.put(t2, &te2).unwrap();
    let (bad, bad_env) = tree(13, &[ObjectId([99; 32])]);
    assert!(matches!(w.put(bad, &bad_env), Err(StoreError::MissingReference { .. })));

    let m0 = w.marker().unwrap();
    let (s1, se1) = set(21, &[t1], 1);
    let (s2, se2) = set(22, &[t2], 2);
    assert_eq!(w.commit_set(s1, &se1).unwrap(), m0 + 1);
    assert_eq!(w.commit_set(s2, &se2).unwrap(), m0 + 2);
    assert_eq!(store.entry(acct, &c2).unwrap().unwrap().refcount, 0, "counted only when needed");
    assert_eq!(w.count_references().unwrap(), 4, "two trees and two sets");
    assert_eq!(store.entry(acct, &c2).unwrap().unwrap().refcount, 2);
    assert_eq!(w.count_references().unwrap(), 0, "each is counted once");
    assert_eq!(store.entry(acct, &c2).unwrap().unwrap().refcount, 2);
    assert_eq!(store.sets(acct).unwrap().len(), 2);

    let report = w.forget_set(&s1).unwrap();
    assert_eq!(report.objects_freed, 3, "set, its tree and the chunk only it used");
    assert_eq!(report.marker, m0 + 3);
    assert!(!store.has_many(acct, &[c1]).unwrap()[0]);
    assert_eq!(store.entry(acct, &c2).unwrap().unwrap().refcount, 1);
    assert_eq!(store.get(acct, &c3).unwrap(), e3);
    assert_eq!(store.tombstones(acct).unwrap()[0].0, s1);
    assert!(w.commit_set(s1, &se1).is_err(), "a forgotten set stays forgotten");

    w.forget_set(&s2).unwrap();
    let usage = store.usage(acct).unwrap();
    assert_eq!((usage.objects, usage.packs, usage.live_bytes), (0, 0, 0), "{usage:?}");
    let packs = dir.path().join("packs").join(format!("{acct:08x}"));
    assert_eq!(std::fs::read_dir(packs).unwrap().count(), 0, "empty packs are deleted");
}

#[test]
fn background_counting_takes_a_quiet_account_one_slice_at_a_time() {
    let (_dir, store, acct) = new_store();
    let mut w = store.writer(acct).unwrap();
    let (c, e) = chunk(1, 1000);
    w.put(c, &e).unwrap();
    let trees: Vec<_> = (0..3).map(|n| tree(10 + n, &[c])).collect();
    for (t, te) in &trees {
        w.put(*t, te).unwrap();
    }
    let (s, se) = set(21, &trees.iter().map(|t| t.0).collect::<Vec<_>>(), 1);
    w.commit_set(s, &se).unwrap();
    drop(w);

    let quiet = Duration::from_millis(200);
    let refused = store.counting_writer(acct, quiet);
    assert!(matches!(refused, Err(StoreError::AccountBusy(_))), "the backup has just let the account go");
    std::thread::sleep(quiet);
    let mut counter = store.counting_writer(acct, quiet).unwrap();
    assert!(matches!(store.writer(acct), Err(StoreError::AccountBusy(_))), "one writer at a time");
    drop(counter);
    let refused = store.counting_writer(acct, quiet);
    assert!(matches!(refused, Err(StoreError::AccountBusy(_))), "a client asked for the account, in vain");
    std::thread::sleep(quiet);

    counter = store.counting_writer(acct, quiet).unwrap();
    assert!(store.has_uncounted(acct).unwrap());
    let first = counter.count_some(Some(Duration::ZERO)).unwrap();
    assert_eq!(first, Counted { objects: 1, more: true }, "a spent budget still counts one object");
    drop(counter);
    // A counting writer coming and going leaves the account quiet.
    let mut counter = store.counting_writer(acct, quiet).unwrap();
    assert_eq!(counter.count_some(None).unwrap(), Counted { objects: 3, more: false });
    assert!(!store.has_uncounted(acct).unwrap());
    assert_eq!(store.entry(acct, &c).unwrap().unwrap().refcount, 3, "one per tree");
    assert_eq!(store.entry(acct, &trees[0].0).unwrap().unwrap().refcount, 1);
    assert_eq!(counter.count_references().unwrap(), 0);
}

#[test]
fn compaction_moves_live_objects_and_keeps_them_readable() {
    let (_dir, store, acct) = new_store();
    let mut w = store.writer(acct).unwrap();
    let (keep, keep_env) = chunk(1, 10_000);
    let (drop, drop_env) = chunk(2, 200_000);
    w.put(keep, &keep_env).unwrap();
    w.put(drop, &drop_env).unwrap();
    let (t_keep, te_keep) = tree(11, &[keep]);
    let (t_drop, te_drop) = tree(12, &[drop]);
    w.put(t_keep, &te_keep).unwrap();
    w.put(t_drop, &te_drop).unwrap();
    let (s_keep, se_keep) = set(21, &[t_keep], 1);
    let (s_drop, se_drop) = set(22, &[t_drop], 2);
    w.commit_set(s_keep, &se_keep).unwrap();
    w.commit_set(s_drop, &se_drop).unwrap();
    let before = store.entry(acct, &keep).unwrap().unwrap();
    let report = w.forget_set(&s_drop).unwrap();
    assert_eq!(report.packs_rewritten, 1, "{report:?}");
    let after = store.entry(acct, &keep).unwrap().unwrap();
    assert_ne!(before.pack, after.pack);
    assert_eq!(store.get(acct, &keep).unwrap(), keep_env);
    assert_eq!(store.get(acct, &s_keep).unwrap(), se_keep);
    let usage = store.usage(acct).unwrap();
    assert!(usage.pack_bytes < 100_000, "space reclaimed: {usage:?}");
}

#[test]
fn unflushed_writes_vanish_and_flushed_ones_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (c1, e1) = chunk(1, 5000);
    let (c2, e2) = chunk(2, 5000);
    {
        let store = Store::create(dir.path()).unwrap();
        let acct = store.create_account("a", "fp", coffer_store::Limits::UNLIMITED).unwrap().id;
        let mut w = store.writer(acct).unwrap();
        w.put(c1, &e1).unwrap();
        w.flush().unwrap();
        w.put(c2, &e2).unwrap();
        drop(w);
        // What a crash can leave: a half-written temporary. (A pack renamed
        // into place whose index write never happened: see `recovery`.)
        std::fs::write(dir.path().join("packs/00000001/0000000000000063.pack.rfw"), b"half").unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let acct = store.find_account("a").unwrap().unwrap().id;
    assert_eq!(store.get(acct, &c1).unwrap(), e1);
    assert!(!store.has_many(acct, &[c2]).unwrap()[0]);
    assert!(!dir.path().join("packs/00000001/0000000000000063.pack.rfw").exists());
}

#[test]
fn unreferenced_uploads_are_collected_after_the_grace_period() {
    let (_dir, store, acct) = new_store();
    let mut w = store.writer(acct).unwrap();
    let (c1, e1) = chunk(1, 1000);
    let (t1, te1) = tree(11, &[c1]);
    w.put(c1, &e1).unwrap();
    w.put(t1, &te1).unwrap();
    w.flush().unwrap();
    let early = w.collect_unreferenced(0).unwrap();
    assert_eq!(early.objects_freed, 0, "still within the grace period");
    let late = w.collect_unreferenced(i64::MAX).unwrap();
    assert_eq!(late.objects_freed, 2, "the orphan tree and the chunk only it named");
    assert_eq!(store.usage(acct).unwrap().objects, 0);
}

#[test]
fn an_upload_named_by_a_tree_not_yet_counted_is_never_collected() {
    let (_dir, store, acct) = new_store();
    let mut w = store.writer(acct).unwrap();
    let (c1, e1) = chunk(1, 1000);
    w.put(c1, &e1).unwrap();
    w.flush().unwrap();
    let (t1, te1) = tree(11, &[c1]);
    w.put(t1, &te1).unwrap();
    let (s1, se1) = set(21, &[t1], 1);
    w.commit_set(s1, &se1).unwrap();
    assert_eq!(store.entry(acct, &c1).unwrap().unwrap().refcount, 0, "not counted yet");

    let gc = w.collect_unreferenced(i64::MAX).unwrap();
    assert_eq!(gc.objects_freed, 0, "{gc:?}");
    assert_eq!(store.get(acct, &c1).unwrap(), e1);
    assert_eq!(store.entry(acct, &c1).unwrap().unwrap().refcount, 1);
    drop(w);
    let report = store.check_account(acct, false).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
}

#[test]
fn corrupt_bytes_are_reported_with_their_location() {
    let (dir, store, acct) = new_store();
    let mut w = store.writer(acct).unwrap();
    let (c1, e1) = chunk(1, 1000);
    w.put(c1, &e1).unwrap();
    w.flush().unwrap();
    let entry = store.entry(acct, &c1).unwrap().unwrap();
    let path = pack_file(dir.path(), acct, entry.pack);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[file_offset(entry.offset + 100)] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = store.get(acct, &c1).unwrap_err().to_string();
    assert!(err.contains("CRC") && err.contains(&c1.to_hex()), "{err}");
}

#[test]
fn a_client_waiting_for_the_writer_comes_before_fast_sync() {
    let (_dir, store, acct) = new_store();
    let batch = store.background_writer(acct).unwrap();
    let client_store = store.clone();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let writer = client_store.writer_within(acct, std::time::Duration::from_secs(60)).unwrap();
        released.recv().unwrap();
        drop(writer);
    });
    while !store.client_waiting(acct) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The sync's batch ends; its next one must wait for the client.
    drop(batch);
    for _ in 0..20 {
        assert!(matches!(store.background_writer(acct), Err(StoreError::AccountBusy(_))));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    release.send(()).unwrap();
    client.join().unwrap();
    assert!(store.background_writer(acct).is_ok(), "the sync goes on once the client is done");
}

/// Copies a directory tree (an index snapshot, as an operator's restore would).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// One committed backup set with its own chunk; returns the set id.
fn backup(store: &Store, account: u64, n: u8) -> ObjectId {
    let mut w = store.writer(account).unwrap();
    let (c, ce) = chunk(n, 50_000);
    let (t, te) = tree(n + 100, &[c]);
    let (s, se) = set(n + 200, &[t], n as i64);
    w.put(c, &ce).unwrap();
    w.put(t, &te).unwrap();
    w.commit_set(s, &se).unwrap();
    s
}

fn pack_count(root: &std::path::Path) -> usize {
    walk(&root.join("packs")).iter().filter(|p| p.extension().is_some_and(|e| e == "pack")).count()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.file_type().unwrap().is_dir() {
            true => out.extend(walk(&entry.path())),
            false => out.push(entry.path()),
        }
    }
    out
}

#[test]
fn a_store_whose_index_is_lost_is_refused_with_every_pack_kept_and_rebuilt_from_the_packs() {
    let (dir, store, acct) = new_store();
    let sets = [backup(&store, acct, 1), backup(&store, acct, 2)];
    drop(store);
    let packs = pack_count(dir.path());
    assert!(packs >= 2);
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    // The node died mid-write too: even the RAID layer's leftovers stay as
    // they are until the operator has rebuilt the index.
    let temp = dir.path().join("packs/00000001/0000000000000063.pack.rfw");
    std::fs::write(&temp, b"half").unwrap();

    for _ in 0..2 {
        let err = Store::open(dir.path()).err().expect("a store without its index is refused");
        assert!(matches!(err, StoreError::IndexLost { .. }), "{err}");
        assert!(err.to_string().contains("rebuild"), "{err}");
        assert_eq!(pack_count(dir.path()), packs, "nothing removed");
        assert!(temp.exists(), "a refused store is left as found");
    }
    // Nor is a store made anew over the packs, with the STORE mark lost too.
    std::fs::remove_file(dir.path().join("STORE")).unwrap();
    let err = Store::create(dir.path()).err().expect("nor made anew over the packs");
    assert!(err.to_string().contains("pack files"), "{err}");

    let lost = |id| coffer_store::AccountRecord {
        id,
        name: "alice".into(),
        key_fingerprint: "fp".into(),
        limits: coffer_store::Limits::UNLIMITED,
        frozen: false,
        created_ns: 0,
    };
    let reports = Store::rebuild_index(dir.path(), &[dir.path().join("packs")], lost).unwrap();
    assert!(reports.iter().all(|r| r.problems.is_empty()), "{reports:?}");
    assert!(!temp.exists(), "the rebuild settles what the crash left");
    let store = Store::open(dir.path()).unwrap();
    let listed: Vec<ObjectId> = store.sets(acct).unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(listed, sets);
    assert_eq!(store.get(acct, &chunk(2, 50_000).0).unwrap(), chunk(2, 50_000).1);
    backup(&store, acct, 3);
}

#[test]
fn a_rolled_back_index_is_refused_and_keeps_the_newer_packs() {
    let (dir, store, acct) = new_store();
    backup(&store, acct, 1);
    drop(store);
    copy_dir(&dir.path().join("index"), &dir.path().join("index-then"));
    let store = Store::open(dir.path()).unwrap();
    let newer = backup(&store, acct, 2);
    drop(store);
    let packs = pack_count(dir.path());
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    std::fs::rename(dir.path().join("index-then"), dir.path().join("index")).unwrap();

    let err = Store::open(dir.path()).err().expect("an index older than the packs is refused");
    assert!(matches!(err, StoreError::IndexBehind { .. }), "{err}");
    assert_eq!(pack_count(dir.path()), packs, "nothing removed");
    Store::rebuild_index(dir.path(), &[dir.path().join("packs")], |_| unreachable!("the record is there"))
        .unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.sets(acct).unwrap().iter().any(|(id, _)| *id == newer), "the newer set is back");
}

#[test]
fn discs_pointed_at_empty_directories_are_refused() {
    let (dir, store, acct) = new_store();
    backup(&store, acct, 1);
    drop(store);
    let elsewhere = dir.path().join("elsewhere");
    let err = Store::open_on(dir.path(), &[elsewhere]).err().expect("the index's packs are nowhere");
    assert!(matches!(err, StoreError::PacksNotFound { .. }), "{err}");
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.sets(acct).unwrap().len(), 1);
}

#[test]
fn an_unknown_pack_below_the_next_number_is_moved_aside_not_deleted() {
    let (dir, store, acct) = new_store();
    backup(&store, acct, 1);
    backup(&store, acct, 2);
    drop(store);
    // A pack the index does not know (say, one an operator copied back by hand).
    let first = pack_file(dir.path(), acct, 1);
    let stray = pack_file(dir.path(), acct, 0);
    std::fs::copy(&first, &stray).unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(!stray.exists());
    let aside = walk(&dir.path().join("packs").join(coffer_store::ASIDE));
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), std::fs::read(&first).unwrap());
    assert_eq!(store.sets(acct).unwrap().len(), 2);
}

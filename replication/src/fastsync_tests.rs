//! The sync algorithm between in-memory replicas that enforce the store's
//! rules (a tree or set only after everything it names). The same algorithm
//! between real nodes is tested in `tests/tests/fastsync.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use coffer_proto::object::{self, ObjectKind};
use coffer_proto::{ObjectId, SetsDigest};

use super::*;

#[derive(Default, Clone)]
struct Content {
    objects: HashMap<ObjectId, Vec<u8>>,
    sets: BTreeMap<ObjectId, i64>,
    tombstones: BTreeSet<ObjectId>,
    marker: u64,
}

#[derive(Default)]
struct Mem {
    name: &'static str,
    content: Mutex<Content>,
    calls: AtomicU64,
    fetched: AtomicU64,
    /// Fail every put after this many succeeded (an interrupted sync).
    puts_left: Mutex<Option<usize>>,
}

fn refuse(name: &str, problem: String) -> SyncError {
    SyncError::Replica { replica: name.into(), problem }
}

impl Mem {
    fn new(name: &'static str) -> Mem {
        Mem { name, ..Mem::default() }
    }

    fn store(&self, envelope: Vec<u8>) -> ObjectId {
        let id = ObjectId(*blake3::hash(&envelope).as_bytes());
        self.content.lock().unwrap().objects.insert(id, envelope);
        id
    }

    fn chunk(&self, text: &str) -> ObjectId {
        self.store(object::encode(ObjectKind::Chunk, &[], text.as_bytes()))
    }

    fn tree(&self, refs: &[ObjectId]) -> ObjectId {
        self.store(object::encode(ObjectKind::Tree, refs, b"tree"))
    }

    /// A client's commit: the set and a marker bump.
    fn commit_set(&self, roots: &[ObjectId], at: i64) -> ObjectId {
        let id = self.store(object::encode(ObjectKind::Set, roots, &at.to_be_bytes()));
        let mut c = self.content.lock().unwrap();
        c.sets.insert(id, at);
        c.marker += 1;
        id
    }

    fn forget(&self, set: &ObjectId) {
        let mut c = self.content.lock().unwrap();
        c.sets.remove(set);
        c.tombstones.insert(*set);
        c.marker += 1;
    }

    fn snapshot(&self) -> Content {
        self.content.lock().unwrap().clone()
    }

    fn summary(c: &Content) -> Summary {
        Summary { marker: c.marker, digest: SetsDigest::of(c.sets.keys(), c.tombstones.iter()) }
    }

    fn holds_all(&self, refs: &[ObjectId]) -> Result<(), SyncError> {
        let c = self.content.lock().unwrap();
        match refs.iter().find(|r| !c.objects.contains_key(*r)) {
            Some(r) => Err(refuse(self.name, format!("missing reference {r}"))),
            None => Ok(()),
        }
    }
}

impl Replica for Mem {
    fn name(&self) -> String {
        self.name.into()
    }

    fn round_trips(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    async fn state(&self, probe: Option<Summary>) -> Result<Probe, SyncError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let c = self.snapshot();
        let summary = Mem::summary(&c);
        if probe == Some(summary) {
            return Ok(Probe::InSync(summary));
        }
        Ok(Probe::Differs(summary, Listing { sets: c.sets, tombstones: c.tombstones }))
    }

    async fn missing(&self, ids: Vec<ObjectId>) -> Result<Vec<ObjectId>, SyncError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let c = self.content.lock().unwrap();
        Ok(ids.into_iter().filter(|id| !c.objects.contains_key(id)).collect())
    }

    async fn fetch(&self, ids: Vec<ObjectId>) -> Result<Vec<(ObjectId, Vec<u8>)>, SyncError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.fetched.fetch_add(ids.len() as u64, Ordering::SeqCst);
        let c = self.content.lock().unwrap();
        ids.into_iter()
            .map(|id| {
                c.objects
                    .get(&id)
                    .map(|e| (id, e.clone()))
                    .ok_or_else(|| refuse(self.name, format!("no {id}")))
            })
            .collect()
    }

    async fn put(&self, objects: Vec<(ObjectId, Vec<u8>)>) -> Result<(), SyncError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        for (id, envelope) in objects {
            if let Some(left) = self.puts_left.lock().unwrap().as_mut() {
                if *left == 0 {
                    return Err(refuse(self.name, "connection dropped".into()));
                }
                *left -= 1;
            }
            let decoded = object::decode(&envelope).map_err(|e| refuse(self.name, e.to_string()))?;
            self.holds_all(&decoded.refs)?;
            self.content.lock().unwrap().objects.insert(id, envelope);
        }
        Ok(())
    }

    async fn commit(&self, id: ObjectId, envelope: Vec<u8>, at: i64) -> Result<u64, SyncError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let decoded = object::decode(&envelope).map_err(|e| refuse(self.name, e.to_string()))?;
        self.holds_all(&decoded.refs)?;
        let mut c = self.content.lock().unwrap();
        if !c.tombstones.contains(&id) && c.sets.insert(id, at).is_none() {
            c.objects.insert(id, envelope);
            c.marker += 1;
        }
        Ok(c.marker)
    }

    async fn bury(&self, ids: Vec<ObjectId>) -> Result<u64, SyncError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut c = self.content.lock().unwrap();
        for id in ids {
            c.sets.remove(&id);
            if c.tombstones.insert(id) {
                c.marker += 1;
            }
        }
        Ok(c.marker)
    }

    async fn adopt(&self, marker: u64) -> Result<u64, SyncError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut c = self.content.lock().unwrap();
        c.marker = c.marker.max(marker);
        Ok(c.marker)
    }
}

fn run<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

/// A set of `files` chunks under one tree, under a root tree.
fn backup(r: &Mem, files: &[&str], at: i64) -> ObjectId {
    let chunks: Vec<_> = files.iter().map(|f| r.chunk(f)).collect();
    let dir = r.tree(&chunks);
    let root = r.tree(&[dir]);
    r.commit_set(&[root], at)
}

fn assert_same(a: &Mem, b: &Mem) {
    let (a, b) = (a.snapshot(), b.snapshot());
    assert_eq!(a.sets, b.sets);
    assert_eq!(a.tombstones, b.tombstones);
    assert_eq!(a.marker, b.marker);
    for set in a.sets.keys() {
        assert!(b.objects.contains_key(set));
    }
}

#[test]
fn replicas_that_agree_cost_one_round_trip() {
    let (a, b) = (Mem::new("a"), Mem::new("b"));
    let first = run(sync(&a, &b)).unwrap();
    assert!(first.in_sync, "two empty replicas agree");
    backup(&a, &["x", "y"], 1);
    let copied = run(sync(&a, &b)).unwrap();
    assert_eq!((copied.sets_sent, copied.in_sync), (1, false));
    assert_same(&a, &b);
    let again = run(sync(&b, &a)).unwrap();
    assert!(again.in_sync);
    assert_eq!(again.round_trips, 1);
}

#[test]
fn a_partition_merges_by_union() {
    let (a, b) = (Mem::new("a"), Mem::new("b"));
    let base = backup(&a, &["shared", "old"], 1);
    run(sync(&a, &b)).unwrap();
    // Both sides take one backup: equal markers, different sets.
    let on_a = backup(&a, &["shared", "from a"], 2);
    let on_b = backup(&b, &["shared", "from b"], 3);
    assert_eq!(a.snapshot().marker, b.snapshot().marker);
    let report = run(sync(&a, &b)).unwrap();
    assert_eq!((report.sets_fetched, report.sets_sent), (1, 1));
    assert_same(&a, &b);
    let sets: Vec<_> = a.snapshot().sets.into_keys().collect();
    for set in [base, on_a, on_b] {
        assert!(sets.contains(&set), "{set} lost in the merge");
    }
    assert!(run(sync(&a, &b)).unwrap().in_sync);
}

#[test]
fn a_forgotten_set_stays_forgotten() {
    let (a, b, c) = (Mem::new("a"), Mem::new("b"), Mem::new("c"));
    let old = backup(&a, &["1"], 1);
    let kept = backup(&a, &["2"], 2);
    run(sync(&a, &b)).unwrap();
    run(sync(&a, &c)).unwrap();
    a.forget(&old);
    run(sync(&a, &b)).unwrap();
    assert!(!b.snapshot().sets.contains_key(&old));
    // c still has the set; syncing with it must not bring it back.
    run(sync(&b, &c)).unwrap();
    for r in [&a, &b, &c] {
        let content = r.snapshot();
        assert!(!content.sets.contains_key(&old), "{} has the forgotten set", r.name);
        assert!(content.tombstones.contains(&old) && content.sets.contains_key(&kept));
    }
}

#[test]
fn only_what_the_receiver_lacks_is_fetched() {
    let (a, b) = (Mem::new("a"), Mem::new("b"));
    let files: Vec<String> = (0..10).map(|i| format!("file {i}")).collect();
    let mut names: Vec<&str> = files.iter().map(String::as_str).collect();
    backup(&a, &names, 1);
    run(sync(&a, &b)).unwrap();
    names[3] = "file 3, changed";
    backup(&a, &names, 2);
    a.fetched.store(0, Ordering::SeqCst);
    let report = run(sync(&b, &a)).unwrap();
    // The set, its root tree, the directory tree and the one changed chunk.
    assert_eq!(a.fetched.load(Ordering::SeqCst), 4);
    assert_eq!(report.objects_copied, 4);
}

#[test]
fn an_interrupted_sync_leaves_a_consistent_store_and_resumes() {
    let (a, b) = (Mem::new("a"), Mem::new("b"));
    let files: Vec<String> = (0..40).map(|i| format!("file {i}")).collect();
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    let set = backup(&a, &names, 1);
    *b.puts_left.lock().unwrap() = Some(25);
    assert!(run(sync(&a, &b)).is_err());
    assert!(b.snapshot().sets.is_empty(), "no set without its objects");
    *b.puts_left.lock().unwrap() = None;
    a.fetched.store(0, Ordering::SeqCst);
    run(sync(&a, &b)).unwrap();
    assert!(b.snapshot().sets.contains_key(&set));
    // 25 chunks arrived before the break: the rest, two trees and the set.
    assert_eq!(a.fetched.load(Ordering::SeqCst), 15 + 2 + 1);
}

#[test]
fn trees_are_stored_after_what_they_name_at_any_depth() {
    let (a, b) = (Mem::new("a"), Mem::new("b"));
    // `shared` is named at depth 1 (by root) and depth 3 (under deep).
    let leaf = a.chunk("leaf");
    let shared = a.tree(&[leaf]);
    let deeper = a.tree(&[shared]);
    let deep = a.tree(&[deeper]);
    let root = a.tree(&[deep, shared]);
    let set = a.commit_set(&[root], 1);
    run(sync(&a, &b)).unwrap();
    assert!(b.snapshot().sets.contains_key(&set));
}

#[test]
fn a_corrupt_object_is_refused_and_named() {
    let (a, b) = (Mem::new("a"), Mem::new("b"));
    let set = backup(&a, &["good"], 1);
    let chunk = a.chunk("good");
    a.content.lock().unwrap().objects.get_mut(&chunk).unwrap()[20] ^= 1;
    let e = run(sync(&a, &b)).unwrap_err().to_string();
    assert!(e.contains(&chunk.to_string()) && e.contains("a sent"), "{e}");
    assert!(!b.snapshot().sets.contains_key(&set));
}

//! Housekeeping on an account of many sets: what a pass costs when it
//! frees nothing, a few sets, and most of them.
//!
//! `cargo run -p coffer-store --example housekeep_bench [-- SETS]` (10,000
//! by default). Each set is a day's backup: a tree naming 50 chunks shared
//! with every other set and one chunk of its own, so forgetting a set frees
//! its set, tree and own chunk. The figure to watch is the time per freed
//! set staying flat while the account holds ten thousand. Counting the
//! references stored since the last count (see the store's `counting`) is
//! timed on its own first.

use std::time::Instant;

use coffer_proto::object::{ObjectKind, encode};
use coffer_proto::retention::RetentionPolicy;
use coffer_proto::set::SET_HEADER_VERSION;
use coffer_proto::{ObjectId, SetHeader, SetStats};
use coffer_store::{Limits, Store};

const DAY_NS: i64 = 86_400 * 1_000_000_000;
const SHARED: u32 = 50;

fn id(kind: u8, n: u32) -> ObjectId {
    let mut bytes = [kind; 32];
    bytes[..4].copy_from_slice(&n.to_le_bytes());
    ObjectId(bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sets: u32 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(10_000);
    let dir = tempfile::tempdir()?;
    let store = Store::create(dir.path())?;
    let account = store.create_account("bench", "fp", Limits::UNLIMITED)?.id;
    let mut w = store.writer(account)?;
    let shared: Vec<ObjectId> = (0..SHARED).map(|n| id(1, n)).collect();
    for c in &shared {
        w.put(*c, &encode(ObjectKind::Chunk, &[], &[7; 1024]))?;
    }
    let started = Instant::now();
    let first_ns = 1_700_000_000 * 1_000_000_000;
    for n in 0..sets {
        let own = id(2, n);
        w.put(own, &encode(ObjectKind::Chunk, &[], &n.to_le_bytes().repeat(256)))?;
        let refs: Vec<ObjectId> = shared.iter().copied().chain([own]).collect();
        let tree = id(3, n);
        w.put(tree, &encode(ObjectKind::Tree, &refs, b"sealed tree"))?;
        let header = SetHeader {
            version: SET_HEADER_VERSION,
            time_ns: first_ns + i64::from(n) * DAY_NS,
            marker: 0,
            roots: vec![tree],
            stats: SetStats::default(),
        };
        w.commit_set(id(4, n), &encode(ObjectKind::Set, &[tree], &header.encode_body(b"sealed")))?;
    }
    println!("{sets} daily sets committed in {:.1} s", started.elapsed().as_secs_f64());
    // What the first pass would otherwise include: reading back every tree
    // and set stored since references were last counted.
    let started = Instant::now();
    let counted = w.count_references()?;
    println!("{counted} stored trees and sets counted in {:.3} s", started.elapsed().as_secs_f64());

    let pass = |name: &str, policy: RetentionPolicy| -> Result<(), Box<dyn std::error::Error>> {
        let started = Instant::now();
        let report = store.writer(account)?.housekeep(0, &policy)?;
        let took = started.elapsed().as_secs_f64();
        let freed = report.sets_expired.len();
        let per_set = if freed > 0 {
            format!(", {:.2} ms per freed set", took * 1000.0 / freed as f64)
        } else {
            String::new()
        };
        println!(
            "{name:<36} {:>6} sets left, {freed:>6} forgotten, {:>7} objects freed in {:>7.3} s{per_set}",
            store.sets(account)?.len(),
            report.objects_freed,
            took
        );
        Ok(())
    };
    let keep_last = |n: u32| RetentionPolicy { keep_last: n, ..Default::default() };
    drop(w);
    pass("no policy (frees nothing)", RetentionPolicy::default())?;
    pass("keep-last all (frees nothing)", keep_last(sets))?;
    pass("keep-last all but 10", keep_last(sets - 10))?;
    pass("keep-last all but 100 more", keep_last(sets - 110))?;
    let policy = RetentionPolicy {
        keep_daily: 7,
        keep_weekly: 4,
        keep_monthly: 12,
        keep_yearly: 10,
        ..Default::default()
    };
    pass("daily 7, weekly 4, monthly 12, yearly 10", policy)?;
    Ok(())
}

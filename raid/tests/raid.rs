//! RAID files through the public API: layout sizes, reads at every offset
//! with each stripe lost or damaged, commits, crashes and rebuilds.

use std::io::Write;
use std::path::PathBuf;

use coffer_raid::layout::{HEADER_LEN, Layout};
use coffer_raid::{DiscSet, Overwrite, RaidError};
use proptest::prelude::*;

const BS: u32 = 64;

fn dirs(root: &std::path::Path, n: usize) -> Vec<PathBuf> {
    (1..=n).map(|k| root.join(format!("disc{k}"))).collect()
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

fn write(set: &DiscSet, name: &str, bytes: &[u8]) {
    let mut w = set.create(name, Overwrite::Yes).unwrap();
    // Uneven pieces, so unit boundaries fall anywhere.
    for piece in bytes.chunks(37) {
        w.write_all(piece).unwrap();
    }
    w.commit().unwrap();
}

/// Reads at every offset with a spread of lengths, and the whole file.
fn assert_reads(set: &DiscSet, name: &str, expected: &[u8]) {
    let r = set.open_file(name).unwrap();
    assert_eq!(r.len(), expected.len() as u64);
    assert_eq!(r.read_all().unwrap(), expected);
    let n = expected.len();
    for offset in 0..=n {
        for len in [0, 1, 2, BS as usize - 1, BS as usize, BS as usize + 1, 2 * BS as usize + 3, n - offset] {
            let len = len.min(n - offset);
            assert_eq!(
                r.read_at(offset as u64, len).unwrap(),
                &expected[offset..offset + len],
                "{offset}+{len}"
            );
        }
    }
    assert!(matches!(r.read_at(n as u64, 1), Err(RaidError::OutOfRange { .. })));
}

fn interesting_sizes() -> Vec<usize> {
    let mut sizes: Vec<usize> = (0..10).collect();
    for k in 0..=5usize {
        for d in [0i64, 1, 2, 7, 8, 9] {
            for sign in [-1, 1] {
                let v = (k * BS as usize) as i64 + sign * d;
                if v >= 0 {
                    sizes.push(v as usize);
                }
            }
        }
    }
    sizes.sort();
    sizes.dedup();
    sizes
}

fn flip(path: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    if !bytes.is_empty() {
        let at = at % bytes.len();
        bytes[at] ^= 0x5a;
        std::fs::write(path, bytes).unwrap();
    }
}

#[test]
fn every_size_reads_back_with_any_one_stripe_lost() {
    for size in interesting_sizes() {
        let root = tempfile::tempdir().unwrap();
        let set = DiscSet::with_block_size(&dirs(root.path(), 3), BS).unwrap();
        let bytes = data(size, size as u8);
        write(&set, "f", &bytes);
        let layout = Layout::new(BS, size as u64, 3).unwrap();
        for s in 0..3 {
            let len = std::fs::metadata(set.stripe_path("f", s)).unwrap().len();
            assert_eq!(len, layout.stripe_size(s), "size {size} stripe {s}");
        }
        assert_reads(&set, "f", &bytes);
        for lost in 0..3 {
            let path = set.stripe_path("f", lost);
            let saved = std::fs::read(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            assert_reads(&set, "f", &bytes);
            std::fs::write(&path, &saved).unwrap();
        }
        assert!(set.check().unwrap().is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_sizes_survive_flipped_bytes_in_one_stripe(
        size in 0usize..2000,
        stripe in 0usize..3,
        flips in proptest::collection::vec(any::<usize>(), 1..4),
    ) {
        let root = tempfile::tempdir().unwrap();
        let set = DiscSet::with_block_size(&dirs(root.path(), 3), BS).unwrap();
        let bytes = data(size, 7);
        write(&set, "p/q/file.pack", &bytes);
        for at in flips {
            flip(&set.stripe_path("p/q/file.pack", stripe), at);
        }
        let r = set.open_file("p/q/file.pack").unwrap();
        prop_assert_eq!(r.read_all().unwrap(), bytes.clone());
        let mid = size / 3;
        prop_assert_eq!(r.read_at(mid as u64, size / 2).unwrap(), bytes[mid..mid + size / 2].to_vec());
    }
}

#[test]
fn two_bad_stripes_give_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let set = DiscSet::with_block_size(&dirs(root.path(), 3), BS).unwrap();
    write(&set, "packs/a.pack", &data(1000, 1));
    std::fs::remove_file(set.stripe_path("packs/a.pack", 0)).unwrap();
    flip(&set.stripe_path("packs/a.pack", 2), HEADER_LEN as usize + 5);
    let err = set.open_file("packs/a.pack").unwrap().read_all().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RaidError::Unrecoverable { .. }) && text.contains("packs/a.pack"), "{text}");
    std::fs::remove_file(set.stripe_path("packs/a.pack", 1)).unwrap();
    let err = set.open_file("packs/a.pack").err().expect("unreadable").to_string();
    assert!(err.contains("packs/a.pack") && err.contains("stripe 0: missing"), "{err}");
    assert!(matches!(set.open_file("nothing"), Err(RaidError::NotFound(_))));
}

#[test]
fn writes_are_invisible_until_commit_and_abandoned_ones_leave_nothing() {
    let root = tempfile::tempdir().unwrap();
    let set = DiscSet::with_block_size(&dirs(root.path(), 3), BS).unwrap();
    let mut w = set.create("f", Overwrite::No).unwrap();
    w.write_all(&data(500, 1)).unwrap();
    assert!(!set.exists("f") && set.names().unwrap().is_empty());
    assert!(matches!(set.create("f", Overwrite::No), Err(RaidError::Busy(_))));
    drop(w);
    assert!(!set.exists("f"));
    let leftovers: Vec<_> = set
        .dirs()
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != coffer_raid::discset::LABEL)
        .collect();
    assert!(leftovers.is_empty(), "abandoned write left {leftovers:?}");

    write(&set, "f", &data(500, 2));
    assert!(matches!(set.create("f", Overwrite::No), Err(RaidError::Exists(_))));
    assert!(matches!(set.create("../f", Overwrite::Yes), Err(RaidError::BadName(_))));
    write(&set, "f", &data(300, 3));
    assert_reads(&set, "f", &data(300, 3));
}

#[test]
fn a_crash_mid_write_or_mid_commit_keeps_the_old_version_and_no_debris() {
    let root = tempfile::tempdir().unwrap();
    let set = DiscSet::with_block_size(&dirs(root.path(), 3), BS).unwrap();
    write(&set, "f", &data(700, 1));
    // A crash mid-write: the writer never commits nor cleans up.
    let mut w = set.create("f", Overwrite::Yes).unwrap();
    w.write_all(&data(900, 2)).unwrap();
    std::mem::forget(w);
    drop(set);
    let set = DiscSet::with_block_size(&dirs(root.path(), 3), BS).unwrap();
    assert_reads(&set, "f", &data(700, 1));
    let names: Vec<_> = set
        .dirs()
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.iter().all(|n| n == "f" || n == coffer_raid::discset::LABEL),
        "debris after restart: {names:?}"
    );

    // A crash after the first of three renames of a commit: the two stripes
    // that agree still give the old version.
    let other = tempfile::tempdir().unwrap();
    let new_set = DiscSet::with_block_size(&dirs(other.path(), 3), BS).unwrap();
    write(&new_set, "f", &data(900, 2));
    std::fs::copy(new_set.stripe_path("f", 0), set.stripe_path("f", 0)).unwrap();
    assert_reads(&set, "f", &data(700, 1));
    assert_eq!(set.check().unwrap().len(), 1);
    set.rebuild().unwrap();
    assert!(set.check().unwrap().is_empty());
    assert_reads(&set, "f", &data(700, 1));
}

/// Stands in for a commit of `bytes` to `name` cut after its first rename:
/// stripe 0 in place, the others still under their temporary names.
fn commit_cut_after_first_rename(set: &DiscSet, name: &str, bytes: &[u8]) {
    let other = tempfile::tempdir().unwrap();
    let whole = DiscSet::with_block_size(&dirs(other.path(), 3), BS).unwrap();
    write(&whole, name, bytes);
    std::fs::copy(whole.stripe_path(name, 0), set.stripe_path(name, 0)).unwrap();
    for s in 1..3 {
        let temp = format!("{}.rfw", set.stripe_path(name, s).display());
        std::fs::copy(whole.stripe_path(name, s), temp).unwrap();
    }
}

#[test]
fn a_commit_cut_between_its_renames_is_finished_when_the_set_is_opened() {
    let root = tempfile::tempdir().unwrap();
    let set = DiscSet::with_block_size(&dirs(root.path(), 3), BS).unwrap();
    std::fs::create_dir_all(set.dirs()[0].join("new")).unwrap();
    (1..3).for_each(|s| std::fs::create_dir_all(set.dirs()[s].join("new")).unwrap());
    commit_cut_after_first_rename(&set, "new/f", &data(1000, 4));
    write(&set, "old", &data(500, 5));
    commit_cut_after_first_rename(&set, "old", &data(800, 6));
    // A temporary that no stripe in place confirms is a write that never
    // committed, even if it is whole.
    let stray = tempfile::tempdir().unwrap();
    let stray_set = DiscSet::with_block_size(&dirs(stray.path(), 3), BS).unwrap();
    write(&stray_set, "stray", &data(300, 7));
    std::fs::copy(
        stray_set.stripe_path("stray", 1),
        format!("{}.rfw", set.stripe_path("stray", 1).display()),
    )
    .unwrap();
    drop(set);

    let set = DiscSet::with_block_size(&dirs(root.path(), 3), BS).unwrap();
    assert_reads(&set, "new/f", &data(1000, 4));
    assert_reads(&set, "old", &data(800, 6));
    assert!(!set.exists("stray"));
    assert!(set.check().unwrap().is_empty(), "every stripe of both files is whole and of one version");
    let mut names = set.names().unwrap();
    names.sort();
    assert_eq!(names, ["new/f", "old"], "no temporary is left");
}

#[test]
fn a_lost_disc_is_rebuilt_and_an_interrupted_rebuild_can_be_rerun() {
    let root = tempfile::tempdir().unwrap();
    let set = DiscSet::with_block_size(&dirs(root.path(), 3), BS).unwrap();
    let files: Vec<(String, Vec<u8>)> =
        (0..5).map(|i| (format!("d{i}/f{i}"), data(100 * i + 13, i as u8))).collect();
    for (name, bytes) in &files {
        write(&set, name, bytes);
    }
    assert!(set.missing().is_empty());
    std::fs::remove_dir_all(&set.dirs()[1]).unwrap();
    assert_eq!(set.missing(), vec![set.dirs()[1].clone()], "the lost disc is named");
    for (name, bytes) in &files {
        assert_reads(&set, name, bytes);
    }
    assert!(set.degraded_reads() > 0);
    let damage = set.check().unwrap();
    assert_eq!(damage.len(), files.len(), "{damage:?}");
    assert!(damage.iter().all(|d| d.stripe == Some(1) && d.problem == "missing"));
    // An interrupted rebuild leaves a temporary stripe; the rerun finishes.
    std::fs::create_dir_all(set.dirs()[1].join("d1")).unwrap();
    std::fs::write(set.dirs()[1].join("d1/f1.rfw"), b"half").unwrap();
    let set = DiscSet::with_block_size(&dirs(root.path(), 3), BS).unwrap();
    let report = set.rebuild().unwrap();
    assert_eq!(report.stripes_rebuilt, files.len() as u64);
    assert!(set.missing().is_empty(), "reopening labelled the new directory");
    assert!(set.check().unwrap().is_empty());
    for (name, bytes) in &files {
        assert_reads(&set, name, bytes);
    }
    assert!(set.usage().unwrap().iter().all(|b| *b > 0));
}

#[test]
fn files_written_after_a_disc_vanished_keep_the_set_whole_and_rebuild_fills_the_rest() {
    let root = tempfile::tempdir().unwrap();
    let set = DiscSet::with_block_size(&dirs(root.path(), 3), BS).unwrap();
    write(&set, "a/old", &data(1000, 1));
    // The disc goes while the set is open; writing goes on.
    std::fs::remove_dir_all(&set.dirs()[2]).unwrap();
    write(&set, "b/new", &data(700, 2));
    assert_reads(&set, "a/old", &data(1000, 1));
    assert_reads(&set, "b/new", &data(700, 2));
    // The directory came back as a member of the set: it opens again, and
    // rebuild regenerates what the dead disc took.
    let set = DiscSet::with_block_size(&dirs(root.path(), 3), BS).unwrap();
    assert_eq!(set.check().unwrap().len(), 1, "only the old file lacks a stripe");
    assert_eq!(set.rebuild().unwrap().stripes_rebuilt, 1);
    assert!(set.check().unwrap().is_empty());
    assert_reads(&set, "a/old", &data(1000, 1));
}

#[test]
fn one_disc_sets_keep_plain_files_with_block_crcs() {
    let root = tempfile::tempdir().unwrap();
    let set = DiscSet::with_block_size(&dirs(root.path(), 1), BS).unwrap();
    for size in interesting_sizes() {
        write(&set, "f", &data(size, 9));
        assert_reads(&set, "f", &data(size, 9));
    }
    write(&set, "f", &data(500, 9));
    flip(&set.stripe_path("f", 0), HEADER_LEN as usize + 70);
    let err = set.open_file("f").unwrap().read_all().unwrap_err().to_string();
    assert!(err.contains("`f`") && err.contains("CRC"), "{err}");
    assert_eq!(set.check().unwrap().len(), 1);
    assert!(matches!(DiscSet::open(&dirs(root.path(), 2)), Err(RaidError::DiscCount(2))));
}

#[test]
fn directories_of_another_set_or_in_another_order_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let d = dirs(root.path(), 3);
    let set = DiscSet::with_block_size(&d, BS).unwrap();
    write(&set, "f", &data(300, 1));
    drop(set);
    let swapped = [d[1].clone(), d[0].clone(), d[2].clone()];
    let err = DiscSet::open(&swapped).err().expect("refused").to_string();
    assert!(err.contains("listed as"), "{err}");
    let other = DiscSet::open(&dirs(&root.path().join("other"), 3)).unwrap();
    drop(other);
    let mixed = [d[0].clone(), root.path().join("other/disc2"), d[2].clone()];
    assert!(matches!(DiscSet::open(&mixed), Err(RaidError::Label { .. })));
    // A directory with files but no label is not adopted (nothing in it is
    // taken for debris).
    let stray = root.path().join("stray");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("precious"), b"x").unwrap();
    assert!(matches!(DiscSet::open(std::slice::from_ref(&stray)), Err(RaidError::Label { .. })));
    assert!(stray.join("precious").exists());
    // The original order still opens, with the file intact.
    let set = DiscSet::with_block_size(&d, BS).unwrap();
    assert_reads(&set, "f", &data(300, 1));
}

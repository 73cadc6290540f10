//! The upload path to a node: existence checks go one per upload batch,
//! never one per file, and the cache's record of what the store holds
//! (`held.ids`) lets a moved or copied file cost no round trip at all,
//! but only while the store is where the record was made.

use std::path::Path;

use coffer_tests::cluster::Cluster;
use coffer_tests::fstree::{assert_same_tree, random_bytes, write};
use coffer_tests::metrics::{store_requests, with_metrics};
use coffer_tests::u64_field;

/// One node with its metrics listener; returns the metrics port.
fn node_with_metrics() -> (Cluster, u16) {
    let mut c = Cluster::start_some(1, 0, &[]);
    let port = with_metrics(&mut c, 1);
    c.wait_for_group(1, 1);
    (c, port)
}

/// 600 small files over three directories and one of 12 MiB, under `a/`.
fn make_tree(src: &Path) {
    for i in 0..600u64 {
        write(&src.join(format!("a/d{}/f{i}", i % 3)), &random_bytes(i, 2_000 + i as usize));
    }
    write(&src.join("a/big"), &random_bytes(9_999, 12 << 20));
}

fn restored_same(c: &Cluster, src: &Path, dest: &str) {
    let out = c.path(dest);
    c.coffer_ok("client.toml", &["restore", &src.display().to_string(), &out.display().to_string()]);
    assert_same_tree(src, &out);
}

#[test]
fn moved_and_copied_files_cost_no_round_trip_and_no_upload() {
    let (c, port) = node_with_metrics();
    let src = c.path("src");
    make_tree(&src);
    c.backup("client.toml", &src);
    let checks = store_requests(port, "Have");
    assert!(checks <= 20, "a first backup of 601 files asked the node {checks} times which objects it holds");

    std::fs::rename(src.join("a"), src.join("b")).unwrap();
    std::fs::copy(src.join("b/big"), src.join("big-copy")).unwrap();
    let moved = c.backup("client.toml", &src);
    assert_eq!(u64_field(&moved, "files_read"), 602, "{moved}");
    assert_eq!(u64_field(&moved, "chunks_new"), 0, "{moved}");
    assert!(u64_field(&moved, "bytes_stored_new") < 100_000, "{moved}");
    // Only the new trees (the root's, naming `b` now) go to the node, in
    // one batch with its one check; sending the 12 MiB again would take six.
    let checked = store_requests(port, "Have") - checks;
    assert!(checked <= 1, "the moved files were sent to the node and checked there ({checked} checks)");
    restored_same(&c, &src, "out");
}

#[test]
fn a_record_made_before_the_store_changed_is_not_trusted() {
    let (c, port) = node_with_metrics();
    let src = c.path("src");
    make_tree(&src);
    let first = c.backup("client.toml", &src);

    // Another client of the account forgets the only set: everything it
    // named is freed, though this client's record says it is held.
    let twin = std::fs::read_to_string(c.path("client.toml"))
        .unwrap()
        .replace("cache = \"cache\"", "cache = \"twin\"");
    std::fs::write(c.path("twin.toml"), twin).unwrap();
    c.coffer_ok("twin.toml", &["forget", first["set_id"].as_str().unwrap()]);
    let checks = store_requests(port, "Have");

    std::fs::rename(src.join("a"), src.join("b")).unwrap();
    let again = c.backup("client.toml", &src);
    assert!(store_requests(port, "Have") > checks, "the stale record was trusted");
    assert_eq!(u64_field(&again, "files_read"), 601, "{again}");
    assert!(u64_field(&again, "bytes_stored_new") > 12 << 20, "the freed data was not sent again: {again}");
    restored_same(&c, &src, "out");
}

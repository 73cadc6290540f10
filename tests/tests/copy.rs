//! `coffer copy`: seeding a node's account from a local store (the
//! removable-disc route of the 0.20 redesign notes), resuming a copy that
//! was killed, and backing up to the node afterwards with only the changes.

use std::process::Stdio;
use std::time::Duration;

use coffer_tests::cluster::{Cluster, wait_for};
use coffer_tests::fstree::{assert_same_tree, random_bytes, write};

const MIB: usize = 1 << 20;

#[test]
fn a_local_first_set_seeds_a_node_and_the_next_backup_sends_only_the_changes() {
    let c = Cluster::start(1);
    c.wait_for_group(1, 1);
    // An account with no keys yet, and a local store made with new keys.
    let config = c.add_account("seed", "10GiB", "10GiB");
    let data = c.path("data");
    for i in 0..200u64 {
        write(&data.join(format!("d{}/f{i}", i % 5)), &random_bytes(i, 30_000));
    }
    write(&data.join("big.bin"), &random_bytes(9, 120 * MIB));
    let local = format!("file://{}", c.path("usb").display());
    c.coffer_ok(&config, &["--store", &local, "init"]);
    c.coffer_ok(&config, &["--store", &local, "backup", data.to_str().unwrap()]);
    let node = c.nodes[0].url();

    // Killed part way: what reached the node stays; the rerun sends the rest.
    let mut child = c
        .coffer_command(&config, &["copy", "--from", &local, "--to", &node])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), "the copy to be under way", || {
        (c.pack_bytes(1) > 20 * MIB as u64).then_some(())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let report = c.coffer_json(&config, &["copy", "--json", "--from", &local, "--to", &node]);
    assert_eq!(report["copied"].as_array().unwrap().len(), 1, "{report}");
    assert!(report["objects_present"].as_u64().unwrap() > 0, "the killed run's objects were kept: {report}");
    assert!(report["bytes_sent"].as_u64().unwrap() < 118 * MIB as u64, "only the rest was sent: {report}");
    // Again: nothing to do.
    let again = c.coffer_json(&config, &["copy", "--json", "--from", &local, "--to", &node]);
    assert_eq!(
        (again["copied"].as_array().unwrap().len(), again["objects_sent"].as_u64()),
        (0, Some(0)),
        "{again}"
    );

    // The node now has the set, under the same id, restorable from it alone.
    let local_sets = c.coffer_json(&config, &["--store", &local, "sets", "--json"]);
    let node_sets = c.coffer_json(&config, &["sets", "--json"]);
    assert_eq!(local_sets[0]["id"], node_sets[0]["id"]);
    let restored = c.path("restored");
    c.coffer_ok(&config, &["restore", data.to_str().unwrap(), restored.to_str().unwrap()]);
    assert_same_tree(&data, &restored);

    // Backing up to the node from here sends one changed file, not the tree.
    write(&data.join("d1/f1"), &random_bytes(1000, 30_000));
    let report = c.backup(&config, &data);
    assert_eq!(report["files_read"], 1, "{report}");
    assert!(report["bytes_stored_new"].as_u64().unwrap() < MIB as u64, "{report}");
}

//! Fast sync between the replicas of an account, and the client's failover
//! between them: three real `coffer-node` processes, the real `coffer` and
//! `coffer-admin` binaries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use coffer_tests::cluster::{COMMAND_TIMEOUT, Cluster, finish_backup, wait_for};
use coffer_tests::fstree::{assert_same_tree, random_bytes, write};
use coffer_tests::links::Links;
use coffer_tests::{u64_field, walk_files};

const CONVERGE: Duration = Duration::from_secs(60);

fn tree(root: &Path, seed: u64, files: u64) {
    for i in 0..files {
        write(
            &root.join(format!("d{}/f{i}", i % 4)),
            &random_bytes(seed * 1000 + i, 3000 + i as usize * 200),
        );
    }
}

/// (marker, sets) of the quickstart account's replica on node `k`.
fn replica(c: &Cluster, k: usize) -> Option<(u64, u64)> {
    c.replica(k, "client").map(|a| (u64_field(&a, "marker"), u64_field(&a, "sets")))
}

/// Waits until every running node's replica reports `sets` sets and one marker; returns it.
fn converged(c: &Cluster, nodes: &[usize], sets: u64) -> u64 {
    wait_for(CONVERGE, &format!("nodes {nodes:?} to hold {sets} sets at one marker"), || {
        let seen: Vec<_> = nodes.iter().map(|k| replica(c, *k)).collect::<Option<_>>()?;
        let first = seen[0];
        (first.1 == sets && seen.iter().all(|r| *r == first)).then_some(first.0)
    })
}

/// Restores `data` from node `k` alone (no failover) and compares it with the original.
fn restore_from(c: &Cluster, k: usize, data: &Path, as_at: Option<&str>) {
    let config = c.client_for(k);
    let name = data.file_name().unwrap().to_string_lossy();
    let target = c.path(&format!("restored-{k}-{name}-{}", as_at.unwrap_or("now")));
    let (data, target_text) = (data.display().to_string(), target.display().to_string());
    let mut args = vec!["--no-failover", "restore", &data, &target_text];
    if let Some(set) = as_at {
        args.extend(["--set", set]);
    }
    c.coffer_ok(&config, &args);
    assert_same_tree(Path::new(&data), &target);
}

#[test]
fn a_backup_reaches_every_replica_and_restores_from_each() {
    let c = Cluster::start(3);
    c.wait_for_group(1, 3);
    let data = c.path("data");
    tree(&data, 1, 30);
    let first = c.backup("client.toml", &data);
    let marker = converged(&c, &[1, 2, 3], 1);
    let then = c.path("data-then");
    let copied = std::process::Command::new("cp").arg("-a").arg(&data).arg(&then).status().unwrap();
    assert!(copied.success());
    tree(&data, 2, 10);
    let second = c.backup("client.toml", &data);
    assert!(converged(&c, &[1, 2, 3], 2) > marker);
    for k in [2, 3] {
        restore_from(&c, k, &data, None);
        // The older set too, as it was.
        let target = c.path(&format!("first-from-{k}"));
        let set = first["set_id"].as_str().unwrap();
        let args = [
            "--no-failover",
            "restore",
            "--set",
            set,
            &data.display().to_string(),
            &target.display().to_string(),
        ];
        c.coffer_ok(&c.client_for(k), &args);
        assert_same_tree(&then, &target);
    }
    let sets = c.coffer_json(&c.client_for(3), &["sets", "--json"]);
    assert_eq!(sets.as_array().unwrap().len(), 2, "{sets}");
    assert_eq!(sets[1]["id"], second["set_id"]);

    // Replicas that agree cost one round trip each, counted by the node.
    let report = c.admin_at_json(1, &["sync", "client", "--json"]);
    let peers = report["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "{report}");
    for p in peers {
        assert_eq!((p["in_sync"].as_bool(), p["round_trips"].as_u64()), (Some(true), Some(1)), "{report}");
    }
}

#[test]
fn the_client_fails_over_when_its_primary_dies_mid_backup_and_returns_once_it_caught_up() {
    let mut c = Cluster::start(3);
    c.wait_for_group(1, 3);
    let data = c.path("data");
    tree(&data, 1, 10);
    assert_eq!(c.backup("client.toml", &data)["node"], "node1");
    converged(&c, &[1, 2, 3], 1);

    // Big enough that node 1 dies with the upload half done.
    for i in 0..6 {
        write(&data.join(format!("big/{i}")), &random_bytes(100 + i, 24 << 20));
    }
    let report = backup_killing_node1(&mut c, &data, 16 << 20);
    assert!(matches!(report["node"].as_str(), Some("node2" | "node3")), "{report}");
    assert!(u64_field(&report, "restarts") >= 1, "{report}");
    converged(&c, &[2, 3], 2);

    // Node 1 comes back, catches up, and serves the new set bit-exact.
    c.nodes[0].restart();
    converged(&c, &[1, 2, 3], 2);
    restore_from(&c, 1, &data, None);

    // Its marker matches again, so the client goes back to its primary.
    tree(&data, 3, 4);
    let back = c.backup("client.toml", &data);
    assert_eq!(back["node"], "node1", "{back}");
    converged(&c, &[1, 2, 3], 3);
}

/// Backs `data` up, SIGKILLing node 1 once it has taken `part` more bytes;
/// the backup must still succeed. Returns its report.
fn backup_killing_node1(c: &mut Cluster, data: &Path, part: u64) -> serde_json::Value {
    let before = c.pack_bytes(1);
    let backup = c.spawn_backup("client.toml", data);
    wait_for(COMMAND_TIMEOUT, "node 1 to receive part of the upload", || {
        (c.pack_bytes(1) >= before + part).then_some(())
    });
    c.nodes[0].kill();
    finish_backup(backup, COMMAND_TIMEOUT).unwrap()
}

/// A source tree: `dirs` directories of small files of varied sizes, the
/// shape (many directories, each finished and stored while others are read)
/// that lets a failover meet trees naming chunks on the old node.
fn source_tree(root: &Path, seed: u64, dirs: u64, files: u64) {
    for d in 0..dirs {
        for f in 0..files {
            let n = seed * 1_000_000 + d * 1000 + f;
            write(
                &root.join(format!("pkg{}/mod{d}/f{f}.txt", d % 8)),
                &random_bytes(n, 2000 + (n % 61) as usize * 1000),
            );
        }
    }
}

#[test]
fn a_first_backup_of_a_source_tree_finishes_on_the_next_node_when_its_primary_dies() {
    let mut c = Cluster::start(3);
    c.wait_for_group(1, 3);
    let data = c.path("src");
    // About 150 MiB in 4,800 files: the first 32 MiB pack lands well before the end.
    source_tree(&data, 1, 120, 40);
    let report = backup_killing_node1(&mut c, &data, 1);
    assert!(matches!(report["node"].as_str(), Some("node2" | "node3")), "{report}");
    assert!(u64_field(&report, "restarts") >= 1, "{report}");
    assert_eq!(u64_field(&report, "files_total"), 4800, "{report}");
    converged(&c, &[2, 3], 1);
    for k in [2, 3] {
        restore_from(&c, k, &data, None);
    }
}

/// A group cut in two with a client on each side, after the near side's
/// backup during the partition.
struct Partitioned {
    c: Cluster,
    links: Links,
    near: String,
    far: String,
    data1: PathBuf,
    data2: PathBuf,
    /// The marker every node held before the partition.
    marker: u64,
}

/// Three nodes, a near client (side 1) and a far client (side 2), both with
/// node 1 as their primary; a first set of the near one reaches every node.
/// Then node 1 and the near client are cut off from nodes 2 and 3 and the
/// far client, and the near client backs up changed files on node 1.
fn partitioned() -> Partitioned {
    let (c, links) = Links::start(3, 2);
    c.wait_for_group(1, 3);
    let near = links.client_config(&c, "near", 1);
    let far = links.client_config(&c, "far", 2);
    let (data1, data2) = (c.path("data1"), c.path("data2"));
    tree(&data1, 1, 12);
    tree(&data2, 2, 12);
    assert_eq!(c.backup(&near, &data1)["node"], "node1");
    let marker = converged(&c, &[1, 2, 3], 1);
    links.partition(&[1], &[2, 3]);
    links.cut_clients(1, &[2, 3]);
    links.cut_clients(2, &[1]);
    tree(&data1, 3, 6);
    assert_eq!(c.backup(&near, &data1)["node"], "node1");
    Partitioned { c, links, near, far, data1, data2, marker }
}

#[test]
fn both_sides_of_a_partition_keep_backing_up_and_every_set_survives_the_heal() {
    let Partitioned { c, links, far, data1, data2, .. } = partitioned();
    let far_report = c.backup(&far, &data2);
    assert_eq!(far_report["node"], "node2", "{far_report}");
    converged(&c, &[2, 3], 2);
    assert_eq!(replica(&c, 1).map(|r| r.1), Some(2), "node 1 holds its own side's sets");

    links.heal();
    converged(&c, &[1, 2, 3], 3);
    for k in 1..=3 {
        restore_from(&c, k, &data1, None);
        restore_from(&c, k, &data2, None);
    }
}

#[test]
fn a_cache_made_on_one_side_of_a_partition_is_not_trusted_on_the_other_at_the_same_marker() {
    // Each side takes one backup: both move to the same marker, with
    // different sets; the near client's cache lists its side's.
    let Partitioned { c, links, near, far, data1, data2, marker } = partitioned();
    assert_eq!(c.backup(&far, &data2)["node"], "node2");
    assert_eq!(replica(&c, 1), Some((marker + 1, 2)));
    assert_eq!(converged(&c, &[2, 3], 2), marker + 1);

    // The near client now reaches only the other side. Its next backup
    // builds on the sets node 2 holds, not on those its cache names (whose
    // newest trees node 2 never received), and commits there.
    links.cut_clients(1, &[1]);
    links.open_clients(1, &[2, 3]);
    tree(&data1, 4, 3);
    let report = c.backup(&near, &data1);
    assert_eq!(report["node"], "node2", "{report}");
    restore_from(&c, 2, &data1, None);

    links.heal();
    converged(&c, &[1, 2, 3], 4);
    restore_from(&c, 1, &data1, None);
}

/// The node number of a node name (`node3` → 3).
fn number(name: &str) -> usize {
    name.trim_start_matches("node").parse().unwrap()
}

#[test]
fn an_account_migrates_to_another_node_and_the_old_one_redirects_its_client() {
    let c = Cluster::start(4);
    c.wait_for_group(1, 4);
    let account = c.admin_json(&["account", "info", "client", "--json"])[0].clone();
    let replicas: Vec<String> =
        account["replicas"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
    assert_eq!(replicas.len(), 3, "{account}");
    let source = account["primary"].as_str().unwrap().to_string();
    let target = (1..=4).map(|k| format!("node{k}")).find(|n| !replicas.contains(n)).unwrap();
    let holders: Vec<usize> = replicas.iter().map(|r| number(r)).collect();

    // The client's configured primary is the source.
    let config = c.client_for(number(&source));
    let data = c.path("data");
    tree(&data, 1, 20);
    assert_eq!(c.backup(&config, &data)["node"], source.as_str());
    converged(&c, &holders, 1);

    let moved = c.admin_json(&["migrate", "client", "--to", &target, "--json"]);
    assert_eq!(
        (moved["from"].as_str(), moved["primary"].as_str()),
        (Some(&*source), Some(&*target)),
        "{moved}"
    );
    let now: Vec<&str> = moved["replicas"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(now.contains(&target.as_str()) && !now.contains(&source.as_str()), "{moved}");
    assert_eq!(now.len(), 3, "{moved}");
    // The source's copy went once the target held it all: the move frees space.
    assert!(u64_field(&moved, "purged_bytes") > 0 && moved["purge_error"].is_null(), "{moved}");
    let packs = c
        .pack_dirs(number(&source))
        .iter()
        .flat_map(|d| walk_files(d))
        .filter(|f| f.extension().is_some_and(|e| e == "pack"))
        .count();
    assert_eq!(packs, 0, "the source keeps no pack file");
    restore_from(&c, number(&target), &data, None);
    // A node that holds the account for the group is never purged.
    let out = c.admin(&["purge", "client", "--from", &target]);
    assert!(!out.status.success(), "purging a replica must be refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("migrate it away"), "{out:?}");

    // The client still names the source first; the source sends it to the target.
    tree(&data, 2, 6);
    let after = c.backup(&config, &data);
    assert_eq!(after["node"], target.as_str(), "{after}");
    let refused = c.coffer_fails(&config, &["--no-failover", "sets"]);
    assert!(refused.contains(&format!("not held on node {source}")), "{refused}");
    let holders: Vec<usize> = now.iter().map(|r| number(r)).collect();
    converged(&c, &holders, 2);
}

#[test]
fn a_directory_of_200k_files_backs_up_restores_reaches_every_replica_and_migrates() {
    let c = Cluster::start(4);
    c.wait_for_group(1, 4);
    let account = c.admin_json(&["account", "info", "client", "--json"])[0].clone();
    let holders: Vec<usize> =
        account["replicas"].as_array().unwrap().iter().map(|r| number(r.as_str().unwrap())).collect();
    let spare = (1..=4).find(|k| !holders.contains(k)).unwrap();
    let data = c.path("huge");
    let many = data.join("many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..200_000 {
        // Empty files: the directory, not the content, is what is large.
        std::fs::File::create(many.join(format!("entry-{i:06}-with-a-longish-name"))).unwrap();
    }
    write(&data.join("many/some-content"), &random_bytes(7, 100_000));
    let first = c.backup("client.toml", &data);
    assert_eq!(u64_field(&first, "files_total"), 200_001, "{first}");
    converged(&c, &holders, 1);
    restore_from(&c, holders[2], &data, None);

    // One more file rewrites one part of the directory, not all 200,000 entries.
    write(&data.join("many/entry-100000-with-a-longish-name-too"), b"x");
    let second = c.backup("client.toml", &data);
    assert!(u64_field(&second, "bytes_stored_new") < 1 << 20, "{second}");
    converged(&c, &holders, 2);
    restore_from(&c, holders[1], &data, None);

    // The whole account moves to the fourth node, and restores from it alone.
    let moved = c.admin_json(&["migrate", "client", "--to", &format!("node{spare}"), "--json"]);
    assert!(moved["purge_error"].is_null(), "{moved}");
    restore_from(&c, spare, &data, None);
}

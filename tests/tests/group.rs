//! The server group: three and five real `coffer-node` processes on
//! 127.0.0.1 keeping one Raft-replicated account database, driven by the
//! real `coffer-admin` and `coffer` binaries.

use std::path::Path;
use std::time::Duration;

use coffer_tests::cluster::{Cluster, wait_for};
use coffer_tests::fstree::{assert_same_tree, random_bytes, write};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);

/// The fields of an account the group decides (not per-replica marker/usage).
fn decided(account: &Value) -> Value {
    let mut a = account.clone();
    // Activity changes with every client's heartbeat; its tests are in operations.rs.
    for per_replica in [
        "marker",
        "live_bytes",
        "pack_bytes",
        "objects",
        "packs",
        "sets",
        "held_here",
        "sets_digest",
        "activity",
    ] {
        a.as_object_mut().unwrap().remove(per_replica);
    }
    a
}

/// Account `name` as node `k` reports it, once it has it.
fn account_on(c: &Cluster, k: usize, name: &str) -> Option<Value> {
    let out = c.admin_at(k, &["account", "info", name, "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).ok()?;
    out.status.success().then(|| decided(&list[0]))
}

/// Waits until every listed node reports `name` exactly as `expected`.
fn converged(c: &Cluster, nodes: &[usize], name: &str, expected: &Value) {
    for &k in nodes {
        wait_for(CONVERGE, &format!("node {k} to hold account {name} as {expected}"), || {
            account_on(c, k, name).filter(|a| a == expected)
        });
    }
}

/// Creates account `name` through node `k`, retrying while the group elects
/// a leader; returns the account.
fn create_through(c: &Cluster, k: usize, name: &str) -> Value {
    wait_for(CONVERGE, &format!("account create {name} through node {k}"), || {
        let out = c.admin_at(k, &["account", "create", name, "--hard", "1GiB"]);
        out.status.success().then_some(())
    });
    account_on(c, k, name).expect("the node that created it shows it")
}

fn leader_index(status: &Value) -> usize {
    let name = status["leader_name"].as_str().unwrap();
    name.trim_start_matches("node").parse::<usize>().unwrap_or_else(|_| panic!("leader {name}"))
}

fn tree(root: &Path, seed: u64) {
    for i in 0..20 {
        write(&root.join(format!("d{}/f{i}", i % 4)), &random_bytes(seed * 100 + i, 5000 + i as usize * 300));
    }
}

#[test]
fn three_nodes_replicate_accounts_and_survive_a_full_restart() {
    let mut c = Cluster::start(3);
    c.wait_for_group(1, 3);

    let bob = create_through(&c, 1, "bob");
    assert_eq!(bob["replicas"].as_array().unwrap().len(), 3, "three replicas: {bob}");
    converged(&c, &[2, 3], "bob", &bob);

    // A change through a follower reaches everyone, with the same fields.
    c.admin_at(3, &["account", "set-limit", "bob", "--soft", "100MiB", "--hard", "200MiB"]);
    let changed = account_on(&c, 3, "bob").unwrap();
    assert_eq!(changed["hard_limit"], 200 << 20);
    converged(&c, &[1, 2], "bob", &changed);

    // Login hands the client the group's nodes, and the client keeps them.
    let data = c.path("data");
    tree(&data, 1);
    c.backup("client.toml", &data);
    let group: Value = serde_json::from_slice(&std::fs::read(c.path("cache/group.json")).unwrap()).unwrap();
    let names: Vec<&str> = group.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3, "{group}");
    for k in 1..=3 {
        assert!(names.contains(&format!("node{k}").as_str()), "{group}");
    }

    // Every node at once, without warning: the database survives.
    for node in &mut c.nodes {
        node.kill();
    }
    for node in &mut c.nodes {
        node.restart();
    }
    c.wait_for_group(2, 3);
    for k in 1..=3 {
        assert_eq!(account_on(&c, k, "bob").as_ref(), Some(&changed), "node {k} after restart");
    }
    // Bob, the newest account, is deleted: his id is still never handed out again.
    let out = c.admin_at(2, &["account", "delete", "bob", "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for k in 1..=3 {
        wait_for(CONVERGE, "bob to be gone", || account_on(&c, k, "bob").is_none().then_some(()));
    }
    let carol = create_through(&c, 2, "carol");
    converged(&c, &[1, 3], "carol", &carol);
    assert!(carol["id"].as_u64() > changed["id"].as_u64(), "ids are never reused: {carol} after {changed}");
}

#[test]
fn a_killed_leader_is_replaced_and_catches_up_when_it_returns() {
    let mut c = Cluster::start(3);
    let status = c.wait_for_group(1, 3);
    let old = leader_index(&status);
    let term = status["term"].as_u64().unwrap();
    c.nodes[old - 1].kill();

    let survivor = if old == 1 { 2 } else { 1 };
    let status = wait_for(CONVERGE, "a new leader", || {
        let s = c.group_status(survivor)?;
        (s["leader"].is_u64() && s["leader_name"] != format!("node{old}")).then_some(s)
    });
    assert!(status["term"].as_u64().unwrap() > term, "a new term: {status}");

    let other = (1..=3).find(|k| *k != old && *k != survivor).unwrap();
    let dave = create_through(&c, other, "dave");
    c.admin_at(survivor, &["account", "freeze", "dave"]);
    let frozen = account_on(&c, survivor, "dave").unwrap();
    assert_eq!(frozen["frozen"], true);

    c.nodes[old - 1].restart();
    c.wait_for_group(old, 3);
    converged(&c, &[old], "dave", &frozen);
    assert_eq!(frozen["id"], dave["id"]);
}

#[test]
fn without_a_quorum_changes_are_refused_and_backups_go_on() {
    let mut c = Cluster::start(3);
    c.wait_for_group(1, 3);
    c.nodes[0].kill();
    c.nodes[1].kill();

    let out = c.admin_at(3, &["account", "create", "erin"]);
    assert!(!out.status.success(), "a create without quorum succeeded");
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("no quorum"), "{message}");

    // Node 3 still holds the quickstart account: back up to it, and restore.
    let config = c.client_for(3);
    let data = c.path("data");
    tree(&data, 2);
    c.backup(&config, &data);
    let restored = c.path("restored");
    c.coffer_ok(&config, &["restore", &data.display().to_string(), &restored.display().to_string()]);
    assert_same_tree(&data, &restored);

    c.nodes[1].restart();
    let erin = create_through(&c, 3, "erin");
    converged(&c, &[2], "erin", &erin);
}

#[test]
fn five_nodes_place_accounts_and_a_late_node_catches_up_by_snapshot() {
    let mut c = Cluster::start_some(5, 4, &["--snapshot-every", "20"]);
    c.wait_for_group(1, 4);
    let mut accounts = Vec::new();
    for i in 0..30 {
        accounts.push(create_through(&c, 1 + i % 4, &format!("user{i}")));
    }
    for a in &accounts {
        let replicas = a["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), 3, "{a}");
        assert!(replicas.contains(&a["primary"]), "{a}");
    }
    // Placement spreads the load: with four nodes, each holds some accounts.
    for k in 1..=4 {
        let name = Value::from(format!("node{k}"));
        assert!(accounts.iter().any(|a| a["replicas"].as_array().unwrap().contains(&name)), "node{k} unused");
    }
    let status = wait_for(CONVERGE, "the leader to purge its log", || {
        c.group_status(1).filter(|s| s["purged_index"].as_u64().unwrap_or(0) > 0)
    });
    assert!(status["snapshot_index"].as_u64().unwrap() > 0, "{status}");

    // Entries below the purged index exist only in snapshots now.
    c.nodes[4].restart();
    c.wait_for_group(5, 5);
    for a in &accounts {
        converged(&c, &[5], a["name"].as_str().unwrap(), a);
    }
}

#[test]
fn a_wiped_node_rejoins_as_a_new_member() {
    let mut c = Cluster::start(3);
    let status = c.wait_for_group(1, 3);
    let old_id =
        status["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "node3").unwrap()["id"].clone();
    c.nodes[2].kill();
    std::fs::remove_dir_all(c.path("node3/data")).unwrap();

    // While the old member is in the group, its name cannot come back.
    let left = c.admin_at_json(1, &["cluster", "leave", "node3", "--json"]);
    eprintln!("after leave: {left}");
    let status = c.wait_for_group(1, 2);
    assert!(status["nodes"].as_array().unwrap().iter().all(|n| n["name"] != "node3"), "{status}");

    c.nodes[2].restart();
    // Its config says to join, but nobody let it in yet.
    std::thread::sleep(Duration::from_secs(3));
    let status = c.wait_for_group(1, 2);
    assert!(status["nodes"].as_array().unwrap().iter().all(|n| n["name"] != "node3"), "{status}");
    assert!(c.nodes[2].log_text().contains("not a member of this group"), "the refusal says why");
    let join_addr = format!("127.0.0.1:{}", c.nodes[0].port);
    c.admin_at_json(3, &["cluster", "join", &join_addr, "--json"]);
    let status = c.wait_for_group(1, 3);
    let new_id =
        status["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "node3").unwrap()["id"].clone();
    assert_ne!(new_id, old_id, "a wiped node must come back under a new id");
    let fred = create_through(&c, 1, "fred");
    converged(&c, &[3], "fred", &fred);
}

#[test]
fn a_group_started_by_hand_with_cluster_init() {
    let mut c = Cluster::start_some(1, 0, &[]);
    // Throw away quickstart's group, as on a machine set up by hand.
    std::fs::remove_dir_all(c.path("node1/data")).unwrap();
    c.nodes[0].restart();
    let out = c.admin_at(1, &["account", "create", "gina"]);
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && message.contains("cluster init"), "{message}");

    let status = c.admin_at_json(1, &["cluster", "init", "--json"]);
    assert_eq!(status["leader_name"], "node1", "{status}");
    let gina = create_through(&c, 1, "gina");
    assert_eq!(gina["replicas"], serde_json::json!(["node1"]));
    let again = c.admin_at(1, &["cluster", "init"]);
    assert!(!again.status.success(), "a second init must be refused");
}

#[test]
fn a_retention_policy_is_replicated_applied_by_the_primary_alone_and_reaches_every_replica() {
    let c = Cluster::start(3);
    c.wait_for_group(1, 3);
    let data = c.path("data");
    let sets: Vec<String> = (1..=4)
        .map(|round| {
            tree(&data, round);
            c.backup("client.toml", &data)["set_id"].as_str().unwrap().to_string()
        })
        .collect();
    c.admin_ok(&["account", "set-retention", "client", "--keep-last", "2", "--keep-daily", "1"]);
    for k in 1..=3 {
        wait_for(CONVERGE, &format!("node {k} to hold the policy"), || {
            account_on(&c, k, "client").filter(|a| a["retention"]["keep_last"] == 2)
        });
    }
    let account = account_on(&c, 1, "client").unwrap();
    assert_eq!(account["retention"]["keep_daily"], 1, "{account}");
    let number = |name: &Value| name.as_str().unwrap().trim_start_matches("node").parse::<usize>().unwrap();
    let primary = number(&account["primary"]);
    let replica = (1..=3).find(|k| *k != primary).unwrap();

    // A dry run lists what would go, newest first, and forgets nothing.
    let dry = c.admin_at_json(primary, &["housekeep", "client", "--dry-run", "--json"]);
    let going: Vec<&str> = dry["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == false)
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(going, [&sets[1], &sets[0]], "{dry}");
    let sets_on = |k: usize| c.replica(k, "client").map(|a| a["sets"].as_u64().unwrap());
    assert_eq!(sets_on(primary), Some(4));

    // Only the primary applies the policy; its tombstones reach the others.
    let elsewhere = c.admin_at_json(replica, &["housekeep", "client", "--json"]);
    assert_eq!(elsewhere["sets_expired"], 0, "{elsewhere}");
    let applied = c.admin_at_json(primary, &["housekeep", "client", "--json"]);
    assert_eq!(applied["sets_expired"], 2, "{applied}");
    for k in 1..=3 {
        wait_for(CONVERGE, &format!("node {k} to hold the two newest sets"), || {
            (sets_on(k) == Some(2)).then_some(())
        });
    }
    let listed = c.coffer_json(&c.client_for(replica), &["--no-failover", "sets", "--json"]);
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [&sets[2], &sets[3]]);
    let target = c.path("restored");
    let args = ["--no-failover", "restore", data.to_str().unwrap(), target.to_str().unwrap()];
    c.coffer_ok(&c.client_for(replica), &args);
    assert_same_tree(&data, &target);
}

#[test]
fn usage_and_status_ask_every_node_and_the_admin_tool_fails_over() {
    let mut c = Cluster::start(3);
    c.wait_for_group(1, 3);
    let data = c.path("data");
    tree(&data, 1);
    c.backup("client.toml", &data);
    for k in 1..=3 {
        wait_for(CONVERGE, &format!("node {k} to hold the set"), || {
            c.replica(k, "client").filter(|a| a["sets"] == 1).map(|_| ())
        });
    }
    let usage = c.admin_json(&["usage", "--json"]);
    let nodes = usage.as_array().unwrap();
    let mut names: Vec<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["node1", "node2", "node3"], "{usage}");
    for node in nodes {
        assert_eq!(node["answered"], true, "{usage}");
        assert_eq!(node["accounts"][0]["sets"], 1, "{usage}");
    }

    c.nodes[2].kill();
    let status = c.admin_json(&["status", "--json"]);
    let node = |name: &str| status.as_array().unwrap().iter().find(|n| n["node"] == name).cloned().unwrap();
    assert_eq!(node("node3")["answered"], false, "{status}");
    assert!(!node("node3")["error"].as_str().unwrap().is_empty(), "{status}");
    assert_eq!(node("node1")["answered"], true, "{status}");
    assert_eq!(node("node2")["answered"], true, "{status}");

    // With node 1 down too, the admin tool goes on through the next node
    // its config lists.
    c.nodes[0].kill();
    let status = c.admin_json(&["status", "--json"]);
    let node2 = status.as_array().unwrap().iter().find(|n| n["node"] == "node2").unwrap();
    assert_eq!(node2["answered"], true, "{status}");
    let info = c.admin_json(&["account", "info", "client", "--json"]);
    assert_eq!(info[0]["sets"], 1, "{info}");
}

//! A first backup of a real tree through a three-node group, its primary
//! SIGKILLed part way: real `coffer-node` processes, real TLS and RocksDB.
//!
//! `failover-bench --tree DIR [--kill-after SECONDS] [--commit-replicas N]`
//! backs DIR up (a language's standard library, say) through node 1, kills
//! node 1 after the given time (default 3), and prints as JSON whether the
//! backup finished on another node, how often it restarted, how long it took,
//! and whether the set restores from node 2 alone identical to DIR. With
//! `--kill-after 0` nothing is killed: the same backup's time, to compare,
//! and with `--commit-replicas 1` the cost of the replicated commit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use coffer_tests::cluster::{COMMAND_TIMEOUT, Cluster, finish_backup, wait_for};
use coffer_tests::fstree::assert_same_tree;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let tree = PathBuf::from(arg("--tree").expect("--tree DIR: the tree to back up"));
    let kill_after: f64 = arg("--kill-after").map_or(3.0, |v| v.parse().expect("seconds"));
    let replicas = arg("--commit-replicas").unwrap_or_else(|| "2".into());
    let mut c = Cluster::start_some(3, 0, &[]);
    for node in &mut c.nodes {
        node.configure(&format!("[group]\ncommit_replicas = {replicas}"));
        node.restart();
    }
    c.wait_for_group(1, 3);
    let start = Instant::now();
    let backup = c.spawn_backup("client.toml", &tree);
    if kill_after > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(kill_after));
        c.nodes[0].kill();
    }
    let report = match finish_backup(backup, COMMAND_TIMEOUT * 4) {
        Ok(report) => report,
        Err(error) => {
            println!("{}", serde_json::json!({"finished": false, "error": error}));
            std::process::exit(1);
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    // With a commit on one node, node 2 gets the set a moment later.
    wait_for(Duration::from_secs(600), "node 2 to hold the set", || {
        c.replica(2, "client").filter(|a| a["sets"].as_u64() >= Some(1)).map(|_| ())
    });
    let target = c.path("restored");
    let restore_start = Instant::now();
    let args = ["--no-failover", "restore", &tree.display().to_string(), &target.display().to_string()];
    c.coffer_ok(&c.client_for(2), &args);
    let restore_seconds = restore_start.elapsed().as_secs_f64();
    assert_same_tree(&tree, &target);
    println!(
        "{}",
        serde_json::json!({
            "finished": true, "node": report["node"], "restarts": report["restarts"],
            "files": report["files_total"], "bytes": report["bytes_total"],
            "replicas": report["replicas"], "replicas_wanted": report["replicas_wanted"],
            "backup_seconds": seconds, "restore_from_node2_seconds": restore_seconds,
            "restored_identical": true,
        })
    );
}

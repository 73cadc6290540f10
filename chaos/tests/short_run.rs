//! A short chaos run is part of the test suite: a fixed seed, twenty
//! rounds of kills, partitions and slow links, and not one committed set lost.

use std::process::Command;
use std::time::Duration;

use coffer_tests::binary;
use coffer_tests::cluster::run_bounded;

#[test]
fn twenty_seeded_rounds_lose_nothing() {
    let mut cmd = Command::new(binary("coffer-chaos"));
    cmd.args(["--seed", "7", "--rounds", "20", "--json"]).env_remove("RUST_LOG");
    let out = run_bounded(cmd, Duration::from_secs(900));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("bad summary ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(summary["rounds_run"], 20, "{summary}");
    assert_eq!(summary["sets_lost"], 0, "{summary}");
    assert_eq!(summary["problems"].as_array().map(Vec::len), Some(0), "{summary}");
    // Most rounds commit a set, and every set is checked on all three nodes.
    let committed = summary["sets_committed"].as_u64().unwrap();
    assert!(committed >= 15, "{summary}");
    assert!(summary["sets_checked"].as_u64().unwrap() >= 3 * committed, "{summary}");
    assert!(out.status.success(), "{summary}");
}

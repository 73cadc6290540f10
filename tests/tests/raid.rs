//! A node keeping its packs on three disc directories: losing one entirely
//! loses nothing, and `coffer-admin raid rebuild` restores it.

use std::path::Path;

use coffer_tests::cluster::Cluster;
use coffer_tests::fstree::{assert_same_tree, random_bytes, write};
use coffer_tests::u64_field;

fn restore(c: &Cluster, from: &Path, to: &Path) {
    c.coffer_ok("client.toml", &["restore", &from.display().to_string(), &to.display().to_string()]);
}

#[test]
fn a_node_survives_losing_one_of_three_discs_and_rebuilds_it() {
    let c = Cluster::start_with(1, &["--discs", "3"]);
    let src = c.path("src");
    for i in 0..6 {
        write(&src.join(format!("f{i}")), &random_bytes(i, 300_000 * (i as usize + 1)));
    }
    write(&src.join("small"), b"small file");
    c.backup("client.toml", &src);
    let usage = c.admin_json(&["usage", "--json"]);
    assert_eq!(usage[0]["discs"].as_array().map(Vec::len), Some(3), "{usage}");

    std::fs::remove_dir_all(c.path("node1/disc2")).unwrap();
    restore(&c, &src, &c.path("out1"));
    assert_same_tree(&src, &c.path("out1"));
    let status = c.admin_json(&["status", "--json"]);
    assert!(u64_field(&status[0], "degraded_reads") > 0, "{status}");

    let check = c.admin(&["raid", "check", "--json"]);
    assert_eq!(check.status.code(), Some(1), "a lost disc must show in the check");
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let damage = report["damage"].as_array().unwrap();
    assert!(!damage.is_empty() && damage.iter().all(|d| d["stripe"] == 1), "{report}");

    let rebuilt = c.admin_json(&["raid", "rebuild", "--json"]);
    assert!(u64_field(&rebuilt, "stripes_rebuilt") >= damage.len() as u64, "{rebuilt}");
    let clean = c.admin_json(&["raid", "check", "--json"]);
    assert_eq!(clean["damage"], serde_json::json!([]), "{clean}");
    assert!(c.path("node1/disc2").read_dir().unwrap().next().is_some());

    // With the rebuilt disc, losing another one is survivable again.
    std::fs::remove_dir_all(c.path("node1/disc1")).unwrap();
    restore(&c, &src, &c.path("out2"));
    assert_same_tree(&src, &c.path("out2"));
}

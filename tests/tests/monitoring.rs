//! A node's Prometheus metrics and health endpoint (`metrics_listen`), read
//! over plain HTTP as Prometheus and a load balancer read them.

use std::time::Duration;

use coffer_tests::cluster::{Cluster, wait_for};
use coffer_tests::fstree::{random_bytes, write};
use coffer_tests::metrics::{get, sample, with_metrics};

#[test]
fn a_node_serves_its_metrics_and_health() {
    let mut c = Cluster::start_some(1, 0, &[]);
    let port = with_metrics(&mut c, 1);
    c.wait_for_group(1, 1);
    let (code, health) = wait_for(Duration::from_secs(30), "/health", || get(port, "/health"));
    assert_eq!(code, 200, "{health}");
    assert!(health.contains(r#""status":"ok""#), "{health}");

    let data = c.path("data");
    for i in 0..8 {
        write(&data.join(format!("f{i}")), &random_bytes(i, 300_000));
    }
    c.backup("client.toml", &data);
    // A login with another store's keys is refused, and counted.
    let stranger = Cluster::start(1);
    std::fs::copy(stranger.path("client.keys"), c.path("wrong.keys")).unwrap();
    let config = std::fs::read_to_string(c.path("client.toml")).unwrap().replace("client.keys", "wrong.keys");
    std::fs::write(c.path("wrong.toml"), config).unwrap();
    c.coffer_fails("wrong.toml", &["backup", &data.display().to_string()]);

    let (code, text) = get(port, "/metrics").expect("metrics answer");
    assert_eq!(code, 200, "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
    let commits = r#"coffer_node_requests_total{service="Store",method="CommitSet",outcome="Ok"}"#;
    assert_eq!(sample(&text, commits), Some(1.0), "{text}");
    let refused = r#"coffer_node_requests_total{service="Store",method="Login",outcome="PermissionDenied"}"#;
    assert!(sample(&text, refused) >= Some(1.0), "{text}");
    assert!(sample(&text, "coffer_node_login_failures_total") >= Some(1.0), "{text}");
    assert!(sample(&text, "coffer_node_received_bytes_total").unwrap() > 2_400_000.0, "{text}");
    assert_eq!(sample(&text, "coffer_raft_leader_known"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "coffer_raft_is_leader"), Some(1.0), "{text}");
    assert_eq!(sample(&text, r#"coffer_account_sets{account="client"}"#), Some(1.0), "{text}");
    assert!(sample(&text, r#"coffer_account_live_bytes{account="client"}"#).unwrap() > 2_400_000.0);
    assert_eq!(sample(&text, "coffer_node_healthy"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "coffer_sync_journal_entries"), Some(0.0), "a group of one owes nobody");

    // Once the account is quiet, the node counts the references of the
    // backup's tree and set, so that a forget finds them counted.
    let counted = wait_for(Duration::from_secs(60), "background counting", || {
        let (_, text) = get(port, "/metrics")?;
        sample(&text, "coffer_objects_counted_total").filter(|n| *n >= 2.0)
    });
    assert_eq!(counted, 2.0, "one tree (of `data`) and one set, each counted once");
    let check = c.admin_json(&["account", "check", "client", "--json"]);
    assert_eq!(check[0]["problems"], serde_json::json!([]), "{check}");
}

#[test]
fn a_node_that_knows_no_group_leader_says_it_is_unhealthy() {
    // Node 2 of a quickstart waits to join node 1, which never starts.
    let mut c = Cluster::start_some(2, 0, &[]);
    let port = with_metrics(&mut c, 2);
    let (code, health) = wait_for(Duration::from_secs(30), "/health", || get(port, "/health"));
    assert_eq!(code, 503, "{health}");
    assert!(health.contains("no group leader"), "{health}");
    let (_, text) = get(port, "/metrics").expect("metrics answer");
    assert_eq!(sample(&text, "coffer_node_healthy"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "coffer_raft_leader_known"), Some(0.0), "{text}");
}

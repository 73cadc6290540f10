//! A node's Prometheus metrics and health endpoint (`metrics_listen`), read
//! over plain HTTP as Prometheus and a load balancer read them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use coffer_tests::cluster::{Cluster, free_ports, wait_for};
use coffer_tests::fstree::{random_bytes, write};

/// GET `path` on 127.0.0.1:`port`: status code and body, or `None` while
/// nothing listens there.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    Some((code, response.split_once("\r\n\r\n")?.1.to_string()))
}

/// The value of the series printed exactly as `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Turns on node `k`'s metrics listener on a free port and starts the node.
fn with_metrics(c: &mut Cluster, k: usize) -> u16 {
    let port = free_ports(1);
    c.nodes[k - 1].configure(&format!("metrics_listen = \"127.0.0.1:{port}\""));
    c.nodes[k - 1].restart();
    port
}

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

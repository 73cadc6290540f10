//! Reading a node's Prometheus metrics (`metrics_listen`) over plain HTTP,
//! as Prometheus and a load balancer read them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::cluster::{Cluster, free_ports};

/// GET `path` on 127.0.0.1:`port`: status code and body, or `None` while
/// nothing listens there.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    Some((code, response.split_once("\r\n\r\n")?.1.to_string()))
}

/// The value of the series printed exactly as `series` (name and labels).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Turns on node `k`'s metrics listener on a free port and starts the node.
pub fn with_metrics(c: &mut Cluster, k: usize) -> u16 {
    let port = free_ports(1);
    c.nodes[k - 1].configure(&format!("metrics_listen = \"127.0.0.1:{port}\""));
    c.nodes[k - 1].restart();
    port
}

/// How many `Store` requests of `method` node (metrics on `port`) answered
/// successfully so far.
pub fn store_requests(port: u16, method: &str) -> u64 {
    let (code, text) = get(port, "/metrics").expect("the node's metrics answer");
    assert_eq!(code, 200, "{text}");
    let series = format!(r#"coffer_node_requests_total{{service="Store",method="{method}",outcome="Ok"}}"#);
    sample(&text, &series).unwrap_or(0.0) as u64
}

//! Account-database write latency and throughput of a three-node server
//! group on loopback: real `coffer-node` processes, real TLS and RocksDB.
//!
//! `group-bench [--writes N] [--concurrency C]` prints the median and p99
//! latency of sequential writes through the leader and through a follower
//! (which forwards to the leader), then writes per second with C writers.

use std::time::{Duration, Instant};

use coffer_proto::tls::{self, TlsFiles};
use coffer_proto::wire::{self, admin_client::AdminClient};
use coffer_tests::cluster::Cluster;
use tonic::transport::Channel;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map_or(default, |v| v.parse().unwrap())
}

async fn admin(c: &Cluster, k: usize) -> AdminClient<Channel> {
    let files = TlsFiles::new(c.path("admin.crt"), c.path("admin.key"), c.path("ca.crt"));
    let channel =
        tls::connect("127.0.0.1", c.nodes[k - 1].port, files.client_config().unwrap()).await.unwrap();
    AdminClient::new(channel)
}

fn set_limits(i: usize) -> wire::SetLimitsRequest {
    let hard = (1 << 30) + i as u64;
    wire::SetLimitsRequest {
        name: "client".into(),
        soft_limit: hard,
        hard_limit: hard,
        request_id: String::new(),
    }
}

async fn sequential(client: &mut AdminClient<Channel>, writes: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(writes);
    for i in 0..writes {
        let start = Instant::now();
        client.set_limits(set_limits(i)).await.expect("write");
        latencies.push(start.elapsed());
    }
    latencies.sort();
    latencies
}

fn report(label: &str, latencies: &[Duration]) {
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{label:<28} median {:>7.2} ms   p99 {:>7.2} ms   ({} writes)",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        latencies.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let writes = arg("--writes", 500);
    let concurrency = arg("--concurrency", 16);
    let c = tokio::task::block_in_place(|| Cluster::start(3));
    let status = tokio::task::block_in_place(|| c.wait_for_group(1, 3));
    let leader: usize = status["leader_name"].as_str().unwrap().trim_start_matches("node").parse().unwrap();
    let follower = if leader == 1 { 2 } else { 1 };

    let mut to_leader = admin(&c, leader).await;
    report("through the leader", &sequential(&mut to_leader, writes).await);
    let mut to_follower = admin(&c, follower).await;
    report("through a follower", &sequential(&mut to_follower, writes).await);

    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let mut client = to_leader.clone();
            tokio::spawn(async move {
                for i in 0..writes / concurrency {
                    client.set_limits(set_limits(t * writes + i)).await.expect("write");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let done = (writes / concurrency) * concurrency;
    let rate = done as f64 / start.elapsed().as_secs_f64();
    println!("{concurrency} concurrent writers        {rate:>7.0} writes/s ({done} writes)");
}

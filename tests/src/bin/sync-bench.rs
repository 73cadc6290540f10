//! Replication figures of a three-node group on loopback: real `coffer-node`
//! processes, real TLS and RocksDB, every node-to-node link through a proxy.
//!
//! `sync-bench [--mib N]` prints:
//! - catch-up: a node misses N MiB of backups (default 1024), comes back, and
//!   fast sync brings it level (MiB/s), beside this disk's fsync'd write rate;
//! - failover: time from SIGKILL of the primary to the client's next
//!   successful commit, idle and in the middle of an upload;
//! - healing: time for markers to converge after a partition of a node with
//!   new backups on the other side.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use coffer_tests::cluster::{COMMAND_TIMEOUT, Cluster, parse_json, wait_bounded, wait_for};
use coffer_tests::fstree::{random_bytes, write};
use coffer_tests::links::Links;
use coffer_tests::u64_field;

const FILE_MIB: usize = 64;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map_or(default, |v| v.parse().unwrap())
}

/// (marker, sets, pack bytes) of the account's replica on node `k`.
fn replica(c: &Cluster, k: usize) -> Option<(u64, u64, u64)> {
    let a = c.replica(k, "client")?;
    Some((u64_field(&a, "marker"), u64_field(&a, "sets"), u64_field(&a, "pack_bytes")))
}

/// Waits until nodes `nodes` agree with node `with` on marker and sets.
fn level(c: &Cluster, with: usize, nodes: &[usize]) {
    wait_for(Duration::from_secs(3600), "replicas to agree", || {
        let reference = replica(c, with)?;
        nodes
            .iter()
            .all(|k| replica(c, *k).is_some_and(|r| (r.0, r.1) == (reference.0, reference.1)))
            .then_some(())
    });
}

fn fill(dir: &Path, seed: u64, mib: usize) {
    for i in 0..mib.div_ceil(FILE_MIB) {
        write(&dir.join(format!("f{i}")), &random_bytes(seed * 1000 + i as u64, FILE_MIB << 20));
    }
}

fn disk_write_rate(dir: &Path, mib: usize) -> f64 {
    let path = dir.join("disk-rate");
    let block = random_bytes(9, 8 << 20);
    let start = Instant::now();
    let mut file = std::fs::File::create(&path).unwrap();
    for _ in 0..mib.div_ceil(8) {
        file.write_all(&block).unwrap();
    }
    file.sync_all().unwrap();
    let rate = (mib.div_ceil(8) * 8) as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(path).unwrap();
    rate
}

fn catch_up(mib: usize) {
    let mut c = Cluster::start(3);
    c.wait_for_group(1, 3);
    c.nodes[2].kill();
    let data = c.path("data");
    fill(&data, 1, mib);
    c.backup("client.toml", &data);
    level(&c, 1, &[2]);
    let bytes = replica(&c, 1).unwrap().2;
    let start = Instant::now();
    c.nodes[2].restart();
    level(&c, 1, &[3]);
    let seconds = start.elapsed().as_secs_f64();
    let mib_done = bytes as f64 / (1 << 20) as f64;
    println!(
        "catch-up      {mib_done:>7.0} MiB missed, level in {seconds:>6.1} s: {:>6.1} MiB/s   (disk write with fsync: {:.0} MiB/s)",
        mib_done / seconds,
        disk_write_rate(c.dir.path(), mib.min(1024))
    );
}

fn failover() {
    let mut c = Cluster::start(3);
    c.wait_for_group(1, 3);
    let data = c.path("data");
    fill(&data, 2, 64);
    c.backup("client.toml", &data);
    level(&c, 1, &[2, 3]);

    write(&data.join("small"), b"one more file");
    let killed = Instant::now();
    c.nodes[0].kill();
    let report = c.backup("client.toml", &data);
    println!(
        "failover idle    SIGKILL of the primary to the next commit: {:>6.2} s (on {})",
        killed.elapsed().as_secs_f64(),
        report["node"]
    );

    c.nodes[0].restart();
    level(&c, 2, &[1]);
    write(&data.join("small"), b"back to the primary");
    c.backup("client.toml", &data);
    fill(&data.join("more"), 3, 256);
    let mut backup = c
        .coffer_command("client.toml", &["backup", "--json", &data.display().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let before = replica(&c, 1).unwrap().2;
    wait_for(COMMAND_TIMEOUT, "the upload to start", || {
        (replica(&c, 1)?.2 > before + (64 << 20)).then_some(())
    });
    let killed = Instant::now();
    c.nodes[0].kill();
    assert!(wait_bounded(&mut backup, COMMAND_TIMEOUT).success(), "backup failed");
    let seconds = killed.elapsed().as_secs_f64();
    let report = parse_json(&String::from_utf8_lossy(&backup.wait_with_output().unwrap().stdout));
    println!(
        "failover upload  SIGKILL mid-upload (256 MiB) to the commit: {seconds:>6.2} s (on {}, {} restart(s))",
        report["node"], report["restarts"]
    );
}

fn healing() {
    let (c, links) = Links::start(3, 1);
    c.wait_for_group(1, 3);
    let client = links.client_config(&c, "bench", 1);
    let data = c.path("data");
    fill(&data, 4, 64);
    c.backup(&client, &data);
    level(&c, 1, &[2, 3]);
    links.partition(&[3], &[1, 2]);
    for round in 0..5 {
        write(&data.join(format!("r{round}")), &random_bytes(50 + round, 4 << 20));
        c.backup(&client, &data);
        std::thread::sleep(Duration::from_secs(4));
    }
    let healed = Instant::now();
    links.heal();
    level(&c, 1, &[3]);
    println!(
        "healing          20 s partition, 5 backups on the majority side: markers agree {:>5.2} s after the heal",
        healed.elapsed().as_secs_f64()
    );
}

fn main() {
    let mib = arg("--mib", 1024);
    catch_up(mib);
    failover();
    healing();
}

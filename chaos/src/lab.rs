//! The group under test: three real `coffer-node` processes whose every
//! link runs through a proxy, one client that reaches them through proxies
//! of its own, and the directory it backs up.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use coffer_tests::cluster::{COMMAND_TIMEOUT, Cluster, parse_json, wait_bounded};
use coffer_tests::links::Links;
use coffer_tests::u64_field;
use serde_json::Value;

pub const NODES: usize = 3;

pub struct Lab {
    pub cluster: Cluster,
    pub links: Links,
    /// The client's configuration file, inside the cluster directory.
    pub client: String,
    pub data: PathBuf,
    alive: [bool; NODES],
}

impl Lab {
    pub fn start() -> Lab {
        let (cluster, links) = Links::start(NODES, 1);
        cluster.wait_for_group(1, NODES);
        let client = links.client_config(&cluster, "chaos", 1);
        let data = cluster.path("data");
        Lab { cluster, links, client, data, alive: [true; NODES] }
    }

    /// Starts `coffer backup --json` of the data directory.
    pub fn spawn_backup(&self) -> Child {
        let data = self.data.display().to_string();
        self.cluster
            .coffer_command(&self.client, &["backup", "--json", &data])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start coffer backup")
    }

    /// Waits for a backup; its report if it succeeded.
    pub fn finish_backup(&self, mut child: Child) -> Result<Value> {
        let status = wait_bounded(&mut child, COMMAND_TIMEOUT);
        let out = child.wait_with_output()?;
        if !status.success() {
            bail!("backup failed ({status}): {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(parse_json(&String::from_utf8_lossy(&out.stdout)))
    }

    pub fn backup(&self) -> Result<Value> {
        self.finish_backup(self.spawn_backup())
    }

    /// SIGKILL node `k` (1-based).
    pub fn kill(&mut self, k: usize) {
        self.cluster.nodes[k - 1].kill();
        self.alive[k - 1] = false;
    }

    /// Starts node `k` again (after [`Lab::kill`]).
    pub fn start_node(&mut self, k: usize) {
        self.cluster.nodes[k - 1].restart();
        self.alive[k - 1] = true;
    }

    /// Deletes a killed node's data: it comes back as a new, empty member.
    pub fn wipe(&self, k: usize) -> Result<()> {
        let data = self.cluster.path(&format!("node{k}/data"));
        std::fs::remove_dir_all(&data).with_context(|| format!("wiping {}", data.display()))
    }

    /// `coffer-admin ARGS` through node `k`.
    pub fn admin(&self, k: usize, args: &[&str]) -> Result<()> {
        let out = self.cluster.admin_at(k, args);
        if !out.status.success() {
            bail!("coffer-admin {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// The number of the node that leads the group, as node `k` sees it.
    pub fn leader(&self, k: usize) -> Option<usize> {
        let status = self.cluster.group_status(k)?;
        status["leader_name"].as_str()?.trim_start_matches("node").parse().ok()
    }

    /// Restarts every killed node.
    pub fn revive(&mut self) {
        for k in 1..=NODES {
            if !self.alive[k - 1] {
                self.cluster.nodes[k - 1].restart();
                self.alive[k - 1] = true;
            }
        }
    }

    /// (marker, sets) of the account's replica on node `k`, asked directly
    /// (the admin does not go through the proxies).
    pub fn replica(&self, k: usize) -> Option<(u64, u64)> {
        self.cluster.replica(k, "client").map(|a| (u64_field(&a, "marker"), u64_field(&a, "sets")))
    }

    /// Restores `location` as backup set `set` from node `k` alone, into `target`.
    pub fn restore(&self, k: usize, set: &str, location: &Path, target: &Path) -> Result<()> {
        let config = self.cluster.client_for(k);
        let (location, target) = (location.display().to_string(), target.display().to_string());
        let args = ["--no-failover", "restore", "--set", set, &location, &target];
        let out = self.cluster.coffer(&config, &args);
        if !out.status.success() {
            bail!("node{k}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// Writes `len` pseudo-random bytes to `rel` under the data directory.
    pub fn write(&self, rel: &str, seed: u64, len: usize) -> Result<()> {
        let path = self.data.join(rel);
        std::fs::create_dir_all(path.parent().expect("under data"))?;
        std::fs::write(&path, coffer_tests::fstree::random_bytes(seed, len))
            .with_context(|| format!("writing {}", path.display()))
    }

    pub fn remove(&self, rel: &str) {
        let _ = std::fs::remove_file(self.data.join(rel));
    }

    /// Lets a started operation run for a while before the fault strikes.
    pub fn pause(ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

//! The group under test: three real `coffer-node` processes whose every
//! link runs through a proxy, one client that reaches them through proxies
//! of its own, and the directory it backs up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use coffer_tests::cluster::{COMMAND_TIMEOUT, Cluster, parse_json, run_bounded, wait_bounded};
use coffer_tests::links::Links;
use coffer_tests::u64_field;
use serde_json::Value;

pub const NODES: usize = 3;

/// The shape of the tree the client backs up: `dirs` directories, nested
/// up to four deep, of `files` small files each.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Workload {
    pub dirs: u64,
    pub files: u64,
}

impl Workload {
    /// The path of file `file` of directory `dir`, relative to the data.
    pub fn file(&self, dir: u64, file: u64) -> String {
        let (a, b, c) = (dir % 7, dir % 5, dir);
        format!("src/a{a}/b{b}/d{c}/f{file}.txt")
    }

    fn create(&self, lab: &Lab) -> Result<()> {
        for dir in 0..self.dirs {
            for file in 0..self.files {
                let seed = dir << 32 | file;
                lab.write(
                    &self.file(dir, file),
                    seed,
                    200 + (seed.wrapping_mul(2654435761) % 24_000) as usize,
                )?;
            }
        }
        Ok(())
    }
}

pub struct Lab {
    pub cluster: Cluster,
    pub links: Links,
    /// The client's configuration file, inside the cluster directory.
    pub client: String,
    pub data: PathBuf,
    pub workload: Workload,
    alive: [bool; NODES],
}

impl Lab {
    pub fn start(workload: Workload) -> Result<Lab> {
        // A commit waits for a second replica; not for long, since a round
        // may well have cut every other one off.
        let (cluster, links) = Links::start_with(NODES, 1, "commit_replicas = 2\ncommit_wait = \"5s\"\n");
        cluster.wait_for_group(1, NODES);
        let client = links.client_config(&cluster, "chaos", 1);
        let data = cluster.path("data");
        let lab = Lab { cluster, links, client, data, workload, alive: [true; NODES] };
        workload.create(&lab)?;
        Ok(lab)
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

    /// Deletes a killed node's index, and checks that the node then refuses
    /// to start, naming the problem, with every pack file kept.
    pub fn lose_index(&self, k: usize) -> Result<()> {
        let index = self.cluster.path(&format!("node{k}/data/index"));
        std::fs::remove_dir_all(&index).with_context(|| format!("removing {}", index.display()))?;
        let packs = self.cluster.pack_bytes(k);
        let mut node = Command::new(coffer_tests::binary("coffer-node"));
        node.arg("--config").arg(&self.cluster.nodes[k - 1].config);
        let out = run_bounded(node, COMMAND_TIMEOUT);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("no index") {
            bail!("node{k} without its index did not refuse to start: {err}");
        }
        if self.cluster.pack_bytes(k) != packs {
            bail!("node{k} without its index changed its pack files");
        }
        Ok(())
    }

    /// `coffer-node rebuild-index` for node `k` (stopped).
    pub fn rebuild_index(&self, k: usize) -> Result<()> {
        let mut node = Command::new(coffer_tests::binary("coffer-node"));
        node.arg("--config").arg(&self.cluster.nodes[k - 1].config).arg("rebuild-index");
        let out = run_bounded(node, COMMAND_TIMEOUT);
        if !out.status.success() {
            bail!("rebuilding node{k}'s index: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
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

    /// (marker, sets, sets digest) of the account's replica on node `k`,
    /// asked directly (the admin does not go through the proxies).
    pub fn replica(&self, k: usize) -> Option<(u64, u64, String)> {
        let a = self.cluster.replica(k, "client")?;
        Some((u64_field(&a, "marker"), u64_field(&a, "sets"), a["sets_digest"].as_str()?.to_string()))
    }

    /// Restores `location` as backup set `set` from node `k` alone, into
    /// `target`, with `cache` (a new directory) as the client's cache.
    pub fn restore(&self, k: usize, set: &str, location: &Path, target: &Path, cache: &Path) -> Result<()> {
        let config = self.cluster.client_for(k);
        let (location, target) = (location.display().to_string(), target.display().to_string());
        let cache = cache.display().to_string();
        let args = ["--no-failover", "--cache", &cache, "restore", "--set", set, &location, &target];
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

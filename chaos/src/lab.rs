//! The group under test: three real `coffer-node` processes whose every
//! link runs through a proxy, the clients that reach them through proxies
//! of their own (each backing up its own tree to its own account), and what
//! they back up.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use coffer_tests::cluster::{COMMAND_TIMEOUT, Cluster, finish_backup, run_bounded};
use coffer_tests::links::Links;
use coffer_tests::u64_field;
use rand::Rng;
use serde_json::Value;

pub const NODES: usize = 3;

/// The file that upload rounds add, big enough for a fault to land mid-upload.
pub const BIG: &str = "big/upload";

/// What the clients back up: `dirs` directories, nested up to four deep, of
/// `files` small files each, and in upload rounds one large file.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Workload {
    pub dirs: u64,
    pub files: u64,
    /// Clients backing up at once, each to an account of its own.
    pub clients: usize,
    /// The largest file an upload round adds, in bytes.
    pub big_file: u64,
}

impl Workload {
    /// The path of file `file` of directory `dir`, relative to the data.
    pub fn file(&self, dir: u64, file: u64) -> String {
        let (a, b, c) = (dir % 7, dir % 5, dir);
        format!("src/a{a}/b{b}/d{c}/f{file}.txt")
    }

    /// The size of a round's large file: between a third of the largest and the largest.
    pub fn big_file_len(&self, rng: &mut impl Rng) -> u64 {
        rng.random_range(self.big_file / 3..=self.big_file)
    }

    fn create(&self, client: &Client, salt: u64) -> Result<()> {
        for dir in 0..self.dirs {
            for file in 0..self.files {
                let seed = salt << 56 | dir << 32 | file;
                let len = 200 + (seed.wrapping_mul(2654435761) % 24_000);
                client.write(&self.file(dir, file), seed, len)?;
            }
        }
        Ok(())
    }
}

/// One client of the lab: its account, its configuration (reaching the
/// nodes through the proxies of its side) and the directory it backs up.
pub struct Client {
    pub account: String,
    pub config: String,
    pub data: PathBuf,
}

impl Client {
    /// Writes `len` pseudo-random bytes to `rel` under the data directory,
    /// a piece at a time (a large file need not fit in memory).
    pub fn write(&self, rel: &str, seed: u64, len: u64) -> Result<()> {
        const PIECE: u64 = 8 << 20;
        let path = self.data.join(rel);
        std::fs::create_dir_all(path.parent().expect("under data"))?;
        let mut file = std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
        for (i, at) in (0..len).step_by(PIECE as usize).enumerate() {
            let piece =
                coffer_tests::fstree::random_bytes(seed.wrapping_add(i as u64), PIECE.min(len - at) as usize);
            file.write_all(&piece).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    pub fn remove(&self, rel: &str) {
        let _ = std::fs::remove_file(self.data.join(rel));
    }
}

pub struct Lab {
    pub cluster: Cluster,
    pub links: Links,
    /// The first client meets each round's fault; the others (on a second
    /// side of client links) back up at the same time.
    pub clients: Vec<Client>,
    pub workload: Workload,
    alive: [bool; NODES],
    /// The other clients' backups under way this round, by client index.
    others: Vec<(usize, Child)>,
    /// Their outcomes once finished.
    finished: Vec<(usize, Result<Value>)>,
}

impl Lab {
    pub fn start(workload: Workload) -> Result<Lab> {
        // A commit waits for a second replica; not for long, since a round
        // may well have cut every other one off.
        // Every node keeps its packs on three discs (RAID with parity).
        let group = "commit_replicas = 2\ncommit_wait = \"5s\"\n";
        let (cluster, links) = Links::start_with(NODES, 2, &["--discs", "3"], group);
        cluster.wait_for_group(1, NODES);
        let main = Client {
            account: "client".into(),
            config: links.client_config(&cluster, "chaos", 1),
            data: cluster.path("data"),
        };
        let mut clients = vec![main];
        for i in 2..=workload.clients {
            let account = format!("chaos{i}");
            cluster.add_account(&account, "unlimited", "unlimited");
            let config = links.account_config(&cluster, &format!("{account}-proxied"), &account, 2);
            cluster.coffer_ok(&config, &["init"]);
            clients.push(Client { account, config, data: cluster.path(&format!("data-{i}")) });
        }
        for (i, client) in clients.iter().enumerate() {
            workload.create(client, i as u64)?;
        }
        let (others, finished) = (Vec::new(), Vec::new());
        Ok(Lab { cluster, links, clients, workload, alive: [true; NODES], others, finished })
    }

    /// The client that meets each round's fault.
    pub fn main(&self) -> &Client {
        &self.clients[0]
    }

    /// Starts `coffer backup --json` of the main client's data.
    pub fn spawn_backup(&self) -> Child {
        self.cluster.spawn_backup(&self.main().config, &self.main().data)
    }

    /// Waits for a backup; its report if it succeeded.
    pub fn finish_backup(&self, child: Child) -> Result<Value> {
        finish_backup(child, COMMAND_TIMEOUT).map_err(anyhow::Error::msg)
    }

    pub fn backup(&self) -> Result<Value> {
        self.finish_backup(self.spawn_backup())
    }

    /// Changes every other client's files and starts its backup, which runs
    /// through the round's fault beside the main client's.
    pub fn start_others(&mut self, rng: &mut impl Rng, round: u64) -> Result<()> {
        for i in 1..self.clients.len() {
            let client = &self.clients[i];
            change_files(client, &self.workload, rng, round)?;
            client.write(BIG, rng.random(), self.workload.big_file_len(rng) / 4)?;
            self.others.push((i, self.cluster.spawn_backup(&client.config, &client.data)));
        }
        Ok(())
    }

    /// Waits for the other clients' backups of this round.
    fn finish_others(&mut self) {
        for (i, child) in std::mem::take(&mut self.others) {
            let outcome = self.finish_backup(child);
            self.finished.push((i, outcome));
        }
    }

    /// The other clients' backups of this round, by client index, each
    /// waited for.
    pub fn others_finished(&mut self) -> Vec<(usize, Result<Value>)> {
        self.finish_others();
        std::mem::take(&mut self.finished)
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
    /// Takes wiped node `k` out of the group and lets an empty node of the
    /// same name in, which joins by itself on start (its `[group] join`).
    pub fn replace_node(&mut self, k: usize) -> Result<()> {
        let name = format!("node{k}");
        self.admin(1, &["cluster", "leave", &name])?;
        self.admin(1, &["cluster", "allow", &name])?;
        self.start_node(k);
        Ok(())
    }

    /// Deletes a killed node's data. The other clients' backups finish
    /// first: a round destroys only data the checker knows the state of.
    pub fn wipe(&mut self, k: usize) -> Result<()> {
        self.finish_others();
        let data = self.cluster.path(&format!("node{k}/data"));
        for dir in self.cluster.pack_dirs(k).iter().chain([&data]) {
            std::fs::remove_dir_all(dir).with_context(|| format!("wiping {}", dir.display()))?;
        }
        Ok(())
    }

    /// `coffer-admin raid ARGS` on node `k`; fails unless it reports clean.
    pub fn raid(&self, k: usize, args: &[&str]) -> Result<()> {
        let out = self.cluster.admin_at(k, &[&["raid"], args].concat());
        if !out.status.success() {
            let said = [out.stdout, out.stderr].concat();
            bail!("node{k}: raid {args:?}: {}", String::from_utf8_lossy(&said).trim());
        }
        Ok(())
    }

    /// Deletes a killed node's index, and checks that the node then refuses
    /// to start, naming the problem, with every pack file kept.
    pub fn lose_index(&self, k: usize) -> Result<()> {
        let packs = self.cluster.committed_pack_bytes(k);
        if packs == 0 {
            bail!("node{k} holds no packs: there is no index to lose");
        }
        let index = self.cluster.path(&format!("node{k}/data/index"));
        std::fs::remove_dir_all(&index).with_context(|| format!("removing {}", index.display()))?;
        let mut node = Command::new(coffer_tests::binary("coffer-node"))
            .arg("--config")
            .arg(&self.cluster.nodes[k - 1].config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while node.try_wait()?.is_none() {
            if std::time::Instant::now() > deadline {
                let _ = node.kill();
                bail!("node{k} started without its index instead of refusing");
            }
            Lab::pause(50);
        }
        let out = node.wait_with_output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("no index") {
            bail!("node{k} without its index did not refuse to start: {err}");
        }
        if self.cluster.committed_pack_bytes(k) != packs {
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
    /// Retried for a while on "no quorum", as an operator would while the
    /// group elects a new leader (its old one may just have been killed).
    pub fn admin(&self, k: usize, args: &[&str]) -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.cluster.admin_at(k, args);
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                return Ok(());
            }
            if !err.contains("no quorum") || std::time::Instant::now() > deadline {
                bail!("coffer-admin {args:?}: {}", err.trim());
            }
            Lab::pause(500);
        }
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

    /// (marker, sets, sets digest) of client `c`'s account on node `k`,
    /// asked directly (the admin does not go through the proxies).
    pub fn replica(&self, k: usize, c: usize) -> Option<(u64, u64, String)> {
        let a = self.cluster.replica(k, &self.clients[c].account)?;
        Some((u64_field(&a, "marker"), u64_field(&a, "sets"), a["sets_digest"].as_str()?.to_string()))
    }

    /// Restores client `c`'s data as backup set `set` from node `k` alone,
    /// into `target`, with `cache` (a new directory) as the client's cache.
    pub fn restore(&self, k: usize, c: usize, set: &str, target: &Path, cache: &Path) -> Result<()> {
        let client = &self.clients[c];
        let config = self.cluster.account_config_for(&client.account, k);
        let (location, target) = (client.data.display().to_string(), target.display().to_string());
        let cache = cache.display().to_string();
        let args = ["--no-failover", "--cache", &cache, "restore", "--set", set, &location, &target];
        let out = self.cluster.coffer(&config, &args);
        if !out.status.success() {
            bail!("node{k}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// Restores the main client's set `set` from node `k` alone, with an
    /// empty cache, into a scratch directory, and removes it: every object
    /// read was verified.
    pub fn restore_checked(&self, k: usize, set: &str) -> Result<()> {
        let (target, cache) =
            (self.cluster.path("scratch/flipped"), self.cluster.path("scratch/flipped-cache"));
        let result = self.restore(k, 0, set, &target, &cache);
        let _ = std::fs::remove_dir_all(&target);
        let _ = std::fs::remove_dir_all(&cache);
        result
    }

    /// One stripe file of one of node `k`'s packs, at random.
    pub fn random_stripe(&self, k: usize, rng: &mut impl rand::Rng) -> Option<PathBuf> {
        let stripes: Vec<PathBuf> = self
            .cluster
            .pack_dirs(k)
            .iter()
            .flat_map(|d| coffer_tests::walk_files(d))
            .filter(|p| p.extension().is_some_and(|e| e == "pack"))
            .collect();
        (!stripes.is_empty()).then(|| stripes[rng.random_range(0..stripes.len())].clone())
    }

    /// Flips one bit of a byte past the stripe's header.
    pub fn flip_byte(&self, stripe: &Path, rng: &mut impl rand::Rng) -> Result<()> {
        let mut bytes = std::fs::read(stripe).with_context(|| format!("reading {}", stripe.display()))?;
        let header = coffer_raid::layout::HEADER_LEN as usize;
        if bytes.len() > header {
            let at = rng.random_range(header..bytes.len());
            bytes[at] ^= 1 << rng.random_range(0..8);
            std::fs::write(stripe, bytes).with_context(|| format!("writing {}", stripe.display()))?;
        }
        Ok(())
    }

    /// Lets a started operation run for a while before the fault strikes.
    pub fn pause(ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// New, changed and removed files in several directories of `client`'s
/// tree, so every round commits a new set that shares most of its trees
/// with the last.
pub fn change_files(client: &Client, workload: &Workload, rng: &mut impl Rng, round: u64) -> Result<()> {
    client.remove(BIG);
    for _ in 0..rng.random_range(1..12) {
        let (dir, file) = (rng.random_range(0..workload.dirs), rng.random_range(0..workload.files + 4));
        client.write(&workload.file(dir, file), rng.random(), rng.random_range(1 << 10..64 << 10))?;
    }
    for _ in 0..rng.random_range(0..3) {
        let (dir, file) = (rng.random_range(0..workload.dirs), rng.random_range(0..workload.files));
        client.remove(&workload.file(dir, file));
    }
    client.write(&format!("rounds/r{}", round % 7), rng.random(), rng.random_range(1 << 10..256 << 10))
}

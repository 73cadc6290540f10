//! The invariant checker: nothing committed is ever lost.
//!
//! Every backup the client reported committed is recorded with a hash of
//! the directory as it was backed up: names, kinds, contents, modes,
//! owners, times and extended attributes. After each round the checker
//! waits, for a bounded time, until the replicas agree on marker, set count
//! and sets digest (so on the set ids themselves), timing it; then it
//! restores the round's new sets from every node, each node alone and with
//! an empty client cache, so nothing the client kept can stand in for what
//! a node lost, and compares hashes. At the end of a run every set is
//! restored from every node again. A set that a replica cannot restore, or
//! restores differently, is a lost set.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::lab::{Lab, NODES};

/// Longest the replicas may take to agree after the faults are healed.
const CONVERGE: Duration = Duration::from_secs(120);

struct Committed {
    /// Which of the lab's clients (so which account and directory).
    client: usize,
    id: String,
    hash: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Tally {
    pub sets_committed: u64,
    /// Restores compared (each set on each node counts once per round).
    pub sets_checked: u64,
    pub sets_lost: u64,
    pub worst_convergence_ms: u64,
    pub problems: Vec<String>,
}

#[derive(Default)]
pub struct Checker {
    committed: Vec<Committed>,
    /// How many of `committed` have been checked since they were added.
    checked: usize,
    pub tally: Tally,
}

impl Checker {
    /// Records a set client `client` reported committed, with the hash of
    /// its data directory as it is now (the client backed it up unchanged).
    pub fn committed(&mut self, lab: &Lab, client: usize, report: &serde_json::Value) -> Result<()> {
        if report["unchanged"] == true {
            return Ok(());
        }
        let Some(id) = report["set_id"].as_str() else { bail!("backup report without a set id: {report}") };
        let hash = tree_hash(&lab.clients[client].data)?;
        self.committed.push(Committed { client, id: id.to_string(), hash });
        self.tally.sets_committed += 1;
        Ok(())
    }

    /// Waits until, for every client's account, every node reports one
    /// marker, one set count and one sets digest; records how long that
    /// took since `since`.
    pub fn converge(&mut self, lab: &Lab, since: Instant) {
        let deadline = Instant::now() + CONVERGE;
        let mut last = Vec::new();
        let agree =
            |replicas: &[Option<_>]| replicas[0].is_some() && replicas.iter().all(|r| *r == replicas[0]);
        while Instant::now() < deadline {
            last = (0..lab.clients.len())
                .map(|c| (1..=NODES).map(|k| lab.replica(k, c)).collect::<Vec<_>>())
                .collect::<Vec<_>>();
            if last.iter().all(|replicas| agree(replicas)) {
                let took = since.elapsed().as_millis() as u64;
                self.tally.worst_convergence_ms = self.tally.worst_convergence_ms.max(took);
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.tally.problems.push(format!("replicas did not converge within {CONVERGE:?}: {last:?}"));
    }

    /// Restores the sets committed since the last call from every node.
    pub fn verify_new(&mut self, lab: &Lab, scratch: &Path) -> Result<()> {
        let from = self.checked;
        self.checked = self.committed.len();
        self.verify(lab, scratch, from)
    }

    /// Restores every set committed in the run from every node.
    pub fn verify_all(&mut self, lab: &Lab, scratch: &Path) -> Result<()> {
        self.verify(lab, scratch, 0)
    }

    fn verify(&mut self, lab: &Lab, scratch: &Path, from: usize) -> Result<()> {
        for k in 1..=NODES {
            for set in &self.committed[from..] {
                let target = scratch.join(format!("restore-{k}-{}", &set.id[..16]));
                let cache = scratch.join(format!("cache-{k}-{}", &set.id[..16]));
                let outcome =
                    lab.restore(k, set.client, &set.id, &target, &cache).and_then(|_| tree_hash(&target));
                let _ = fs::remove_dir_all(&target);
                let _ = fs::remove_dir_all(&cache);
                self.tally.sets_checked += 1;
                let problem = match outcome {
                    Ok(hash) if hash == set.hash => continue,
                    Ok(_) => format!(
                        "node{k}: set {} of {} restores different content or attributes",
                        set.id, lab.clients[set.client].account
                    ),
                    Err(e) => format!("set {} of {}: {e:#}", set.id, lab.clients[set.client].account),
                };
                eprintln!("LOST: {problem}");
                self.tally.sets_lost += 1;
                self.tally.problems.push(problem);
            }
        }
        Ok(())
    }
}

/// A hash of a tree: below the root, every name, kind, mode, owner,
/// modification time, extended attribute, symlink target and file content.
pub fn tree_hash(root: &Path) -> Result<String> {
    let mut hasher = blake3::Hasher::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> =
            fs::read_dir(root.join(&rel))?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let path = root.join(&rel);
            let meta = fs::symlink_metadata(&path)?;
            hasher.update(rel.as_os_str().as_encoded_bytes()).update(b"\0");
            let (mode, uid, gid) = (meta.mode(), meta.uid(), meta.gid());
            hasher.update(&mode.to_le_bytes()).update(&uid.to_le_bytes()).update(&gid.to_le_bytes());
            if !meta.is_dir() {
                // A directory's time moves as the restore fills it; its entries are compared.
                let mtime = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
                hasher.update(&mtime.to_le_bytes());
            }
            for (key, value) in coffer_tests::fstree::xattrs(&path) {
                hasher.update(&key).update(b"=").update(&value).update(b"\0");
            }
            if meta.is_dir() {
                hasher.update(b"d");
                stack.push(rel);
            } else if meta.is_symlink() {
                hasher.update(b"l").update(fs::read_link(&path)?.as_os_str().as_encoded_bytes());
            } else {
                // Streamed: a file may be larger than memory.
                let content = blake3::Hasher::new().update_reader(fs::File::open(&path)?)?.finalize();
                hasher.update(b"f").update(content.as_bytes());
            }
        }
    }
    Ok(hasher.finalize().to_hex().to_string())
}

//! The faults of one round, chosen by the seeded generator.
//!
//! Every round changes a few files, then backs up under one fault: a node
//! SIGKILLed while the client uploads, or while it catches up by fast sync,
//! or while the group's membership changes (a wiped node rejoining); the
//! client cut off from its primary; a node cut off from its peers; all
//! links slowed. Afterwards every link heals and every killed node restarts,
//! so the checker can ask all replicas.

use anyhow::Result;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::Value;

use crate::lab::{Lab, NODES};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Scenario {
    KillPrimaryDuringUpload,
    KillReplicaDuringUpload,
    KillDuringFastSync,
    KillDuringMembershipChange,
    PartitionClientFromPrimary,
    PartitionNode,
    SlowLinks,
}

const ALL: [Scenario; 7] = [
    Scenario::KillPrimaryDuringUpload,
    Scenario::KillReplicaDuringUpload,
    Scenario::KillDuringFastSync,
    Scenario::KillDuringMembershipChange,
    Scenario::PartitionClientFromPrimary,
    Scenario::PartitionNode,
    Scenario::SlowLinks,
];

/// The file that upload rounds add, big enough for a kill to land mid-upload.
const BIG: &str = "big/upload";

impl Scenario {
    pub fn pick(rng: &mut StdRng) -> Scenario {
        ALL[rng.random_range(0..ALL.len())]
    }

    /// Runs the round; returns the backup reports that claimed a commit.
    pub fn run(self, lab: &mut Lab, rng: &mut StdRng, round: u64) -> Result<Vec<Value>> {
        change_files(lab, rng, round)?;
        let mut reports = Vec::new();
        match self {
            Scenario::KillPrimaryDuringUpload | Scenario::KillReplicaDuringUpload => {
                lab.write(BIG, rng.random(), rng.random_range(4 << 20..12 << 20))?;
                let victim =
                    if self == Scenario::KillPrimaryDuringUpload { 1 } else { rng.random_range(2..=NODES) };
                // Strike once the primary has taken part of the upload.
                let (before, part) = (lab.cluster.pack_bytes(1), rng.random_range(64 << 10..4 << 20));
                let backup = lab.spawn_backup();
                wait_until(|| lab.cluster.pack_bytes(1) >= before + part);
                lab.kill(victim);
                reports.push(lab.finish_backup(backup)?);
            }
            Scenario::KillDuringFastSync => {
                // A node misses a backup; once it has started catching up,
                // it or the node sending dies.
                let behind = rng.random_range(2..=NODES);
                let others: Vec<usize> = (1..=NODES).filter(|k| *k != behind).collect();
                lab.write(BIG, rng.random(), rng.random_range(4 << 20..12 << 20))?;
                lab.links.partition(&[behind], &others);
                reports.push(lab.backup()?);
                let before = lab.cluster.pack_bytes(behind);
                lab.links.heal();
                wait_until(|| lab.cluster.pack_bytes(behind) > before);
                Lab::pause(rng.random_range(0..50));
                lab.kill(if rng.random_bool(0.5) { behind } else { 1 });
            }
            Scenario::KillDuringMembershipChange => {
                // A node is replaced by an empty one, which joins the group
                // by itself on start (its `[group] join`); the leader or the
                // newcomer dies while the membership changes.
                let k = rng.random_range(2..=NODES);
                lab.kill(k);
                lab.wipe(k)?;
                lab.admin(1, &["cluster", "leave", &format!("node{k}")])?;
                reports.push(lab.backup()?);
                lab.start_node(k);
                Lab::pause(rng.random_range(0..1500));
                let victim = if rng.random_bool(0.5) { lab.leader(1).unwrap_or(k) } else { k };
                lab.kill(victim);
            }
            Scenario::PartitionClientFromPrimary => {
                lab.links.cut_clients(1, &[1]);
                reports.push(lab.backup()?);
            }
            Scenario::PartitionNode => {
                let alone = rng.random_range(1..=NODES);
                let others: Vec<usize> = (1..=NODES).filter(|k| *k != alone).collect();
                lab.links.partition(&[alone], &others);
                reports.push(lab.backup()?);
            }
            Scenario::SlowLinks => {
                lab.links.delay(std::time::Duration::from_millis(rng.random_range(5..40)));
                reports.push(lab.backup()?);
                lab.links.delay(std::time::Duration::ZERO);
            }
        }
        Ok(reports)
    }
}

/// Polls `done` every 10 ms for up to 20 s: the fault strikes either way.
fn wait_until(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() && std::time::Instant::now() < deadline {
        Lab::pause(10);
    }
}

/// A few new, changed and removed files, so every round commits a new set.
fn change_files(lab: &Lab, rng: &mut StdRng, round: u64) -> Result<()> {
    lab.remove(BIG);
    for i in 0..rng.random_range(1..4) {
        lab.write(&format!("r{}/f{i}", round % 5), rng.random(), rng.random_range(1 << 10..256 << 10))?;
    }
    if round > 2 && rng.random_bool(0.3) {
        lab.remove(&format!("r{}/f0", rng.random_range(0..5)));
    }
    Ok(())
}

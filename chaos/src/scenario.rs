//! The faults of one round, chosen by the seeded generator.
//!
//! Every round changes files across the main client's tree (new, changed
//! and removed files in several directories, sometimes a large file), then
//! backs up under one fault while the other clients back up beside it: a
//! node SIGKILLed while the client uploads (anywhere from the start of the
//! upload to its end), or while it catches up by fast sync, or while the group's
//! membership changes (a wiped node rejoining); the client cut off from its
//! primary, or stopped (SIGSTOP) mid-upload; a node cut off from its peers,
//! or black-holed (everything it sends or is sent vanishes, nothing closes);
//! a node whose index is lost; all links slowed. Afterwards every link heals
//! and every killed node restarts, so the checker can ask all replicas.
//!
//! A fault that waits for its moment (an upload under way, a node catching
//! up) reports whether it struck while that was so: `landed`.

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::Value;

use crate::lab::{BIG, Lab, NODES, change_files};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Scenario {
    KillPrimaryDuringUpload,
    KillReplicaDuringUpload,
    KillDuringFastSync,
    KillDuringMembershipChange,
    PartitionClientFromPrimary,
    PartitionNode,
    SlowLinks,
    ClientStoppedDuringUpload,
    IndexLost,
    NodeLostAfterCommit,
    BlackHoledNode,
    DiscLost,
    BytesFlipped,
}

pub const ALL: [Scenario; 13] = [
    Scenario::DiscLost,
    Scenario::BytesFlipped,
    Scenario::BlackHoledNode,
    Scenario::NodeLostAfterCommit,
    Scenario::ClientStoppedDuringUpload,
    Scenario::IndexLost,
    Scenario::KillPrimaryDuringUpload,
    Scenario::KillReplicaDuringUpload,
    Scenario::KillDuringFastSync,
    Scenario::KillDuringMembershipChange,
    Scenario::PartitionClientFromPrimary,
    Scenario::PartitionNode,
    Scenario::SlowLinks,
];

impl Scenario {
    /// One of `from`, at random.
    pub fn pick(rng: &mut StdRng, from: &[Scenario]) -> Scenario {
        from[rng.random_range(0..from.len())]
    }

    /// Runs the round: the backup reports that claimed a commit, and
    /// whether a timed fault struck while its operation was under way.
    pub fn run(self, lab: &mut Lab, rng: &mut StdRng, round: u64) -> Result<Round> {
        change_files(lab.main(), &lab.workload, rng, round)?;
        let mut reports = Vec::new();
        let mut landed = None;
        match self {
            Scenario::KillPrimaryDuringUpload => {
                let (backup, struck) = upload_under_way(lab, rng, 1, 0.01..0.95)?;
                landed = Some(struck);
                lab.kill(1);
                reports.push(lab.finish_backup(backup)?);
            }
            Scenario::KillReplicaDuringUpload => {
                // A replica receives the set while the commit waits for it
                // (a replicated commit); it dies while it receives.
                let victim = rng.random_range(2..=NODES);
                let (backup, struck) = upload_under_way(lab, rng, victim, 0.0..0.95)?;
                landed = Some(struck);
                lab.kill(victim);
                reports.push(lab.finish_backup(backup)?);
            }
            Scenario::ClientStoppedDuringUpload => {
                let (backup, struck) = upload_under_way(lab, rng, 1, 0.01..0.95)?;
                landed = Some(struck);
                signal(&backup, Signal::SIGSTOP);
                Lab::pause(rng.random_range(500..15_000));
                signal(&backup, Signal::SIGCONT);
                reports.push(lab.finish_backup(backup)?);
            }
            Scenario::NodeLostAfterCommit => {
                // The node that acknowledged a commit loses all its data at
                // once: the set must live on (a replicated commit). The
                // client is kept off node 1, whose config cannot rejoin.
                lab.links.cut_clients(1, &[1]);
                let report = lab.backup()?;
                let k: usize = report["node"]
                    .as_str()
                    .and_then(|n| n.trim_start_matches("node").parse().ok())
                    .filter(|k| *k != 1)
                    .with_context(|| format!("the backup went to an unexpected node: {report}"))?;
                landed = Some(report["replicas"].as_u64() >= Some(2));
                reports.push(report);
                lab.kill(k);
                lab.wipe(k)?;
                lab.replace_node(k)?;
            }
            Scenario::DiscLost => {
                // One disc directory of a node vanishes (a dead disc): reads
                // come from parity, then the operator rebuilds the stripes.
                // It vanishes at once, as a dead disc does: removed in place,
                // it would lose its label and some stripes while the node
                // (writing for the other clients) adds new ones.
                let k = rng.random_range(1..=NODES);
                let disc = lab.cluster.pack_dirs(k)[rng.random_range(0..3)].clone();
                let dead = disc.with_extension("dead");
                std::fs::rename(&disc, &dead).with_context(|| format!("removing {}", disc.display()))?;
                std::fs::remove_dir_all(&dead).with_context(|| format!("removing {}", dead.display()))?;
                reports.push(lab.backup()?);
                lab.raid(k, &["rebuild"])?;
                lab.raid(k, &["check"])?;
            }
            Scenario::BytesFlipped => {
                // A byte of one stripe of a pack rots on a node's disc.
                let k = rng.random_range(1..=NODES);
                if let Some(stripe) = lab.random_stripe(k, rng) {
                    lab.flip_byte(&stripe, rng)?;
                }
                let report = lab.backup()?;
                // The new set shares most of its data with older ones: reading
                // it from that node alone reads the damaged stripe, through parity.
                let set = report["set_id"].as_str().context("backup report without a set")?.to_string();
                let marker = report["marker"].as_u64().unwrap_or(0);
                reports.push(report);
                // The commit waited for two replicas; node k may be the third,
                // which fast sync reaches a moment later.
                wait_until(0, || lab.replica(k, 0).is_some_and(|(m, _, _)| m >= marker));
                lab.restore_checked(k, &set)?;
                lab.raid(k, &["rebuild"])?;
                lab.raid(k, &["check"])?;
            }
            Scenario::IndexLost => {
                // A replica's index directory is lost while it is down: it
                // must refuse to start, keep every pack, and serve again
                // once the operator rebuilt its index.
                let k = rng.random_range(2..=NODES);
                reports.push(lab.backup()?);
                landed = Some(wait_until(0, || lab.cluster.pack_bytes(k) > 0));
                lab.kill(k);
                lab.lose_index(k)?;
                lab.rebuild_index(k)?;
                lab.start_node(k);
            }
            Scenario::KillDuringFastSync => {
                // A node misses a backup; once it has started catching up,
                // it or the node sending dies.
                let behind = rng.random_range(2..=NODES);
                let others: Vec<usize> = (1..=NODES).filter(|k| *k != behind).collect();
                let len = lab.workload.big_file_len(rng);
                lab.main().write(BIG, rng.random(), len)?;
                lab.links.partition(&[behind], &others);
                let report = lab.backup()?;
                // The sender is the node that took the set.
                let sender = report["node"].as_str().and_then(|n| n.trim_start_matches("node").parse().ok());
                reports.push(report);
                let before = lab.cluster.pack_bytes(behind);
                lab.links.heal();
                landed = Some(wait_until(len, || lab.cluster.pack_bytes(behind) > before));
                Lab::pause(rng.random_range(0..50));
                lab.kill(if rng.random_bool(0.5) { behind } else { sender.unwrap_or(1) });
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
                lab.admin(1, &["cluster", "allow", &format!("node{k}")])?;
                lab.start_node(k);
                Lab::pause(rng.random_range(0..1500));
                let victim = if rng.random_bool(0.5) { lab.leader(1).unwrap_or(k) } else { k };
                lab.kill(victim);
            }
            Scenario::PartitionClientFromPrimary => {
                lab.links.cut_clients(1, &[1]);
                reports.push(lab.backup()?);
            }
            Scenario::BlackHoledNode => {
                // Packets to and from a node vanish: nothing is refused, so
                // only timeouts and keep-alives notice.
                let k = rng.random_range(1..=NODES);
                lab.links.black_hole(k);
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
        Ok(Round { reports, landed })
    }
}

/// What one round did.
pub struct Round {
    pub reports: Vec<Value>,
    /// For a timed fault: whether it struck while its operation was under way.
    pub landed: Option<bool>,
}

/// Adds a large file and starts a backup; returns once node `k` has
/// taken a random share (in `share`) of it, with whether the backup was
/// still running then: the moment a timed fault strikes, anywhere from the
/// start of a long upload to its end.
fn upload_under_way(
    lab: &Lab,
    rng: &mut StdRng,
    k: usize,
    share: std::ops::Range<f64>,
) -> Result<(std::process::Child, bool)> {
    let len = lab.workload.big_file_len(rng);
    lab.main().write(BIG, rng.random(), len)?;
    // Three discs hold a byte of a pack and half a byte of parity.
    let part = (len as f64 * 1.5 * rng.random_range(share)) as u64;
    eprintln!("  a file of {len} bytes; the fault strikes once node{k} took {part} stripe bytes more");
    let before = lab.cluster.pack_bytes(k);
    let mut backup = lab.spawn_backup();
    let reached = wait_until(len, || lab.cluster.pack_bytes(k) >= before + part);
    let running = still_running(&mut backup);
    Ok((backup, reached && running))
}

/// Polls `done` every 10 ms, for up to 20 s and as long again as `len`
/// bytes take at 2 MiB/s; whether it came true.
fn wait_until(len: u64, done: impl Fn() -> bool) -> bool {
    let patience = std::time::Duration::from_secs(20 + len / (2 << 20));
    let deadline = std::time::Instant::now() + patience;
    while !done() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        Lab::pause(10);
    }
    true
}

fn still_running(child: &mut std::process::Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

fn signal(child: &std::process::Child, signal: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
}

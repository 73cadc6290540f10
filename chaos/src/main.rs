//! `coffer-chaos`: seeded fault rounds against a real local server group of
//! three `coffer-node` processes and several `coffer` clients backing up at
//! once, with an invariant checker that proves nothing committed was lost.
//!
//! - [`lab`]: the group, its proxied links, the clients and their data.
//! - [`scenario`]: the faults of one round.
//! - [`checker`]: committed sets, marker convergence, restores from every replica.
//!
//! Binaries are found beside this one (`cargo build --workspace --bins`).

mod checker;
mod lab;
mod scenario;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;

use checker::{Checker, Tally};
use lab::{Lab, Workload};
use scenario::Scenario;

/// Kill nodes and cut links while backing up; check that nothing committed is lost.
///
/// Exit status: 0 when no set was lost and the replicas always converged, 1 otherwise.
#[derive(Parser)]
#[command(name = "coffer-chaos", version)]
struct Cli {
    /// Rounds to run.
    #[arg(long, default_value_t = 20)]
    rounds: u64,
    /// Seed of the fault generator: the same seed runs the same faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directories in the backed-up tree (nested up to four deep).
    #[arg(long, default_value_t = 60)]
    dirs: u64,
    /// Small files in each directory.
    #[arg(long, default_value_t = 20)]
    files: u64,
    /// Clients backing up at once, each its own tree to its own account;
    /// the first meets each round's fault, the others back up beside it.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// The largest file an upload round adds ("12MiB", "3GiB"); each round's
    /// is between a third of this and this, and a timed fault strikes at a
    /// random point of its upload.
    #[arg(long, default_value = "12MiB", value_parser = coffer_proto::config::human_size::parse)]
    big_file: u64,
    /// Run only these scenarios (repeatable; by name, e.g. DiscLost).
    #[arg(long = "scenario", value_parser = parse_scenario)]
    scenarios: Vec<Scenario>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_scenario(name: &str) -> Result<Scenario, String> {
    scenario::ALL.iter().copied().find(|s| format!("{s:?}") == name).ok_or_else(|| {
        let names: Vec<String> = scenario::ALL.iter().map(|s| format!("{s:?}")).collect();
        format!("no scenario `{name}`; there are {}", names.join(", "))
    })
}

#[derive(serde::Serialize)]
struct Summary {
    seed: u64,
    rounds_run: u64,
    workload: Workload,
    backups_failed: u64,
    /// Per scenario: rounds run, and for timed faults how many struck while
    /// their operation was under way.
    scenarios: BTreeMap<String, Faults>,
    #[serde(flatten)]
    tally: Tally,
}

#[derive(Default, serde::Serialize)]
struct Faults {
    rounds: u64,
    landed: u64,
}

fn main() -> Result<ExitCode> {
    coffer_proto::pipe::end_quietly_on_closed_pipe();
    let cli = Cli::parse();
    let summary = run(&cli)?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let t = &summary.tally;
        println!(
            "seed {}: {} rounds run, {} sets committed, {} sets checked, {} sets lost, \
             {} backups failed, worst convergence {:.1}s",
            summary.seed,
            summary.rounds_run,
            t.sets_committed,
            t.sets_checked,
            t.sets_lost,
            summary.backups_failed,
            t.worst_convergence_ms as f64 / 1000.0
        );
        for p in &t.problems {
            println!("problem: {p}");
        }
    }
    Ok(if summary.tally.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn run(cli: &Cli) -> Result<Summary> {
    let mut rng = StdRng::seed_from_u64(cli.seed);
    let workload =
        Workload { dirs: cli.dirs, files: cli.files, clients: cli.clients.max(1), big_file: cli.big_file };
    let mut lab = Lab::start(workload)?;
    let scratch = lab.cluster.path("scratch");
    std::fs::create_dir_all(&scratch)?;
    let mut checker = Checker::default();
    let mut backups_failed = 0;
    let mut scenarios: BTreeMap<String, Faults> = BTreeMap::new();
    for round in 1..=cli.rounds {
        let from = if cli.scenarios.is_empty() { &scenario::ALL[..] } else { &cli.scenarios };
        let scenario = Scenario::pick(&mut rng, from);
        eprintln!("round {round}: {scenario:?}");
        let faults = scenarios.entry(format!("{scenario:?}")).or_default();
        faults.rounds += 1;
        lab.start_others(&mut rng, round)?;
        let main = scenario.run(&mut lab, &mut rng, round).map(|outcome| {
            faults.landed += u64::from(outcome.landed.unwrap_or(false));
            outcome.reports.into_iter().map(|report| (0, Ok(report))).collect::<Vec<_>>()
        });
        let outcomes = match main {
            Ok(reports) => reports,
            Err(e) => vec![(0, Err(e))],
        };
        for (client, outcome) in outcomes.into_iter().chain(lab.others_finished()) {
            match outcome {
                Ok(report) => checker.committed(&lab, client, &report)?,
                Err(e) => {
                    // Every fault here is one Coffer must ride out: a backup
                    // that failed, or a fault that could not be set up, is a problem.
                    let who = &lab.clients[client].account;
                    let problem = format!("round {round} ({scenario:?}), account {who}: {e:#}");
                    eprintln!("{problem}");
                    checker.tally.problems.push(problem);
                    backups_failed += 1;
                }
            }
        }
        let healed = Instant::now();
        lab.links.heal();
        lab.revive();
        checker.converge(&lab, healed);
        checker.verify_new(&lab, &scratch)?;
    }
    checker.verify_all(&lab, &scratch)?;
    Ok(Summary {
        seed: cli.seed,
        rounds_run: cli.rounds,
        workload,
        backups_failed,
        scenarios,
        tally: checker.tally,
    })
}

//! `daemon-bench`: the client daemon in lazy mode over a large tree, with
//! `minimum_file_age = 0`: its resident memory and CPU while it watches and
//! nothing changes, and the time from a file's change to the commit of the
//! set that holds it.
//!
//! ```sh
//! cargo build --release --bins && cargo run --release -p coffer-tests --bin daemon-bench -- [--files 100000] [--changes 10]
//! ```

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coffer_tests::Env;
use coffer_tests::cluster::wait_for;
use coffer_tests::fstree::write;
use serde_json::Value;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |s| s.parse().unwrap())
    };
    let (files, changes) = (arg("--files", 100_000), arg("--changes", 10));
    let env = Env::new();
    let src = env.path("src");
    let per_dir = 100;
    for i in 0..files {
        write(
            &src.join(format!("d{:03}/e{:02}/f{i}.txt", i / (per_dir * 10) % 1000, i / per_dir % 10)),
            format!("file {i}\n").as_bytes(),
        );
    }
    let cfg = env.path("client.toml");
    let text = format!(
        "[[location]]\nname = \"src\"\npath = \"{}\"\n\n[daemon]\nminimum_file_age = \"0s\"\nupdate_interval = \"24h\"\n",
        src.display()
    );
    fs::write(&cfg, text).unwrap();
    println!("tree: {files} files in {} directories", files.div_ceil(per_dir));

    let started = Instant::now();
    let mut daemon = env
        .command()
        .arg("--config")
        .arg(&cfg)
        .args(["daemon", "--foreground"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let ctl = |args: &[&str]| -> Option<Value> {
        let out = env.command().arg("--config").arg(&cfg).arg("ctl").args(args).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let status = || ctl(&["status", "--json"]);
    let first = wait_for(Duration::from_secs(3600), "the first set", || {
        status()?["last_set"].as_str().map(String::from)
    });
    println!("first backup by the daemon: {:.1} s", started.elapsed().as_secs_f64());

    let pid = daemon.id();
    let (cpu0, t0) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(30));
    let idle_cpu = (cpu_ticks(pid) - cpu0) as f64 / ticks_per_second() / t0.elapsed().as_secs_f64();
    let rss = rss_kib(pid);
    println!(
        "idle, watching: {:.2}% of a core, resident {:.1} MiB ({:.0} bytes per file)",
        idle_cpu * 100.0,
        rss as f64 / 1024.0,
        rss as f64 * 1024.0 / files as f64
    );

    let mut latencies = Vec::new();
    let mut last = first;
    for n in 0..changes {
        let changed = Instant::now();
        write(&src.join(format!("d000/e00/f{n}.txt")), format!("changed {n}\n").as_bytes());
        last = wait_for(Duration::from_secs(600), "the change's set", || {
            status()?["last_set"].as_str().filter(|s| *s != last).map(String::from)
        });
        latencies.push(changed.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(200));
    }
    latencies.sort_by(f64::total_cmp);
    if !latencies.is_empty() {
        println!(
            "change to committed set ({changes} changes): median {:.2} s, worst {:.2} s",
            latencies[latencies.len() / 2],
            latencies[latencies.len() - 1]
        );
    }
    println!("resident after the changes: {:.1} MiB", rss_kib(pid) as f64 / 1024.0);
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = daemon.wait();
}

/// User + system CPU of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

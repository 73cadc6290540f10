//! `compare-bench`: Coffer beside restic and borg on the same tree, in one
//! run, phase by phase, with the ratios to restic.
//!
//! ```sh
//! scripts/install && target/release/compare-bench [--tree PATH | --size-mib N | --files N] \
//!     [--dir /tmp] [--tools coffer-node,coffer-local,restic,borg,coffer-3x1,coffer-3x2] \
//!     [--no-restore | --restore-rounds N]
//! ```
//! Build it with `--release` (the binaries beside it are the ones run).
//! The tree is a copy of `--tree` (a real one), or generated: `--size-mib`
//! half large files and half small ones, or `--files` tiny files (per-file
//! costs). Phases: first backup, no-change rerun, 1% of the files appended
//! to (1 KiB each), full restore (checked: same file count and bytes; with
//! `--restore-rounds N`, the median of N restores per tool, taken in turn). For
//! each: wall time, the command's peak resident memory, what the
//! repository grew by (and of that, its `index` directory). restic and borg are installed from the distribution
//! when missing, and skipped when that fails.
//!
//! Tools: `coffer-node` is one `coffer-node` on loopback (TLS, gRPC);
//! `coffer-3xN` a group of three whose commits wait for N replicas.

use std::any::Any;
use std::cell::Cell;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Instant;

use coffer_tests::cluster::Cluster;
use coffer_tests::fstree::{generate_many, generate_mixed, random_bytes};
use coffer_tests::{Env, walk_files};

const PASSWORD: &str = "compare-bench";
const DEFAULT_TOOLS: &str = "coffer-node,coffer-local,restic,borg";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if let Some(dir) = arg("--dir") {
        // SAFETY: set before any thread starts.
        unsafe { std::env::set_var("TMPDIR", dir) };
    }
    let work = tempfile::tempdir().expect("work directory");
    let src = work.path().join("src");
    let description = make_tree(&src, &arg);
    let (files, bytes) = totals(&src);
    println!("tree: {description}: {files} files, {:.1} MiB", bytes as f64 / (1 << 20) as f64);

    let names = arg("--tools").unwrap_or_else(|| DEFAULT_TOOLS.into());
    let tools: Vec<Tool> = names.split(',').filter_map(|name| Tool::start(name, work.path())).collect();
    let mut results: Vec<Vec<Measure>> = tools.iter().map(|_| Vec::new()).collect();

    for (tool, out) in tools.iter().zip(&mut results) {
        out.push(tool.measure(tool.backup(&src)));
        out.push(tool.measure(tool.backup(&src)));
        eprintln!("{}: first backup and rerun done", tool.name);
    }
    append_to_some(&src, 100);
    let (files, bytes) = totals(&src);
    for (tool, out) in tools.iter().zip(&mut results) {
        out.push(tool.measure(tool.backup(&src)));
    }
    let rounds = if args.iter().any(|a| a == "--no-restore") { 0 } else { restore_rounds(&arg) };
    let mut restores: Vec<Vec<Measure>> = tools.iter().map(|_| Vec::new()).collect();
    // Round by round, every tool in turn: the disc's writeback of one
    // restore slows the next, whichever tool that is.
    for _ in 0..rounds {
        for (tool, tries) in tools.iter().zip(&mut restores) {
            let dest = work.path().join(format!("restore-{}", tool.name));
            fs::create_dir_all(&dest).unwrap();
            tries.push(tool.measure(tool.restore(&src, &dest)));
            let restored = totals(&tool.restored_root(&src, &dest));
            assert_eq!(
                restored,
                (files, bytes),
                "{} restored other files or bytes than the tree's",
                tool.name
            );
            fs::remove_dir_all(&dest).unwrap();
        }
    }
    for (out, mut tries) in results.iter_mut().zip(restores).filter(|(_, t)| !t.is_empty()) {
        tries.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        out.push(tries[tries.len() / 2]);
    }
    print_table(&tools, &results, files);
}

/// `--restore-rounds N`: restores per tool, of which the median is shown.
fn restore_rounds(arg: &dyn Fn(&str) -> Option<String>) -> usize {
    arg("--restore-rounds").map_or(1, |n| n.parse().expect("--restore-rounds takes a number")).max(1)
}

/// One phase's figures.
#[derive(Clone, Copy)]
struct Measure {
    seconds: f64,
    peak_kib: u64,
    grew: u64,
    /// Of which in a directory named `index` (Coffer's RocksDB, whose
    /// write-ahead log holds each backup's changes until its next flush;
    /// restic's index).
    grew_index: u64,
}

const PHASES: [&str; 4] = ["first backup", "no-change rerun", "1% of files appended", "full restore"];

fn make_tree(src: &Path, arg: &dyn Fn(&str) -> Option<String>) -> String {
    if let Some(tree) = arg("--tree") {
        let status = Command::new("cp").arg("-a").arg(&tree).arg(src).status().expect("run cp");
        assert!(status.success(), "could not copy {tree}");
        return tree;
    }
    if let Some(count) = arg("--files") {
        generate_many(src, count.parse().expect("--files N"));
        return format!("{count} generated files of 100-1100 bytes");
    }
    let mib: u64 = arg("--size-mib").map_or(512, |s| s.parse().expect("--size-mib N"));
    generate_mixed(src, mib << 20);
    format!("{mib} MiB generated, half in 64 MiB files, half in 4-60 KiB files")
}

/// Regular files and their bytes under `root`.
fn totals(root: &Path) -> (u64, u64) {
    walk_files(root)
        .iter()
        .filter_map(|p| fs::symlink_metadata(p).ok())
        .filter(|m| m.is_file())
        .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
}

/// Appends 1 KiB to every `every`th file (in path order).
fn append_to_some(root: &Path, every: usize) {
    let mut paths: Vec<PathBuf> =
        walk_files(root).into_iter().filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file())).collect();
    paths.sort();
    for (n, path) in paths.iter().enumerate().filter(|(n, _)| n % every == 0) {
        let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(&random_bytes(n as u64 + 7, 1024)).unwrap();
    }
}

/// A backup program with its repository.
struct Tool {
    name: String,
    kind: Kind,
    /// What the repository's growth is measured on.
    repo: PathBuf,
    /// The program with what every call needs (repository, keys, cache).
    base: Box<dyn Fn() -> Command>,
    backups: Cell<u32>,
    /// The store nodes or environment, kept alive while the tool is used.
    _holds: Box<dyn Any>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Coffer,
    Restic,
    Borg,
}

impl Tool {
    fn start(name: &str, work: &Path) -> Option<Tool> {
        let repo = work.join(format!("repo-{name}"));
        let tool = match name {
            "coffer-local" => {
                let env = Env::new();
                let store = env.store();
                let env = Rc::new(env);
                let held = env.clone();
                Tool::new(name, Kind::Coffer, store, Box::new(move || env.command()), Box::new(held))
            }
            "coffer-node" => Tool::coffer_group(name, 1, 1),
            "coffer-3x1" => Tool::coffer_group(name, 3, 1),
            "coffer-3x2" => Tool::coffer_group(name, 3, 2),
            "restic" => {
                installed("restic", "version", "restic")?;
                let (r, cache) = (repo.clone(), work.join("restic-cache"));
                let base = Box::new(move || {
                    let mut cmd = Command::new("restic");
                    cmd.arg("--repo").arg(&r).arg("--cache-dir").arg(&cache).arg("--quiet");
                    cmd.env("RESTIC_PASSWORD", PASSWORD);
                    cmd
                });
                let tool = Tool::new(name, Kind::Restic, repo, base, Box::new(()));
                run(tool.command(&["init"]));
                tool
            }
            "borg" => {
                installed("borg", "--version", "borgbackup")?;
                let base_dir = work.join("borg-base");
                let base = Box::new(move || {
                    let mut cmd = Command::new("borg");
                    cmd.env("BORG_PASSPHRASE", PASSWORD).env("BORG_BASE_DIR", &base_dir);
                    cmd
                });
                let tool = Tool::new(name, Kind::Borg, repo.clone(), base, Box::new(()));
                run(tool.command(&["init", "--encryption=repokey", repo.to_str().unwrap()]));
                tool
            }
            other => panic!("unknown tool `{other}`"),
        };
        Some(tool)
    }

    fn new(
        name: &str,
        kind: Kind,
        repo: PathBuf,
        base: Box<dyn Fn() -> Command>,
        holds: Box<dyn Any>,
    ) -> Tool {
        Tool { name: name.into(), kind, repo, base, backups: Cell::new(0), _holds: holds }
    }

    /// A group of `nodes` store nodes whose commits wait for `replicas`.
    fn coffer_group(name: &str, nodes: u16, replicas: usize) -> Tool {
        let mut cluster = Cluster::start_some(nodes, 0, &[]);
        for node in &mut cluster.nodes {
            node.configure(&format!("[group]\ncommit_replicas = {replicas}"));
            node.restart();
        }
        cluster.wait_for_group(1, nodes as usize);
        let config = cluster.path("client.toml");
        let base = Box::new(move || {
            let mut cmd = Command::new(coffer_tests::binary("coffer"));
            cmd.arg("--config").arg(&config).env_remove("RUST_LOG");
            cmd
        });
        // The node the client writes to (node 1, its primary).
        let repo = cluster.path("node1");
        Tool::new(name, Kind::Coffer, repo, base, Box::new(cluster))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = (self.base)();
        cmd.args(args);
        cmd
    }

    fn archive(&self) -> String {
        format!("{}::b{}", self.repo.display(), self.backups.get())
    }

    fn backup(&self, src: &Path) -> Command {
        self.backups.set(self.backups.get() + 1);
        let src = src.to_str().unwrap();
        match self.kind {
            Kind::Coffer | Kind::Restic => self.command(&["backup", src]),
            Kind::Borg => self.command(&["create", &self.archive(), src]),
        }
    }

    fn restore(&self, src: &Path, dest: &Path) -> Command {
        let (src, dest_text) = (src.to_str().unwrap(), dest.to_str().unwrap());
        match self.kind {
            Kind::Coffer => self.command(&["restore", src, dest_text]),
            Kind::Restic => self.command(&["restore", "latest", "--target", dest_text]),
            Kind::Borg => {
                let mut cmd = self.command(&["extract", &self.archive()]);
                cmd.current_dir(dest);
                cmd
            }
        }
    }

    /// Where the tree's own contents land under a restore's destination.
    fn restored_root(&self, src: &Path, dest: &Path) -> PathBuf {
        match self.kind {
            Kind::Coffer => dest.to_path_buf(),
            Kind::Restic | Kind::Borg => dest.join(src.strip_prefix("/").unwrap()),
        }
    }

    /// Runs a phase's command, with what the repository grew by.
    fn measure(&self, cmd: Command) -> Measure {
        let (before, before_index) = (du(&self.repo), du_index(&self.repo));
        let (seconds, peak_kib) = run(cmd);
        let grew = du(&self.repo).saturating_sub(before);
        Measure { seconds, peak_kib, grew, grew_index: du_index(&self.repo).saturating_sub(before_index) }
    }
}

/// Whether `program` is there (it answers `version`), installing `package` if not.
fn installed(program: &str, version: &str, package: &str) -> Option<()> {
    let present = || Command::new(program).arg(version).output().is_ok_and(|o| o.status.success());
    if !present() {
        eprintln!("{program} is missing; installing {package}");
        let _ = Command::new("apt-get").args(["install", "-y", "-qq", package]).status();
    }
    if present() {
        return Some(());
    }
    eprintln!("{program} could not be installed; skipped");
    None
}

/// Runs a command to its end; its wall time and peak resident memory (KiB).
#[expect(clippy::zombie_processes, reason = "reaped by wait4, which also reports its peak memory")]
fn run(mut cmd: Command) -> (f64, u64) {
    // What earlier phases left for the disc to write is not this one's cost.
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let log = tempfile::NamedTempFile::new().unwrap();
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(File::create(log.path()).unwrap());
    let started = Instant::now();
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: waits for our own child, with valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(pid, child.id() as i32, "wait4 failed");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    assert!(ok, "{cmd:?} failed: {}", fs::read_to_string(log.path()).unwrap_or_default());
    (seconds, usage.ru_maxrss as u64)
}

/// Bytes a directory's files take.
fn du(dir: &Path) -> u64 {
    walk_files(dir).iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum()
}

/// Bytes the files under `dir` take that are in a directory named `index`.
fn du_index(dir: &Path) -> u64 {
    let in_index =
        |p: &PathBuf| p.strip_prefix(dir).is_ok_and(|rel| rel.components().any(|c| c.as_os_str() == "index"));
    walk_files(dir).iter().filter(|p| in_index(p)).filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum()
}

fn print_table(tools: &[Tool], results: &[Vec<Measure>], files: u64) {
    let restic = tools.iter().position(|t| t.kind == Kind::Restic);
    print!("\n| phase |");
    for tool in tools {
        print!(" {} |", tool.name);
    }
    println!("\n|---|{}", "---|".repeat(tools.len()));
    for (p, phase) in PHASES.iter().enumerate().filter(|(p, _)| *p < results[0].len()) {
        print!("| {phase} |");
        for (t, measures) in results.iter().enumerate() {
            let m = measures[p];
            let ratio = restic.filter(|&r| r != t).map(|r| m.seconds / results[r][p].seconds);
            let ratio = ratio.map(|r| format!(", {r:.2}× restic")).unwrap_or_default();
            let index = (m.grew_index > 0).then(|| format!(" (index +{:.2})", m.grew_index as f64 / 1e6));
            let grew = match p {
                1 | 2 => format!(", +{:.2} MB{}", m.grew as f64 / 1e6, index.unwrap_or_default()),
                _ => String::new(),
            };
            print!(" {:.2} s{ratio}{grew} |", m.seconds);
        }
        println!();
    }
    print!("| peak memory, first backup |");
    for measures in results {
        let kib = measures[0].peak_kib;
        print!(" {:.0} MiB ({:.0} B/file) |", kib as f64 / 1024.0, kib as f64 * 1024.0 / files as f64);
    }
    print!("\n| repository |");
    for tool in tools {
        print!(" {:.1} MB |", du(&tool.repo) as f64 / 1e6);
    }
    println!();
}

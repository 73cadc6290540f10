//! Real store nodes on 127.0.0.1 for integration tests.
//!
//! [`Cluster::start`] runs `coffer-admin quickstart` in a temporary directory
//! and starts each `coffer-node` process, waiting until it accepts
//! connections. Every command runs with a time limit; nodes are killed when
//! the cluster is dropped, so a failing test leaves no process behind.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use coffer_raid::discset::TEMP_SUFFIX as RAID_TEMP_SUFFIX;
use serde_json::Value;

use crate::binary;

/// Longest any single command may run before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs a command to completion, killing it (and failing) past the timeout.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("wait for command"),
        Err(_) => {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
            panic!("{cmd:?} ran longer than {timeout:?}");
        }
    }
}

/// Waits (bounded) for a backup from [`Cluster::spawn_backup`]: its report,
/// or what it said on failing.
pub fn finish_backup(mut child: Child, timeout: Duration) -> Result<Value, String> {
    let status = wait_bounded(&mut child, timeout);
    let out = child.wait_with_output().expect("backup output");
    if !status.success() {
        return Err(format!("backup failed ({status}): {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(parse_json(&String::from_utf8_lossy(&out.stdout)))
}

/// Waits for a child process, killing it (and failing) past the timeout.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} ran longer than {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free TCP port on 127.0.0.1 with `count - 1` free ones after it.
///
/// Ports come from 20000..32000, below Linux's ephemeral range, so that a
/// node started later cannot find its port taken by some process's outgoing
/// connection; the start is spread by process id and a counter, so tests
/// running side by side (threads or processes) do not pick the same run.
/// Runs start on a grid of [`RUN`] ports whatever `count` is: a free-looking
/// run may be one another test picked and has not started listening on, so
/// two picks of one process must never overlap.
pub fn free_ports(count: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    const RUN: u32 = 32;
    assert!(u32::from(count) <= RUN, "at most {RUN} ports in a run");
    for _ in 0..500 {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
        let slot = (std::process::id() * 97 / RUN + step) % (SPAN / RUN);
        let base = (LOW + slot * RUN) as u16;
        if (base..base + count).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no run of {count} free ports on 127.0.0.1");
}

/// One running `coffer-node`.
pub struct NodeProcess {
    pub config: PathBuf,
    /// The loopback address it listens on: 127.0.0.1, or ::1.
    pub host: String,
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    /// Sets `settings` (a TOML document, e.g. `idle_writer = "3s"` or
    /// `[group]\ncommit_wait = "5s"`) in the node's config file, for its
    /// next start; tables are merged key by key.
    pub fn configure(&self, settings: &str) {
        fn merge(into: &mut toml::Table, from: toml::Table) {
            for (key, value) in from {
                match (into.get_mut(&key), value) {
                    (Some(toml::Value::Table(old)), toml::Value::Table(new)) => merge(old, new),
                    (_, value) => drop(into.insert(key, value)),
                }
            }
        }
        let mut config: toml::Table = std::fs::read_to_string(&self.config).unwrap().parse().unwrap();
        merge(&mut config, settings.parse().expect("settings are TOML"));
        std::fs::write(&self.config, toml::to_string(&config).unwrap()).unwrap();
    }

    /// `coffer://HOST:PORT` of this node.
    pub fn url(&self) -> String {
        coffer_proto::StoreUrl::Remote { host: self.host.clone(), port: self.port }.to_string()
    }

    /// Starts the node (again) and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "node already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(binary("coffer-node"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start coffer-node");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect((self.host.as_str(), self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("coffer-node exited with {status}; log:\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "coffer-node did not listen within 60s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGHUP: the node rereads its TLS files.
    pub fn hangup(&self) {
        let pid = self.child.as_ref().expect("node running").id() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGHUP).unwrap();
    }

    /// SIGKILL: the node gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM)
            .unwrap();
        wait_bounded(&mut child, Duration::from_secs(30))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A quickstart directory with its nodes running.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProcess>,
}

impl Cluster {
    pub fn start(nodes: u16) -> Cluster {
        Cluster::start_with(nodes, &[])
    }

    /// Like [`Cluster::start`], with extra `quickstart` flags (e.g. `--discs 3`).
    pub fn start_with(nodes: u16, quickstart: &[&str]) -> Cluster {
        Cluster::start_some(nodes, nodes, quickstart)
    }

    /// Writes a quickstart for `nodes` nodes and starts the first `running`.
    pub fn start_some(nodes: u16, running: u16, quickstart: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let base = free_ports(nodes);
        let out = run_bounded(
            {
                let mut c = Command::new(binary("coffer-admin"));
                c.args(["quickstart", "--json", "--account", "client", "--dir"])
                    .arg(dir.path())
                    .args(["--nodes", &nodes.to_string(), "--base-port", &base.to_string()])
                    .args(quickstart);
                c
            },
            COMMAND_TIMEOUT,
        );
        assert!(out.status.success(), "quickstart failed: {}", String::from_utf8_lossy(&out.stderr));
        let host = quickstart.windows(2).find(|w| w[0] == "--address").map_or("127.0.0.1", |w| w[1]);
        let nodes = (1..=nodes)
            .map(|k| {
                let config = dir.path().join(format!("node{k}.toml"));
                let log = dir.path().join(format!("node{k}.log"));
                let host = host.to_string();
                let mut node = NodeProcess { config, host, port: base + k - 1, log, child: None };
                if k <= running {
                    node.restart();
                }
                node
            })
            .collect();
        Cluster { dir, nodes }
    }

    /// Runs `coffer-admin` against node `k` (1-based) instead of node 1.
    pub fn admin_at(&self, k: usize, args: &[&str]) -> Output {
        let mut cmd = Command::new(binary("coffer-admin"));
        let node = self.nodes[k - 1].url();
        cmd.arg("--config")
            .arg(self.path("admin.toml"))
            .args(["--node", &node])
            .args(args)
            .env_remove("RUST_LOG");
        run_bounded(cmd, COMMAND_TIMEOUT)
    }

    pub fn admin_at_json(&self, k: usize, args: &[&str]) -> Value {
        parse_json(&succeeded("coffer-admin", args, self.admin_at(k, args)))
    }

    /// The group's status as node `k` reports it, or `None` if it cannot.
    pub fn group_status(&self, k: usize) -> Option<Value> {
        let out = self.admin_at(k, &["cluster", "status", "--json"]);
        out.status.success().then(|| parse_json(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Waits until node `k` reports a leader and `voters` members that are
    /// leader or follower with no lag; returns that status.
    pub fn wait_for_group(&self, k: usize, voters: usize) -> Value {
        wait_for(Duration::from_secs(90), &format!("a group of {voters} in step, seen from node {k}"), || {
            let status = self.group_status(k)?;
            let nodes = status["nodes"].as_array()?;
            let in_step = nodes
                .iter()
                .filter(|n| matches!(n["state"].as_str(), Some("leader" | "follower")) && n["lag"] == 0)
                .count();
            (status["leader"].is_u64() && in_step == voters && nodes.len() == voters).then_some(status)
        })
    }

    /// A client config for the quickstart account that talks to node `k`
    /// only, with its own cache; returns its file name.
    pub fn client_for(&self, k: usize) -> String {
        self.account_config_for("client", k)
    }

    /// A client config for `account` (whose config is `ACCOUNT.toml`, as
    /// quickstart and [`Cluster::add_account`] write it) that talks to node
    /// `k` only, with its own cache; returns its file name.
    pub fn account_config_for(&self, account: &str, k: usize) -> String {
        let text = std::fs::read_to_string(self.path(&format!("{account}.toml"))).unwrap();
        let name = format!("{account}-node{k}");
        let text: Vec<String> = text
            .lines()
            .map(|line| match line.split_once(" = ") {
                Some(("store", _)) => format!("store = \"{}\"", self.nodes[k - 1].url()),
                Some(("cache", _)) => format!("cache = \"{name}-cache\""),
                _ => line.to_string(),
            })
            .collect();
        std::fs::write(self.path(&format!("{name}.toml")), text.join("\n") + "\n").unwrap();
        format!("{name}.toml")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `coffer --config CONFIG ARGS...`, not yet started.
    pub fn coffer_command(&self, config: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary("coffer"));
        cmd.arg("--config").arg(self.path(config)).args(args).env_remove("RUST_LOG");
        for var in ["COFFER_STORE", "COFFER_KEYS", "COFFER_CACHE", "COFFER_CONFIG"] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs `coffer --config CONFIG ARGS...`.
    pub fn coffer(&self, config: &str, args: &[&str]) -> Output {
        run_bounded(self.coffer_command(config, args), COMMAND_TIMEOUT)
    }

    /// Runs `coffer-admin --config admin.toml ARGS...`.
    pub fn admin(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(binary("coffer-admin"));
        cmd.arg("--config").arg(self.path("admin.toml")).args(args).env_remove("RUST_LOG");
        run_bounded(cmd, COMMAND_TIMEOUT)
    }

    pub fn admin_ok(&self, args: &[&str]) -> String {
        succeeded("coffer-admin", args, self.admin(args))
    }

    pub fn admin_json(&self, args: &[&str]) -> Value {
        parse_json(&self.admin_ok(args))
    }

    pub fn coffer_ok(&self, config: &str, args: &[&str]) -> String {
        succeeded("coffer", args, self.coffer(config, args))
    }

    pub fn coffer_json(&self, config: &str, args: &[&str]) -> Value {
        parse_json(&self.coffer_ok(config, args))
    }

    /// Runs coffer expecting failure; returns its stderr.
    pub fn coffer_fails(&self, config: &str, args: &[&str]) -> String {
        let out = self.coffer(config, args);
        assert!(
            !out.status.success(),
            "coffer {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `coffer backup --json PATH` for the client of `config`.
    pub fn backup(&self, config: &str, path: &Path) -> Value {
        self.coffer_json(config, &["backup", "--json", &path.display().to_string()])
    }

    /// Starts `coffer backup --json PATH` (output piped), for a test that
    /// strikes while it runs; see [`finish_backup`].
    pub fn spawn_backup(&self, config: &str, path: &Path) -> Child {
        self.coffer_command(config, &["backup", "--json", &path.display().to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start coffer backup")
    }

    /// Creates account NAME with limits, its certificate, a client config
    /// `NAME.toml` and registers fresh keys with `coffer init`.
    pub fn add_client(&self, name: &str, soft: &str, hard: &str) -> String {
        let config = self.add_account(name, soft, hard);
        self.coffer_ok(&config, &["init"]);
        config
    }

    /// Creates account NAME with limits, its certificate and a client
    /// config `NAME.toml`; no keys are registered yet.
    pub fn add_account(&self, name: &str, soft: &str, hard: &str) -> String {
        self.admin_ok(&["account", "create", name, "--soft", soft, "--hard", hard]);
        // The certificate names the account's id, which the admin tool
        // looks up on the node.
        let ca_dir = self.dir.path().display().to_string();
        self.admin_ok(&["ca", "--dir", &ca_dir, "issue-client", name]);
        let config = format!("{name}.toml");
        let node = self.nodes[0].url();
        let text = format!(
            "store = \"{node}\"\nkeys = \"{name}.keys\"\ncache = \"{name}-cache\"\n\n\
             [tls]\ncert = \"{name}.crt\"\nkey = \"{name}.key\"\nca = \"ca.crt\"\n"
        );
        std::fs::write(self.path(&config), text).unwrap();
        config
    }

    /// The key fingerprint the group registered for `account`.
    pub fn fingerprint(&self, account: &str) -> String {
        let info = self.admin_json(&["account", "info", account, "--json"]);
        info[0]["key_fingerprint"].as_str().expect("account info names its fingerprint").to_string()
    }

    /// Node `k`'s record of `account` (`account info --json`), if node `k`
    /// answers and holds the account: marker, sets, pack bytes are its own.
    pub fn replica(&self, k: usize, account: &str) -> Option<Value> {
        let out = self.admin_at(k, &["account", "info", account, "--json"]);
        let list: Value = serde_json::from_slice(&out.stdout).ok()?;
        let a = list.get(0)?;
        (a["held_here"] == true).then(|| a.clone())
    }

    /// Bytes in node `k`'s pack files, temporaries included (to see objects
    /// arrive, by upload or by fast sync).
    pub fn pack_bytes(&self, k: usize) -> u64 {
        self.pack_dirs(k)
            .iter()
            .flat_map(|dir| crate::walk_files(dir))
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// Bytes in node `k`'s committed pack files: what a node must never
    /// change on its own. Temporaries of writes a kill cut short (`.rfw`)
    /// are left out, since opening a disc set removes them as garbage.
    pub fn committed_pack_bytes(&self, k: usize) -> u64 {
        self.pack_dirs(k)
            .iter()
            .flat_map(|dir| crate::walk_files(dir))
            .filter(|f| !f.to_string_lossy().ends_with(RAID_TEMP_SUFFIX))
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// The directories holding node `k`'s pack files: `nodeK/data/packs`,
    /// or its three discs (`quickstart --discs 3`).
    pub fn pack_dirs(&self, k: usize) -> Vec<PathBuf> {
        let discs: Vec<PathBuf> =
            (1..=3).map(|d| self.path(&format!("node{k}/disc{d}"))).filter(|d| d.exists()).collect();
        if discs.is_empty() { vec![self.path(&format!("node{k}/data/packs"))] } else { discs }
    }

    /// How many TLS connections node 1 has accepted (this query included).
    pub fn connections(&self) -> u64 {
        let nodes = self.admin_json(&["status", "--json"]);
        let node1 = nodes.as_array().and_then(|n| n.iter().find(|n| n["node"] == "node1"));
        crate::u64_field(node1.expect("node 1 answers the status"), "connections")
    }
}

/// Polls `probe` every 200 ms until it gives a value; panics naming `what`
/// after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "waited {timeout:?} for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Fails the test unless `out` is a success; returns its stdout.
pub fn succeeded(program: &str, args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

pub fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

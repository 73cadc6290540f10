//! `coffer-admin quickstart`: everything a loopback group needs, in one
//! directory, so that a node and a client work at once.
//!
//! ```text
//! DIR/ca.crt, ca.key                 a throwaway certificate authority
//! DIR/nodeK.crt, .key, .toml          node K on 127.0.0.1:(base + K - 1)
//! DIR/nodeK/data/                     node K's store and Raft database
//! DIR/nodeK/disc1..3/                 its RAID pack files, with --discs 3
//! DIR/admin.crt, .key, admin.toml     the operator
//! DIR/client.crt, .key, .keys, .toml  one client account, keys registered
//! ```
//!
//! Node 1's group is initialised here, with the client's account in it, so
//! the nodes can be started in any order: node 1 leads a group of one, and
//! the others, whose configs list every other node under `[group] join`,
//! keep asking until they are let in.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use coffer_client::keys::Keys;
use coffer_proto::tls::{Role, TlsFiles};
use coffer_replication::{Command, Group, GroupConfig, Member};

use crate::ca::{CertificateAuthority, write_private};

pub struct Quickstart {
    pub dir: PathBuf,
    pub nodes: u16,
    pub base_port: u16,
    pub account: String,
    /// Disc directories per node: 1 (`nodeK/data/packs`) or 3 (`nodeK/disc1..3`).
    pub discs: u8,
    /// Raft log entries between snapshots (`[group] snapshot_every`).
    pub snapshot_every: u64,
}

/// What quickstart wrote, for the operator (or a script with `--json`).
#[derive(Debug, serde::Serialize)]
pub struct Written {
    pub nodes: Vec<PathBuf>,
    pub admin: PathBuf,
    pub client: PathBuf,
    pub account: String,
    pub ports: Vec<u16>,
}

const LOOPBACK_HOSTS: [&str; 2] = ["localhost", "127.0.0.1"];

impl Quickstart {
    pub fn run(&self) -> Result<Written> {
        if self.nodes == 0 {
            bail!("--nodes must be at least 1");
        }
        if !matches!(self.discs, 1 | 3) {
            bail!("--discs must be 1, or 3 for RAID");
        }
        let last = self.base_port.checked_add(self.nodes - 1).context("--base-port too high for --nodes")?;
        let dir = std::path::absolute(&self.dir)?;
        let ca = CertificateAuthority::init(&dir)?;
        let hosts: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| h.to_string()).collect();
        let keys = Keys::create(&dir.join("client.keys"))?;
        let mut written = Written {
            nodes: Vec::new(),
            admin: dir.join("admin.toml"),
            client: dir.join("client.toml"),
            account: self.account.clone(),
            ports: (self.base_port..=last).collect(),
        };
        let addrs: Vec<String> = written.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        for (k, addr) in (1..=self.nodes).zip(&addrs) {
            let name = format!("node{k}");
            ca.issue(&Role::Node(name.clone()), &hosts, &dir, &name)?;
            let others: Vec<&String> =
                if k == 1 { Vec::new() } else { addrs.iter().filter(|a| *a != addr).collect() };
            let path = dir.join(format!("{name}.toml"));
            write_private(&path, &node_config(&name, addr, self.discs, &others, self.snapshot_every))?;
            written.nodes.push(path);
        }
        let first = Member { name: "node1".into(), addr: addrs[0].clone(), site: String::new() };
        let node1_tls =
            TlsFiles { cert: dir.join("node1.crt"), key: dir.join("node1.key"), ca: dir.join("ca.crt") };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(bootstrap(
            &dir.join("node1/data/raft"),
            first,
            &node1_tls,
            &self.account,
            &keys.fingerprint(),
        ))?;
        ca.issue(&Role::Admin("admin".into()), &[], &dir, "admin")?;
        write_private(
            &written.admin,
            &format!("node = \"coffer://127.0.0.1:{}\"\n{}", self.base_port, tls("admin")),
        )?;
        ca.issue(&Role::Client(self.account.clone()), &[], &dir, "client")?;
        let nodes: Vec<String> = addrs.iter().map(|a| format!("\"coffer://{a}\"")).collect();
        let client = format!(
            "store = \"coffer://{}\"\nnodes = [{}]\nkeys = \"client.keys\"\ncache = \"cache\"\n{}",
            addrs[0],
            nodes.join(", "),
            tls("client")
        );
        write_private(&written.client, &client)?;
        Ok(written)
    }
}

/// Starts the group on node 1's Raft database, alone, and creates the
/// account with its keys registered.
async fn bootstrap(
    raft_dir: &Path,
    me: Member,
    tls: &TlsFiles,
    account: &str,
    fingerprint: &str,
) -> Result<()> {
    let group = Group::open(raft_dir, me, GroupConfig::default(), tls.client_config()?).await?;
    let created = async {
        group.initialize().await?;
        if !group.wait_for_leader(std::time::Duration::from_secs(30)).await {
            bail!("node 1 did not become leader of its own group");
        }
        let create = Command::CreateAccount {
            name: account.to_string(),
            soft_limit: u64::MAX,
            hard_limit: u64::MAX,
            group: String::new(),
            created_ns: coffer_node::index::now_ns(),
        };
        group.write(create).await?;
        let keys = Command::RegisterKeys { name: account.to_string(), fingerprint: fingerprint.to_string() };
        group.write(keys).await?;
        Ok(())
    }
    .await;
    group.shutdown().await;
    created
}

fn tls(file: &str) -> String {
    format!("\n[tls]\ncert = \"{file}.crt\"\nkey = \"{file}.key\"\nca = \"ca.crt\"\n")
}

fn node_config(name: &str, addr: &str, discs: u8, join: &[&String], snapshot_every: u64) -> String {
    let discs = match discs {
        3 => format!("discs = [\"{name}/disc1\", \"{name}/disc2\", \"{name}/disc3\"]\n"),
        _ => String::new(),
    };
    let join: Vec<String> = join.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "name = \"{name}\"\nlisten = \"{addr}\"\ndata = \"{name}/data\"\nlog = \"info\"\n\
         housekeeping_interval = \"15m\"\ngrace = \"7d\"\n{discs}{}\n[group]\njoin = [{}]\n\
         snapshot_every = {snapshot_every}\nkeep_logs = {}\n",
        tls(name),
        join.join(", "),
        (snapshot_every / 4).max(1)
    )
}

/// Where quickstart puts node K's config, for the printed instructions.
pub fn describe(written: &Written, dir: &Path) -> String {
    let mut out = format!("Wrote a loopback setup to {}:\n", dir.display());
    for (path, port) in written.nodes.iter().zip(&written.ports) {
        out.push_str(&format!("  node     {} (127.0.0.1:{port})\n", path.display()));
    }
    out.push_str(&format!("  admin    {}\n", written.admin.display()));
    out.push_str(&format!(
        "  client   {} (account `{}`, keys registered)\n\n",
        written.client.display(),
        written.account
    ));
    out.push_str(&format!(
        "Start a node:      coffer-node --config {}\nBack up:           coffer --config {} backup PATH\nAccounts:          coffer-admin --config {} account info\n",
        written.nodes[0].display(),
        written.client.display(),
        written.admin.display()
    ));
    out
}

//! `coffer-admin quickstart`: everything a loopback group needs, in one
//! directory, so that a node and a client work at once.
//!
//! ```text
//! DIR/ca.crt, ca.key                 a throwaway certificate authority
//! DIR/nodeK.crt, .key, .toml          node K on 127.0.0.1:(base + K - 1) (or --address)
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
use coffer_client::config::ClientConfig;
use coffer_client::keys::Keys;
use coffer_proto::address::node_address;
use coffer_proto::config::NodeConfig;
use coffer_proto::tls::{Role, TlsFiles};
use coffer_replication::Member;
use coffer_replication::bootstrap::{FirstAccount, bootstrap};

use crate::ca::{CertificateAuthority, write_private};
use crate::config::AdminConfig;

pub struct Quickstart {
    pub dir: PathBuf,
    pub nodes: u16,
    pub base_port: u16,
    /// The loopback address every node listens on (127.0.0.1 or ::1).
    pub address: std::net::IpAddr,
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

/// Names node certificates carry, so a node can be reached on any loopback
/// address.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

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
        let ip = self.address.to_string();
        let addrs: Vec<String> = written.ports.iter().map(|p| node_address(&ip, *p)).collect();
        for (k, addr) in (1..=self.nodes).zip(&addrs) {
            let name = format!("node{k}");
            ca.issue(&Role::Node(name.clone()), None, &hosts, &dir, &name)?;
            let others: Vec<&String> =
                if k == 1 { Vec::new() } else { addrs.iter().filter(|a| *a != addr).collect() };
            let path = dir.join(format!("{name}.toml"));
            write_private(&path, &self.node_config(&name, addr, &others)?.to_toml())?;
            written.nodes.push(path);
        }
        let others: Vec<String> = (2..=self.nodes).map(|k| format!("node{k}")).collect();
        let first = Member { name: "node1".into(), addr: addrs[0].clone(), site: String::new() };
        let account = FirstAccount { name: self.account.clone(), key_fingerprint: keys.fingerprint() };
        let node1_tls = tls_files(&dir, "node1");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let ids = runtime
            .block_on(bootstrap(
                &dir.join("node1/data/raft"),
                first,
                node1_tls.client_config()?,
                &others,
                &[account],
            ))
            .context("starting node 1's group")?;
        ca.issue(&Role::Admin("admin".into()), None, &[], &dir, "admin")?;
        let admin = AdminConfig {
            node: Some(format!("coffer://{}", addrs[0])),
            nodes: addrs[1..].iter().map(|a| format!("coffer://{a}")).collect(),
            tls: Some(tls_files(Path::new(""), "admin")),
        };
        write_private(&written.admin, &toml::to_string(&admin)?)?;
        ca.issue(&Role::Client(self.account.clone()), ids.first().copied(), &[], &dir, "client")?;
        let client = ClientConfig {
            store: Some(format!("coffer://{}", addrs[0])),
            nodes: addrs.iter().map(|a| format!("coffer://{a}")).collect(),
            keys: Some("client.keys".into()),
            cache: Some("cache".into()),
            tls: Some(tls_files(Path::new(""), "client")),
            ..ClientConfig::default()
        };
        write_private(&written.client, &toml::to_string(&client)?)?;
        Ok(written)
    }

    /// Node `name`'s configuration; paths are relative to its file.
    fn node_config(&self, name: &str, addr: &str, join: &[&String]) -> Result<NodeConfig> {
        let listen = addr.parse().with_context(|| format!("node address {addr}"))?;
        let mut config =
            NodeConfig::new(name, listen, format!("{name}/data").into(), tls_files(Path::new(""), name));
        if self.discs == 3 {
            config.discs = (1..=3).map(|d| format!("{name}/disc{d}").into()).collect();
        }
        config.group.join = join.iter().map(|a| a.to_string()).collect();
        config.group.snapshot_every = self.snapshot_every;
        config.group.keep_logs = (self.snapshot_every / 4).max(1);
        Ok(config)
    }
}

/// The certificate, key and CA of `file` in `dir`.
fn tls_files(dir: &Path, file: &str) -> TlsFiles {
    TlsFiles {
        cert: dir.join(format!("{file}.crt")),
        key: dir.join(format!("{file}.key")),
        ca: dir.join("ca.crt"),
        crl: Some(dir.join("ca.crl")),
    }
}

/// Where quickstart puts node K's config, for the printed instructions.
pub fn describe(written: &Written, dir: &Path) -> String {
    let mut out = format!("Wrote a loopback setup to {}:\n", dir.display());
    for (path, port) in written.nodes.iter().zip(&written.ports) {
        out.push_str(&format!("  node     {} (port {port})\n", path.display()));
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

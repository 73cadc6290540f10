//! `coffer-admin quickstart`: everything a loopback group needs, in one
//! directory, so that a node and a client work at once.
//!
//! ```text
//! DIR/ca.crt, ca.key                 a throwaway certificate authority
//! DIR/nodeK.crt, .key, .toml          node K on 127.0.0.1:(base + K - 1)
//! DIR/nodeK/data/                     node K's store, with the client's account
//! DIR/nodeK/disc1..3/                 its RAID pack files, with --discs 3
//! DIR/admin.crt, .key, admin.toml     the operator
//! DIR/client.crt, .key, .keys, .toml  one client account, keys registered
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use coffer_client::keys::Keys;
use coffer_node::{Limits, Store};
use coffer_proto::tls::Role;

use crate::ca::{CertificateAuthority, write_private};

pub struct Quickstart {
    pub dir: PathBuf,
    pub nodes: u16,
    pub base_port: u16,
    pub account: String,
    /// Disc directories per node: 1 (`nodeK/data/packs`) or 3 (`nodeK/disc1..3`).
    pub discs: u8,
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
        for (k, port) in (1..=self.nodes).zip(self.base_port..) {
            let name = format!("node{k}");
            ca.issue(&Role::Node(name.clone()), &hosts, &dir, &name)?;
            let discs: Vec<PathBuf> = match self.discs {
                3 => (1..=3).map(|d| dir.join(&name).join(format!("disc{d}"))).collect(),
                _ => vec![dir.join(&name).join("data/packs")],
            };
            let store = Store::create_on(&dir.join(&name).join("data"), &discs)?;
            store.create_account(&self.account, &keys.fingerprint(), Limits::UNLIMITED)?;
            let path = dir.join(format!("{name}.toml"));
            write_private(&path, &node_config(&name, port, self.discs))?;
            written.nodes.push(path);
        }
        ca.issue(&Role::Admin("admin".into()), &[], &dir, "admin")?;
        write_private(
            &written.admin,
            &format!("node = \"coffer://127.0.0.1:{}\"\n{}", self.base_port, tls("admin")),
        )?;
        ca.issue(&Role::Client(self.account.clone()), &[], &dir, "client")?;
        let client = format!(
            "store = \"coffer://127.0.0.1:{}\"\nkeys = \"client.keys\"\ncache = \"cache\"\n{}",
            self.base_port,
            tls("client")
        );
        write_private(&written.client, &client)?;
        Ok(written)
    }
}

fn tls(file: &str) -> String {
    format!("\n[tls]\ncert = \"{file}.crt\"\nkey = \"{file}.key\"\nca = \"ca.crt\"\n")
}

fn node_config(name: &str, port: u16, discs: u8) -> String {
    let discs = match discs {
        3 => format!("discs = [\"{name}/disc1\", \"{name}/disc2\", \"{name}/disc3\"]\n"),
        _ => String::new(),
    };
    format!(
        "name = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\ndata = \"{name}/data\"\nlog = \"info\"\n\
         housekeeping_interval = \"15m\"\ngrace = \"7d\"\n{discs}{}",
        tls(name)
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

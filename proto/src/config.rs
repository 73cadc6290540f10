//! The node's TOML configuration: read by `coffer-node`, written by
//! `coffer-admin quickstart` through the same types.
//!
//! ```toml
//! name = "node1"
//! listen = "127.0.0.1:7101"
//! data = "node1/data"            # relative paths are relative to this file
//! log = "info"
//! housekeeping_interval = "15m"  # human units: "90s", "6h", "7d"
//! grace = "7d"                   # how long unreferenced uploads are kept
//! idle_writer = "2m"             # a writing client silent this long may be replaced
//! discs = ["/d1/coffer", "/d2/coffer", "/d3/coffer"]   # RAID for packs; default data/packs
//!
//! [tls]
//! cert = "node1.crt"
//! key = "node1.key"
//! ca = "ca.crt"
//!
//! [group]                        # the server group; every key is optional
//! site = "london"                # replicas of an account go to distinct sites
//! join = ["10.0.0.1:7101"]       # members to ask to join through on first start
//! heartbeat = "250ms"
//! election_timeout = "1500ms"    # the shortest; the longest is twice this
//! write_timeout = "5s"           # after this, a change is refused "no quorum"
//! snapshot_every = 1000          # log entries between snapshots
//! keep_logs = 200                # entries kept behind a snapshot
//! anti_entropy = "60s"           # full fast-sync pass over every held account
//! retry = "2s"                   # first retry of a failed sync; doubles up to 30s
//! routes = { "10.0.0.2:7101" = "127.0.0.1:9102" }   # dial a peer through a tunnel
//! commit_replicas = 2            # nodes holding a set before its commit is acknowledged
//! commit_wait = "60s"            # longest a commit waits for them (then it says how many)
//!
//! [alerts]                       # what the node tells the operator; every key is optional
//! notify = "/usr/local/bin/coffer-alert"   # run with the event name, JSON on stdin
//! silent_after = "2d"            # an account without a backup this long is silent
//! unreachable_after = "10m"      # a member the leader cannot reach this long
//! sync_failing_after = "1h"      # a peer owed a fast sync this long
//! repeat = "6h"                  # the same alert about the same thing at most this often
//! check_every = "60s"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::tls::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub data: PathBuf,
    #[serde(default = "default_log")]
    pub log: String,
    #[serde(default = "default_housekeeping", with = "human_duration")]
    pub housekeeping_interval: Duration,
    #[serde(default = "default_grace", with = "human_duration")]
    pub grace: Duration,
    /// A writing client silent this long loses the account's writer to a
    /// new login of the same account (a stopped or sleeping client).
    #[serde(default = "default_idle_writer", with = "human_duration")]
    pub idle_writer: Duration,
    /// Where pack files live: one directory, or three for RAID with parity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discs: Vec<PathBuf>,
    /// Where to serve Prometheus `/metrics` and `/health` over plain HTTP
    /// (off when absent; keep it on a private address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    pub tls: TlsFiles,
    #[serde(default)]
    pub group: GroupSection,
    #[serde(default)]
    pub alerts: AlertsSection,
}

/// The `[alerts]` section: when the node calls for the operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    /// Run for every alert with the event name as its argument and a JSON
    /// description on its standard input; alerts are logged either way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<PathBuf>,
    /// The silence threshold of accounts and groups that set none.
    #[serde(with = "human_duration")]
    pub silent_after: Duration,
    #[serde(with = "human_duration")]
    pub unreachable_after: Duration,
    #[serde(with = "human_duration")]
    pub sync_failing_after: Duration,
    #[serde(with = "human_duration")]
    pub repeat: Duration,
    #[serde(with = "human_duration")]
    pub check_every: Duration,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            notify: None,
            silent_after: Duration::from_secs(2 * 24 * 3600),
            unreachable_after: Duration::from_secs(600),
            sync_failing_after: Duration::from_secs(3600),
            repeat: Duration::from_secs(6 * 3600),
            check_every: Duration::from_secs(60),
        }
    }
}

/// The `[group]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupSection {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub site: String,
    pub join: Vec<String>,
    #[serde(with = "human_duration")]
    pub heartbeat: Duration,
    #[serde(with = "human_duration")]
    pub election_timeout: Duration,
    #[serde(with = "human_duration")]
    pub write_timeout: Duration,
    pub snapshot_every: u64,
    pub keep_logs: u64,
    #[serde(with = "human_duration")]
    pub anti_entropy: Duration,
    #[serde(with = "human_duration")]
    pub retry: Duration,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, String>,
    /// A client's commit is acknowledged once this many nodes of the
    /// account's replica set hold the set (at most the set's size; 1 is
    /// "this node alone").
    pub commit_replicas: usize,
    /// How long a commit waits for them; then it is acknowledged on fewer,
    /// and says so.
    #[serde(with = "human_duration")]
    pub commit_wait: Duration,
}

impl Default for GroupSection {
    fn default() -> Self {
        GroupSection {
            site: String::new(),
            join: Vec::new(),
            heartbeat: Duration::from_millis(250),
            election_timeout: Duration::from_millis(1500),
            write_timeout: Duration::from_secs(5),
            snapshot_every: 1000,
            keep_logs: 200,
            anti_entropy: Duration::from_secs(60),
            retry: Duration::from_secs(2),
            routes: BTreeMap::new(),
            commit_replicas: 2,
            commit_wait: Duration::from_secs(60),
        }
    }
}

fn default_log() -> String {
    "info".into()
}

fn default_housekeeping() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_idle_writer() -> Duration {
    Duration::from_secs(120)
}

fn default_grace() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

/// Durations in config files are human: "90s", "6h", "7d".
pub mod human_duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("`{text}`: {e}")))
    }

    pub fn serialize<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*duration).to_string())
    }
}

/// Sizes in config files are human: "10GiB", "512 KiB", "1.5MB".
pub mod human_size {
    use super::*;

    pub fn parse(text: &str) -> Result<u64, String> {
        parse_size::parse_size(text.trim()).map_err(|e| format!("`{text}` is not a size such as 10GiB: {e}"))
    }

    pub fn format(bytes: u64) -> String {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let unit = (0..UNITS.len()).rev().find(|&u| bytes.is_multiple_of(1 << (10 * u))).unwrap_or(0);
        format!("{}{}", bytes >> (10 * unit), UNITS[unit])
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*bytes))
    }
}

/// Optional sizes ("10GiB") and rates ("2MiB/s": a size per second).
pub mod human_size_opt {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let text = String::deserialize(d)?;
        human_size::parse(text.trim().trim_end_matches("/s")).map(Some).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(bytes: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&human_size::format(*b)),
            None => s.serialize_none(),
        }
    }
}

impl NodeConfig {
    /// A node called `name` on `listen`, keeping its data in `data`, with
    /// every other setting at its default.
    pub fn new(name: &str, listen: SocketAddr, data: PathBuf, tls: TlsFiles) -> NodeConfig {
        NodeConfig {
            name: name.to_string(),
            listen,
            data,
            log: default_log(),
            housekeeping_interval: default_housekeeping(),
            grace: default_grace(),
            idle_writer: default_idle_writer(),
            discs: Vec::new(),
            metrics_listen: None,
            tls,
            group: GroupSection::default(),
            alerts: AlertsSection::default(),
        }
    }

    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut config: NodeConfig = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let base = base_dir(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        config.data = base.join(&config.data);
        for d in &mut config.discs {
            *d = base.join(&*d);
        }
        if config.discs.is_empty() {
            config.discs.push(config.data.join("packs"));
        }
        if !matches!(config.discs.len(), 1 | 3) {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!("`discs` names {} directories; give 1, or 3 for RAID", config.discs.len()),
            });
        }
        config.tls.relative_to(&base);
        if let Some(program) = &mut config.alerts.notify {
            *program = base.join(&*program);
        }
        Ok(config)
    }

    /// The file `load` reads back as this configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a node configuration is plain TOML")
    }
}

/// The directory that relative paths in the configuration file `path`
/// start from: the file's own, made absolute once, so that every path means
/// the same whatever the working directory of the program reading it.
/// (The directory, not the file, is resolved: a config file that is a
/// symbolic link keeps its paths relative to where the link is.)
pub fn base_dir(path: &Path) -> std::io::Result<PathBuf> {
    // `node.toml` alone has the parent "", which is the working directory.
    path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new(".")).canonicalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        NodeConfig::load(&path)
    }

    const TLS: &str = "[tls]\ncert = \"n.crt\"\nkey = \"n.key\"\nca = \"ca.crt\"\n";

    #[test]
    fn human_units_and_relative_paths() {
        let c = parse(&format!(
            "name = \"n1\"\nlisten = \"127.0.0.1:7101\"\ndata = \"d\"\nhousekeeping_interval = \"90s\"\ngrace = \"6h\"\n{TLS}"
        ))
        .unwrap();
        assert_eq!(c.housekeeping_interval, Duration::from_secs(90));
        assert_eq!(c.grace, Duration::from_secs(6 * 3600));
        assert!(c.data.is_absolute() && c.data.ends_with("d"));
    }

    #[test]
    fn a_config_named_by_a_relative_path_resolves_its_paths_once() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::fs::write(
            real.join("node.toml"),
            format!("name = \"n1\"\nlisten = \"127.0.0.1:7101\"\ndata = \"node1/data\"\n{TLS}"),
        )
        .unwrap();
        // The file as `coffer-node --config lab/node.toml` from elsewhere names it.
        let up = "../".repeat(std::env::current_dir().unwrap().components().count() - 1);
        let relative = Path::new(&up).join(real.strip_prefix("/").unwrap()).join("node.toml");
        let c = NodeConfig::load(&relative).unwrap();
        assert_eq!(c.data, real.join("node1/data"));
        assert_eq!(
            c.discs,
            vec![real.join("node1/data/packs")],
            "the packs beside the index, not joined twice"
        );
        assert_eq!(c.tls.cert, real.join("n.crt"));
    }

    #[test]
    fn a_written_config_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let tls = TlsFiles::new("n.crt".into(), "n.key".into(), "ca.crt".into());
        let mut written = NodeConfig::new("n1", "127.0.0.1:7101".parse().unwrap(), "d".into(), tls);
        written.grace = Duration::from_secs(6 * 3600);
        written.group.join = vec!["127.0.0.1:7102".into()];
        written.group.heartbeat = Duration::from_millis(250);
        let path = dir.path().join("node.toml");
        std::fs::write(&path, written.to_toml()).unwrap();
        let read = NodeConfig::load(&path).unwrap();
        assert_eq!(read.grace, written.grace);
        assert_eq!(read.group, written.group);
        assert_eq!(read.data, dir.path().join("d"));
        assert_eq!(read.discs, vec![dir.path().join("d/packs")]);
        assert_eq!(read.tls.cert, dir.path().join("n.crt"));
    }

    #[test]
    fn malformed_configs_name_the_problem() {
        let bad_duration =
            parse(&format!("name = \"n1\"\nlisten = \"127.0.0.1:1\"\ndata = \"d\"\ngrace = \"soon\"\n{TLS}"))
                .unwrap_err()
                .to_string();
        assert!(bad_duration.contains("soon"), "{bad_duration}");
        let unknown =
            parse(&format!("name = \"n1\"\nlisten = \"127.0.0.1:1\"\ndata = \"d\"\nport = 3\n{TLS}"))
                .unwrap_err();
        assert!(unknown.to_string().contains("port"), "{unknown}");
        let missing = parse("name = \"n1\"\n").unwrap_err();
        assert!(missing.to_string().contains("listen"), "{missing}");
    }
}

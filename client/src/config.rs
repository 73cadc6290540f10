//! The client's TOML configuration (`coffer --config FILE`).
//!
//! ```toml
//! store = "coffer://127.0.0.1:7101"   # or "file:///mnt/backup"
//! nodes = ["coffer://127.0.0.1:7101", "coffer://127.0.0.1:7102"]  # the whole server group
//! keys = "client.keys"                # relative paths are relative to this file
//! cache = "cache"
//!
//! [tls]                               # for a node: who we are, whom we trust
//! cert = "client.crt"
//! key = "client.key"
//! ca = "ca.crt"
//!
//! [[location]]                        # what `coffer backup` and the daemon back up
//! name = "home"
//! path = "/home/alice"
//! rules = [                           # top to bottom, first match wins (see `rules`)
//!   { action = "exclude", on = "dirs", glob = "/home/alice/.cache" },
//!   { action = "include", on = "files", glob = "/home/alice/big/notes.txt" },
//!   { action = "descend", on = "dirs", glob = "/home/alice/big" },
//!   { action = "exclude", on = "files", regex = "\\.(o|tmp)$" },
//! ]
//!
//! [daemon]                            # `coffer daemon`; every key is optional
//! mode = "lazy"                       # or "snapshot": back up on `coffer ctl sync`
//! update_interval = "1h"              # full rescan, the safety net under notification
//! minimum_file_age = "6h"             # a file changed more recently waits...
//! max_upload_wait = "24h"             # ...unless it has waited this long
//! max_file_size = "10GiB"             # larger files are skipped and reported
//! backup_window = "22:00-06:00"       # start backups only in these hours
//! bandwidth_limit = "2MiB/s"          # uploads; unlimited when absent
//! notify = "/usr/local/bin/coffer-notify"  # run with the event name, JSON on stdin
//! control = "/run/user/1000/coffer.sock"   # `coffer ctl`; default in the cache
//! mass_deletion = 0.5                 # hold a scan that drops more than this share
//! not_backed_up_after = "2d"          # then the `not-backed-up` event
//! delete_redundant_locations_after = "2w"
//! ```
//!
//! Command-line flags and environment variables override the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use coffer_proto::config::{human_duration, human_size_opt};
use coffer_proto::tls::TlsFiles;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rules::{RuleSpec, Rules};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Every node of the server group, for failing over from `store`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    #[serde(default, rename = "location", skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<LocationConfig>,
    #[serde(default, skip_serializing_if = "DaemonConfig::is_default")]
    pub daemon: DaemonConfig,
}

/// One `[[location]]`: a directory kept backed up, and its rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationConfig {
    pub name: String,
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Back up by itself, as files change and reach `minimum_file_age`.
    #[default]
    Lazy,
    /// Back up on `coffer ctl sync` only (cron, a systemd timer).
    Snapshot,
}

/// The `[daemon]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    pub mode: Mode,
    #[serde(with = "human_duration")]
    pub update_interval: Duration,
    #[serde(with = "human_duration")]
    pub minimum_file_age: Duration,
    #[serde(with = "human_duration")]
    pub max_upload_wait: Duration,
    #[serde(with = "human_size_opt", skip_serializing_if = "Option::is_none")]
    pub max_file_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_window: Option<Window>,
    /// Bytes per second of uploads.
    #[serde(with = "human_size_opt", skip_serializing_if = "Option::is_none")]
    pub bandwidth_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<PathBuf>,
    /// A scan that would drop more than this share of a location's files is held.
    pub mass_deletion: f64,
    #[serde(with = "human_duration")]
    pub not_backed_up_after: Duration,
    #[serde(with = "human_duration")]
    pub delete_redundant_locations_after: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            mode: Mode::Lazy,
            update_interval: Duration::from_secs(3600),
            minimum_file_age: Duration::from_secs(6 * 3600),
            max_upload_wait: Duration::from_secs(24 * 3600),
            max_file_size: None,
            backup_window: None,
            bandwidth_limit: None,
            notify: None,
            control: None,
            mass_deletion: 0.5,
            not_backed_up_after: Duration::from_secs(2 * 86400),
            delete_redundant_locations_after: Duration::from_secs(14 * 86400),
        }
    }
}

impl DaemonConfig {
    fn is_default(&self) -> bool {
        *self == DaemonConfig::default()
    }
}

/// Hours of the day in which backups may start, "22:00-06:00" (may wrap
/// past midnight), in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Minutes after midnight.
    pub start: u32,
    pub end: u32,
}

impl Window {
    pub fn contains(&self, minute_of_day: u32) -> bool {
        if self.start <= self.end {
            (self.start..self.end).contains(&minute_of_day)
        } else {
            minute_of_day >= self.start || minute_of_day < self.end
        }
    }

    /// Whether a backup may start now.
    pub fn open_now(&self) -> bool {
        use chrono::Timelike;
        let now = chrono::Local::now();
        self.contains(now.hour() * 60 + now.minute())
    }
}

impl std::str::FromStr for Window {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Window, String> {
        let bad = || format!("`{text}` is not a window of hours such as \"22:00-06:00\"");
        let minute = |hm: &str| -> Option<u32> {
            let (h, m) = hm.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        Ok(Window { start: minute(a).ok_or_else(bad)?, end: minute(b).ok_or_else(bad)? })
    }
}

impl Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        s.serialize_str(&format!("{}-{}", hm(self.start), hm(self.end)))
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Window, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl ClientConfig {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<ClientConfig> {
        let config = ClientConfig::read(path)?;
        config.check().map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    /// Reads the file without checking its rules: enough for `coffer ctl`
    /// to find the daemon, which is then asked to reload a broken file.
    pub fn read(path: &Path) -> Result<ClientConfig> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let mut config: ClientConfig =
            toml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let base = coffer_proto::config::base_dir(path).map_err(Error::io(path))?;
        let resolve = |p: &mut PathBuf| *p = base.join(&*p);
        config.keys.as_mut().map(resolve);
        config.cache.as_mut().map(resolve);
        if let Some(tls) = config.tls.as_mut() {
            tls.relative_to(&base);
        }
        for location in &mut config.locations {
            resolve(&mut location.path);
        }
        config.daemon.notify.as_mut().map(resolve);
        config.daemon.control.as_mut().map(resolve);
        Ok(config)
    }

    /// Everything serde cannot see: rules that parse, distinct location
    /// names, a sensible mass-deletion share.
    fn check(&self) -> Result<()> {
        for (i, l) in self.locations.iter().enumerate() {
            if self.locations[..i].iter().any(|o| o.name == l.name) {
                return Err(Error::Invalid(format!("two locations are called `{}`", l.name)));
            }
            Rules::compile(&l.name, &l.rules)?;
        }
        if !(0.0..=1.0).contains(&self.daemon.mass_deletion) {
            return Err(Error::Invalid(
                "daemon.mass_deletion is a share between 0 and 1, such as 0.5".into(),
            ));
        }
        Ok(())
    }

    /// The configured location of `path`, if any (its rules apply to it).
    pub fn location_of(&self, path: &Path) -> Option<&LocationConfig> {
        let canonical = std::fs::canonicalize(path).ok()?;
        self.locations.iter().find(|l| std::fs::canonicalize(&l.path).is_ok_and(|p| p == canonical))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_to_the_file_and_typos_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(
            &path,
            "store = \"coffer://127.0.0.1:1\"\nkeys = \"k\"\n[tls]\ncert = \"c\"\nkey = \"x\"\nca = \"a\"\n",
        )
        .unwrap();
        let c = ClientConfig::load(&path).unwrap();
        assert_eq!(c.keys.as_deref(), Some(dir.path().join("k").as_path()));
        assert_eq!(c.tls.unwrap().ca, dir.path().join("a"));
        std::fs::write(&path, "stor = \"x\"\n").unwrap();
        let e = ClientConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("stor") && e.contains("client.toml"), "{e}");
    }

    #[test]
    fn the_documented_example_parses_with_human_units() {
        let doc: String = include_str!("config.rs")
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .filter_map(|l| l.strip_prefix("//! "))
            .skip_while(|l| *l != "```toml")
            .skip(1)
            .take_while(|l| *l != "```")
            .map(|l| format!("{l}\n"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(&path, &doc).unwrap();
        let c = ClientConfig::load(&path).unwrap();
        assert_eq!(c.locations[0].rules.len(), 4);
        assert_eq!(c.daemon.mode, Mode::Lazy);
        assert_eq!(c.daemon.max_file_size, Some(10 << 30));
        assert_eq!(c.daemon.bandwidth_limit, Some(2 << 20));
        assert_eq!(c.daemon.delete_redundant_locations_after, Duration::from_secs(14 * 86400));
        let w = c.daemon.backup_window.unwrap();
        assert!(w.contains(23 * 60) && w.contains(60) && !w.contains(12 * 60));
        let back: ClientConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back.daemon, c.daemon);
        assert_eq!(back.locations, c.locations);
    }

    #[test]
    fn a_broken_rule_or_value_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        let cases = [
            (
                "[[location]]\nname = \"home\"\npath = \"/h\"\nrules = [{ action = \"exclude\", regex = \"(\" }]\n",
                "location `home`, rule 1",
            ),
            ("[daemon]\nminimum_file_age = \"soon\"\n", "soon"),
            ("[daemon]\nbackup_window = \"25:00-06:00\"\n", "25:00-06:00"),
            ("[daemon]\nmax_file_size = \"big\"\n", "big"),
            ("[daemon]\nmass_deletion = 2.0\n", "mass_deletion"),
            (
                "[[location]]\nname = \"a\"\npath = \"/x\"\n[[location]]\nname = \"a\"\npath = \"/y\"\n",
                "two locations",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&path, text).unwrap();
            let e = ClientConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("client.toml"), "{text}: {e}");
        }
    }
}

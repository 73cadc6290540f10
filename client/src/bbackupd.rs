//! `coffer import-config`: a Box Backup client configuration
//! (`bbackupd.conf`) as a Coffer client configuration, with a note for
//! every setting that has no counterpart or needs the user's attention.
//!
//! Box Backup's format: `Key = Value` lines, `#` comments, and named blocks
//! (`Name` on one line, then `{` ... `}`). Its rules are `Exclude*` and
//! `AlwaysInclude*`, each for files or directories, as a full path or a
//! regular expression; an always-include wins over any exclusion. In
//! Coffer's ordered rules that is: the includes first, then the exclusions,
//! directory exclusions as `descend` when the location has an always-include
//! (so what it names is still found inside an excluded directory).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ClientConfig, DaemonConfig, LocationConfig, Mode};
use crate::error::{Error, Result};
use crate::rules::{Action, RuleSpec, Target};
use coffer_proto::tls::TlsFiles;

/// Coffer's port for store hosts named without one (Box Backup used 2201).
pub const DEFAULT_PORT: u16 = 7101;
/// The longest file accepted.
const MAX_TEXT: usize = 1 << 20;

pub struct Imported {
    pub config: ClientConfig,
    /// What did not convert, or converted with a caveat.
    pub notes: Vec<String>,
}

#[derive(Default, Debug)]
struct Block {
    entries: Vec<(String, String)>,
    blocks: Vec<(String, Block)>,
}

impl Block {
    fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Reads the text into nested blocks; errors name the line.
fn parse(text: &str) -> Result<Block> {
    let bad = |n: usize, what: &str| Error::Invalid(format!("bbackupd.conf line {}: {what}", n + 1));
    let mut stack: Vec<(String, Block)> = vec![(String::new(), Block::default())];
    let mut pending: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "{" {
            let name = pending.take().ok_or_else(|| bad(n, "`{` without a block name before it"))?;
            stack.push((name, Block::default()));
            continue;
        }
        if let Some(name) = pending.take() {
            return Err(bad(n, &format!("block `{name}` is not followed by `{{`")));
        }
        if line == "}" {
            let (name, block) =
                stack.pop().filter(|_| !stack.is_empty()).ok_or_else(|| bad(n, "`}` closes nothing"))?;
            stack.last_mut().expect("the top level stays").1.blocks.push((name, block));
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) => stack
                .last_mut()
                .expect("a block is open")
                .1
                .entries
                .push((key.trim().into(), value.trim().into())),
            None => pending = Some(line.to_string()),
        }
    }
    if let Some(name) = pending {
        return Err(Error::Invalid(format!("bbackupd.conf: block `{name}` has no body")));
    }
    if stack.len() != 1 {
        return Err(Error::Invalid(format!(
            "bbackupd.conf: block `{}` is not closed",
            stack.last().unwrap().0
        )));
    }
    Ok(stack.pop().unwrap().1)
}

/// Settings that have no counterpart, and why.
const NO_COUNTERPART: &[(&str, &str)] = &[
    (
        "AccountNumber",
        "a Coffer account is named by the client certificate; issue one with `coffer-admin ca issue-client ACCOUNT`",
    ),
    (
        "FileTrackingSizeThreshold",
        "Coffer finds renamed and moved files by content (deduplication), at any size",
    ),
    (
        "DiffingUploadSizeThreshold",
        "Coffer uploads only changed chunks of every file (content-defined chunking)",
    ),
    ("MaximumDiffingTime", "Coffer does not diff against the store, so there is nothing to bound"),
    ("MaxFileTimeInFuture", "Coffer compares size, times and inode, not the time alone"),
    ("ExtendedLogging", "use `coffer -vv daemon` or RUST_LOG=debug"),
    ("LogAllFileAccess", "use `coffer -vv daemon` or RUST_LOG=debug"),
    ("KeepAliveTime", "Coffer's connections keep themselves alive"),
    ("StoreObjectInfoFile", "the daemon keeps its state in the cache (daemon.json)"),
    (
        "PidFile",
        "run `coffer daemon --foreground` under systemd (contrib/systemd), or find it with `coffer ctl status`",
    ),
    ("SyncAllowScript", "use backup_window, or drive snapshot mode with `coffer ctl sync` from a timer"),
    ("MaximumUploadedBytes", "the store's limits are set per account on the nodes"),
];

/// Converts a bbackupd.conf text.
pub fn import(text: &str) -> Result<Imported> {
    if text.len() > MAX_TEXT {
        return Err(Error::Invalid("bbackupd.conf is larger than 1 MiB; is it the right file?".into()));
    }
    let top = parse(text)?;
    let mut notes = Vec::new();
    let mut config = ClientConfig { keys: Some("client.keys".into()), ..ClientConfig::default() };
    let mut daemon = DaemonConfig { mode: Mode::Lazy, ..DaemonConfig::default() };
    let mut tls = (None, None, None);
    for (key, value) in &top.entries {
        let seconds = || -> Result<Duration> {
            value.parse::<u64>().map(Duration::from_secs).map_err(|_| {
                Error::Invalid(format!("bbackupd.conf: {key} = {value} is not a number of seconds"))
            })
        };
        match key.as_str() {
            "StoreHostname" => store_hosts(value, &mut config, &mut notes),
            "KeysFile" => notes.push(format!(
                "KeysFile {value}: Box Backup's keys cannot be used; `coffer init` makes Coffer's keys file \
                 (keys = \"client.keys\"): keep a copy of it somewhere safe"
            )),
            "CertificateFile" => tls.0 = Some(PathBuf::from(value)),
            "PrivateKeyFile" => tls.1 = Some(PathBuf::from(value)),
            "TrustedCAsFile" => tls.2 = Some(PathBuf::from(value)),
            "DataDirectory" => config.cache = Some(PathBuf::from(value)),
            "NotifyScript" => {
                daemon.notify = Some(value.into());
                notes.push(
                    "NotifyScript: Coffer runs it with its own event names (backup-ok, backup-error, store-full, \
                     read-errors, deletions-held, not-backed-up, daemon-started, daemon-stopped) and a JSON \
                     description on stdin"
                        .into(),
                );
            }
            "UpdateStoreInterval" => daemon.update_interval = seconds()?,
            "MinimumFileAge" => daemon.minimum_file_age = seconds()?,
            "MaxUploadWait" => daemon.max_upload_wait = seconds()?,
            "AutomaticBackup" => {
                daemon.mode = if value.eq_ignore_ascii_case("no") { Mode::Snapshot } else { Mode::Lazy }
            }
            "CommandSocket" => daemon.control = Some(value.into()),
            other => notes.push(no_counterpart(other, value)),
        }
    }
    if let (Some(cert), Some(key), Some(ca)) = tls {
        config.tls = Some(TlsFiles::new(cert, key, ca));
        notes.push(
            "CertificateFile, PrivateKeyFile, TrustedCAsFile: these must be certificates of Coffer's CA \
             (`coffer-admin ca issue-client`); Box Backup's are refused by Coffer's nodes"
                .into(),
        );
    }
    for (name, block) in &top.blocks {
        match name.as_str() {
            "BackupLocations" => {
                for (location, body) in &block.blocks {
                    config.locations.push(location_config(location, body, &mut notes)?);
                }
            }
            other => {
                for (key, value) in &block.entries {
                    notes.push(no_counterpart(&format!("{other}.{key}"), value));
                }
            }
        }
    }
    if config.store.is_none() {
        notes.push("no StoreHostname: give `store` (coffer://HOST:PORT or file:///PATH) before use".into());
    }
    config.daemon = daemon;
    Ok(Imported { config, notes })
}

fn no_counterpart(key: &str, value: &str) -> String {
    let last = key.rsplit('.').next().unwrap_or(key);
    match NO_COUNTERPART.iter().find(|(k, _)| *k == last) {
        Some((_, why)) => format!("{key} = {value}: no counterpart; {why}"),
        None => format!("{key} = {value}: not a setting this importer knows; not converted"),
    }
}

/// `StoreHostname` may list several hosts (Box Backup 0.20's server group).
fn store_hosts(value: &str, config: &mut ClientConfig, notes: &mut Vec<String>) {
    let urls: Vec<String> =
        value
            .split([';', ',', ' ', '\t'])
            .filter(|h| !h.is_empty())
            .map(|h| {
                if h.contains(':') { format!("coffer://{h}") } else { format!("coffer://{h}:{DEFAULT_PORT}") }
            })
            .collect();
    config.store = urls.first().cloned();
    if urls.len() > 1 {
        config.nodes = urls;
    }
    notes.push(format!(
        "StoreHostname: store hosts without a port were given Coffer's port {DEFAULT_PORT} (Box Backup's was 2201)"
    ));
}

fn location_config(name: &str, body: &Block, notes: &mut Vec<String>) -> Result<LocationConfig> {
    let path = body
        .get("Path")
        .ok_or_else(|| Error::Invalid(format!("bbackupd.conf: location `{name}` has no Path")))?;
    let has_always = body.entries.iter().any(|(k, _)| k.starts_with("AlwaysInclude"));
    let mut includes = Vec::new();
    let mut excludes = Vec::new();
    for (key, value) in &body.entries {
        let exact =
            |on| RuleSpec { action: Action::Include, on, glob: Some(globset::escape(value)), regex: None };
        let regex = |on| RuleSpec { action: Action::Include, on, glob: None, regex: Some(value.clone()) };
        let (rule, include) = match key.as_str() {
            "Path" => continue,
            "AlwaysIncludeFile" => (exact(Target::Files), true),
            "AlwaysIncludeFilesRegex" => (regex(Target::Files), true),
            "AlwaysIncludeDir" => (exact(Target::Dirs), true),
            "AlwaysIncludeDirsRegex" => (regex(Target::Dirs), true),
            "ExcludeFile" => (exact(Target::Files), false),
            "ExcludeFilesRegex" => (regex(Target::Files), false),
            "ExcludeDir" => (exact(Target::Dirs), false),
            "ExcludeDirsRegex" => (regex(Target::Dirs), false),
            other => {
                notes.push(no_counterpart(&format!("BackupLocations.{name}.{other}"), value));
                continue;
            }
        };
        if include {
            includes.push(rule);
        } else {
            let action = match rule.on {
                Target::Dirs if has_always => Action::Descend,
                _ => Action::Exclude,
            };
            excludes.push(RuleSpec { action, ..rule });
        }
    }
    if has_always && excludes.iter().any(|r| r.action == Action::Descend) {
        notes.push(format!(
            "location `{name}`: its excluded directories are walked (`descend`) so that the always-included \
             entries inside them are still found"
        ));
    }
    let rules = includes.into_iter().chain(excludes).collect();
    Ok(LocationConfig { name: name.to_string(), path: path.into(), rules })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_files_name_the_line() {
        for (text, want) in [
            ("Loc\nPath = /x\n", "line 2: block `Loc` is not followed by `{`"),
            ("}\n", "line 1: `}` closes nothing"),
            ("A\n{\nB = 1\n", "block `A` is not closed"),
            ("{\n", "line 1: `{` without a block name"),
            ("MinimumFileAge = soon\n", "MinimumFileAge = soon is not a number of seconds"),
            ("BackupLocations\n{\nhome\n{\nExcludeDir = /x\n}\n}\n", "location `home` has no Path"),
        ] {
            let e = import(text).err().expect("refused").to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}

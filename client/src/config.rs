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
//! ```
//!
//! Command-line flags and environment variables override the file.

use std::path::{Path, PathBuf};

use coffer_proto::tls::TlsFiles;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<ClientConfig> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let mut config: ClientConfig =
            toml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| *p = base.join(&*p);
        config.keys.as_mut().map(resolve);
        config.cache.as_mut().map(resolve);
        if let Some(tls) = config.tls.as_mut() {
            tls.relative_to(base);
        }
        Ok(config)
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
}

//! The admin tool's TOML configuration (`coffer-admin --config FILE`).
//!
//! ```toml
//! node = "coffer://127.0.0.1:7101"   # the node to talk to
//! nodes = ["coffer://127.0.0.1:7102"] # tried in order when it does not answer
//!
//! [tls]                              # relative paths are relative to this file
//! cert = "admin.crt"
//! key = "admin.key"
//! ca = "ca.crt"
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use coffer_proto::tls::TlsFiles;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Other nodes of the group, tried in order when `node` does not answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
}

impl AdminConfig {
    pub fn load(path: &Path) -> Result<AdminConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: AdminConfig = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let base = coffer_proto::config::base_dir(path).with_context(|| format!("{}", path.display()))?;
        if let Some(tls) = config.tls.as_mut() {
            tls.relative_to(&base);
        }
        Ok(config)
    }
}

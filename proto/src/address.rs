//! Store addresses as people write them: `file:///path` for a local or
//! removable drive, `coffer://host:port` for a store node. Every program
//! (client, admin tool, failover list) parses them here.

use std::fmt;
use std::path::PathBuf;

/// A parsed store address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file:///path`: a local or removable drive.
    Local(PathBuf),
    /// `coffer://host:port`: a store node.
    Remote { host: String, port: u16 },
}

/// An address that is neither form; the message shows both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported store address `{0}` (expected file:///path/to/store or coffer://host:port)")]
pub struct BadStoreUrl(pub String);

impl StoreUrl {
    pub fn parse(url: &str) -> Result<StoreUrl, BadStoreUrl> {
        let bad = || BadStoreUrl(url.to_string());
        if let Some(path) = url.strip_prefix("file://") {
            return if path.is_empty() { Err(bad()) } else { Ok(StoreUrl::Local(PathBuf::from(path))) };
        }
        let addr = url.strip_prefix("coffer://").ok_or_else(bad)?.trim_end_matches('/');
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        Ok(StoreUrl::Remote { host: host.to_string(), port })
    }

    /// A node's address given bare (`host:port`) or as `coffer://host:port`,
    /// as node lists and `--node` accept both: its host and port.
    pub fn node(address: &str) -> Result<(String, u16), BadStoreUrl> {
        let url = if address.contains("://") { address.to_string() } else { format!("coffer://{address}") };
        match StoreUrl::parse(&url) {
            Ok(StoreUrl::Remote { host, port }) => Ok((host, port)),
            _ => Err(BadStoreUrl(address.to_string())),
        }
    }
}

/// `host:port` as a node list holds it (brackets around an IPv6 host).
pub fn node_address(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Local(path) => write!(f, "file://{}", path.display()),
            StoreUrl::Remote { host, port } => write!(f, "coffer://{}", node_address(host, *port)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(StoreUrl::parse("file:///a/b").unwrap(), StoreUrl::Local("/a/b".into()));
        assert_eq!(
            StoreUrl::parse("coffer://127.0.0.1:7101").unwrap(),
            StoreUrl::Remote { host: "127.0.0.1".into(), port: 7101 }
        );
        assert_eq!(
            StoreUrl::parse("coffer://[::1]:7101/").unwrap(),
            StoreUrl::Remote { host: "::1".into(), port: 7101 }
        );
        for bad in ["", "file://", "coffer://host", "coffer://:1", "coffer://h:99999", "http://x:1"] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn node_addresses_with_or_without_scheme() {
        assert_eq!(StoreUrl::node("h:1").unwrap(), ("h".to_string(), 1));
        assert_eq!(StoreUrl::node("coffer://[::1]:2/").unwrap(), ("::1".to_string(), 2));
        assert_eq!(node_address("::1", 2), "[::1]:2");
        assert_eq!(StoreUrl::parse("coffer://[::1]:2").unwrap().to_string(), "coffer://[::1]:2");
        for bad in ["", "h", "file:///x", "http://h:1"] {
            assert!(StoreUrl::node(bad).is_err(), "{bad} accepted");
        }
    }
}

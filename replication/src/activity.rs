//! What the group knows of an account's clients: heartbeats.
//!
//! Nodes report what they saw — a login (client version, host, the last
//! failure the client could not deliver before), a committed backup with
//! the account's usage after it — as [`Heartbeat`]s through the Raft log.
//! Every node then holds the same [`Activity`] for every account, which is
//! what `coffer-admin report` reads to find silent clients and accounts
//! over their limits, and what group limits are summed from.
//!
//! Reports arrive late, twice, or out of order (forwarded, retried, from
//! two replicas): merging keeps each field's newest report, so the result
//! does not depend on the order the log holds them in.

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// Longest client version string kept.
pub const MAX_VERSION: usize = 64;
/// Longest host name kept.
pub const MAX_HOST: usize = 255;
/// Longest error message kept.
pub const MAX_ERROR: usize = 1024;

/// An account's clients as the group last heard of them; times are
/// nanoseconds since the epoch, 0 for never.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub login_ns: i64,
    pub client_version: String,
    pub host: String,
    /// The node the client last logged in to.
    pub node: NodeId,
    /// The last backup set committed.
    pub commit_ns: i64,
    /// The last failure a client reported, and when it happened; an error
    /// older than `commit_ns` has been followed by a good backup.
    pub error: String,
    pub error_ns: i64,
    /// Live bytes of the account at `usage_marker`, as the node that
    /// reported it held them (what group limits add up).
    pub live_bytes: u64,
    pub usage_marker: u64,
}

/// One node's report of what it saw; zero and empty fields report nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub login_ns: i64,
    pub client_version: String,
    pub host: String,
    pub node: NodeId,
    pub commit_ns: i64,
    pub error: String,
    pub error_ns: i64,
    /// The account's store marker and live bytes, reported together.
    pub usage: Option<(u64, u64)>,
}

impl Heartbeat {
    /// Refuses values too long to keep (nodes cut what clients send to
    /// these lengths before proposing; see [`cut`]).
    pub fn validate(&self) -> Result<(), String> {
        for (what, value, max) in [
            ("client version", &self.client_version, MAX_VERSION),
            ("host name", &self.host, MAX_HOST),
            ("error", &self.error, MAX_ERROR),
        ] {
            if value.len() > max {
                return Err(format!("heartbeat {what} is {} bytes long; at most {max}", value.len()));
            }
        }
        Ok(())
    }
}

impl Activity {
    /// Takes what `beat` reports that is newer than what is known.
    pub fn merge(&mut self, beat: &Heartbeat) {
        if beat.login_ns > self.login_ns {
            self.login_ns = beat.login_ns;
            self.client_version.clone_from(&beat.client_version);
            self.host.clone_from(&beat.host);
            self.node = beat.node;
        }
        self.commit_ns = self.commit_ns.max(beat.commit_ns);
        if beat.error_ns > self.error_ns && !beat.error.is_empty() {
            self.error_ns = beat.error_ns;
            self.error.clone_from(&beat.error);
        }
        if let Some((marker, bytes)) = beat.usage.filter(|(marker, _)| *marker >= self.usage_marker) {
            self.usage_marker = marker;
            self.live_bytes = bytes;
        }
    }

    /// The last failure, unless a backup committed after it.
    pub fn open_error(&self) -> Option<&str> {
        (self.error_ns > self.commit_ns && !self.error.is_empty()).then_some(self.error.as_str())
    }
}

/// `text` without control characters, cut to at most `max` bytes on a
/// character boundary: what a node keeps of a string a client sent.
pub fn cut(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(ns: i64, version: &str) -> Heartbeat {
        Heartbeat { login_ns: ns, client_version: version.into(), ..Default::default() }
    }

    #[test]
    fn merging_keeps_the_newest_report_of_each_field_in_any_order() {
        let beats = [
            login(10, "0.1"),
            Heartbeat { commit_ns: 20, usage: Some((5, 500)), ..Default::default() },
            login(30, "0.2"),
            Heartbeat { error: "disc full".into(), error_ns: 25, ..Default::default() },
            Heartbeat { commit_ns: 15, usage: Some((4, 400)), ..Default::default() },
        ];
        let mut forwards = Activity::default();
        beats.iter().for_each(|b| forwards.merge(b));
        let mut backwards = Activity::default();
        beats.iter().rev().for_each(|b| backwards.merge(b));
        assert_eq!(forwards, backwards);
        assert_eq!((forwards.login_ns, forwards.client_version.as_str()), (30, "0.2"));
        assert_eq!((forwards.commit_ns, forwards.live_bytes, forwards.usage_marker), (20, 500, 5));
        assert_eq!(forwards.open_error(), Some("disc full"));
        forwards.merge(&Heartbeat { commit_ns: 40, ..Default::default() });
        assert_eq!(forwards.open_error(), None, "a later backup closes the error");
    }

    #[test]
    fn client_strings_are_cut_on_character_boundaries_and_cleaned() {
        assert_eq!(cut("héllo\nworld", 6), "héllo");
        assert_eq!(cut("a\tb", 10), "a b");
        assert!(cut(&"é".repeat(1000), MAX_ERROR).len() <= MAX_ERROR);
        let long = Heartbeat { host: "h".repeat(MAX_HOST + 1), ..Default::default() };
        assert!(long.validate().unwrap_err().contains("host name"));
    }
}

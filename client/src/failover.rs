//! The failover connector (DESIGN §6, Box Backup FR 8.1): which store node
//! a client talks to.
//!
//! ```text
//! S = last server successfully connected (persisted), P = primary (first configured)
//! loop: try S; if S == P and it failed, try P once more; else next server in the list;
//!       until connected or every server tried; if none, back off and start again
//! CSM_S = marker from S
//! if S != P: try P with a short timeout; if P answers and its marker is the expected one
//!            (P has caught up), switch to P
//! ```
//!
//! The list is the configured stores (the first is P), then the group's
//! nodes as the last login reported them, then any node a refusing server
//! redirected us to. Only failures of the server itself move on to the next
//! one; a wrong keys file or a busy account is the same everywhere and is
//! returned at once.

use std::path::PathBuf;
use std::time::Duration;

use coffer_proto::address::{StoreUrl, node_address};

use crate::error::{Error, Result};

/// How hard to try.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Passes over the whole list before giving up.
    pub rounds: u32,
    /// Pause after the first fruitless pass; doubles after each.
    pub backoff: Duration,
    /// Time allowed to connect and log in to one server.
    pub timeout: Duration,
    /// Time allowed to the primary when checking whether it caught up.
    pub probe_timeout: Duration,
    /// Whether to go where a node that does not hold the account sends us.
    pub redirects: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            rounds: 4,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(3),
            redirects: true,
        }
    }
}

/// The servers a client may use, and where it remembers the last good one.
#[derive(Debug, Clone)]
pub struct Servers {
    /// `host:port` of each server, the primary first, without duplicates.
    pub list: Vec<String>,
    /// Where S is persisted between runs.
    pub last_file: Option<PathBuf>,
}

impl Servers {
    /// `configured` in order, then `learnt`; `coffer://` prefixes dropped.
    pub fn new(configured: &[String], learnt: &[String], last_file: Option<PathBuf>) -> Servers {
        let mut servers = Servers { list: Vec::new(), last_file };
        for address in configured.iter().chain(learnt) {
            servers.add(address);
        }
        servers
    }

    /// Adds `address` unless listed; returns its place, None if it is not
    /// a node's address (the configured ones were checked at start; a bad
    /// one that a node reported is dropped).
    fn add(&mut self, address: &str) -> Option<usize> {
        let (host, port) = StoreUrl::node(address).ok()?;
        let address = node_address(&host, port);
        Some(self.list.iter().position(|a| *a == address).unwrap_or_else(|| {
            self.list.push(address);
            self.list.len() - 1
        }))
    }

    pub fn primary(&self) -> &str {
        &self.list[0]
    }

    /// S as persisted by the last run that connected, if it is still listed.
    pub fn last(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.last_file.as_ref()?).ok()?;
        let last = text.trim();
        self.list.iter().any(|a| a == last).then(|| last.to_string())
    }

    /// Persists S. Losing it costs only a detour on the next run, so errors are logged.
    pub fn remember_last(&self, address: &str) {
        let Some(path) = &self.last_file else { return };
        if let Err(e) = crate::cache::write_private(path, format!("{address}\n").as_bytes()) {
            tracing::warn!(path = %path.display(), error = %e, "could not remember the last store node");
        }
    }

    /// The order of one pass: S, P again if S is P, then the rest of the
    /// list after S, wrapping round.
    fn pass(&self, start: usize) -> Vec<usize> {
        let n = self.list.len();
        let mut order = vec![start];
        if start == 0 {
            order.push(0);
        }
        order.extend((1..n).map(|k| (start + k) % n));
        order
    }
}

/// A session as the connector needs to see it.
pub trait Connection {
    /// The client store marker the server reported at login.
    fn marker(&self) -> u64;
}

/// Connects by the algorithm above. `attempt` opens and logs in one session
/// to `address` within the given time. Returns the address used and its session.
pub fn connect<S: Connection>(
    servers: &mut Servers,
    policy: &Policy,
    mut attempt: impl FnMut(&str, Duration) -> Result<S>,
) -> Result<(String, S)> {
    let (address, session) = first_that_answers(servers, policy, &mut attempt)?;
    let primary = servers.primary().to_string();
    if address == primary {
        return Ok((address, session));
    }
    // Back to the primary only once it holds what S holds.
    match attempt(&primary, policy.probe_timeout) {
        Ok(p) if p.marker() == session.marker() => {
            tracing::info!(%primary, marker = p.marker(), "the primary has caught up; using it again");
            Ok((primary, p))
        }
        Ok(p) => {
            tracing::info!(%primary, its = p.marker(), ours = session.marker(), "the primary is behind; staying");
            Ok((address, session))
        }
        Err(e) => {
            tracing::debug!(%primary, error = %e, "the primary does not answer yet");
            Ok((address, session))
        }
    }
}

fn first_that_answers<S>(
    servers: &mut Servers,
    policy: &Policy,
    attempt: &mut impl FnMut(&str, Duration) -> Result<S>,
) -> Result<(String, S)> {
    let mut failures = Vec::new();
    let mut pause = policy.backoff;
    for round in 0..policy.rounds.max(1) {
        if round > 0 {
            tracing::info!(?pause, "no store node answered; trying again");
            std::thread::sleep(pause);
            pause *= 2;
        }
        failures.clear();
        let start = servers.last().and_then(|s| servers.list.iter().position(|a| *a == s)).unwrap_or(0);
        let mut order = servers.pass(start);
        let mut k = 0;
        while k < order.len() {
            let address = servers.list[order[k]].clone();
            k += 1;
            match attempt(&address, policy.timeout) {
                Ok(session) => return Ok((address, session)),
                Err(e) if e.fails_over() => {
                    tracing::info!(%address, error = %e, "store node unavailable; trying the next");
                    if let (true, Error::NotHeld { elsewhere, .. }) = (policy.redirects, &e) {
                        redirect(servers, &mut order, k, elsewhere);
                    }
                    failures.push(e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
    }
    Err(Error::NoServer { tried: failures.join("; ") })
}

/// Puts the servers a refusing node named next in this pass (adding them
/// to the list if new), in the order it gave: the account's primary first.
fn redirect(servers: &mut Servers, order: &mut Vec<usize>, next: usize, elsewhere: &[String]) {
    let mut at = next;
    for address in elsewhere {
        let Some(k) = servers.add(address) else { continue };
        if order[..next].contains(&k) {
            continue; // already tried in this pass
        }
        if let Some(p) = order[at..].iter().position(|o| *o == k) {
            order.remove(at + p);
        }
        order.insert(at, k);
        at += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fake(u64);
    impl Connection for Fake {
        fn marker(&self) -> u64 {
            self.0
        }
    }

    fn servers(dir: &tempfile::TempDir, last: Option<&str>) -> Servers {
        let path = dir.path().join("last-node");
        let s =
            Servers::new(&["coffer://p:1".into(), "b:2".into()], &["c:3".into(), "b:2".into()], Some(path));
        if let Some(last) = last {
            s.remember_last(last);
        }
        s
    }

    fn down(address: &str) -> Error {
        Error::Unreachable { node: address.into(), message: "refused".into() }
    }

    const QUICK: Policy = Policy {
        rounds: 2,
        backoff: Duration::from_millis(1),
        timeout: Duration::from_secs(1),
        probe_timeout: Duration::from_millis(100),
        redirects: true,
    };

    #[test]
    fn the_primary_is_tried_twice_then_the_others_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = servers(&dir, None);
        assert_eq!(s.list, ["p:1", "b:2", "c:3"]);
        let mut tried = Vec::new();
        let (used, _) = connect(&mut s, &QUICK, |a, _| {
            tried.push(a.to_string());
            if a == "c:3" { Ok(Fake(5)) } else { Err(down(a)) }
        })
        .unwrap();
        assert_eq!(used, "c:3");
        // The last probe is the primary, checked for having caught up.
        assert_eq!(tried, ["p:1", "p:1", "b:2", "c:3", "p:1"]);
    }

    #[test]
    fn stick_to_the_last_server_until_the_primary_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = servers(&dir, Some("b:2"));
        let mut primary_marker = 3;
        let run = |s: &mut Servers, primary_marker: u64| {
            let mut tried = Vec::new();
            let (used, session) = connect(s, &QUICK, |a, _| {
                tried.push(a.to_string());
                Ok(Fake(if a == "p:1" { primary_marker } else { 7 }))
            })
            .unwrap();
            (used, session.0, tried)
        };
        assert_eq!(run(&mut s, primary_marker), ("b:2".into(), 7, vec!["b:2".into(), "p:1".into()]));
        primary_marker = 7;
        assert_eq!(run(&mut s, primary_marker).0, "p:1");
    }

    #[test]
    fn wrong_keys_stop_at_once_and_an_empty_pass_backs_off_then_names_every_failure() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = servers(&dir, None);
        let mut calls = 0;
        let wrong = connect(&mut s, &QUICK, |_, _| -> Result<Fake> {
            calls += 1;
            Err(Error::WrongKeys { expected: "a".into(), found: "b".into() })
        });
        assert!(matches!(wrong, Err(Error::WrongKeys { .. })));
        assert_eq!(calls, 1);
        let none = connect(&mut s, &QUICK, |a, _| -> Result<Fake> { Err(down(a)) }).unwrap_err();
        let text = none.to_string();
        assert!(text.contains("p:1") && text.contains("b:2") && text.contains("c:3"), "{text}");
    }

    #[test]
    fn a_node_that_no_longer_holds_the_account_redirects() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Servers::new(&["p:1".into()], &[], Some(dir.path().join("last")));
        let (used, _) = connect(&mut s, &QUICK, |a, _| match a {
            "p:1" => Err(Error::NotHeld {
                node: a.into(),
                message: "moved".into(),
                elsewhere: vec!["coffer://n:9".into()],
            }),
            _ => Ok(Fake(1)),
        })
        .unwrap();
        assert_eq!(used, "n:9");
        assert_eq!(s.list, ["p:1", "n:9"]);

        // Named nodes come next, ahead of the rest of the list.
        let mut s = Servers::new(&["p:1".into(), "b:2".into(), "c:3".into()], &[], None);
        let mut tried = Vec::new();
        let (used, _) = connect(&mut s, &QUICK, |a, _| {
            tried.push(a.to_string());
            match a {
                "p:1" => Err(Error::NotHeld {
                    node: a.into(),
                    message: "moved".into(),
                    elsewhere: vec!["c:3".into()],
                }),
                _ => Ok(Fake(1)),
            }
        })
        .unwrap();
        assert_eq!((used.as_str(), &tried[..2]), ("c:3", &["p:1".to_string(), "c:3".to_string()][..]));
    }
}

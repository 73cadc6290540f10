//! The state a node's services share: the store, the group, the syncer and
//! the connections with their sessions.
//!
//! Every accepted connection becomes a [`Connection`] holding its caller's
//! role (from the certificate) and its session (the logged-in account and,
//! for a writing client, the account's writer). When the connection closes
//! and its last request ends, the connection is dropped and the writer with
//! it, so an account is never left locked by a dead client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use coffer_proto::tls::Role;
use coffer_replication::Group;
use coffer_store::{AccountId, AccountWriter, Store};
use tracing::{debug, info};

use crate::alerts::Alerts;
use crate::metrics::Metrics;
use crate::syncer::Syncer;
use crate::throttle::LoginThrottle;
use crate::transfer::Transfers;

/// State shared by every connection of a node.
pub struct Node {
    pub name: String,
    pub store: Store,
    /// This node's member of the server group and its account database.
    pub group: Arc<Group>,
    pub grace: Duration,
    pub throttle: LoginThrottle,
    pub started_ns: i64,
    /// TLS handshakes completed since the node started.
    pub connections: AtomicU64,
    pub handshakes_failed: AtomicU64,
    /// Fast sync with the other replicas of this node's accounts.
    pub syncer: Arc<Syncer>,
    /// A writing client silent this long may be replaced by a new login.
    pub idle_writer: Duration,
    /// How many nodes must hold a set before its commit is acknowledged,
    /// and how long the commit waits for them.
    pub commit_replicas: usize,
    pub commit_wait: Duration,
    /// The connection holding each account's client writer.
    pub writers: Mutex<HashMap<AccountId, Weak<Connection>>>,
    /// Uploads and downloads running, per account.
    pub transfers: Transfers,
    /// What requests move, for `/metrics`.
    pub metrics: Metrics,
    pub alerts: Alerts,
}

/// What one connection has established.
#[derive(Default)]
pub struct Session {
    pub account: Option<AccountId>,
    pub writer: Option<AccountWriter>,
    /// When the client last made a request on this connection.
    pub last_request: Option<Instant>,
    /// The writer was handed to a newer login of the same account.
    pub taken_over: bool,
}

impl Node {
    /// Takes the writer of `account` from a connection whose client has
    /// made no request for [`Node::idle_writer`] (a client stopped, asleep
    /// or cut off, whose connection the keep-alives have not yet closed).
    /// Its unflushed uploads are dropped: they were never committed, and
    /// the client sends them again. Returns whether a writer was taken.
    pub fn take_idle_writer(&self, account: AccountId) -> bool {
        let holder = self.writers.lock().unwrap().get(&account).and_then(Weak::upgrade);
        let Some(holder) = holder else { return false };
        // A connection with a request under way is not idle.
        let Ok(mut session) = holder.session.try_lock() else { return false };
        let idle = session.last_request.is_some_and(|t| t.elapsed() >= self.idle_writer);
        if !idle || session.writer.is_none() {
            return false;
        }
        info!(account, addr = %holder.addr, "taking the writer from an idle client for a new login");
        session.writer = None;
        session.taken_over = true;
        true
    }
}

/// One authenticated connection, as every request on it sees it.
pub struct Connection {
    pub role: Role,
    /// The account id a client certificate was issued for.
    pub account_id: Option<u64>,
    pub addr: SocketAddr,
    pub session: Mutex<Session>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        debug!(caller = %self.role, addr = %self.addr, "connection closed");
    }
}

/// Whoever is on the other end of a connection: a client, an operator or
/// another node, as its certificate says.
pub type Caller = Arc<Connection>;

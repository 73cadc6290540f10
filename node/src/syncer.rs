//! When fast sync runs, and with whom.
//!
//! - **After a change**: a client's commit or forget, or sets that arrived
//!   by sync, put the account in the journal for every other replica and
//!   wake the syncer, which pushes at once.
//! - **From the journal**: an entry stays until a sync with that peer
//!   succeeds, so a peer that was down is caught up when it comes back, even
//!   across a restart of this node. Failing peers are retried with a delay
//!   that doubles up to [`MAX_RETRY`], or at once when the peer calls us
//!   (Raft or sync): it is reachable again.
//! - **New replicas**: when the group adds a node to an account's replica
//!   set (placement top-up, migration), that node is owed the whole account.
//! - **Anti-entropy**: every `anti_entropy`, each held account is compared
//!   with each other replica; in-sync replicas cost one round trip.
//!
//! One sync per account runs at a time on a node. Clients come first: a
//! sync that needs the account's writer while a client has it stops "busy"
//! and is retried from the journal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coffer_proto::ObjectId;
use coffer_replication::fastsync::{self, Replica, SyncError, SyncReport};
use coffer_replication::journal::Owed;
use coffer_replication::remote::RemoteReplica;
use coffer_replication::{Group, NodeId};
use coffer_store::{AccountId, Store};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::replica::LocalReplica;

/// The longest wait before retrying a peer that failed.
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// How often the journal is looked at when nothing wakes the syncer.
const TICK: Duration = Duration::from_secs(1);

/// Totals since the node started, for `coffer-admin status`.
#[derive(Debug, Default)]
pub struct SyncCounters {
    pub syncs: AtomicU64,
    pub in_sync: AtomicU64,
    pub failures: AtomicU64,
    pub round_trips: AtomicU64,
    pub sets_copied: AtomicU64,
    pub bytes_copied: AtomicU64,
}

pub struct Syncer {
    store: Store,
    group: Arc<Group>,
    /// This node's name, as its replicas are called in reports.
    name: String,
    wake: Notify,
    retry: Duration,
    anti_entropy: Duration,
    /// One sync per account at a time.
    locks: Mutex<HashMap<AccountId, Arc<tokio::sync::Mutex<()>>>>,
    /// Peers that failed: when to try again, and the delay after that.
    backoff: Mutex<HashMap<NodeId, (Instant, Duration)>>,
    /// Each account's replica set as last seen, to notice new replicas.
    replicas: Mutex<HashMap<AccountId, Vec<NodeId>>>,
    pub counters: SyncCounters,
}

impl Syncer {
    pub fn new(store: Store, group: Arc<Group>, name: &str, retry: Duration, anti_entropy: Duration) -> Self {
        Syncer {
            store,
            group,
            name: name.to_string(),
            wake: Notify::new(),
            retry: retry.max(Duration::from_millis(100)),
            anti_entropy: anti_entropy.max(Duration::from_secs(1)),
            locks: Mutex::default(),
            backoff: Mutex::default(),
            replicas: Mutex::default(),
            counters: SyncCounters::default(),
        }
    }

    /// The account changed here: every other replica is owed a sync.
    pub fn changed(&self, account: AccountId) {
        self.owe(account, None);
    }

    fn owe(&self, account: AccountId, except: Option<NodeId>) {
        let peers: Vec<_> = self.other_replicas(account).into_iter().filter(|p| Some(*p) != except).collect();
        if peers.is_empty() {
            return;
        }
        if let Err(e) = self.group.journal().mark(account, &peers) {
            warn!(account, error = %e, "could not record a change in the sync journal");
        }
        self.wake.notify_one();
    }

    /// Syncs one account with one peer now.
    pub async fn sync_with(&self, account: AccountId, peer: NodeId) -> Result<SyncReport, SyncError> {
        let member = self.group.read(|s| s.member(peer)).ok_or_else(|| SyncError::Replica {
            replica: format!("#{peer}"),
            problem: "not a member of the group".into(),
        })?;
        let lock = self.locks.lock().unwrap().entry(account).or_default().clone();
        let _one_at_a_time = lock.lock().await;
        let local = self.local(account);
        let remote = RemoteReplica::new(self.group.peers().clone(), &member.name, &member.addr, account);
        let result = fastsync::sync(&local, &remote).await;
        let c = &self.counters;
        c.syncs.fetch_add(1, Ordering::Relaxed);
        c.round_trips.fetch_add(remote.round_trips(), Ordering::Relaxed);
        match &result {
            Ok(report) => {
                c.in_sync.fetch_add(report.in_sync as u64, Ordering::Relaxed);
                c.sets_copied.fetch_add(report.sets_fetched + report.sets_sent, Ordering::Relaxed);
                c.bytes_copied.fetch_add(report.bytes_copied, Ordering::Relaxed);
                if report.sets_fetched + report.sets_sent + report.tombstones_applied > 0 {
                    info!(account, peer = %member.name, ?report, "fast sync copied");
                }
                if report.sets_fetched > 0 || report.tombstones_applied > 0 {
                    // What arrived here may be news to the other replicas too.
                    self.owe(account, Some(peer));
                }
            }
            Err(_) => {
                c.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// A replicated commit: pushes the set a client just committed here to
    /// the account's other replicas, concurrently, until `wanted` nodes
    /// (this one included) hold it and all it names, or `wait` has passed.
    /// Returns how many hold it. Pushes still running at the end are
    /// dropped; the journal (see [`Syncer::changed`]) finishes the job.
    pub async fn replicate(
        self: &Arc<Self>,
        account: AccountId,
        set: ObjectId,
        wanted: usize,
        wait: Duration,
    ) -> usize {
        let peers = self.other_replicas(account);
        let need = wanted.saturating_sub(1).min(peers.len());
        let mut held = 1;
        if need == 0 {
            return held;
        }
        let committed_ns = match self.store.set_record(account, &set) {
            Ok(record) => record.map_or(0, |r| r.committed_ns),
            Err(e) => {
                warn!(account, error = %e, "cannot read the set just committed");
                return held;
            }
        };
        let deadline = Instant::now() + wait;
        let mut pushes = tokio::task::JoinSet::new();
        for peer in peers {
            let syncer = self.clone();
            pushes.spawn(async move { syncer.push_until(account, peer, set, committed_ns, deadline).await });
        }
        let timeout = tokio::time::sleep_until(deadline.into());
        tokio::pin!(timeout);
        while held <= need {
            tokio::select! {
                done = pushes.join_next() => match done {
                    Some(Ok(true)) => held += 1,
                    Some(_) => {}
                    None => break,
                },
                _ = &mut timeout => break,
            }
        }
        held
    }

    /// Syncs an account with every other replica now (`coffer-admin sync`).
    pub async fn sync_all_replicas(
        &self,
        account: AccountId,
    ) -> Vec<(String, Result<SyncReport, SyncError>)> {
        let mut out = Vec::new();
        for peer in self.other_replicas(account) {
            let name = self.group.read(|s| s.member_name(peer));
            out.push((name, self.sync_with(account, peer).await));
        }
        out
    }

    /// Syncs with `peer` unless it is backing off (None), and keeps its
    /// backoff up to date: a busy account is no fault of the peer's.
    async fn attempt(&self, account: AccountId, peer: NodeId) -> Option<Result<SyncReport, SyncError>> {
        if !self.ready(peer) {
            return None;
        }
        let result = self.sync_with(account, peer).await;
        match &result {
            Ok(_) => self.succeeded(peer),
            Err(SyncError::Busy { replica }) => debug!(account, %replica, "sync waits for a client"),
            Err(e) => {
                self.failed(peer);
                debug!(account, error = %e, "fast sync failed; will retry");
            }
        }
        Some(result)
    }

    /// A peer called us: if it was backing off, retry it now. Called on
    /// every peer request, so the common case (nobody backing off) is one lock.
    pub fn heard_from(&self, name: &str) {
        if self.backoff.lock().unwrap().is_empty() {
            return;
        }
        let Some(peer) = self.group.read(|s| s.members().into_iter().find(|m| m.1.name == name).map(|m| m.0))
        else {
            return;
        };
        if self.backoff.lock().unwrap().remove(&peer).is_some() {
            debug!(peer = %name, "peer reachable again; retrying what it is owed");
            self.wake.notify_one();
        }
    }

    fn ready(&self, peer: NodeId) -> bool {
        self.backoff.lock().unwrap().get(&peer).is_none_or(|(at, _)| Instant::now() >= *at)
    }

    fn failed(&self, peer: NodeId) {
        let mut backoff = self.backoff.lock().unwrap();
        let delay = backoff.get(&peer).map_or(self.retry, |(_, d)| (*d * 2).min(MAX_RETRY));
        backoff.insert(peer, (Instant::now() + delay, delay));
    }

    fn succeeded(&self, peer: NodeId) {
        self.backoff.lock().unwrap().remove(&peer);
    }

    /// This node's replica of `account`.
    fn local(&self, account: AccountId) -> LocalReplica {
        LocalReplica::new(self.store.clone(), account, &self.name)
    }

    /// Pushes one set to one peer, again while the peer's account is busy
    /// (with a sync of its own) and time remains; whether the peer holds it.
    async fn push_until(
        &self,
        account: AccountId,
        peer: NodeId,
        set: ObjectId,
        committed_ns: i64,
        deadline: Instant,
    ) -> bool {
        let Some(member) = self.group.read(|s| s.member(peer)) else { return false };
        let local = self.local(account);
        loop {
            let remote = RemoteReplica::new(self.group.peers().clone(), &member.name, &member.addr, account);
            match fastsync::push_set(&local, &remote, set, committed_ns).await {
                Ok(_) => return true,
                Err(SyncError::Busy { .. }) if Instant::now() + Duration::from_millis(100) < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    debug!(account, peer = %member.name, error = %e, "replicated commit: push failed");
                    return false;
                }
            }
        }
    }

    /// The account's replicas other than this node, per the group.
    fn other_replicas(&self, account: AccountId) -> Vec<NodeId> {
        let me = self.group.id();
        self.group
            .read(|s| s.accounts.get(&account).map(|a| a.replicas.clone()))
            .unwrap_or_default()
            .into_iter()
            .filter(|p| *p != me)
            .collect()
    }

    /// Whether this node still holds `account` and `peer` is another replica of it.
    fn still_owed(&self, owed: &Owed) -> bool {
        let me = self.group.id();
        self.group.read(|s| {
            s.accounts
                .get(&owed.account)
                .is_some_and(|a| a.replicas.contains(&me) && a.replicas.contains(&owed.peer))
        }) && owed.peer != me
    }
}

/// Runs the syncer until the process ends.
pub async fn run(syncer: Arc<Syncer>) {
    let mut next_pass = Instant::now();
    loop {
        notice_new_replicas(&syncer);
        settle_journal(&syncer).await;
        if Instant::now() >= next_pass {
            anti_entropy_pass(&syncer).await;
            next_pass = Instant::now() + syncer.anti_entropy;
        }
        tokio::select! {
            _ = syncer.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Puts every replica the group added to an account since last time in the journal.
fn notice_new_replicas(syncer: &Syncer) {
    let me = syncer.group.id();
    let current: HashMap<AccountId, Vec<NodeId>> = syncer.group.read(|s| {
        s.accounts.values().filter(|a| a.replicas.contains(&me)).map(|a| (a.id, a.replicas.clone())).collect()
    });
    let mut seen = syncer.replicas.lock().unwrap();
    for (account, replicas) in &current {
        let before = seen.get(account);
        let added: Vec<_> =
            replicas.iter().copied().filter(|p| *p != me && before.is_none_or(|b| !b.contains(p))).collect();
        if added.is_empty() || before.is_none() {
            continue;
        }
        if let Err(e) = syncer.group.journal().mark(*account, &added) {
            warn!(account, error = %e, "could not record new replicas in the sync journal");
        }
    }
    *seen = current;
}

async fn settle_journal(syncer: &Syncer) {
    let journal = syncer.group.journal();
    let owed = match journal.owed() {
        Ok(owed) => owed,
        Err(e) => return warn!(error = %e, "cannot read the sync journal"),
    };
    for entry in owed {
        if !syncer.still_owed(&entry) {
            let _ = journal.forget(|o| o.peer != entry.peer || o.account != entry.account);
            continue;
        }
        if let Some(Ok(_)) = syncer.attempt(entry.account, entry.peer).await
            && let Err(e) = journal.settle(entry)
        {
            warn!(error = %e, "cannot update the sync journal");
        }
    }
}

async fn anti_entropy_pass(syncer: &Syncer) {
    let me = syncer.group.id();
    let accounts: Vec<AccountId> = syncer
        .group
        .read(|s| s.accounts.values().filter(|a| a.replicas.contains(&me)).map(|a| a.id).collect());
    for account in accounts {
        for peer in syncer.other_replicas(account) {
            if let Some(Err(e)) = syncer.attempt(account, peer).await
                && !matches!(e, SyncError::Busy { .. })
            {
                let _ = syncer.group.journal().mark(account, &[peer]);
            }
        }
    }
}

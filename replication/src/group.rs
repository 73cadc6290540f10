//! The server group as a node sees it: one Raft member holding the account
//! database, the way to change it from any node, and membership.
//!
//! Writes go to the leader. A node that is not the leader forwards the
//! request (with its request id) over the `Peer` service, retrying through
//! leader changes until `write_timeout`; then it answers "no quorum". A
//! leader that has not heard from a majority for two election timeouts
//! refuses at once rather than queueing a change it cannot commit. Reads are
//! local: every node holds the whole database.
//!
//! Membership changes are serialised by a lock on the leader. A joining node
//! is added as a learner, waits until it has caught up (from the log, or a
//! snapshot when the log was purged), and is then promoted to voter.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_proto::config::GroupSection;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, RaftMetrics, ServerState, SnapshotPolicy};
use rustls::ClientConfig;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::info;

use crate::journal::Journal;
use crate::logstore::{LogStore, node_id, open_db};
use crate::network::{Network, PeerError, Peers};
use crate::state::State;
use crate::statemachine::{Shared, StateMachine};
use crate::types::{Applied, Command, Member, NodeId, Outcome, Proposal, Raft, Refusal};

/// Timing and log-size settings of the group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub heartbeat: Duration,
    /// The shortest election timeout; the longest is twice this.
    pub election_timeout: Duration,
    /// Build a snapshot after this many log entries.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, for followers that lag a little.
    pub keep_logs: u64,
    /// How long a change may wait for a leader and a majority.
    pub write_timeout: Duration,
    /// Peer address → address to dial instead (a tunnel, or a test's proxy).
    pub routes: BTreeMap<String, String>,
}

/// The `[group]` section of a node's configuration, as Raft needs it.
impl From<&GroupSection> for GroupConfig {
    fn from(section: &GroupSection) -> Self {
        GroupConfig {
            heartbeat: section.heartbeat,
            election_timeout: section.election_timeout,
            snapshot_every: section.snapshot_every,
            keep_logs: section.keep_logs,
            write_timeout: section.write_timeout,
            routes: section.routes.clone(),
        }
    }
}

/// The defaults of the configuration file.
impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig::from(&GroupSection::default())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum GroupError {
    #[error("no quorum: {0}; the account database cannot change until a majority of the group is reachable")]
    NoQuorum(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(
        "this node is not in a server group yet: run `coffer-admin cluster init` on the first node, or `cluster join` on this one"
    )]
    NotInGroup,
    #[error("this node is already a member of a server group")]
    AlreadyInGroup,
    #[error("{0}")]
    Membership(String),
    #[error("replication storage: {0}")]
    Storage(String),
    #[error("{0}")]
    Peer(String),
    /// The node asked is not (or no longer) the leader; the caller retries.
    #[error("not the leader")]
    NotLeader,
}

impl From<PeerError> for GroupError {
    fn from(e: PeerError) -> Self {
        GroupError::Peer(e.to_string())
    }
}

/// Requests a node sends to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Forwarded {
    Write(Proposal),
    Join { id: NodeId, member: Member },
    Leave { node: String },
    Status,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardReply {
    /// Boxed: an account is much larger than the other replies.
    Outcome(Box<Outcome>),
    Done,
    Status(GroupStatus),
}

/// One member as the leader sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub member: Member,
    /// "leader", "follower" or "learner".
    pub state: String,
    /// The last log index the leader knows the member holds.
    pub log_index: Option<u64>,
    pub lag: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStatus {
    pub reporter: String,
    pub leader: Option<NodeId>,
    pub leader_name: String,
    pub term: u64,
    pub last_log_index: u64,
    pub last_applied: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub members: Vec<MemberStatus>,
}

pub struct Group {
    id: NodeId,
    me: Member,
    raft: Raft,
    shared: Arc<Shared>,
    peers: Arc<Peers>,
    journal: Journal,
    config: GroupConfig,
    membership: tokio::sync::Mutex<()>,
}

impl Group {
    /// Opens the node's replication database in `dir` and starts its Raft
    /// member (which waits, harmlessly, until it is initialised or joined).
    pub async fn open(
        dir: &Path,
        me: Member,
        config: GroupConfig,
        tls: Arc<ClientConfig>,
    ) -> Result<Group, GroupError> {
        let storage = |e: &dyn std::fmt::Display| GroupError::Storage(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| storage(&e))?;
        let db = open_db(dir).map_err(|e| storage(&e))?;
        let id = node_id(&db).map_err(|e| storage(&e))?;
        let state_machine = StateMachine::open(db.clone()).map_err(|e| storage(&e))?;
        let shared = state_machine.shared();
        let peers = Arc::new(Peers::new(tls, config.routes.clone()));
        let raft_config = Config {
            cluster_name: "coffer".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.as_millis() as u64,
            election_timeout_max: 2 * config.election_timeout.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_logs,
            snapshot_max_chunk_size: 1 << 20,
            ..Default::default()
        }
        .validate()
        .map_err(|e| GroupError::Storage(format!("group settings: {e}")))?;
        let journal = Journal::open(db.clone()).map_err(|e| storage(&e))?;
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            Network::new(peers.clone()),
            LogStore::new(db),
            state_machine,
        )
        .await
        .map_err(|e| storage(&e))?;
        info!(id, name = %me.name, "group member started");
        Ok(Group { id, me, raft, shared, peers, journal, config, membership: tokio::sync::Mutex::new(()) })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn me(&self) -> &Member {
        &self.me
    }

    /// The channels to the other nodes, for fast sync.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// Which accounts each peer has yet to be synced with.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Reads the local copy of the account database.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.shared.state.read().unwrap())
    }

    /// A receiver that wakes whenever the account database changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    fn metrics(&self) -> RaftMetrics<NodeId, Member> {
        self.raft.metrics().borrow().clone()
    }

    /// Whether this node is in a group's membership.
    pub fn is_member(&self) -> bool {
        self.metrics().membership_config.membership().get_node(&self.id).is_some()
    }

    pub fn is_voter(&self) -> bool {
        self.metrics().membership_config.membership().voter_ids().any(|v| v == self.id)
    }

    /// Starts a new group with this node as its only member.
    pub async fn initialize(&self) -> Result<(), GroupError> {
        if self.is_member() {
            return Err(GroupError::AlreadyInGroup);
        }
        let members = [(self.id, self.me.clone())].into_iter().collect::<std::collections::BTreeMap<_, _>>();
        self.raft.initialize(members).await.map_err(|e| GroupError::Membership(e.to_string()))?;
        info!(id = self.id, "initialised a new group");
        Ok(())
    }

    /// Waits until some member leads the group; false after `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> bool {
        self.raft.wait(Some(timeout)).metrics(|m| m.current_leader.is_some(), "a leader").await.is_ok()
    }

    /// Applies `command` through the leader, with a fresh request id.
    pub async fn write(&self, command: Command) -> Result<Applied, GroupError> {
        self.write_as(coffer_proto::id::new_request_id(), command).await
    }

    /// Applies `command` through the leader under the caller's request id:
    /// a request retried with the same id gets the first outcome.
    pub async fn write_as(&self, request_id: String, command: Command) -> Result<Applied, GroupError> {
        let proposal = Proposal { request_id, command };
        proposal.validate()?;
        match self.to_leader(Forwarded::Write(proposal)).await? {
            ForwardReply::Outcome(outcome) => Ok((*outcome)?),
            other => Err(GroupError::Peer(format!("unexpected reply to a write: {other:?}"))),
        }
    }

    /// Asks the group that the node at `addr` belongs to to take this node in.
    pub async fn join_via(&self, addr: &str) -> Result<(), GroupError> {
        // A learner asks again: its join was cut short before the promotion.
        if self.is_voter() {
            return Err(GroupError::AlreadyInGroup);
        }
        let request = Forwarded::Join { id: self.id, member: self.me.clone() };
        let reply: Result<ForwardReply, GroupError> =
            self.peers.call(addr, true, "forward", &request).await?;
        reply.map(|_| info!(id = self.id, via = addr, "joined the group"))
    }

    /// Removes the member named (or numbered) `node` from the group.
    pub async fn leave(&self, node: &str) -> Result<(), GroupError> {
        self.to_leader(Forwarded::Leave { node: node.to_string() }).await.map(|_| ())
    }

    /// The leader's view of the group, or this node's own when no leader
    /// answers.
    pub async fn status(&self) -> GroupStatus {
        match self.to_leader_once(Forwarded::Status).await {
            Ok(ForwardReply::Status(status)) => status,
            _ => self.own_status(),
        }
    }

    /// Whether `member` answers a request over the peer service within
    /// `timeout` (any answer, even "not the leader", proves it is there:
    /// Raft's own progress does not move while nothing is written).
    pub async fn reachable(&self, member: &Member, timeout: Duration) -> bool {
        let ask = self.peers.call::<_, Result<ForwardReply, GroupError>>(
            &member.addr,
            true,
            "forward",
            &Forwarded::Status,
        );
        matches!(tokio::time::timeout(timeout, ask).await, Ok(Ok(_)))
    }

    /// Serves a Raft message from a peer.
    pub async fn handle_raft(&self, kind: &str, json: &[u8]) -> Result<Vec<u8>, GroupError> {
        let bad = |e: serde_json::Error| GroupError::Peer(format!("undecodable `{kind}` message: {e}"));
        let reply = match kind {
            "append" => encode(&self.raft.append_entries(serde_json::from_slice(json).map_err(bad)?).await),
            "vote" => encode(&self.raft.vote(serde_json::from_slice(json).map_err(bad)?).await),
            "snapshot" => {
                encode(&self.raft.install_snapshot(serde_json::from_slice(json).map_err(bad)?).await)
            }
            other => return Err(GroupError::Peer(format!("unknown Raft message `{other}`"))),
        };
        Ok(reply)
    }

    /// Serves a request another node forwarded; the reply is a JSON
    /// `Result<ForwardReply, GroupError>`.
    /// The name a forwarded request asks to join the group under, if it is
    /// a join request.
    pub fn join_request_name(json: &[u8]) -> Option<String> {
        match serde_json::from_slice::<Forwarded>(json) {
            Ok(Forwarded::Join { member, .. }) => Some(member.name),
            _ => None,
        }
    }

    pub async fn handle_forward(&self, json: &[u8]) -> Vec<u8> {
        let request = serde_json::from_slice::<Forwarded>(json)
            .map_err(|e| GroupError::Peer(format!("undecodable forwarded request: {e}")));
        let reply = match request {
            Ok(Forwarded::Status) => self.lead(Forwarded::Status).await,
            Ok(request) => self.to_leader(request).await,
            Err(e) => Err(e),
        };
        encode(&reply)
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }

    /// Sends `request` to the leader (which may be this node), retrying
    /// through elections until the write timeout.
    async fn to_leader(&self, request: Forwarded) -> Result<ForwardReply, GroupError> {
        let deadline = Instant::now() + self.config.write_timeout;
        loop {
            let last = match self.to_leader_once(request.clone()).await {
                Err(GroupError::NotLeader) => "the leader changed".to_string(),
                Err(GroupError::Peer(e)) => format!("the leader did not answer ({e})"),
                other => return other,
            };
            if Instant::now() >= deadline {
                return Err(GroupError::NoQuorum(format!(
                    "no leader could be reached for {:?} ({last})",
                    self.config.write_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn to_leader_once(&self, request: Forwarded) -> Result<ForwardReply, GroupError> {
        let metrics = self.metrics();
        match metrics.current_leader {
            Some(leader) if leader == self.id => self.lead(request).await,
            Some(leader) => {
                let member = metrics.membership_config.membership().get_node(&leader).cloned();
                let addr = member.ok_or(GroupError::NotLeader)?.addr;
                self.peers
                    .call::<_, Result<ForwardReply, GroupError>>(&addr, true, "forward", &request)
                    .await?
            }
            None if !self.is_member() => Err(GroupError::NotInGroup),
            None => Err(GroupError::NotLeader),
        }
    }

    /// Carries out a request on the leader.
    async fn lead(&self, request: Forwarded) -> Result<ForwardReply, GroupError> {
        match request {
            Forwarded::Write(proposal) => {
                self.propose(proposal).await.map(|o| ForwardReply::Outcome(Box::new(o)))
            }
            Forwarded::Join { id, member } => self.add_member(id, member).await.map(|_| ForwardReply::Done),
            Forwarded::Leave { node } => self.remove_member(&node).await.map(|_| ForwardReply::Done),
            Forwarded::Status => {
                if self.metrics().current_leader != Some(self.id) {
                    return Err(GroupError::NotLeader);
                }
                Ok(ForwardReply::Status(self.own_status()))
            }
        }
    }

    fn check_quorum(&self) -> Result<(), GroupError> {
        let metrics = self.metrics();
        let silent = metrics.millis_since_quorum_ack.unwrap_or(0);
        // Two of the longest election timeouts (each twice the configured one).
        let limit = 2 * (2 * self.config.election_timeout.as_millis() as u64);
        if metrics.state == ServerState::Leader && silent > limit {
            return Err(GroupError::NoQuorum(format!(
                "the leader has not heard from a majority for {silent} ms"
            )));
        }
        Ok(())
    }

    async fn propose(&self, proposal: Proposal) -> Result<Outcome, GroupError> {
        // Again here: a forwarded proposal comes from another node.
        proposal.validate()?;
        self.check_quorum()?;
        match tokio::time::timeout(self.config.write_timeout, self.raft.client_write(proposal)).await {
            Err(_) => Err(GroupError::NoQuorum(format!(
                "the change was not committed within {:?} (it may still take effect if the group recovers)",
                self.config.write_timeout
            ))),
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(e)) => Err(write_error(e)),
        }
    }

    async fn add_member(&self, id: NodeId, member: Member) -> Result<(), GroupError> {
        let _serial = self.membership.lock().await;
        self.check_quorum()?;
        let membership = self.metrics().membership_config.membership().clone();
        if let Some((other, _)) = membership.nodes().find(|(other, m)| m.name == member.name && **other != id)
        {
            return Err(GroupError::Membership(format!(
                "a member called `{}` is already in the group (id {other}); run `coffer-admin cluster leave {}` first",
                member.name, member.name
            )));
        }
        if membership.voter_ids().any(|v| v == id) {
            return Ok(());
        }
        info!(id, name = %member.name, "adding a learner");
        let wait = Duration::from_secs(120);
        let added = tokio::time::timeout(wait, self.raft.add_learner(id, member.clone(), true)).await;
        added
            .map_err(|_| {
                GroupError::Membership(format!("`{}` did not catch up within {wait:?}", member.name))
            })?
            .map_err(write_error)?;
        info!(id, name = %member.name, "promoting to voter");
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)?;
        Ok(())
    }

    async fn remove_member(&self, node: &str) -> Result<(), GroupError> {
        let _serial = self.membership.lock().await;
        self.check_quorum()?;
        let membership = self.metrics().membership_config.membership().clone();
        let id = membership
            .nodes()
            .find(|(id, m)| m.name == node || id.to_string() == node)
            .map(|(id, _)| *id)
            .ok_or_else(|| GroupError::Membership(format!("no member `{node}` in the group")))?;
        let change = if membership.voter_ids().any(|v| v == id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft.change_membership(change, false).await.map_err(write_error)?;
        info!(id, node, "member removed from the group");
        Ok(())
    }

    /// This node's own view of the group, without asking the leader.
    pub fn local_status(&self) -> GroupStatus {
        self.own_status()
    }

    fn own_status(&self) -> GroupStatus {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let replication = m.replication.clone().unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, member)| {
                let state = if Some(*id) == m.current_leader {
                    "leader"
                } else if voters.contains(id) {
                    "follower"
                } else {
                    "learner"
                };
                let log_index = if *id == self.id {
                    m.last_log_index
                } else {
                    replication.get(id).and_then(|matched| matched.map(|l| l.index))
                };
                let lag = log_index.map_or(last, |i| last.saturating_sub(i));
                MemberStatus { id: *id, member: member.clone(), state: state.into(), log_index, lag }
            })
            .collect();
        let leader_name = m
            .current_leader
            .and_then(|l| membership.get_node(&l))
            .map(|n| n.name.clone())
            .unwrap_or_default();
        GroupStatus {
            reporter: self.me.name.clone(),
            leader: m.current_leader,
            leader_name,
            term: m.current_term,
            last_log_index: last,
            last_applied: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            members,
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    crate::logstore::encode(value)
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> GroupError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => GroupError::NotLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            GroupError::Membership(e.to_string())
        }
        RaftError::Fatal(e) => GroupError::Storage(e.to_string()),
    }
}

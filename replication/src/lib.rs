//! Coffer's server group: the account database that every store node holds,
//! replicated with Raft (openraft), and the placement of accounts on nodes.
//!
//! - `types`: node ids and members, the Raft type configuration, and the
//!   commands and outcomes of the account database.
//! - `state`: the account database itself and its deterministic apply.
//! - [`activity`]: heartbeats, what the group knows of each account's
//!   clients (last login, last backup, last failure, usage).
//! - `placement`: which nodes hold an account, and its primary.
//! - `logstore`: the Raft log and vote in RocksDB, synced before
//!   acknowledgement; the node's random, never-reused id.
//! - `statemachine`: applying entries (state and last-applied id in one
//!   batch), snapshots.
//! - `network`: node-to-node calls over the `Peer` gRPC service.
//! - `group`: what a node does with all this: write through the leader
//!   (forwarding), refuse without a quorum, join, leave, status.
//! - [`fastsync`]: bringing two replicas of an account to the union of their
//!   backup sets, over the [`fastsync::Replica`] trait.
//! - [`remote`]: a peer's replica of an account, over the `Peer` service.
//! - [`journal`]: which accounts each peer has yet to be synced with,
//!   kept across restarts.
//! - [`bootstrap`]: a new group of one with its first accounts, made
//!   while the node is stopped (`coffer-admin quickstart`).

// openraft's storage traits return its large `StorageError`; our helpers
// return the same type so that `?` carries it through unchanged.
#![allow(clippy::result_large_err)]

pub mod activity;
pub mod bootstrap;
pub mod fastsync;
mod group;
pub mod journal;
mod logstore;
mod network;
mod placement;
pub mod remote;
mod state;
mod statemachine;
mod types;

pub use group::{Forwarded, Group, GroupConfig, GroupError, GroupStatus, MemberStatus};
pub use state::{Account, AccountGroup, State};
pub use types::{Applied, Command, Member, NodeId, Refusal};

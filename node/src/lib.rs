//! The store node daemon (`coffer-node`): the store engine
//! ([`coffer_store`]) served to clients, operators and the other nodes of
//! the server group over gRPC with TLS 1.3.
//!
//! - `server`: the TLS listener, handshakes, the housekeeping timer and
//!   clean shutdown.
//! - `node`: the state every service shares ([`node::Node`]), and each
//!   connection's caller and session.
//! - `rpc`: what the services share: who is calling, blocking store work,
//!   ids from the wire, error statuses, object streams, wire conversions.
//! - `store_service`: the client-facing service (login, upload, download,
//!   sets, usage).
//! - `admin_service`: the operator's service: account changes through the
//!   group, checks, usage, housekeeping, RAID, membership, migration.
//! - `peer_service`: the node-to-node service (Raft, forwarded requests,
//!   the far side of fast sync).
//! - `mirror`: copying the group's account records into the engine.
//! - `replica`: this node's replica of an account, as fast sync sees it.
//! - `syncer`: when fast sync runs: after each change, from the journal,
//!   for new replicas, and in periodic anti-entropy passes; and the
//!   replicated commit.
//! - `counting`: counting the references of new trees and sets while
//!   their account is quiet, so that freeing finds them counted.
//! - `migrate`: moving an account from this node to another.
//! - `throttle`: slowing down repeated failed logins.
//! - `transfer`: objects streamed out, and how many uploads and downloads
//!   one account may run at once.
//! - `heartbeat`: telling the group of clients' logins and backups.
//! - `alerts`: the operator's alerts (logged, and run through the
//!   `notify` program): discs, syncs, limits, silent clients, members.
//! - `groups`: the operator's account groups.
//! - `status`: the node's status: counters, discs, syncs owed, writers.
//! - `metrics`: Prometheus `/metrics` and `/health` on `metrics_listen`,
//!   and the layer counting every gRPC request.
//!
//! The public surface is [`run`], which serves a node with a
//! [`NodeConfig`](coffer_proto::config::NodeConfig) until it is stopped.

mod admin_service;
mod alerts;
mod counting;
mod groups;
mod heartbeat;
mod metrics;
mod migrate;
mod mirror;
mod node;
mod peer_service;
mod replica;
mod rpc;
mod server;
mod status;
mod store_service;
mod syncer;
mod throttle;
mod transfer;

pub use server::run;

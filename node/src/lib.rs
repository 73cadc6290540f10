//! Coffer's store engine, the part of a store node that holds account data.
//! The same engine runs in-process for the client's local (serverless) mode.
//!
//! - [`error`]: what can go wrong, each error naming the object, pack or
//!   account concerned.
//! - [`packfile`]: the self-describing pack files objects are appended to,
//!   written to a temporary name and committed by rename.
//! - [`index`]: the RocksDB index: objects, packs, backup sets, tombstones,
//!   unreferenced objects and account records, with their key and value codecs.
//! - [`store`]: opening a store, accounts, and reads (any number of readers).
//! - [`accounts`]: creating, limiting, freezing and deleting accounts.
//! - [`writer`]: the single writer of an account: puts objects, counts
//!   references, commits backup sets, and makes every change durable in one
//!   RocksDB write batch after its pack is on disk.
//! - [`housekeeping`]: forgetting backup sets, freeing what reaches a zero
//!   reference count (cost proportional to what is freed), collecting
//!   never-referenced uploads after a grace period, and rewriting packs whose
//!   live fraction fell low; forgetting the oldest sets of an account over
//!   its soft limit.
//! - [`recovery`]: what opening a store removes after a crash (only packs
//!   the index proves were never recorded), moves aside, or refuses (a lost
//!   or rolled-back index, the wrong discs), and rebuilding a lost index.
//! - [`check`]: verifying an account (CRCs, references, counts) and
//!   rebuilding its index from its self-describing packs.
//! - [`space`]: current, old and deleted bytes of an account.
//!
//! The daemon (`coffer-node`) around the engine:
//!
//! - [`config`]: the node's TOML configuration.
//! - [`server`]: the TLS listener, per-connection sessions, housekeeping
//!   timer and clean shutdown.
//! - [`accountdb`]: the group's accounts and status on the wire.
//! - [`service`]: the client-facing gRPC service (login, upload, download,
//!   sets, usage).
//! - [`admin`]: the operator's gRPC service, account changes through the
//!   group, and cluster membership.
//! - [`peer`]: the node-to-node gRPC service (Raft, forwarded requests).
//! - [`mirror`]: copying the group's account records into the engine.
//! - [`migrate`]: moving an account from this node to another.
//! - [`replica`]: this node's replica of an account, as fast sync sees it.
//! - [`syncer`]: when fast sync runs: after each change, from the journal,
//!   for new replicas, and in periodic anti-entropy passes.
//! - [`throttle`]: slowing down repeated failed logins.

pub mod accountdb;
pub mod accounts;
pub mod admin;
pub mod check;
pub mod config;
pub mod error;
pub mod housekeeping;
pub mod index;
pub mod migrate;
pub mod mirror;
pub mod packfile;
pub mod peer;
pub mod recovery;
pub mod replica;
pub mod server;
pub mod service;
pub mod space;
pub mod store;
pub mod syncer;
pub mod throttle;
pub mod writer;

pub use check::CheckReport;
pub use error::StoreError;
pub use housekeeping::{ForgetReport, GcReport, HousekeepReport};
pub use index::{AccountRecord, Limits, ObjectEntry, SetRecord};
pub use space::Space;
pub use store::{AccountId, Store, Usage};
pub use writer::{AccountWriter, PutOutcome};

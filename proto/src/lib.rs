//! Coffer's shared vocabulary, used by both the client and the store node.
//!
//! - [`id`]: object ids (keyed BLAKE3 digests computed by the client) and
//!   the ids that make account changes idempotent.
//! - [`object`]: the object envelope every stored object travels in: kind,
//!   referenced ids in clear (so a node can count references without keys), a
//!   body the node cannot read, and a CRC32 so any node can verify every byte.
//! - [`digest`]: the digest of an account's set ids and tombstones, which
//!   fast sync compares beside the client store marker.
//! - [`names`]: which account names are valid.
//! - [`address`]: store addresses (`file:///path`, `coffer://host:port`).
//! - [`clock`]: the time stamps Coffer records (ns since the epoch).
//! - [`config`]: the node's configuration file, which the node reads and
//!   `coffer-admin quickstart` writes.
//! - [`batch`]: cutting streams of objects into messages under the
//!   transport's limit.
//! - [`retention`]: which backup sets a keep-last/hourly/daily/... policy
//!   keeps: one engine for the client's `forget` and a node's housekeeping,
//!   and the policy an account carries in the replicated account database.
//! - [`set`]: the cleartext header of a backup set object, which a node reads to
//!   list sets and their roots.
//!
//! - [`wire`]: the gRPC services and messages generated from
//!   `proto/coffer.proto` (client↔node `Store`, operator `Admin`, node↔node `Peer`).
//! - [`tls`]: TLS 1.3 configuration for nodes, clients and admins, roles read
//!   from certificates, and opening a channel to a node.
//! - [`pipe`]: every binary's quiet end when its output pipe closes.
//! - [`notify`]: running a `notify` program for an event (client daemon,
//!   node alerts).
//!
//! Nothing here knows about keys or disks: the client seals bodies, the node
//! stores envelopes.

pub mod address;
pub mod batch;
pub mod clock;
pub mod config;
pub mod digest;
pub mod id;
pub mod names;
pub mod notify;
pub mod object;
pub mod pipe;
pub mod retention;
pub mod set;
pub mod tls;

/// Generated from `proto/coffer.proto`.
pub mod wire {
    #![allow(clippy::all)]
    tonic::include_proto!("coffer.v1");

    /// Metadata of a refused login: the addresses (comma-separated) of the
    /// nodes that hold the account, where the client should go instead.
    pub const HELD_ON: &str = "coffer-held-on";
}

pub use address::StoreUrl;
pub use digest::SetsDigest;
pub use id::{IdParseError, ObjectId};
pub use object::{Object, ObjectError, ObjectKind};
pub use set::{SetHeader, SetStats};

//! Coffer's store engine: the part of a store node that holds account data.
//! The same engine runs in-process for the client's local (serverless) mode,
//! so it depends on nothing above `proto` and `raid`.
//!
//! - `error`: what can go wrong, each error naming the object, pack or
//!   account concerned.
//! - `packfile`: the self-describing pack files objects are appended to,
//!   written to a temporary name and committed by rename.
//! - `index`: the RocksDB index: objects, packs, backup sets, tombstones,
//!   unreferenced and uncounted objects and account records, with their key
//!   and value codecs.
//! - `store`: opening a store, accounts, and reads (any number of readers).
//! - `accounts`: creating, adopting and deleting accounts.
//! - `writer`: the single writer of an account: puts objects (refusing one
//!   that names a missing object), commits backup sets, and makes every
//!   change durable in one RocksDB write batch after its pack is on disk.
//! - `counting`: counting references late: a stored tree or set is recorded
//!   as uncounted, and what frees counts its references first; a node
//!   counts in slices while the account is quiet.
//! - `housekeeping`: forgetting backup sets, freeing what reaches a zero
//!   reference count (cost proportional to what is freed), collecting
//!   never-referenced uploads after a grace period, and rewriting packs whose
//!   live fraction fell low; forgetting the oldest sets of an account over
//!   its soft limit, and those the account's retention policy
//!   (`coffer_proto::retention`) does not keep.
//! - `recovery`: what opening a store removes after a crash (only packs
//!   the index proves were never recorded), moves aside, or refuses (a lost
//!   or rolled-back index, the wrong discs), and rebuilding a lost index.
//! - `check`: verifying an account (CRCs, references, counts) and
//!   rebuilding its index from its self-describing packs.
//! - `space`: current, old and deleted bytes of an account.
//!
//! The public surface is [`Store`] (with [`AccountWriter`] for the one
//! writer of an account) and the records and reports they return.

mod accounts;
mod check;
mod counting;
mod error;
mod housekeeping;
mod index;
mod packfile;
mod recovery;
mod space;
mod store;
mod writer;

pub use check::CheckReport;
pub use counting::Counted;
pub use error::{Result, StoreError};
pub use housekeeping::{ForgetReport, GcReport, HousekeepReport};
pub use index::{AccountRecord, Limits, ObjectEntry, SetRecord};
pub use packfile::{ASIDE, OpenPacks, pack_name};
pub use space::Space;
pub use store::{AccountId, Store, Usage};
pub use writer::{AccountWriter, PutOutcome};

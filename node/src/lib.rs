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
//! - [`writer`]: the single writer of an account: puts objects, counts
//!   references, commits backup sets, and makes every change durable in one
//!   RocksDB write batch after its pack is on disk.
//! - [`housekeeping`]: forgetting backup sets, freeing what reaches a zero
//!   reference count (cost proportional to what is freed), collecting
//!   never-referenced uploads after a grace period, and rewriting packs whose
//!   live fraction fell low.

pub mod error;
pub mod housekeeping;
pub mod index;
pub mod packfile;
pub mod store;
pub mod writer;

pub use error::StoreError;
pub use housekeeping::{ForgetReport, GcReport};
pub use index::{AccountRecord, ObjectEntry, SetRecord};
pub use store::{AccountId, Store, Usage};
pub use writer::{AccountWriter, PutOutcome};

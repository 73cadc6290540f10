//! The Coffer client: everything that happens on the machine being backed up.
//! Keys never leave it; the store sees only sealed objects.
//!
//! - [`keys`]: the keys file and the keys derived from it.
//! - `crypto`: sealing chunks (AES-256-GCM) and metadata (Blowfish-CBC + HMAC).
//! - `chunker`: content-defined chunking (FastCDC).
//! - [`tree`]: directory entries and their sealed tree objects.
//! - `backupset`: backup sets: one snapshot of the backup locations.
//! - [`backend`]: the store behind a `--store` URL (the local store runs the
//!   node's store engine in-process).
//! - `remote`: the server group's nodes over gRPC and TLS: lazy
//!   connection, login, reads.
//! - `replies`: a node's replies read: failed calls as errors (a login lost
//!   under a refused certificate says so), wire values checked.
//! - `upload`: a node session's upload pipeline: batches checked with one
//!   `Have` each and streamed, several in flight.
//! - `failure`: the last failure, kept until the group hears of it.
//! - `failover`: which node to use: the last that worked, back to the
//!   primary once it has caught up.
//! - [`config`]: the client's TOML configuration.
//! - [`bbackupd`]: importing a Box Backup client configuration.
//! - [`cache`]: the local cache of trees, sets and the store's position
//!   (client store marker and sets digest).
//! - `repo`: backend, keys and cache together; verified reads.
//! - `held`: what the store is known to hold, recorded in the cache.
//! - [`rules`]: which entries of a location a backup takes.
//! - `age`: which changed files are old enough to upload (lazy mode).
//! - [`steering`]: pausing, stopping and watching a running backup.
//! - `scanner`: walks directories, detects changes, chunks and uploads.
//! - `deletions`: holding a scan that would drop most of a location.
//! - [`backup`]: one backup run, ending in a committed set.
//! - [`daemon`]: `coffer daemon`, which keeps the locations backed up, and
//!   its control socket.
//! - [`browse`]: finding paths, versions and deleted files in the history.
//! - [`wildcard`]: `*`, `?`, `[...]` in the paths of `ls`, `restore`, `versions`.
//! - [`names`]: names as people read and type them (`\xHH` for bytes
//!   that are not printable UTF-8).
//! - `sparse`: holes found at backup and made again at restore.
//! - `fill`: writing a restored file from its streamed chunks.
//! - [`undelete`]: a deleted entry put back into a new backup set.
//! - [`restore`]: recreating trees and files with their metadata.
//! - [`compare`]: comparing a backup with the disk.
//! - [`copy`]: copying backup sets between two stores of one account.
//! - [`mount`]: the backups as a read-only FUSE file system.
//! - [`timefmt`]: reading and printing times.
//! - [`keep`]: the `--keep-*` retention rules of `coffer forget` and
//!   `coffer-admin account set-retention`.

mod age;
pub mod backend;
pub mod backup;
mod backupset;
pub mod bbackupd;
pub mod browse;
pub mod cache;
mod chunker;
pub mod compare;
pub mod config;
pub mod copy;
mod crypto;
pub mod daemon;
mod deletions;
mod error;
mod failover;
mod failure;
mod fill;
mod held;
pub mod keep;
pub mod keys;
pub mod mount;
pub mod names;
mod remote;
mod replies;
mod repo;
pub mod restore;
pub mod rules;
mod scanner;
mod sparse;
mod squash;
pub mod steering;
pub mod timefmt;
pub mod tree;
pub mod undelete;
mod upload;
pub mod wildcard;

pub use age::AgePolicy;
pub use error::{Error, Result};
pub use remote::Access;
pub use repo::{Repository, StoreSpec};

//! The `coffer` binary's parts, beside `main.rs` (commands and settings):
//!
//! - `print`: human output of each command.
//! - `service`: `coffer daemon`, `coffer ctl`, `coffer import-config`.
//! - `forget`: forgetting one set or what a retention policy does not keep.
//! - `retrieve`: `restore` and `compare`.
//! - `query`: the interactive shell over the backup sets, and `complete`,
//!   its tab completion.

mod complete;
pub mod forget;
pub mod print;
pub mod query;
pub mod retrieve;
pub mod service;

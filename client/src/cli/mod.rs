//! The `coffer` binary's parts, beside `main.rs` (commands and settings):
//!
//! - `print`: human output of each command.
//! - `service`: `coffer daemon`, `coffer ctl`, `coffer import-config`.
//! - `forget`: forgetting one set or what a retention policy does not keep.

pub mod forget;
pub mod print;
pub mod service;

//! Events: logged, kept for `ctl status`, and given to the configured
//! `notify` program as its first argument, with a JSON description on its
//! standard input (Box Backup's NotifyScript, with structured details).
//!
//! Event names: `daemon-started`, `daemon-stopped`, `backup-ok`,
//! `backup-error`, `store-full`, `read-errors`, `deletions-held`,
//! `not-backed-up`.

use std::path::PathBuf;

use serde_json::Value;

use super::status::{Event, Shared};

pub fn emit(shared: &Shared, program: Option<&PathBuf>, name: &str, detail: Value) {
    tracing::info!(event = name, %detail, "event");
    let time = crate::timefmt::format(coffer_proto::clock::now_ns());
    shared.record_event(Event { name: name.to_string(), time, detail: detail.clone() });
    if let Some(program) = program {
        coffer_proto::notify::spawn(program.clone(), name.to_string(), detail.to_string());
    }
}

//! Events: logged, kept for `ctl status`, and given to the configured
//! `notify` program as its first argument, with a JSON description on its
//! standard input (Box Backup's NotifyScript, with structured details).
//!
//! Event names: `daemon-started`, `daemon-stopped`, `backup-ok`,
//! `backup-error`, `store-full`, `read-errors`, `deletions-held`,
//! `not-backed-up`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::status::{Event, Shared};

/// How long a notify program may run before it is killed.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(60);

pub fn emit(shared: &Shared, program: Option<&PathBuf>, name: &str, detail: Value) {
    tracing::info!(event = name, %detail, "event");
    let time = crate::timefmt::format(coffer_proto::clock::now_ns());
    shared.record_event(Event { name: name.to_string(), time, detail: detail.clone() });
    if let Some(program) = program {
        run(program.clone(), name.to_string(), detail);
    }
}

/// Runs the program on its own thread, so a slow one never holds a backup up.
fn run(program: PathBuf, name: String, detail: Value) {
    std::thread::spawn(move || {
        let spawned = Command::new(&program)
            .arg(&name)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => return tracing::warn!(program = %program.display(), "notify program: {e}"),
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin, "{detail}");
        }
        let deadline = std::time::Instant::now() + PROGRAM_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if !status.success() => {
                    return tracing::warn!(program = %program.display(), %status, event = name, "notify program failed");
                }
                Ok(Some(_)) => return,
                Ok(None) if std::time::Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return tracing::warn!(program = %program.display(), "notify program ran too long; killed");
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return tracing::warn!("notify program: {e}"),
            }
        }
    });
}

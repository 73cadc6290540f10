//! Running an operator's or user's `notify` program for an event: the
//! event name as its one argument and a JSON description on its standard
//! input (Box Backup's NotifyScript, with structured details). Client and
//! node both use it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a notify program may run before it is killed.
pub const PROGRAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `program` on its own thread, so a slow one never holds the caller
/// up; failures are logged, never returned.
pub fn spawn(program: PathBuf, event: String, detail_json: String) {
    std::thread::spawn(move || {
        if let Err(problem) = run(&program, &event, &detail_json) {
            tracing::warn!(program = %program.display(), event, "notify program: {problem}");
        }
    });
}

fn run(program: &PathBuf, event: &str, detail_json: &str) -> Result<(), String> {
    let mut child = Command::new(program)
        .arg(event)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that does not read its input is not an error.
        let _ = writeln!(stdin, "{detail_json}");
    }
    let deadline = Instant::now() + PROGRAM_TIMEOUT;
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if !status.success() => return Err(format!("failed: {status}")),
            Some(_) => return Ok(()),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("ran longer than {PROGRAM_TIMEOUT:?}; killed"));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

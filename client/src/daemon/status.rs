//! What the daemon is doing, shared between its loop (which writes it) and
//! the control socket (which reads it, and waits on it for `ctl wait`).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backup::Held;
use crate::config::Mode;
use crate::steering::{Progress, Steering};

/// Events kept for `ctl status`.
const RECENT_EVENTS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Idle,
    Scanning,
    Uploading,
    Paused,
    WaitingForFileAge,
    OutsideBackupWindow,
    StoreUnreachable,
    HoldingDeletions,
    Stopping,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub name: String,
    pub time: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub pid: u32,
    pub mode: Mode,
    pub state: State,
    /// A backup is running now, since `started`.
    pub running: bool,
    #[serde(skip)]
    pub started: Option<Instant>,
    /// Backups run since the daemon started.
    pub runs: u64,
    pub location: Option<String>,
    pub file: Option<String>,
    pub progress: Progress,
    /// The previous set's totals: what this run is expected to scan.
    pub files_expected: u64,
    pub bytes_expected: u64,
    pub seconds_left: Option<f64>,
    pub last_set: Option<String>,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub node: Option<String>,
    pub next_run: Option<String>,
    pub waiting_files: u64,
    pub held: Vec<Held>,
    /// `ctl sync` requests not yet started.
    pub queued_syncs: u32,
    pub events: VecDeque<Event>,
}

pub struct Shared {
    status: Mutex<Status>,
    changed: Condvar,
}

impl Shared {
    pub fn new(mode: Mode) -> Shared {
        let status = Status {
            pid: std::process::id(),
            mode,
            state: State::Idle,
            running: false,
            started: None,
            runs: 0,
            location: None,
            file: None,
            progress: Progress::default(),
            files_expected: 0,
            bytes_expected: 0,
            seconds_left: None,
            last_set: None,
            last_success: None,
            last_error: None,
            node: None,
            next_run: None,
            waiting_files: 0,
            held: Vec::new(),
            queued_syncs: 0,
            events: VecDeque::new(),
        };
        Shared { status: Mutex::new(status), changed: Condvar::new() }
    }

    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status.lock().unwrap());
        self.changed.notify_all();
    }

    /// The status now, with the running backup's progress and estimate.
    pub fn snapshot(&self, steering: &Steering) -> Status {
        let mut s = self.status.lock().unwrap().clone();
        if s.running {
            s.progress = steering.progress();
            s.file = steering.current_file().map(|f| f.display().to_string());
            if s.state == State::Scanning && s.progress.bytes_uploaded > 0 {
                s.state = State::Uploading;
            }
            if steering.is_paused() {
                s.state = State::Paused;
            }
            s.seconds_left = s.started.and_then(|t| estimate(&s.progress, s.bytes_expected, t.elapsed()));
        }
        s
    }

    pub fn record_event(&self, event: Event) {
        self.update(|s| {
            s.events.push_back(event);
            while s.events.len() > RECENT_EVENTS {
                s.events.pop_front();
            }
        });
    }

    /// Blocks until no backup runs and no sync is queued, or `timeout` passes;
    /// says whether it became idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let status = self.status.lock().unwrap();
        let (status, _) =
            self.changed.wait_timeout_while(status, timeout, |s| s.running || s.queued_syncs > 0).unwrap();
        !(status.running || status.queued_syncs > 0)
    }
}

/// Time left at the rate so far, from the bytes the previous set held.
fn estimate(progress: &Progress, bytes_expected: u64, elapsed: Duration) -> Option<f64> {
    let done = progress.bytes_scanned as f64;
    let rate = done / elapsed.as_secs_f64().max(0.001);
    (rate > 0.0 && bytes_expected as f64 > done).then(|| (bytes_expected as f64 - done) / rate)
}

//! `coffer daemon`: keeps the configured locations backed up by itself.
//!
//! - `status`: what the daemon is doing, shared with the control socket.
//! - `control`: the control socket and its protocol (`coffer ctl`).
//! - `watch`: change notification, which wakes the loop.
//! - `events`: events, logged and given to the `notify` program.
//! - `memory`: what the daemon remembers across restarts.
//!
//! One loop runs every backup, opening the store for each run only (a
//! local store is then free between runs for `coffer ls` and restores,
//! while the cache's writer lock, held for the daemon's life, keeps a
//! foreground `coffer backup` out); everything else
//! (the control socket, change notification, signals) wakes it through one
//! channel. In lazy mode a change plans a run once the changed file can have
//! reached `minimum_file_age`, a run leaving files too young plans the next
//! for when the first is due, and `update_interval` plans a full rescan as
//! the safety net. Plans are kept in wall-clock time and the loop never
//! sleeps longer than [`LONGEST_SLEEP`], so a laptop waking from suspend
//! runs what fell due while it slept (a monotonic clock stops meanwhile).
//! In snapshot mode only `coffer ctl sync` runs a backup. A
//! failed run is tried again with a doubling delay (the failover connector
//! picks the node each time). SIGTERM, SIGINT and `ctl stop` stop the
//! running upload at an object boundary and exit cleanly; SIGHUP and
//! `ctl reload` reread the configuration, keeping the running one if the new
//! one does not load.

mod control;
mod events;
mod memory;
mod status;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use control::{Request, Response, call};

use crate::age::AgePolicy;
use crate::backup::{self, BackupOptions, BackupReport, Source};
use crate::browse::Catalog;
use crate::cache::WriterLock;
use crate::config::{ClientConfig, Mode};
use crate::error::{Error, Result};
use crate::remote::Access;
use crate::repo::{Repository, StoreSpec};
use crate::steering::Steering;
use control::Context;
use memory::Memory;
use status::{Shared, State};
use watch::Watcher;

/// Everything the daemon is configured with, loaded again on reload.
pub struct Setup {
    pub store: StoreSpec,
    pub keys: PathBuf,
    pub cache_root: PathBuf,
    pub config: ClientConfig,
}

/// What wakes the loop.
pub(crate) enum Wake {
    Changed,
    Sync { allow_deletions: Vec<String>, reply: Sender<Response> },
    Reload { reply: Option<Sender<Response>> },
    Stop,
}

/// The first delay before a failed run is tried again; it doubles from here.
const FIRST_RETRY: Duration = Duration::from_secs(5);
const LONGEST_RETRY: Duration = Duration::from_secs(300);
/// Changes are gathered this long before a run even with no minimum age.
const SETTLE: Duration = Duration::from_millis(500);
/// The loop wakes at least this often: to see plans fall due after a
/// suspend, and to notice a client that has not backed up for too long.
const LONGEST_SLEEP: Duration = Duration::from_secs(60);

/// The control socket of a configuration: `[daemon] control`, or
/// `daemon.sock` in the cache root.
pub fn socket_path(config: &ClientConfig, cache_root: &Path) -> PathBuf {
    config.daemon.control.clone().unwrap_or_else(|| cache_root.join("daemon.sock"))
}

type Load<'a> = &'a dyn Fn() -> std::result::Result<Setup, String>;

struct Daemon<'a> {
    load: Load<'a>,
    setup: Setup,
    /// The account's cache directory, where the writer lock and memory live.
    cache_dir: PathBuf,
    _lock: WriterLock,
    shared: Arc<Shared>,
    steering: Arc<Steering>,
    age: Arc<AgePolicy>,
    watcher: Watcher,
    memory: Memory,
    /// When the daemon started: the start of silence if it never backed up.
    started_ns: i64,
    /// When the next run is planned (ns since the epoch).
    next_run: Option<i64>,
    retry: Duration,
}

/// Runs the daemon until it is stopped. `load` reads the configuration
/// (again on reload); it is the same code the other commands use.
pub fn run(load: Load) -> Result<()> {
    let setup = load().map_err(Error::Invalid)?;
    let (wake, woken) = mpsc::channel();
    let listener = control::bind(&socket_path(&setup.config, &setup.cache_root))?;
    let mut daemon = Daemon::start(load, setup, wake.clone())?;
    let context =
        Context { shared: daemon.shared.clone(), steering: daemon.steering.clone(), wake: wake.clone() };
    control::serve(listener, Arc::new(context));
    handle_signals(wake, daemon.steering.clone())?;
    daemon.event(
        "daemon-started",
        json!({ "mode": daemon.setup.config.daemon.mode, "pid": std::process::id() }),
    );
    daemon.main_loop(woken);
    daemon.event("daemon-stopped", json!({ "pid": std::process::id() }));
    let _ = std::fs::remove_file(socket_path(&daemon.setup.config, &daemon.setup.cache_root));
    // Give the notify program its last event before the process ends.
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

fn handle_signals(wake: Sender<Wake>, steering: Arc<Steering>) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| Error::Invalid(format!("cannot handle signals: {e}")))?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal == SIGHUP {
                let _ = wake.send(Wake::Reload { reply: None });
            } else {
                steering.stop();
                let _ = wake.send(Wake::Stop);
            }
        }
    });
    Ok(())
}

fn open(setup: &Setup) -> Result<Repository> {
    Repository::open(&setup.store, &setup.keys, &setup.cache_root, Access::Write)
}

impl<'a> Daemon<'a> {
    fn start(load: Load<'a>, setup: Setup, wake: Sender<Wake>) -> Result<Daemon<'a>> {
        let repo = open(&setup)?;
        let lock = repo.cache.lock_writer("coffer daemon")?;
        let d = &setup.config.daemon;
        let age = Arc::new(AgePolicy::new(d.minimum_file_age, d.max_upload_wait));
        let steering = Arc::new(Steering::new(d.bandwidth_limit));
        let watcher = Watcher::new(wake.clone(), repo.private_paths.clone())
            .map_err(|e| Error::Invalid(format!("cannot watch for changes: {e}")))?;
        let cache_dir = repo.cache.dir().to_path_buf();
        drop(repo);
        let memory = Memory::load(&cache_dir);
        let shared = Arc::new(Shared::new(d.mode));
        let next_run = (d.mode == Mode::Lazy).then(now_ns);
        let mut daemon = Daemon {
            load,
            setup,
            cache_dir,
            _lock: lock,
            shared,
            steering,
            age,
            watcher,
            memory,
            next_run,
            retry: FIRST_RETRY,
            started_ns: now_ns(),
        };
        daemon.watch();
        Ok(daemon)
    }

    fn event(&self, name: &str, detail: Value) {
        events::emit(&self.shared, self.setup.config.daemon.notify.as_ref(), name, detail);
    }

    fn watch(&mut self) {
        if self.setup.config.daemon.mode == Mode::Lazy {
            let paths: Vec<PathBuf> = self.setup.config.locations.iter().map(|l| l.path.clone()).collect();
            self.watcher.watch(&paths);
        } else {
            self.watcher.watch(&[]);
        }
    }

    fn main_loop(&mut self, woken: Receiver<Wake>) {
        loop {
            self.publish_plan();
            let sleep = self.next_run.map_or(LONGEST_SLEEP, |at| until(at).min(LONGEST_SLEEP));
            let wake = match woken.recv_timeout(sleep) {
                Ok(wake) => Some(wake),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            match wake {
                None if self.next_run.is_some_and(|at| at <= now_ns()) => self.planned_run(),
                None => {}
                Some(Wake::Changed) => {
                    self.watcher.take_change();
                    self.changed();
                }
                Some(Wake::Sync { allow_deletions, reply }) => {
                    self.shared.update(|s| s.queued_syncs = s.queued_syncs.saturating_sub(1));
                    let response = self.sync(&allow_deletions);
                    let _ = reply.send(response);
                }
                Some(Wake::Reload { reply }) => {
                    let response = self.reload();
                    if let Some(reply) = reply {
                        let _ = reply.send(response);
                    }
                }
                Some(Wake::Stop) => break,
            }
            if self.steering.stopping() {
                break;
            }
            self.check_silence();
        }
        self.shared.update(|s| s.state = State::Stopping);
    }

    fn publish_plan(&self) {
        let next = self.next_run.map(crate::timefmt::format);
        self.shared.update(|s| s.next_run = next);
    }

    /// A change under a location: run once it can have reached the minimum age.
    fn changed(&mut self) {
        if self.setup.config.daemon.mode != Mode::Lazy {
            return;
        }
        let at = after(self.setup.config.daemon.minimum_file_age.max(SETTLE));
        self.next_run = Some(self.next_run.map_or(at, |planned| planned.min(at)));
    }

    fn planned_run(&mut self) {
        if let Some(window) = self.setup.config.daemon.backup_window.filter(|w| !w.open_now()) {
            tracing::debug!(?window, "outside the backup window");
            self.shared.update(|s| s.state = State::OutsideBackupWindow);
            self.next_run = Some(after(Duration::from_secs(60)));
            return;
        }
        let _ = self.backup(&[], true);
    }

    fn sync(&mut self, allow_deletions: &[String]) -> Response {
        let lazy = self.setup.config.daemon.mode == Mode::Lazy;
        match self.backup(allow_deletions, lazy) {
            Ok(report) => {
                let message = match (&report.set_id, report.unchanged) {
                    (Some(id), false) => format!("committed backup set {}", &id[..12]),
                    (Some(id), true) => format!("nothing changed since backup set {}", &id[..12]),
                    (None, _) => "nothing to back up".to_string(),
                };
                let ok = report.held.is_empty();
                let detail = serde_json::to_value(&report).expect("reports serialize");
                Response { ok, message, detail }
            }
            Err(e) => Response::failed(e.to_string(), Value::Null),
        }
    }

    /// One backup of every configured location; plans the next.
    fn backup(&mut self, allow_deletions: &[String], lazy: bool) -> Result<BackupReport> {
        let repo = match open(&self.setup) {
            Ok(repo) => repo,
            Err(e) => return Err(self.failed(e)),
        };
        let (sources, opts, expected) = match self.prepare(&repo, allow_deletions, lazy) {
            Ok(prepared) => prepared,
            Err(e) => return Err(self.failed(e)),
        };
        self.steering.begin();
        self.shared.update(|s| {
            (s.running, s.started, s.state) = (true, Some(Instant::now()), State::Scanning);
            s.runs += 1;
            (s.files_expected, s.bytes_expected) = expected;
        });
        let result = backup::backup(&repo, &sources, &opts);
        drop(repo);
        self.shared.update(|s| (s.running, s.started) = (false, None));
        match result {
            Ok(report) => {
                self.succeeded(&report);
                Ok(report)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// The sources, options and expected totals of the next run.
    fn prepare(
        &mut self,
        repo: &Repository,
        allow_deletions: &[String],
        lazy: bool,
    ) -> Result<(Vec<Source>, BackupOptions, (u64, u64))> {
        let config = &self.setup.config;
        let mut sources = Source::configured(repo, config)?;
        for source in &mut sources {
            source.allow_deletions = allow_deletions
                .iter()
                .any(|a| source.name.as_deref() == Some(a.as_str()) || Path::new(a) == source.path);
        }
        let catalog = Catalog::cached_or_load(repo)?;
        let newest = catalog.sets.last();
        let expected = newest.map_or((0, 0), |s| (s.header.stats.files, s.header.stats.bytes));
        let configured: Vec<Vec<u8>> = sources
            .iter()
            .filter_map(|s| crate::scanner::location_path(&s.path).ok())
            .map(path_key)
            .collect();
        let removed: Vec<PathBuf> = newest
            .map(|s| {
                s.contents
                    .locations
                    .iter()
                    .filter(|l| !configured.contains(&l.path))
                    .map(|l| key_path(&l.path))
                    .collect()
            })
            .unwrap_or_default();
        let carry = self.memory.redundant(&removed, config.daemon.delete_redundant_locations_after);
        self.memory.save(&self.cache_dir);
        let opts = BackupOptions {
            mass_deletion: config.daemon.mass_deletion,
            tolerate_missing: true,
            carry,
            age: lazy.then(|| self.age.clone()),
            max_file_size: config.daemon.max_file_size,
            steering: Some(self.steering.clone()),
            ..BackupOptions::default()
        };
        Ok((sources, opts, expected))
    }

    fn succeeded(&mut self, report: &BackupReport) {
        let now = coffer_proto::clock::now_ns();
        self.retry = FIRST_RETRY;
        self.memory.last_success_ns = Some(now);
        self.memory.save(&self.cache_dir);
        let state = match () {
            _ if !report.held.is_empty() => State::HoldingDeletions,
            _ if report.waiting > 0 => State::WaitingForFileAge,
            _ => State::Idle,
        };
        self.shared.update(|s| {
            s.state = state;
            s.last_set = report.set_id.clone();
            s.last_success = Some(crate::timefmt::format(now));
            s.last_error = None;
            s.node = report.node.clone().or(s.node.take());
            s.waiting_files = report.waiting;
            s.held = report.held.clone();
        });
        self.event(
            "backup-ok",
            json!({
                "set": report.set_id, "unchanged": report.unchanged, "files": report.files_total,
                "bytes_stored_new": report.bytes_stored_new, "node": report.node, "waiting": report.waiting,
            }),
        );
        if !report.warnings.is_empty() {
            self.event("read-errors", json!({ "files": report.warnings }));
        }
        if !report.held.is_empty() {
            self.event("deletions-held", json!({ "locations": report.held }));
        }
        self.plan_after(report.next_due_ns);
    }

    /// Records a failed run and plans a retry; returns the error.
    fn failed(&mut self, error: Error) -> Error {
        if matches!(error, Error::Stopped) {
            return error;
        }
        let message = error.to_string();
        tracing::warn!("backup failed: {message}; trying again in {:?}", self.retry);
        let state = if error.is_store_failure() { State::StoreUnreachable } else { State::Idle };
        self.shared.update(|s| (s.state, s.last_error) = (state, Some(message.clone())));
        let full = message.contains("hard limit");
        self.event(if full { "store-full" } else { "backup-error" }, json!({ "error": message }));
        if self.setup.config.daemon.mode == Mode::Lazy {
            self.next_run = Some(after(self.retry));
        }
        self.retry = (self.retry * 2).min(LONGEST_RETRY);
        self.watch();
        error
    }

    /// Plans the next run: when the first waiting file is due, or the next
    /// full rescan.
    fn plan_after(&mut self, next_due_ns: Option<i64>) {
        self.watch();
        if self.setup.config.daemon.mode != Mode::Lazy {
            self.next_run = None;
            return;
        }
        let rescan = after(self.setup.config.daemon.update_interval);
        let due = next_due_ns.map(|ns| ns.max(now_ns()) + SETTLE.as_nanos() as i64);
        self.next_run = Some(due.map_or(rescan, |d| d.min(rescan)));
    }

    /// Emits `not-backed-up` once the last success is older than configured.
    fn check_silence(&mut self) {
        let limit = self.setup.config.daemon.not_backed_up_after;
        let now = coffer_proto::clock::now_ns();
        let since = self.memory.last_success_ns.unwrap_or(self.started_ns);
        let silent = Duration::from_nanos((now - since).max(0) as u64);
        if silent > limit && self.memory.silence_reported != Some(since) {
            self.memory.silence_reported = Some(since);
            self.event(
                "not-backed-up",
                json!({ "seconds": silent.as_secs(), "since": crate::timefmt::format(since) }),
            );
        }
    }

    /// Rereads the configuration; keeps the running one if the new one
    /// does not load or its store cannot be opened.
    fn reload(&mut self) -> Response {
        let refuse = |what: &str, e: &dyn std::fmt::Display| {
            let message = format!("{what}: {e}; keeping the running configuration");
            tracing::warn!("reload: {message}");
            Response::failed(message, Value::Null)
        };
        let setup = match (self.load)() {
            Ok(setup) => setup,
            Err(e) => return refuse("the configuration does not load", &e),
        };
        let repo = match open(&setup) {
            Ok(repo) => repo,
            Err(e) => return refuse("the store cannot be opened", &e),
        };
        if repo.cache.dir() != self.cache_dir {
            match repo.cache.lock_writer("coffer daemon") {
                Ok(lock) => self._lock = lock,
                Err(e) => return refuse("the new cache is in use", &e),
            }
            self.cache_dir = repo.cache.dir().to_path_buf();
            self.memory = Memory::load(&self.cache_dir);
        }
        drop(repo);
        let d = &setup.config.daemon;
        self.age = Arc::new(AgePolicy::new(d.minimum_file_age, d.max_upload_wait));
        self.steering.set_limit(d.bandwidth_limit);
        self.next_run = (d.mode == Mode::Lazy).then(now_ns);
        let mode = d.mode;
        self.shared.update(|s| s.mode = mode);
        self.setup = setup;
        self.watch();
        tracing::info!("reloaded the configuration");
        Response::ok("reloaded the configuration", Value::Null)
    }
}

fn now_ns() -> i64 {
    coffer_proto::clock::now_ns()
}

/// The wall-clock time `wait` from now.
fn after(wait: Duration) -> i64 {
    now_ns().saturating_add(i64::try_from(wait.as_nanos()).unwrap_or(i64::MAX))
}

/// How long until wall-clock time `at`.
fn until(at: i64) -> Duration {
    Duration::from_nanos((at - now_ns()).max(0) as u64)
}

fn path_key(path: PathBuf) -> Vec<u8> {
    path.into_os_string().into_encoded_bytes()
}

fn key_path(key: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(key))
}

//! One backup run: scan each location, upload what changed, commit a set.
//!
//! Trees are stored bottom-up as the scan finishes each directory, so when the
//! set is committed everything it names is already in the store (the store
//! refuses a set that names a missing object). When every location's root is
//! exactly what the newest set already records, no set is committed: there is
//! nothing new to keep.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use coffer_proto::SetStats;
use indicatif::{ProgressBar, ProgressStyle};

use crate::backupset::{BackupSet, Location, SetContents};
use crate::browse::Catalog;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::scanner::{self, Scanner};

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub compress: bool,
    pub progress: bool,
    pub tags: Vec<String>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions { compress: true, progress: false, tags: Vec::new() }
    }
}

/// What a backup did; printed for people, or as JSON with `--json`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BackupReport {
    /// The set that now holds this backup (an existing one if nothing changed).
    pub set_id: Option<String>,
    pub unchanged: bool,
    pub marker: u64,
    /// The store node that took the set (none for a local store, or when
    /// nothing changed and no node was asked).
    pub node: Option<String>,
    /// How often the backup started again after losing its node.
    pub restarts: u32,
    /// Nodes that held the set when the commit was acknowledged, and how
    /// many the store waits for (both 1 for a local store).
    pub replicas: u32,
    pub replicas_wanted: u32,
    pub files_total: u64,
    pub dirs_total: u64,
    pub bytes_total: u64,
    pub files_read: u64,
    pub bytes_read: u64,
    pub chunks_new: u64,
    pub bytes_stored_new: u64,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

/// How often a backup starts again after its node failed under it.
const RESTARTS: u32 = 5;

/// Backs up `paths`. The previous sets come from the cache when it holds a
/// complete list, so an unchanged tree costs no store access at all; if the
/// store turns out to have changed since, the backup starts again from the
/// store's own list. It also starts again when its node fails mid-upload
/// and the failover connector finds another, from the new node's list and
/// with nothing the old node said: chunks that reached the new node before
/// are not sent again.
pub fn backup(repo: &Repository, paths: &[PathBuf], opts: &BackupOptions) -> Result<BackupReport> {
    let mut catalog = match repo.cached_sets() {
        Some(sets) => Catalog { sets },
        None => Catalog::load(repo)?,
    };
    let mut restarts = 0;
    loop {
        let error = match backup_with(repo, &catalog, paths, opts) {
            Ok(report) => return Ok(BackupReport { restarts, ..report }),
            Err(e)
                if restarts < RESTARTS
                    && matches!(e, Error::StoreChanged { .. } | Error::Interrupted { .. }) =>
            {
                e
            }
            Err(e) => return Err(e),
        };
        restarts += 1;
        tracing::warn!(%error, "backup interrupted; starting again");
        if let Error::StoreChanged { found, .. } = error {
            repo.cache.check_marker(found);
        }
        // The sets to build on come from the node that serves the new
        // attempt: the backup skips what they hold without asking.
        repo.backend.start_over();
        catalog = Catalog::load(repo)?;
    }
}

fn backup_with(
    repo: &Repository,
    catalog: &Catalog,
    paths: &[PathBuf],
    opts: &BackupOptions,
) -> Result<BackupReport> {
    let started = Instant::now();
    let time_ns = coffer_proto::clock::now_ns();
    let scanner = Scanner::new(repo, opts.compress);
    let progress = progress_bar(opts.progress);
    let mut locations = Vec::new();
    for path in paths {
        let path = scanner::location_path(path)?;
        let key = path.as_os_str().as_encoded_bytes().to_vec();
        let previous = catalog.history(&key).last();
        progress.set_message(format!("scanning {}", path.display()));
        let root = scan_with_progress(&scanner, &progress, || {
            scanner.scan_root(&path, previous.map(|(_, l)| &l.root))
        })?;
        locations.push(Location { path: key, root });
    }
    repo.backend.flush()?;
    progress.finish_and_clear();

    let c = &scanner.counters;
    let mut report = BackupReport {
        files_total: c.files_total.load(Relaxed),
        dirs_total: c.dirs_total.load(Relaxed),
        bytes_total: c.bytes_total.load(Relaxed),
        files_read: c.files_read.load(Relaxed),
        bytes_read: c.bytes_read.load(Relaxed),
        chunks_new: c.chunks_new.load(Relaxed),
        bytes_stored_new: c.bytes_stored_new.load(Relaxed),
        warnings: scanner.take_warnings(),
        ..BackupReport::default()
    };
    let newest = catalog.sets.last();
    if let Some(set) = newest.filter(|s| same_locations(&s.contents.locations, &locations)) {
        report.set_id = Some(set.id.to_hex());
        report.unchanged = true;
        report.marker = match repo.cache.marker() {
            Some(m) => m,
            None => repo.backend.marker()?,
        };
    } else {
        let stats =
            SetStats { files: report.files_total, dirs: report.dirs_total, bytes: report.bytes_total };
        let contents = SetContents { host: hostname(), locations, tags: opts.tags.clone() };
        let marker = repo.backend.marker()?;
        let (set, envelope) = BackupSet::seal(&repo.keys, time_ns, marker, stats, contents);
        report.bytes_stored_new += envelope.len() as u64;
        let committed = repo.backend.commit_set(set.id, &envelope)?;
        report.marker = committed.marker;
        (report.replicas, report.replicas_wanted) = (committed.replicas, committed.replicas_wanted);
        if committed.replicas < committed.replicas_wanted {
            let warning = format!(
                "the set is committed on {} node(s), fewer than the {} asked for; fast sync copies it to the \
                 others when they answer",
                committed.replicas, committed.replicas_wanted
            );
            tracing::warn!("{warning}");
            report.warnings.push(warning);
        }
        repo.cache.put_set(&set.id, &envelope);
        repo.cache.record_change(marker, report.marker, Some(set.id), None);
        report.set_id = Some(set.id.to_hex());
    }
    report.node = repo.backend.node();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn same_locations(a: &[Location], b: &[Location]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.path == y.path && x.root == y.root)
}

fn progress_bar(enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Runs `scan` on the rayon pool while this thread keeps the progress line fresh.
fn scan_with_progress<T: Send>(scanner: &Scanner, bar: &ProgressBar, scan: impl FnOnce() -> T + Send) -> T {
    if bar.is_hidden() {
        return scan();
    }
    std::thread::scope(|s| {
        let worker = s.spawn(scan);
        while !worker.is_finished() {
            let c = &scanner.counters;
            bar.set_message(format!(
                "{} files, {} read, {} new",
                c.files_total.load(Relaxed),
                human_bytes(c.bytes_read.load(Relaxed)),
                human_bytes(c.bytes_stored_new.load(Relaxed)),
            ));
            std::thread::sleep(Duration::from_millis(150));
        }
        worker.join().expect("scan thread panicked")
    })
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default()
}

//! One backup run: scan each location, upload what changed, commit a set.
//!
//! Trees are stored bottom-up as the scan finishes each directory, so when the
//! set is committed everything it names is already in the store (the store
//! refuses a set that names a missing object). When every location's root is
//! exactly what the newest set already records, no set is committed: there is
//! nothing new to keep.
//!
//! A location whose scan looks like a mass deletion (see `deletions`), or
//! that is missing when the caller tolerates it, keeps its previous contents
//! in the new set; so do the locations the caller asks to carry (ones
//! removed from the configuration, kept for a while).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use coffer_proto::SetStats;
use indicatif::{ProgressBar, ProgressStyle};

use crate::age::AgePolicy;
use crate::backend::Committed;
use crate::backupset::{BackupSet, Location, SetContents};
use crate::browse::Catalog;
use crate::config::ClientConfig;
use crate::deletions;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::rules::Rules;
use crate::scanner::{self, ScanOptions, Scanner};
use crate::steering::Steering;

/// One directory to back up, with its location's rules.
pub struct Source {
    pub path: PathBuf,
    /// The configured location's name, if it is one.
    pub name: Option<String>,
    pub rules: Rules,
    /// Take a scan that drops most of the location's files.
    pub allow_deletions: bool,
}

impl Source {
    /// `path` with the rules of its configured location, if it is one, and
    /// the client's private paths (cache, keys, a local store) left out.
    pub fn new(repo: &Repository, config: &ClientConfig, path: &Path) -> Result<Source> {
        let (name, rules) = match config.location_of(path) {
            Some(l) => (Some(l.name.clone()), Rules::compile(&l.name, &l.rules)?),
            None => (None, Rules::default()),
        };
        let rules = rules.with_private(&repo.private_paths);
        Ok(Source { path: path.to_path_buf(), name, rules, allow_deletions: false })
    }

    /// Every configured location.
    pub fn configured(repo: &Repository, config: &ClientConfig) -> Result<Vec<Source>> {
        config.locations.iter().map(|l| Source::new(repo, config, &l.path)).collect()
    }

    fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| crate::names::show(&self.path))
    }
}

#[derive(Clone)]
pub struct BackupOptions {
    pub compress: bool,
    pub progress: bool,
    pub tags: Vec<String>,
    /// The share of a location's files a scan may drop before it is held.
    pub mass_deletion: f64,
    /// A missing location keeps its previous contents instead of failing.
    pub tolerate_missing: bool,
    /// Locations (absolute paths) the new set copies from the newest one.
    pub carry: Vec<PathBuf>,
    pub age: Option<Arc<AgePolicy>>,
    pub max_file_size: Option<u64>,
    pub steering: Option<Arc<Steering>>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            compress: true,
            progress: false,
            tags: Vec::new(),
            mass_deletion: 0.5,
            tolerate_missing: false,
            carry: Vec::new(),
            age: None,
            max_file_size: None,
            steering: None,
        }
    }
}

/// A location whose previous contents the new set keeps, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Held {
    pub location: String,
    pub reason: String,
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
    /// Locations that kept their previous contents (mass deletion, missing).
    pub held: Vec<Held>,
    /// Files changed too recently to take (lazy mode), and when the first
    /// of them is due (ns since the epoch).
    pub waiting: u64,
    pub next_due_ns: Option<i64>,
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
pub fn backup(repo: &Repository, sources: &[Source], opts: &BackupOptions) -> Result<BackupReport> {
    let result = backup_again_if_interrupted(repo, sources, opts);
    match &result {
        Ok(_) => crate::failure::clear(&repo.failure_file),
        Err(Error::Stopped) => {}
        Err(e) => crate::failure::record(&repo.failure_file, &e.to_string()),
    }
    result
}

/// Backs up, starting over (a bounded number of times) when the store
/// changed under the backup or its session broke.
fn backup_again_if_interrupted(
    repo: &Repository,
    sources: &[Source],
    opts: &BackupOptions,
) -> Result<BackupReport> {
    let mut catalog = Catalog::cached_or_load(repo)?;
    let mut restarts = 0;
    loop {
        let error = match backup_with(repo, &catalog, sources, opts) {
            Ok(report) => return Ok(BackupReport { restarts, ..report }),
            Err(e)
                if restarts < RESTARTS
                    && matches!(e, Error::StoreChanged { .. } | Error::Interrupted { .. }) =>
            {
                e
            }
            Err(Error::Stopped) => {
                // What was sent stays, durable, for the next run to skip.
                repo.backend.flush()?;
                return Err(Error::Stopped);
            }
            Err(e) => return Err(e),
        };
        restarts += 1;
        tracing::warn!(%error, "backup interrupted; starting again");
        if let Error::StoreChanged { found, .. } = error {
            repo.cache.check_position(found);
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
    sources: &[Source],
    opts: &BackupOptions,
) -> Result<BackupReport> {
    let started = Instant::now();
    let time_ns = coffer_proto::clock::now_ns();
    // What an earlier attempt learnt is its own.
    repo.backend.take_skipped();
    repo.held.begin();
    if let Some(age) = &opts.age {
        age.begin();
    }
    let scanner = Scanner::new(
        repo,
        ScanOptions {
            compress: opts.compress,
            age: opts.age.as_deref(),
            max_file_size: opts.max_file_size,
            steering: opts.steering.as_deref(),
        },
    );
    let progress = progress_bar(opts.progress);
    let mut locations = Vec::new();
    let mut held = Vec::new();
    for source in sources {
        let scanned = scan_location(repo, catalog, &scanner, &progress, source, opts)?;
        if let Some(reason) = scanned.held {
            tracing::warn!(location = %source.label(), "keeping the previous contents: {reason}");
            held.push(Held { location: source.label(), reason });
        }
        locations.extend(scanned.location);
    }
    for path in &opts.carry {
        let key = path.as_os_str().as_encoded_bytes();
        if let Some((_, previous)) = catalog.history(key).last() {
            locations.push(previous.clone());
        }
    }
    repo.backend.flush()?;
    progress.finish_and_clear();

    // Objects handed to the store that it turned out to hold are not new.
    let skipped = repo.backend.take_skipped();
    let c = &scanner.counters;
    let mut report = BackupReport {
        files_total: c.files_total.load(Relaxed),
        dirs_total: c.dirs_total.load(Relaxed),
        bytes_total: c.bytes_total.load(Relaxed),
        files_read: c.files_read.load(Relaxed),
        bytes_read: c.bytes_read.load(Relaxed),
        chunks_new: c.chunks_new.load(Relaxed).saturating_sub(skipped.objects),
        bytes_stored_new: c.bytes_stored_new.load(Relaxed).saturating_sub(skipped.bytes),
        held,
        waiting: opts.age.as_ref().map_or(0, |a| a.waiting() as u64),
        next_due_ns: opts.age.as_ref().and_then(|a| a.next_due()),
        warnings: scanner.take_warnings(),
        ..BackupReport::default()
    };
    let newest = catalog.sets.last();
    if let Some(set) = newest.filter(|s| same_locations(&s.contents.locations, &locations)) {
        report.set_id = Some(set.id.to_hex());
        report.unchanged = true;
        report.marker = match repo.cache.position() {
            Some(p) => p.marker,
            None => repo.backend.position()?.marker,
        };
    } else {
        let stats =
            SetStats { files: report.files_total, dirs: report.dirs_total, bytes: report.bytes_total };
        let contents = SetContents { host: crate::failure::host_name(), locations, tags: opts.tags.clone() };
        let new = commit(repo, time_ns, stats, contents)?;
        report.bytes_stored_new += new.bytes;
        report.marker = new.committed.marker;
        (report.replicas, report.replicas_wanted) = (new.committed.replicas, new.committed.replicas_wanted);
        report.warnings.extend(new.warning);
        report.set_id = Some(new.set.id.to_hex());
    }
    report.node = repo.backend.node();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A backup set just committed.
pub(crate) struct NewSet {
    pub set: BackupSet,
    pub committed: Committed,
    /// The set object's size.
    pub bytes: u64,
    /// Set when fewer replicas hold it than were asked for.
    pub warning: Option<String>,
}

/// Seals a set of `contents` at the store's position, commits it and
/// records it in the cache.
pub(crate) fn commit(
    repo: &Repository,
    time_ns: i64,
    stats: SetStats,
    contents: SetContents,
) -> Result<NewSet> {
    let before = repo.backend.position()?;
    let (set, envelope) = BackupSet::seal(&repo.keys, time_ns, before.marker, stats, contents);
    let committed = repo.backend.commit_set(set.id, &envelope)?;
    let warning = (committed.replicas < committed.replicas_wanted).then(|| {
        let warning = format!(
            "the set is committed on {} node(s), fewer than the {} asked for; fast sync copies it to the \
             others when they answer",
            committed.replicas, committed.replicas_wanted
        );
        tracing::warn!("{warning}");
        warning
    });
    repo.cache.put_set(&set.id, &envelope);
    let after = repo.backend.position()?;
    repo.cache.record_change(before, after, Some(set.id), None);
    repo.held.committed(&repo.cache, before, after, set.id, &set.header.roots);
    Ok(NewSet { set, committed, bytes: envelope.len() as u64, warning })
}

/// What one location's scan gives the new set.
struct Scanned {
    /// None: the location is not in the new set at all.
    location: Option<Location>,
    /// Why the previous contents were kept instead of the scan.
    held: Option<String>,
}

fn scan_location(
    repo: &Repository,
    catalog: &Catalog,
    scanner: &Scanner,
    progress: &ProgressBar,
    source: &Source,
    opts: &BackupOptions,
) -> Result<Scanned> {
    let missing = opts.tolerate_missing && std::fs::symlink_metadata(&source.path).is_err();
    let path = if missing { source.path.clone() } else { scanner::location_path(&source.path)? };
    let key = path.as_os_str().as_encoded_bytes().to_vec();
    let previous = catalog.history(&key).last();
    if missing {
        let held = previous.map(|_| "is missing; keeping it as it was until it comes back".to_string());
        return Ok(Scanned { location: previous.map(|(_, l)| l.clone()), held });
    }
    progress.set_message(format!("scanning {}", path.display()));
    let files_before = scanner.counters.files_total.load(Relaxed);
    let root = scan_with_progress(scanner, progress, || {
        scanner.scan_root(&path, previous.map(|(_, l)| &l.root), &source.rules)
    })?;
    let files_now = scanner.counters.files_total.load(Relaxed) - files_before;
    let location = Location { path: key, root };
    let Some((set, previous)) = previous.filter(|_| !source.allow_deletions) else {
        return Ok(Scanned { location: Some(location), held: None });
    };
    let reason = deletions::hold_reason(
        repo,
        previous,
        set.header.stats.files,
        &location.root,
        files_now,
        opts.mass_deletion,
    )?;
    Ok(match reason {
        Some(reason) => Scanned {
            location: Some(previous.clone()),
            held: Some(format!("{reason}; `--allow-deletions {}` accepts it", source.label())),
        },
        None => Scanned { location: Some(location), held: None },
    })
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

//! Restore: recreate a backed-up tree, file or special file on disk.
//!
//! Directory entries are restored in parallel. A file whose chunks cannot be
//! read (corrupt or missing) is reported by name and removed rather than left
//! half-written; everything else is still restored. Attributes are applied
//! in an order that lets them stick: owner, then xattrs, then mode, then
//! times; directories get theirs last, after their contents, so their mtime
//! and a read-only mode survive. Files with several links are restored after
//! the walk and linked together again. Ownership and device nodes need root;
//! without it they are skipped with a warning.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use coffer_proto::ObjectId;
use filetime::FileTime;
use indicatif::{ProgressBar, ProgressStyle};
use nix::sys::stat::{Mode, SFlag};
use rayon::prelude::*;

use crate::browse::Located;
use crate::error::{Error, Result};
use crate::fill::{self, Fill};
use crate::repo::Repository;
use crate::sparse;
use crate::tree::{Entry, Kind};
use crate::wildcard::{self, Match};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Files an interrupted restore had finished, kept as they were.
    pub skipped: u64,
    /// Paths (as backed up) that could not be restored, with why.
    pub failures: Vec<String>,
    pub warnings: Vec<String>,
}

/// Files of at most this many chunks share their directory's stream.
const SMALL_FILE_CHUNKS: usize = 4;

/// How a restore runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Continue into what an interrupted restore left in DEST.
    pub resume: bool,
    /// Show a progress line with the time left.
    pub progress: bool,
}

struct Restorer<'a> {
    repo: &'a Repository,
    options: RestoreOptions,
    /// DEST, and whether it was there already as a directory to restore into.
    root: PathBuf,
    root_exists: bool,
    is_root: bool,
    files: AtomicU64,
    dirs: AtomicU64,
    bytes: AtomicU64,
    skipped: AtomicU64,
    failures: Mutex<Vec<String>>,
    warnings: Mutex<Vec<String>>,
    linked: Mutex<Vec<(PathBuf, PathBuf, Entry)>>,
    finished_dirs: Mutex<Vec<(PathBuf, Entry)>>,
    /// The id of a hole's largest zero chunk: skipped without fetching.
    hole_piece: ObjectId,
    bar: ProgressBar,
}

/// Restores `entry` (backed up as `source`) to `dest`, which must be absent or
/// an empty directory (or anything, with `resume`).
pub fn restore(
    repo: &Repository,
    entry: &Entry,
    source: &Path,
    dest: &Path,
    options: RestoreOptions,
) -> Result<RestoreReport> {
    let dest_is_dir = match fs::symlink_metadata(dest) {
        Err(_) => false,
        Ok(m) if m.is_dir() && options.resume => true,
        Ok(m) if m.is_dir() && fs::read_dir(dest).map_err(Error::io(dest))?.next().is_none() => true,
        Ok(_) if options.resume => false,
        Ok(_) => {
            return Err(Error::Invalid(format!(
                "{} exists and is not an empty directory",
                crate::names::show(dest)
            )));
        }
    };
    if dest_is_dir && entry.kind != Kind::Dir {
        return Err(Error::Invalid(format!(
            "{} is a directory; give a path for the restored file",
            crate::names::show(dest)
        )));
    }
    let r = Restorer {
        repo,
        options,
        root: dest.to_path_buf(),
        root_exists: dest_is_dir,
        is_root: nix::unistd::geteuid().is_root(),
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
        warnings: Mutex::new(Vec::new()),
        linked: Mutex::new(Vec::new()),
        finished_dirs: Mutex::new(Vec::new()),
        hole_piece: repo.keys.object_id(&vec![0; sparse::HOLE_PIECE]),
        bar: progress_bar(repo, entry, options.progress)?,
    };
    r.restore_entry(entry, source, dest)
        .map_err(|e| Error::Invalid(format!("{}: {e}", crate::names::show(source))))?;
    r.finish_links();
    for (path, e) in r.finished_dirs.lock().unwrap().iter() {
        r.apply_attributes(e, path);
    }
    r.bar.finish_and_clear();
    Ok(RestoreReport {
        files: r.files.load(Relaxed),
        dirs: r.dirs.load(Relaxed),
        bytes: r.bytes.load(Relaxed),
        skipped: r.skipped.load(Relaxed),
        failures: r.failures.into_inner().unwrap(),
        warnings: r.warnings.into_inner().unwrap(),
    })
}

/// Restores what a wildcard path matched into the directory `dest`, each
/// entry at its path from the first component with a wildcard
/// (`Mail/*.eml` restores `Mail/a.eml` as `DEST/a.eml`).
pub fn restore_matches(
    repo: &Repository,
    located: &Located,
    matches: &[Match],
    dest: &Path,
    options: RestoreOptions,
) -> Result<RestoreReport> {
    let from = wildcard::literal_prefix(&located.components);
    let location = Path::new(OsStr::from_bytes(&located.location));
    match fs::create_dir(dest) {
        Err(e)
            if e.kind() == std::io::ErrorKind::AlreadyExists
                && fs::metadata(dest).is_ok_and(|m| m.is_dir()) => {}
        other => other.map_err(Error::io(dest))?,
    }
    let mut total = RestoreReport::default();
    for m in matches {
        let join = |base: &Path, parts: &[Vec<u8>]| {
            parts.iter().fold(base.to_path_buf(), |p, c| p.join(OsStr::from_bytes(c)))
        };
        let (source, target) = (join(location, &m.components), join(dest, &m.components[from..]));
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(Error::io(parent))?;
        }
        let r = restore(repo, &m.entry, &source, &target, options)?;
        total.files += r.files;
        total.dirs += r.dirs;
        total.bytes += r.bytes;
        total.skipped += r.skipped;
        total.failures.extend(r.failures);
        total.warnings.extend(r.warnings);
    }
    Ok(total)
}

/// A bar over the bytes of every file below `entry` (the trees are read
/// now, and from the cache again as the restore walks them).
fn progress_bar(repo: &Repository, entry: &Entry, enabled: bool) -> Result<ProgressBar> {
    if !enabled {
        return Ok(ProgressBar::hidden());
    }
    let bar = ProgressBar::new(total_bytes(repo, entry)?);
    let style = "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left";
    bar.set_style(ProgressStyle::with_template(style).expect("valid template").progress_chars("=> "));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Ok(bar)
}

fn total_bytes(repo: &Repository, entry: &Entry) -> Result<u64> {
    match entry.kind {
        Kind::Dir => repo.tree(&entry.dir_tree()?)?.entries.par_iter().map(|e| total_bytes(repo, e)).sum(),
        Kind::File => Ok(entry.size),
        _ => Ok(0),
    }
}

impl Restorer<'_> {
    fn fail(&self, source: &Path, problem: impl std::fmt::Display) {
        self.failures.lock().unwrap().push(format!("{}: {problem}", crate::names::show(source)));
    }

    fn warn(&self, path: &Path, problem: impl std::fmt::Display) {
        self.warnings.lock().unwrap().push(format!("{}: {problem}", crate::names::show(path)));
    }

    fn restore_entry(&self, e: &Entry, source: &Path, dest: &Path) -> Result<()> {
        if e.kind == Kind::Dir {
            return self.restore_dir(e, source, dest);
        }
        if e.kind == Kind::File && e.nlink > 1 {
            self.linked.lock().unwrap().push((source.to_path_buf(), dest.to_path_buf(), e.clone()));
            return Ok(());
        }
        if self.options.resume && self.clear_for(e, dest)? {
            return Ok(());
        }
        match e.kind {
            Kind::Dir => unreachable!("handled above"),
            Kind::File => self.write_file(e, dest)?,
            Kind::Symlink => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&e.target), dest).map_err(Error::io(dest))?
            }
            Kind::Fifo => nix::unistd::mkfifo(dest, Mode::from_bits_truncate(e.mode & 0o7777))
                .map_err(|errno| Error::Io { path: dest.to_path_buf(), source: errno.into() })?,
            Kind::CharDevice | Kind::BlockDevice => {
                if !self.is_root {
                    self.warn(source, "device node not recreated (needs root)");
                    return Ok(());
                }
                let kind = if e.kind == Kind::CharDevice { SFlag::S_IFCHR } else { SFlag::S_IFBLK };
                nix::sys::stat::mknod(dest, kind, Mode::from_bits_truncate(e.mode & 0o7777), e.rdev)
                    .map_err(|errno| Error::Io { path: dest.to_path_buf(), source: errno.into() })?;
            }
        }
        self.apply_attributes(e, dest);
        Ok(())
    }

    /// Resuming: whether `dest` is a file an earlier restore finished (its
    /// size and mtime are the backed-up ones); otherwise whatever is there
    /// is removed to make way.
    fn clear_for(&self, e: &Entry, dest: &Path) -> Result<bool> {
        let Ok(meta) = fs::symlink_metadata(dest) else { return Ok(false) };
        let finished = e.kind == Kind::File
            && meta.is_file()
            && meta.len() == e.size
            && meta.mtime() * 1_000_000_000 + meta.mtime_nsec() == e.mtime_ns;
        if finished {
            self.skipped.fetch_add(1, Relaxed);
            self.bar.inc(e.size);
            return Ok(true);
        }
        if meta.is_dir() {
            return Err(Error::Invalid(format!(
                "{} is a directory where the backup has a file; move it away and resume again",
                crate::names::show(dest)
            )));
        }
        fs::remove_file(dest).map_err(Error::io(dest))?;
        Ok(false)
    }

    fn restore_dir(&self, e: &Entry, source: &Path, dest: &Path) -> Result<()> {
        // Only DEST itself may exist already (as an empty directory, checked
        // at the start), or, resuming, a real directory an earlier run made;
        // everything else is made here, so no path ever passes through a
        // symlink this restore did not create as a leaf.
        let there = fs::symlink_metadata(dest).ok();
        let reuse = (dest == self.root && self.root_exists)
            || (self.options.resume && there.as_ref().is_some_and(|m| m.is_dir()));
        if !reuse {
            if self.options.resume && there.is_some() {
                fs::remove_file(dest).map_err(Error::io(dest))?;
            }
            fs::create_dir(dest).map_err(Error::io(dest))?;
        }
        self.dirs.fetch_add(1, Relaxed);
        let tree = self.repo.tree(&e.dir_tree()?)?;
        let paths = |child: &Entry| {
            let name = OsStr::from_bytes(&child.name);
            (source.join(name), dest.join(name))
        };
        let (small, rest): (Vec<&Entry>, Vec<&Entry>) = tree.entries.iter().partition(|c| self.batched(c));
        let mut small_files = Vec::new();
        for child in small {
            let (source, dest) = paths(child);
            if self.options.resume {
                match self.clear_for(child, &dest) {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(err) => {
                        self.fail(&source, err);
                        continue;
                    }
                }
            }
            small_files.push((child, source, dest));
        }
        rayon::join(
            || self.write_small_files(&small_files),
            || {
                rest.par_iter().for_each(|child| {
                    let (source, dest) = paths(child);
                    if let Err(err) = self.restore_entry(child, &source, &dest) {
                        self.fail(&source, err);
                    }
                })
            },
        );
        self.finished_dirs.lock().unwrap().push((dest.to_path_buf(), e.clone()));
        Ok(())
    }

    /// Whether a child is restored in its directory's shared stream: a
    /// file of a few chunks, with one link, that needs fetching at all.
    fn batched(&self, e: &Entry) -> bool {
        e.kind == Kind::File
            && e.nlink <= 1
            && e.content.len() <= SMALL_FILE_CHUNKS
            && fill::wanted(e, &self.hole_piece).next().is_some()
    }

    fn write_file(&self, e: &Entry, dest: &Path) -> Result<()> {
        let result = self.write_chunks(e, dest);
        if result.is_err() {
            let _ = fs::remove_file(dest);
        }
        result
    }

    /// Writes the file's chunks as they stream in (see `fill`).
    fn write_chunks(&self, e: &Entry, dest: &Path) -> Result<()> {
        let mut fill = Fill::create(e, dest, self.hole_piece)?;
        let fetched: Vec<ObjectId> = fill::wanted(e, &self.hole_piece).copied().collect();
        self.repo.chunks(&fetched, |data| {
            fill.take(&data)?;
            self.count_bytes(data.len());
            Ok(())
        })?;
        fill.finish()?;
        self.files.fetch_add(1, Relaxed);
        Ok(())
    }

    fn count_bytes(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Relaxed);
        self.bar.inc(n as u64);
    }

    /// Restores a directory's small files from one stream of their chunks,
    /// in order, each finished as its last chunk arrives (one request for
    /// the lot instead of one per file). If the stream fails, the files it
    /// did not finish are restored one by one, so a bad chunk fails only
    /// its own file.
    fn write_small_files(&self, files: &[(&Entry, PathBuf, PathBuf)]) {
        let ids: Vec<ObjectId> =
            files.iter().flat_map(|(e, _, _)| fill::wanted(e, &self.hole_piece)).copied().collect();
        let mut done = 0;
        let mut current: Option<Fill> = None;
        let streamed = self.repo.chunks(&ids, |data| {
            let fill = match &mut current {
                Some(fill) => fill,
                None => current.insert(Fill::create(files[done].0, &files[done].2, self.hole_piece)?),
            };
            fill.take(&data)?;
            self.count_bytes(data.len());
            if fill.left == 0 {
                current.take().expect("filling").finish()?;
                let (e, _, dest) = &files[done];
                self.files.fetch_add(1, Relaxed);
                self.apply_attributes(e, dest);
                done += 1;
            }
            Ok(())
        });
        if streamed.is_err() {
            if current.is_some() {
                let _ = fs::remove_file(&files[done].2);
            }
            for (e, source, dest) in &files[done..] {
                if let Err(err) = self.restore_entry(e, source, dest) {
                    self.fail(source, err);
                }
            }
        }
    }

    /// Restores multiply-linked files: the first of each group is written,
    /// the rest are linked to it.
    fn finish_links(&self) {
        let mut first: HashMap<(u64, u64), PathBuf> = HashMap::new();
        for (source, dest, e) in self.linked.lock().unwrap().drain(..) {
            let key = (e.dev, e.inode);
            if self.options.resume && fs::symlink_metadata(&dest).is_ok() {
                // Linked again below, or written again if it is the first.
                if let Err(err) = fs::remove_file(&dest) {
                    self.fail(&source, err);
                    continue;
                }
            }
            let linked = first.get(&key).is_some_and(|target| fs::hard_link(target, &dest).is_ok());
            if linked {
                self.files.fetch_add(1, Relaxed);
                continue;
            }
            match self.write_file(&e, &dest) {
                Ok(()) => {
                    self.apply_attributes(&e, &dest);
                    first.insert(key, dest);
                }
                Err(err) => self.fail(&source, err),
            }
        }
    }

    fn apply_attributes(&self, e: &Entry, path: &Path) {
        let owned = std::os::unix::fs::lchown(path, Some(e.uid), Some(e.gid));
        if let Err(errno) = &owned
            && self.is_root
        {
            self.warn(path, format_args!("owner not restored: {errno}"));
        }
        // Symlinks are never followed: their xattrs and mode are not set
        // (setting them would reach whatever the link points at).
        if e.kind == Kind::Symlink {
            return self.set_times(e, path);
        }
        for (name, value) in &e.xattrs {
            if let Err(err) = xattr::set(path, OsStr::from_bytes(name), value) {
                self.warn(path, format_args!("xattr {} not restored: {err}", crate::names::escape(name)));
            }
        }
        // Set-id bits only on a file whose owner was restored: never a
        // setuid program owned by whoever ran the restore.
        let mode = if owned.is_ok() { e.mode & 0o7777 } else { e.mode & 0o1777 };
        if mode != e.mode & 0o7777 {
            self.warn(path, "set-user/group-id bits left off: the owner was not restored");
        }
        if let Err(err) = fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
            self.warn(path, format_args!("mode not restored: {err}"));
        }
        self.set_times(e, path);
    }

    fn set_times(&self, e: &Entry, path: &Path) {
        let mtime = FileTime::from_unix_time(
            e.mtime_ns.div_euclid(1_000_000_000),
            e.mtime_ns.rem_euclid(1_000_000_000) as u32,
        );
        if let Err(err) = filetime::set_symlink_file_times(path, mtime, mtime) {
            self.warn(path, format_args!("times not restored: {err}"));
        }
    }
}

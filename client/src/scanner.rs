//! The scanner: turns a directory on disk into trees, reading only what
//! changed.
//!
//! Each entry is compared with the same name's entry in the previous backup
//! set (from the local cache, so nothing-changed needs no download): same
//! size, mtime, ctime and inode means the file's chunks are reused without
//! reading it. Entries of a directory are handled in parallel (rayon), and a
//! file's chunks are hashed and sealed in parallel batches, so both cores work.
//!
//! Racy files: a file read within [`RACY_WINDOW_NS`] of its last modification
//! could change again without its mtime moving, so its entry is marked `racy`
//! and the next backup reads it again (git's "racy clean" rule; the design's
//! "stored mtime min(mtime, start-1)" serves the same end, but Coffer keeps
//! the true mtime for restore). A file that changes while it is read is read
//! again, up to [`MAX_READS`] times.
//!
//! What is taken follows the location's [`Rules`]; in the daemon's lazy
//! mode an [`AgePolicy`] holds back files changed too recently, and a
//! [`Steering`] can pause or stop the scan between two objects.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use coffer_proto::ObjectId;
use coffer_store::PutOutcome;
use rayon::prelude::*;

use crate::age::AgePolicy;
use crate::chunker::{self, DEFAULT_PARAMS};
use crate::crypto;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::rules::{self, Rules, Verdict};
use crate::sparse::{self, Segment};
use crate::steering::Steering;
use crate::tree::{Entry, Kind, Tree};

pub const RACY_WINDOW_NS: i64 = 20_000_000;
pub const MAX_READS: u32 = 3;
/// Chunks hashed and sealed together; bounds memory per file being read.
const CHUNK_BATCH: usize = 8;

/// Running totals of one scan.
#[derive(Default, Debug)]
pub struct Counters {
    pub files_total: AtomicU64,
    pub dirs_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub files_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub chunks_new: AtomicU64,
    pub bytes_stored_new: AtomicU64,
}

/// How a scan treats what it finds, beyond each location's rules.
#[derive(Clone, Copy, Default)]
pub struct ScanOptions<'a> {
    pub compress: bool,
    pub age: Option<&'a AgePolicy>,
    /// Larger files are skipped, with a warning.
    pub max_file_size: Option<u64>,
    pub steering: Option<&'a Steering>,
}

pub struct Scanner<'a> {
    repo: &'a Repository,
    options: ScanOptions<'a>,
    pub counters: Counters,
    warnings: Mutex<Vec<String>>,
    /// Content of multiply-linked files already read, by (device, inode).
    links: Mutex<HashMap<(u64, u64), Entry>>,
    /// Ids of the zero chunks holes are stored as, by length.
    zero_chunks: Mutex<HashMap<usize, ObjectId>>,
}

impl<'a> Scanner<'a> {
    pub fn new(repo: &'a Repository, options: ScanOptions<'a>) -> Self {
        Scanner {
            repo,
            options,
            counters: Counters::default(),
            warnings: Mutex::new(Vec::new()),
            links: Mutex::new(HashMap::new()),
            zero_chunks: Mutex::new(HashMap::new()),
        }
    }

    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut self.warnings.lock().unwrap())
    }

    fn warn(&self, path: &Path, problem: impl std::fmt::Display) {
        let message = format!("{}: {problem}", crate::names::show(path));
        tracing::debug!("{message}");
        self.warnings.lock().unwrap().push(message);
    }

    /// Scans a backup location's root directory; `previous` is its entry in
    /// the last set that had it.
    pub fn scan_root(&self, path: &Path, previous: Option<&Entry>, rules: &Rules) -> Result<Entry> {
        let meta = fs::symlink_metadata(path).map_err(Error::io(path))?;
        if !meta.is_dir() {
            return Err(Error::Invalid(format!(
                "{} is not a directory; back up directories",
                path.display()
            )));
        }
        let mut entry = entry_from(path.as_os_str().as_bytes().to_vec(), &meta, Kind::Dir);
        entry.xattrs = read_xattrs(path);
        let previous_tree = match previous {
            Some(p) => self.previous_tree(path, p)?,
            None => None,
        };
        entry.content = vec![self.scan_dir(path, previous_tree.as_ref(), rules, false)?.0];
        Ok(entry)
    }

    /// The previous backup's tree of a directory. A damaged one only costs
    /// re-reading the directory; a store that fails or changed stops the scan.
    fn previous_tree(&self, path: &Path, previous: &Entry) -> Result<Option<(ObjectId, Tree)>> {
        let Some(id) = previous.tree() else { return Ok(None) };
        match self.repo.tree(&id) {
            Ok(tree) => Ok(Some((id, tree))),
            Err(e) if e.is_store_failure() => Err(e),
            Err(e) => {
                self.warn(path, format_args!("previous backup unreadable, reading everything: {e}"));
                Ok(None)
            }
        }
    }

    /// Scans a directory into a tree and stores the objects of it that the
    /// store lacks, unless it is exactly the previous backup's tree, which
    /// the store already holds: an unchanged directory costs no store access.
    /// Returns the tree's id and how many entries it has.
    fn scan_dir(
        &self,
        path: &Path,
        previous: Option<&(ObjectId, Tree)>,
        rules: &Rules,
        descended: bool,
    ) -> Result<(ObjectId, usize)> {
        if self.options.steering.is_some_and(Steering::stopping) {
            return Err(Error::Stopped);
        }
        self.counters.dirs_total.fetch_add(1, Relaxed);
        let mut names: Vec<OsString> = fs::read_dir(path)
            .map_err(Error::io(path))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(Error::io(path))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let entries: Vec<Option<Entry>> = names
            .par_iter()
            .map(|name| {
                let child = path.join(name);
                let prev = previous.and_then(|(_, t)| t.find(name.as_bytes()));
                match self.scan_entry(&child, name.as_bytes(), prev, rules, descended) {
                    Err(e) if e.is_about_a_file() => {
                        self.warn(&child, format_args!("not backed up: {e}"));
                        Ok(None)
                    }
                    other => other,
                }
            })
            .collect::<Result<_>>()?;
        let tree = Tree { entries: entries.into_iter().flatten().collect() };
        let count = tree.entries.len();
        if let Some((id, _)) = previous.filter(|(_, t)| *t == tree) {
            return Ok((*id, count));
        }
        let id = self.repo.store_tree(&tree, |bytes| self.before_upload(bytes))?;
        Ok((id, count))
    }

    fn before_upload(&self, bytes: usize) -> Result<()> {
        match self.options.steering {
            Some(steering) => steering.before_upload(bytes),
            None => Ok(()),
        }
    }

    fn scan_entry(
        &self,
        path: &Path,
        name: &[u8],
        previous: Option<&Entry>,
        rules: &Rules,
        descended: bool,
    ) -> Result<Option<Entry>> {
        let meta = fs::symlink_metadata(path).map_err(Error::io(path))?;
        let Some(kind) = Kind::of(&meta.file_type()) else { return Ok(None) };
        let verdict = rules.decide(path, kind == Kind::Dir, descended);
        if verdict == Verdict::Exclude || (kind == Kind::Dir && rules::is_virtual_fs(path)) {
            return Ok(None);
        }
        let mut entry = entry_from(name.to_vec(), &meta, kind);
        entry.xattrs = read_xattrs(path);
        match kind {
            Kind::Dir => {
                let prev_tree = match previous.filter(|p| p.kind == Kind::Dir) {
                    Some(p) => self.previous_tree(path, p)?,
                    None => None,
                };
                let descend = verdict == Verdict::Descend;
                let (tree, count) = self.scan_dir(path, prev_tree.as_ref(), rules, descend)?;
                if descend && count == 0 {
                    return Ok(None);
                }
                entry.content = vec![tree];
            }
            Kind::File => {
                if let Some(limit) = self.options.max_file_size.filter(|&limit| entry.size > limit) {
                    self.warn(path, format_args!("not backed up: larger than max_file_size ({limit} bytes)"));
                    return Ok(None);
                }
                let previous = previous.filter(|p| p.kind == Kind::File);
                if let Some(kept) = self.held_back(path, &entry, previous) {
                    return Ok(kept);
                }
                self.file_content(path, &mut entry, previous)?;
                self.count_file(&entry);
            }
            Kind::Symlink => {
                entry.target = fs::read_link(path).map_err(Error::io(path))?.as_os_str().as_bytes().to_vec();
            }
            _ => {}
        }
        Ok(Some(entry))
    }

    fn count_file(&self, entry: &Entry) {
        self.counters.files_total.fetch_add(1, Relaxed);
        self.counters.bytes_total.fetch_add(entry.size, Relaxed);
        if let Some(steering) = self.options.steering {
            steering.scanned(entry.size);
        }
    }

    /// A changed file the age policy holds back: its previous version stays
    /// (`Some(Some(previous))`), or a new file stays out (`Some(None)`).
    fn held_back(&self, path: &Path, now: &Entry, previous: Option<&Entry>) -> Option<Option<Entry>> {
        let age = self.options.age?;
        if previous.is_some_and(|p| unchanged(p, now)) {
            return None;
        }
        let changed = now.mtime_ns.max(now.ctime_ns);
        if age.ready(path, changed, coffer_proto::clock::now_ns()) {
            return None;
        }
        let kept = previous.cloned();
        if let Some(kept) = &kept {
            self.count_file(kept);
        }
        Some(kept)
    }

    fn file_content(&self, path: &Path, entry: &mut Entry, previous: Option<&Entry>) -> Result<()> {
        if let Some(prev) = previous.filter(|p| unchanged(p, entry)) {
            entry.content = prev.content.clone();
            return Ok(());
        }
        let link_key = (entry.nlink > 1).then_some((entry.dev, entry.inode));
        if let Some(key) = link_key
            && let Some(seen) = self.links.lock().unwrap().get(&key).filter(|s| unchanged(s, entry))
        {
            entry.content = seen.content.clone();
            entry.racy = seen.racy;
            return Ok(());
        }
        self.read_file(path, entry)?;
        if let Some(key) = link_key {
            self.links.lock().unwrap().insert(key, entry.clone());
        }
        Ok(())
    }

    /// Reads a file into chunks, again if it changed while being read.
    fn read_file(&self, path: &Path, entry: &mut Entry) -> Result<()> {
        self.counters.files_read.fetch_add(1, Relaxed);
        if let Some(steering) = self.options.steering {
            steering.reading(Some(path));
        }
        for attempt in 1..=MAX_READS {
            let file = File::open(path).map_err(Error::io(path))?;
            let before = file.metadata().map_err(Error::io(path))?;
            let read_start = coffer_proto::clock::now_ns();
            let content = self.store_content(&file, path, before.len())?;
            let after = file.metadata().map_err(Error::io(path))?;
            let stable = same_stat(&before, &after);
            if stable || attempt == MAX_READS {
                if !stable {
                    self.warn(
                        path,
                        "changed while being read; stored the last read, will read it again next time",
                    );
                }
                let fresh = entry_from(entry.name.clone(), &after, Kind::File);
                entry.size = fresh.size;
                entry.mtime_ns = fresh.mtime_ns;
                entry.ctime_ns = fresh.ctime_ns;
                entry.content = content;
                entry.racy = !stable || fresh.mtime_ns + RACY_WINDOW_NS > read_start;
                break;
            }
        }
        Ok(())
    }

    /// Stores a file's data segments as chunks and its holes as zero
    /// chunks, never reading a hole (see `sparse`).
    fn store_content(&self, file: &File, path: &Path, size: u64) -> Result<Vec<ObjectId>> {
        let mut ids = Vec::new();
        for segment in sparse::segments(file, size) {
            match segment {
                Segment::Data { start, len } => ids.extend(self.store_data(file, path, start, len)?),
                Segment::Hole { len } => {
                    for piece in sparse::hole_pieces(len) {
                        ids.push(self.zero_chunk(piece)?);
                    }
                }
            }
        }
        Ok(ids)
    }

    fn store_data(&self, mut file: &File, path: &Path, start: u64, len: u64) -> Result<Vec<ObjectId>> {
        file.seek(SeekFrom::Start(start)).map_err(Error::io(path))?;
        let mut ids = Vec::new();
        let mut batch = Vec::with_capacity(CHUNK_BATCH);
        for chunk in chunker::chunks(file.take(len), DEFAULT_PARAMS) {
            let chunk = chunk.map_err(Error::io(path))?;
            self.counters.bytes_read.fetch_add(chunk.len() as u64, Relaxed);
            batch.push(chunk);
            if batch.len() == CHUNK_BATCH {
                ids.extend(self.store_chunks(std::mem::take(&mut batch))?);
            }
        }
        ids.extend(self.store_chunks(batch)?);
        Ok(ids)
    }

    /// The id of `len` zero bytes, stored once per scan.
    fn zero_chunk(&self, len: usize) -> Result<ObjectId> {
        if let Some(id) = self.zero_chunks.lock().unwrap().get(&len) {
            return Ok(*id);
        }
        let id = self.store_chunks(vec![vec![0; len]])?[0];
        self.zero_chunks.lock().unwrap().insert(len, id);
        Ok(id)
    }

    /// Hashes a batch of chunks, asks the store which it lacks in one call,
    /// and seals and uploads only those.
    fn store_chunks(&self, batch: Vec<Vec<u8>>) -> Result<Vec<ObjectId>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let keys = &self.repo.keys;
        let ids: Vec<ObjectId> = batch.par_iter().map(|c| keys.object_id(c)).collect();
        let present = self.repo.known_held(&ids)?;
        let sealed: Vec<Option<Vec<u8>>> = batch
            .par_iter()
            .zip(&ids)
            .zip(&present)
            .map(|((chunk, id), present)| {
                (!present).then(|| crypto::seal_chunk(keys, id, chunk, self.options.compress))
            })
            .collect();
        for (id, envelope) in ids.iter().zip(sealed) {
            let Some(envelope) = envelope else { continue };
            self.before_upload(envelope.len())?;
            if let PutOutcome::Stored(bytes) = self.repo.backend.put(*id, &envelope)? {
                self.counters.chunks_new.fetch_add(1, Relaxed);
                self.counters.bytes_stored_new.fetch_add(bytes, Relaxed);
            }
        }
        Ok(ids)
    }
}

fn unchanged(previous: &Entry, now: &Entry) -> bool {
    previous.kind == Kind::File
        && !previous.racy
        && previous.size == now.size
        && previous.mtime_ns == now.mtime_ns
        && previous.ctime_ns == now.ctime_ns
        && previous.inode == now.inode
}

fn same_stat(a: &Metadata, b: &Metadata) -> bool {
    a.size() == b.size()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.ctime() == b.ctime()
        && a.ctime_nsec() == b.ctime_nsec()
}

/// The metadata part of an entry, from `lstat`.
pub fn entry_from(name: Vec<u8>, meta: &Metadata, kind: Kind) -> Entry {
    Entry {
        name,
        kind,
        size: if kind == Kind::File { meta.size() } else { 0 },
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        dev: meta.dev(),
        inode: meta.ino(),
        nlink: meta.nlink(),
        rdev: meta.rdev(),
        xattrs: Vec::new(),
        target: Vec::new(),
        content: Vec::new(),
        racy: false,
    }
}

/// Extended attributes of a path (not following symlinks); unreadable ones are skipped.
pub fn read_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(names) = xattr::list(path) else { return Vec::new() };
    let mut out: Vec<_> = names
        .filter_map(|n| {
            let value = xattr::get(path, &n).ok().flatten()?;
            Some((n.as_bytes().to_vec(), value))
        })
        .collect();
    out.sort();
    out
}

/// Absolute, symlink-resolved form of a backup location.
pub fn location_path(path: &Path) -> Result<PathBuf> {
    fs::canonicalize(path).map_err(Error::io(path))
}

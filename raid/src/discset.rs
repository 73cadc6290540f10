//! A disc set: one directory, or three (stripe `k` of every file lives in
//! directory `k`). Files are named by relative paths such as
//! `packs/0001/00ab.pack`.
//!
//! Each directory carries a `.discset` label (the set's random id, its
//! position, the number of directories). Opening checks the labels, so a
//! directory of another disc set, or the same directories listed in another
//! order, is refused before anything could be mistaken for an orphan and
//! removed; an empty directory (a replaced disc) is labelled, and a rebuild
//! fills it. Opening also settles what a crash can leave: temporary stripes
//! (`NAME.rfw`) of a commit under way are put in place, those of writes that
//! never committed are removed (a caller that may refuse the discs opens
//! them as found and settles once it has decided). Reads that had to repair a
//! block from parity are counted, for the node's metrics.

use std::collections::HashSet;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::warn;

use crate::durable;
use crate::error::{RaidError, Result};
use crate::layout::DEFAULT_BLOCK_SIZE;
use crate::reader::RaidReader;
use crate::writer::{Overwrite, RaidWriter};

/// Suffix of a stripe being written.
pub const TEMP_SUFFIX: &str = ".rfw";

#[derive(Clone)]
pub struct DiscSet {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The set's id, in every directory's label.
    id: u64,
    /// Serialises the relabelling of a directory that vanished.
    relabel: Mutex<()>,
    pub(crate) dirs: Vec<PathBuf>,
    pub(crate) block_size: u32,
    /// Names with a writer in this process.
    pub(crate) writing: Mutex<HashSet<String>>,
    degraded_reads: AtomicU64,
}

impl DiscSet {
    /// Opens (creating if needed) a disc set of 1 or 3 directories, and
    /// settles what a crash left.
    pub fn open(dirs: &[PathBuf]) -> Result<DiscSet> {
        Self::with_block_size(dirs, DEFAULT_BLOCK_SIZE)
    }

    pub fn with_block_size(dirs: &[PathBuf], block_size: u32) -> Result<DiscSet> {
        let set = Self::unsettled(dirs, block_size)?;
        set.settle()?;
        Ok(set)
    }

    /// Opens the set without touching a stripe: for a caller that must look
    /// before it decides whether these discs are its own to repair (a store
    /// that finds no index for its packs refuses them as they are).
    /// [`DiscSet::settle`] must run before the set is written to.
    pub fn open_as_found(dirs: &[PathBuf]) -> Result<DiscSet> {
        Self::unsettled(dirs, DEFAULT_BLOCK_SIZE)
    }

    fn unsettled(dirs: &[PathBuf], block_size: u32) -> Result<DiscSet> {
        if !matches!(dirs.len(), 1 | 3) {
            return Err(RaidError::DiscCount(dirs.len()));
        }
        for dir in dirs {
            durable::create_dir_all(dir)?;
        }
        let id = check_labels(dirs)?;
        Ok(DiscSet {
            inner: Arc::new(Inner {
                id,
                relabel: Mutex::new(()),
                dirs: dirs.to_vec(),
                block_size: block_size.max(1),
                writing: Mutex::new(HashSet::new()),
                degraded_reads: AtomicU64::new(0),
            }),
        })
    }

    /// Finishes the commits a crash interrupted and removes the stripes of
    /// writes that never committed.
    pub fn settle(&self) -> Result<()> {
        crate::writer::settle_temporaries(&self.inner.dirs)
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.inner.dirs
    }

    pub fn stripes(&self) -> usize {
        self.inner.dirs.len()
    }

    /// Where stripe `s` of `name` lives once committed.
    pub fn stripe_path(&self, name: &str, s: usize) -> PathBuf {
        self.inner.dirs[s].join(name)
    }

    pub(crate) fn temp_path(&self, name: &str, s: usize) -> PathBuf {
        self.inner.dirs[s].join(format!("{name}{TEMP_SUFFIX}"))
    }

    /// Makes sure directory `s` is there before a stripe is written to it:
    /// a directory that vanished (a dead disc, its mount gone) is made again
    /// with this set's label, so the stripes written to it now are known as
    /// this set's and `rebuild` later fills in the rest. Never relabels a
    /// directory that exists.
    pub(crate) fn ensure_dir(&self, s: usize) -> Result<()> {
        let dir = &self.inner.dirs[s];
        if dir.join(LABEL).exists() {
            return Ok(());
        }
        let _one = self.inner.relabel.lock().unwrap();
        if dir.exists() {
            return Ok(());
        }
        warn!(dir = %dir.display(), "disc directory is gone; making it again, labelled, for new stripes");
        durable::create_dir_all(dir)?;
        write_label(dir, self.inner.id, s, self.stripes())
    }

    /// Whether any stripe of `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        (0..self.stripes()).any(|s| self.stripe_path(name, s).exists())
    }

    /// Starts writing `name`; it becomes visible at [`RaidWriter::commit`].
    pub fn create(&self, name: &str, overwrite: Overwrite) -> Result<RaidWriter> {
        RaidWriter::new(self.clone(), name, overwrite)
    }

    pub fn open_file(&self, name: &str) -> Result<RaidReader> {
        RaidReader::open(self.clone(), name)
    }

    /// Removes every stripe of `name`.
    pub fn remove(&self, name: &str) -> Result<()> {
        check_name(name)?;
        for s in 0..self.stripes() {
            let path = self.stripe_path(name, s);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(RaidError::Io { path, source: e });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Renames every stripe of `from` to `to` (making `to`'s directories),
    /// durably: a stripe missing from a lost disc is skipped.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        check_name(from)?;
        check_name(to)?;
        for s in 0..self.stripes() {
            let (old, new) = (self.stripe_path(from, s), self.stripe_path(to, s));
            if !old.exists() {
                continue;
            }
            durable::create_dir_all(new.parent().unwrap_or(Path::new(".")))?;
            fs::rename(&old, &new).map_err(RaidError::io(&old))?;
            durable::sync_parent(&new)?;
            durable::sync_parent(&old)?;
        }
        Ok(())
    }

    /// Every committed file of the set (present in at least one directory).
    pub fn names(&self) -> Result<Vec<String>> {
        let mut names = std::collections::BTreeSet::new();
        for dir in &self.inner.dirs {
            collect_names(dir, dir, &mut names)?;
        }
        Ok(names.into_iter().collect())
    }

    /// Directories of the set that have lost their label: a disc gone (its
    /// mount empty or the directory removed). Reads go on from parity;
    /// `rebuild` refills it once it is back.
    pub fn missing(&self) -> Vec<PathBuf> {
        self.inner.dirs.iter().filter(|dir| !dir.join(LABEL).exists()).cloned().collect()
    }

    /// Reads that had to rebuild a block from the other stripes.
    pub fn degraded_reads(&self) -> u64 {
        self.inner.degraded_reads.load(Ordering::Relaxed)
    }

    pub(crate) fn count_degraded(&self) {
        self.inner.degraded_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes used in each directory of the set.
    pub fn usage(&self) -> Result<Vec<u64>> {
        self.inner
            .dirs
            .iter()
            .map(|dir| {
                let mut names = std::collections::BTreeSet::new();
                collect_names(dir, dir, &mut names)?;
                Ok(names.iter().filter_map(|n| fs::metadata(dir.join(n)).ok()).map(|m| m.len()).sum())
            })
            .collect()
    }
}

/// Name of the label file in each directory of a set.
pub const LABEL: &str = ".discset";

/// Reads every directory's label, refuses mismatches, labels new (empty)
/// directories; returns the set's id.
pub(crate) fn check_labels(dirs: &[PathBuf]) -> Result<u64> {
    let n = dirs.len();
    let mut labels = Vec::new();
    for (k, dir) in dirs.iter().enumerate() {
        let path = dir.join(LABEL);
        let label = match fs::read_to_string(&path) {
            Ok(text) => Some(parse_label(&text).ok_or_else(|| RaidError::Label {
                dir: dir.clone(),
                problem: format!("unreadable label `{}`", text.trim()),
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(RaidError::Io { path, source: e }),
        };
        if let Some((_, position, count)) = label
            && (position, count) != (k, n)
        {
            return Err(RaidError::Label {
                dir: dir.clone(),
                problem: format!(
                    "it is directory {} of {count}, but is listed as {} of {n}",
                    position + 1,
                    k + 1
                ),
            });
        }
        labels.push(label);
    }
    let ids: std::collections::BTreeSet<u64> = labels.iter().flatten().map(|(id, _, _)| *id).collect();
    if ids.len() > 1 {
        return Err(RaidError::Label {
            dir: dirs[0].clone(),
            problem: "these directories belong to different disc sets".into(),
        });
    }
    let id = ids.into_iter().next().unwrap_or_else(rand::random);
    for (k, dir) in dirs.iter().enumerate().filter(|(k, _)| labels[*k].is_none()) {
        let mut held = std::collections::BTreeSet::new();
        collect_names(dir, dir, &mut held)?;
        if !held.is_empty() {
            return Err(RaidError::Label {
                dir: dir.clone(),
                problem: "it holds files but no disc-set label; refusing to adopt it (if it is this \
                          set's disc that lost its label, move its contents aside: the node then \
                          labels it afresh and `coffer-admin raid rebuild` refills it from the others)"
                    .into(),
            });
        }
        write_label(dir, id, k, n)?;
    }
    Ok(id)
}

fn write_label(dir: &Path, id: u64, position: usize, count: usize) -> Result<()> {
    durable::write_file(&dir.join(LABEL), format!("coffer-discset {id:016x} {position} {count}\n").as_bytes())
}

fn parse_label(text: &str) -> Option<(u64, usize, usize)> {
    let mut words = text.split_whitespace();
    (words.next()? == "coffer-discset").then_some(())?;
    let id = u64::from_str_radix(words.next()?, 16).ok()?;
    Some((id, words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// A name is a relative path without `..`, and not a temporary's.
pub fn check_name(name: &str) -> Result<()> {
    let path = Path::new(name);
    let ok = !name.is_empty()
        && name != LABEL
        && !name.ends_with(TEMP_SUFFIX)
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if ok { Ok(()) } else { Err(RaidError::BadName(name.to_string())) }
}

fn collect_names(root: &Path, dir: &Path, out: &mut std::collections::BTreeSet<String>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        // A lost disc holds nothing; its stripes are rebuilt from the others.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(RaidError::Io { path: dir.to_path_buf(), source: e }),
    };
    for entry in entries {
        let path = entry.map_err(RaidError::io(dir))?.path();
        if path.is_dir() {
            collect_names(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let name = rel.to_string_lossy().into_owned();
            if !name.ends_with(TEMP_SUFFIX) && name != LABEL {
                out.insert(name);
            }
        }
    }
    Ok(())
}

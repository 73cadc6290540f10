//! Compare a backup with the disk.
//!
//! Quick mode trusts metadata: kind, size, mtime, mode and symlink targets. The
//! default also re-reads every file and re-chunks it: because chunk ids are
//! keyed hashes of content and chunking is deterministic, comparing id lists
//! proves the content equal without downloading anything.
//!
//! An entry on disk that the location's rules leave out is not a difference.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use coffer_proto::ObjectId;
use rayon::prelude::*;

use crate::chunker::{self, DEFAULT_PARAMS};
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::rules::{Rules, Verdict};
use crate::scanner::entry_from;
use crate::tree::{Entry, Kind};

/// One way in which the disk differs from the backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    pub path: String,
    pub what: String,
}

/// What every level of the comparison shares.
struct Walk<'a> {
    repo: &'a Repository,
    rules: &'a Rules,
    quick: bool,
}

pub fn compare(
    repo: &Repository,
    stored: &Entry,
    path: &Path,
    rules: &Rules,
    quick: bool,
) -> Result<Vec<Difference>> {
    let mut out = Vec::new();
    let walk = Walk { repo, rules, quick };
    walk.entry(stored, path, false, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn differ(out: &mut Vec<Difference>, path: &Path, what: impl Into<String>) {
    out.push(Difference { path: crate::names::show(path), what: what.into() });
}

impl Walk<'_> {
    fn entry(&self, stored: &Entry, path: &Path, descended: bool, out: &mut Vec<Difference>) -> Result<()> {
        let Ok(meta) = fs::symlink_metadata(path) else {
            differ(out, path, "missing on disk");
            return Ok(());
        };
        let Some(kind) = Kind::of(&meta.file_type()) else {
            differ(out, path, "is a socket on disk");
            return Ok(());
        };
        let disk = entry_from(Vec::new(), &meta, kind);
        if disk.kind != stored.kind {
            differ(out, path, format!("is a {:?} on disk, a {:?} in the backup", disk.kind, stored.kind));
            return Ok(());
        }
        if disk.mode & 0o7777 != stored.mode & 0o7777 {
            differ(
                out,
                path,
                format!("mode {:o} on disk, {:o} in the backup", disk.mode & 0o7777, stored.mode & 0o7777),
            );
        }
        match stored.kind {
            Kind::File => self.file(stored, &disk, path, out)?,
            Kind::Symlink => {
                let target = fs::read_link(path).map_err(Error::io(path))?;
                if target.as_os_str().as_bytes() != stored.target {
                    differ(out, path, "symlink target differs");
                }
            }
            Kind::Dir => self.dir(stored, path, descended, out)?,
            _ => {}
        }
        Ok(())
    }

    fn file(&self, stored: &Entry, disk: &Entry, path: &Path, out: &mut Vec<Difference>) -> Result<()> {
        if disk.size != stored.size {
            differ(out, path, format!("size {} on disk, {} in the backup", disk.size, stored.size));
        } else if disk.mtime_ns != stored.mtime_ns {
            differ(out, path, "modification time differs");
        } else if !self.quick && chunk_ids(self.repo, path)? != stored.content {
            differ(out, path, "content differs");
        }
        Ok(())
    }

    fn dir(&self, stored: &Entry, path: &Path, descended: bool, out: &mut Vec<Difference>) -> Result<()> {
        let tree = self.repo.tree(&stored.dir_tree()?)?;
        let on_disk: BTreeSet<Vec<u8>> = fs::read_dir(path)
            .map_err(Error::io(path))?
            .filter_map(|e| e.ok().map(|e| e.file_name().as_bytes().to_vec()))
            .collect();
        for name in on_disk.iter().filter(|name| tree.find(name).is_none()) {
            let child = path.join(OsStr::from_bytes(name));
            if self.taken(&child, descended) {
                differ(out, &child, "not in the backup");
            }
        }
        let nested: Vec<Result<Vec<Difference>>> = tree
            .entries
            .par_iter()
            .map(|child| {
                let mut diffs = Vec::new();
                let child_path = path.join(OsStr::from_bytes(&child.name));
                let verdict = self.rules.decide(&child_path, child.kind == Kind::Dir, descended);
                self.entry(child, &child_path, verdict == Verdict::Descend, &mut diffs)?;
                Ok(diffs)
            })
            .collect();
        for diffs in nested {
            out.extend(diffs?);
        }
        Ok(())
    }

    /// Whether a backup would take this entry on disk, so its absence from the
    /// backup is a difference (a descended directory counts only by what it holds).
    fn taken(&self, path: &Path, descended: bool) -> bool {
        let Ok(meta) = fs::symlink_metadata(path) else { return false };
        let Some(kind) = Kind::of(&meta.file_type()) else { return false };
        self.rules.decide(path, kind == Kind::Dir, descended) == Verdict::Include
    }
}

/// The ids the file's current content would have in a backup.
fn chunk_ids(repo: &Repository, path: &Path) -> Result<Vec<ObjectId>> {
    chunker::chunks(File::open(path).map_err(Error::io(path))?, DEFAULT_PARAMS)
        .map(|c| c.map(|c| repo.keys.object_id(&c)).map_err(Error::io(path)))
        .collect()
}

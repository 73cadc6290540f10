//! Compare a backup with the disk.
//!
//! Quick mode trusts metadata: kind, size, mtime, mode and symlink targets. The
//! default also re-reads every file and re-chunks it: because chunk ids are
//! keyed hashes of content and chunking is deterministic, comparing id lists
//! proves the content equal without downloading anything.

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
use crate::scanner::entry_from;
use crate::tree::{Entry, Kind};

/// One way in which the disk differs from the backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    pub path: String,
    pub what: String,
}

pub fn compare(repo: &Repository, stored: &Entry, path: &Path, quick: bool) -> Result<Vec<Difference>> {
    let mut out = Vec::new();
    compare_entry(repo, stored, path, quick, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn differ(out: &mut Vec<Difference>, path: &Path, what: impl Into<String>) {
    out.push(Difference { path: path.display().to_string(), what: what.into() });
}

fn compare_entry(
    repo: &Repository,
    stored: &Entry,
    path: &Path,
    quick: bool,
    out: &mut Vec<Difference>,
) -> Result<()> {
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
        Kind::File => compare_file(repo, stored, &disk, path, quick, out)?,
        Kind::Symlink => {
            let target = fs::read_link(path).map_err(Error::io(path))?;
            if target.as_os_str().as_bytes() != stored.target {
                differ(out, path, "symlink target differs");
            }
        }
        Kind::Dir => compare_dir(repo, stored, path, quick, out)?,
        _ => {}
    }
    Ok(())
}

fn compare_file(
    repo: &Repository,
    stored: &Entry,
    disk: &Entry,
    path: &Path,
    quick: bool,
    out: &mut Vec<Difference>,
) -> Result<()> {
    if disk.size != stored.size {
        differ(out, path, format!("size {} on disk, {} in the backup", disk.size, stored.size));
    } else if disk.mtime_ns != stored.mtime_ns {
        differ(out, path, "modification time differs");
    } else if !quick && chunk_ids(repo, path)? != stored.content {
        differ(out, path, "content differs");
    }
    Ok(())
}

fn compare_dir(
    repo: &Repository,
    stored: &Entry,
    path: &Path,
    quick: bool,
    out: &mut Vec<Difference>,
) -> Result<()> {
    let tree = repo.tree(&stored.dir_tree()?)?;
    let on_disk: BTreeSet<Vec<u8>> = fs::read_dir(path)
        .map_err(Error::io(path))?
        .filter_map(|e| e.ok().map(|e| e.file_name().as_bytes().to_vec()))
        .collect();
    for name in &on_disk {
        if tree.find(name).is_none()
            && !repo.private_paths.iter().any(|p| *p == path.join(OsStr::from_bytes(name)))
        {
            differ(out, &path.join(OsStr::from_bytes(name)), "not in the backup");
        }
    }
    let nested: Vec<Result<Vec<Difference>>> = tree
        .entries
        .par_iter()
        .map(|child| {
            let mut diffs = Vec::new();
            compare_entry(repo, child, &path.join(OsStr::from_bytes(&child.name)), quick, &mut diffs)?;
            Ok(diffs)
        })
        .collect();
    for diffs in nested {
        out.extend(diffs?);
    }
    Ok(())
}

/// The ids the file's current content would have in a backup.
fn chunk_ids(repo: &Repository, path: &Path) -> Result<Vec<ObjectId>> {
    chunker::chunks(File::open(path).map_err(Error::io(path))?, DEFAULT_PARAMS)
        .map(|c| c.map(|c| repo.keys.object_id(&c)).map_err(Error::io(path)))
        .collect()
}

//! Undelete: the newest version of a deleted file or directory comes back
//! into the account's backup, without a local copy (Box Backup's
//! `undelete`). Sets are immutable, so this commits a new set: the newest
//! set with the entry put back at its path. Only the trees along that path
//! are new; the entry's chunks and trees are the ones the store holds.
//! A directory on the path that is gone too comes back with its old
//! attributes, holding only the way down to what was undeleted.
//!
//! The next backup of the location scans the disk as always: an undeleted
//! entry that is not on the disk by then is deleted again in that set (its
//! versions stay in the history). Restore it first to keep it.

use std::path::Path;

use coffer_proto::SetStats;

use crate::backup;
use crate::browse::{Catalog, Selector, lookup};
use crate::error::{Error, Result};
use crate::names;
use crate::repo::Repository;
use crate::tree::{Entry, Kind, Tree};

/// What an undelete did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Undeleted {
    pub path: String,
    /// The set it came back from (the newest that had it), and the new set.
    pub from_set: String,
    pub set_id: String,
}

pub fn undelete(repo: &Repository, catalog: &Catalog, path: &Path) -> Result<Undeleted> {
    let located = catalog.locate(path)?;
    let shown = names::show(&located.path);
    if located.components.is_empty() {
        return Err(Error::Invalid(format!(
            "{shown} is a backup location; undelete names something inside one"
        )));
    }
    let (newest, location) = catalog.select(&located.location, &Selector::Latest)?;
    if lookup(repo, location, &located.components)?.is_some() {
        return Err(Error::Invalid(format!("{shown} is not deleted: the newest backup set has it")));
    }
    let mut found = None;
    for (set, old) in catalog.history(&located.location).collect::<Vec<_>>().into_iter().rev() {
        if let Some(entry) = lookup(repo, old, &located.components)? {
            found = Some((set, old, entry));
            break;
        }
    }
    let (from, old_location, entry) =
        found.ok_or_else(|| Error::NotFound(format!("{shown} was never backed up")))?;
    // The old set's directories along the path, for any gone now too.
    let mut old_dirs = Vec::new();
    for depth in 1..located.components.len() {
        let dir = lookup(repo, old_location, &located.components[..depth])?;
        old_dirs.push(dir.ok_or_else(|| Error::Invalid(format!("{shown}: the old set lost its path")))?);
    }
    let root = put_back(repo, &location.root, &old_dirs, &located.components, &entry)?;
    let mut contents = newest.contents.clone();
    for l in contents.locations.iter_mut().filter(|l| l.path == located.location) {
        l.root = root.clone();
    }
    let added = count(repo, &entry)?;
    let s = &newest.header.stats;
    let stats =
        SetStats { files: s.files + added.files, dirs: s.dirs + added.dirs, bytes: s.bytes + added.bytes };
    let new = backup::commit(repo, coffer_proto::clock::now_ns(), stats, contents)?;
    Ok(Undeleted { path: shown, from_set: from.id.to_hex(), set_id: new.set.id.to_hex() })
}

/// `dir` with `entry` put at `components` below it; returns the new entry
/// for `dir` (its attributes, a new tree).
fn put_back(
    repo: &Repository,
    dir: &Entry,
    old_dirs: &[Entry],
    components: &[Vec<u8>],
    entry: &Entry,
) -> Result<Entry> {
    let mut tree: Tree = repo.tree(&dir.dir_tree()?)?;
    let (name, rest) = components.split_first().expect("a path below the location");
    let child = if rest.is_empty() {
        entry.clone()
    } else {
        let sub = match tree.find(name) {
            Some(now) if now.kind == Kind::Dir => now.clone(),
            Some(_) => {
                return Err(Error::Invalid(format!(
                    "{} is no longer a directory in the newest set; restore the file instead",
                    names::escape(name)
                )));
            }
            None => {
                Entry { content: vec![repo.store_tree(&Tree::default(), |_| Ok(()))?], ..old_dirs[0].clone() }
            }
        };
        put_back(repo, &sub, &old_dirs[1..], rest, entry)?
    };
    match tree.entries.binary_search_by(|e| e.name.cmp(&child.name)) {
        Ok(at) => tree.entries[at] = child,
        Err(at) => tree.entries.insert(at, child),
    }
    let id = repo.store_tree(&tree, |_| Ok(()))?;
    Ok(Entry { content: vec![id], ..dir.clone() })
}

/// Files, directories and bytes below (and including) `entry`.
fn count(repo: &Repository, entry: &Entry) -> Result<SetStats> {
    let mut stats = SetStats::default();
    match entry.kind {
        Kind::Dir => {
            stats.dirs = 1;
            for child in repo.tree(&entry.dir_tree()?)?.entries {
                let c = count(repo, &child)?;
                (stats.files, stats.dirs, stats.bytes) =
                    (stats.files + c.files, stats.dirs + c.dirs, stats.bytes + c.bytes);
            }
        }
        _ => (stats.files, stats.bytes) = (1, entry.size),
    }
    Ok(stats)
}

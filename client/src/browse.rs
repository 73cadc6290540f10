//! Finding things in the backup history.
//!
//! Paths in the store are the absolute paths that were backed up. A path is
//! found by its backup location (the longest backed-up path that contains it)
//! and the components below it. Only sets that contain a location speak about
//! it: "as at T" means the newest set not newer than T that contains the
//! location; a file is deleted in a set if an older set of the location had it
//! and this one does not.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::backupset::{BackupSet, Location};
use crate::error::{Error, Result};
use crate::names;
use crate::repo::Repository;
use crate::timefmt;
use crate::tree::{Entry, Kind};
use crate::wildcard;

/// Which backup set to look in.
#[derive(Debug, Clone, Default)]
pub enum Selector {
    #[default]
    Latest,
    /// Newest set not newer than this time (ns since the epoch).
    AsAt(i64),
    /// A set id or a unique prefix of one.
    Set(String),
}

/// A path split into its backup location and the components below it.
#[derive(Debug, Clone)]
pub struct Located {
    pub location: Vec<u8>,
    pub components: Vec<Vec<u8>>,
    pub path: PathBuf,
}

/// All backup sets of an account, oldest first.
pub struct Catalog {
    pub sets: Vec<BackupSet>,
}

impl Catalog {
    pub fn load(repo: &Repository) -> Result<Catalog> {
        Ok(Catalog { sets: repo.sets()? })
    }

    /// From the cache when it holds a complete list (no store access at
    /// all), else from the store.
    pub fn cached_or_load(repo: &Repository) -> Result<Catalog> {
        match repo.cached_sets() {
            Some(sets) => Ok(Catalog { sets }),
            None => Catalog::load(repo),
        }
    }

    /// Every location ever backed up, sorted.
    pub fn locations(&self) -> Vec<&Location> {
        let mut out: Vec<&Location> = Vec::new();
        for set in self.sets.iter().rev() {
            for loc in &set.contents.locations {
                if !out.iter().any(|l| l.path == loc.path) {
                    out.push(loc);
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    pub fn locate(&self, path: &Path) -> Result<Located> {
        let path = absolute(path)?;
        let bytes = path.as_os_str().as_bytes();
        let best = self
            .locations()
            .into_iter()
            .filter(|l| is_within(bytes, &l.path))
            .max_by_key(|l| l.path.len())
            .ok_or_else(|| {
                Error::NotFound(format!("{} is not in any backup location", names::show(&path)))
            })?;
        let rest = &bytes[best.path.len()..];
        let components = rest.split(|b| *b == b'/').filter(|c| !c.is_empty()).map(<[u8]>::to_vec).collect();
        Ok(Located { location: best.path.clone(), components, path })
    }

    /// The sets that contain `location`, oldest first.
    pub fn history<'a>(
        &'a self,
        location: &[u8],
    ) -> impl Iterator<Item = (&'a BackupSet, &'a Location)> + 'a {
        let location = location.to_vec();
        self.sets.iter().filter_map(move |s| s.location(&location).map(|l| (s, l)))
    }

    pub fn select(&self, location: &[u8], selector: &Selector) -> Result<(&BackupSet, &Location)> {
        let name = names::escape(location);
        match selector {
            Selector::Latest => self.history(location).last(),
            Selector::AsAt(t) => self.history(location).filter(|(s, _)| s.header.time_ns <= *t).last(),
            Selector::Set(prefix) => {
                let set = self.find_set(prefix)?;
                let loc = set.location(location).ok_or_else(|| {
                    Error::NotFound(format!("backup set {} does not contain {name}", set.id.short()))
                })?;
                Some((set, loc))
            }
        }
        .ok_or_else(|| match selector {
            Selector::AsAt(t) => Error::NotFound(format!(
                "no backup of {name} as at {} (the first is newer)",
                timefmt::format(*t)
            )),
            _ => Error::NotFound(format!("no backup set contains {name}")),
        })
    }

    pub fn find_set(&self, prefix: &str) -> Result<&BackupSet> {
        let prefix = prefix.to_ascii_lowercase();
        let mut matches = self.sets.iter().filter(|s| s.id.to_hex().starts_with(&prefix));
        match (matches.next(), matches.next()) {
            (Some(s), None) if !prefix.is_empty() => Ok(s),
            (Some(_), Some(_)) => {
                Err(Error::Invalid(format!("backup set id `{prefix}` is ambiguous; give more digits")))
            }
            _ => Err(Error::NotFound(format!("no backup set {prefix}"))),
        }
    }
}

/// When `path` lies above some of `locations` (`/` or `/home` for
/// `/home/ann`), the next component of each of those, sorted, once each:
/// what a directory there holds.
pub fn names_above<'a>(locations: impl IntoIterator<Item = &'a [u8]>, path: &Path) -> Option<Vec<Vec<u8>>> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    for l in locations {
        if let Ok(rest) = Path::new(OsStr::from_bytes(l)).strip_prefix(path)
            && let Some(first) = rest.components().next()
        {
            names.push(first.as_os_str().as_bytes().to_vec());
        }
    }
    names.sort();
    names.dedup();
    (!names.is_empty()).then_some(names)
}

/// Walks from a location's root to the entry named by `components`.
pub fn lookup(repo: &Repository, location: &Location, components: &[Vec<u8>]) -> Result<Option<Entry>> {
    let mut entry = location.root.clone();
    for name in components {
        let Some(tree) = entry.tree() else { return Ok(None) };
        match repo.tree(&tree)?.find(name) {
            Some(child) => entry = child.clone(),
            None => return Ok(None),
        }
    }
    Ok(Some(entry))
}

/// One line of a directory listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub name: String,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub deleted: bool,
}

impl Listed {
    fn from(entry: &Entry, deleted: bool) -> Listed {
        Listed {
            name: entry.shown_name(),
            kind: entry.kind,
            size: entry.size,
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            mtime_ns: entry.mtime_ns,
            deleted,
        }
    }
}

/// Lists a directory (or describes a single entry) in the selected set; with
/// `deleted`, also what older sets of the location had there and this one lacks.
pub fn list(
    repo: &Repository,
    catalog: &Catalog,
    path: &Path,
    selector: &Selector,
    deleted: bool,
) -> Result<Vec<Listed>> {
    let located = catalog.locate(path)?;
    let (set, location) = catalog.select(&located.location, selector)?;
    if wildcard::has_wildcards(&located.components) {
        return list_matching(repo, set, location, &located, deleted);
    }
    let current = lookup(repo, location, &located.components)?;
    let mut out: Vec<Listed> = match &current {
        Some(e) if e.kind == Kind::Dir => {
            repo.tree(&e.dir_tree()?)?.entries.iter().map(|c| Listed::from(c, false)).collect()
        }
        Some(e) => return Ok(vec![Listed::from(e, false)]),
        None if !deleted => {
            return Err(Error::NotFound(format!(
                "{} is not in backup set {}",
                names::show(&located.path),
                set.id.short()
            )));
        }
        None => Vec::new(),
    };
    if deleted {
        let current: HashSet<&str> = out.iter().map(|l| l.name.as_str()).collect();
        let mut gone: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
        let older = catalog.history(&located.location).filter(|(s, _)| s.header.time_ns < set.header.time_ns);
        for (_, loc) in older {
            let Some(dir) = lookup(repo, loc, &located.components)?.and_then(|e| e.tree()) else { continue };
            for e in repo.tree(&dir)?.entries {
                if !current.contains(e.shown_name().as_str()) {
                    gone.insert(e.name.clone(), e);
                }
            }
        }
        out.extend(gone.values().map(|e| Listed::from(e, true)));
        out.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(out)
}

/// The entries a pattern matches in one set, named by their path from the
/// first component with a wildcard.
fn list_matching(
    repo: &Repository,
    set: &BackupSet,
    location: &Location,
    located: &Located,
    deleted: bool,
) -> Result<Vec<Listed>> {
    if deleted {
        return Err(Error::Invalid("--deleted lists one directory; give it a path without wildcards".into()));
    }
    let matches = wildcard::expand(repo, location, &located.components)?;
    if matches.is_empty() {
        return Err(Error::NotFound(format!(
            "nothing in backup set {} matches {}",
            set.id.short(),
            names::show(&located.path)
        )));
    }
    let from = wildcard::literal_prefix(&located.components);
    Ok(matches
        .iter()
        .map(|m| Listed {
            name: names::escape(&m.components[from..].join(&b'/')),
            ..Listed::from(&m.entry, false)
        })
        .collect())
}

/// A version of a path: the first set in which it looked like this.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Version {
    pub set_id: String,
    pub set_time_ns: i64,
    /// `None` where the path did not exist in that set.
    pub size: Option<u64>,
    pub mtime_ns: Option<i64>,
}

/// The versions of every path a pattern matches in any set, by path (as
/// shown); a path without wildcards gives one.
pub fn versions_each(
    repo: &Repository,
    catalog: &Catalog,
    path: &Path,
) -> Result<Vec<(String, Vec<Version>)>> {
    let located = catalog.locate(path)?;
    if !wildcard::has_wildcards(&located.components) {
        return Ok(vec![(names::show(&located.path), versions(repo, catalog, path)?)]);
    }
    let mut paths = std::collections::BTreeSet::new();
    for (_, location) in catalog.history(&located.location) {
        for m in wildcard::expand(repo, location, &located.components)? {
            paths.insert(m.components);
        }
    }
    if paths.is_empty() {
        return Err(Error::NotFound(format!(
            "nothing ever backed up matches {}",
            names::show(&located.path)
        )));
    }
    let location = Path::new(OsStr::from_bytes(&located.location));
    paths
        .into_iter()
        .map(|components| {
            let full = components.iter().fold(location.to_path_buf(), |p, c| p.join(OsStr::from_bytes(c)));
            Ok((names::show(&full), versions(repo, catalog, &full)?))
        })
        .collect()
}

pub fn versions(repo: &Repository, catalog: &Catalog, path: &Path) -> Result<Vec<Version>> {
    let located = catalog.locate(path)?;
    let mut out = Vec::new();
    let mut last: Option<Option<Entry>> = None;
    for (set, loc) in catalog.history(&located.location) {
        let entry = lookup(repo, loc, &located.components)?;
        let same = match (&last, &entry) {
            (Some(Some(a)), Some(b)) => a.same_version(b),
            (Some(None), None) => true,
            (None, None) => true,
            _ => false,
        };
        if !same {
            out.push(Version {
                set_id: set.id.to_hex(),
                set_time_ns: set.header.time_ns,
                size: entry.as_ref().map(|e| e.size),
                mtime_ns: entry.as_ref().map(|e| e.mtime_ns),
            });
        }
        last = Some(entry);
    }
    if out.is_empty() {
        return Err(Error::NotFound(format!("{} was never backed up", names::show(&located.path))));
    }
    Ok(out)
}

/// Makes a path absolute lexically (it need not exist any more).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(Error::io(path))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

fn is_within(path: &[u8], location: &[u8]) -> bool {
    path.starts_with(location)
        && (path.len() == location.len() || path[location.len()] == b'/' || location == b"/")
}

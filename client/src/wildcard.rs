//! Wildcards in the paths of `ls`, `restore` and `versions`
//! (`coffer restore '~/Mail/*.eml' DEST`): `*`, `?`, `[...]` and `{a,b}`
//! in any component below a backup location, matched against the names
//! stored in the backup. A component without wildcards names one entry, as
//! it always did. `[*]` matches a literal star.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

use crate::backupset::Location;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::tree::Entry;

/// One entry a pattern matched: its components below the location, and
/// how many of them lead to the first wildcard (the matched part is shown
/// and restored relative to there).
#[derive(Debug, Clone)]
pub struct Match {
    pub components: Vec<Vec<u8>>,
    pub entry: Entry,
}

/// Whether any component holds a wildcard.
pub fn has_wildcards(components: &[Vec<u8>]) -> bool {
    components.iter().any(|c| is_pattern(c))
}

fn is_pattern(component: &[u8]) -> bool {
    component.iter().any(|b| matches!(b, b'*' | b'?' | b'[' | b'{'))
}

/// How many leading components have no wildcard.
pub fn literal_prefix(components: &[Vec<u8>]) -> usize {
    components.iter().position(|c| is_pattern(c)).unwrap_or(components.len())
}

enum Step {
    Name(Vec<u8>),
    Glob(GlobMatcher),
}

fn step(component: &[u8]) -> Result<Step> {
    if !is_pattern(component) {
        return Ok(Step::Name(component.to_vec()));
    }
    let text = std::str::from_utf8(component).map_err(|_| {
        Error::Invalid(format!("wildcard pattern `{}` is not UTF-8 text", crate::names::escape(component)))
    })?;
    let glob = GlobBuilder::new(text)
        .literal_separator(true)
        .backslash_escape(false)
        .build()
        .map_err(|e| Error::Invalid(format!("wildcard pattern `{text}`: {e}")))?;
    Ok(Step::Glob(glob.compile_matcher()))
}

/// Every entry of `location` that `components` match, in name order.
pub fn expand(repo: &Repository, location: &Location, components: &[Vec<u8>]) -> Result<Vec<Match>> {
    let steps = components.iter().map(|c| step(c)).collect::<Result<Vec<_>>>()?;
    let mut found = Vec::new();
    walk(repo, &location.root, &steps, &mut Vec::new(), &mut found)?;
    Ok(found)
}

fn walk(
    repo: &Repository,
    dir: &Entry,
    steps: &[Step],
    path: &mut Vec<Vec<u8>>,
    found: &mut Vec<Match>,
) -> Result<()> {
    let Some((first, rest)) = steps.split_first() else {
        found.push(Match { components: path.clone(), entry: dir.clone() });
        return Ok(());
    };
    let Some(tree) = dir.tree() else { return Ok(()) };
    let tree = repo.tree(&tree)?;
    let children: Vec<&Entry> = match first {
        Step::Name(name) => tree.find(name).into_iter().collect(),
        Step::Glob(glob) => {
            tree.entries.iter().filter(|e| glob.is_match(Path::new(OsStr::from_bytes(&e.name)))).collect()
        }
    };
    for child in children {
        path.push(child.name.clone());
        walk(repo, child, rest, path, found)?;
        path.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &[u8]) -> bool {
        match step(pattern.as_bytes()).unwrap() {
            Step::Glob(g) => g.is_match(Path::new(OsStr::from_bytes(name))),
            Step::Name(n) => n == name,
        }
    }

    #[test]
    fn patterns_match_single_names_as_a_shell_does() {
        assert!(matches("*.eml", b"note.eml"));
        assert!(!matches("*.eml", b"note.eml.bak"));
        assert!(matches("?.txt", b"a.txt") && !matches("?.txt", b"ab.txt"));
        assert!(matches("[ab]*", b"bob") && !matches("[ab]*", b"carl"));
        assert!(matches("{x,y}.c", b"y.c"));
        assert!(matches("[*]", b"*") && !matches("[*]", b"a"));
        assert!(matches("*", b"bad\xffname"), "names that are not UTF-8 match too");
        assert!(step(b"\xff*").is_err());
        assert_eq!(literal_prefix(&[b"a".to_vec(), b"*.c".to_vec(), b"b".to_vec()]), 1);
    }
}

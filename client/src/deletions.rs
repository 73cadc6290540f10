//! Mass-deletion protection: a scan that would make a location lose most of
//! its files is more likely an unmounted disk, a failing mount or a slip of
//! the hand than what the user wants kept. Such a scan does not replace the
//! location's previous contents in the new set; the backup reports why, and
//! only an explicit `--allow-deletions` accepts it.

use crate::backupset::Location;
use crate::error::Result;
use crate::repo::Repository;
use crate::tree::{Entry, Kind};

/// Why the new scan of a location (`root`, holding `files_now` files) must
/// not replace `previous`; `None` when it may. `previous_set_files` bounds
/// the previous count from above, so the tree walk that counts it exactly
/// happens only when the drop could be large.
pub fn hold_reason(
    repo: &Repository,
    previous: &Location,
    previous_set_files: u64,
    root: &Entry,
    files_now: u64,
    share: f64,
) -> Result<Option<String>> {
    if root.dev != previous.root.dev {
        return Ok(Some(format!(
            "is on another file system than at the last backup (device {:#x}, was {:#x}): an unmounted disk?",
            root.dev, previous.root.dev
        )));
    }
    let floor = |n: u64| n as f64 * (1.0 - share);
    if files_now > 0 && files_now as f64 >= floor(previous_set_files) {
        return Ok(None);
    }
    let before = count_files(repo, &previous.root)?;
    Ok(if before > 0 && files_now == 0 {
        Some(format!("is empty; it held {before} files at the last backup"))
    } else if (files_now as f64) < floor(before) {
        Some(format!(
            "would drop {} of its {before} files, more than {:.0}%",
            before - files_now,
            share * 100.0
        ))
    } else {
        None
    })
}

/// Files under a backed-up directory, from its trees (cached locally).
fn count_files(repo: &Repository, dir: &Entry) -> Result<u64> {
    let tree = repo.tree(&dir.dir_tree()?)?;
    let mut files = 0;
    for entry in &tree.entries {
        files += match entry.kind {
            Kind::File => 1,
            Kind::Dir => count_files(repo, entry)?,
            _ => 0,
        };
    }
    Ok(files)
}

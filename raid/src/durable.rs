//! Making directory entries and small files survive a power cut: a file is
//! durable once its bytes are synced *and* the directory naming it is
//! synced, and a new directory once its parent is synced.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{RaidError, Result};

/// Syncs the directory holding `path`, so a rename or create in it is durable.
pub fn sync_parent(path: &Path) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(RaidError::io(dir))
}

/// `create_dir_all`, with every directory it made synced into its parent.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    let missing: Vec<&Path> =
        dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(RaidError::io(dir))?;
    missing.iter().rev().try_for_each(|d| sync_parent(d))
}

/// Writes a small file whole: through a temporary, synced, renamed into
/// place and the directory synced, so a crash leaves the old file or the
/// new one, never a torn or vanished one.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = path.with_extension("tmp-durable");
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(RaidError::io(&temp))?;
    fs::rename(&temp, path).map_err(RaidError::io(path))?;
    sync_parent(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_creates() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all(&deep).unwrap();
        let file = deep.join("f");
        write_file(&file, b"one").unwrap();
        write_file(&file, b"two").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"two");
        assert_eq!(fs::read_dir(&deep).unwrap().count(), 1, "no temporary left");
    }
}

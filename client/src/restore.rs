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
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use filetime::FileTime;
use nix::sys::stat::{Mode, SFlag};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::tree::{Entry, Kind};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Paths (as backed up) that could not be restored, with why.
    pub failures: Vec<String>,
    pub warnings: Vec<String>,
}

struct Restorer<'a> {
    repo: &'a Repository,
    /// DEST, and whether it was an empty directory already.
    root: PathBuf,
    root_exists: bool,
    is_root: bool,
    files: AtomicU64,
    dirs: AtomicU64,
    bytes: AtomicU64,
    failures: Mutex<Vec<String>>,
    warnings: Mutex<Vec<String>>,
    linked: Mutex<Vec<(PathBuf, PathBuf, Entry)>>,
    finished_dirs: Mutex<Vec<(PathBuf, Entry)>>,
}

/// Restores `entry` (backed up as `source`) to `dest`, which must be absent or
/// an empty directory.
pub fn restore(repo: &Repository, entry: &Entry, source: &Path, dest: &Path) -> Result<RestoreReport> {
    let dest_is_empty_dir = match fs::symlink_metadata(dest) {
        Err(_) => false,
        Ok(m) if m.is_dir() && fs::read_dir(dest).map_err(Error::io(dest))?.next().is_none() => true,
        Ok(_) => {
            return Err(Error::Invalid(format!("{} exists and is not an empty directory", dest.display())));
        }
    };
    if dest_is_empty_dir && entry.kind != Kind::Dir {
        return Err(Error::Invalid(format!(
            "{} is a directory; give a path for the restored file",
            dest.display()
        )));
    }
    let r = Restorer {
        repo,
        root: dest.to_path_buf(),
        root_exists: dest_is_empty_dir,
        is_root: nix::unistd::geteuid().is_root(),
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
        warnings: Mutex::new(Vec::new()),
        linked: Mutex::new(Vec::new()),
        finished_dirs: Mutex::new(Vec::new()),
    };
    r.restore_entry(entry, source, dest).map_err(|e| Error::Invalid(format!("{}: {e}", source.display())))?;
    r.finish_links();
    for (path, e) in r.finished_dirs.lock().unwrap().iter() {
        r.apply_attributes(e, path);
    }
    Ok(RestoreReport {
        files: r.files.load(Relaxed),
        dirs: r.dirs.load(Relaxed),
        bytes: r.bytes.load(Relaxed),
        failures: r.failures.into_inner().unwrap(),
        warnings: r.warnings.into_inner().unwrap(),
    })
}

impl Restorer<'_> {
    fn fail(&self, source: &Path, problem: impl std::fmt::Display) {
        self.failures.lock().unwrap().push(format!("{}: {problem}", source.display()));
    }

    fn warn(&self, path: &Path, problem: impl std::fmt::Display) {
        self.warnings.lock().unwrap().push(format!("{}: {problem}", path.display()));
    }

    fn restore_entry(&self, e: &Entry, source: &Path, dest: &Path) -> Result<()> {
        match e.kind {
            Kind::Dir => return self.restore_dir(e, source, dest),
            Kind::File if e.nlink > 1 => {
                self.linked.lock().unwrap().push((source.to_path_buf(), dest.to_path_buf(), e.clone()));
                return Ok(());
            }
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

    fn restore_dir(&self, e: &Entry, source: &Path, dest: &Path) -> Result<()> {
        // Only DEST itself may exist already (as an empty directory, checked
        // at the start); everything below is made here, so no path ever
        // passes through a symlink this restore did not create as a leaf.
        if !(dest == self.root && self.root_exists) {
            fs::create_dir(dest).map_err(Error::io(dest))?;
        }
        self.dirs.fetch_add(1, Relaxed);
        let tree = self.repo.tree(&e.dir_tree()?)?;
        tree.entries.par_iter().for_each(|child| {
            let name = OsStr::from_bytes(&child.name);
            let (source, dest) = (source.join(name), dest.join(name));
            if let Err(err) = self.restore_entry(child, &source, &dest) {
                self.fail(&source, err);
            }
        });
        self.finished_dirs.lock().unwrap().push((dest.to_path_buf(), e.clone()));
        Ok(())
    }

    fn write_file(&self, e: &Entry, dest: &Path) -> Result<()> {
        let result = self.write_chunks(e, dest);
        if result.is_err() {
            let _ = fs::remove_file(dest);
        }
        result
    }

    fn write_chunks(&self, e: &Entry, dest: &Path) -> Result<()> {
        let mut file = File::create_new(dest).map_err(Error::io(dest))?;
        for id in &e.content {
            let data = self.repo.chunk(id)?;
            file.write_all(&data).map_err(Error::io(dest))?;
            self.bytes.fetch_add(data.len() as u64, Relaxed);
        }
        self.files.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Restores multiply-linked files: the first of each group is written,
    /// the rest are linked to it.
    fn finish_links(&self) {
        let mut first: HashMap<(u64, u64), PathBuf> = HashMap::new();
        for (source, dest, e) in self.linked.lock().unwrap().drain(..) {
            let key = (e.dev, e.inode);
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
                self.warn(path, format_args!("xattr {} not restored: {err}", String::from_utf8_lossy(name)));
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

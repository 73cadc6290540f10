//! `coffer mount`: the account's backups as a read-only file system
//! (FUSE, through fuser without libfuse):
//!
//! - `latest/` — every backup location as in its newest set, at its path
//!   (`latest/home/ann/...`);
//! - `sets/<time>_<id>/` — each set the same way;
//! - `versions/<path>/` — directories are the union of what they ever
//!   held; a file is a directory of its versions, one file per version
//!   named like the set it first appeared in (`<time>_<id>`).
//!
//! Sizes, modes, owners, times, symlink targets and extended attributes
//! are the backed-up ones. File contents are fetched and decrypted on
//! demand, chunk by chunk, with a bounded cache of decrypted chunks; a
//! file's chunk boundaries are learnt as it is read (the tree does not
//! record them), so the first read far into a large file fetches what
//! lies before it once.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use coffer_proto::ObjectId;
use fuser::{
    FileAttr, FileType, Filesystem, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyXattr, Request,
};

use crate::browse::{Catalog, Selector, lookup, names_above};
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::sparse;
use crate::timefmt;
use crate::tree::{Entry, Kind};

/// How long the kernel may keep what it was told: the backups do not change
/// while mounted.
const TTL: Duration = Duration::from_secs(60);
/// Bytes of decrypted chunks kept.
const CACHE_BYTES: usize = 64 << 20;

/// What an inode is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Item {
    Root,
    Sets,
    /// A path in one point in time: `None` is each location's newest set.
    View {
        set: Option<usize>,
        path: PathBuf,
    },
    /// A path under `versions/`.
    History {
        path: PathBuf,
    },
    /// One version of a file: the set it is read from.
    Version {
        set: usize,
        path: PathBuf,
    },
}

/// What an item shows: a directory (virtual or backed up) or an entry.
enum Shape {
    Virtual(Vec<(Vec<u8>, FileType)>),
    Entry(Entry),
}

pub struct BackupFs {
    repo: Repository,
    catalog: Catalog,
    items: Vec<Item>,
    inodes: HashMap<Item, u64>,
    /// Chunk ends learnt per file, by inode.
    ends: HashMap<u64, Vec<u64>>,
    chunks: ChunkCache,
    hole_piece: ObjectId,
    zeros: Arc<Vec<u8>>,
    mounted_ns: i64,
}

impl BackupFs {
    pub fn new(repo: Repository) -> Result<BackupFs> {
        let catalog = Catalog::load(&repo)?;
        let hole_piece = repo.keys.object_id(&vec![0; sparse::HOLE_PIECE]);
        let mut fs = BackupFs {
            repo,
            catalog,
            items: Vec::new(),
            inodes: HashMap::new(),
            ends: HashMap::new(),
            chunks: ChunkCache::default(),
            hole_piece,
            zeros: Arc::new(vec![0; sparse::HOLE_PIECE]),
            mounted_ns: coffer_proto::clock::now_ns(),
        };
        fs.inode(Item::Root);
        Ok(fs)
    }

    /// The inode of `item`, made on first sight (the root is 1).
    fn inode(&mut self, item: Item) -> u64 {
        if let Some(ino) = self.inodes.get(&item) {
            return *ino;
        }
        self.items.push(item.clone());
        let ino = self.items.len() as u64;
        self.inodes.insert(item, ino);
        ino
    }

    fn item(&self, ino: u64) -> Option<&Item> {
        self.items.get((ino as usize).checked_sub(1)?)
    }

    fn set_dir_name(&self, index: usize) -> String {
        let set = &self.catalog.sets[index];
        format!("{}_{}", timefmt::format(set.header.time_ns).replace(' ', "T"), set.id.short())
    }

    fn child(&self, parent: &Item, name: &OsStr) -> Option<Item> {
        let name_bytes = name.as_bytes();
        Some(match parent {
            Item::Root => match name_bytes {
                b"latest" => Item::View { set: None, path: PathBuf::from("/") },
                b"sets" => Item::Sets,
                b"versions" => Item::History { path: PathBuf::from("/") },
                _ => return None,
            },
            Item::Sets => {
                let set =
                    (0..self.catalog.sets.len()).find(|i| self.set_dir_name(*i).as_bytes() == name_bytes)?;
                Item::View { set: Some(set), path: PathBuf::from("/") }
            }
            Item::View { set, path } => Item::View { set: *set, path: path.join(name) },
            Item::History { path } => match self.history_entry(path) {
                // A file's directory of versions: its names are set times.
                Some(e) if e.kind != Kind::Dir => {
                    let set =
                        self.versions(path).into_iter().find(|(label, _)| label.as_bytes() == name_bytes)?.1;
                    Item::Version { set, path: path.clone() }
                }
                _ => Item::History { path: path.join(name) },
            },
            Item::Version { .. } => return None,
        })
    }

    /// The locations' next components below `path`, if `path` is above them.
    fn above_locations(&self, path: &Path, set: Option<usize>) -> Option<Vec<(Vec<u8>, FileType)>> {
        let names = match set {
            Some(i) => {
                names_above(self.catalog.sets[i].contents.locations.iter().map(|l| l.path.as_slice()), path)
            }
            None => names_above(self.catalog.locations().into_iter().map(|l| l.path.as_slice()), path),
        };
        Some(names?.into_iter().map(|n| (n, FileType::Directory)).collect())
    }

    /// The entry at `path` in a set (`None`: each location's newest).
    fn entry_at(&self, set: Option<usize>, path: &Path) -> Result<Option<Entry>> {
        let located = self.catalog.locate(path)?;
        let selector = match set {
            Some(i) => Selector::Set(self.catalog.sets[i].id.to_hex()),
            None => Selector::Latest,
        };
        let Ok((_, location)) = self.catalog.select(&located.location, &selector) else { return Ok(None) };
        lookup(&self.repo, location, &located.components)
    }

    /// The newest entry that ever stood at `path`.
    fn history_entry(&self, path: &Path) -> Option<Entry> {
        let located = self.catalog.locate(path).ok()?;
        let history: Vec<_> = self.catalog.history(&located.location).collect();
        history.into_iter().rev().find_map(|(_, l)| lookup(&self.repo, l, &located.components).ok().flatten())
    }

    /// A file's versions: (label, set index) of each set where it changed.
    fn versions(&self, path: &Path) -> Vec<(String, usize)> {
        let Ok(versions) = crate::browse::versions(&self.repo, &self.catalog, path) else {
            return Vec::new();
        };
        versions
            .iter()
            .filter(|v| v.size.is_some())
            .filter_map(|v| {
                let index = self.catalog.sets.iter().position(|s| s.id.to_hex() == v.set_id)?;
                Some((self.set_dir_name(index), index))
            })
            .collect()
    }

    fn shape(&self, item: &Item) -> Result<Option<Shape>> {
        let dir = |names: Vec<(Vec<u8>, FileType)>| Some(Shape::Virtual(names));
        Ok(match item {
            Item::Root => dir(["latest", "sets", "versions"]
                .map(|n| (n.as_bytes().to_vec(), FileType::Directory))
                .into()),
            Item::Sets => dir((0..self.catalog.sets.len())
                .map(|i| (self.set_dir_name(i).into_bytes(), FileType::Directory))
                .collect()),
            Item::View { set, path } => match self.above_locations(path, *set) {
                Some(names) => dir(names),
                None => self.entry_at(*set, path)?.map(Shape::Entry),
            },
            Item::History { path } => match self.above_locations(path, None) {
                Some(names) => dir(names),
                None => match self.history_entry(path) {
                    Some(e) if e.kind == Kind::Dir => dir(self.history_names(path)?),
                    Some(_) => dir(self
                        .versions(path)
                        .into_iter()
                        .map(|(l, _)| (l.into_bytes(), FileType::RegularFile))
                        .collect()),
                    None => None,
                },
            },
            Item::Version { set, path } => self.entry_at(Some(*set), path)?.map(Shape::Entry),
        })
    }

    /// Every name a directory ever held (all shown as directories: a file
    /// is its directory of versions).
    fn history_names(&self, path: &Path) -> Result<Vec<(Vec<u8>, FileType)>> {
        let located = self.catalog.locate(path)?;
        let mut names = std::collections::BTreeSet::new();
        for (_, location) in self.catalog.history(&located.location) {
            if let Some(tree) = lookup(&self.repo, location, &located.components)?.and_then(|e| e.tree()) {
                names.extend(self.repo.tree(&tree)?.entries.into_iter().map(|e| e.name));
            }
        }
        Ok(names.into_iter().map(|n| (n, FileType::Directory)).collect())
    }

    fn attr(&self, ino: u64, shape: &Shape) -> FileAttr {
        let (kind, size, perm, uid, gid, mtime_ns, rdev) = match shape {
            Shape::Virtual(_) => (FileType::Directory, 0, 0o555, 0, 0, self.mounted_ns, 0),
            Shape::Entry(e) => {
                (file_type(e.kind), e.size, (e.mode & 0o7777) as u16, e.uid, e.gid, e.mtime_ns, e.rdev as u32)
            }
        };
        let time = UNIX_EPOCH + Duration::from_nanos(mtime_ns.max(0) as u64);
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm,
            nlink: 1,
            uid,
            gid,
            rdev,
            blksize: 4096,
            flags: 0,
        }
    }

    fn entry_of(&self, ino: u64) -> std::result::Result<Entry, i32> {
        let item = self.item(ino).ok_or(libc::ENOENT)?;
        match self.shape(item) {
            Ok(Some(Shape::Entry(e))) => Ok(e),
            Ok(Some(Shape::Virtual(_))) => Err(libc::EISDIR),
            Ok(None) => Err(libc::ENOENT),
            Err(e) => Err(errno(&e)),
        }
    }

    /// `size` bytes of file `e` from `offset`.
    fn read_file(&mut self, ino: u64, e: &Entry, offset: u64, size: u64) -> Result<Vec<u8>> {
        let end = (offset + size).min(e.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut start = 0u64;
        for (i, id) in e.content.iter().enumerate() {
            if start >= end {
                break;
            }
            // A chunk known to end before `offset` is not fetched again.
            if let Some(chunk_end) = self.ends.get(&ino).and_then(|ends| ends.get(i)).copied()
                && chunk_end <= offset
            {
                start = chunk_end;
                continue;
            }
            let data = match *id == self.hole_piece {
                true => self.zeros.clone(),
                false => self.chunks.get(&self.repo, id)?,
            };
            let chunk_end = start + data.len() as u64;
            let ends = self.ends.entry(ino).or_default();
            if ends.len() == i {
                ends.push(chunk_end);
            }
            let from = offset.saturating_sub(start) as usize;
            let to = (end - start).min(data.len() as u64) as usize;
            if from < to {
                out.extend_from_slice(&data[from..to]);
            }
            start = chunk_end;
        }
        Ok(out)
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
    }
}

fn errno(e: &Error) -> i32 {
    match e {
        Error::NotFound(_) => libc::ENOENT,
        _ => libc::EIO,
    }
}

/// Decrypted chunks, the most recently used kept up to [`CACHE_BYTES`].
#[derive(Default)]
struct ChunkCache {
    chunks: HashMap<ObjectId, Arc<Vec<u8>>>,
    order: VecDeque<ObjectId>,
    bytes: usize,
}

impl ChunkCache {
    fn get(&mut self, repo: &Repository, id: &ObjectId) -> Result<Arc<Vec<u8>>> {
        if let Some(data) = self.chunks.get(id) {
            return Ok(data.clone());
        }
        let data = Arc::new(repo.chunk(id)?);
        self.bytes += data.len();
        self.chunks.insert(*id, data.clone());
        self.order.push_back(*id);
        while self.bytes > CACHE_BYTES
            && let Some(old) = self.order.pop_front()
        {
            self.bytes -= self.chunks.remove(&old).map_or(0, |d| d.len());
        }
        Ok(data)
    }
}

impl Filesystem for BackupFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let Some(parent) = self.item(parent).cloned() else { return reply.error(libc::ENOENT) };
        let Some(item) = self.child(&parent, name) else { return reply.error(libc::ENOENT) };
        match self.shape(&item) {
            Ok(Some(shape)) => {
                let ino = self.inode(item);
                reply.entry(&TTL, &self.attr(ino, &shape), 0)
            }
            Ok(None) => reply.error(libc::ENOENT),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let Some(item) = self.item(ino).cloned() else { return reply.error(libc::ENOENT) };
        match self.shape(&item) {
            Ok(Some(shape)) => reply.attr(&TTL, &self.attr(ino, &shape)),
            Ok(None) => reply.error(libc::ENOENT),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        match self.entry_of(ino) {
            Ok(e) if e.kind == Kind::Symlink => reply.data(&e.target),
            Ok(_) => reply.error(libc::EINVAL),
            Err(code) => reply.error(code),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let entry = match self.entry_of(ino) {
            Ok(e) if e.kind == Kind::File => e,
            Ok(_) => return reply.error(libc::EINVAL),
            Err(code) => return reply.error(code),
        };
        match self.read_file(ino, &entry, offset.max(0) as u64, size as u64) {
            Ok(data) => reply.data(&data),
            Err(e) => {
                tracing::warn!(error = %e, "read failed");
                reply.error(libc::EIO)
            }
        }
    }

    /// Every close of a file; nothing to write back.
    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock_owner: u64, reply: fuser::ReplyEmpty) {
        reply.ok()
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        let Some(item) = self.item(ino).cloned() else { return reply.error(libc::ENOENT) };
        let names = match self.shape(&item) {
            Ok(Some(Shape::Virtual(names))) => names,
            Ok(Some(Shape::Entry(e))) if e.kind == Kind::Dir => match e.tree().map(|t| self.repo.tree(&t)) {
                Some(Ok(tree)) => tree.entries.into_iter().map(|c| (c.name, file_type(c.kind))).collect(),
                _ => return reply.error(libc::EIO),
            },
            Ok(Some(Shape::Entry(_))) => return reply.error(libc::ENOTDIR),
            Ok(None) => return reply.error(libc::ENOENT),
            Err(e) => return reply.error(errno(&e)),
        };
        let dots = [(b".".to_vec(), FileType::Directory), (b"..".to_vec(), FileType::Directory)];
        for (i, (name, kind)) in dots.into_iter().chain(names).enumerate().skip(offset.max(0) as usize) {
            // Inode numbers here are hints; lookup gives the real ones.
            if reply.add(ino, (i + 1) as i64, kind, OsStr::from_bytes(&name)) {
                break;
            }
        }
        reply.ok()
    }

    fn getxattr(&mut self, _req: &Request<'_>, ino: u64, name: &OsStr, size: u32, reply: ReplyXattr) {
        let entry = match self.entry_of(ino) {
            Ok(e) => e,
            Err(libc::EISDIR) => return reply.error(libc::ENODATA),
            Err(code) => return reply.error(code),
        };
        match entry.xattrs.iter().find(|(n, _)| n.as_slice() == name.as_bytes()) {
            None => reply.error(libc::ENODATA),
            Some((_, value)) => xattr_reply(value, size, reply),
        }
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        let names: Vec<u8> = match self.entry_of(ino) {
            Ok(e) => e.xattrs.iter().flat_map(|(n, _)| n.iter().copied().chain([0])).collect(),
            Err(libc::EISDIR) => Vec::new(),
            Err(code) => return reply.error(code),
        };
        xattr_reply(&names, size, reply)
    }
}

/// The kernel first asks how big (size 0), then for the bytes.
fn xattr_reply(value: &[u8], size: u32, reply: ReplyXattr) {
    match size {
        0 => reply.size(value.len() as u32),
        n if (n as usize) < value.len() => reply.error(libc::ERANGE),
        _ => reply.data(value),
    }
}

/// Mounts the account at `mountpoint` until SIGINT, SIGTERM, SIGHUP or
/// SIGPIPE, or until it is unmounted (`fusermount -u`, `umount`).
pub fn mount(repo: Repository, mountpoint: &Path) -> Result<()> {
    let fs = BackupFs::new(repo)?;
    let options = [fuser::MountOption::RO, fuser::MountOption::FSName("coffer".into())];
    let session = fuser::spawn_mount2(fs, mountpoint, &options)
        .map_err(|e| Error::Invalid(format!("cannot mount at {}: {e}", mountpoint.display())))?;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGPIPE, SIGTERM};
    // SIGHUP (its terminal gone) and SIGPIPE (its output gone) end it
    // cleanly too, rather than leaving a dead mount behind.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGPIPE])
        .map_err(|e| Error::Invalid(format!("signals: {e}")))?;
    loop {
        if signals.pending().next().is_some() || session.guard.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Unmounts (if it still is mounted), then waits for the file system's
    // thread to let go of the store: a process that ends while that thread
    // still closes the store's index aborts.
    session.join();
    Ok(())
}

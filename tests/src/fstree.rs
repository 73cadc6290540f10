//! Generating file trees and comparing them, attribute by attribute.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Deterministic pseudo-random bytes (xorshift), incompressible enough for
/// dedup tests and fast to make.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, data).unwrap();
}

/// A tree of `total` bytes, all incompressible: half in files of 64 MiB,
/// half in files of 4–60 KiB over 97 directories. Returns (files, bytes).
pub fn generate_mixed(root: &Path, total: u64) -> (u64, u64) {
    let (mut files, mut bytes, mut seed) = (0u64, 0u64, 1u64);
    while bytes < total / 2 {
        let len = (64u64 << 20).min(total / 2 - bytes).max(1);
        write(&root.join(format!("large/{seed}.bin")), &random_bytes(seed, len as usize));
        (files, bytes, seed) = (files + 1, bytes + len, seed + 1);
    }
    while bytes < total {
        let len = 4096 + (seed * 7919 % 57) * 1024;
        write(&root.join(format!("small/d{}/{seed}.dat", seed % 97)), &random_bytes(seed, len as usize));
        (files, bytes, seed) = (files + 1, bytes + len, seed + 1);
    }
    (files, bytes)
}

/// `count` files of 100–1,100 bytes, 1,000 to a directory: a tree where
/// per-file costs (metadata, memory, round trips) dominate. Returns bytes.
pub fn generate_many(root: &Path, count: u64) -> u64 {
    let mut bytes = 0;
    for n in 0..count {
        let dir = root.join(format!("d{:04}", n / 1000));
        if n % 1000 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        let len = 100 + (n * 7919 % 1001) as usize;
        fs::write(dir.join(format!("f{n}")), random_bytes(n + 1, len)).unwrap();
        bytes += len as u64;
    }
    bytes
}

/// Everything compared about one path.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub size: u64,
    pub content: Option<Vec<u8>>,
    pub target: Option<PathBuf>,
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Index of the first path sharing this inode (hard links), if any.
    pub link_group: Option<PathBuf>,
}

/// Describes a tree: relative path → snapshot. Directory mtimes are included.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Snapshot> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, PathBuf> = BTreeMap::new();
    visit(root, root, &mut out, &mut inodes);
    out
}

fn visit(
    root: &Path,
    path: &Path,
    out: &mut BTreeMap<PathBuf, Snapshot>,
    inodes: &mut BTreeMap<u64, PathBuf>,
) {
    let meta = fs::symlink_metadata(path).unwrap();
    let ft = meta.file_type();
    let rel = path.strip_prefix(root).unwrap().to_path_buf();
    let kind = match () {
        _ if ft.is_dir() => "dir",
        _ if ft.is_file() => "file",
        _ if ft.is_symlink() => "symlink",
        _ if ft.is_fifo() => "fifo",
        _ if ft.is_char_device() => "chardev",
        _ if ft.is_block_device() => "blockdev",
        _ => "other",
    };
    let link_group =
        (ft.is_file() && meta.nlink() > 1).then(|| inodes.entry(meta.ino()).or_insert(rel.clone()).clone());
    let xattrs = xattrs(path);
    out.insert(
        rel,
        Snapshot {
            kind,
            mode: meta.permissions().mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            size: if ft.is_file() { meta.len() } else { 0 },
            content: ft.is_file().then(|| fs::read(path).unwrap()),
            target: ft.is_symlink().then(|| fs::read_link(path).unwrap()),
            rdev: meta.rdev(),
            xattrs,
            link_group,
        },
    );
    if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(path).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        for name in names {
            visit(root, &path.join(name), out, inodes);
        }
    }
}

/// A path's extended attributes (not following symlinks), sorted.
pub fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = xattr::list(path)
        .map(|names| {
            names.filter_map(|n| Some((n.as_bytes().to_vec(), xattr::get(path, &n).ok()??))).collect()
        })
        .unwrap_or_default();
    xattrs.sort();
    xattrs
}

/// Asserts two trees are identical, naming the first difference.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = snapshot(expected);
    let b = snapshot(actual);
    let names_a: Vec<_> = a.keys().collect();
    let names_b: Vec<_> = b.keys().collect();
    assert_eq!(names_a, names_b, "restored tree has different paths");
    for (path, sa) in &a {
        let sb = &b[path];
        assert_eq!(sa, sb, "{} differs", path.display());
    }
}

/// Makes a name that is not valid UTF-8.
pub fn non_utf8_name() -> &'static OsStr {
    OsStr::from_bytes(b"bad-\xff\xfe-name")
}

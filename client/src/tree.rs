//! Trees: one directory's entries, stored as one object.
//!
//! The plaintext is the postcard encoding of the entries sorted by name; the
//! tree's id is the keyed hash of that plaintext, so an unchanged directory
//! keeps its id and is shared by every backup set that contains it. The
//! envelope carries, in clear, the sorted set of ids the entries name (chunks
//! and subtrees) so the node can count references; the entries themselves are
//! sealed with [`crate::crypto::seal_meta`].

use coffer_proto::ObjectId;
use coffer_proto::object::{self, ObjectKind};
use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::error::{Error, Result};
use crate::keys::Keys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
}

impl Kind {
    /// The kind of a file type from `lstat`; `None` for sockets, which their
    /// servers recreate and Coffer does not back up.
    pub fn of(ft: &std::fs::FileType) -> Option<Kind> {
        use std::os::unix::fs::FileTypeExt;
        Some(match () {
            _ if ft.is_dir() => Kind::Dir,
            _ if ft.is_file() => Kind::File,
            _ if ft.is_symlink() => Kind::Symlink,
            _ if ft.is_fifo() => Kind::Fifo,
            _ if ft.is_char_device() => Kind::CharDevice,
            _ if ft.is_block_device() => Kind::BlockDevice,
            _ => return None,
        })
    }
}

/// One directory entry with the metadata Coffer restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The name's raw bytes (names need not be UTF-8).
    pub name: Vec<u8>,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub dev: u64,
    pub inode: u64,
    pub nlink: u64,
    /// Device number of a character or block device.
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// A symlink's target.
    pub target: Vec<u8>,
    /// A file's chunks in order, or a directory's tree (one id).
    pub content: Vec<ObjectId>,
    /// Read too close to its last modification to trust the timestamps for
    /// change detection: the next backup reads it again.
    pub racy: bool,
}

impl Entry {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    pub fn tree(&self) -> Option<ObjectId> {
        (self.kind == Kind::Dir).then(|| self.content.first().copied()).flatten()
    }

    /// Whether `self` and `other` describe the same content and attributes.
    pub fn same_version(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.content == other.content
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.mode == other.mode
            && self.target == other.target
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub entries: Vec<Entry>,
}

impl Tree {
    pub fn find(&self, name: &[u8]) -> Option<&Entry> {
        self.entries.binary_search_by(|e| e.name.as_slice().cmp(name)).ok().map(|i| &self.entries[i])
    }

    pub fn plaintext(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("tree serializes")
    }

    fn refs(&self) -> Vec<ObjectId> {
        let mut refs: Vec<ObjectId> = self.entries.iter().flat_map(|e| e.content.iter().copied()).collect();
        refs.sort_unstable();
        refs.dedup();
        refs
    }

    /// Seals this tree; returns its id and envelope.
    pub fn seal(&self, keys: &Keys) -> (ObjectId, Vec<u8>) {
        let plain = self.plaintext();
        let id = keys.object_id(&plain);
        (id, self.seal_with_id(keys, id, &plain))
    }

    fn seal_with_id(&self, keys: &Keys, id: ObjectId, plain: &[u8]) -> Vec<u8> {
        let refs = self.refs();
        let sealed = crypto::seal_meta(keys, &id, ObjectKind::Tree, &refs_bytes(&refs), plain);
        object::encode(ObjectKind::Tree, &refs, &sealed)
    }

    /// Verifies and decodes a tree envelope.
    pub fn open(keys: &Keys, id: &ObjectId, envelope: &[u8]) -> Result<Tree> {
        let corrupt = |problem: String| Error::Corrupt { what: "tree", id: *id, problem };
        let obj = object::decode(envelope).map_err(|e| corrupt(e.to_string()))?;
        if obj.kind != ObjectKind::Tree {
            return Err(corrupt(format!("is a {}, not a tree", obj.kind.name())));
        }
        let plain = crypto::open_meta(keys, id, ObjectKind::Tree, &refs_bytes(&obj.refs), obj.body)?;
        let tree = Tree::from_plaintext(keys, id, &plain)?;
        if tree.refs() != obj.refs {
            return Err(corrupt("referenced ids differ from the entries".into()));
        }
        Ok(tree)
    }

    /// Decodes a plaintext and checks it hashes to `id`.
    pub fn from_plaintext(keys: &Keys, id: &ObjectId, plain: &[u8]) -> Result<Tree> {
        let corrupt = |problem: String| Error::Corrupt { what: "tree", id: *id, problem };
        if keys.object_id(plain) != *id {
            return Err(corrupt("content does not match its id".into()));
        }
        postcard::from_bytes(plain).map_err(|e| corrupt(e.to_string()))
    }
}

fn refs_bytes(refs: &[ObjectId]) -> Vec<u8> {
    refs.iter().flat_map(|r| r.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &[u8], content: Vec<ObjectId>) -> Entry {
        Entry {
            name: name.to_vec(),
            kind: Kind::File,
            size: 3,
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime_ns: 5,
            ctime_ns: 6,
            dev: 7,
            inode: 8,
            nlink: 1,
            rdev: 0,
            xattrs: vec![(b"user.a".to_vec(), b"b".to_vec())],
            target: vec![],
            content,
            racy: false,
        }
    }

    #[test]
    fn seal_open_and_tamper() {
        let keys = Keys::from_master(&[3; 64]);
        let tree = Tree { entries: vec![entry(b"a", vec![ObjectId([9; 32])]), entry(b"\xff\xfe", vec![])] };
        let (id, env) = tree.seal(&keys);
        assert_eq!(Tree::open(&keys, &id, &env).unwrap(), tree);
        assert_eq!(tree.seal(&keys).0, id, "ids are deterministic");
        assert!(tree.find(b"\xff\xfe").is_some());
        for i in 0..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 0x10;
            assert!(Tree::open(&keys, &id, &bad).is_err(), "flip at {i}");
        }
        assert!(Tree::open(&Keys::from_master(&[4; 64]), &id, &env).is_err());
    }
}

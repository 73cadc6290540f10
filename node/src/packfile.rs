//! Pack files: objects of one account appended into files of a few MiB.
//!
//! One file per object would mean millions of tiny files; a pack keeps them
//! together and is written once. Layout:
//!
//! ```text
//! header   "CFPK" | version u8 = 1 | 3 zero bytes | account u64 LE | pack u64 LE
//! entries  object id (32 bytes) | object envelope (self-delimiting, see coffer_proto::object)
//! trailer  per entry: id (32) | envelope offset u64 LE | envelope length u32 LE
//!          entry count u32 LE | CRC32 of the trailer entries and count | "CFPT"
//! ```
//!
//! A pack is written under a temporary name, synced, then renamed into place,
//! so a crash never leaves a half-written pack visible. Packs describe
//! themselves, so the index can be rebuilt from them.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use coffer_proto::ObjectId;
use coffer_proto::object::{HEADER_LEN, Header};

use crate::error::{Result, StoreError};

const MAGIC: &[u8; 4] = b"CFPK";
const TRAILER_MAGIC: &[u8; 4] = b"CFPT";
pub const PACK_HEADER_LEN: u64 = 24;
const TRAILER_ENTRY_LEN: usize = 44;
const TRAILER_TAIL_LEN: usize = 12;

/// One object as listed in a pack's trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ObjectId,
    pub offset: u64,
    pub len: u32,
}

/// Where an account's committed packs and in-progress temporaries live.
pub fn pack_path(root: &Path, account: u64, pack: u64) -> PathBuf {
    root.join("packs").join(format!("{account:08x}")).join(format!("{pack:016x}.pack"))
}

pub fn tmp_dir(root: &Path) -> PathBuf {
    root.join("tmp")
}

/// Appends objects to a new pack, then commits it by rename.
pub struct PackWriter {
    tmp: PathBuf,
    dest: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    entries: Vec<PackEntry>,
    pub pack: u64,
}

impl PackWriter {
    pub fn create(root: &Path, account: u64, pack: u64) -> Result<Self> {
        let tmp = tmp_dir(root).join(format!("{account:08x}-{pack:016x}.pack.tmp"));
        let dest = pack_path(root, account, pack);
        let file = File::create(&tmp).map_err(StoreError::io(&tmp))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut header = Vec::with_capacity(PACK_HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&[1, 0, 0, 0]);
        header.extend_from_slice(&account.to_le_bytes());
        header.extend_from_slice(&pack.to_le_bytes());
        out.write_all(&header).map_err(StoreError::io(&tmp))?;
        Ok(PackWriter { tmp, dest, out, offset: PACK_HEADER_LEN, entries: Vec::new(), pack })
    }

    /// Appends one envelope and returns the offset it will be found at.
    pub fn append(&mut self, id: ObjectId, envelope: &[u8]) -> Result<u64> {
        self.out.write_all(id.as_bytes()).map_err(StoreError::io(&self.tmp))?;
        self.out.write_all(envelope).map_err(StoreError::io(&self.tmp))?;
        let offset = self.offset + 32;
        self.entries.push(PackEntry { id, offset, len: envelope.len() as u32 });
        self.offset = offset + envelope.len() as u64;
        Ok(offset)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the trailer, syncs, and renames the pack into place. Returns the
    /// pack's total size.
    pub fn commit(mut self) -> Result<u64> {
        let mut trailer = Vec::with_capacity(self.entries.len() * TRAILER_ENTRY_LEN + TRAILER_TAIL_LEN);
        for e in &self.entries {
            trailer.extend_from_slice(e.id.as_bytes());
            trailer.extend_from_slice(&e.offset.to_le_bytes());
            trailer.extend_from_slice(&e.len.to_le_bytes());
        }
        trailer.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        let crc = crc32fast::hash(&trailer);
        trailer.extend_from_slice(&crc.to_le_bytes());
        trailer.extend_from_slice(TRAILER_MAGIC);
        self.out.write_all(&trailer).map_err(StoreError::io(&self.tmp))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| StoreError::Io { path: self.tmp.clone(), source: e.into_error() })?;
        file.sync_all().map_err(StoreError::io(&self.tmp))?;
        let dir = self.dest.parent().expect("pack path has a parent");
        fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        fs::rename(&self.tmp, &self.dest).map_err(StoreError::io(&self.dest))?;
        sync_dir(dir)?;
        Ok(self.offset + trailer.len() as u64)
    }

    /// Drops an uncommitted pack.
    pub fn abandon(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io(dir))
}

/// Reads `len` bytes at `offset` of a pack, failing clearly if the pack is
/// missing or too short.
pub fn read_at(path: &Path, offset: u64, len: u32) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(StoreError::io(path))?;
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, offset).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            StoreError::CorruptPack {
                path: path.to_path_buf(),
                problem: format!(
                    "truncated: {len} bytes at offset {offset} extend past the end of the file ({size} bytes)"
                ),
            }
        }
        _ => StoreError::Io { path: path.to_path_buf(), source: e },
    })?;
    Ok(buf)
}

/// Reads and verifies a pack's trailer.
pub fn read_trailer(path: &Path) -> Result<Vec<PackEntry>> {
    let corrupt = |problem: String| StoreError::CorruptPack { path: path.to_path_buf(), problem };
    let size = fs::metadata(path).map_err(StoreError::io(path))?.len();
    if size < PACK_HEADER_LEN + TRAILER_TAIL_LEN as u64 {
        return Err(corrupt(format!("only {size} bytes, too short for a pack")));
    }
    let tail = read_at(path, size - TRAILER_TAIL_LEN as u64, TRAILER_TAIL_LEN as u32)?;
    if &tail[8..12] != TRAILER_MAGIC {
        return Err(corrupt("trailer magic missing (truncated pack?)".into()));
    }
    let count = u32::from_le_bytes(tail[0..4].try_into().unwrap()) as u64;
    let entries_len = count * TRAILER_ENTRY_LEN as u64;
    if entries_len + TRAILER_TAIL_LEN as u64 + PACK_HEADER_LEN > size {
        return Err(corrupt(format!("trailer claims {count} entries, more than the file holds")));
    }
    let start = size - TRAILER_TAIL_LEN as u64 - entries_len;
    let mut trailer = read_at(path, start, (entries_len + 4) as u32)?;
    let stored_crc = u32::from_le_bytes(tail[4..8].try_into().unwrap());
    if crc32fast::hash(&trailer) != stored_crc {
        return Err(corrupt("trailer CRC mismatch".into()));
    }
    trailer.truncate(entries_len as usize);
    Ok(trailer
        .chunks_exact(TRAILER_ENTRY_LEN)
        .map(|e| PackEntry {
            id: ObjectId::from_slice(&e[..32]).unwrap(),
            offset: u64::from_le_bytes(e[32..40].try_into().unwrap()),
            len: u32::from_le_bytes(e[40..44].try_into().unwrap()),
        })
        .collect())
}

/// Walks a pack's entries from the front without its trailer, for repairs of
/// packs whose trailer is damaged. Stops at the first entry that does not parse.
pub fn scan_entries(path: &Path) -> Result<Vec<PackEntry>> {
    let data = fs::read(path).map_err(StoreError::io(path))?;
    let mut entries = Vec::new();
    let mut at = PACK_HEADER_LEN as usize;
    while at + 32 + HEADER_LEN <= data.len() {
        let Ok(header) = Header::parse(&data[at + 32..]) else { break };
        let end = at + 32 + header.total_len() as usize;
        if end > data.len() {
            break;
        }
        let id = ObjectId::from_slice(&data[at..at + 32]).unwrap();
        entries.push(PackEntry { id, offset: (at + 32) as u64, len: header.total_len() as u32 });
        at = end;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_proto::object::{ObjectKind, encode};

    #[test]
    fn write_commit_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp_dir(dir.path())).unwrap();
        let mut w = PackWriter::create(dir.path(), 1, 7).unwrap();
        let a = encode(ObjectKind::Chunk, &[], b"hello");
        let b = encode(ObjectKind::Tree, &[ObjectId([1; 32])], b"tree");
        let oa = w.append(ObjectId([1; 32]), &a).unwrap();
        let ob = w.append(ObjectId([2; 32]), &b).unwrap();
        w.commit().unwrap();
        let path = pack_path(dir.path(), 1, 7);
        assert_eq!(read_at(&path, oa, a.len() as u32).unwrap(), a);
        assert_eq!(read_at(&path, ob, b.len() as u32).unwrap(), b);
        let trailer = read_trailer(&path).unwrap();
        assert_eq!(trailer, scan_entries(&path).unwrap());
        assert_eq!(trailer.len(), 2);
        assert!(fs::read_dir(tmp_dir(dir.path())).unwrap().next().is_none());
    }

    #[test]
    fn truncated_pack_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp_dir(dir.path())).unwrap();
        let mut w = PackWriter::create(dir.path(), 1, 1).unwrap();
        let a = encode(ObjectKind::Chunk, &[], &[7; 1000]);
        let off = w.append(ObjectId([1; 32]), &a).unwrap();
        w.commit().unwrap();
        let path = pack_path(dir.path(), 1, 1);
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(500).unwrap();
        let err = read_at(&path, off, a.len() as u32).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        assert!(read_trailer(&path).is_err());
    }
}

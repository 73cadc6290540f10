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

use std::collections::VecDeque;
use std::io::Write;

use coffer_proto::ObjectId;
use coffer_proto::object::{HEADER_LEN, Header};
use coffer_raid::{DiscSet, Overwrite, RaidError, RaidReader, RaidWriter};

use crate::error::{Result, StoreError};

const MAGIC: &[u8; 4] = b"CFPK";
const TRAILER_MAGIC: &[u8; 4] = b"CFPT";
pub const PACK_HEADER_LEN: u64 = 24;
const TRAILER_ENTRY_LEN: usize = 44;
const TRAILER_TAIL_LEN: usize = 12;

/// The bytes of a pack of `objects` objects that are not their envelopes:
/// the header, each object's id before it and entry in the trailer, and the
/// trailer's tail.
pub fn framing(objects: u64) -> u64 {
    PACK_HEADER_LEN + objects * (32 + TRAILER_ENTRY_LEN as u64) + TRAILER_TAIL_LEN as u64
}

/// One object as listed in a pack's trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ObjectId,
    pub offset: u64,
    pub len: u32,
}

/// The RAID file name of an account's pack.
pub fn pack_name(account: u64, pack: u64) -> String {
    format!("{account:08x}/{pack:016x}.pack")
}

/// The account and pack a RAID file name stands for, if it is a pack.
/// Where recovery moves pack files the index cannot account for.
pub const ASIDE: &str = "aside";

pub fn parse_pack_name(name: &str) -> Option<(u64, u64)> {
    let (account, pack) = name.split_once('/')?;
    let pack = pack.strip_suffix(".pack")?;
    Some((u64::from_str_radix(account, 16).ok()?, u64::from_str_radix(pack, 16).ok()?))
}

fn raid_error(name: &str) -> impl FnOnce(RaidError) -> StoreError + '_ {
    move |e| match e {
        RaidError::OutOfRange { offset, len, size, .. } => StoreError::CorruptPack {
            path: name.into(),
            problem: format!(
                "truncated: {len} bytes at offset {offset} extend past the end of the pack ({size} bytes)"
            ),
        },
        other => StoreError::Raid(other),
    }
}

/// Appends objects to a new pack, then commits it. Dropped uncommitted, it
/// leaves nothing behind (the RAID writer removes its temporaries).
pub struct PackWriter {
    name: String,
    out: RaidWriter,
    offset: u64,
    entries: Vec<PackEntry>,
    pub pack: u64,
}

impl PackWriter {
    pub fn create(discs: &DiscSet, account: u64, pack: u64) -> Result<Self> {
        let name = pack_name(account, pack);
        let mut out = discs.create(&name, Overwrite::No)?;
        let mut header = Vec::with_capacity(PACK_HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&[1, 0, 0, 0]);
        header.extend_from_slice(&account.to_le_bytes());
        header.extend_from_slice(&pack.to_le_bytes());
        out.write_all(&header).map_err(|e| StoreError::Io { path: name.clone().into(), source: e })?;
        Ok(PackWriter { name, out, offset: PACK_HEADER_LEN, entries: Vec::new(), pack })
    }

    /// Appends one envelope and returns the offset it will be found at.
    pub fn append(&mut self, id: ObjectId, envelope: &[u8]) -> Result<u64> {
        let written = self.out.write_all(id.as_bytes()).and_then(|_| self.out.write_all(envelope));
        written.map_err(|e| StoreError::Io { path: self.name.clone().into(), source: e })?;
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

    /// Writes the trailer and commits the pack durably. Returns its size.
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
        self.out
            .write_all(&trailer)
            .map_err(|e| StoreError::Io { path: self.name.clone().into(), source: e })?;
        self.out.commit()?;
        Ok(self.offset + trailer.len() as u64)
    }
}

/// Reads pack bytes. A block the RAID layer can neither verify nor rebuild
/// (a one-disc set, or two stripes bad) is returned as stored: every object
/// and the trailer carry their own CRC, which decides, so one rotten byte
/// costs the object it hit and not its neighbours in the same block.
pub fn read_at(discs: &DiscSet, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
    OpenPacks::default().read_at(discs, name, offset, len)
}

/// Packs kept open by one reader of many objects (a download, a fast
/// sync). Consecutive objects mostly come from the same pack, whose file
/// (a RAID pack's three stripes) is then opened once rather than once per
/// object.
#[derive(Default)]
pub struct OpenPacks {
    open: VecDeque<(String, RaidReader)>,
}

/// Packs one reader keeps open: a few, for objects interleaved from packs
/// written at the same time.
const OPEN_PACKS: usize = 4;

impl OpenPacks {
    pub(crate) fn read_at(&mut self, discs: &DiscSet, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        let open = match self.open.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                let reader = discs.open_file(name).map_err(raid_error(name))?;
                if self.open.len() == OPEN_PACKS {
                    self.open.pop_front();
                }
                self.open.push_back((name.to_string(), reader));
                self.open.len() - 1
            }
        };
        self.open[open].1.read_at_salvaging(offset, len as usize).map_err(raid_error(name))
    }
}

/// Reads a pack's trailer and verifies its CRC.
pub fn read_trailer(discs: &DiscSet, name: &str) -> Result<Vec<PackEntry>> {
    let corrupt = |problem: String| StoreError::CorruptPack { path: name.into(), problem };
    let size = discs.open_file(name).map_err(raid_error(name))?.len();
    if size < PACK_HEADER_LEN + TRAILER_TAIL_LEN as u64 {
        return Err(corrupt(format!("only {size} bytes, too short for a pack")));
    }
    let tail = read_at(discs, name, size - TRAILER_TAIL_LEN as u64, TRAILER_TAIL_LEN as u32)?;
    if &tail[8..12] != TRAILER_MAGIC {
        return Err(corrupt("trailer magic missing (truncated pack?)".into()));
    }
    let count = u32::from_le_bytes(tail[0..4].try_into().unwrap()) as u64;
    let entries_len = count * TRAILER_ENTRY_LEN as u64;
    if entries_len + TRAILER_TAIL_LEN as u64 + PACK_HEADER_LEN > size {
        return Err(corrupt(format!("trailer claims {count} entries, more than the file holds")));
    }
    let start = size - TRAILER_TAIL_LEN as u64 - entries_len;
    let mut trailer = read_at(discs, name, start, (entries_len + 4) as u32)?;
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
pub fn scan_entries(discs: &DiscSet, name: &str) -> Result<Vec<PackEntry>> {
    let size = discs.open_file(name).map_err(raid_error(name))?.len();
    let data = read_at(discs, name, 0, size as u32)?;
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

    fn discs(dir: &std::path::Path) -> DiscSet {
        DiscSet::open(&[dir.join("d1"), dir.join("d2"), dir.join("d3")]).unwrap()
    }

    #[test]
    fn write_commit_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let discs = discs(dir.path());
        let mut w = PackWriter::create(&discs, 1, 7).unwrap();
        let a = encode(ObjectKind::Chunk, &[], b"hello");
        let b = encode(ObjectKind::Tree, &[ObjectId([1; 32])], b"tree");
        let oa = w.append(ObjectId([1; 32]), &a).unwrap();
        let ob = w.append(ObjectId([2; 32]), &b).unwrap();
        w.commit().unwrap();
        let name = pack_name(1, 7);
        assert_eq!(parse_pack_name(&name), Some((1, 7)));
        assert_eq!(read_at(&discs, &name, oa, a.len() as u32).unwrap(), a);
        assert_eq!(read_at(&discs, &name, ob, b.len() as u32).unwrap(), b);
        let trailer = read_trailer(&discs, &name).unwrap();
        assert_eq!(trailer, scan_entries(&discs, &name).unwrap());
        assert_eq!(trailer.len(), 2);
        assert_eq!(discs.names().unwrap(), vec![name]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// A pack file whose bytes are anything at all (a lying disc, a
        /// foreign file): reading its trailer or scanning its entries
        /// gives an error or entries, never a panic or a huge allocation.
        #[test]
        fn arbitrary_pack_files_never_panic(
            head in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            count in proptest::prelude::any::<u32>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let discs = discs(dir.path());
            let name = pack_name(1, 1);
            let mut w = discs.create(&name, Overwrite::No).unwrap();
            w.write_all(&head).unwrap();
            // A tail that looks like a trailer, claiming `count` entries.
            w.write_all(&count.to_le_bytes()).unwrap();
            w.write_all(&[0; 4]).unwrap();
            w.write_all(TRAILER_MAGIC).unwrap();
            w.commit().unwrap();
            let _ = read_trailer(&discs, &name);
            let _ = scan_entries(&discs, &name);
        }
    }

    #[test]
    fn reads_past_the_end_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let discs = discs(dir.path());
        let mut w = PackWriter::create(&discs, 1, 1).unwrap();
        let a = encode(ObjectKind::Chunk, &[], &[7; 1000]);
        w.append(ObjectId([1; 32]), &a).unwrap();
        w.commit().unwrap();
        let err = read_at(&discs, &pack_name(1, 1), 900, 1000).unwrap_err().to_string();
        assert!(err.contains("truncated") && err.contains("00000001/0000000000000001.pack"), "{err}");
    }
}

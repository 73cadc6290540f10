//! `held.ids`, the cache's record of objects the store is known to hold,
//! grown by appending at each commit.
//!
//! The file is a magic line, then segments, one written whole or appended
//! per commit: `count: u32 LE | count 32-byte ids | len: u16 LE | position
//! text | hash`. A segment's hash is BLAKE3 of the previous segment's hash
//! (the magic line's, first) followed by the segment, so a damaged or torn
//! segment voids the whole record: one that claimed an object the store
//! lacks would let a backup name what is not stored. The record holds every
//! segment's ids and is true at the last segment's position. Appending
//! costs what the commit added; past [`MAX_SEGMENTS`] the record is written
//! whole again.

use std::collections::HashSet;
use std::fs;
use std::io::Write as _;
use std::path::PathBuf;

use coffer_proto::ObjectId;
use tracing::debug;

use crate::backend::Position;
use crate::cache::{Cache, write_private};

const MAGIC: &[u8] = b"coffer held ids v2\n";
/// Segments past which a commit writes the record whole again.
const MAX_SEGMENTS: usize = 64;

/// The record as read: what it holds, and what an append chains from.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub position: Position,
    pub ids: HashSet<ObjectId>,
    segments: usize,
    /// The last segment's hash.
    chain: [u8; 32],
}

fn path(cache: &Cache) -> PathBuf {
    cache.dir().join("held.ids")
}

/// The record, if present and intact.
pub fn read(cache: &Cache) -> Option<Record> {
    let file = fs::read(path(cache)).ok()?;
    let mut rest = file.strip_prefix(MAGIC)?;
    let mut chain = *blake3::hash(MAGIC).as_bytes();
    let (mut ids, mut segments, mut position) = (HashSet::new(), 0, None);
    while !rest.is_empty() {
        let Some((segment, after)) =
            Segment::parse(rest).filter(|(s, _)| s.hash == *chain_hash(&chain, s.body).as_bytes())
        else {
            debug!("ignoring a damaged record of objects held");
            return None;
        };
        ids.extend(segment.ids.chunks_exact(32).filter_map(ObjectId::from_slice));
        (position, chain, rest, segments) = (Some(segment.position), segment.hash, after, segments + 1);
    }
    Some(Record { position: position?, ids, segments, chain })
}

/// Writes the record anew: `ids`, true at `position`.
pub fn write(cache: &Cache, position: Position, ids: &HashSet<ObjectId>) {
    let mut bytes = MAGIC.to_vec();
    bytes.extend(encode(blake3::hash(MAGIC).as_bytes(), position, ids));
    if let Err(e) = write_private(&path(cache), &bytes) {
        debug!(error = %e, "could not write the record of objects held");
    }
}

/// Extends `record` (read from the cache and unchanged since) with `ids`,
/// now true at `position`.
pub fn append(cache: &Cache, mut record: Record, position: Position, ids: HashSet<ObjectId>) {
    if record.segments >= MAX_SEGMENTS {
        record.ids.extend(ids);
        return write(cache, position, &record.ids);
    }
    let new: HashSet<ObjectId> = ids.into_iter().filter(|id| !record.ids.contains(id)).collect();
    let appended = fs::OpenOptions::new()
        .append(true)
        .open(path(cache))
        .and_then(|mut file| file.write_all(&encode(&record.chain, position, &new)));
    if let Err(e) = appended {
        debug!(error = %e, "could not add to the record of objects held");
    }
}

/// One segment, chained to `chain`.
fn encode(chain: &[u8; 32], position: Position, ids: &HashSet<ObjectId>) -> Vec<u8> {
    let text = position.to_text();
    let mut bytes = Vec::with_capacity(4 + ids.len() * 32 + 2 + text.len() + 32);
    bytes.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        bytes.extend_from_slice(id.as_bytes());
    }
    bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    let hash = chain_hash(chain, &bytes);
    bytes.extend_from_slice(hash.as_bytes());
    bytes
}

fn chain_hash(chain: &[u8; 32], segment: &[u8]) -> blake3::Hash {
    blake3::Hasher::new().update(chain).update(segment).finalize()
}

/// One segment as read.
struct Segment<'a> {
    /// What the hash covers (after the previous hash).
    body: &'a [u8],
    ids: &'a [u8],
    position: Position,
    hash: [u8; 32],
}

impl<'a> Segment<'a> {
    /// The segment at the start of `bytes`, and what follows it.
    fn parse(bytes: &'a [u8]) -> Option<(Segment<'a>, &'a [u8])> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (taken, rest) = bytes.split_at_checked(n)?;
            *bytes = rest;
            Some(taken)
        }
        let mut rest = bytes;
        let count = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
        let ids = take(&mut rest, count.checked_mul(32)?)?;
        let len = u16::from_le_bytes(take(&mut rest, 2)?.try_into().ok()?) as usize;
        let position = Position::from_text(std::str::from_utf8(take(&mut rest, len)?).ok()?)?;
        let body = &bytes[..bytes.len() - rest.len()];
        let hash = take(&mut rest, 32)?.try_into().ok()?;
        Some((Segment { body, ids, position, hash }, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keys;
    use coffer_proto::SetsDigest;

    fn id(n: u8) -> ObjectId {
        ObjectId::from_slice(&[n; 32]).unwrap()
    }

    fn at(marker: u64) -> Position {
        Position { marker, digest: SetsDigest::default() }
    }

    fn cache(dir: &tempfile::TempDir) -> Cache {
        Cache::open(dir.path(), "test", &Keys::from_master(&[5; crate::keys::MASTER_LEN]))
    }

    #[test]
    fn commits_append_what_they_add() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(&dir);
        write(&cache, at(3), &HashSet::from([id(1), id(2)]));
        let first = fs::read(path(&cache)).unwrap();
        append(&cache, read(&cache).unwrap(), at(4), HashSet::from([id(2), id(3)]));
        let now = fs::read(path(&cache)).unwrap();
        let appended = now.strip_prefix(first.as_slice()).expect("the record is appended to, not rewritten");
        let (segment, rest) = Segment::parse(appended).unwrap();
        assert_eq!((segment.ids, rest), (id(3).as_bytes().as_slice(), &[][..]), "only the new id");
        append(&cache, read(&cache).unwrap(), at(6), HashSet::from([id(4)]));
        let record = read(&cache).unwrap();
        assert_eq!((record.position, record.segments), (at(6), 3));
        assert_eq!(record.ids, HashSet::from([id(1), id(2), id(3), id(4)]));

        for _ in 0..MAX_SEGMENTS {
            append(&cache, read(&cache).unwrap(), at(7), HashSet::from([id(5)]));
        }
        let record = read(&cache).unwrap();
        assert!(record.segments < MAX_SEGMENTS, "written whole again");
        assert_eq!(record.ids.len(), 5);
    }

    #[test]
    fn a_damaged_or_torn_record_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(&dir);
        write(&cache, at(3), &HashSet::from([id(1), id(2)]));
        append(&cache, read(&cache).unwrap(), at(4), HashSet::from([id(3)]));
        let bytes = fs::read(path(&cache)).unwrap();
        for (i, what) in [(MAGIC.len() + 10, "first segment"), (bytes.len() - 40, "last segment")] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            fs::write(path(&cache), &bad).unwrap();
            assert_eq!(read(&cache), None, "a flipped bit in the {what}");
        }
        fs::write(path(&cache), &bytes[..bytes.len() - 7]).unwrap();
        assert_eq!(read(&cache), None, "a torn append");
        fs::write(path(&cache), &bytes).unwrap();
        assert_eq!(read(&cache).unwrap().ids.len(), 3);
    }
}

//! The cache's tree objects, kept in a few append-only segment files.
//!
//! A first backup of a million files caches some 130,000 tree objects; one
//! file each made ext4's inode allocation a third of a local backup's time.
//! Here they are records appended to `trees/N.seg`:
//! `id: 32 | len: u32 LE | crc32: u32 LE (of id, len, plaintext) | plaintext`
//! after a magic line. One process at a time appends to a segment (it holds
//! an `flock` on it; a second writer takes the next number), so a restore
//! fetching trees while a backup runs writes beside it, not into it.
//!
//! When a writer finishes it leaves `N.idx`, every id of its segment with
//! its place, so the next reader need not read the segment: `magic | covered
//! segment length: u64 LE | count: u32 LE | count × (id | offset: u64 LE |
//! len: u32 LE) | crc32 of all before`. What lies past `covered` (a writer
//! that died, one still writing) is read record by record up to the first
//! that is torn or fails its CRC; the next writer of that segment cuts it
//! off there. An index or a record that does not check out is ignored, and
//! the caller verifies every plaintext by its id anyway: the cache is an
//! optimisation, and at worst a tree is fetched from the store again.
//!
//! A tree object is cached once, whichever backup cut it, and a changed
//! directory adds only its changed runs; still, years of changes add up.
//! Past [`LIMITS`]`.total` a writer first removes the segments least
//! recently appended to (not one another process is writing): what they
//! held that is still wanted is fetched from the store again and cached in
//! the newest segment.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use coffer_proto::ObjectId;
use coffer_proto::object::MAX_OBJECT;
use nix::fcntl::{Flock, FlockArg};
use tracing::debug;

const SEGMENT_MAGIC: &[u8] = b"coffer tree segment v1\n";
const INDEX_MAGIC: &[u8] = b"coffer tree index v1\n";
/// Record header: id, length, CRC.
const HEADER: usize = 32 + 4 + 4;
/// Index entry: id, offset, length.
const ENTRY: usize = 32 + 8 + 4;

/// How large the cache's trees may grow.
#[derive(Clone, Copy)]
struct Limits {
    /// A segment past this size is not appended to; the writer takes the next.
    segment: u64,
    /// Past this, in all segments, the oldest are removed.
    total: u64,
}

const LIMITS: Limits = Limits { segment: 256 << 20, total: 1 << 30 };
/// Segment numbers looked at; past them the cache stops growing.
const MAX_SEGMENTS: u32 = 1024;

/// The tree objects of one account's cache, loaded on first use.
pub struct Trees {
    dir: PathBuf,
    limits: Limits,
    state: Mutex<Option<State>>,
}

/// Where one record's plaintext lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Place {
    segment: u32,
    offset: u64,
    len: u32,
}

#[derive(Default)]
struct State {
    places: HashMap<ObjectId, Place>,
    /// Open segments and how far each was read intact.
    segments: HashMap<u32, Segment>,
    writer: Option<Writer>,
    /// Segments this process appended to: never trimmed by it, so that a
    /// tree too large for the limit does not remove what it just cached.
    written: Vec<u32>,
    /// Set once appending failed, so a full disc is not retried per object.
    cannot_write: bool,
}

struct Segment {
    file: File,
    read_to: u64,
}

/// The segment this process appends to, locked while it does.
struct Writer {
    number: u32,
    file: Flock<File>,
    end: u64,
}

impl Trees {
    pub fn new(dir: PathBuf) -> Trees {
        Trees { dir, limits: LIMITS, state: Mutex::new(None) }
    }

    /// The plaintext recorded for `id`, if its record is intact (the
    /// caller still checks it against the id).
    pub fn get(&self, id: &ObjectId) -> Option<Vec<u8>> {
        self.with_state(|state| {
            let place = *state.places.get(id)?;
            let file = &state.segments.get(&place.segment)?.file;
            let mut record = vec![0; HEADER + place.len as usize];
            let read = file.read_exact_at(&mut record, place.offset).ok();
            match read.and_then(|()| parse_record(&record)) {
                Some((found, _)) if found == *id => {
                    record.drain(..HEADER);
                    Some(record)
                }
                _ => {
                    // Damaged: forgotten, so that the object is cached anew.
                    debug!(%id, "ignoring a damaged cache record");
                    state.places.remove(id);
                    None
                }
            }
        })
        .flatten()
    }

    /// Appends `plaintext` as `id`'s record unless one is recorded.
    pub fn put(&self, id: &ObjectId, plaintext: &[u8]) {
        if plaintext.len() > MAX_OBJECT {
            return;
        }
        self.with_state(|state| {
            if state.places.contains_key(id) || state.cannot_write {
                return;
            }
            if let Err(e) = state.append(&self.dir, self.limits, id, plaintext) {
                debug!(dir = %self.dir.display(), error = %e, "could not write to the cache");
                state.cannot_write = true;
            }
        });
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> Option<T> {
        let mut guard = self.state.lock().ok()?;
        Some(f(guard.get_or_insert_with(|| State::load(&self.dir))))
    }
}

impl Drop for Trees {
    fn drop(&mut self) {
        if let Ok(Some(state)) = self.state.get_mut() {
            state.finish_writing(&self.dir);
        }
    }
}

fn segment_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("{number}.seg"))
}

/// The numbers of the segments in `dir`, in order.
fn segment_numbers(dir: &Path) -> Vec<u32> {
    let names = fs::read_dir(dir).into_iter().flatten().flatten().map(|entry| entry.file_name());
    let mut numbers: Vec<u32> = names
        .filter_map(|name| name.to_str()?.strip_suffix(".seg")?.parse().ok())
        .filter(|n| *n < MAX_SEGMENTS)
        .collect();
    numbers.sort_unstable();
    numbers
}

fn index_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("{number}.idx"))
}

impl State {
    /// Every segment's records: from its index, then from reading past it.
    fn load(dir: &Path) -> State {
        let mut state = State::default();
        for number in segment_numbers(dir) {
            let Ok(file) = File::open(segment_path(dir, number)) else { continue };
            let mut segment = Segment { file, read_to: 0 };
            if let Some((covered, entries)) = read_index(dir, number, &segment.file) {
                state.places.extend(entries);
                segment.read_to = covered;
            }
            state.read_on(number, &mut segment);
            state.segments.insert(number, segment);
        }
        state
    }

    /// Records the intact records of `segment` past where it was read to.
    fn read_on(&mut self, number: u32, segment: &mut Segment) {
        match scan(&segment.file, number, segment.read_to) {
            Ok((end, found)) => {
                self.places.extend(found);
                segment.read_to = end;
            }
            Err(e) => debug!(segment = number, error = %e, "could not read a cache segment"),
        }
    }

    fn append(&mut self, dir: &Path, limits: Limits, id: &ObjectId, plaintext: &[u8]) -> io::Result<()> {
        if self.writer.as_ref().is_none_or(|w| w.end >= limits.segment) {
            self.finish_writing(dir);
            self.trim(dir, limits.total);
            self.writer = Some(self.open_writer(dir, limits.segment)?);
        }
        let writer = self.writer.as_mut().expect("opened above");
        let record = encode_record(id, plaintext);
        if let Err(e) = writer.file.write_all_at(&record, writer.end) {
            // A torn record would hide every one after it from readers.
            let _ = writer.file.set_len(writer.end);
            return Err(e);
        }
        let place = Place { segment: writer.number, offset: writer.end, len: plaintext.len() as u32 };
        writer.end += record.len() as u64;
        self.places.insert(*id, place);
        Ok(())
    }

    /// Locks the first segment nobody else is writing that has room, reads
    /// what was appended to it since it was loaded, and cuts off a torn tail.
    fn open_writer(&mut self, dir: &Path, segment_bytes: u64) -> io::Result<Writer> {
        for number in 0..MAX_SEGMENTS {
            let path = segment_path(dir, number);
            let file = super::open_private(&path)?;
            let Ok(file) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else { continue };
            if !still_at(&file, &path) {
                continue; // removed by a trim between our opening and locking it
            }
            let mut segment = match self.segments.remove(&number) {
                Some(known) => known,
                None => Segment { file: File::open(&path)?, read_to: 0 },
            };
            self.read_on(number, &mut segment);
            let end = segment.read_to.max(SEGMENT_MAGIC.len() as u64);
            self.segments.insert(number, segment);
            if end >= segment_bytes {
                continue;
            }
            file.set_len(end)?;
            file.write_all_at(SEGMENT_MAGIC, 0)?;
            self.written.push(number);
            return Ok(Writer { number, file, end });
        }
        Err(io::Error::other(format!("all {MAX_SEGMENTS} cache segments are full or in use")))
    }

    /// Removes the segments least recently appended to, while all of them
    /// together are over `limit`; never one another process is writing, nor
    /// one this process wrote.
    fn trim(&mut self, dir: &Path, limit: u64) {
        let mut segments: Vec<(std::time::SystemTime, u32, u64)> = segment_numbers(dir)
            .into_iter()
            .filter_map(|number| {
                let meta = fs::metadata(segment_path(dir, number)).ok()?;
                Some((meta.modified().ok()?, number, meta.len()))
            })
            .collect();
        let mut total: u64 = segments.iter().map(|(_, _, len)| len).sum();
        segments.sort();
        for (_, number, len) in segments {
            if total <= limit {
                break;
            }
            if self.written.contains(&number) {
                continue;
            }
            let Ok(file) = File::open(segment_path(dir, number)) else { continue };
            let Ok(_locked) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else { continue };
            let _ = fs::remove_file(index_path(dir, number));
            if fs::remove_file(segment_path(dir, number)).is_ok() {
                debug!(segment = number, bytes = len, "removed the oldest cache segment");
                total -= len;
                self.segments.remove(&number);
                self.places.retain(|_, place| place.segment != number);
            }
        }
    }

    /// Leaves the index of the segment written to, then lets it go.
    fn finish_writing(&mut self, dir: &Path) {
        let Some(writer) = self.writer.take() else { return };
        let mut entries: Vec<(&ObjectId, &Place)> =
            self.places.iter().filter(|(_, p)| p.segment == writer.number).collect();
        entries.sort_by_key(|(_, p)| p.offset);
        let mut bytes = INDEX_MAGIC.to_vec();
        bytes.extend(writer.end.to_le_bytes());
        bytes.extend((entries.len() as u32).to_le_bytes());
        for (id, place) in entries {
            bytes.extend(id.as_bytes());
            bytes.extend(place.offset.to_le_bytes());
            bytes.extend(place.len.to_le_bytes());
        }
        bytes.extend(crc32fast::hash(&bytes).to_le_bytes());
        if let Err(e) = super::write_private(&index_path(dir, writer.number), &bytes) {
            debug!(error = %e, "could not write a cache segment's index");
        }
        if let Some(segment) = self.segments.get_mut(&writer.number) {
            segment.read_to = writer.end;
        }
    }
}

/// Whether `file` is still the one at `path` (a trim may have removed it
/// between our opening and locking it).
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(ours), Ok(there)) => ours.dev() == there.dev() && ours.ino() == there.ino(),
        _ => false,
    }
}

fn encode_record(id: &ObjectId, plaintext: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER + plaintext.len());
    record.extend(id.as_bytes());
    record.extend((plaintext.len() as u32).to_le_bytes());
    record.extend([0; 4]);
    record.extend(plaintext);
    let crc = record_crc(&record);
    record[36..40].copy_from_slice(&crc.to_le_bytes());
    record
}

fn record_crc(record: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record[..36]);
    hasher.update(&record[HEADER..]);
    hasher.finalize()
}

/// A whole record's id and plaintext, if its length and CRC hold.
fn parse_record(record: &[u8]) -> Option<(ObjectId, &[u8])> {
    let id = ObjectId::from_slice(record.get(..32)?)?;
    let len = u32::from_le_bytes(record.get(32..36)?.try_into().ok()?);
    let crc = u32::from_le_bytes(record.get(36..40)?.try_into().ok()?);
    let whole = record.len() - HEADER == len as usize && record_crc(record) == crc;
    whole.then(|| (id, &record[HEADER..]))
}

/// The records of segment `number` from `from` (0: the start, magic line
/// first) to the first torn or damaged one: where that is, and each
/// record's id and place.
fn scan(file: &File, number: u32, from: u64) -> io::Result<(u64, Vec<(ObjectId, Place)>)> {
    let size = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader.seek(SeekFrom::Start(from))?;
    let mut at = from;
    if at == 0 {
        let mut magic = vec![0; SEGMENT_MAGIC.len()];
        if reader.read_exact(&mut magic).is_err() || magic != SEGMENT_MAGIC {
            return Ok((0, Vec::new()));
        }
        at = SEGMENT_MAGIC.len() as u64;
    }
    let mut found = Vec::new();
    let mut record = Vec::new();
    while size - at >= HEADER as u64 {
        record.resize(HEADER, 0);
        reader.read_exact(&mut record)?;
        let len = u32::from_le_bytes(record[32..36].try_into().expect("4 bytes"));
        if len as usize > MAX_OBJECT || size - at < (HEADER as u64 + u64::from(len)) {
            break;
        }
        record.resize(HEADER + len as usize, 0);
        reader.read_exact(&mut record[HEADER..])?;
        let Some((id, _)) = parse_record(&record) else { break };
        found.push((id, Place { segment: number, offset: at, len }));
        at += record.len() as u64;
    }
    Ok((at, found))
}

/// A segment's index, if whole and true to the segment as it is: how far
/// it covers, and the places it lists.
fn read_index(dir: &Path, number: u32, segment: &File) -> Option<(u64, Vec<(ObjectId, Place)>)> {
    let bytes = fs::read(index_path(dir, number)).ok()?;
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    let rest = body.strip_prefix(INDEX_MAGIC)?;
    if crc32fast::hash(body).to_le_bytes() != crc || rest.len() < 12 {
        debug!(segment = number, "ignoring a damaged cache index");
        return None;
    }
    let covered = u64::from_le_bytes(rest[..8].try_into().ok()?);
    let count = u32::from_le_bytes(rest[8..12].try_into().ok()?) as usize;
    let entries = &rest[12..];
    if entries.len() != count.checked_mul(ENTRY)? || covered > segment.metadata().ok()?.len() {
        return None;
    }
    entries
        .chunks_exact(ENTRY)
        .map(|entry| {
            let id = ObjectId::from_slice(&entry[..32])?;
            let offset = u64::from_le_bytes(entry[32..40].try_into().ok()?);
            let len = u32::from_le_bytes(entry[40..44].try_into().ok()?);
            let fits = offset >= SEGMENT_MAGIC.len() as u64
                && (len as usize) <= MAX_OBJECT
                && offset.checked_add(HEADER as u64 + u64::from(len)).is_some_and(|end| end <= covered);
            fits.then_some((id, Place { segment: number, offset, len }))
        })
        .collect::<Option<Vec<_>>>()
        .map(|places| (covered, places))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(n: u32) -> (ObjectId, Vec<u8>) {
        let plain = format!("tree object {n} ").repeat(n as usize % 50 + 1).into_bytes();
        (ObjectId::from_slice(blake3::hash(&plain).as_bytes()).unwrap(), plain)
    }

    fn fill(trees: &Trees, range: std::ops::Range<u32>) {
        range.map(object).for_each(|(id, plain)| trees.put(&id, &plain));
    }

    fn all_read(trees: &Trees, range: std::ops::Range<u32>) -> bool {
        range.map(object).all(|(id, plain)| trees.get(&id) == Some(plain))
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    /// As a process killed while writing: its lock goes, no index is left.
    fn die(trees: Trees) {
        drop(trees.state.lock().unwrap().as_mut().unwrap().writer.take());
        std::mem::forget(trees);
    }

    #[test]
    fn objects_are_read_back_through_the_index_or_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let trees = Trees::new(dir.path().join("trees"));
        fill(&trees, 0..2000);
        assert!(all_read(&trees, 0..2000), "read back by the writer");
        drop(trees);
        assert_eq!(
            files(&dir.path().join("trees")),
            ["0.idx", "0.seg"],
            "one segment, not a file per object"
        );

        let trees = Trees::new(dir.path().join("trees"));
        assert!(all_read(&trees, 0..2000), "read back through the index");
        assert_eq!(trees.get(&object(2000).0), None);
        drop(trees);

        fs::remove_file(dir.path().join("trees/0.idx")).unwrap();
        let trees = Trees::new(dir.path().join("trees"));
        assert!(all_read(&trees, 0..2000), "read back by reading the segment");
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_appending_goes_on_after_the_last_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let trees = Trees::new(dir.path().join("trees"));
        fill(&trees, 0..100);
        drop(trees);
        // A writer that died in its second session: its index covers the
        // first, its last record is cut short.
        let segment = dir.path().join("trees/0.seg");
        let before = fs::metadata(&segment).unwrap().len();
        let trees = Trees::new(dir.path().join("trees"));
        fill(&trees, 100..110);
        die(trees);
        let whole = fs::metadata(&segment).unwrap().len();
        File::options().write(true).open(&segment).unwrap().set_len(whole - 3).unwrap();
        assert!(whole > before);

        let trees = Trees::new(dir.path().join("trees"));
        assert!(all_read(&trees, 0..109), "records past the index are read up to the torn one");
        assert_eq!(trees.get(&object(109).0), None);
        fill(&trees, 109..200);
        drop(trees);
        let trees = Trees::new(dir.path().join("trees"));
        assert!(all_read(&trees, 0..200));
        assert_eq!(files(&dir.path().join("trees")), ["0.idx", "0.seg"]);
    }

    #[test]
    fn a_second_writer_appends_to_a_segment_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (Trees::new(dir.path().join("trees")), Trees::new(dir.path().join("trees")));
        fill(&first, 0..50);
        fill(&second, 25..100);
        fill(&first, 100..150);
        drop((first, second));
        assert_eq!(files(&dir.path().join("trees")), ["0.idx", "0.seg", "1.idx", "1.seg"]);
        let trees = Trees::new(dir.path().join("trees"));
        assert!(all_read(&trees, 0..150));
    }

    #[test]
    fn a_damaged_index_or_record_costs_only_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let trees = Trees::new(dir.path().join("trees"));
        fill(&trees, 0..100);
        drop(trees);
        let index = dir.path().join("trees/0.idx");
        let mut bytes = fs::read(&index).unwrap();
        let last = bytes.len() - 10;
        bytes[last] ^= 1;
        fs::write(&index, &bytes).unwrap();
        // A record's plaintext damaged on disc.
        let (id, plain) = object(40);
        let segment = fs::read(dir.path().join("trees/0.seg")).unwrap();
        let at = segment.windows(plain.len()).position(|w| w == plain).unwrap();
        let file = File::options().write(true).open(dir.path().join("trees/0.seg")).unwrap();
        file.write_all_at(b"X", at as u64 + 5).unwrap();

        let trees = Trees::new(dir.path().join("trees"));
        assert!(all_read(&trees, 0..40), "the index is ignored and the segment read up to the damage");
        assert_eq!(trees.get(&id), None);
        fill(&trees, 40..100);
        assert!(all_read(&trees, 0..100), "what followed the damage is cached anew");
        drop(trees);
        let trees = Trees::new(dir.path().join("trees"));
        assert!(all_read(&trees, 0..100));
    }

    #[test]
    fn past_its_limit_the_cache_removes_its_oldest_segments_but_not_one_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let small = |dir: &Path| Trees {
            dir: dir.join("trees"),
            limits: Limits { segment: 16 << 10, total: 128 << 10 },
            state: Mutex::new(None),
        };
        let writing = small(dir.path());
        fill(&writing, 0..5);
        for session in 0..10 {
            let trees = small(dir.path());
            fill(&trees, 100 + session * 100..200 + session * 100);
        }
        let total: u64 = fs::read_dir(dir.path().join("trees"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_str().unwrap().ends_with(".seg"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(total <= (128 + 16 + 16) << 10, "{total} bytes of segments");
        let trees = small(dir.path());
        assert!(all_read(&trees, 1000..1100), "the newest are kept");
        assert_eq!(trees.get(&object(100).0), None, "the oldest are gone");
        assert!(all_read(&writing, 0..5), "a segment being written is not removed");
        drop(writing);
        assert!(all_read(&small(dir.path()), 0..5));

        // One backup's trees larger than the limit: none of them removed.
        let big = small(dir.path());
        fill(&big, 2000..3000);
        drop(big);
        assert!(all_read(&small(dir.path()), 2000..3000));
    }

    #[test]
    fn an_index_that_points_outside_its_segment_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let trees = Trees::new(dir.path().join("trees"));
        fill(&trees, 0..10);
        drop(trees);
        let index = dir.path().join("trees/0.idx");
        let mut body = fs::read(&index).unwrap();
        body.truncate(body.len() - 4);
        let entry = INDEX_MAGIC.len() + 12;
        body[entry + 32..entry + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        body.extend(crc32fast::hash(&body).to_le_bytes());
        fs::write(&index, &body).unwrap();
        assert_eq!(
            read_index(&dir.path().join("trees"), 0, &File::open(dir.path().join("trees/0.seg")).unwrap()),
            None
        );
        let trees = Trees::new(dir.path().join("trees"));
        assert!(all_read(&trees, 0..10));
    }
}

//! Trees: one directory's entries, stored as one object or, for a
//! directory of more than [`SPLIT_ENTRIES`] entries, as several.
//!
//! In memory a [`Tree`] is a directory's entries sorted by name, each file's
//! full chunk list included. On the store it is one or more tree objects
//! (their layout is `stored`'s), each holding one node:
//!
//! - `Entries`: the entries themselves (a small directory is one of these);
//! - `Parts`: a larger directory's runs of entries, each an object of its
//!   own, in name order (and, past [`SPLIT_PARTS`] parts, parts of parts);
//! - `Chunks`: a run of one large file's chunk ids; an entry whose chunk
//!   list is stored this way names the runs instead of the chunks.
//!
//! Runs are cut where a keyed hash of a name (or of an id) has its low bits
//! zero, as a chunker cuts a file, so a changed file rewrites its run of
//! about [`ENTRY_CUT`] entries and the parts above it, not its whole
//! directory: each rewritten entry costs its bytes in the new object and a
//! reference the store counts. A run also ends before it would pass
//! [`PART_BYTES`], so no tree object comes near the store's object limit,
//! however large the directory or file. An object's id is the keyed hash of
//! its plaintext, so an unchanged run keeps its id and is shared by every
//! backup set that contains it.

mod stored;

use coffer_proto::ObjectId;
use serde::{Deserialize, Serialize};

use self::stored::{Node, decode, push};
pub use self::stored::{TreeObject, open_object, plaintext_matches};
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
    /// The entry's name for people (see `names`).
    pub fn shown_name(&self) -> String {
        crate::names::escape(&self.name)
    }

    pub fn tree(&self) -> Option<ObjectId> {
        (self.kind == Kind::Dir).then(|| self.content.first().copied()).flatten()
    }

    /// The directory's tree, or an error naming the entry when a (corrupt
    /// or foreign) directory entry names none.
    pub fn dir_tree(&self) -> Result<ObjectId> {
        self.tree()
            .ok_or_else(|| Error::Invalid(format!("directory entry `{}` names no tree", self.shown_name())))
    }

    /// Why this entry's content does not fit its kind, if it does not: a
    /// directory names exactly one tree, and only files have chunks.
    fn shape_problem(&self) -> Option<String> {
        let fits = match self.kind {
            Kind::Dir => self.content.len() == 1,
            Kind::File => true,
            _ => self.content.is_empty(),
        };
        (!fits).then(|| {
            let name = crate::names::escape(&self.name[..self.name.len().min(64)]);
            format!("entry `{name}` is a {:?} with {} content ids", self.kind, self.content.len())
        })
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

/// A directory of more entries than this, or whose single object would
/// pass [`SPLIT_BYTES`], is stored in parts.
const SPLIT_ENTRIES: usize = 16;
const SPLIT_BYTES: usize = 256 << 10;
/// A run of entries ends before it would pass this many bytes.
const PART_BYTES: usize = 512 << 10;
/// Ids in one `Parts` or `Chunks` object at most.
const MAX_IDS: usize = 8192;
/// A file with more chunks than this stores its chunk list in runs.
const LIST_ABOVE: usize = 2048;
/// A list of more parts than this is stored as parts of parts.
const SPLIT_PARTS: usize = 32;
/// Cut points: on average one entry in 8, one part in 16, one chunk id in 1024.
const ENTRY_CUT: u16 = 8;
const PART_CUT: u16 = 16;
const ID_CUT: u16 = 1024;

impl Tree {
    pub fn find(&self, name: &[u8]) -> Option<&Entry> {
        self.entries.binary_search_by(|e| e.name.as_slice().cmp(name)).ok().map(|i| &self.entries[i])
    }

    /// The objects this tree is stored as, each before any object that
    /// names it, and its id (the last one's). Sealing each for the store
    /// is left until it is found to be missing there.
    pub fn objects(&self, keys: &Keys) -> (ObjectId, Vec<TreeObject>) {
        let mut out = Vec::new();
        let mut listed = Vec::new();
        let mut entries = self.entries.clone();
        for (i, entry) in entries.iter_mut().enumerate() {
            if entry.kind == Kind::File && entry.content.len() > LIST_ABOVE {
                let runs = cut(&entry.content, MAX_IDS, |id| cut_after(id, ID_CUT));
                entry.content =
                    runs.into_iter().map(|run| push(keys, &mut out, Node::Chunks(run.to_vec()))).collect();
                listed.push(i as u32);
            }
        }
        let whole = Node::Entries { entries, listed };
        if self.entries.len() <= SPLIT_ENTRIES
            && postcard::to_stdvec(&whole).map_or(0, |v| v.len()) <= SPLIT_BYTES
        {
            let id = push(keys, &mut out, whole);
            return (id, out);
        }
        let Node::Entries { entries, listed } = whole else { unreachable!() };
        let parts = split_entries(keys, entries, &listed);
        let mut ids: Vec<ObjectId> = parts.into_iter().map(|part| push(keys, &mut out, part)).collect();
        while ids.len() > SPLIT_PARTS {
            let runs = cut(&ids, MAX_IDS, |id| cut_after(id, PART_CUT));
            if runs.len() == ids.len() {
                break; // every part a cut point: nesting would never end
            }
            ids = runs.into_iter().map(|run| push(keys, &mut out, Node::Parts(run.to_vec()))).collect();
        }
        let id = push(keys, &mut out, Node::Parts(ids));
        (id, out)
    }

    /// Reads the tree `id`, fetching its objects' verified plaintexts with
    /// `objects` (given ids, their plaintexts in that order): one call per
    /// level of parts and one for chunk runs, so a directory stored as many
    /// objects costs a few requests, not one per object.
    pub fn load(
        keys: &Keys,
        id: &ObjectId,
        objects: &mut impl FnMut(&[ObjectId]) -> Result<Vec<Vec<u8>>>,
    ) -> Result<Tree> {
        let entries = load_entries(keys, id, objects)?;
        let corrupt = |problem: String| Error::Corrupt { what: "tree", id: *id, problem };
        if let Some(bad) = entries.iter().find_map(|e| name_problem(&e.name).or_else(|| e.shape_problem())) {
            return Err(corrupt(bad));
        }
        // Strictly ascending: no name twice.
        if entries.windows(2).any(|w| w[0].name >= w[1].name) {
            return Err(corrupt("entries out of order or named twice".into()));
        }
        Ok(Tree { entries })
    }
}

/// Longest name a directory entry may have (Linux's NAME_MAX).
const MAX_NAME: usize = 255;

/// Why `name` cannot name an entry of a directory, if it cannot: a restore
/// joins names to paths, so a name must stay one component.
fn name_problem(name: &[u8]) -> Option<String> {
    let shown = || crate::names::escape(&name[..name.len().min(64)]);
    match name {
        [] => Some("an entry has an empty name".into()),
        b"." | b".." => Some(format!("an entry is named `{}`", shown())),
        _ if name.len() > MAX_NAME => Some(format!("an entry's name is {} bytes long", name.len())),
        _ if name.contains(&b'/') || name.contains(&0) => {
            Some(format!("entry `{}` has a '/' or NUL in its name", shown().escape_debug()))
        }
        _ => None,
    }
}

/// The bounds on how deep `Parts` may nest: far more than any real directory needs.
const MAX_DEPTH: usize = 8;

/// A directory's contents in name order while its objects are read.
enum Item {
    /// An object not read yet: a part, or the directory's root.
    Object(ObjectId),
    Entry(Entry),
    /// An entry whose content names chunk runs, not chunks.
    Listed(Entry),
}

/// The entries of directory `root`, reading its parts a level at a time.
fn load_entries(
    keys: &Keys,
    root: &ObjectId,
    objects: &mut impl FnMut(&[ObjectId]) -> Result<Vec<Vec<u8>>>,
) -> Result<Vec<Entry>> {
    let corrupt = |problem: &str| Error::Corrupt { what: "tree", id: *root, problem: problem.into() };
    let mut items = vec![Item::Object(*root)];
    for depth in 0.. {
        let unread: Vec<ObjectId> =
            items.iter().filter_map(|i| if let Item::Object(id) = i { Some(*id) } else { None }).collect();
        if unread.is_empty() {
            break;
        }
        let mut nodes = fetch(keys, &unread, objects)?.into_iter();
        let mut next = Vec::with_capacity(items.len());
        for item in items {
            let Item::Object(_) = item else {
                next.push(item);
                continue;
            };
            match nodes.next().expect("one node per unread object") {
                Node::Entries { entries, listed } => {
                    let mut runs = vec![false; entries.len()];
                    for i in listed {
                        *runs.get_mut(i as usize).ok_or_else(|| corrupt("lists a missing entry"))? = true;
                    }
                    let entries = entries.into_iter().zip(runs);
                    next.extend(entries.map(|(e, runs)| if runs { Item::Listed(e) } else { Item::Entry(e) }));
                }
                Node::Parts(_) if depth >= MAX_DEPTH => return Err(corrupt("parts nested too deep")),
                Node::Parts(parts) => next.extend(parts.into_iter().map(Item::Object)),
                Node::Chunks(_) => return Err(corrupt("is a chunk run, not a directory")),
                Node::Packed(_) | Node::Indexed(_) => return Err(corrupt("packed twice")),
            }
        }
        items = next;
    }
    read_chunk_lists(keys, root, items, objects)
}

/// The entries of `items` (all read), each listed entry's chunk runs
/// replaced by the chunks they list.
fn read_chunk_lists(
    keys: &Keys,
    root: &ObjectId,
    items: Vec<Item>,
    objects: &mut impl FnMut(&[ObjectId]) -> Result<Vec<Vec<u8>>>,
) -> Result<Vec<Entry>> {
    let runs: Vec<ObjectId> = items
        .iter()
        .filter_map(|i| if let Item::Listed(e) = i { Some(e.content.iter().copied()) } else { None })
        .flatten()
        .collect();
    let mut lists = if runs.is_empty() { Vec::new() } else { fetch(keys, &runs, objects)? }.into_iter();
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Item::Entry(entry) => entries.push(entry),
            Item::Listed(mut entry) => {
                let mut chunks = Vec::new();
                for _ in 0..entry.content.len() {
                    match lists.next() {
                        Some(Node::Chunks(ids)) => chunks.extend(ids),
                        _ => {
                            let problem = "names a chunk run that is not one".into();
                            return Err(Error::Corrupt { what: "tree", id: *root, problem });
                        }
                    }
                }
                entry.content = chunks;
                entries.push(entry);
            }
            Item::Object(_) => unreachable!("every object is read"),
        }
    }
    Ok(entries)
}

/// The nodes of tree objects `ids`, in order.
fn fetch(
    keys: &Keys,
    ids: &[ObjectId],
    objects: &mut impl FnMut(&[ObjectId]) -> Result<Vec<Vec<u8>>>,
) -> Result<Vec<Node>> {
    let plains = objects(ids)?;
    if plains.len() != ids.len() {
        return Err(Error::Invalid(format!("asked for {} tree objects, read {}", ids.len(), plains.len())));
    }
    ids.iter().zip(plains).map(|(id, plain)| decode(keys, id, &plain)).collect()
}

/// Cuts `entries` into runs (see the module comment); `listed` are the
/// indexes, in `entries`, of entries naming chunk runs.
fn split_entries(keys: &Keys, entries: Vec<Entry>, listed: &[u32]) -> Vec<Node> {
    let mut parts = Vec::new();
    let (mut run, mut run_listed, mut bytes) = (Vec::new(), Vec::new(), 0);
    for (i, entry) in entries.into_iter().enumerate() {
        let size = postcard::to_stdvec(&entry).map_or(0, |v| v.len());
        if !run.is_empty() && bytes + size > PART_BYTES {
            parts.push(Node::Entries {
                entries: std::mem::take(&mut run),
                listed: std::mem::take(&mut run_listed),
            });
            bytes = 0;
        }
        let id = keys.object_id(&entry.name);
        let boundary = cut_after(&id, ENTRY_CUT);
        if listed.contains(&(i as u32)) {
            run_listed.push(run.len() as u32);
        }
        run.push(entry);
        bytes += size;
        if boundary {
            parts.push(Node::Entries {
                entries: std::mem::take(&mut run),
                listed: std::mem::take(&mut run_listed),
            });
            bytes = 0;
        }
    }
    if !run.is_empty() {
        parts.push(Node::Entries { entries: run, listed: run_listed });
    }
    parts
}

/// Cuts `ids` after each id `boundary` picks, and before a run passes `max`.
fn cut(ids: &[ObjectId], max: usize, boundary: impl Fn(&ObjectId) -> bool) -> Vec<&[ObjectId]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for (i, id) in ids.iter().enumerate() {
        if boundary(id) || i + 1 - start == max {
            runs.push(&ids[start..=i]);
            start = i + 1;
        }
    }
    if start < ids.len() {
        runs.push(&ids[start..]);
    }
    runs
}

/// Whether a run ends after `id`: on average after one id in `every`.
fn cut_after(id: &ObjectId, every: u16) -> bool {
    u16::from_le_bytes([id.0[0], id.0[1]]).is_multiple_of(every)
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

    /// A tree stored as `objects`, read back through them.
    fn reload(keys: &Keys, id: &ObjectId, objects: &[TreeObject]) -> Result<Tree> {
        Tree::load(keys, id, &mut |wanted: &[ObjectId]| {
            let open = |want: &ObjectId| {
                let o = objects.iter().find(|o| o.id == *want).ok_or(Error::NotFound(want.to_hex()))?;
                open_object(keys, want, &o.envelope(keys))
            };
            wanted.iter().map(open).collect()
        })
    }

    proptest::proptest! {
        /// A tree plaintext that passed its MAC but was made by someone
        /// else's client: decoding gives an error or a tree, never a panic.
        #[test]
        fn arbitrary_tree_plaintexts_never_panic(plain in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let keys = Keys::from_master(&[5; 64]);
            let id = keys.object_id(&plain);
            let _ = decode(&keys, &id, &plain);
            let _ = Tree::load(&keys, &id, &mut |ids: &[ObjectId]| Ok(vec![plain.clone(); ids.len()]));
        }
    }

    fn files(n: u32) -> Vec<Entry> {
        (0..n).map(|i| entry(format!("module_{i:04}.py").as_bytes(), vec![ObjectId([i as u8; 32])])).collect()
    }

    #[test]
    fn a_directory_stores_each_id_once_and_its_names_packed() {
        let keys = Keys::from_master(&[4; 64]);
        let tree = Tree { entries: files(16) };
        let (id, objects) = tree.objects(&keys);
        assert_eq!(objects.len(), 1);
        let raw =
            postcard::to_stdvec(&Node::Entries { entries: tree.entries.clone(), listed: vec![] }).unwrap();
        // 16 ids of 32 bytes in clear for the store, and the rest packed:
        // less than the raw entries, which hold those ids too.
        let envelope = objects[0].envelope(&keys).len();
        assert!(envelope < raw.len() * 3 / 4, "{envelope} bytes stored for {} raw", raw.len());
        assert!(envelope < 16 * 32 * 2, "{envelope} bytes: ids stored twice?");
        assert_eq!(reload(&keys, &id, &objects).unwrap(), tree);
    }

    #[test]
    fn trees_stored_in_earlier_layouts_still_read() {
        let keys = Keys::from_master(&[4; 64]);
        let tree = Tree { entries: files(300) };
        let raw =
            postcard::to_stdvec(&Node::Entries { entries: tree.entries.clone(), listed: vec![] }).unwrap();
        let packed = postcard::to_stdvec(&Node::Packed(zstd::bulk::compress(&raw, 3).unwrap())).unwrap();
        for plain in [raw, packed] {
            let old =
                Tree::load(&keys, &keys.object_id(&plain), &mut |_: &[ObjectId]| Ok(vec![plain.clone()]));
            assert_eq!(old.unwrap(), tree);
        }
    }

    #[test]
    fn a_changed_file_rewrites_its_run_not_its_directory() {
        let keys = Keys::from_master(&[4; 64]);
        let tree = Tree { entries: files(2000) };
        let (id, objects) = tree.objects(&keys);
        assert_eq!(reload(&keys, &id, &objects).unwrap(), tree);
        let mut changed = tree.clone();
        changed.entries[1234].content = vec![ObjectId([7; 32])];
        let (_, rewritten) = changed.objects(&keys);
        let old: std::collections::HashSet<ObjectId> = objects.iter().map(|o| o.id).collect();
        let new: Vec<&TreeObject> = rewritten.iter().filter(|o| !old.contains(&o.id)).collect();
        // The run of the changed file and the part lists above it.
        assert!(new.len() <= 3, "{} objects rewritten", new.len());
        let named: usize = new.iter().map(|o| o.refs.len()).sum();
        assert!(named < 100, "{named} references stored again for one changed file of 2,000");
    }

    #[test]
    fn packed_nodes_that_unpack_past_an_objects_limit_are_refused() {
        let keys = Keys::from_master(&[4; 64]);
        let huge = zstd::bulk::compress(&vec![0u8; coffer_proto::object::MAX_OBJECT + 1], 3).unwrap();
        for plain in
            [Node::Packed(huge.clone()), Node::Indexed(huge)].map(|n| postcard::to_stdvec(&n).unwrap())
        {
            let err = decode(&keys, &keys.object_id(&plain), &plain).unwrap_err();
            assert!(err.to_string().contains("past"), "{err}");
        }
    }

    #[test]
    fn names_that_are_not_one_path_component_are_refused() {
        let keys = Keys::from_master(&[3; 64]);
        for bad in [&b""[..], b".", b"..", b"a/b", b"../x", b"a\0b", &[b'n'; 256]] {
            let tree = Tree { entries: vec![entry(bad, vec![])] };
            let (id, objects) = tree.objects(&keys);
            let err = reload(&keys, &id, &objects).unwrap_err().to_string();
            assert!(err.contains("name") || err.contains("named"), "{bad:?}: {err}");
        }
        let twice = Tree { entries: vec![entry(b"a", vec![]), entry(b"a", vec![])] };
        let (id, objects) = twice.objects(&keys);
        assert!(reload(&keys, &id, &objects).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn seal_open_and_tamper() {
        let keys = Keys::from_master(&[3; 64]);
        let tree = Tree { entries: vec![entry(b"a", vec![ObjectId([9; 32])]), entry(b"\xff\xfe", vec![])] };
        let (id, objects) = tree.objects(&keys);
        assert_eq!(objects.len(), 1, "a small directory is one object");
        assert_eq!(reload(&keys, &id, &objects).unwrap(), tree);
        assert_eq!(tree.objects(&keys).0, id, "ids are deterministic");
        assert!(tree.find(b"\xff\xfe").is_some());
        let env = &objects[0].envelope(&keys);
        for i in 0..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 0x10;
            assert!(open_object(&keys, &id, &bad).is_err(), "flip at {i}");
        }
        assert!(open_object(&Keys::from_master(&[4; 64]), &id, env).is_err());
    }

    fn big_dir(n: u32, chunks_each: usize) -> Tree {
        let mut entries: Vec<Entry> = (0..n)
            .map(|i| {
                let content = (0..chunks_each).map(|c| ObjectId([(i % 251) as u8 ^ c as u8; 32])).collect();
                entry(format!("file-{i:07}").as_bytes(), content)
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Tree { entries }
    }

    #[test]
    fn a_directory_of_200k_entries_is_cut_into_bounded_parts_and_one_more_file_rewrites_few() {
        let keys = Keys::from_master(&[5; 64]);
        let tree = big_dir(200_000, 1);
        let (id, objects) = tree.objects(&keys);
        assert!(objects.len() > 100, "{} objects", objects.len());
        let largest = objects.iter().map(|o| o.envelope(&keys).len()).max().unwrap();
        assert!(largest <= 2 * PART_BYTES, "largest object {largest} bytes");
        assert_eq!(reload(&keys, &id, &objects).unwrap(), tree);

        let mut grown = tree.clone();
        grown.entries.insert(1000, entry(b"file-0000999x", vec![ObjectId([1; 32])]));
        let (grown_id, grown_objects) = grown.objects(&keys);
        assert_ne!(grown_id, id);
        let old: std::collections::HashSet<ObjectId> = objects.iter().map(|o| o.id).collect();
        let new = grown_objects.iter().filter(|o| !old.contains(&o.id)).count();
        // The added file's run and one part list per level (four levels
        // here), two where a new cut falls.
        assert!(new <= 8, "{new} new objects for one added file");
    }

    #[test]
    fn a_file_with_very_many_chunks_stores_its_list_in_runs() {
        let keys = Keys::from_master(&[6; 64]);
        let content: Vec<ObjectId> = (0..100_000u32)
            .map(|i| {
                let mut id = [0; 32];
                id[..4].copy_from_slice(&i.to_le_bytes());
                keys.object_id(&id)
            })
            .collect();
        let tree =
            Tree { entries: vec![entry(b"disk.img", content), entry(b"small", vec![ObjectId([2; 32])])] };
        let (id, objects) = tree.objects(&keys);
        assert!(objects.len() > 10);
        assert!(objects.iter().all(|o| o.envelope(&keys).len() < 2 * MAX_IDS * 32 + 4096));
        assert_eq!(reload(&keys, &id, &objects).unwrap(), tree);
        let root = &objects.last().unwrap().envelope(&keys);
        assert!(root.len() < 64 << 10, "the entry names runs, not 100,000 chunks");
    }
}

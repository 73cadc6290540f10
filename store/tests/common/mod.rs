//! Objects for engine tests: envelopes with made-up ids and bodies (the
//! engine never looks inside a body, only at kinds, references and CRCs).

use coffer_proto::object::{ObjectKind, encode};
use coffer_proto::set::SET_HEADER_VERSION;
use coffer_proto::{ObjectId, SetHeader, SetStats};

pub fn chunk(n: u8, len: usize) -> (ObjectId, Vec<u8>) {
    (ObjectId([n; 32]), encode(ObjectKind::Chunk, &[], &vec![n; len]))
}

pub fn tree(n: u8, refs: &[ObjectId]) -> (ObjectId, Vec<u8>) {
    (ObjectId([n; 32]), encode(ObjectKind::Tree, refs, b"sealed tree"))
}

pub fn set(n: u8, roots: &[ObjectId], time_ns: i64) -> (ObjectId, Vec<u8>) {
    let header = SetHeader {
        version: SET_HEADER_VERSION,
        time_ns,
        marker: 0,
        roots: roots.to_vec(),
        stats: SetStats::default(),
    };
    (ObjectId([n; 32]), encode(ObjectKind::Set, roots, &header.encode_body(b"sealed")))
}

/// Where logical byte `offset` of a pack lives in its file on a one-disc set
/// (after the stripe header, each 64 KiB block followed by its CRC).
pub fn file_offset(offset: u64) -> usize {
    let bs = coffer_raid::layout::DEFAULT_BLOCK_SIZE as u64;
    (coffer_raid::layout::HEADER_LEN + offset / bs * (bs + 4) + offset % bs) as usize
}

/// The file of an account's pack in a store with the default disc set.
pub fn pack_file(root: &std::path::Path, account: u64, pack: u64) -> std::path::PathBuf {
    root.join("packs").join(coffer_store::pack_name(account, pack))
}

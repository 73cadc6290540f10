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

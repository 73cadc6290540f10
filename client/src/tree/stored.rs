//! One tree object as the store holds it.
//!
//! A tree object holds one [`Node`], sealed with [`crypto::seal_meta`]; its
//! envelope carries in clear the sorted ids the node names, so the store
//! can count references, and the seal authenticates them.
//!
//! Objects are written `Indexed`: the node zstd-packed, each id in it
//! replaced by its position among the envelope's references, so an id is
//! stored once (a directory entry's chunk id would otherwise cost 32 bytes
//! in clear and 32 more sealed). An object's *plaintext* — what its id is
//! the keyed hash of, and what the cache keeps — is the sealed bytes
//! followed by those references, so the id covers them.
//!
//! Objects written before read as they were: `Entries`, `Parts` and
//! `Chunks` with their ids inside, or `Packed` entries; their plaintext is
//! the sealed bytes alone.

use coffer_proto::ObjectId;
use coffer_proto::object::{self, MAX_OBJECT, ObjectKind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Entry;
use crate::crypto;
use crate::error::{Error, Result};
use crate::keys::Keys;

/// What one tree object holds. `Packed` and `Indexed` are only ever a
/// plaintext's outer node; variants keep their order so that plaintexts
/// written earlier read as they were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Node {
    /// Entries in name order; those at `listed` name chunk runs, not chunks.
    Entries { entries: Vec<Entry>, listed: Vec<u32> },
    /// A large directory's parts (or parts of parts), in name order.
    Parts(Vec<ObjectId>),
    /// A run of one file's chunk ids.
    Chunks(Vec<ObjectId>),
    /// Written before `Indexed`: an `Entries` node, zstd-packed.
    Packed(Vec<u8>),
    /// A [`Slim`] node, zstd-packed; its ids follow in the plaintext.
    Indexed(Vec<u8>),
}

/// A node whose ids are named by their index among the object's references.
#[derive(Debug, Serialize, Deserialize)]
enum Slim {
    /// Entries with no content of their own; `content[i]` is entry `i`'s.
    Entries {
        entries: Vec<Entry>,
        content: Vec<Vec<u32>>,
        listed: Vec<u32>,
    },
    Parts(Vec<u32>),
    Chunks(Vec<u32>),
}

/// zstd level for packed nodes: small, written once, read often.
const PACK_LEVEL: i32 = 3;

/// Ids one node may name once unpacked: as many as a node with its ids
/// inside could hold in one object.
const MAX_NAMED: usize = MAX_OBJECT / 32;

/// One tree object, ready to cache and, sealed, to store.
pub struct TreeObject {
    pub id: ObjectId,
    /// What the id is the keyed hash of, and the cache keeps: an `Indexed`
    /// node followed by the refs.
    pub plaintext: Vec<u8>,
    /// The ids the object names (in clear in its envelope).
    pub refs: Vec<ObjectId>,
}

impl TreeObject {
    /// The object sealed for the store.
    pub fn envelope(&self, keys: &Keys) -> Vec<u8> {
        let (node, clear) = self.plaintext.split_at(self.plaintext.len() - self.refs.len() * 32);
        let sealed = crypto::seal_meta(keys, &self.id, ObjectKind::Tree, clear, node);
        object::encode(ObjectKind::Tree, &self.refs, &sealed)
    }
}

/// Appends `node` to `out` as an `Indexed` object and returns its id.
pub(super) fn push(keys: &Keys, out: &mut Vec<TreeObject>, node: Node) -> ObjectId {
    let refs = refs(&node);
    let raw = postcard::to_stdvec(&slim(node, &refs)).expect("tree serializes");
    let packed = crate::squash::compress(&raw, PACK_LEVEL).expect("zstd starts");
    let mut plaintext = postcard::to_stdvec(&Node::Indexed(packed)).expect("tree serializes");
    plaintext.extend_from_slice(&refs_bytes(&refs));
    let id = keys.object_id(&plaintext);
    out.push(TreeObject { id, plaintext, refs });
    id
}

/// Verifies a tree object's envelope (CRC, tag, id, references) and
/// returns its plaintext.
pub fn open_object(keys: &Keys, id: &ObjectId, envelope: &[u8]) -> Result<Vec<u8>> {
    let corrupt = |problem: String| Error::Corrupt { what: "tree", id: *id, problem };
    let obj = object::decode(envelope).map_err(|e| corrupt(e.to_string()))?;
    if obj.kind != ObjectKind::Tree {
        return Err(corrupt(format!("is a {}, not a tree", obj.kind.name())));
    }
    let clear = refs_bytes(&obj.refs);
    let mut plain = crypto::open_meta(keys, id, ObjectKind::Tree, &clear, obj.body)?;
    let (node, rest) = postcard::take_from_bytes::<Node>(&plain).map_err(|e| corrupt(e.to_string()))?;
    let at = plain.len() - rest.len();
    if matches!(node, Node::Indexed(_)) && rest.is_empty() {
        plain.extend_from_slice(&clear);
    }
    if keys.object_id(&plain) != *id {
        return Err(corrupt("content does not match its id".into()));
    }
    if refs(&unwrap(node, &plain[at..]).map_err(corrupt)?) != obj.refs {
        return Err(corrupt("referenced ids differ from the entries".into()));
    }
    Ok(plain)
}

/// Decodes a tree object's plaintext, checking it hashes to `id`.
pub(super) fn decode(keys: &Keys, id: &ObjectId, plain: &[u8]) -> Result<Node> {
    let corrupt = |problem: String| Error::Corrupt { what: "tree", id: *id, problem };
    if !plaintext_matches(keys, id, plain) {
        return Err(corrupt("content does not match its id".into()));
    }
    let (node, rest) = postcard::take_from_bytes::<Node>(plain).map_err(|e| corrupt(e.to_string()))?;
    unwrap(node, rest).map_err(corrupt)
}

/// Whether `plain` is the plaintext of tree object `id`: the cache's check
/// of a file it kept (decoding it is left to the reader, once).
pub fn plaintext_matches(keys: &Keys, id: &ObjectId, plain: &[u8]) -> bool {
    keys.object_id(plain) == *id
}

/// The node a plaintext's outer node stands for; `rest` is what followed
/// it in the plaintext.
fn unwrap(node: Node, rest: &[u8]) -> std::result::Result<Node, String> {
    match node {
        Node::Indexed(packed) => {
            if !rest.len().is_multiple_of(32) {
                return Err(format!("{} bytes of references is not a whole number of ids", rest.len()));
            }
            let refs: Vec<ObjectId> =
                rest.chunks_exact(32).map(|id| ObjectId(id.try_into().expect("32 bytes"))).collect();
            expand(unpack(&packed)?, &refs)
        }
        _ if !rest.is_empty() => Err(format!("{} bytes follow the node", rest.len())),
        Node::Packed(packed) => match unpack(&packed)? {
            Node::Packed(_) | Node::Indexed(_) => Err("packed twice".into()),
            node => Ok(node),
        },
        node => Ok(node),
    }
}

/// `node` with its ids replaced by their index in `refs` (which names them all).
fn slim(node: Node, refs: &[ObjectId]) -> Slim {
    let index = |id: &ObjectId| refs.binary_search(id).expect("refs name every id of the node") as u32;
    let indexes = |ids: &[ObjectId]| ids.iter().map(index).collect();
    match node {
        Node::Entries { mut entries, listed } => {
            let content = entries.iter_mut().map(|e| indexes(&std::mem::take(&mut e.content))).collect();
            Slim::Entries { entries, content, listed }
        }
        Node::Parts(ids) => Slim::Parts(indexes(&ids)),
        Node::Chunks(ids) => Slim::Chunks(indexes(&ids)),
        Node::Packed(_) | Node::Indexed(_) => unreachable!("only nodes of ids are sealed"),
    }
}

/// The node `slim` stands for, with `refs` the object's references.
fn expand(slim: Slim, refs: &[ObjectId]) -> std::result::Result<Node, String> {
    let named = match &slim {
        Slim::Entries { content, .. } => content.iter().map(Vec::len).sum(),
        Slim::Parts(list) | Slim::Chunks(list) => list.len(),
    };
    if named > MAX_NAMED {
        return Err(format!("names {named} ids; a tree object names at most {MAX_NAMED}"));
    }
    let ids = |list: Vec<u32>| {
        list.into_iter()
            .map(|i| {
                refs.get(i as usize).copied().ok_or_else(|| format!("names reference {i} of {}", refs.len()))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
    };
    Ok(match slim {
        Slim::Entries { mut entries, content, listed } => {
            if content.len() != entries.len() || entries.iter().any(|e| !e.content.is_empty()) {
                return Err("entries and their content lists do not match".into());
            }
            for (entry, list) in entries.iter_mut().zip(content) {
                entry.content = ids(list)?;
            }
            Node::Entries { entries, listed }
        }
        Slim::Parts(list) => Node::Parts(ids(list)?),
        Slim::Chunks(list) => Node::Chunks(ids(list)?),
    })
}

/// The value zstd-packed in `packed`, at most [`MAX_OBJECT`] bytes unpacked
/// (an object's own limit, which every plaintext written unpacked kept).
fn unpack<T: DeserializeOwned>(packed: &[u8]) -> std::result::Result<T, String> {
    let raw = crate::squash::decompress(packed, MAX_OBJECT).map_err(|e| format!("packed node {e}"))?;
    postcard::from_bytes(&raw).map_err(|e| e.to_string())
}

/// The ids a node names, sorted and without repeats: its envelope's refs.
fn refs(node: &Node) -> Vec<ObjectId> {
    let mut refs: Vec<ObjectId> = match node {
        Node::Entries { entries, .. } => entries.iter().flat_map(|e| e.content.iter().copied()).collect(),
        Node::Parts(ids) | Node::Chunks(ids) => ids.clone(),
        // Never sealed nor decoded as such: see `Node`.
        Node::Packed(_) | Node::Indexed(_) => Vec::new(),
    };
    refs.sort_unstable();
    refs.dedup();
    refs
}

fn refs_bytes(refs: &[ObjectId]) -> Vec<u8> {
    refs.iter().flat_map(|r| r.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plaintext of an `Indexed` node holding `slim`, followed by `refs`.
    fn indexed(slim: &Slim, refs: &[ObjectId]) -> Vec<u8> {
        let packed = zstd::bulk::compress(&postcard::to_stdvec(slim).unwrap(), 3).unwrap();
        [postcard::to_stdvec(&Node::Indexed(packed)).unwrap(), refs_bytes(refs)].concat()
    }

    #[test]
    fn references_are_named_by_index_and_checked() {
        let keys = Keys::from_master(&[8; 64]);
        let refs = [ObjectId([1; 32]), ObjectId([2; 32])];
        let good = indexed(&Slim::Parts(vec![1, 0, 1]), &refs);
        let node = decode(&keys, &keys.object_id(&good), &good).unwrap();
        assert_eq!(node, Node::Parts(vec![refs[1], refs[0], refs[1]]));

        let past = indexed(&Slim::Chunks(vec![0, 2]), &refs);
        let err = decode(&keys, &keys.object_id(&past), &past).unwrap_err().to_string();
        assert!(err.contains("names reference 2 of 2"), "{err}");

        let mut torn = good.clone();
        torn.pop();
        let err = decode(&keys, &keys.object_id(&torn), &torn).unwrap_err().to_string();
        assert!(err.contains("not a whole number of ids"), "{err}");
    }

    #[test]
    fn an_objects_id_covers_its_references() {
        let keys = Keys::from_master(&[8; 64]);
        let plain = indexed(&Slim::Parts(vec![0]), &[ObjectId([1; 32])]);
        let id = keys.object_id(&plain);
        let other = indexed(&Slim::Parts(vec![0]), &[ObjectId([2; 32])]);
        let err = decode(&keys, &id, &other).unwrap_err().to_string();
        assert!(err.contains("does not match its id"), "{err}");
    }
}

//! The object envelope: how every object is laid out on disk and on the wire.
//!
//! ```text
//! offset size
//!  0     4   magic "CFO1"
//!  4     1   kind (1 chunk, 2 tree, 3 backup set)
//!  5     3   reserved, zero
//!  8     4   number of referenced ids, u32 LE
//! 12     4   body length, u32 LE
//! 16     4   CRC32 of bytes 0..16, the referenced ids and the body
//! 20  32*n   referenced ids, in clear
//!  .     len body (sealed by the client; opaque to the node)
//! ```
//!
//! The CRC lets any node verify every stored byte without keys; the client
//! additionally checks the AES-GCM tag or HMAC inside the body. Decoding
//! rejects any truncation, trailing bytes or bit flip.

use crate::id::{ID_LEN, ObjectId};

pub const MAGIC: &[u8; 4] = b"CFO1";
/// The largest envelope a store takes: a chunk is at most 4 MiB before
/// sealing, and tree objects are cut far below this (see the client's `tree`).
pub const MAX_OBJECT: usize = 8 << 20;
pub const HEADER_LEN: usize = 20;

/// What an object is; the node treats each kind differently only in how
/// references and roots are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum ObjectKind {
    /// A piece of one file's content.
    Chunk = 1,
    /// One directory's entries.
    Tree = 2,
    /// One backup snapshot; a root of reference counting.
    Set = 3,
}

impl ObjectKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(ObjectKind::Chunk),
            2 => Some(ObjectKind::Tree),
            3 => Some(ObjectKind::Set),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Chunk => "chunk",
            ObjectKind::Tree => "tree",
            ObjectKind::Set => "backup set",
        }
    }
}

/// Why bytes are not a valid object envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ObjectError {
    #[error("object is truncated: {have} bytes, header needs {need}")]
    Truncated { have: usize, need: usize },
    #[error("object has bad magic bytes (not a Coffer object)")]
    BadMagic,
    #[error("object has unknown kind {0}")]
    BadKind(u8),
    #[error("object length mismatch: header says {expected} bytes, have {actual}")]
    Length { expected: u64, actual: usize },
    #[error("object CRC mismatch: stored {stored:08x}, computed {computed:08x} (corrupt data)")]
    Crc { stored: u32, computed: u32 },
    #[error("a chunk object must not reference other objects")]
    ChunkWithRefs,
    #[error("object is {0} bytes; objects are at most {MAX_OBJECT} bytes")]
    TooLarge(usize),
}

/// A decoded envelope borrowing the bytes it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object<'a> {
    pub kind: ObjectKind,
    pub refs: Vec<ObjectId>,
    pub body: &'a [u8],
    pub crc: u32,
}

/// Builds an envelope around `body` naming `refs`.
pub fn encode(kind: ObjectKind, refs: &[ObjectId], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + refs.len() * ID_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.push(kind as u8);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&(refs.len() as u32).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for r in refs {
        out.extend_from_slice(r.as_bytes());
    }
    out.extend_from_slice(body);
    let crc = compute_crc(&out);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

fn compute_crc(object: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&object[..16]);
    h.update(&object[HEADER_LEN..]);
    h.finalize()
}

/// Parsed fixed header: enough to know an object's full length from a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: ObjectKind,
    pub nrefs: u32,
    pub body_len: u32,
    pub crc: u32,
}

impl Header {
    pub fn total_len(&self) -> u64 {
        HEADER_LEN as u64 + self.nrefs as u64 * ID_LEN as u64 + self.body_len as u64
    }

    pub fn parse(bytes: &[u8]) -> Result<Header, ObjectError> {
        if bytes.len() < HEADER_LEN {
            return Err(ObjectError::Truncated { have: bytes.len(), need: HEADER_LEN });
        }
        if &bytes[..4] != MAGIC || bytes[5..8] != [0; 3] {
            return Err(ObjectError::BadMagic);
        }
        let kind = ObjectKind::from_u8(bytes[4]).ok_or(ObjectError::BadKind(bytes[4]))?;
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        Ok(Header { kind, nrefs: u32_at(8), body_len: u32_at(12), crc: u32_at(16) })
    }
}

/// Decodes and verifies an envelope; `bytes` must be exactly one object.
pub fn decode(bytes: &[u8]) -> Result<Object<'_>, ObjectError> {
    if bytes.len() > MAX_OBJECT {
        return Err(ObjectError::TooLarge(bytes.len()));
    }
    let header = Header::parse(bytes)?;
    if header.total_len() != bytes.len() as u64 {
        return Err(ObjectError::Length { expected: header.total_len(), actual: bytes.len() });
    }
    let computed = compute_crc(bytes);
    if computed != header.crc {
        return Err(ObjectError::Crc { stored: header.crc, computed });
    }
    if header.kind == ObjectKind::Chunk && header.nrefs != 0 {
        return Err(ObjectError::ChunkWithRefs);
    }
    let refs_end = HEADER_LEN + header.nrefs as usize * ID_LEN;
    let refs = bytes[HEADER_LEN..refs_end]
        .chunks_exact(ID_LEN)
        .map(|c| ObjectId::from_slice(c).expect("exact chunk"))
        .collect();
    Ok(Object { kind: header.kind, refs, body: &bytes[refs_end..], crc: header.crc })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_kind() -> impl Strategy<Value = ObjectKind> {
        prop_oneof![Just(ObjectKind::Chunk), Just(ObjectKind::Tree), Just(ObjectKind::Set)]
    }

    fn arb_object() -> impl Strategy<Value = (ObjectKind, Vec<ObjectId>, Vec<u8>)> {
        (
            arb_kind(),
            prop::collection::vec(any::<[u8; 32]>(), 0..5),
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(k, refs, body)| {
                let refs =
                    if k == ObjectKind::Chunk { vec![] } else { refs.into_iter().map(ObjectId).collect() };
                (k, refs, body)
            })
    }

    proptest! {
        #[test]
        fn round_trip((kind, refs, body) in arb_object()) {
            let bytes = encode(kind, &refs, &body);
            let obj = decode(&bytes).unwrap();
            prop_assert_eq!(obj.kind, kind);
            prop_assert_eq!(obj.refs, refs);
            prop_assert_eq!(obj.body, &body[..]);
        }

        #[test]
        fn any_truncation_is_an_error((kind, refs, body) in arb_object(), cut in any::<prop::sample::Index>()) {
            let bytes = encode(kind, &refs, &body);
            let len = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..len]).is_err());
        }

        /// Whatever arrives from a node or a disc: an error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode(&bytes);
            let _ = crate::set::SetHeader::decode_body(&bytes);
        }

        #[test]
        fn any_bit_flip_is_an_error((kind, refs, body) in arb_object(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = encode(kind, &refs, &body);
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(decode(&bytes).is_err());
        }
    }
}

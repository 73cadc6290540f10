//! The digest of an account's backup-set list: what fast sync compares
//! beside the client store marker.
//!
//! Markers alone can collide: two replicas that each committed one set
//! during a partition both move from marker M to M+1, yet hold different
//! sets. The digest is the XOR of a hash of every live set id and of every
//! tombstone (a different hash, so a forgotten set never looks live). XOR
//! makes it independent of order and cheap to keep up to date: adding or
//! removing an entry is one XOR.

use serde::{Deserialize, Serialize};

use crate::ObjectId;

#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SetsDigest(pub [u8; 32]);

impl SetsDigest {
    /// Adds a live set, or removes one that was added.
    pub fn toggle_set(&mut self, id: &ObjectId) {
        self.mix(b"coffer set", id);
    }

    /// Adds a tombstone, or removes one that was added.
    pub fn toggle_tombstone(&mut self, id: &ObjectId) {
        self.mix(b"coffer tombstone", id);
    }

    /// The digest of a whole listing.
    pub fn of<'a>(
        sets: impl IntoIterator<Item = &'a ObjectId>,
        tombstones: impl IntoIterator<Item = &'a ObjectId>,
    ) -> SetsDigest {
        let mut digest = SetsDigest::default();
        sets.into_iter().for_each(|id| digest.toggle_set(id));
        tombstones.into_iter().for_each(|id| digest.toggle_tombstone(id));
        digest
    }

    pub fn from_slice(bytes: &[u8]) -> Option<SetsDigest> {
        bytes.try_into().ok().map(SetsDigest)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn mix(&mut self, domain: &[u8], id: &ObjectId) {
        let mut hasher = blake3::Hasher::new();
        hasher.update(domain);
        hasher.update(id.as_bytes());
        for (d, h) in self.0.iter_mut().zip(hasher.finalize().as_bytes()) {
            *d ^= h;
        }
    }
}

impl std::fmt::Debug for SetsDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SetsDigest({})", hex::encode(&self.0[..8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 32])
    }

    #[test]
    fn order_free_and_sensitive_to_what_is_live() {
        let a = SetsDigest::of([&id(1), &id(2)], [&id(3)]);
        assert_eq!(a, SetsDigest::of([&id(2), &id(1)], [&id(3)]));
        assert_ne!(a, SetsDigest::of([&id(1), &id(2), &id(3)], []));
        // Two forgotten sets must not look like two live ones.
        assert_ne!(SetsDigest::of([&id(1), &id(2)], []), SetsDigest::of([], [&id(1), &id(2)]));
        let mut b = a;
        b.toggle_set(&id(2));
        b.toggle_tombstone(&id(2));
        assert_eq!(b, SetsDigest::of([&id(1)], [&id(2), &id(3)]));
    }
}

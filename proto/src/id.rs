//! Object ids: 32-byte keyed BLAKE3 digests of an object's plaintext.
//!
//! The key lives only on the client, so a node cannot test whether an account
//! holds a known file. Ids print as lowercase hex; people may abbreviate a
//! backup set's id to any unique prefix, which [`ObjectId::short`] produces.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Length of an object id in bytes.
pub const ID_LEN: usize = 32;

/// The name of an immutable, content-addressed object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId(pub [u8; ID_LEN]);

impl ObjectId {
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(ObjectId(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The 12-hex-digit form shown to people.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.short())
    }
}

/// Why a string is not an object id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not an object id (expected {len} hex digits)", len = ID_LEN * 2)]
pub struct IdParseError(pub String);

impl FromStr for ObjectId {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s).map_err(|_| IdParseError(s.to_string()))?;
        ObjectId::from_slice(&bytes).ok_or_else(|| IdParseError(s.to_string()))
    }
}

/// A request id no other node or tool will choose: it lets an account
/// change be retried without being applied twice.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ObjectId([0xab; ID_LEN]);
        assert_eq!(id.to_hex().parse::<ObjectId>().unwrap(), id);
        assert_eq!(id.short(), "abababababab");
        assert!("abc".parse::<ObjectId>().is_err());
        assert!("zz".repeat(32).parse::<ObjectId>().is_err());
    }
}

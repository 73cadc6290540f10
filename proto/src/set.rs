//! The cleartext header of a backup set object.
//!
//! A backup set's body is `u32 LE header length | postcard(SetHeader) | sealed
//! part`. The header is what a node needs without keys: when the set was made,
//! on which client store marker, the root tree of each backup location (the
//! same ids also travel as the envelope's references) and statistics. Host
//! names, location paths and tags live in the sealed part.

use serde::{Deserialize, Serialize};

use crate::id::ObjectId;

/// Format version of [`SetHeader`].
pub const SET_HEADER_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SetStats {
    pub files: u64,
    pub dirs: u64,
    /// Sum of the sizes of the files in the set (logical bytes).
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetHeader {
    pub version: u8,
    /// When the snapshot was taken, in nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// The client store marker the client saw when it made the set.
    pub marker: u64,
    /// Root tree of each backup location, in the order of the sealed part.
    pub roots: Vec<ObjectId>,
    pub stats: SetStats,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SetHeaderError {
    #[error("backup set body is truncated")]
    Truncated,
    #[error("backup set header is malformed: {0}")]
    Malformed(String),
    #[error("backup set header has unsupported version {0}")]
    Version(u8),
}

impl SetHeader {
    /// Builds a set body from this header and the client's sealed part.
    pub fn encode_body(&self, sealed: &[u8]) -> Vec<u8> {
        let header = postcard::to_stdvec(self).expect("set header serializes");
        let mut out = Vec::with_capacity(4 + header.len() + sealed.len());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(sealed);
        out
    }

    /// Splits a set body into its header and the sealed part.
    pub fn decode_body(body: &[u8]) -> Result<(SetHeader, &[u8]), SetHeaderError> {
        let len_bytes: [u8; 4] = body.get(..4).ok_or(SetHeaderError::Truncated)?.try_into().unwrap();
        let len = u32::from_le_bytes(len_bytes) as usize;
        let header_bytes = body.get(4..4 + len).ok_or(SetHeaderError::Truncated)?;
        let (header, rest): (SetHeader, &[u8]) =
            postcard::take_from_bytes(header_bytes).map_err(|e| SetHeaderError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(SetHeaderError::Malformed("trailing bytes in header".into()));
        }
        if header.version != SET_HEADER_VERSION {
            return Err(SetHeaderError::Version(header.version));
        }
        Ok((header, &body[4 + len..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trip() {
        let h = SetHeader {
            version: SET_HEADER_VERSION,
            time_ns: 1_700_000_000_000_000_000,
            marker: 7,
            roots: vec![ObjectId([1; 32]), ObjectId([2; 32])],
            stats: SetStats { files: 3, dirs: 1, bytes: 99 },
        };
        let body = h.encode_body(b"sealed");
        let (back, sealed) = SetHeader::decode_body(&body).unwrap();
        assert_eq!(back, h);
        assert_eq!(sealed, b"sealed");
        for cut in 0..body.len() - 6 {
            assert!(SetHeader::decode_body(&body[..cut]).is_err(), "cut at {cut}");
        }
    }
}

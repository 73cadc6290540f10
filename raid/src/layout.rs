//! The stripe file format and the block arithmetic.
//!
//! A file of `length` bytes is cut into blocks of `block_size` (the last one
//! may be short). With three stripes, block `i` goes to data stripe `i % 2`
//! at position `i / 2`, and parity block `k` is the XOR of blocks `2k` and
//! `2k + 1` (the second padded with zeros), as long as block `2k`. With one
//! stripe, block `i` is at position `i`. Each stripe file is:
//!
//! ```text
//! "CFRS" | version u8 | stripe u8 | stripes u8 | 0 | block_size u32 | length u64
//!        | write_id u64 | header crc32 u32                       (32 bytes)
//! then per block: bytes | crc32 u32                             (all LE)
//! ```
//!
//! Every stripe carries the file's true length. `write_id` is random per
//! write: a crash between the renames of a commit can leave stripes of two
//! versions, and a reader trusts only stripes that agree with another.

use crate::error::{RaidError, Result};

pub const MAGIC: &[u8; 4] = b"CFRS";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: u64 = 32;
pub const CRC_LEN: u64 = 4;
/// Stripe index of the parity stripe in a three-disc set.
pub const PARITY: usize = 2;
pub const DEFAULT_BLOCK_SIZE: u32 = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub stripe: u8,
    pub stripes: u8,
    pub block_size: u32,
    pub length: u64,
    pub write_id: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut h = [0u8; HEADER_LEN as usize];
        h[..4].copy_from_slice(MAGIC);
        h[4] = VERSION;
        h[5] = self.stripe;
        h[6] = self.stripes;
        h[8..12].copy_from_slice(&self.block_size.to_le_bytes());
        h[12..20].copy_from_slice(&self.length.to_le_bytes());
        h[20..28].copy_from_slice(&self.write_id.to_le_bytes());
        let crc = crc32fast::hash(&h[..28]);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Parses a header; the error says what is wrong with it.
    pub fn decode(h: &[u8]) -> Result<Header, String> {
        if h.len() < HEADER_LEN as usize {
            return Err(format!("header truncated ({} bytes)", h.len()));
        }
        if &h[..4] != MAGIC {
            return Err("not a RAID stripe (bad magic)".into());
        }
        if crc32fast::hash(&h[..28]) != u32::from_le_bytes(h[28..32].try_into().unwrap()) {
            return Err("header CRC mismatch".into());
        }
        if h[4] != VERSION {
            return Err(format!("unsupported stripe version {}", h[4]));
        }
        let header = Header {
            stripe: h[5],
            stripes: h[6],
            block_size: u32::from_le_bytes(h[8..12].try_into().unwrap()),
            length: u64::from_le_bytes(h[12..20].try_into().unwrap()),
            write_id: u64::from_le_bytes(h[20..28].try_into().unwrap()),
        };
        if header.block_size == 0 || !matches!(header.stripes, 1 | 3) || header.stripe >= header.stripes {
            return Err("header fields out of range".into());
        }
        Ok(header)
    }
}

/// Where the blocks of a file of `length` bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub block_size: u64,
    pub length: u64,
    pub stripes: usize,
}

impl Layout {
    pub fn new(block_size: u32, length: u64, stripes: usize) -> Result<Layout> {
        if !matches!(stripes, 1 | 3) {
            return Err(RaidError::DiscCount(stripes));
        }
        Ok(Layout { block_size: block_size.max(1) as u64, length, stripes })
    }

    pub fn blocks(&self) -> u64 {
        self.length.div_ceil(self.block_size)
    }

    /// Length of file block `i`.
    pub fn block_len(&self, i: u64) -> u64 {
        self.block_size.min(self.length.saturating_sub(i * self.block_size))
    }

    /// The stripe and position within it of file block `i`.
    pub fn place(&self, i: u64) -> (usize, u64) {
        if self.stripes == 1 { (0, i) } else { ((i % 2) as usize, i / 2) }
    }

    /// How many blocks stripe `s` holds.
    pub fn stripe_blocks(&self, s: usize) -> u64 {
        let n = self.blocks();
        match (self.stripes, s) {
            (1, _) => n,
            (_, 1) => n / 2,
            _ => n.div_ceil(2),
        }
    }

    /// Length of block `k` of stripe `s` (a parity block is as long as the
    /// first data block of its pair).
    pub fn stripe_block_len(&self, s: usize, k: u64) -> u64 {
        match (self.stripes, s) {
            (1, _) => self.block_len(k),
            (_, PARITY) => self.block_len(2 * k),
            _ => self.block_len(2 * k + s as u64),
        }
    }

    /// Byte offset of block `k` in any stripe file (every block before the
    /// file's last is full).
    pub fn offset(&self, k: u64) -> u64 {
        HEADER_LEN + k * (self.block_size + CRC_LEN)
    }

    /// Size of stripe `s`'s file.
    pub fn stripe_size(&self, s: usize) -> u64 {
        let k = self.stripe_blocks(s);
        if k == 0 { HEADER_LEN } else { self.offset(k - 1) + self.stripe_block_len(s, k - 1) + CRC_LEN }
    }
}

/// XORs `other` into `into` (`other` may be shorter: zero padding).
pub fn xor_into(into: &mut [u8], other: &[u8]) {
    for (a, b) in into.iter_mut().zip(other) {
        *a ^= b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A stripe header read from a disc: arbitrary bytes, or arbitrary
        /// fields under a valid CRC, give an error or a header whose
        /// fields are in range; never a panic.
        #[test]
        fn arbitrary_headers_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            fields in proptest::prelude::any::<[u8; 24]>(),
        ) {
            let _ = Header::decode(&bytes);
            let mut h = [0u8; HEADER_LEN as usize];
            h[..4].copy_from_slice(MAGIC);
            h[4..28].copy_from_slice(&fields);
            h[4] = VERSION;
            let crc = crc32fast::hash(&h[..28]);
            h[28..32].copy_from_slice(&crc.to_le_bytes());
            if let Ok(header) = Header::decode(&h) {
                proptest::prop_assert!(header.block_size > 0 && header.stripe < header.stripes);
            }
        }
    }

    #[test]
    fn header_round_trip_and_damage() {
        let h = Header { stripe: 2, stripes: 3, block_size: 4096, length: 12345, write_id: 77 };
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes), Ok(h));
        for i in 0..32 {
            let mut bad = bytes;
            bad[i] ^= 1;
            assert!(Header::decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(Header::decode(&bytes[..10]).is_err());
    }

    #[test]
    fn stripe_sizes_add_up() {
        for length in [0, 1, 99, 100, 101, 199, 200, 201, 1000] {
            let l = Layout::new(100, length, 3).unwrap();
            let data: u64 = (0..2).map(|s| l.stripe_size(s) - HEADER_LEN).sum();
            assert_eq!(data, length + l.blocks() * CRC_LEN, "length {length}");
            assert_eq!(l.stripe_blocks(PARITY), l.stripe_blocks(0));
            let one = Layout::new(100, length, 1).unwrap();
            assert_eq!(one.stripe_size(0), HEADER_LEN + length + one.blocks() * CRC_LEN);
        }
    }
}

//! Sparse files: a 10 GiB disc image that holds 100 MiB of data is read as
//! 100 MiB and restored as a sparse file of the same apparent size.
//!
//! At backup the file system says where the holes are (`SEEK_DATA` /
//! `SEEK_HOLE`); a hole is never read but stored as zero chunks of the
//! chunker's largest size ([`HOLE_PIECE`], one object however many holes
//! there are) and one shorter zero chunk for its remainder. At restore a
//! chunk of zeros is not written but skipped over, so it becomes a hole
//! again; the largest zero chunk is recognised by its id and not even
//! fetched. A file system without hole support reads as one data segment.

use std::fs::File;
use std::os::fd::AsFd;

use nix::unistd::{Whence, lseek};

use crate::chunker::DEFAULT_PARAMS;

/// The size of the zero chunks a hole is stored as.
pub const HOLE_PIECE: usize = DEFAULT_PARAMS.max as usize;

/// A byte range of a file: data to read, or a hole that reads as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Data { start: u64, len: u64 },
    Hole { len: u64 },
}

/// The data and holes of the first `size` bytes of `file`, in order.
pub fn segments(file: &File, size: u64) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut at = 0u64;
    while at < size {
        let data = match seek(file, at, Whence::SeekData) {
            Some(data) => data.min(size),
            // ENXIO: nothing but a hole up to the end; any other error: the
            // file system cannot say, so read everything.
            None if at > 0 || holes_supported(file) => size,
            None => return vec![Segment::Data { start: 0, len: size }],
        };
        if data > at {
            out.push(Segment::Hole { len: data - at });
        }
        if data >= size {
            break;
        }
        let hole = seek(file, data, Whence::SeekHole).unwrap_or(size).min(size);
        out.push(Segment::Data { start: data, len: hole - data });
        at = hole;
    }
    out
}

fn seek(file: &File, offset: u64, whence: Whence) -> Option<u64> {
    lseek(file.as_fd(), offset as i64, whence).ok().map(|o| o as u64)
}

/// Whether `SEEK_HOLE` works on this file (it finds the end at least).
fn holes_supported(file: &File) -> bool {
    seek(file, 0, Whence::SeekHole).is_some()
}

/// How a hole of `len` bytes is stored: the lengths of its zero chunks.
pub fn hole_pieces(len: u64) -> impl Iterator<Item = usize> {
    let piece = HOLE_PIECE as u64;
    let full = (0..len / piece).map(|_| HOLE_PIECE);
    full.chain((!len.is_multiple_of(piece)).then_some((len % piece) as usize))
}

pub fn is_zero(data: &[u8]) -> bool {
    data.iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;

    #[test]
    fn holes_are_found_and_data_kept_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        let mut file = File::create(&path).unwrap();
        let size = 64u64 << 20;
        file.seek(SeekFrom::Start(32 << 20)).unwrap();
        file.write_all(&[7; 4096]).unwrap();
        file.set_len(size).unwrap();
        let segments = segments(&File::open(&path).unwrap(), size);
        let total: u64 = segments
            .iter()
            .map(|s| match s {
                Segment::Data { len, .. } | Segment::Hole { len } => *len,
            })
            .sum();
        assert_eq!(total, size);
        let data: Vec<_> = segments.iter().filter(|s| matches!(s, Segment::Data { .. })).collect();
        assert!(!data.is_empty());
        if segments.len() > 1 {
            // This file system reports holes: the data is a small part.
            let read: u64 =
                data.iter().map(|s| if let Segment::Data { len, .. } = s { *len } else { 0 }).sum();
            assert!(read < 2 << 20, "{segments:?}");
        }
    }

    #[test]
    fn a_hole_is_whole_pieces_and_a_remainder() {
        let pieces: Vec<usize> = hole_pieces(2 * HOLE_PIECE as u64 + 5).collect();
        assert_eq!(pieces, [HOLE_PIECE, HOLE_PIECE, 5]);
        assert_eq!(hole_pieces(0).count(), 0);
        assert!(is_zero(&[0; 10]) && !is_zero(&[0, 1]));
    }
}

//! Content-defined chunking (FastCDC, a rolling gear hash).
//!
//! Chunk boundaries depend on content, not offsets, so inserting bytes into a
//! file changes only the chunks near the insertion; the rest keep their ids and
//! are not uploaded again. This is Coffer's form of Box Backup's rsync-style
//! diff, done in one pass whatever the file's size.

use std::collections::VecDeque;
use std::io::Read;

use fastcdc::v2020::FastCDC;

/// Chunk size bounds in bytes.
#[derive(Debug, Clone, Copy)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

/// About 1 MiB on average, 256 KiB minimum, 4 MiB maximum.
pub const DEFAULT_PARAMS: ChunkParams = ChunkParams { min: 256 << 10, avg: 1 << 20, max: 4 << 20 };

/// How many maximum-length chunks the read buffer holds.
const BUFFER_CHUNKS: usize = 4;

/// Splits everything `reader` yields into content-defined chunks.
pub fn chunks<R: Read>(reader: R, params: ChunkParams) -> Chunks<R> {
    Chunks { reader, params, buffer: Vec::new(), eof: false, ready: VecDeque::new() }
}

/// The chunks of one reader, found a buffer at a time.
///
/// The boundaries are FastCDC's (`fastcdc::v2020`, normalization level 1),
/// the same as its `StreamCDC` gives, but the buffer grows only as far as the
/// data does and is moved once per several chunks: `StreamCDC` zeroes a
/// maximum-sized buffer for every file and moves its whole tail after every
/// chunk, which made a tree of small files cost 4 MiB of memory traffic each.
pub struct Chunks<R> {
    reader: R,
    params: ChunkParams,
    /// Read but not yet cut.
    buffer: Vec<u8>,
    eof: bool,
    ready: VecDeque<Vec<u8>>,
}

impl<R: Read> Chunks<R> {
    /// Reads until the buffer holds `BUFFER_CHUNKS` maximum chunks or the
    /// reader ends, then cuts every chunk whose boundary is already certain:
    /// one followed by at least a maximum chunk's worth of data (FastCDC
    /// never looks further), or any at the end.
    fn refill(&mut self) -> std::io::Result<()> {
        let max = self.params.max as usize;
        let want = (BUFFER_CHUNKS * max).saturating_sub(self.buffer.len());
        let read = self.reader.by_ref().take(want as u64).read_to_end(&mut self.buffer)?;
        self.eof = read < want;
        let ChunkParams { min, avg, max: max32 } = self.params;
        let mut cut_to = 0;
        for chunk in FastCDC::new(&self.buffer, min, avg, max32) {
            if !self.eof && chunk.offset + max > self.buffer.len() {
                break;
            }
            self.ready.push_back(self.buffer[chunk.offset..chunk.offset + chunk.length].to_vec());
            cut_to = chunk.offset + chunk.length;
        }
        self.buffer.drain(..cut_to);
        Ok(())
    }
}

impl<R: Read> Iterator for Chunks<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.ready.is_empty() && !(self.eof && self.buffer.is_empty()) {
            if let Err(e) = self.refill() {
                self.eof = true;
                self.buffer.clear();
                return Some(Err(e));
            }
        }
        self.ready.pop_front().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SMALL: ChunkParams = ChunkParams { min: 64, avg: 256, max: 1024 };

    fn cut(data: &[u8]) -> Vec<Vec<u8>> {
        chunks(data, SMALL).collect::<Result<_, _>>().unwrap()
    }

    /// Hands out at most a few bytes per read, as pipes and sockets may.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    proptest! {
        /// Stores already hold chunks cut by `StreamCDC`: the boundaries
        /// must never move, whatever the reads return.
        #[test]
        fn same_boundaries_as_streamcdc(data in prop::collection::vec(any::<u8>(), 0..30_000),
                                        step in 1usize..5_000) {
            let ours: Vec<Vec<u8>> = chunks(Trickle(&data, step), SMALL).collect::<Result<_, _>>().unwrap();
            let theirs: Vec<Vec<u8>> = fastcdc::v2020::StreamCDC::new(&data[..], SMALL.min, SMALL.avg, SMALL.max)
                .map(|c| c.unwrap().data)
                .collect();
            prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn same_content_same_chunks(data in prop::collection::vec(any::<u8>(), 0..20_000)) {
            let a = cut(&data);
            prop_assert_eq!(&a, &cut(&data));
            prop_assert_eq!(a.concat(), data);
            for c in &a {
                prop_assert!(c.len() <= SMALL.max as usize);
            }
        }

        #[test]
        fn boundaries_resync_after_insertion(data in prop::collection::vec(any::<u8>(), 8_000..20_000),
                                             at in any::<prop::sample::Index>(),
                                             insert in prop::collection::vec(any::<u8>(), 1..50)) {
            let pos = at.index(data.len() / 2);
            let mut changed = data.clone();
            changed.splice(pos..pos, insert.iter().copied());
            let before = cut(&data);
            let after = cut(&changed);
            prop_assert_eq!(after.concat(), changed);
            // Every chunk lying entirely past the insertion by more than a few
            // maximum chunk lengths is shared by both versions.
            let shared: std::collections::HashSet<_> = before.iter().collect();
            let mut offset = 0;
            for c in &after {
                if offset > pos + insert.len() + 4 * SMALL.max as usize {
                    prop_assert!(shared.contains(c), "chunk at {} did not resync", offset);
                }
                offset += c.len();
            }
        }
    }
}

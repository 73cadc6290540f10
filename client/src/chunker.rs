//! Content-defined chunking (FastCDC, a rolling gear hash).
//!
//! Chunk boundaries depend on content, not offsets, so inserting bytes into a
//! file changes only the chunks near the insertion; the rest keep their ids and
//! are not uploaded again. This is Coffer's form of Box Backup's rsync-style
//! diff, done in one pass whatever the file's size.

use std::io::Read;

use fastcdc::v2020::StreamCDC;

/// Chunk size bounds in bytes.
#[derive(Debug, Clone, Copy)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

/// About 1 MiB on average, 256 KiB minimum, 4 MiB maximum.
pub const DEFAULT_PARAMS: ChunkParams = ChunkParams { min: 256 << 10, avg: 1 << 20, max: 4 << 20 };

/// Splits everything `reader` yields into content-defined chunks.
pub fn chunks<R: Read>(reader: R, params: ChunkParams) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
    StreamCDC::new(reader, params.min, params.avg, params.max).map(|r| {
        r.map(|c| c.data).map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => io,
            other => std::io::Error::other(other.to_string()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SMALL: ChunkParams = ChunkParams { min: 64, avg: 256, max: 1024 };

    fn cut(data: &[u8]) -> Vec<Vec<u8>> {
        chunks(data, SMALL).collect::<Result<_, _>>().unwrap()
    }

    proptest! {
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

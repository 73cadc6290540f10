//! zstd for chunks and tree objects: one context per thread, and
//! decompression bounded before it allocates.
//!
//! Making a context per object cost as much as a tenth of the compressing
//! itself on trees of small files, and as much again to decompress the
//! cached trees a backup compares against.

use std::cell::RefCell;

use zstd::bulk::{Compressor, Decompressor};

thread_local! {
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// `plain` compressed at `level`; `None` only if zstd fails to start.
pub fn compress(plain: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = Compressor::new(level).ok();
        }
        let compressor = slot.as_mut()?;
        compressor.set_compression_level(level).ok()?;
        compressor.compress(plain).ok()
    })
}

/// What `packed` decompresses to, refused past `limit` bytes. Every frame
/// Coffer writes states its size, which bounds the one allocation; one
/// that does not is read as a stream, up to the limit.
pub fn decompress(packed: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let size = match zstd::zstd_safe::get_frame_content_size(packed) {
        Ok(Some(size)) if size <= limit as u64 => size as usize,
        Ok(Some(size)) => return Err(format!("unpacks to {size} bytes, past {limit}")),
        Ok(None) => return decompress_stream(packed, limit),
        Err(_) => return Err("not zstd data".into()),
    };
    DECOMPRESSOR.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = Decompressor::new().ok();
        }
        let decompressor = slot.as_mut().ok_or("zstd could not start")?;
        decompressor.decompress(packed, size).map_err(|e| format!("does not decompress: {e}"))
    })
}

fn decompress_stream(packed: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut raw = Vec::new();
    zstd::stream::Decoder::new(packed)
        .and_then(|d| d.take(limit as u64 + 1).read_to_end(&mut raw))
        .map_err(|e| format!("does not decompress: {e}"))?;
    match raw.len() > limit {
        true => Err(format!("unpacks past {limit} bytes")),
        false => Ok(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_any_level_and_refuses_what_unpacks_too_far() {
        let plain: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 1000).to_le_bytes()).collect();
        for level in [1, 3, 1] {
            let packed = compress(&plain, level).unwrap();
            assert!(packed.len() < plain.len() / 4);
            assert_eq!(decompress(&packed, plain.len()).unwrap(), plain);
            let err = decompress(&packed, plain.len() - 1).unwrap_err();
            assert!(err.contains("past"), "{err}");
        }
        assert!(decompress(b"not zstd", 100).is_err());
        let streamed = zstd::stream::encode_all(plain.as_slice(), 1).unwrap();
        assert_eq!(
            decompress(&streamed, plain.len()).unwrap(),
            plain,
            "a frame that does not state its size"
        );
        assert!(decompress(&streamed, plain.len() - 1).unwrap_err().contains("past"));
        // Two frames, the first stating only its own size: the second
        // does not fit what the first stated, and is refused.
        let two = [compress(b"abc", 1).unwrap(), compress(&plain, 1).unwrap()].concat();
        assert!(decompress(&two, usize::MAX).is_err());
    }
}

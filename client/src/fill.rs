//! Filling a restored file from its chunks as they stream in: data is
//! written, chunks of zeros are seeked over (so holes stay holes), and the
//! hole chunk that `sparse` stores holes as is never fetched at all.
//! `restore` fills one large file from its own stream, or a directory's
//! small files one after another from one stream.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use coffer_proto::ObjectId;

use crate::error::{Error, Result};
use crate::sparse;
use crate::tree::Entry;

/// The chunks of `e` to fetch: all but the hole chunk.
pub fn wanted<'a>(e: &'a Entry, hole_piece: &'a ObjectId) -> impl Iterator<Item = &'a ObjectId> + 'a {
    e.content.iter().filter(move |id| *id != hole_piece)
}

/// One file being filled.
pub struct Fill<'e> {
    path: PathBuf,
    file: File,
    content: std::iter::Peekable<std::slice::Iter<'e, ObjectId>>,
    hole_piece: ObjectId,
    /// Where the next chunk goes.
    end: u64,
    /// Chunks still to be fetched for it.
    pub left: usize,
}

impl<'e> Fill<'e> {
    /// Creates `path` (it must not exist) for `e`.
    pub fn create(e: &'e Entry, path: &Path, hole_piece: ObjectId) -> Result<Fill<'e>> {
        let file = File::create_new(path).map_err(Error::io(path))?;
        let left = wanted(e, &hole_piece).count();
        Ok(Fill {
            path: path.to_path_buf(),
            file,
            content: e.content.iter().peekable(),
            hole_piece,
            end: 0,
            left,
        })
    }

    /// Takes the file's next fetched chunk.
    pub fn take(&mut self, data: &[u8]) -> Result<()> {
        self.skip_holes();
        self.content.next();
        if !sparse::is_zero(data) {
            self.file.seek(SeekFrom::Start(self.end)).map_err(Error::io(&self.path))?;
            self.file.write_all(data).map_err(Error::io(&self.path))?;
        }
        self.end += data.len() as u64;
        self.left -= 1;
        Ok(())
    }

    fn skip_holes(&mut self) {
        let hole = self.hole_piece;
        while self.content.next_if(|id| **id == hole).is_some() {
            self.end += sparse::HOLE_PIECE as u64;
        }
    }

    /// Ends the file at its length (trailing holes included).
    pub fn finish(mut self) -> Result<()> {
        self.skip_holes();
        self.file.set_len(self.end).map_err(Error::io(&self.path))
    }
}

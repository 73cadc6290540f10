//! Writing a RAID file.
//!
//! Stripes are written to `NAME.rfw` in each directory, created exclusively,
//! so a second writer of the same name fails at once (in this process or
//! another). [`RaidWriter::commit`] writes the headers (with the true length),
//! syncs every stripe, renames each into place and syncs each directory; until
//! then readers see the old version, or nothing. A writer dropped without
//! committing removes its temporaries; after a crash, opening the disc set
//! settles them ([`settle_temporaries`]).

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::discset::{DiscSet, TEMP_SUFFIX, check_name};
use crate::error::{RaidError, Result};
use crate::layout::{Header, Layout, xor_into};
use crate::reader::open_stripe_file;

/// Whether creating a name that exists replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    No,
    Yes,
}

pub struct RaidWriter {
    set: DiscSet,
    name: String,
    files: Vec<BufWriter<File>>,
    /// Bytes not yet written: less than one unit (a block per data stripe).
    pending: Vec<u8>,
    length: u64,
    write_id: u64,
    committed: bool,
}

/// Splits one unit of file data (up to one block per data stripe) into the
/// block each stripe stores; `None` where a stripe gets no block.
pub(crate) fn unit_blocks(stripes: usize, block_size: usize, unit: &[u8]) -> Vec<Option<Vec<u8>>> {
    if stripes == 1 {
        return vec![Some(unit.to_vec())];
    }
    let (first, second) = unit.split_at(unit.len().min(block_size));
    let mut parity = first.to_vec();
    xor_into(&mut parity, second);
    let second = (!second.is_empty()).then(|| second.to_vec());
    vec![Some(first.to_vec()), second, Some(parity)]
}

/// Appends a block and its CRC.
pub(crate) fn write_block(out: &mut impl Write, block: &[u8]) -> std::io::Result<()> {
    out.write_all(block)?;
    out.write_all(&crc32fast::hash(block).to_le_bytes())
}

impl RaidWriter {
    pub(crate) fn new(set: DiscSet, name: &str, overwrite: Overwrite) -> Result<RaidWriter> {
        check_name(name)?;
        if overwrite == Overwrite::No && set.exists(name) {
            return Err(RaidError::Exists(name.to_string()));
        }
        if !set.inner.writing.lock().unwrap().insert(name.to_string()) {
            return Err(RaidError::Busy(name.to_string()));
        }
        let mut writer = RaidWriter {
            set,
            name: name.to_string(),
            files: Vec::new(),
            pending: Vec::new(),
            length: 0,
            write_id: rand::random(),
            committed: false,
        };
        for s in 0..writer.set.stripes() {
            let path = writer.set.temp_path(name, s);
            writer.set.ensure_dir(s)?;
            if let Some(parent) = path.parent() {
                // A new account's directory must survive a crash with its first pack.
                crate::durable::create_dir_all(parent)?;
            }
            let file = File::options().write(true).create_new(true).open(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    RaidError::Busy(name.to_string())
                } else {
                    RaidError::Io { path: path.clone(), source: e }
                }
            })?;
            let mut file = BufWriter::with_capacity(256 << 10, file);
            file.write_all(&[0; crate::layout::HEADER_LEN as usize]).map_err(RaidError::io(&path))?;
            writer.files.push(file);
        }
        Ok(writer)
    }

    fn unit(&self) -> usize {
        self.set.inner.block_size as usize * if self.set.stripes() == 1 { 1 } else { 2 }
    }

    fn write_unit(&mut self, unit: &[u8]) -> Result<()> {
        let blocks = unit_blocks(self.set.stripes(), self.set.inner.block_size as usize, unit);
        for (s, block) in blocks.into_iter().enumerate() {
            if let Some(block) = block {
                write_block(&mut self.files[s], &block)
                    .map_err(RaidError::io(self.set.temp_path(&self.name, s)))?;
            }
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.length + self.pending.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the file visible under its name, durably.
    pub fn commit(mut self) -> Result<()> {
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            self.write_unit(&rest)?;
            self.length += rest.len() as u64;
        }
        let stripes = self.set.stripes();
        for s in 0..stripes {
            let path = self.set.temp_path(&self.name, s);
            let header = Header {
                stripe: s as u8,
                stripes: stripes as u8,
                block_size: self.set.inner.block_size,
                length: self.length,
                write_id: self.write_id,
            };
            let io = |f: &mut File| -> std::io::Result<()> {
                f.seek(SeekFrom::Start(0))?;
                f.write_all(&header.encode())?;
                f.sync_all()
            };
            self.files[s].flush().and_then(|_| io(self.files[s].get_mut())).map_err(RaidError::io(&path))?;
        }
        for s in 0..stripes {
            let (tmp, path) = (self.set.temp_path(&self.name, s), self.set.stripe_path(&self.name, s));
            fs::rename(&tmp, &path).map_err(RaidError::io(&path))?;
            crate::durable::sync_parent(&path)?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Write for RaidWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(data);
        let unit = self.unit();
        if self.pending.len() >= unit {
            let full = self.pending.len() / unit * unit;
            let data = std::mem::take(&mut self.pending);
            for chunk in data[..full].chunks(unit) {
                self.write_unit(chunk).map_err(std::io::Error::other)?;
            }
            self.length += full as u64;
            self.pending = data[full..].to_vec();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RaidWriter {
    fn drop(&mut self) {
        if !self.committed {
            // Only the temporaries this writer created: another writer's are not ours.
            for s in 0..self.files.len() {
                let _ = fs::remove_file(self.set.temp_path(&self.name, s));
            }
        }
        self.set.inner.writing.lock().unwrap().remove(&self.name);
    }
}

/// Settles what a crash left of writes (`NAME.rfw` in each directory).
///
/// A commit syncs every stripe before its first rename, so once a stripe of
/// a version is in place, the temporaries of that version are whole: they
/// are renamed into place, finishing the commit. Left as they were, the file
/// would keep one stripe of its version and the others of an older one or
/// none, and could not be read. Any other temporary belongs to a write that
/// never committed (or a rebuild cut short) and is removed.
pub(crate) fn settle_temporaries(dirs: &[PathBuf]) -> Result<()> {
    for (s, dir) in dirs.iter().enumerate() {
        let mut temps = Vec::new();
        find_temporaries(dir, &mut temps)?;
        for temp in temps {
            let path = temp
                .with_file_name(temp.file_name().unwrap().to_string_lossy().trim_end_matches(TEMP_SUFFIX));
            let name = path.strip_prefix(dir).expect("found under its directory");
            if completes_a_commit(dirs, s, &temp, name) {
                warn!(path = %path.display(), "finishing the commit of a stripe that a crash interrupted");
                fs::rename(&temp, &path).map_err(RaidError::io(&path))?;
                crate::durable::sync_parent(&path)?;
            } else {
                warn!(path = %temp.display(), "removing a stripe of a write that never committed");
                fs::remove_file(&temp).map_err(RaidError::io(&temp))?;
            }
        }
    }
    Ok(())
}

/// Whether `temp` (stripe `s`) is whole and another stripe of its version
/// already stands under `name`.
fn completes_a_commit(dirs: &[PathBuf], s: usize, temp: &Path, name: &Path) -> bool {
    let Ok((file, header)) = open_stripe_file(temp, s, dirs.len()) else { return false };
    let Ok(layout) = Layout::new(header.block_size, header.length, dirs.len()) else { return false };
    let whole = file.metadata().is_ok_and(|m| m.len() == layout.stripe_size(s));
    let confirmed = dirs.iter().enumerate().any(|(k, dir)| {
        k != s
            && open_stripe_file(&dir.join(name), k, dirs.len())
                .is_ok_and(|(_, h)| h.write_id == header.write_id)
    });
    whole && confirmed
}

fn find_temporaries(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(RaidError::io(dir))? {
        let path = entry.map_err(RaidError::io(dir))?.path();
        if path.is_dir() {
            find_temporaries(&path, out)?;
        } else if path.to_string_lossy().ends_with(TEMP_SUFFIX) {
            out.push(path);
        }
    }
    Ok(())
}

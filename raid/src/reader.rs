//! Reading a RAID file at any offset.
//!
//! Opening reads every stripe's header and trusts the version (`write_id`)
//! that at least two stripes agree on (one, in a one-disc set); a stripe that
//! is missing, unreadable, damaged or of another version is left out. A block
//! whose stripe is out or fails its CRC is rebuilt from its partner block and
//! the parity block, logged with the stripe at fault, and counted. With two
//! stripes bad the read fails, naming the file and the block.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::warn;

use crate::discset::{DiscSet, check_name};
use crate::error::{RaidError, Result};
use crate::layout::{CRC_LEN, HEADER_LEN, Header, Layout, PARITY, xor_into};

pub struct RaidReader {
    set: DiscSet,
    name: String,
    layout: Layout,
    write_id: u64,
    /// Open stripes of the trusted version; `None` for a stripe left out.
    stripes: Vec<Option<File>>,
    /// Why each left-out stripe was left out.
    pub(crate) excluded: Vec<Option<String>>,
    warned: Vec<AtomicBool>,
}

impl RaidReader {
    pub(crate) fn open(set: DiscSet, name: &str) -> Result<RaidReader> {
        check_name(name)?;
        let n = set.stripes();
        let mut found: Vec<Result<(File, Header), String>> = Vec::new();
        for s in 0..n {
            found.push(open_stripe(&set, name, s));
        }
        if found.iter().all(|f| matches!(f, Err(e) if e == "missing")) {
            return Err(RaidError::NotFound(name.to_string()));
        }
        let ids: Vec<u64> = found.iter().filter_map(|f| f.as_ref().ok()).map(|(_, h)| h.write_id).collect();
        let needed = if n == 1 { 1 } else { 2 };
        let Some(write_id) = ids.iter().copied().find(|id| ids.iter().filter(|x| *x == id).count() >= needed)
        else {
            let why: Vec<String> =
                found.iter().enumerate().map(|(s, f)| format!("stripe {s}: {}", describe(f))).collect();
            return Err(RaidError::Unrecoverable { name: name.to_string(), problem: why.join("; ") });
        };
        let mut stripes = Vec::new();
        let mut excluded = Vec::new();
        let mut header = None;
        for f in found {
            match f {
                Ok((file, h)) if h.write_id == write_id => {
                    header = Some(h);
                    stripes.push(Some(file));
                    excluded.push(None);
                }
                Ok(_) => {
                    stripes.push(None);
                    excluded.push(Some("holds another version (an interrupted commit)".into()));
                }
                Err(e) => {
                    stripes.push(None);
                    excluded.push(Some(e));
                }
            }
        }
        let h = header.expect("a trusted stripe");
        let layout = Layout::new(h.block_size, h.length, n)?;
        let reader = RaidReader {
            set,
            name: name.to_string(),
            layout,
            write_id,
            stripes,
            excluded,
            warned: (0..n).map(|_| AtomicBool::new(false)).collect(),
        };
        for (s, why) in reader.excluded.iter().enumerate() {
            if let Some(why) = why {
                reader.warn_once(s, why);
            }
        }
        Ok(reader)
    }

    pub fn len(&self) -> u64 {
        self.layout.length
    }

    pub fn is_empty(&self) -> bool {
        self.layout.length == 0
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    pub(crate) fn write_id(&self) -> u64 {
        self.write_id
    }

    fn warn_once(&self, stripe: usize, problem: &str) {
        if !self.warned[stripe].swap(true, Ordering::Relaxed) {
            let path = self.set.stripe_path(&self.name, stripe);
            warn!(file = %self.name, stripe, path = %path.display(), problem, "bad RAID stripe; reading from the others");
        }
    }

    /// Reads `len` bytes at `offset`.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.read_with(offset, len, false)
    }

    fn read_with(&self, offset: u64, len: usize, salvage: bool) -> Result<Vec<u8>> {
        let end = offset.checked_add(len as u64).filter(|e| *e <= self.layout.length);
        let Some(end) = end else {
            return Err(RaidError::OutOfRange {
                name: self.name.clone(),
                offset,
                len,
                size: self.layout.length,
            });
        };
        let mut out = Vec::with_capacity(len);
        let bs = self.layout.block_size;
        let mut at = offset;
        while at < end {
            let i = at / bs;
            let block = match self.block(i) {
                Err(RaidError::Unrecoverable { .. }) if salvage => self.raw_block(i)?,
                other => other?,
            };
            let from = (at - i * bs) as usize;
            let to = ((end - i * bs) as usize).min(block.len());
            out.extend_from_slice(&block[from..to]);
            at = i * bs + to as u64;
        }
        Ok(out)
    }

    pub fn read_all(&self) -> Result<Vec<u8>> {
        self.read_at(0, self.layout.length as usize)
    }

    /// Like [`Self::read_at`], but where a block can be neither verified nor
    /// rebuilt, returns its stored bytes unchecked. Only for salvage, by
    /// callers that verify what they read by other means (object CRCs).
    pub fn read_at_salvaging(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.read_with(offset, len, true)
    }

    /// File block `i`, rebuilt from parity if its own stripe fails.
    pub fn block(&self, i: u64) -> Result<Vec<u8>> {
        let (s, k) = self.layout.place(i);
        let problem = match self.stripe_block(s, k) {
            Ok(block) => return Ok(block),
            Err(problem) => problem,
        };
        self.warn_once(s, &problem);
        if self.layout.stripes == 1 {
            return Err(self.unrecoverable(i, format!("stripe 0: {problem}")));
        }
        let partner = 1 - s;
        let mut data = self
            .stripe_block(PARITY, k)
            .map_err(|p| self.unrecoverable(i, format!("stripe {s}: {problem}; parity stripe: {p}")))?;
        if self.layout.stripe_blocks(partner) > k {
            let other = self.stripe_block(partner, k).map_err(|p| {
                self.unrecoverable(i, format!("stripe {s}: {problem}; stripe {partner}: {p}"))
            })?;
            xor_into(&mut data, &other);
        }
        data.truncate(self.layout.block_len(i) as usize);
        self.set.count_degraded();
        Ok(data)
    }

    /// Block `i` as stored, CRC unchecked.
    fn raw_block(&self, i: u64) -> Result<Vec<u8>> {
        let (s, k) = self.layout.place(i);
        let file =
            self.stripes[s].as_ref().ok_or_else(|| self.unrecoverable(i, format!("stripe {s} is gone")))?;
        let mut buf = vec![0; self.layout.stripe_block_len(s, k) as usize];
        file.read_exact_at(&mut buf, self.layout.offset(k))
            .map_err(|e| self.unrecoverable(i, e.to_string()))?;
        Ok(buf)
    }

    fn unrecoverable(&self, block: u64, problem: String) -> RaidError {
        RaidError::Unrecoverable { name: self.name.clone(), problem: format!("block {block}: {problem}") }
    }

    /// Block `k` of stripe `s`, CRC-checked; the error says what is wrong.
    pub(crate) fn stripe_block(&self, s: usize, k: u64) -> Result<Vec<u8>, String> {
        let file = self.stripes[s].as_ref().ok_or_else(|| self.excluded[s].clone().unwrap_or_default())?;
        let len = self.layout.stripe_block_len(s, k) as usize;
        let mut buf = vec![0; len + CRC_LEN as usize];
        file.read_exact_at(&mut buf, self.layout.offset(k)).map_err(|e| read_problem(k, e))?;
        let crc = u32::from_le_bytes(buf[len..].try_into().unwrap());
        buf.truncate(len);
        if crc32fast::hash(&buf) != crc {
            return Err(format!("block {k} fails its CRC"));
        }
        Ok(buf)
    }
}

fn read_problem(k: u64, e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => format!("block {k}: stripe truncated (the file ends before it)"),
        _ => format!("block {k}: {e}"),
    }
}

fn open_stripe(set: &DiscSet, name: &str, s: usize) -> Result<(File, Header), String> {
    open_stripe_file(&set.stripe_path(name, s), s, set.stripes())
}

/// Opens the stripe file at `path`, which must say it is stripe `s` of `stripes`.
pub(crate) fn open_stripe_file(path: &Path, s: usize, stripes: usize) -> Result<(File, Header), String> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("missing".into()),
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    let mut h = [0; HEADER_LEN as usize];
    file.read_exact_at(&mut h, 0).map_err(|e| format!("header unreadable: {e}"))?;
    let header = Header::decode(&h)?;
    if header.stripe as usize != s || header.stripes as usize != stripes {
        return Err(format!("header says stripe {} of {}", header.stripe, header.stripes));
    }
    Ok((file, header))
}

fn describe(f: &Result<(File, Header), String>) -> String {
    match f {
        Ok(_) => "present but of a version no other stripe confirms".into(),
        Err(e) => e.clone(),
    }
}

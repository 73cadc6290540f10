//! Checking a disc set, and rebuilding damaged stripes from the others.
//!
//! A check opens every file, reads every block of every stripe and verifies
//! its CRC and each stripe file's size. A rebuild (after a disc is replaced,
//! or bit rot) reads each damaged file through the reader, which reconstructs
//! from parity, and writes each bad stripe again, with the version id of the
//! surviving ones, to a temporary name that is renamed into place: stopping
//! it at any point loses nothing, and running it again finishes the job.

use std::fs::File;
use std::io::{BufWriter, Write};

use crate::discset::DiscSet;
use crate::durable::sync_parent;
use crate::error::{RaidError, Result};
use crate::layout::Header;
use crate::reader::RaidReader;
use crate::writer::{unit_blocks, write_block};

/// One damaged stripe (or, with `stripe` None, a file beyond repair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeDamage {
    pub name: String,
    pub stripe: Option<usize>,
    pub problem: String,
}

/// What a rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    pub files_checked: u64,
    pub stripes_rebuilt: u64,
    /// Files with two or more stripes bad, which no rebuild can restore.
    pub unrecoverable: Vec<String>,
}

impl DiscSet {
    /// Every damaged stripe of every file.
    pub fn check(&self) -> Result<Vec<StripeDamage>> {
        let mut out = Vec::new();
        for name in self.names()? {
            out.extend(self.check_file(&name)?);
        }
        Ok(out)
    }

    pub fn check_file(&self, name: &str) -> Result<Vec<StripeDamage>> {
        let reader = match self.open_file(name) {
            Ok(r) => r,
            Err(RaidError::Unrecoverable { problem, .. }) => {
                return Ok(vec![StripeDamage { name: name.into(), stripe: None, problem }]);
            }
            Err(e) => return Err(e),
        };
        let damage = |s: usize, problem: String| StripeDamage { name: name.into(), stripe: Some(s), problem };
        let layout = reader.layout();
        let mut out = Vec::new();
        for s in 0..self.stripes() {
            if let Some(why) = &reader.excluded[s] {
                out.push(damage(s, why.clone()));
                continue;
            }
            let size = std::fs::metadata(self.stripe_path(name, s)).map(|m| m.len()).unwrap_or(0);
            if size != layout.stripe_size(s) {
                out.push(damage(s, format!("is {size} bytes, expected {}", layout.stripe_size(s))));
                continue;
            }
            if let Some(problem) = (0..layout.stripe_blocks(s)).find_map(|k| reader.stripe_block(s, k).err())
            {
                out.push(damage(s, problem));
            }
        }
        Ok(out)
    }

    /// Regenerates every damaged stripe that can be regenerated.
    pub fn rebuild(&self) -> Result<RebuildReport> {
        // A replaced disc is an empty directory (or none): label it first.
        for s in 0..self.stripes() {
            self.ensure_dir(s)?;
        }
        crate::discset::check_labels(self.dirs())?;
        let mut report = RebuildReport::default();
        for name in self.names()? {
            report.files_checked += 1;
            let damage = self.check_file(&name)?;
            if damage.iter().any(|d| d.stripe.is_none()) || (self.stripes() == 1 && !damage.is_empty()) {
                report.unrecoverable.push(name);
                continue;
            }
            if damage.is_empty() {
                continue;
            }
            let reader = self.open_file(&name)?;
            let data = match reader.read_all() {
                Ok(d) => d,
                Err(RaidError::Unrecoverable { .. }) => {
                    report.unrecoverable.push(name);
                    continue;
                }
                Err(e) => return Err(e),
            };
            for d in &damage {
                self.rewrite_stripe(&reader, d.stripe.expect("checked above"), &data)?;
                report.stripes_rebuilt += 1;
            }
        }
        Ok(report)
    }

    fn rewrite_stripe(&self, reader: &RaidReader, s: usize, data: &[u8]) -> Result<()> {
        let name = reader.name();
        let layout = reader.layout();
        let (tmp, path) = (self.temp_path(name, s), self.stripe_path(name, s));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(RaidError::io(parent))?;
        }
        let header = Header {
            stripe: s as u8,
            stripes: self.stripes() as u8,
            block_size: layout.block_size as u32,
            length: layout.length,
            write_id: reader.write_id(),
        };
        let write = || -> std::io::Result<()> {
            let mut out = BufWriter::with_capacity(256 << 10, File::create(&tmp)?);
            out.write_all(&header.encode())?;
            let unit = layout.block_size as usize * if self.stripes() == 1 { 1 } else { 2 };
            for chunk in data.chunks(unit) {
                if let Some(block) = &unit_blocks(self.stripes(), layout.block_size as usize, chunk)[s] {
                    write_block(&mut out, block)?;
                }
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()
        };
        write().map_err(RaidError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(RaidError::io(&path))?;
        sync_parent(&path)
    }
}

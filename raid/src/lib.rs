//! RAID files (Box Backup's RaidFile): software RAID in files, so a store
//! node on cheap discs survives losing one of them.
//!
//! A disc set is one directory (plain files with a CRC per block) or three
//! (each file kept as two data stripes of alternate blocks and a parity
//! stripe, their XOR, one stripe per directory). Any single stripe may be
//! missing, unreadable or damaged: reads complete from the other two.
//!
//! - [`layout`]: the stripe file format: header, blocks, CRCs, and where block
//!   `i` of a file lives.
//! - [`discset`]: a disc set: its directories, names, crash recovery and
//!   degraded-read counters.
//! - `writer`: writing a RAID file to temporary names, visible only once
//!   committed (fsync, rename, fsync of the directories).
//! - `reader`: random-access reads, reconstructing bad blocks from parity.
//! - [`repair`]: checking every stripe, and rebuilding bad ones from the rest.
//! - [`durable`]: creating directories and small files so that they survive
//!   a power cut (sync of the file and of its directory).

pub mod discset;
pub mod durable;
mod error;
pub mod layout;
mod reader;
pub mod repair;
mod writer;

pub use discset::DiscSet;
pub use error::RaidError;
pub use reader::RaidReader;
pub use repair::{RebuildReport, StripeDamage};
pub use writer::{Overwrite, RaidWriter};

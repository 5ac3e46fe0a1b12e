//! The SEsparse constant header (sector 0) and volatile header.
//!
//! VMware has not published the format. The layout below is what ESXi's
//! hostd.log prints when it creates an SEsparse file and what QEMU's
//! read-only support (2019, black-box research) documents; every field is
//! a little-endian u64, offsets and sizes in 512-byte sectors:
//!
//! | offset | field |
//! |---|---|
//! | 0 | constMagic 0xcafebabe |
//! | 8 | version: major in the high half, minor in the low (2.1) |
//! | 16 | capacity (sectors) |
//! | 24 | grainSize (sectors, 8) |
//! | 32 | grainTableSize (sectors, 64: 4096 entries) |
//! | 40 | flags (0) |
//! | 48..80 | reserved (0) |
//! | 80.. | (offset, size) of: volatile header, journal header, journal, grain directory, grain tables, free bitmap, backmap, grains |
//! | 208..512 | padding (0) |
//!
//! The volatile header: volatileMagic 0xcafecafe, freeGTNumber,
//! nextTxnSeqNumber, replayJournal, padding to 512 bytes.

use crate::block::ImageFile;
use crate::disk::MAX_VIRTUAL_SIZE;
use crate::le::u64le;
use crate::Result;

pub const CONST_MAGIC: u64 = 0xcafe_babe;
const VOLATILE_MAGIC: u64 = 0xcafe_cafe;
/// 2.1, the only version ESXi 6.5 to 8 write.
const VERSION_2_1: u64 = 0x0000_0002_0000_0001;
/// The only grain size (4 KiB) and grain table size (64 sectors, 4096
/// entries) ESXi writes and anyone has seen; others are refused rather
/// than guessed at.
pub const GRAIN_SECTORS: u64 = 8;
pub const GT_SECTORS: u64 = 64;

const PAD_START: usize = 208;

/// A region of the file, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub offset: u64,
    pub len: u64,
}

impl Region {
    fn end(self) -> u64 {
        self.offset + self.len
    }
}

#[derive(Debug)]
pub struct Header {
    pub capacity_sectors: u64,
    pub grain_directory: Region,
    pub grain_tables: Region,
    pub grains: Region,
}

const REGION_NAMES: [&str; 8] =
    ["volatile header", "journal header", "journal", "grain directory", "grain tables", "free bitmap", "backmap", "grains"];

pub fn parse(file: &ImageFile) -> Result<Header> {
    let name = "SEsparse constant header";
    let b = file.read_vec(name, 0, 512)?;
    let f = |at: usize| u64le(&b, at);
    if f(0) != CONST_MAGIC {
        return Err(file.corrupt(name, 0, format!("bad magic {:#x} (expected 0xcafebabe)", f(0))));
    }
    let version = f(8);
    if version != VERSION_2_1 {
        return Err(file.unsupported(
            name,
            0,
            format!("version {}.{} (only 2.1 is known)", version >> 32, version & 0xffff_ffff),
        ));
    }
    let capacity_sectors = f(16);
    if capacity_sectors == 0 {
        return Err(file.corrupt(name, 0, "capacity is 0"));
    }
    if capacity_sectors > MAX_VIRTUAL_SIZE / 512 {
        return Err(file.unsupported(name, 0, format!("capacity of {capacity_sectors} sectors exceeds the 1 PiB limit")));
    }
    if f(24) != GRAIN_SECTORS {
        return Err(file.unsupported(name, 0, format!("grain size of {} sectors (only 8 is known)", f(24))));
    }
    if f(32) != GT_SECTORS {
        return Err(file.unsupported(name, 0, format!("grain table size of {} sectors (only 64 is known)", f(32))));
    }
    if f(40) != 0 {
        return Err(file.unsupported(name, 0, format!("flags {:#x}", f(40))));
    }
    // Reserved fields and padding in use mean a newer format than this
    // reader knows: refuse rather than ignore what they might change.
    if (48..80).step_by(8).any(|at| f(at) != 0) || b.get(PAD_START..).is_some_and(|p| p.iter().any(|&x| x != 0)) {
        return Err(file.unsupported(name, 0, "reserved fields or padding are not zero"));
    }
    let mut regions = [Region { offset: 0, len: 0 }; 8];
    for (i, region) in regions.iter_mut().enumerate() {
        let at = 80 + i * 16;
        let (off, len) = (f(at), f(at + 8));
        let bytes = |sectors: u64| sectors.checked_mul(512);
        match (bytes(off), bytes(len)) {
            (Some(o), Some(l)) if o.checked_add(l).is_some() => *region = Region { offset: o, len: l },
            _ => {
                return Err(file.corrupt(name, 0, format!("{} extent <{off} : {len}> overflows", REGION_NAMES[i])));
            }
        }
    }
    // Every region lies after the constant header and none overlaps
    // another: ESXi lays them out one after the other, and a header that
    // points two structures at the same bytes is corrupt or hostile.
    for (i, a) in regions.iter().enumerate() {
        if a.len == 0 {
            continue;
        }
        if a.offset < 512 {
            return Err(file.corrupt(name, 0, format!("{} overlaps the constant header", REGION_NAMES[i])));
        }
        for (j, c) in regions.iter().enumerate().skip(i + 1) {
            if c.len != 0 && a.offset < c.end() && c.offset < a.end() {
                return Err(file.corrupt(name, 0, format!("{} overlaps {}", REGION_NAMES[i], REGION_NAMES[j])));
            }
        }
    }
    let [volatile, _journal_header, _journal, grain_directory, grain_tables, _free_bitmap, _backmap, grains] = regions;
    if volatile.len < 512 {
        return Err(file.corrupt(name, 0, "no volatile header"));
    }
    check_volatile(file, volatile.offset)?;
    Ok(Header { capacity_sectors, grain_directory, grain_tables, grains })
}

/// The journal: SEsparse keeps two maps that must agree (grain directory
/// and tables, and the backmap/free bitmap used for space reclamation) and
/// logs metadata updates in the journal before applying them. ESXi sets
/// replayJournal while updates may be logged but not yet applied, and
/// replays the journal when it next opens the file. With the flag set, the
/// grain tables on disk may lack or misstate grains the journal would
/// write: reading them could return the parent's (old) data where the
/// guest wrote new data. So such a file is refused; with the flag clear,
/// the journal holds nothing the tables lack and is not read.
fn check_volatile(file: &ImageFile, at: u64) -> Result<()> {
    let name = "SEsparse volatile header";
    let b = file.read_vec(name, at, 512)?;
    let magic = u64le(&b, 0);
    if magic != VOLATILE_MAGIC {
        return Err(file.corrupt(name, at, format!("bad magic {magic:#x} (expected 0xcafecafe)")));
    }
    if u64le(&b, 24) != 0 {
        return Err(file.unsupported(
            name,
            at,
            "replayJournal is set: the disk was not closed cleanly and its journal must be replayed by ESXi before the grain tables can be trusted",
        ));
    }
    if b.get(32..).is_some_and(|p| p.iter().any(|&x| x != 0)) {
        return Err(file.unsupported(name, at, "padding is not zero (unknown fields in use)"));
    }
    Ok(())
}

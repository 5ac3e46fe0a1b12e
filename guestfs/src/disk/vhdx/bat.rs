//! The Block Allocation Table (MS-VHDX 2.5): one 64-bit entry per payload
//! block, with one sector bitmap entry after every `chunk_ratio` payload
//! entries. Loaded lazily in pages; sector bitmap blocks (differencing
//! disks) likewise.

use super::region::Region;
use crate::block::ImageFile;
use crate::cache::BoundedCache;
use crate::le::u64le;
use crate::Result;

const MIB: u64 = 1 << 20;
/// Entries per cached BAT page (64 KiB of table).
const PAGE_ENTRIES: u64 = 8192;
/// Sectors described by one sector bitmap block (1 MiB of bits).
const SECTORS_PER_BITMAP: u64 = 1 << 23;

pub const NOT_PRESENT: u64 = 0;
pub const UNDEFINED: u64 = 1;
pub const ZERO: u64 = 2;
pub const UNMAPPED: u64 = 3;
pub const FULLY_PRESENT: u64 = 6;
pub const PARTIALLY_PRESENT: u64 = 7;
const SB_PRESENT: u64 = 6;

/// The state of one payload block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    NotPresent,
    Undefined,
    Zero,
    Unmapped,
    /// Stored at this file offset.
    Full(u64),
    /// Some sectors stored at this file offset, the sector bitmap says which.
    Partial(u64),
}

pub struct Bat {
    region: Region,
    block_size: u64,
    logical_sector_size: u64,
    chunk_ratio: u64,
    data_blocks: u64,
    differencing: bool,
    pages: BoundedCache<u64, Vec<u64>>,
    bitmaps: BoundedCache<u64, Vec<u8>>,
}

impl Bat {
    pub fn new(
        file: &ImageFile,
        region: Region,
        virtual_size: u64,
        block_size: u64,
        logical_sector_size: u64,
        differencing: bool,
    ) -> Result<Bat> {
        // Both are powers of two with block_size <= 2^28 and sector >= 2^9,
        // so the ratio is a whole number >= 16.
        let chunk_ratio = (SECTORS_PER_BITMAP * logical_sector_size) / block_size;
        let data_blocks = virtual_size.div_ceil(block_size);
        let needed = if differencing {
            data_blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
        } else if data_blocks == 0 {
            0
        } else {
            data_blocks + (data_blocks - 1) / chunk_ratio
        };
        if needed.saturating_mul(8) > region.length {
            return Err(file.corrupt(
                "BAT",
                region.offset,
                format!(
                    "{needed} entries are needed for {virtual_size} bytes in blocks of {block_size}, the BAT region holds {}",
                    region.length / 8
                ),
            ));
        }
        Ok(Bat {
            region,
            block_size,
            logical_sector_size,
            chunk_ratio,
            data_blocks,
            differencing,
            pages: BoundedCache::new(64),
            bitmaps: BoundedCache::new(4),
        })
    }

    pub fn chunk_ratio(&self) -> u64 {
        self.chunk_ratio
    }

    /// File offset of BAT entry `index`, for messages.
    pub fn entry_offset(&self, index: u64) -> u64 {
        self.region.offset + index * 8
    }

    fn entry(&self, file: &ImageFile, index: u64) -> Result<u64> {
        let page = index / PAGE_ENTRIES;
        let table = self.pages.get_or_load(page, || {
            let start = page * PAGE_ENTRIES * 8;
            let len = (self.region.length - start).min(PAGE_ENTRIES * 8);
            let raw = file.read_vec("BAT", self.region.offset + start, len)?;
            Ok::<_, crate::Error>(raw.chunks_exact(8).map(|c| u64le(c, 0)).collect())
        })?;
        table
            .get((index % PAGE_ENTRIES) as usize)
            .copied()
            .ok_or_else(|| file.corrupt(&format!("BAT entry {index}"), self.entry_offset(index), "outside the BAT region"))
    }

    /// BAT index of payload block `block`.
    pub fn payload_index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio
    }

    /// The state of payload block `block`, its data offset checked against
    /// the file size.
    pub fn block(&self, file: &ImageFile, block: u64, virtual_size: u64) -> Result<Block> {
        let index = self.payload_index(block);
        let raw = self.entry(file, index)?;
        let structure = || format!("BAT entry {index} (payload block {block})");
        let offset = (raw >> 20) * MIB;
        let state = raw & 7;
        let located = |offset: u64| -> Result<u64> {
            let len = self.block_size.min(virtual_size.saturating_sub(block * self.block_size));
            if offset < MIB || offset.checked_add(len).is_none_or(|end| end > file.size()) {
                return Err(file.corrupt(
                    &structure(),
                    self.entry_offset(index),
                    format!("block at file offset {offset} ({len} bytes) lies outside the file ({} bytes)", file.size()),
                ));
            }
            Ok(offset)
        };
        Ok(match state {
            NOT_PRESENT => Block::NotPresent,
            UNDEFINED => Block::Undefined,
            ZERO => Block::Zero,
            UNMAPPED => Block::Unmapped,
            FULLY_PRESENT => Block::Full(located(offset)?),
            PARTIALLY_PRESENT if self.differencing => Block::Partial(located(offset)?),
            PARTIALLY_PRESENT => {
                return Err(file.corrupt(&structure(), self.entry_offset(index), "partially present block in a disk without a parent"))
            }
            s => return Err(file.corrupt(&structure(), self.entry_offset(index), format!("reserved block state {s}"))),
        })
    }

    /// For a partially present block: whether the sector at virtual `offset`
    /// is present in this file, and for how many bytes (at most `max_len`,
    /// never past the block) the answer holds.
    pub fn sector_run(&self, file: &ImageFile, offset: u64, max_len: u64) -> Result<(bool, u64)> {
        let chunk_bytes = SECTORS_PER_BITMAP * self.logical_sector_size;
        let chunk = offset / chunk_bytes;
        let index = chunk * (self.chunk_ratio + 1) + self.chunk_ratio;
        let raw = self.entry(file, index)?;
        let structure = format!("BAT entry {index} (sector bitmap of chunk {chunk})");
        if raw & 7 != SB_PRESENT {
            return Err(file.corrupt(
                &structure,
                self.entry_offset(index),
                format!("state {} but a block of the chunk is partially present: no sector bitmap", raw & 7),
            ));
        }
        let at = (raw >> 20) * MIB;
        if at < MIB || at.checked_add(MIB).is_none_or(|end| end > file.size()) {
            return Err(file.corrupt(
                &structure,
                self.entry_offset(index),
                format!("sector bitmap at file offset {at} lies outside the file ({} bytes)", file.size()),
            ));
        }
        let bits = self.bitmaps.get_or_load(at, || file.read_vec("sector bitmap block", at, MIB))?;
        let lss = self.logical_sector_size;
        let bit = |sector: u64| -> bool {
            let i = sector % SECTORS_PER_BITMAP;
            bits.get((i / 8) as usize).is_some_and(|b| b & (1 << (i % 8)) != 0)
        };
        let block_end = (offset / self.block_size + 1) * self.block_size;
        let end = offset.saturating_add(max_len).min(block_end);
        let first = offset / lss;
        let present = bit(first);
        let mut sector = first + 1;
        while sector * lss < end && bit(sector) == present {
            sector += 1;
        }
        Ok((present, (sector * lss).min(end) - offset))
    }

    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }
}

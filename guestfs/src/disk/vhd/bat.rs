//! The block allocation table of dynamic and differencing disks: one
//! big-endian u32 per block, the sector offset of the block's sector
//! bitmap (the block's data follows the bitmap), or all ones when the
//! block is not allocated.

use super::dynamic_header::DynamicHeader;
use crate::block::ImageFile;
use crate::Result;

pub const UNALLOCATED: u32 = u32::MAX;
const SECTOR: u64 = 512;

/// Most entries loaded. The VHD format ends at 2040 GiB; with the smallest
/// block size real tools use (512 KiB) that is 4 Mi entries, 16 MiB of
/// table. Larger tables come only from corrupt or hostile headers.
pub const MAX_ENTRIES: u64 = 4 << 20;

pub struct Bat {
    entries: Vec<u32>,
    /// Offset of the table in the file, for error messages.
    pub offset: u64,
}

impl Bat {
    /// Loads the entries covering `virtual_size` and checks every
    /// allocated block lies inside the file (below `data_end`), so that a
    /// truncated file or a wild entry is an error when the disk is opened,
    /// never zeros or foreign bytes at read time.
    pub fn load(file: &ImageFile, header: &DynamicHeader, virtual_size: u64, bitmap_size: u64, data_end: u64) -> Result<Bat> {
        let block_size = u64::from(header.block_size);
        let needed = virtual_size.div_ceil(block_size);
        let declared = u64::from(header.max_table_entries);
        let corrupt = |reason: String| file.corrupt("dynamic disk header", header.offset, reason);
        if declared < needed {
            return Err(corrupt(format!(
                "max table entries {declared} cannot cover the virtual size {virtual_size} with blocks of {block_size} bytes ({needed} needed)"
            )));
        }
        let table_bytes = declared * 4;
        if header.table_offset.checked_add(table_bytes).is_none_or(|end| end > file.size()) {
            return Err(corrupt(format!(
                "block allocation table at offset {} with {declared} entries ({table_bytes} bytes) does not fit in the file ({} bytes)",
                header.table_offset,
                file.size()
            )));
        }
        if needed > MAX_ENTRIES {
            return Err(file.unsupported(
                "block allocation table",
                header.table_offset,
                format!("{needed} entries exceed the {MAX_ENTRIES} this reader loads (disk larger than the VHD format allows)"),
            ));
        }
        let raw = file.read_vec("block allocation table", header.table_offset, needed * 4)?;
        let entries: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([0, 1, 2, 3].map(|i| c.get(i).copied().unwrap_or(0))))
            .collect();
        let bat = Bat { entries, offset: header.table_offset };
        for (index, &entry) in bat.entries.iter().enumerate() {
            if entry == UNALLOCATED {
                continue;
            }
            let index = index as u64;
            let start = u64::from(entry) * SECTOR;
            // The last block may extend past the virtual size; only the part
            // that is read has to be present.
            let used = block_size.min(virtual_size - index * block_size);
            let end = start + bitmap_size + used;
            if start < SECTOR || end > data_end {
                return Err(file.corrupt(
                    &format!("BAT entry {index}"),
                    bat.entry_offset(index),
                    format!(
                        "block at sector {entry} (bytes {start}..{end}) lies outside the data area of the file (ends at {data_end}); the file is truncated or the table is corrupt"
                    ),
                ));
            }
        }
        Ok(bat)
    }

    /// File offset of the block's sector bitmap, `None` when unallocated.
    pub fn block(&self, index: u64) -> Option<u64> {
        let entry = *self.entries.get(usize::try_from(index).ok()?)?;
        (entry != UNALLOCATED).then(|| u64::from(entry) * SECTOR)
    }

    pub fn entry_offset(&self, index: u64) -> u64 {
        self.offset + index * 4
    }
}

//! ESX SEsparse ("space efficient sparse") delta extents, `-sesparse.vmdk`:
//! the snapshot format of ESXi 6.5 and later (the only one since 6.7).
//!
//! Layout (see [`header`]): a constant header, a volatile header, a
//! journal, then the grain directory, the grain tables, the free bitmap,
//! the backmap and the grains, each a region given by the header. Unlike
//! the older formats the tables hold *indexes*, not sector offsets:
//!
//! * A grain directory entry (u64) is 0 for "no grain table" or has the
//!   top nibble 1 and the index of a grain table in the grain table region
//!   (each 64 sectors, 4096 entries) in its low bits.
//! * A grain table entry (u64) has its type in the top nibble:
//!   0 unallocated (the whole entry is 0; the parent supplies the grain),
//!   1 unmapped by the guest (SCSI UNMAP; the guest reads zeros, the rest
//!   of the entry still names the old grain until space is reclaimed),
//!   2 zero grain, 3 allocated: the grain index is
//!   `bits 48..60 | bits 0..48 << 12`, the grain at that index in the
//!   grain region (8 sectors each).
//!
//! The free bitmap and backmap serve space reclamation only; reads do not
//! need them. The journal is discussed at [`header`]'s `check_volatile`.

mod header;

use super::cowd::grain_map::{grain_len_within, Grain, GrainMap, GrainTables};
use super::extent::Extent;
use crate::block::ImageFile;
use crate::cache::BoundedCache;
use crate::disk::Allocation;
use crate::le::u64le;
use crate::{Error, Result};
use header::{Region, GRAIN_SECTORS, GT_SECTORS};
use std::path::PathBuf;

const GRAIN_BYTES: u64 = GRAIN_SECTORS * 512;
const GT_BYTES: u64 = GT_SECTORS * 512;
const GT_ENTRIES: u64 = GT_BYTES / 8;

/// The grain directory of a 64 TiB disk is 32 MiB: it is read lazily in
/// pages of this many entries (4 KiB), a bounded number kept in memory.
const GD_PAGE_ENTRIES: u64 = 512;
const CACHED_GD_PAGES: usize = 16;

const TYPE_MASK: u64 = 0xf000_0000_0000_0000;

pub struct SeSparseExtent {
    map: GrainMap<SeSparseTables>,
}

struct SeSparseTables {
    file: ImageFile,
    size: u64,
    /// Directory entries the capacity needs (the region may hold more).
    gd_entries: u64,
    grain_directory: Region,
    grain_tables: Region,
    grains: Region,
    gd_pages: BoundedCache<u64, Vec<u64>>,
}

impl SeSparseExtent {
    /// Opens the extent; its size comes from its own header.
    pub fn open(file: ImageFile) -> Result<SeSparseExtent> {
        let h = header::parse(&file)?;
        let size = h.capacity_sectors * 512;
        let gd_entries = size.div_ceil(GRAIN_BYTES * GT_ENTRIES);
        let gd_bytes = gd_entries * 8;
        if gd_bytes > h.grain_directory.len {
            return Err(file.corrupt(
                "SEsparse constant header",
                0,
                format!(
                    "grain directory of {} bytes cannot cover the capacity ({gd_entries} entries needed)",
                    h.grain_directory.len
                ),
            ));
        }
        // The directory is read lazily, but one that the file cannot hold
        // is reported now rather than on the first read of its far end.
        let file_size = file.size();
        if h.grain_directory.offset + gd_bytes > file_size {
            return Err(Error::Truncated {
                path: file.path.clone(),
                structure: "grain directory".into(),
                offset: h.grain_directory.offset,
                len: gd_bytes,
                file_size,
            });
        }
        let tables = SeSparseTables {
            file: file.clone(),
            size,
            gd_entries,
            grain_directory: h.grain_directory,
            grain_tables: h.grain_tables,
            grains: h.grains,
            gd_pages: BoundedCache::new(CACHED_GD_PAGES),
        };
        Ok(SeSparseExtent { map: GrainMap::new(tables, file, size, GRAIN_BYTES, GT_ENTRIES) })
    }
}

impl SeSparseTables {
    fn directory_entry(&self, table: u64) -> Result<u64> {
        if table >= self.gd_entries {
            return Err(self.file.corrupt("grain directory", self.grain_directory.offset, format!("no entry for grain table {table}")));
        }
        let page = table / GD_PAGE_ENTRIES;
        let entries = self.gd_pages.get_or_load(page, || {
            let first = page * GD_PAGE_ENTRIES;
            let count = GD_PAGE_ENTRIES.min(self.gd_entries - first);
            let raw = self.file.read_vec("grain directory", self.grain_directory.offset + first * 8, count * 8)?;
            Ok::<_, Error>(raw.chunks_exact(8).map(|c| u64le(c, 0)).collect())
        })?;
        let index = usize::try_from(table % GD_PAGE_ENTRIES).ok();
        index.and_then(|i| entries.get(i).copied()).ok_or_else(|| {
            self.file.corrupt("grain directory", self.grain_directory.offset, format!("no entry for grain table {table}"))
        })
    }
}

impl GrainTables for SeSparseTables {
    fn locate(&self, table: u64) -> Result<Option<u64>> {
        let entry = self.directory_entry(table)?;
        if entry == 0 {
            return Ok(None);
        }
        let entry_at = self.grain_directory.offset + table * 8;
        let structure = format!("grain directory entry {table}");
        if entry & TYPE_MASK != 0x1000_0000_0000_0000 {
            return Err(self.file.corrupt(&structure, entry_at, format!("unknown entry {entry:#018x} (type {:#x})", entry >> 60)));
        }
        let index = entry & !TYPE_MASK;
        let slots = self.grain_tables.len / GT_BYTES;
        if index >= slots {
            return Err(self.file.corrupt(
                &structure,
                entry_at,
                format!("grain table index {index} lies outside the grain table region ({slots} tables)"),
            ));
        }
        let at = self.grain_tables.offset + index * GT_BYTES;
        if at + GT_BYTES > self.file.size() {
            return Err(self.file.corrupt(
                &structure,
                entry_at,
                format!("grain table at offset {at} ({GT_BYTES} bytes) lies beyond the end of the file ({} bytes)", self.file.size()),
            ));
        }
        Ok(Some(at))
    }

    fn load(&self, table: u64, location: u64) -> Result<Vec<Grain>> {
        let raw = self.file.read_vec(&format!("grain table {table}"), location, GT_BYTES)?;
        let slots = self.grains.len / GRAIN_BYTES;
        let mut grains = Vec::with_capacity(GT_ENTRIES as usize);
        for (i, chunk) in raw.chunks_exact(8).enumerate() {
            let grain = table * GT_ENTRIES + i as u64;
            let needed = grain_len_within(self.size, GRAIN_BYTES, grain);
            let entry = u64le(chunk, 0);
            if needed == 0 {
                // Past the capacity (end of the last table): never used.
                grains.push(Grain::Unallocated);
                continue;
            }
            let entry_at = location + i as u64 * 8;
            let name = || format!("grain table {table} entry {i}");
            let decoded = match entry >> 60 {
                0 if entry == 0 => Grain::Unallocated,
                // Unmapped: QEMU's black-box tests on ESXi found the guest
                // reads zeros, not the parent's data.
                1 | 2 => Grain::Zero,
                3 => {
                    let index = ((entry & 0x0fff_0000_0000_0000) >> 48) | ((entry & 0x0000_ffff_ffff_ffff) << 12);
                    if index >= slots {
                        return Err(self.file.corrupt(
                            &name(),
                            entry_at,
                            format!("grain index {index} lies outside the grain region ({slots} grains)"),
                        ));
                    }
                    let at = self.grains.offset + index * GRAIN_BYTES;
                    if at + needed > self.file.size() {
                        return Err(self.file.corrupt(
                            &name(),
                            entry_at,
                            format!("grain at offset {at} ({needed} bytes) lies beyond the end of the file ({} bytes)", self.file.size()),
                        ));
                    }
                    Grain::Data(at)
                }
                _ => {
                    return Err(self.file.corrupt(&name(), entry_at, format!("unknown grain entry {entry:#018x} (type {:#x})", entry >> 60)));
                }
            };
            grains.push(decoded);
        }
        Ok(grains)
    }
}

impl Extent for SeSparseExtent {
    fn size(&self) -> u64 {
        self.map.size()
    }
    fn status(&self, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        self.map.status(offset, max_len)
    }
    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.map.read(offset, buf)
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.map.tables.file.path.clone()]
    }
}

#[cfg(test)]
mod tests;

//! ESX vmfsSparse delta extents: the classic ESX redo log (`-delta.vmdk`,
//! magic "COWD"), used for snapshots on VMFS before SEsparse.
//!
//! Layout (VMware's `COWDisk_Header`, all little-endian, sizes in 512-byte
//! sectors):
//!
//! | offset | field |
//! |---|---|
//! | 0 | magic "COWD" |
//! | 4 | version (1) |
//! | 8 | flags: 0x1 root, 0x2 check-capable, 0x4 inconsistent |
//! | 12 | numSectors: capacity of the extent |
//! | 16 | grainSize: sectors per grain (ESX uses 1) |
//! | 20 | gdOffset: sector of the grain directory |
//! | 24 | numGDEntries |
//! | 28 | freeSector: next free sector (the file length is the truth) |
//! | 32..1060 | root geometry or (unused) parent file name and generation |
//! | 1060..1648 | generation, name, description, saved generation, reserved |
//! | 1648 | uncleanShutdown: non-zero while the file is open for writing |
//!
//! The header is 2048 bytes. The grain directory holds 32-bit sector
//! numbers of grain tables; each grain table holds 4096 32-bit sector
//! numbers of grains. 0 means "not in this file": the parent supplies the
//! grain. The format has no zero grains.

pub(in crate::disk::vmdk) mod grain_map;

use super::extent::Extent;
use crate::block::ImageFile;
use crate::disk::Allocation;
use crate::le::u32le;
use crate::Result;
use grain_map::{grain_len_within, Grain, GrainMap, GrainTables};
use std::path::PathBuf;

const HEADER_LEN: u64 = 2048;
const HEADER_SECTORS: u64 = HEADER_LEN / 512;
const MAGIC: &[u8; 4] = b"COWD";
const VERSION: u32 = 1;

const FLAG_ROOT: u32 = 0x1;
const FLAG_CHECK_CAPABLE: u32 = 0x2;
const FLAG_INCONSISTENT: u32 = 0x4;
const KNOWN_FLAGS: u32 = FLAG_ROOT | FLAG_CHECK_CAPABLE | FLAG_INCONSISTENT;

const UNCLEAN_SHUTDOWN_AT: usize = 1648;

/// Entries per grain table: fixed by ESX, not recorded in the header.
const GT_ENTRIES: u64 = 4096;
const GT_BYTES: u64 = GT_ENTRIES * 4;

/// Largest grain accepted: 1 GiB. ESX writes 1-sector grains; the limit
/// only keeps arithmetic on hostile headers small.
const MAX_GRAIN_SECTORS: u64 = 1 << 21;

pub struct CowdExtent {
    map: GrainMap<CowdTables>,
}

/// The grain directory, held in memory: at most 2^20 entries (4 MiB) for
/// the largest capacity a 32-bit sector count allows, and never more than
/// the file holds.
struct CowdTables {
    file: ImageFile,
    /// Sector of each grain table (0: none).
    directory: Vec<u32>,
    size: u64,
    grain_bytes: u64,
}

impl CowdExtent {
    /// Opens the extent; its size comes from its own header.
    pub fn open(file: ImageFile) -> Result<CowdExtent> {
        let header = file.read_vec("COWD header", 0, HEADER_LEN)?;
        let h = |field: usize| u32le(&header, field);
        if header.get(0..4) != Some(&MAGIC[..]) {
            return Err(file.corrupt("COWD header", 0, "bad magic (expected \"COWD\")"));
        }
        let version = h(4);
        if version != VERSION {
            return Err(file.unsupported("COWD header", 0, format!("version {version} (only version 1 is known)")));
        }
        let flags = h(8);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(file.unsupported("COWD header", 0, format!("unknown flags {flags:#x}")));
        }
        // ESX sets these while the redo log is open for writing, and clears
        // them on a clean close. A set flag means the grain tables may not
        // match the grains (ESX checks and repairs the file when it next
        // opens it): reading now could return stale or foreign data.
        if flags & FLAG_INCONSISTENT != 0 {
            return Err(file.unsupported(
                "COWD header",
                0,
                "the inconsistent flag is set (the redo log is open for writing or was not closed cleanly); let ESXi consolidate or reopen it first",
            ));
        }
        let unclean = h(UNCLEAN_SHUTDOWN_AT);
        if unclean != 0 {
            return Err(file.unsupported(
                "COWD header",
                UNCLEAN_SHUTDOWN_AT as u64,
                "uncleanShutdown is set (the redo log is open for writing or was not closed cleanly); let ESXi consolidate or reopen it first",
            ));
        }
        let sectors = u64::from(h(12));
        if sectors == 0 {
            return Err(file.corrupt("COWD header", 0, "capacity (numSectors) is 0"));
        }
        let grain_sectors = u64::from(h(16));
        if grain_sectors == 0 {
            return Err(file.corrupt("COWD header", 0, "grain size is 0"));
        }
        if grain_sectors > MAX_GRAIN_SECTORS {
            return Err(file.unsupported("COWD header", 0, format!("grain size of {grain_sectors} sectors")));
        }
        // Cannot overflow: 2^32 sectors of 512 bytes, grains below 2^30 bytes.
        let size = sectors * 512;
        let grain_bytes = grain_sectors * 512;
        let needed_tables = sectors.div_ceil(GT_ENTRIES * grain_sectors);
        let gd_entries = u64::from(h(24));
        if gd_entries < needed_tables {
            return Err(file.corrupt(
                "COWD header",
                0,
                format!("{gd_entries} grain directory entries cannot cover {sectors} sectors ({needed_tables} needed)"),
            ));
        }
        let gd_sector = u64::from(h(20));
        if gd_sector < HEADER_SECTORS {
            return Err(file.corrupt("COWD header", 0, format!("grain directory at sector {gd_sector} overlaps the header")));
        }
        let gd_offset = gd_sector * 512;
        // Only the entries the capacity needs are read; read_vec refuses a
        // directory that runs past the end of the file before allocating.
        let raw = file.read_vec("grain directory", gd_offset, needed_tables * 4)?;
        let directory: Vec<u32> = raw.chunks_exact(4).map(|c| u32le(c, 0)).collect();
        for (i, &gt_sector) in directory.iter().enumerate() {
            let entry_at = gd_offset + i as u64 * 4;
            let structure = format!("grain directory entry {i}");
            if gt_sector == 0 {
                continue;
            }
            let gt_sector = u64::from(gt_sector);
            if gt_sector < HEADER_SECTORS {
                return Err(file.corrupt(&structure, entry_at, format!("grain table at sector {gt_sector} overlaps the header")));
            }
            let gt_end = gt_sector * 512 + GT_BYTES;
            if gt_end > file.size() {
                return Err(file.corrupt(
                    &structure,
                    entry_at,
                    format!(
                        "grain table at offset {} ({GT_BYTES} bytes) lies beyond the end of the file ({} bytes)",
                        gt_sector * 512,
                        file.size()
                    ),
                ));
            }
        }
        let tables = CowdTables { file: file.clone(), directory, size, grain_bytes };
        Ok(CowdExtent { map: GrainMap::new(tables, file, size, grain_bytes, GT_ENTRIES) })
    }
}

impl GrainTables for CowdTables {
    fn locate(&self, table: u64) -> Result<Option<u64>> {
        let entry = usize::try_from(table).ok().and_then(|t| self.directory.get(t));
        match entry {
            Some(0) => Ok(None),
            Some(&sector) => Ok(Some(u64::from(sector) * 512)),
            None => Err(self.file.corrupt("grain directory", 0, format!("no entry for grain table {table}"))),
        }
    }

    fn load(&self, table: u64, location: u64) -> Result<Vec<Grain>> {
        let structure = format!("grain table {table}");
        let raw = self.file.read_vec(&structure, location, GT_BYTES)?;
        let mut grains = Vec::with_capacity(GT_ENTRIES as usize);
        for (i, chunk) in raw.chunks_exact(4).enumerate() {
            let grain = table * GT_ENTRIES + i as u64;
            let needed = grain_len_within(self.size, self.grain_bytes, grain);
            let sector = u64::from(u32le(chunk, 0));
            // Entries past the capacity (end of the last table) are never
            // used; they are not judged.
            if sector == 0 || needed == 0 {
                grains.push(Grain::Unallocated);
                continue;
            }
            let entry_at = location + i as u64 * 4;
            let entry_name = || format!("grain table {table} entry {i}");
            if sector < HEADER_SECTORS {
                return Err(self.file.corrupt(&entry_name(), entry_at, format!("grain at sector {sector} overlaps the header")));
            }
            let at = sector * 512;
            if at + needed > self.file.size() {
                return Err(self.file.corrupt(
                    &entry_name(),
                    entry_at,
                    format!("grain at offset {at} ({needed} bytes) lies beyond the end of the file ({} bytes)", self.file.size()),
                ));
            }
            grains.push(Grain::Data(at));
        }
        Ok(grains)
    }
}

impl Extent for CowdExtent {
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
mod tests {
    use super::*;
    use crate::block::MemSource;
    use crate::Error;
    use std::sync::Arc;

    /// A COWD file of `sectors` capacity and `grain` sectors per grain, with
    /// the grain directory at sector 4, grain tables after it, then grains
    /// (given as (grain index, fill byte)).
    fn build(sectors: u32, grain: u32, grains: &[(u64, u8)]) -> Vec<u8> {
        let tables = u64::from(sectors).div_ceil(4096 * u64::from(grain));
        let gd_sectors = (tables * 4).div_ceil(512);
        let gt_start = 4 + gd_sectors;
        let grains_start = gt_start + tables * 32;
        let mut f = vec![0u8; (grains_start * 512) as usize];
        f[0..4].copy_from_slice(b"COWD");
        f[4..8].copy_from_slice(&1u32.to_le_bytes());
        f[8..12].copy_from_slice(&3u32.to_le_bytes());
        f[12..16].copy_from_slice(&sectors.to_le_bytes());
        f[16..20].copy_from_slice(&grain.to_le_bytes());
        f[20..24].copy_from_slice(&4u32.to_le_bytes());
        f[24..28].copy_from_slice(&(tables as u32).to_le_bytes());
        for t in 0..tables {
            let at = (4 * 512 + t * 4) as usize;
            f[at..at + 4].copy_from_slice(&((gt_start + t * 32) as u32).to_le_bytes());
        }
        for &(g, fill) in grains {
            let sector = (f.len() / 512) as u32;
            f.extend(std::iter::repeat_n(fill, grain as usize * 512));
            let (t, i) = (g / 4096, g % 4096);
            let at = ((gt_start + t * 32) * 512 + i * 4) as usize;
            f[at..at + 4].copy_from_slice(&sector.to_le_bytes());
        }
        f
    }

    fn open(bytes: Vec<u8>) -> Result<CowdExtent> {
        CowdExtent::open(ImageFile::new(Arc::new(MemSource(bytes)), "x-delta.vmdk"))
    }

    #[test]
    fn reads_grains_and_merges_runs() {
        let e = open(build(10000, 1, &[(0, 1), (1, 2), (4097, 3), (9999, 4)])).unwrap();
        assert_eq!(e.size(), 10000 * 512);
        assert_eq!(e.status(0, e.size()).unwrap(), (Allocation::Data, 1024));
        assert_eq!(e.status(1024, e.size() - 1024).unwrap(), (Allocation::Unallocated, 4095 * 512));
        assert_eq!(e.status(9999 * 512, 512).unwrap(), (Allocation::Data, 512));
        let mut buf = vec![0u8; 1024];
        e.read_data(0, &mut buf).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 1) && buf[512..].iter().all(|&b| b == 2));
        let mut b = [0u8; 7];
        e.read_data(9999 * 512 + 3, &mut b).unwrap();
        assert_eq!(b, [4; 7]);
        assert!(e.read_data(2 * 512, &mut b).is_err(), "unallocated grains are never read as zeros");
    }

    #[test]
    fn partial_last_grain() {
        // 9 sectors, 4-sector grains: the third grain has one sector inside.
        let e = open(build(9, 4, &[(2, 9)])).unwrap();
        assert_eq!(e.status(8 * 512, 512).unwrap(), (Allocation::Data, 512));
        let mut b = [0u8; 512];
        e.read_data(8 * 512, &mut b).unwrap();
        assert_eq!(b, [9; 512]);
    }

    fn expect_err(bytes: Vec<u8>, needle: &str) -> Error {
        let e = open(bytes).err().expect("open must fail");
        assert!(e.to_string().contains(needle), "{e} lacks {needle:?}");
        assert!(e.to_string().contains("x-delta.vmdk"), "{e}");
        e
    }

    #[test]
    fn header_errors() {
        let good = build(100, 1, &[]);
        let mut b = good.clone();
        b[0] = b'X';
        expect_err(b, "bad magic");
        let mut b = good.clone();
        b[4] = 2;
        expect_err(b, "version 2");
        let mut b = good.clone();
        b[8] = 0x13;
        expect_err(b, "unknown flags");
        let mut b = good.clone();
        b[8] = 7;
        expect_err(b, "inconsistent");
        let mut b = good.clone();
        b[1648] = 1;
        expect_err(b, "uncleanShutdown");
        let mut b = good.clone();
        b[16..20].copy_from_slice(&0u32.to_le_bytes());
        expect_err(b, "grain size is 0");
        let mut b = good.clone();
        b[24..28].copy_from_slice(&0u32.to_le_bytes());
        expect_err(b, "grain directory entries");
        let mut b = good.clone();
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        expect_err(b, "overlaps the header");
        expect_err(good[..1000].to_vec(), "beyond the end of the file");
    }

    #[test]
    fn huge_directory_is_refused_before_allocating() {
        // 2^32-1 sectors of 1-sector grains need 2^20 directory entries the
        // tiny file cannot hold.
        let mut b = build(100, 1, &[]);
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        b[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        expect_err(b, "grain directory at offset 2048");
    }

    #[test]
    fn table_and_grain_past_end_of_file() {
        let mut b = build(100, 1, &[(5, 1)]);
        b[2048..2052].copy_from_slice(&1_000_000u32.to_le_bytes());
        expect_err(b, "grain directory entry 0");
        let b = build(100, 1, &[(5, 1)]);
        let len = b.len();
        let e = open(b[..len - 512].to_vec()).unwrap();
        let err = e.status(0, 100 * 512).unwrap_err().to_string();
        assert!(err.contains("grain table 0 entry 5") && err.contains("beyond the end"), "{err}");
    }
}

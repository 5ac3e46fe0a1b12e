//! The header of a hosted sparse extent (`KDMV`, VMware Workstation /
//! monolithicSparse / streamOptimized), 512 bytes, little-endian:
//!
//! | off | field |
//! |-----|-------|
//! | 0   | magic "KDMV" |
//! | 4   | version (1..=3) |
//! | 8   | flags |
//! | 12  | capacity (sectors) |
//! | 20  | grainSize (sectors) |
//! | 28  | descriptorOffset, 36 descriptorSize (sectors) |
//! | 44  | numGTEsPerGT |
//! | 48  | rgdOffset, 56 gdOffset, 64 overHead (sectors) |
//! | 72  | uncleanShutdown |
//! | 73  | newline detection bytes `\n`, ` `, `\r`, `\n` |
//! | 77  | compressAlgorithm (0 none, 1 deflate) |

use crate::block::ImageFile;
use crate::disk::MAX_VIRTUAL_SIZE;
use crate::le::{u16le, u32le, u64le};
use crate::Result;

pub const SECTOR: u64 = 512;
pub const HEADER_LEN: usize = 512;
pub const MAGIC: &[u8; 4] = b"KDMV";

/// gdOffset meaning "the grain directory is described by the footer"
/// (streamOptimized files written as a stream).
pub const GD_AT_END: u64 = u64::MAX;

pub const FLAG_NEWLINE_TEST: u32 = 1 << 0;
pub const FLAG_REDUNDANT_GT: u32 = 1 << 1;
/// Grain table entry 1 means "this grain reads as zeros".
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
pub const FLAG_COMPRESSED: u32 = 1 << 16;
pub const FLAG_MARKERS: u32 = 1 << 17;
const KNOWN_FLAGS: u32 = FLAG_NEWLINE_TEST | FLAG_REDUNDANT_GT | FLAG_ZERO_GRAIN | FLAG_COMPRESSED | FLAG_MARKERS;

pub const COMPRESS_NONE: u16 = 0;
pub const COMPRESS_DEFLATE: u16 = 1;

/// Grain sizes accepted, in sectors. The specification requires a power of
/// two of at least 8 sectors; VMware and qemu write 128 (64 KiB). The upper
/// bound keeps one decompressed grain (and the grain cache) small.
pub const MIN_GRAIN_SECTORS: u64 = 8;
pub const MAX_GRAIN_SECTORS: u64 = 2048;

/// Grain table sizes accepted (entries). Always 512 in practice.
pub const MIN_GTES_PER_GT: u32 = 128;
pub const MAX_GTES_PER_GT: u32 = 65_536;

/// Largest grain directory loaded (bytes): 8 Mi entries, which with the usual
/// 64 KiB grains and 512-entry tables covers 256 TiB (VMDK's limit is 62 TiB).
pub const MAX_GD_BYTES: u64 = 32 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparseHeader {
    pub version: u32,
    pub flags: u32,
    pub capacity_sectors: u64,
    pub grain_sectors: u64,
    pub desc_offset: u64,
    pub desc_sectors: u64,
    pub gtes_per_gt: u32,
    pub rgd_offset: u64,
    pub gd_offset: u64,
    pub compress: u16,
}

impl SparseHeader {
    pub fn compressed(&self) -> bool {
        self.compress == COMPRESS_DEFLATE
    }

    pub fn zero_grain(&self) -> bool {
        self.flags & FLAG_ZERO_GRAIN != 0
    }

    pub fn grain_bytes(&self) -> u64 {
        self.grain_sectors * SECTOR
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_sectors * SECTOR
    }

    /// Bytes of virtual disk one grain table covers.
    pub fn gt_coverage(&self) -> u64 {
        self.grain_bytes() * u64::from(self.gtes_per_gt)
    }

    /// Number of grain directory entries.
    pub fn gd_entries(&self) -> u64 {
        self.capacity_bytes().div_ceil(self.gt_coverage())
    }
}

/// Parses and checks a header found at byte `at` of `file` (0 for the
/// header, end-1024 for a streamOptimized footer). Every size derived later
/// is bounded by what this accepts.
pub fn parse(file: &ImageFile, buf: &[u8], at: u64) -> Result<SparseHeader> {
    let what = if at == 0 { "sparse extent header" } else { "sparse extent footer" };
    if buf.len() < HEADER_LEN || buf.get(0..4) != Some(&MAGIC[..]) {
        return Err(file.corrupt(what, at, "no KDMV magic"));
    }
    let h = SparseHeader {
        version: u32le(buf, 4),
        flags: u32le(buf, 8),
        capacity_sectors: u64le(buf, 12),
        grain_sectors: u64le(buf, 20),
        desc_offset: u64le(buf, 28),
        desc_sectors: u64le(buf, 36),
        gtes_per_gt: u32le(buf, 44),
        rgd_offset: u64le(buf, 48),
        gd_offset: u64le(buf, 56),
        compress: u16le(buf, 77),
    };
    if !(1..=3).contains(&h.version) {
        return Err(file.unsupported(what, at + 4, format!("sparse extent version {} (known: 1 to 3)", h.version)));
    }
    if h.flags & !KNOWN_FLAGS != 0 {
        return Err(file.unsupported(what, at + 8, format!("unknown flags {:#x}", h.flags & !KNOWN_FLAGS)));
    }
    if h.flags & FLAG_NEWLINE_TEST != 0 && buf.get(73..77) != Some(&b"\n \r\n"[..]) {
        return Err(file.corrupt(
            what,
            at + 73,
            "newline detection bytes are damaged: the file was probably transferred in text mode (FTP ASCII)",
        ));
    }
    let capacity = h.capacity_sectors.checked_mul(SECTOR).filter(|&c| c <= MAX_VIRTUAL_SIZE);
    if capacity.is_none() {
        return Err(file.corrupt(
            what,
            at + 12,
            format!("capacity of {} sectors is larger than the {MAX_VIRTUAL_SIZE} bytes any disk can have", h.capacity_sectors),
        ));
    }
    if h.capacity_sectors == 0 {
        return Err(file.corrupt(what, at + 12, "capacity of 0 sectors"));
    }
    if !h.grain_sectors.is_power_of_two() || !(MIN_GRAIN_SECTORS..=MAX_GRAIN_SECTORS).contains(&h.grain_sectors) {
        return Err(file.corrupt(
            what,
            at + 20,
            format!("grain size of {} sectors (must be a power of two from {MIN_GRAIN_SECTORS} to {MAX_GRAIN_SECTORS})", h.grain_sectors),
        ));
    }
    if !h.gtes_per_gt.is_power_of_two() || !(MIN_GTES_PER_GT..=MAX_GTES_PER_GT).contains(&h.gtes_per_gt) {
        return Err(file.corrupt(
            what,
            at + 44,
            format!("{} entries per grain table (must be a power of two from {MIN_GTES_PER_GT} to {MAX_GTES_PER_GT})", h.gtes_per_gt),
        ));
    }
    match h.compress {
        COMPRESS_NONE if h.flags & FLAG_COMPRESSED != 0 => {
            return Err(file.unsupported(what, at + 77, "compressed-grains flag without a compression algorithm"));
        }
        COMPRESS_NONE | COMPRESS_DEFLATE => {}
        other => return Err(file.unsupported(what, at + 77, format!("compression algorithm {other} (known: 1, deflate)"))),
    }
    if h.compressed() && h.flags & FLAG_MARKERS == 0 {
        // Every writer of compressed extents (streamOptimized) uses markers;
        // without them the compressed length of a grain is unknown.
        return Err(file.unsupported(what, at + 8, "compressed grains without grain markers"));
    }
    if h.flags & FLAG_MARKERS != 0 && !h.compressed() {
        return Err(file.unsupported(what, at + 8, "grain markers on an uncompressed extent"));
    }
    if h.gd_offset != GD_AT_END {
        if h.gd_offset == 0 {
            return Err(file.corrupt(what, at + 56, "no grain directory (gdOffset 0)"));
        }
        let gd_bytes = h.gd_entries() * 4;
        if gd_bytes > MAX_GD_BYTES {
            return Err(file.unsupported(what, at + 56, format!("grain directory of {gd_bytes} bytes (more than {MAX_GD_BYTES})")));
        }
        if h.gd_offset.checked_mul(SECTOR).is_none() {
            return Err(file.corrupt(what, at + 56, format!("gdOffset {} is past any file", h.gd_offset)));
        }
    }
    if h.desc_sectors.checked_mul(SECTOR).is_none_or(|n| n > super::descriptor::MAX_DESCRIPTOR_BYTES as u64)
        || h.desc_offset.checked_mul(SECTOR).is_none()
    {
        return Err(file.corrupt(what, at + 28, format!("embedded descriptor of {} sectors at sector {}", h.desc_sectors, h.desc_offset)));
    }
    Ok(h)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::block::MemSource;
    use std::sync::Arc;

    /// A header like the one qemu-img writes for a `size`-sector disk.
    pub fn header(capacity: u64, flags: u32, compress: u16, gd_offset: u64) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[0..4].copy_from_slice(MAGIC);
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        h[8..12].copy_from_slice(&(flags | FLAG_NEWLINE_TEST).to_le_bytes());
        h[12..20].copy_from_slice(&capacity.to_le_bytes());
        h[20..28].copy_from_slice(&128u64.to_le_bytes());
        h[44..48].copy_from_slice(&512u32.to_le_bytes());
        h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
        h[73..77].copy_from_slice(b"\n \r\n");
        h[77..79].copy_from_slice(&compress.to_le_bytes());
        h
    }

    fn file(data: Vec<u8>) -> ImageFile {
        ImageFile::new(Arc::new(MemSource(data.clone())), "t.vmdk")
    }

    fn check(h: &[u8]) -> Result<SparseHeader> {
        parse(&file(h.to_vec()), h, 0)
    }

    #[test]
    fn accepts_qemu_header() {
        let h = check(&header(4096, 0, 0, 21)).unwrap();
        assert_eq!((h.capacity_bytes(), h.grain_bytes(), h.gd_entries()), (4096 * 512, 65536, 1));
    }

    #[test]
    fn rejects_hostile_fields() {
        let base = header(4096, 0, 0, 21);
        let patch = |off: usize, v: &[u8]| {
            let mut h = base.clone();
            h[off..off + v.len()].copy_from_slice(v);
            h
        };
        assert!(check(&patch(12, &(1u64 << 60).to_le_bytes())).unwrap_err().to_string().contains("capacity"));
        assert!(check(&patch(12, &0u64.to_le_bytes())).is_err());
        assert!(check(&patch(20, &100u64.to_le_bytes())).unwrap_err().to_string().contains("grain size"));
        assert!(check(&patch(20, &(1u64 << 40).to_le_bytes())).is_err());
        assert!(check(&patch(44, &0x4000_0000u32.to_le_bytes())).unwrap_err().to_string().contains("grain table"));
        assert!(check(&patch(4, &4u32.to_le_bytes())).unwrap_err().to_string().contains("version"));
        assert!(check(&patch(8, &0x100u32.to_le_bytes())).unwrap_err().to_string().contains("flags"));
        assert!(check(&patch(73, b"\n \n\n")).unwrap_err().to_string().contains("text mode"));
        assert!(check(&patch(77, &2u16.to_le_bytes())).is_err());
        assert!(check(&patch(56, &0u64.to_le_bytes())).is_err());
        assert!(check(&patch(36, &u64::MAX.to_le_bytes())).is_err());
        assert!(check(&base[..100]).is_err());
    }

    #[test]
    fn compression_needs_markers() {
        assert!(check(&header(4096, FLAG_COMPRESSED, COMPRESS_DEFLATE, 21)).is_err());
        assert!(check(&header(4096, FLAG_COMPRESSED | FLAG_MARKERS, COMPRESS_DEFLATE, 21)).is_ok());
        assert!(check(&header(4096, FLAG_COMPRESSED | FLAG_MARKERS, COMPRESS_NONE, 21)).is_err());
    }
}

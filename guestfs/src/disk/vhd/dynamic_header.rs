//! The dynamic disk header ("cxsparse", 1024 big-endian bytes) of dynamic
//! and differencing disks: where the block allocation table is, the block
//! size, and for differencing disks who the parent is.

use super::footer::checksum;
use crate::block::ImageFile;
use crate::le::{bytes, u32be, u64be};
use crate::Result;

pub const HEADER_SIZE: u64 = 1024;
const COOKIE: &[u8; 8] = b"cxsparse";
const CHECKSUM_FIELD: usize = 36;
const PARENT_NAME_FIELD: usize = 64;
const PARENT_NAME_BYTES: usize = 512;
const LOCATOR_TABLE: usize = 576;
const LOCATOR_ENTRY: usize = 24;
pub const LOCATOR_COUNT: usize = 8;

/// Block sizes accepted. The spec's default (and every known creator's) is
/// 2 MiB; Hyper-V uses 512 KiB for differencing disks. A sector is the
/// smallest meaningful block; beyond 256 MiB the sector bitmap of a block
/// alone would be 64 KiB and no tool makes such disks.
pub const MIN_BLOCK_SIZE: u32 = 512;
pub const MAX_BLOCK_SIZE: u32 = 256 << 20;

/// One parent locator entry as stored; its data is read and decoded by
/// [`super::locator`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocatorEntry {
    /// Index 0..8 in the header, for error messages.
    pub index: usize,
    pub platform_code: u32,
    pub data_length: u32,
    pub data_offset: u64,
}

#[derive(Clone, Debug)]
pub struct DynamicHeader {
    /// Byte offset of the header itself, for error messages.
    pub offset: u64,
    pub table_offset: u64,
    pub max_table_entries: u32,
    pub block_size: u32,
    /// The parent's unique id, checked against the parent's footer. The
    /// parent timestamp beside it is not checked: copying a parent (as
    /// every backup does) changes its time but not its content.
    pub parent_unique_id: [u8; 16],
    /// The parent's file name (UTF-16 big-endian in the file), NULs removed.
    pub parent_name: String,
    pub locators: Vec<LocatorEntry>,
}

impl DynamicHeader {
    pub fn read(file: &ImageFile, offset: u64) -> Result<DynamicHeader> {
        let mut buf = [0u8; HEADER_SIZE as usize];
        file.read("dynamic disk header", offset, &mut buf)?;
        Self::parse(file, offset, &buf)
    }

    pub fn parse(file: &ImageFile, offset: u64, buf: &[u8; HEADER_SIZE as usize]) -> Result<DynamicHeader> {
        let corrupt = |reason: String| file.corrupt("dynamic disk header", offset, reason);
        if buf.get(0..8) != Some(&COOKIE[..]) {
            return Err(corrupt("no \"cxsparse\" cookie".into()));
        }
        let stored = u32be(buf, CHECKSUM_FIELD);
        let computed = checksum(buf, CHECKSUM_FIELD);
        if stored != computed {
            return Err(corrupt(format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")));
        }
        let version = u32be(buf, 24);
        if version >> 16 != 1 {
            return Err(file.unsupported("dynamic disk header", offset, format!("header version {version:#010x} (only 1.x is defined)")));
        }
        let block_size = u32be(buf, 32);
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
            return Err(corrupt(format!(
                "block size {block_size} is not supported: it must be a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE} bytes"
            )));
        }
        let name_units: Vec<u16> = buf
            .get(PARENT_NAME_FIELD..PARENT_NAME_FIELD + PARENT_NAME_BYTES)
            .unwrap_or(&[])
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c.first().copied().unwrap_or(0), c.get(1).copied().unwrap_or(0)]))
            .take_while(|&u| u != 0)
            .collect();
        let parent_name = String::from_utf16_lossy(&name_units);
        let mut locators = Vec::new();
        for index in 0..LOCATOR_COUNT {
            let at = LOCATOR_TABLE + index * LOCATOR_ENTRY;
            let platform_code = u32be(buf, at);
            if platform_code == 0 {
                continue;
            }
            // The "data space" field (at + 4) is documented in sectors but
            // Hyper-V writes bytes; only the length and offset matter.
            locators.push(LocatorEntry { index, platform_code, data_length: u32be(buf, at + 8), data_offset: u64be(buf, at + 16) });
        }
        Ok(DynamicHeader {
            offset,
            table_offset: u64be(buf, 16),
            max_table_entries: u32be(buf, 28),
            block_size,
            parent_unique_id: bytes(buf, 40),
            parent_name,
            locators,
        })
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::block::MemSource;
    use std::sync::Arc;

    /// A valid header for unit tests; `locators` are (code, length, offset).
    pub fn make_header(table_offset: u64, entries: u32, block_size: u32, parent_name: &str, locators: &[(u32, u32, u64)]) -> [u8; 1024] {
        let mut h = [0u8; 1024];
        h[0..8].copy_from_slice(COOKIE);
        h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        h[16..24].copy_from_slice(&table_offset.to_be_bytes());
        h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        h[28..32].copy_from_slice(&entries.to_be_bytes());
        h[32..36].copy_from_slice(&block_size.to_be_bytes());
        h[40..56].copy_from_slice(&[0x22; 16]);
        for (i, u) in parent_name.encode_utf16().enumerate() {
            h[64 + 2 * i..66 + 2 * i].copy_from_slice(&u.to_be_bytes());
        }
        for (i, (code, len, off)) in locators.iter().enumerate() {
            let at = 576 + 24 * i;
            h[at..at + 4].copy_from_slice(&code.to_be_bytes());
            h[at + 4..at + 8].copy_from_slice(&512u32.to_be_bytes());
            h[at + 8..at + 12].copy_from_slice(&len.to_be_bytes());
            h[at + 16..at + 24].copy_from_slice(&off.to_be_bytes());
        }
        let c = checksum(&h, 36);
        h[36..40].copy_from_slice(&c.to_be_bytes());
        h
    }

    fn parse(h: &[u8; 1024]) -> Result<DynamicHeader> {
        DynamicHeader::parse(&ImageFile::new(Arc::new(MemSource(vec![])), "t.vhd"), 512, h)
    }

    #[test]
    fn parses_fields() {
        let h = parse(&make_header(1536, 10, 2 << 20, "base.vhd", &[(0x5732_7275, 20, 4096)])).unwrap();
        assert_eq!((h.table_offset, h.max_table_entries, h.block_size), (1536, 10, 2 << 20));
        assert_eq!(h.parent_name, "base.vhd");
        assert_eq!(h.parent_unique_id, [0x22; 16]);
        assert_eq!(h.locators, vec![LocatorEntry { index: 0, platform_code: 0x5732_7275, data_length: 20, data_offset: 4096 }]);
    }

    #[test]
    fn bad_block_sizes_and_checksum_are_refused() {
        for bs in [0u32, 256, 3 << 20, 1 << 31, u32::MAX] {
            let e = parse(&make_header(1536, 10, bs, "", &[])).unwrap_err().to_string();
            assert!(e.contains("block size") && e.contains("offset 512"), "{e}");
        }
        let mut h = make_header(1536, 10, 2 << 20, "", &[]);
        h[700] ^= 1;
        assert!(parse(&h).unwrap_err().to_string().contains("checksum"));
    }
}

//! The region table (MS-VHDX 2.2.3): where the BAT and the metadata region
//! lie. Read through the log overlay (the log may rewrite it).

use super::guid::Guid;
use crate::block::ImageFile;
use crate::le::{bytes, u32le, u64le};
use crate::Result;

pub const REGION_TABLE1_OFFSET: u64 = 192 * 1024;
pub const REGION_TABLE2_OFFSET: u64 = 256 * 1024;
const TABLE_SIZE: u64 = 64 * 1024;
const MAX_ENTRIES: u32 = 2047;
const MIB: u64 = 1 << 20;

pub const BAT_GUID: Guid = Guid::new(0x2DC27766, 0xF623, 0x4200, [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08]);
pub const METADATA_GUID: Guid = Guid::new(0x8B7CA206, 0x4790, 0x4B9A, [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E]);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub length: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Regions {
    pub bat: Region,
    pub metadata: Region,
}

/// Reads the first region table whose signature and CRC-32C are valid.
pub fn read(file: &ImageFile) -> Result<Regions> {
    for offset in [REGION_TABLE1_OFFSET, REGION_TABLE2_OFFSET] {
        let buf = file.read_vec("region table", offset, TABLE_SIZE)?;
        if valid(&buf) {
            return parse(file, &buf, offset);
        }
    }
    Err(file.corrupt(
        "region table",
        REGION_TABLE1_OFFSET,
        "neither region table (at 192 KiB and 256 KiB) has a valid signature and CRC-32C",
    ))
}

fn valid(buf: &[u8]) -> bool {
    if buf.get(0..4) != Some(b"regi") {
        return false;
    }
    let stored = u32le(buf, 4);
    let mut copy = buf.to_vec();
    if let Some(c) = copy.get_mut(4..8) {
        c.fill(0);
    }
    crc32c::crc32c(&copy) == stored
}

fn parse(file: &ImageFile, buf: &[u8], table_offset: u64) -> Result<Regions> {
    let count = u32le(buf, 8);
    if count > MAX_ENTRIES {
        return Err(file.corrupt("region table", table_offset, format!("{count} entries (at most {MAX_ENTRIES})")));
    }
    let (mut bat, mut metadata) = (None, None);
    for i in 0..count as usize {
        let at = 16 + i * 32;
        let entry_offset = table_offset + at as u64;
        let structure = format!("region table entry {i}");
        let guid = Guid(bytes::<16>(buf, at));
        let offset = u64le(buf, at + 16);
        let length = u64::from(u32le(buf, at + 24));
        let required = u32le(buf, at + 28) & 1 != 0;
        let slot = if guid == BAT_GUID {
            &mut bat
        } else if guid == METADATA_GUID {
            &mut metadata
        } else if required {
            return Err(file.unsupported(&structure, entry_offset, format!("unknown required region {guid}")));
        } else {
            continue;
        };
        if slot.is_some() {
            return Err(file.corrupt(&structure, entry_offset, format!("region {guid} listed twice")));
        }
        if offset < MIB || offset % MIB != 0 || length == 0 || length % MIB != 0 {
            return Err(file.corrupt(
                &structure,
                entry_offset,
                format!("region at offset {offset} length {length} is not a non-empty 1 MiB aligned range"),
            ));
        }
        let end = offset.checked_add(length).unwrap_or(u64::MAX);
        if end > file.size() {
            return Err(file.corrupt(
                &structure,
                entry_offset,
                format!("region {offset}..{end} lies beyond the end of the file ({} bytes)", file.size()),
            ));
        }
        *slot = Some(Region { offset, length });
    }
    match (bat, metadata) {
        (Some(bat), Some(metadata)) => {
            if bat.offset < metadata.offset + metadata.length && metadata.offset < bat.offset + bat.length {
                return Err(file.corrupt("region table", table_offset, "BAT and metadata regions overlap"));
            }
            Ok(Regions { bat, metadata })
        }
        (None, _) => Err(file.corrupt("region table", table_offset, "no BAT region")),
        (_, None) => Err(file.corrupt("region table", table_offset, "no metadata region")),
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::block::MemSource;
    use std::sync::Arc;

    pub fn make_table(entries: &[(Guid, u64, u32, bool)]) -> Vec<u8> {
        let mut b = vec![0u8; TABLE_SIZE as usize];
        b[0..4].copy_from_slice(b"regi");
        b[8..12].copy_from_slice(&(entries.len() as u32).to_le_bytes());
        for (i, (g, off, len, req)) in entries.iter().enumerate() {
            let at = 16 + i * 32;
            b[at..at + 16].copy_from_slice(&g.0);
            b[at + 16..at + 24].copy_from_slice(&off.to_le_bytes());
            b[at + 24..at + 28].copy_from_slice(&len.to_le_bytes());
            b[at + 28..at + 32].copy_from_slice(&u32::from(*req).to_le_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn file_with(t1: Vec<u8>, t2: Vec<u8>) -> ImageFile {
        let mut f = vec![0u8; 8 << 20];
        f[192 * 1024..256 * 1024].copy_from_slice(&t1);
        f[256 * 1024..320 * 1024].copy_from_slice(&t2);
        ImageFile::new(Arc::new(MemSource(f)), "t.vhdx")
    }

    #[test]
    fn second_table_used_when_first_is_bad() {
        let good = make_table(&[(BAT_GUID, 3 << 20, 1 << 20, true), (METADATA_GUID, 2 << 20, 1 << 20, true)]);
        let mut bad = good.clone();
        bad[40] ^= 1;
        let r = read(&file_with(bad, good)).unwrap();
        assert_eq!(r.bat, Region { offset: 3 << 20, length: 1 << 20 });
    }

    #[test]
    fn unknown_required_region_refused_optional_ignored() {
        let other = Guid::new(1, 2, 3, [4; 8]);
        let t = make_table(&[
            (BAT_GUID, 3 << 20, 1 << 20, true),
            (METADATA_GUID, 2 << 20, 1 << 20, true),
            (other, 4 << 20, 1 << 20, false),
        ]);
        assert!(read(&file_with(t.clone(), t)).is_ok());
        let t = make_table(&[
            (BAT_GUID, 3 << 20, 1 << 20, true),
            (METADATA_GUID, 2 << 20, 1 << 20, true),
            (other, 4 << 20, 1 << 20, true),
        ]);
        let e = read(&file_with(t.clone(), t)).unwrap_err().to_string();
        assert!(e.contains("unsupported") && e.contains("unknown required region"), "{e}");
    }

    #[test]
    fn region_past_end_and_misaligned_refused() {
        let t = make_table(&[(BAT_GUID, 30 << 20, 1 << 20, true), (METADATA_GUID, 2 << 20, 1 << 20, true)]);
        assert!(read(&file_with(t.clone(), t)).unwrap_err().to_string().contains("beyond the end"));
        let t = make_table(&[(BAT_GUID, 3 << 20, 4096, true), (METADATA_GUID, 2 << 20, 1 << 20, true)]);
        assert!(read(&file_with(t.clone(), t)).unwrap_err().to_string().contains("aligned"));
    }
}

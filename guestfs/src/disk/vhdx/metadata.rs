//! The metadata region (MS-VHDX 2.6): its table of items and the system
//! items this reader needs. Unknown items marked required are refused: they
//! could change how the payload must be read.

use super::guid::Guid;
use super::region::Region;
use crate::block::ImageFile;
use crate::le::{bytes, u16le, u32le, u64le};
use crate::Result;

const TABLE_SIZE: u64 = 64 * 1024;
const MAX_ENTRIES: u16 = 2047;
const MAX_ITEM: u64 = 1 << 20;
const MIB: u64 = 1 << 20;

pub const FILE_PARAMETERS: Guid = Guid::new(0xCAA16737, 0xFA36, 0x4D43, [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B]);
pub const VIRTUAL_DISK_SIZE: Guid = Guid::new(0x2FA54224, 0xCD1B, 0x4876, [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8]);
pub const PAGE83_DATA: Guid = Guid::new(0xBECA12AB, 0xB2E6, 0x4523, [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46]);
pub const LOGICAL_SECTOR_SIZE: Guid = Guid::new(0x8141BF1D, 0xA96F, 0x4709, [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F]);
pub const PHYSICAL_SECTOR_SIZE: Guid = Guid::new(0xCDA348C7, 0x445D, 0x4471, [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56]);
pub const PARENT_LOCATOR: Guid = Guid::new(0xA8D35F2D, 0xB30B, 0x454D, [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C]);
/// The only parent locator type defined: a VHDX parent.
pub const VHDX_LOCATOR_TYPE: Guid = Guid::new(0xB04AEFB7, 0xD19E, 0x4A81, [0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13]);

#[derive(Clone, Debug)]
pub struct Metadata {
    pub block_size: u64,
    pub leave_blocks_allocated: bool,
    pub has_parent: bool,
    pub virtual_size: u64,
    pub logical_sector_size: u64,
    pub physical_sector_size: Option<u64>,
    pub page83: Option<Guid>,
    pub parent_locator: Option<ParentLocator>,
}

/// Key/value pairs of the parent locator, in file order.
#[derive(Clone, Debug, Default)]
pub struct ParentLocator {
    /// File offset of the item, for messages.
    pub offset: u64,
    pub entries: Vec<(String, String)>,
}

impl ParentLocator {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

pub fn read(file: &ImageFile, region: Region) -> Result<Metadata> {
    let table = file.read_vec("metadata table", region.offset, TABLE_SIZE)?;
    parse(file, &table, region)
}

fn parse(file: &ImageFile, table: &[u8], region: Region) -> Result<Metadata> {
    let at = region.offset;
    if table.get(0..8) != Some(b"metadata") {
        return Err(file.corrupt("metadata table", at, "signature is not \"metadata\""));
    }
    let count = u16le(table, 10);
    if count > MAX_ENTRIES {
        return Err(file.corrupt("metadata table", at, format!("{count} entries (at most {MAX_ENTRIES})")));
    }
    let mut items: Vec<(Guid, u64, u64, u64)> = Vec::new(); // id, file offset, length, entry offset
    for i in 0..usize::from(count) {
        let e = 32 + i * 32;
        let entry_offset = at + e as u64;
        let structure = format!("metadata table entry {i}");
        let id = Guid(bytes::<16>(table, e));
        let offset = u64::from(u32le(table, e + 16));
        let length = u64::from(u32le(table, e + 20));
        let flags = u32le(table, e + 24);
        let (is_user, is_required) = (flags & 1 != 0, flags & 4 != 0);
        if items.iter().any(|(g, ..)| *g == id) && !is_user {
            return Err(file.corrupt(&structure, entry_offset, format!("item {id} listed twice")));
        }
        if length > MAX_ITEM || (length > 0 && offset < TABLE_SIZE) || offset.saturating_add(length) > region.length {
            return Err(file.corrupt(
                &structure,
                entry_offset,
                format!("item {id} at {offset} length {length} does not lie inside the metadata region ({} bytes)", region.length),
            ));
        }
        let known = [FILE_PARAMETERS, VIRTUAL_DISK_SIZE, PAGE83_DATA, LOGICAL_SECTOR_SIZE, PHYSICAL_SECTOR_SIZE, PARENT_LOCATOR];
        if is_user || !known.contains(&id) {
            if is_required {
                return Err(file.unsupported(&structure, entry_offset, format!("unknown required metadata item {id}")));
            }
            continue;
        }
        items.push((id, region.offset + offset, length, entry_offset));
    }
    let item = |id: Guid, min_len: u64| -> Result<Option<(Vec<u8>, u64)>> {
        let Some(&(_, offset, length, entry_offset)) = items.iter().find(|(g, ..)| *g == id) else {
            return Ok(None);
        };
        if length < min_len {
            return Err(file.corrupt("metadata table entry", entry_offset, format!("item {id} is {length} bytes, shorter than {min_len}")));
        }
        Ok(Some((file.read_vec(&format!("metadata item {id}"), offset, length)?, offset)))
    };
    let missing = |what: &str| file.corrupt("metadata table", at, format!("required item {what} is missing"));

    let (params, params_at) = item(FILE_PARAMETERS, 8)?.ok_or_else(|| missing("file parameters"))?;
    let block_size = u64::from(u32le(&params, 0));
    let flags = u32le(&params, 4);
    if !block_size.is_power_of_two() || !(MIB..=256 * MIB).contains(&block_size) {
        return Err(file.corrupt(
            "file parameters",
            params_at,
            format!("block size {block_size} is not a power of two between 1 MiB and 256 MiB"),
        ));
    }

    let (lss, lss_at) = item(LOGICAL_SECTOR_SIZE, 4)?.ok_or_else(|| missing("logical sector size"))?;
    let logical_sector_size = u64::from(u32le(&lss, 0));
    if logical_sector_size != 512 && logical_sector_size != 4096 {
        return Err(file.corrupt("logical sector size", lss_at, format!("{logical_sector_size} (must be 512 or 4096)")));
    }
    let physical_sector_size = match item(PHYSICAL_SECTOR_SIZE, 4)? {
        Some((pss, pss_at)) => {
            let v = u64::from(u32le(&pss, 0));
            if v != 512 && v != 4096 {
                return Err(file.corrupt("physical sector size", pss_at, format!("{v} (must be 512 or 4096)")));
            }
            Some(v)
        }
        None => None,
    };

    let (vds, vds_at) = item(VIRTUAL_DISK_SIZE, 8)?.ok_or_else(|| missing("virtual disk size"))?;
    let virtual_size = u64le(&vds, 0);
    if virtual_size > crate::disk::MAX_VIRTUAL_SIZE {
        return Err(file.unsupported(
            "virtual disk size",
            vds_at,
            format!("{virtual_size} bytes is larger than the {} bytes accepted", crate::disk::MAX_VIRTUAL_SIZE),
        ));
    }
    if virtual_size % logical_sector_size != 0 {
        return Err(file.corrupt(
            "virtual disk size",
            vds_at,
            format!("{virtual_size} is not a multiple of the logical sector size {logical_sector_size}"),
        ));
    }
    let page83 = item(PAGE83_DATA, 16)?.map(|(b, _)| Guid(bytes::<16>(&b, 0)));
    let has_parent = flags & 2 != 0;
    let parent_locator = match item(PARENT_LOCATOR, 20)? {
        Some((b, offset)) if has_parent => Some(parse_locator(file, &b, offset)?),
        _ => None,
    };
    if has_parent && parent_locator.is_none() {
        return Err(missing("parent locator (the file parameters say the disk has a parent)"));
    }
    Ok(Metadata {
        block_size,
        leave_blocks_allocated: flags & 1 != 0,
        has_parent,
        virtual_size,
        logical_sector_size,
        physical_sector_size,
        page83,
        parent_locator,
    })
}

/// Parses a parent locator item (MS-VHDX 2.6.2.6): a header, then key/value
/// entries pointing at UTF-16LE strings inside the item.
pub fn parse_locator(file: &ImageFile, item: &[u8], offset: u64) -> Result<ParentLocator> {
    let structure = "parent locator";
    let kind = Guid(bytes::<16>(item, 0));
    if kind != VHDX_LOCATOR_TYPE {
        return Err(file.unsupported(structure, offset, format!("locator type {kind} (only VHDX parents are defined)")));
    }
    let count = usize::from(u16le(item, 18));
    let table_end = 20 + count * 12;
    if table_end > item.len() {
        return Err(file.corrupt(structure, offset, format!("{count} entries do not fit in the {} byte item", item.len())));
    }
    let string = |off: u32, len: u16, what: &str, i: usize| -> Result<String> {
        let (off, len) = (off as usize, usize::from(len));
        let bytes = off
            .checked_add(len)
            .filter(|_| len % 2 == 0 && off >= table_end)
            .and_then(|end| item.get(off..end))
            .ok_or_else(|| file.corrupt(structure, offset, format!("entry {i}: {what} at {off} length {len} lies outside the item")))?;
        let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        String::from_utf16(&units).map_err(|_| file.corrupt(structure, offset, format!("entry {i}: {what} is not valid UTF-16")))
    };
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let e = 20 + i * 12;
        let key = string(u32le(item, e), u16le(item, e + 8), "key", i)?;
        let value = string(u32le(item, e + 4), u16le(item, e + 10), "value", i)?;
        if key.is_empty() || entries.iter().any(|(k, _): &(String, String)| *k == key) {
            return Err(file.corrupt(structure, offset, format!("entry {i}: empty or repeated key {key:?}")));
        }
        entries.push((key, value));
    }
    Ok(ParentLocator { offset, entries })
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::block::MemSource;
    use std::sync::Arc;

    pub fn locator_item(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut b = vec![0u8; 20 + pairs.len() * 12];
        b[0..16].copy_from_slice(&VHDX_LOCATOR_TYPE.0);
        b[18..20].copy_from_slice(&(pairs.len() as u16).to_le_bytes());
        for (i, (k, v)) in pairs.iter().enumerate() {
            let e = 20 + i * 12;
            let mut put = |s: &str| -> (u32, u16) {
                let off = b.len() as u32;
                let enc: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
                b.extend_from_slice(&enc);
                (off, enc.len() as u16)
            };
            let (ko, kl) = put(k);
            let (vo, vl) = put(v);
            b[e..e + 4].copy_from_slice(&ko.to_le_bytes());
            b[e + 4..e + 8].copy_from_slice(&vo.to_le_bytes());
            b[e + 8..e + 10].copy_from_slice(&kl.to_le_bytes());
            b[e + 10..e + 12].copy_from_slice(&vl.to_le_bytes());
        }
        b
    }

    fn f() -> ImageFile {
        ImageFile::new(Arc::new(MemSource(vec![])), "t.vhdx")
    }

    #[test]
    fn locator_strings_parse() {
        let item = locator_item(&[("parent_linkage", "{0-0}"), ("relative_path", ".\\base.vhdx")]);
        let l = parse_locator(&f(), &item, 0).unwrap();
        assert_eq!(l.get("relative_path"), Some(".\\base.vhdx"));
        assert_eq!(l.get("parent_linkage"), Some("{0-0}"));
    }

    #[test]
    fn locator_out_of_bounds_refused() {
        let mut item = locator_item(&[("relative_path", "x")]);
        item[30..32].copy_from_slice(&4000u16.to_le_bytes()); // value length
        assert!(parse_locator(&f(), &item, 0).unwrap_err().to_string().contains("outside the item"));
        let mut item = locator_item(&[("relative_path", "x")]);
        item[18..20].copy_from_slice(&5000u16.to_le_bytes());
        assert!(parse_locator(&f(), &item, 0).is_err());
        let mut item = locator_item(&[("relative_path", "x")]);
        item[0] ^= 1;
        assert!(parse_locator(&f(), &item, 0).unwrap_err().to_string().contains("unsupported"));
    }

    pub fn make_metadata(items: &[(Guid, Vec<u8>, u32)]) -> Vec<u8> {
        let mut region = vec![0u8; MIB as usize];
        region[0..8].copy_from_slice(b"metadata");
        region[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
        let mut data_at = TABLE_SIZE as usize;
        for (i, (g, data, flags)) in items.iter().enumerate() {
            let e = 32 + i * 32;
            region[e..e + 16].copy_from_slice(&g.0);
            region[e + 16..e + 20].copy_from_slice(&(data_at as u32).to_le_bytes());
            region[e + 20..e + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
            region[e + 24..e + 28].copy_from_slice(&flags.to_le_bytes());
            region[data_at..data_at + data.len()].copy_from_slice(data);
            data_at += data.len().next_multiple_of(8);
        }
        region
    }

    fn basic(extra: Vec<(Guid, Vec<u8>, u32)>, block: u32, size: u64) -> Result<Metadata> {
        let mut items = vec![
            (FILE_PARAMETERS, [block.to_le_bytes(), 0u32.to_le_bytes()].concat(), 4),
            (VIRTUAL_DISK_SIZE, size.to_le_bytes().to_vec(), 6),
            (LOGICAL_SECTOR_SIZE, 512u32.to_le_bytes().to_vec(), 6),
        ];
        items.extend(extra);
        let region = make_metadata(&items);
        let file = ImageFile::new(Arc::new(MemSource(region)), "t.vhdx");
        read(&file, Region { offset: 0, length: MIB })
    }

    #[test]
    fn items_parse_and_bounds() {
        let m = basic(vec![], 1 << 25, 1 << 30).unwrap();
        assert_eq!((m.block_size, m.virtual_size, m.logical_sector_size), (1 << 25, 1 << 30, 512));
        assert!(basic(vec![], 3 << 20, 1 << 30).unwrap_err().to_string().contains("block size"));
        assert!(basic(vec![], 512 << 20, 1 << 30).unwrap_err().to_string().contains("block size"));
        assert!(basic(vec![], 1 << 20, 1 << 60).unwrap_err().to_string().contains("larger than"));
        assert!(basic(vec![], 1 << 20, 1000).unwrap_err().to_string().contains("multiple"));
    }

    #[test]
    fn unknown_required_item_refused() {
        let g = Guid::new(9, 9, 9, [9; 8]);
        assert!(basic(vec![(g, vec![1; 8], 0)], 1 << 20, 1 << 20).is_ok());
        let e = basic(vec![(g, vec![1; 8], 4)], 1 << 20, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("unknown required metadata item"), "{e}");
    }
}

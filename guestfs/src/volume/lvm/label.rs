//! LVM2 physical-volume label, PV header and metadata-area header.
//!
//! Layout (all little-endian): a 512-byte label sector in one of the first
//! four sectors, starting "LABELONE", its own sector number, a CRC over
//! bytes 20..512, the offset of the PV header and the type "LVM2 001". The
//! PV header holds the PV uuid (32 characters, no dashes), the device size
//! and two zero-terminated lists of (offset, size) byte ranges: data areas,
//! then metadata areas. Each metadata area starts with a 512-byte header
//! (CRC, magic, version, start, size, raw locations); the first raw
//! location points at the current metadata text inside the area, which is
//! a circular buffer: text running past the area's end continues right
//! after the 512-byte header.

use super::lvm_crc;
use crate::block::ImageFile;
use crate::le::{u32le, u64le};
use crate::Result;

pub(crate) const LABEL_ID: &[u8; 8] = b"LABELONE";
const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
const MDA_MAGIC: &[u8; 16] = b"\x20LVM2\x20x[5A%r0N*>";
const MDA_HEADER_SIZE: u64 = 512;
/// Metadata areas are 1 MiB by default; real VGs' text is kilobytes. A
/// larger text is refused before it is read.
pub(crate) const MAX_METADATA_TEXT: u64 = 16 << 20;
/// Bound on list lengths in the PV header (real PVs have one or two).
const MAX_AREAS: usize = 8;

pub(crate) struct PvLabel {
    /// 32 characters, without the dashes the metadata text shows.
    pub uuid: String,
    pub device_size: u64,
    /// Byte ranges of metadata areas on the PV.
    pub metadata_areas: Vec<(u64, u64)>,
}

/// The metadata text of one metadata area, with where it came from.
pub(crate) struct MetadataText {
    pub text: Vec<u8>,
    /// Byte offset of the text's first part on the PV.
    pub offset: u64,
}

/// Reads the label of `pv`: `Ok(None)` when none of the first four sectors
/// holds "LABELONE".
pub(crate) fn read_label(pv: &ImageFile) -> Result<Option<PvLabel>> {
    for n in 0..4u64 {
        let offset = n * 512;
        if pv.size() < offset + 512 {
            break;
        }
        let mut sector = [0u8; 512];
        pv.read("LVM label", offset, &mut sector)?;
        if sector.get(..8) != Some(&LABEL_ID[..]) {
            continue;
        }
        let bad = |why: String| pv.corrupt("LVM label", offset, why);
        let stored = u32le(&sector, 16);
        let crc = lvm_crc(sector.get(20..).unwrap_or_default());
        if crc != stored {
            return Err(bad(format!("label CRC mismatch (stored {stored:#010x}, computed {crc:#010x})")));
        }
        if u64le(&sector, 8) != n {
            return Err(bad(format!("label says it is in sector {}", u64le(&sector, 8))));
        }
        if sector.get(24..32) != Some(&LABEL_TYPE[..]) {
            return Err(pv.unsupported("LVM label", offset, format!("label type {:?} (only \"LVM2 001\" is known)", String::from_utf8_lossy(sector.get(24..32).unwrap_or_default()))));
        }
        let header = u32le(&sector, 20) as usize;
        // uuid (32) + size (8) + at least two list terminators (2 * 16).
        if header < 32 || header + 72 > 512 {
            return Err(bad(format!("PV header offset {header} does not fit in the label sector")));
        }
        let uuid_bytes = sector.get(header..header + 32).unwrap_or_default();
        if !uuid_bytes.iter().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad("PV uuid is not 32 alphanumeric characters".into()));
        }
        let uuid = String::from_utf8_lossy(uuid_bytes).into_owned();
        let device_size = u64le(&sector, header + 32);
        let mut pos = header + 40;
        let mut read_list = |what: &str| -> Result<Vec<(u64, u64)>> {
            let mut list = Vec::new();
            loop {
                if pos + 16 > 512 {
                    return Err(bad(format!("{what} list runs past the label sector")));
                }
                let (o, s) = (u64le(&sector, pos), u64le(&sector, pos + 8));
                pos += 16;
                if o == 0 {
                    return Ok(list);
                }
                if list.len() >= MAX_AREAS {
                    return Err(bad(format!("more than {MAX_AREAS} {what}s")));
                }
                list.push((o, s));
            }
        };
        let _data_areas = read_list("data area")?;
        let metadata_areas = read_list("metadata area")?;
        return Ok(Some(PvLabel { uuid, device_size, metadata_areas }));
    }
    Ok(None)
}

/// Reads the current metadata text of the metadata area at `area` (byte
/// offset and size on the PV). `Ok(None)` when the area holds no text
/// (a PV not yet in a VG, or an area LVM marked ignored).
pub(crate) fn read_metadata(pv: &ImageFile, area: (u64, u64)) -> Result<Option<MetadataText>> {
    let (area_start, area_size) = area;
    let header = pv.read_vec("LVM metadata area header", area_start, MDA_HEADER_SIZE)?;
    let bad = |why: String| pv.corrupt("LVM metadata area header", area_start, why);
    if header.get(4..20) != Some(&MDA_MAGIC[..]) {
        return Err(bad("bad magic".into()));
    }
    let stored = u32le(&header, 0);
    let crc = lvm_crc(header.get(4..).unwrap_or_default());
    if crc != stored {
        return Err(bad(format!("header CRC mismatch (stored {stored:#010x}, computed {crc:#010x})")));
    }
    let version = u32le(&header, 20);
    if version != 1 {
        return Err(pv.unsupported("LVM metadata area header", area_start, format!("version {version}")));
    }
    if u64le(&header, 24) != area_start {
        return Err(bad(format!("header says the area starts at {} (it is at {area_start})", u64le(&header, 24))));
    }
    let size = u64le(&header, 32);
    if size <= MDA_HEADER_SIZE || size > area_size || area_start.checked_add(size).is_none_or(|e| e > pv.size()) {
        return Err(bad(format!("area size {size} is invalid (area of {area_size} bytes on a PV of {} bytes)", pv.size())));
    }
    // The first raw location is the committed metadata.
    let (offset, text_size, checksum, flags) = (u64le(&header, 40), u64le(&header, 48), u32le(&header, 56), u32le(&header, 60));
    if offset == 0 || text_size == 0 || flags & 1 != 0 {
        return Ok(None);
    }
    let text_bad = |why: String| pv.corrupt("LVM metadata text", area_start.saturating_add(offset), why);
    if offset < MDA_HEADER_SIZE || offset >= size || text_size > size - MDA_HEADER_SIZE || text_size > MAX_METADATA_TEXT {
        return Err(text_bad(format!("text of {text_size} bytes at {offset} does not fit in the metadata area of {size} bytes")));
    }
    // Circular buffer: the part past the end of the area wraps to just after
    // the header.
    let first_len = text_size.min(size - offset);
    let mut text = pv.read_vec("LVM metadata text", area_start + offset, first_len)?;
    if first_len < text_size {
        let rest = pv.read_vec("LVM metadata text (wrapped part)", area_start + MDA_HEADER_SIZE, text_size - first_len)?;
        text.extend_from_slice(&rest);
    }
    let crc = lvm_crc(&text);
    if crc != checksum {
        return Err(text_bad(format!("metadata checksum mismatch (stored {checksum:#010x}, computed {crc:#010x})")));
    }
    Ok(Some(MetadataText { text, offset: area_start + offset }))
}

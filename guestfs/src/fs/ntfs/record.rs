//! The NTFS boot sector, MFT ("FILE") records with their update-sequence
//! fixups, the attributes inside a record, and data-run lists.

use crate::block::ImageFile;
use crate::le::{u16le, u32le, u64le};
use crate::Result;

/// Sector stride of the update-sequence array: always 512 bytes, whatever
/// the device sector size (the fixup protects each 512-byte block).
const FIXUP_STRIDE: usize = 512;

/// Largest MFT/index record we accept (Windows uses 1 KiB / 4 KiB).
const MAX_RECORD_SIZE: u64 = 64 * 1024;
/// Largest cluster we accept (NTFS allows up to 2 MiB).
const MAX_CLUSTER_SIZE: u64 = 2 * 1024 * 1024;

// Some fields are kept for diagnostics (Debug) only.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct BootSector {
    pub cluster_size: u64,
    pub total_bytes: u64,
    pub mft_lcn: u64,
    pub mft_record_size: u64,
    pub index_record_size: u64,
    pub serial: u64,
}

/// `Ok(None)` when the OEM id is not `NTFS    ` (not an NTFS volume).
pub fn parse_boot(file: &ImageFile) -> Result<Option<BootSector>> {
    if file.size() < 512 {
        return Ok(None);
    }
    let mut b = [0u8; 512];
    file.read("NTFS boot sector", 0, &mut b)?;
    if b.get(3..11) != Some(b"NTFS    ".as_slice()) {
        return Ok(None);
    }
    let bad = |why: &str| file.corrupt("NTFS boot sector", 0, why.to_string());
    let bytes_per_sector = u64::from(u16le(&b, 0x0B));
    if !(256..=4096).contains(&bytes_per_sector) || !bytes_per_sector.is_power_of_two() {
        return Err(bad("bytes per sector is not a power of two between 256 and 4096"));
    }
    // Values above 0x80 are a negative power of two (clusters > 64 KiB).
    let spc = b[0x0D];
    let cluster_size = if spc <= 0x80 {
        bytes_per_sector * u64::from(spc)
    } else {
        1u64.checked_shl(256 - u32::from(spc)).unwrap_or(0)
    };
    if cluster_size == 0 || !cluster_size.is_power_of_two() || cluster_size > MAX_CLUSTER_SIZE {
        return Err(bad("invalid sectors per cluster"));
    }
    let record_size = |v: u8| -> Option<u64> {
        let v = v as i8;
        let size = if v > 0 { cluster_size.checked_mul(v as u64)? } else { 1u64.checked_shl(u32::from(v.unsigned_abs()))? };
        (size >= 512 && size <= MAX_RECORD_SIZE && size.is_power_of_two()).then_some(size)
    };
    let mft_record_size = record_size(b[0x40]).ok_or_else(|| bad("invalid MFT record size"))?;
    let index_record_size = record_size(b[0x44]).ok_or_else(|| bad("invalid index record size"))?;
    let total_bytes = u64le(&b, 0x28).checked_mul(bytes_per_sector).ok_or_else(|| bad("sector count overflows"))?;
    let mft_lcn = u64le(&b, 0x30);
    if mft_lcn.checked_mul(cluster_size).is_none_or(|o| o >= file.size()) {
        return Err(bad("the MFT lies beyond the end of the volume"));
    }
    Ok(Some(BootSector { cluster_size, total_bytes, mft_lcn, mft_record_size, index_record_size, serial: u64le(&b, 0x48) }))
}

/// Applies the update-sequence fixups of a multi-sector record (`FILE` or
/// `INDX`) in place, checking its magic. `what`/`offset` name it in errors.
pub fn apply_fixups(file: &ImageFile, buf: &mut [u8], magic: &[u8; 4], what: &str, offset: u64) -> Result<()> {
    if buf.get(0..4) != Some(magic.as_slice()) {
        if buf.iter().take(4).all(|&b| b == 0) {
            return Err(file.corrupt(what, offset, "record is empty (all zero signature)"));
        }
        return Err(file.corrupt(what, offset, format!("bad signature (expected {:?})", String::from_utf8_lossy(magic))));
    }
    let usa_off = usize::from(u16le(buf, 4));
    let usa_count = usize::from(u16le(buf, 6));
    let sectors = buf.len() / FIXUP_STRIDE;
    if usa_count != sectors + 1 || usa_off.checked_add(usa_count * 2).is_none_or(|e| e > FIXUP_STRIDE - 2) || usa_off % 2 != 0 {
        return Err(file.corrupt(what, offset, "update sequence array does not fit the record"));
    }
    let usn = [buf[usa_off], buf[usa_off + 1]];
    for i in 0..sectors {
        let end = (i + 1) * FIXUP_STRIDE;
        if buf[end - 2..end] != usn {
            return Err(file.corrupt(
                what,
                offset + (end - 2) as u64,
                format!("update sequence mismatch in sector {i} (torn or corrupt write)"),
            ));
        }
        let fix = usa_off + 2 * (i + 1);
        let v = [buf[fix], buf[fix + 1]];
        buf[end - 2..end].copy_from_slice(&v);
    }
    Ok(())
}

pub const ATTR_STANDARD_INFORMATION: u32 = 0x10;
pub const ATTR_ATTRIBUTE_LIST: u32 = 0x20;
pub const ATTR_FILE_NAME: u32 = 0x30;
pub const ATTR_DATA: u32 = 0x80;
pub const ATTR_INDEX_ROOT: u32 = 0x90;
pub const ATTR_INDEX_ALLOCATION: u32 = 0xA0;
pub const ATTR_BITMAP: u32 = 0xB0;
pub const ATTR_REPARSE_POINT: u32 = 0xC0;
pub const ATTR_LOGGED_UTILITY_STREAM: u32 = 0x100;

pub const ATTR_FLAG_COMPRESSED: u16 = 0x0001;
pub const ATTR_FLAG_ENCRYPTED: u16 = 0x4000;

/// One extent of a data run list: `len` clusters at virtual cluster `vcn`,
/// stored at `lcn` (`None`: a sparse hole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub vcn: u64,
    pub len: u64,
    pub lcn: Option<u64>,
}

// Some fields are kept for diagnostics (Debug) only.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub enum AttrBody {
    Resident(Vec<u8>),
    NonResident {
        start_vcn: u64,
        last_vcn: u64,
        runs: Vec<Run>,
        /// log2 of clusters per compression unit; 0 when not compressed.
        compression_unit: u8,
        /// Sizes are only meaningful in the extent with `start_vcn == 0`.
        allocated_size: u64,
        data_size: u64,
        initialized_size: u64,
    },
}

#[derive(Clone, Debug)]
pub struct Attribute {
    pub ty: u32,
    pub name: Vec<u16>,
    pub flags: u16,
    pub body: AttrBody,
    /// Byte offset of the attribute header in the volume, for errors.
    pub offset: u64,
}

/// A fixed-up MFT record with its attributes parsed.
// Some fields are kept for diagnostics (Debug) only.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct MftRecord {
    pub number: u64,
    pub sequence: u16,
    pub link_count: u16,
    pub flags: u16,
    pub base_record: u64,
    pub attributes: Vec<Attribute>,
}

pub const RECORD_IN_USE: u16 = 0x0001;
pub const RECORD_IS_DIRECTORY: u16 = 0x0002;

/// Parses the record `number` whose raw bytes (already read) are `buf`,
/// found at volume offset `offset`.
pub fn parse_record(file: &ImageFile, mut buf: Vec<u8>, number: u64, offset: u64, cluster_size: u64) -> Result<MftRecord> {
    let what = format!("MFT record {number}");
    apply_fixups(file, &mut buf, b"FILE", &what, offset)?;
    let flags = u16le(&buf, 0x16);
    let used = (u32le(&buf, 0x18) as usize).min(buf.len());
    let mut attributes = Vec::new();
    let mut pos = usize::from(u16le(&buf, 0x14));
    // Each attribute is at least 24 bytes, so this loop ends within the record.
    loop {
        let hdr = buf.get(pos..used.max(pos)).unwrap_or(&[]);
        if hdr.len() < 4 {
            return Err(file.corrupt(&what, offset + pos as u64, "attribute list runs past the used part of the record"));
        }
        let ty = u32le(hdr, 0);
        if ty == 0xFFFF_FFFF {
            break;
        }
        let len = u32le(hdr, 4) as usize;
        if len < 24 || len > hdr.len() || len % 8 != 0 {
            return Err(file.corrupt(&what, offset + pos as u64, format!("attribute of type {ty:#x} has invalid length {len}")));
        }
        let a = &hdr[..len];
        let at = offset + pos as u64;
        let bad = |why: &str| file.corrupt(&what, at, format!("attribute {ty:#x}: {why}"));
        let name_len = usize::from(a[9]);
        let name_off = usize::from(u16le(a, 0x0A));
        let name = a
            .get(name_off..name_off + name_len * 2)
            .ok_or_else(|| bad("name lies outside the attribute"))?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let flags = u16le(a, 0x0C);
        let body = if a[8] == 0 {
            let vlen = u32le(a, 0x10) as usize;
            let voff = usize::from(u16le(a, 0x14));
            let v = voff.checked_add(vlen).and_then(|e| a.get(voff..e)).ok_or_else(|| bad("resident value lies outside the attribute"))?;
            AttrBody::Resident(v.to_vec())
        } else {
            if len < 0x40 {
                return Err(bad("non-resident header too short"));
            }
            let start_vcn = u64le(a, 0x10);
            let last_vcn = u64le(a, 0x18);
            let runs_off = usize::from(u16le(a, 0x20));
            let runs_bytes = a.get(runs_off..).ok_or_else(|| bad("data runs lie outside the attribute"))?;
            let runs = parse_runs(runs_bytes, start_vcn).map_err(|why| bad(&why))?;
            let cu = u16le(a, 0x22);
            if cu > 16 {
                return Err(bad("compression unit too large"));
            }
            let (allocated_size, data_size, initialized_size) = (u64le(a, 0x28), u64le(a, 0x30), u64le(a, 0x38));
            // Sizes beyond what the volume could address are corrupt, and
            // checking here keeps later arithmetic from overflowing.
            let limit = 1u64 << 60;
            if allocated_size > limit || data_size > limit || initialized_size > limit {
                return Err(bad("attribute size is impossibly large"));
            }
            let _ = cluster_size;
            AttrBody::NonResident {
                start_vcn,
                last_vcn,
                runs,
                compression_unit: cu as u8,
                allocated_size,
                data_size,
                initialized_size,
            }
        };
        attributes.push(Attribute { ty, name, flags, body, offset: at });
        pos += len;
    }
    Ok(MftRecord {
        number,
        sequence: u16le(&buf, 0x10),
        link_count: u16le(&buf, 0x12),
        flags,
        base_record: u64le(&buf, 0x20) & 0x0000_FFFF_FFFF_FFFF,
        attributes,
    })
}

/// Decodes a mapping-pairs array into runs starting at `start_vcn`.
pub fn parse_runs(bytes: &[u8], start_vcn: u64) -> std::result::Result<Vec<Run>, String> {
    let mut runs = Vec::new();
    let mut pos = 0usize;
    let mut vcn = start_vcn;
    let mut lcn: i64 = 0;
    loop {
        let Some(&h) = bytes.get(pos) else { return Err("data run list is not terminated".into()) };
        if h == 0 {
            break;
        }
        let (len_size, off_size) = (usize::from(h & 0x0F), usize::from(h >> 4));
        if len_size == 0 || len_size > 8 || off_size > 8 {
            return Err(format!("data run header {h:#04x} is invalid"));
        }
        let field = bytes.get(pos + 1..pos + 1 + len_size + off_size).ok_or("data run lies outside the attribute")?;
        let mut len = 0u64;
        for (i, b) in field[..len_size].iter().enumerate() {
            len |= u64::from(*b) << (8 * i);
        }
        if len == 0 || len > (1 << 48) {
            return Err("data run length is zero or impossibly large".into());
        }
        let run_lcn = if off_size == 0 {
            None
        } else {
            let off_bytes = &field[len_size..];
            let mut delta = 0i64;
            for (i, b) in off_bytes.iter().enumerate() {
                delta |= i64::from(*b) << (8 * i);
            }
            // Sign-extend from the top byte given.
            let shift = 64 - 8 * off_size as u32;
            if shift > 0 {
                delta = (delta << shift) >> shift;
            }
            lcn = lcn.checked_add(delta).ok_or("data run offset overflows")?;
            Some(u64::try_from(lcn).map_err(|_| "data run points before the start of the volume")?)
        };
        runs.push(Run { vcn, len, lcn: run_lcn });
        vcn = vcn.checked_add(len).ok_or("data run VCN overflows")?;
        if runs.len() > 1 << 20 {
            return Err("too many data runs".into());
        }
        pos += 1 + len_size + off_size;
    }
    Ok(runs)
}

pub fn utf16_name(units: &[u16]) -> Vec<u8> {
    // Unpaired surrogates become U+FFFD, the same as ntfs-3g's default
    // conversion would refuse them; they cannot occur in names Windows made.
    char::decode_utf16(units.iter().copied())
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect::<String>()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_decode_with_negative_offsets_and_holes() {
        // 0x21: 1 byte length, 2 byte offset: 0x10 clusters at 0x1234;
        // 0x01: sparse 5 clusters; 0x11: 3 clusters at -0x10 relative.
        let b = [0x21, 0x10, 0x34, 0x12, 0x01, 0x05, 0x11, 0x03, 0xF0, 0x00];
        let r = parse_runs(&b, 0).unwrap();
        assert_eq!(
            r,
            vec![
                Run { vcn: 0, len: 0x10, lcn: Some(0x1234) },
                Run { vcn: 0x10, len: 5, lcn: None },
                Run { vcn: 0x15, len: 3, lcn: Some(0x1224) },
            ]
        );
        assert!(parse_runs(&[0x21, 0x10], 0).is_err());
        assert!(parse_runs(&[0x11, 0x01, 0xFF, 0x00], 0).is_err(), "before volume start");
        assert!(parse_runs(&[], 0).is_err());
    }

    #[test]
    fn fixups_detect_torn_sectors() {
        let f = ImageFile::new(std::sync::Arc::new(crate::block::MemSource(vec![])), "mem");
        let mut rec = vec![0u8; 1024];
        rec[0..4].copy_from_slice(b"FILE");
        rec[4] = 0x30;
        rec[6] = 3;
        rec[0x30] = 0xAB;
        rec[0x31] = 0xCD;
        rec[0x32] = 1;
        rec[0x34] = 2;
        rec[510] = 0xAB;
        rec[511] = 0xCD;
        rec[1022] = 0xAB;
        rec[1023] = 0xCD;
        let mut ok = rec.clone();
        apply_fixups(&f, &mut ok, b"FILE", "r", 0).unwrap();
        assert_eq!((ok[510], ok[1022]), (1, 2));
        let mut torn = rec.clone();
        torn[1023] = 0;
        assert!(apply_fixups(&f, &mut torn, b"FILE", "r", 0).unwrap_err().to_string().contains("update sequence mismatch"));
        let mut bad = rec;
        bad[0] = b'B';
        assert!(apply_fixups(&f, &mut bad, b"FILE", "r", 0).unwrap_err().to_string().contains("bad signature"));
    }
}

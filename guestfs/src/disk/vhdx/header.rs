//! The file type identifier and the two headers (MS-VHDX 2.2.1, 2.2.2).
//!
//! Headers are never updated through the log (the log is found through
//! them), so they are read from the file itself, never through the replay
//! overlay.

use super::guid::Guid;
use crate::block::ImageFile;
use crate::le::{bytes, u16le, u32le, u64le};
use crate::Result;

pub const HEADER1_OFFSET: u64 = 64 * 1024;
pub const HEADER2_OFFSET: u64 = 128 * 1024;
const HEADER_SIZE: usize = 4096;
const MIB: u64 = 1 << 20;

#[derive(Clone, Debug)]
pub struct Header {
    /// File offset of the header in use (64 KiB or 128 KiB), for messages.
    pub offset: u64,
    pub sequence: u64,
    pub data_write_guid: Guid,
    pub log_guid: Guid,
    pub log_version: u16,
    pub version: u16,
    pub log_length: u32,
    pub log_offset: u64,
}

/// Checks the file type identifier and returns the current header: the
/// valid one (signature and CRC-32C) with the highest sequence number.
pub fn read_current(file: &ImageFile) -> Result<Header> {
    let mut ident = [0u8; 8];
    file.read("file type identifier", 0, &mut ident)?;
    if &ident != b"vhdxfile" {
        return Err(file.corrupt("file type identifier", 0, "signature is not \"vhdxfile\""));
    }
    let first = read_one(file, HEADER1_OFFSET)?;
    let second = read_one(file, HEADER2_OFFSET)?;
    let current = match (first, second) {
        (Some(a), Some(b)) => {
            if b.sequence > a.sequence {
                b
            } else {
                a
            }
        }
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => {
            return Err(file.corrupt(
                "VHDX header",
                HEADER1_OFFSET,
                "neither header (at 64 KiB and 128 KiB) has a valid signature and CRC-32C",
            ))
        }
    };
    validate(file, &current)?;
    Ok(current)
}

/// Parses one header; `None` when its signature or checksum is wrong (the
/// other copy may still be good: that is why there are two).
fn read_one(file: &ImageFile, offset: u64) -> Result<Option<Header>> {
    let mut buf = vec![0u8; HEADER_SIZE];
    file.read("VHDX header", offset, &mut buf)?;
    Ok(parse(&buf, offset))
}

pub fn parse(buf: &[u8], offset: u64) -> Option<Header> {
    if buf.len() != HEADER_SIZE || buf.get(0..4) != Some(b"head") {
        return None;
    }
    let stored = u32le(buf, 4);
    let mut copy = buf.to_vec();
    copy.get_mut(4..8)?.fill(0);
    if crc32c::crc32c(&copy) != stored {
        return None;
    }
    Some(Header {
        offset,
        sequence: u64le(buf, 8),
        data_write_guid: Guid(bytes::<16>(buf, 32)),
        log_guid: Guid(bytes::<16>(buf, 48)),
        log_version: u16le(buf, 64),
        version: u16le(buf, 66),
        log_length: u32le(buf, 68),
        log_offset: u64le(buf, 72),
    })
}

fn validate(file: &ImageFile, h: &Header) -> Result<()> {
    if h.version != 1 {
        return Err(file.unsupported("VHDX header", h.offset, format!("version {} (only 1 is defined)", h.version)));
    }
    if h.log_version != 0 {
        return Err(file.unsupported("VHDX header", h.offset, format!("log version {} (only 0 is defined)", h.log_version)));
    }
    if !h.log_guid.is_zero() {
        // The log is only used when it has to be replayed; its location
        // matters only then.
        let len = u64::from(h.log_length);
        if len == 0 || len % MIB != 0 || h.log_offset < MIB || h.log_offset % MIB != 0 {
            return Err(file.corrupt(
                "VHDX header",
                h.offset,
                format!("log at offset {} length {} is not 1 MiB aligned", h.log_offset, h.log_length),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;
    use std::sync::Arc;

    pub fn make_header(seq: u64, log_guid: [u8; 16]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(b"head");
        b[8..16].copy_from_slice(&seq.to_le_bytes());
        b[32..48].copy_from_slice(&[7u8; 16]);
        b[48..64].copy_from_slice(&log_guid);
        b[66..68].copy_from_slice(&1u16.to_le_bytes());
        b[68..72].copy_from_slice(&(MIB as u32).to_le_bytes());
        b[72..80].copy_from_slice(&MIB.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn image(h1: Option<Vec<u8>>, h2: Option<Vec<u8>>) -> ImageFile {
        let mut f = vec![0u8; 192 * 1024];
        f[0..8].copy_from_slice(b"vhdxfile");
        if let Some(h) = h1 {
            f[64 * 1024..68 * 1024].copy_from_slice(&h);
        }
        if let Some(h) = h2 {
            f[128 * 1024..132 * 1024].copy_from_slice(&h);
        }
        ImageFile::new(Arc::new(MemSource(f)), "t.vhdx")
    }

    #[test]
    fn highest_valid_sequence_wins() {
        let h = read_current(&image(Some(make_header(5, [0; 16])), Some(make_header(6, [0; 16])))).unwrap();
        assert_eq!((h.sequence, h.offset), (6, HEADER2_OFFSET));
        let h = read_current(&image(Some(make_header(9, [0; 16])), Some(make_header(6, [0; 16])))).unwrap();
        assert_eq!((h.sequence, h.offset), (9, HEADER1_OFFSET));
    }

    #[test]
    fn bad_crc_falls_back_to_other_copy() {
        let mut newer = make_header(10, [0; 16]);
        newer[100] ^= 1;
        let h = read_current(&image(Some(make_header(3, [0; 16])), Some(newer))).unwrap();
        assert_eq!(h.sequence, 3);
    }

    #[test]
    fn both_bad_is_corrupt() {
        let mut a = make_header(1, [0; 16]);
        a[0] = b'x';
        let e = read_current(&image(Some(a), None)).unwrap_err().to_string();
        assert!(e.contains("neither header"), "{e}");
    }

    #[test]
    fn unknown_version_refused() {
        let mut h = make_header(1, [0; 16]);
        h[66] = 2;
        h[4..8].fill(0);
        let crc = crc32c::crc32c(&h);
        h[4..8].copy_from_slice(&crc.to_le_bytes());
        let e = read_current(&image(Some(h), None)).unwrap_err().to_string();
        assert!(e.contains("unsupported"), "{e}");
    }

    #[test]
    fn wrong_identifier_refused() {
        let f = ImageFile::new(Arc::new(MemSource(vec![0u8; 200 * 1024])), "t.vhdx");
        assert!(read_current(&f).unwrap_err().to_string().contains("vhdxfile"));
    }
}

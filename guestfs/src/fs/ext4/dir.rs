//! Directory blocks. Hash-tree (htree) directories need no special code to
//! list: their index blocks look like one empty entry spanning the block
//! (and the root's index hides behind `..`'s record length), so a linear
//! walk over all blocks sees every name exactly once.

use crate::le::{u16le, u32le};

/// One raw directory entry, `.` and `..` included.
#[derive(Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub ino: u32,
    pub name: Vec<u8>,
    /// `file_type` byte (0 when the filesystem has no FILETYPE feature).
    pub file_type: u8,
}

/// Record length as stored; 64 KiB blocks encode their full length as 0
/// or 65535.
fn rec_len(raw: u16, block_len: usize) -> usize {
    if raw == 0 || raw == 65535 {
        block_len.min(65536)
    } else {
        usize::from(raw)
    }
}

/// Parses one directory block (or the inline-data area). Returns the
/// entries, or the offset in `block` and a reason when a record is bad.
pub fn parse_block(block: &[u8], filetype: bool, out: &mut Vec<RawEntry>) -> Result<(), (usize, String)> {
    let mut pos = 0usize;
    while pos + 8 <= block.len() {
        let ino = u32le(block, pos);
        let len = rec_len(u16le(block, pos + 4), block.len());
        let (name_len, file_type) = if filetype {
            (usize::from(block.get(pos + 6).copied().unwrap_or(0)), block.get(pos + 7).copied().unwrap_or(0))
        } else {
            (usize::from(u16le(block, pos + 6) & 0xFF), 0)
        };
        if len < 8 || len % 4 != 0 || pos + len > block.len() {
            return Err((pos, format!("record length {len} is invalid")));
        }
        if ino != 0 {
            if 8 + name_len > len || name_len == 0 {
                return Err((pos, format!("name length {name_len} does not fit record length {len}")));
            }
            let name = block.get(pos + 8..pos + 8 + name_len).unwrap_or_default().to_vec();
            out.push(RawEntry { ino, name, file_type });
        }
        pos += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ino: u32, name: &[u8], len: u16, ft: u8) -> Vec<u8> {
        let mut r = ino.to_le_bytes().to_vec();
        r.extend_from_slice(&len.to_le_bytes());
        r.push(name.len() as u8);
        r.push(ft);
        r.extend_from_slice(name);
        r.resize(usize::from(len), 0);
        r
    }

    #[test]
    fn parses_and_skips_empty_records() {
        let mut b = rec(2, b".", 12, 2);
        b.extend(rec(0, b"", 12, 0));
        b.extend(rec(13, b"hello", 1024 - 24, 1));
        let mut out = Vec::new();
        parse_block(&b, true, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], RawEntry { ino: 13, name: b"hello".to_vec(), file_type: 1 });
    }

    #[test]
    fn bad_record_length_is_an_error() {
        let mut b = rec(2, b".", 12, 2);
        b.extend(rec(13, b"x", 12, 1));
        b[12 + 4..12 + 6].copy_from_slice(&5000u16.to_le_bytes());
        b.resize(1024, 0);
        let mut out = Vec::new();
        assert_eq!(parse_block(&b, true, &mut out).unwrap_err().0, 12);
        let mut b = rec(2, b".", 12, 2);
        b.extend(rec(13, b"x", 12, 1));
        b[12 + 6] = 200; // name longer than its record
        let mut out = Vec::new();
        assert!(parse_block(&b, true, &mut out).is_err());
    }
}

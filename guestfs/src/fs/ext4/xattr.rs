//! Extended attributes: the in-inode area (after `i_extra_isize`) and the
//! external xattr block (`i_file_acl`). Names are rebuilt from their
//! prefix index; POSIX ACLs are converted from ext4's compact on-disk form
//! to the form the kernel's `getxattr` returns, so a backup restores them.

use crate::le::{u16le, u32le};

pub const XATTR_MAGIC: u32 = 0xEA02_0000;

/// One raw entry: a value inline, or in an EA inode (`ea_inode` feature).
#[derive(Debug, PartialEq, Eq)]
pub struct RawXattr {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: RawValue,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RawValue {
    Inline(Vec<u8>),
    Inode { ino: u32, size: u32 },
}

/// Parses the entry table starting at `entries` in `area`; value offsets
/// count from `value_base`. Errors are a reason string; the caller names
/// the structure.
pub fn parse_entries(area: &[u8], entries: usize, value_base: usize) -> Result<Vec<RawXattr>, String> {
    let mut out = Vec::new();
    let mut pos = entries;
    loop {
        let Some(head) = area.get(pos..pos + 16) else {
            // The table may end exactly at the end of the area.
            if area.get(pos..pos + 4).is_none_or(|w| w.iter().all(|&b| b == 0)) {
                return Ok(out);
            }
            return Err(format!("entry at {pos} runs past the end"));
        };
        if u32le(head, 0) == 0 {
            return Ok(out);
        }
        let name_len = usize::from(head[0]);
        let index = head[1];
        let value_offs = usize::from(u16le(head, 2));
        let value_inum = u32le(head, 4);
        let value_size = u32le(head, 8);
        let name = area.get(pos + 16..pos + 16 + name_len).ok_or_else(|| format!("entry name at {pos} runs past the end"))?.to_vec();
        let value = if value_inum != 0 {
            RawValue::Inode { ino: value_inum, size: value_size }
        } else {
            let start = value_base.checked_add(value_offs).ok_or("value offset overflows")?;
            let end = start.checked_add(usize::try_from(value_size).map_err(|_| "value size")?).ok_or("value size overflows")?;
            let v = area.get(start..end).ok_or_else(|| format!("value of {} bytes at {start} runs past the end", value_size))?;
            RawValue::Inline(v.to_vec())
        };
        out.push(RawXattr { index, name, value });
        pos += (16 + name_len + 3) & !3;
        if out.len() > 65536 {
            return Err("too many entries".into());
        }
    }
}

/// The full attribute name, or `None` for attributes the kernel does not
/// list (`system.data`, the inline-data area) or unknown prefixes.
pub fn full_name(index: u8, name: &[u8]) -> Option<Vec<u8>> {
    let prefix: &[u8] = match index {
        1 => b"user.",
        2 => return Some(b"system.posix_acl_access".to_vec()),
        3 => return Some(b"system.posix_acl_default".to_vec()),
        4 => b"trusted.",
        6 => b"security.",
        7 if name == b"data" => return None,
        7 => b"system.",
        8 => return Some(b"system.richacl".to_vec()),
        _ => return None,
    };
    let mut n = prefix.to_vec();
    n.extend_from_slice(name);
    Some(n)
}

/// ext4's ACL format (version 1; 4-byte entries for owner/group/mask/other,
/// 8-byte entries with an id for named users and groups) to the kernel's
/// xattr format (version 2; every entry 8 bytes, id -1 where none).
pub fn acl_to_xattr(disk: &[u8]) -> Option<Vec<u8>> {
    if u32le(disk.get(0..4)?, 0) != 1 {
        return None;
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    let mut pos = 4;
    while pos < disk.len() {
        let tag = u16le(disk.get(pos..pos + 4)?, 0);
        let perm = u16le(disk.get(pos..pos + 4)?, 2);
        let (id, len) = match tag {
            0x02 | 0x08 => (u32le(disk.get(pos + 4..pos + 8)?, 0), 8),
            0x01 | 0x04 | 0x10 | 0x20 => (u32::MAX, 4),
            _ => return None,
        };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        pos += len;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u8, name: &[u8], offs: u16, size: u32) -> Vec<u8> {
        let mut e = vec![name.len() as u8, index];
        e.extend_from_slice(&offs.to_le_bytes());
        e.extend_from_slice(&0u32.to_le_bytes());
        e.extend_from_slice(&size.to_le_bytes());
        e.extend_from_slice(&0u32.to_le_bytes());
        e.extend_from_slice(name);
        while e.len() % 4 != 0 {
            e.push(0);
        }
        e
    }

    #[test]
    fn parses_entries_and_names() {
        let mut area = entry(1, b"x", 60, 3);
        area.extend(vec![0u8; 64 - area.len()]);
        area[60..63].copy_from_slice(b"abc");
        let v = parse_entries(&area, 0, 0).unwrap();
        assert_eq!(v, vec![RawXattr { index: 1, name: b"x".to_vec(), value: RawValue::Inline(b"abc".to_vec()) }]);
        assert_eq!(full_name(1, b"x").unwrap(), b"user.x");
        assert_eq!(full_name(7, b"data"), None);
    }

    #[test]
    fn value_out_of_bounds_is_an_error() {
        let mut area = entry(1, b"x", 60, 300);
        area.extend(vec![0u8; 64 - area.len()]);
        assert!(parse_entries(&area, 0, 0).is_err());
    }

    #[test]
    fn acl_conversion() {
        let mut d = 1u32.to_le_bytes().to_vec();
        d.extend_from_slice(&[1, 0, 6, 0]); // USER_OBJ rw
        d.extend_from_slice(&[2, 0, 4, 0, 0xE8, 3, 0, 0]); // USER 1000 r
        let x = acl_to_xattr(&d).unwrap();
        assert_eq!(x.len(), 4 + 16);
        assert_eq!(&x[4..12], &[1, 0, 6, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(&x[12..20], &[2, 0, 4, 0, 0xE8, 3, 0, 0]);
    }
}

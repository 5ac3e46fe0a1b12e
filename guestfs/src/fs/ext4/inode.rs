//! One on-disk inode, decoded: type, permissions, owners, times with
//! nanoseconds, size, flags and the 60-byte `i_block` area (extent root,
//! block map, fast-symlink target or inline data).

use crate::fs::{FileKind, Timestamp};
use crate::le::{u16le, u32le};

pub const FLAG_ENCRYPT: u32 = 0x800;
pub const FLAG_HUGE_FILE: u32 = 0x40000;
pub const FLAG_EXTENTS: u32 = 0x80000;
pub const FLAG_INLINE_DATA: u32 = 0x10000000;

/// Size of the classic inode; fields past it exist when `i_extra_isize`
/// covers them.
const GOOD_OLD_INODE_SIZE: usize = 128;

#[derive(Clone, Debug)]
pub struct Inode {
    pub ino: u32,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    pub flags: u32,
    /// 512-byte sectors (or blocks with HUGE_FILE), for fast-symlink tests.
    pub blocks: u64,
    pub file_acl: u64,
    pub i_block: [u8; 60],
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub btime: Option<Timestamp>,
    /// The in-inode extended-attribute area (after `i_extra_isize`), empty
    /// for 128-byte inodes.
    pub inline_xattrs: Vec<u8>,
}

impl Inode {
    /// Decodes `raw` (exactly one inode-size record). `None` when the
    /// extra-size field points outside the record.
    pub fn parse(ino: u32, raw: &[u8]) -> Option<Inode> {
        if raw.len() < GOOD_OLD_INODE_SIZE {
            return None;
        }
        let extra_isize = if raw.len() > GOOD_OLD_INODE_SIZE { usize::from(u16le(raw, 0x80)) } else { 0 };
        let extra_end = GOOD_OLD_INODE_SIZE.checked_add(extra_isize)?;
        if extra_end > raw.len() || extra_isize % 4 != 0 {
            return None;
        }
        // A field in the extra area counts only when i_extra_isize covers it.
        let has = |off: usize, len: usize| off + len <= extra_end;
        let time = |base: usize, extra: usize| {
            let secs = i64::from(u32le(raw, base) as i32);
            if has(extra, 4) {
                let x = u32le(raw, extra);
                // Low two bits extend the epoch; the rest are nanoseconds.
                Timestamp { secs: secs + (i64::from(x & 3) << 32), nanos: (x >> 2).min(999_999_999) }
            } else {
                Timestamp { secs, nanos: 0 }
            }
        };
        let btime = has(0x90, 4).then(|| time(0x90, 0x94));
        let mut i_block = [0u8; 60];
        i_block.copy_from_slice(raw.get(0x28..0x64)?);
        Some(Inode {
            ino,
            mode: u16le(raw, 0x0),
            uid: u32::from(u16le(raw, 0x2)) | (u32::from(u16le(raw, 0x78)) << 16),
            gid: u32::from(u16le(raw, 0x18)) | (u32::from(u16le(raw, 0x7A)) << 16),
            size: u64::from(u32le(raw, 0x4)) | (u64::from(u32le(raw, 0x6C)) << 32),
            links: u16le(raw, 0x1A),
            flags: u32le(raw, 0x20),
            blocks: u64::from(u32le(raw, 0x1C)) | (u64::from(u16le(raw, 0x74)) << 32),
            file_acl: u64::from(u32le(raw, 0x68)) | (u64::from(u16le(raw, 0x76)) << 32),
            i_block,
            atime: time(0x8, 0x8C),
            mtime: time(0x10, 0x88),
            ctime: time(0xC, 0x84),
            btime,
            inline_xattrs: raw.get(extra_end..).map(<[u8]>::to_vec).unwrap_or_default(),
        })
    }

    pub fn kind(&self) -> Option<FileKind> {
        Some(match self.mode & 0xF000 {
            0x8000 => FileKind::File,
            0x4000 => FileKind::Dir,
            0xA000 => FileKind::Symlink,
            0x2000 => FileKind::CharDevice,
            0x6000 => FileKind::BlockDevice,
            0x1000 => FileKind::Fifo,
            0xC000 => FileKind::Socket,
            _ => return None,
        })
    }

    pub fn has_flag(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    pub fn i_block_u32(&self, i: usize) -> u32 {
        u32le(&self.i_block, i * 4)
    }

    /// Linux `makedev` of a device inode (old 8:8 encoding in the first
    /// word, or the new 12:20 one in the second).
    pub fn rdev(&self) -> u64 {
        let (major, minor) = match (self.i_block_u32(0), self.i_block_u32(1)) {
            (old, _) if old != 0 => ((old >> 8) & 0xFF, old & 0xFF),
            (_, new) => ((new & 0xFFF00) >> 8, (new & 0xFF) | ((new >> 12) & 0xFFF00)),
        };
        let (major, minor) = (u64::from(major), u64::from(minor));
        ((major & 0xFFFF_F000) << 32) | ((major & 0xFFF) << 8) | ((minor & 0xFFFF_FF00) << 12) | (minor & 0xFF)
    }

    /// A symlink whose target lives in `i_block` (no data blocks at all,
    /// apart from an xattr block), as the kernel decides it.
    pub fn is_fast_symlink(&self, block_size: u32) -> bool {
        if self.has_flag(FLAG_INLINE_DATA) {
            return false;
        }
        let sectors_per_block = u64::from(block_size / 512);
        let ea = if self.file_acl != 0 { sectors_per_block } else { 0 };
        let blocks = if self.has_flag(FLAG_HUGE_FILE) { self.blocks * sectors_per_block } else { self.blocks };
        self.size < 60 && blocks.saturating_sub(ea) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_times_owners_and_extra() {
        let mut raw = vec![0u8; 256];
        raw[0..2].copy_from_slice(&0o100644u16.to_le_bytes());
        raw[2..4].copy_from_slice(&0x1234u16.to_le_bytes());
        raw[0x78..0x7A].copy_from_slice(&0x5u16.to_le_bytes());
        raw[0x10..0x14].copy_from_slice(&(-5i32 as u32).to_le_bytes());
        raw[0x80..0x82].copy_from_slice(&32u16.to_le_bytes());
        raw[0x88..0x8C].copy_from_slice(&((123u32 << 2) | 1).to_le_bytes());
        let i = Inode::parse(12, &raw).unwrap();
        assert_eq!(i.kind(), Some(FileKind::File));
        assert_eq!(i.uid, 0x5_1234);
        assert_eq!(i.mtime, Timestamp { secs: (1i64 << 32) - 5, nanos: 123 });
        assert!(i.btime.is_some());
        assert_eq!(i.inline_xattrs.len(), 256 - 160);
        // An extra size past the record is refused, not trusted.
        raw[0x80..0x82].copy_from_slice(&200u16.to_le_bytes());
        assert!(Inode::parse(12, &raw).is_none());
    }

    #[test]
    fn small_inode_has_no_nanoseconds() {
        let mut raw = vec![0u8; 128];
        raw[0x10..0x14].copy_from_slice(&77u32.to_le_bytes());
        let i = Inode::parse(2, &raw).unwrap();
        assert_eq!(i.mtime, Timestamp { secs: 77, nanos: 0 });
        assert!(i.btime.is_none() && i.inline_xattrs.is_empty());
    }
}

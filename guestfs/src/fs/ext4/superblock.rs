//! The ext2/3/4 superblock and group descriptors: geometry, feature flags
//! and where each group's inode table lies.

use crate::block::ImageFile;
use crate::le::{bytes, u16le, u32le};
use crate::Result;

pub const SUPERBLOCK_OFFSET: u64 = 1024;
pub const EXT_MAGIC: u16 = 0xEF53;

// Compatible features (informational).
pub const COMPAT_HAS_JOURNAL: u32 = 0x4;

// Read-only compatible features: reading is safe whatever they are.
pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
pub const RO_COMPAT_HUGE_FILE: u32 = 0x8;
pub const RO_COMPAT_GDT_CSUM: u32 = 0x10;
pub const RO_COMPAT_DIR_NLINK: u32 = 0x20;
pub const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
pub const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

// Incompatible features: every one we do not understand is refused.
pub const INCOMPAT_COMPRESSION: u32 = 0x1;
pub const INCOMPAT_FILETYPE: u32 = 0x2;
pub const INCOMPAT_RECOVER: u32 = 0x4;
pub const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
pub const INCOMPAT_META_BG: u32 = 0x10;
pub const INCOMPAT_EXTENTS: u32 = 0x40;
pub const INCOMPAT_64BIT: u32 = 0x80;
pub const INCOMPAT_MMP: u32 = 0x100;
pub const INCOMPAT_FLEX_BG: u32 = 0x200;
pub const INCOMPAT_EA_INODE: u32 = 0x400;
pub const INCOMPAT_DIRDATA: u32 = 0x1000;
pub const INCOMPAT_CSUM_SEED: u32 = 0x2000;
pub const INCOMPAT_LARGEDIR: u32 = 0x4000;
pub const INCOMPAT_INLINE_DATA: u32 = 0x8000;
pub const INCOMPAT_ENCRYPT: u32 = 0x10000;
pub const INCOMPAT_CASEFOLD: u32 = 0x20000;

/// Incompatible features this reader handles. Encryption is accepted at
/// the filesystem level and refused per file (unencrypted files still read);
/// casefold only changes how lookups compare names, which our exact-match
/// lookup does not depend on.
const INCOMPAT_SUPPORTED: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_RECOVER
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD;

/// The parsed superblock: only the fields the reader uses.
#[derive(Clone, Debug)]
pub struct Superblock {
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub free_blocks: u64,
    pub first_data_block: u32,
    pub block_size: u32,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub inode_size: u16,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub uuid: [u8; 16],
    pub label: [u8; 16],
    pub journal_inum: u32,
    pub desc_size: u32,
    pub first_meta_bg: u32,
    pub group_count: u32,
}

impl Superblock {
    /// True when `buf` (1024 bytes at offset 1024) carries the ext magic.
    pub fn has_magic(buf: &[u8]) -> bool {
        u16le(buf, 0x38) == EXT_MAGIC
    }

    pub fn parse(file: &ImageFile, buf: &[u8]) -> Result<Superblock> {
        let bad = |reason: String| file.corrupt("ext superblock", SUPERBLOCK_OFFSET, reason);
        let log_block = u32le(buf, 0x18);
        if log_block > 6 {
            return Err(bad(format!("block size 2^(10+{log_block}) is not 1 KiB..64 KiB")));
        }
        let block_size = 1024u32 << log_block;
        let rev = u32le(buf, 0x4C);
        let inode_size = if rev == 0 { 128 } else { u16le(buf, 0x58) };
        if inode_size < 128 || !inode_size.is_power_of_two() || u32::from(inode_size) > block_size {
            return Err(bad(format!("inode size {inode_size} is invalid")));
        }
        let compat = u32le(buf, 0x5C);
        let incompat = if rev == 0 { 0 } else { u32le(buf, 0x60) };
        let ro_compat = if rev == 0 { 0 } else { u32le(buf, 0x64) };
        let is64 = incompat & INCOMPAT_64BIT != 0;
        let blocks_count = u64::from(u32le(buf, 0x4)) | if is64 { u64::from(u32le(buf, 0x150)) << 32 } else { 0 };
        let free_blocks = u64::from(u32le(buf, 0xC)) | if is64 { u64::from(u32le(buf, 0x158)) << 32 } else { 0 };
        let desc_size = if is64 { u32::from(u16le(buf, 0xFE)) } else { 32 };
        if desc_size < 32 || desc_size > 1024 || !desc_size.is_power_of_two() {
            return Err(bad(format!("group descriptor size {desc_size} is invalid")));
        }
        let first_data_block = u32le(buf, 0x14);
        let blocks_per_group = u32le(buf, 0x20);
        let inodes_per_group = u32le(buf, 0x28);
        let inodes_count = u32le(buf, 0x0);
        // A group's block bitmap is one block: more blocks per group than
        // bits in a block cannot be.
        if blocks_per_group == 0 || u64::from(blocks_per_group) > 8 * u64::from(block_size) {
            return Err(bad(format!("{blocks_per_group} blocks per group with {block_size}-byte blocks")));
        }
        if inodes_per_group == 0 || u64::from(inodes_per_group) > 8 * u64::from(block_size) {
            return Err(bad(format!("{inodes_per_group} inodes per group with {block_size}-byte blocks")));
        }
        if u64::from(first_data_block) >= blocks_count {
            return Err(bad(format!("first data block {first_data_block} beyond {blocks_count} blocks")));
        }
        let groups = (blocks_count - u64::from(first_data_block)).div_ceil(u64::from(blocks_per_group));
        let group_count = u32::try_from(groups).map_err(|_| bad(format!("{groups} block groups")))?;
        // The inode count must be exactly what the groups hold: a huge
        // count is how a hostile image would make us walk garbage.
        if u64::from(inodes_count) > u64::from(group_count) * u64::from(inodes_per_group) {
            return Err(bad(format!(
                "{inodes_count} inodes do not fit in {group_count} groups of {inodes_per_group}"
            )));
        }
        Ok(Superblock {
            inodes_count,
            blocks_count,
            free_blocks,
            first_data_block,
            block_size,
            blocks_per_group,
            inodes_per_group,
            inode_size,
            compat,
            incompat,
            ro_compat,
            uuid: bytes(buf, 0x68),
            label: bytes(buf, 0x78),
            journal_inum: u32le(buf, 0xE0),
            desc_size,
            first_meta_bg: u32le(buf, 0x104),
            group_count,
        })
    }

    /// Refuses features whose data we would misread.
    pub fn check_features(&self, file: &ImageFile) -> Result<()> {
        let unknown = self.incompat & !INCOMPAT_SUPPORTED;
        if unknown != 0 {
            let mut names = Vec::new();
            for (bit, name) in [
                (INCOMPAT_COMPRESSION, "compression"),
                (INCOMPAT_JOURNAL_DEV, "journal_dev (this is an external journal, not a filesystem)"),
                (INCOMPAT_DIRDATA, "dirdata"),
            ] {
                if unknown & bit != 0 {
                    names.push(name.to_string());
                }
            }
            let rest = unknown & !(INCOMPAT_COMPRESSION | INCOMPAT_JOURNAL_DEV | INCOMPAT_DIRDATA);
            if rest != 0 {
                names.push(format!("unknown bits {rest:#x}"));
            }
            return Err(file.unsupported(
                "ext superblock",
                SUPERBLOCK_OFFSET,
                format!("incompatible features: {}", names.join(", ")),
            ));
        }
        Ok(())
    }

    /// `ext2`, `ext3` or `ext4`, the way blkid names them.
    pub fn kind(&self) -> &'static str {
        let ext4_incompat = INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG | INCOMPAT_META_BG
            | INCOMPAT_INLINE_DATA | INCOMPAT_MMP | INCOMPAT_CSUM_SEED | INCOMPAT_LARGEDIR
            | INCOMPAT_EA_INODE | INCOMPAT_ENCRYPT | INCOMPAT_CASEFOLD;
        let ext4_ro = RO_COMPAT_HUGE_FILE | RO_COMPAT_GDT_CSUM | RO_COMPAT_DIR_NLINK
            | RO_COMPAT_EXTRA_ISIZE | RO_COMPAT_METADATA_CSUM;
        if self.incompat & ext4_incompat != 0 || self.ro_compat & ext4_ro != 0 {
            "ext4"
        } else if self.compat & COMPAT_HAS_JOURNAL != 0 {
            "ext3"
        } else {
            "ext2"
        }
    }

    pub fn has(&self, incompat: u32) -> bool {
        self.incompat & incompat != 0
    }

    pub fn block_offset(&self, block: u64) -> Option<u64> {
        block.checked_mul(u64::from(self.block_size))
    }

    /// Whether `group` holds a superblock backup (and so GDT copies).
    fn group_has_super(&self, group: u64) -> bool {
        if self.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 || group <= 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&b| {
            let mut p = b;
            while p < group {
                p *= b;
            }
            p == group
        })
    }

    /// Block number of the group-descriptor block `index` (the `index`th
    /// block's worth of descriptors). `meta_bg` scatters them: each group
    /// of groups keeps its descriptors in its first group.
    pub fn descriptor_block(&self, index: u64) -> u64 {
        let first = u64::from(self.first_data_block) + 1;
        if !self.has(INCOMPAT_META_BG) || index < u64::from(self.first_meta_bg) {
            return first + index;
        }
        let per_block = u64::from(self.block_size / self.desc_size);
        let group = index * per_block;
        let group_start = u64::from(self.first_data_block) + group * u64::from(self.blocks_per_group);
        group_start + u64::from(self.group_has_super(group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;
    use std::sync::Arc;

    fn sb() -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        b[0x38..0x3A].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        b[0x18..0x1C].copy_from_slice(&2u32.to_le_bytes()); // 4 KiB
        b[0x4..0x8].copy_from_slice(&100_000u32.to_le_bytes());
        b[0x20..0x24].copy_from_slice(&32768u32.to_le_bytes());
        b[0x28..0x2C].copy_from_slice(&8192u32.to_le_bytes());
        b[0x0..0x4].copy_from_slice(&(4 * 8192u32).to_le_bytes());
        b[0x4C..0x50].copy_from_slice(&1u32.to_le_bytes());
        b[0x58..0x5A].copy_from_slice(&256u16.to_le_bytes());
        b
    }

    fn file() -> ImageFile {
        ImageFile::new(Arc::new(MemSource(Vec::new())), "mem")
    }

    #[test]
    fn parses_geometry() {
        let s = Superblock::parse(&file(), &sb()).unwrap();
        assert_eq!((s.block_size, s.group_count, s.inode_size), (4096, 4, 256));
        assert_eq!(s.kind(), "ext2");
    }

    #[test]
    fn refuses_huge_inode_count() {
        let mut b = sb();
        b[0x0..0x4].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = Superblock::parse(&file(), &b).unwrap_err().to_string();
        assert!(e.contains("inodes do not fit"), "{e}");
    }

    #[test]
    fn refuses_bad_block_size_and_unknown_features() {
        let mut b = sb();
        b[0x18..0x1C].copy_from_slice(&30u32.to_le_bytes());
        assert!(Superblock::parse(&file(), &b).is_err());
        let mut b = sb();
        b[0x60..0x64].copy_from_slice(&(INCOMPAT_COMPRESSION | 0x8000_0000).to_le_bytes());
        let s = Superblock::parse(&file(), &b).unwrap();
        let e = s.check_features(&file()).unwrap_err().to_string();
        assert!(e.contains("compression") && e.contains("unsupported"), "{e}");
    }

    #[test]
    fn sparse_super_groups() {
        let mut s = Superblock::parse(&file(), &sb()).unwrap();
        s.ro_compat = RO_COMPAT_SPARSE_SUPER;
        let with: Vec<u64> = (0..30).filter(|&g| s.group_has_super(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27]);
    }
}

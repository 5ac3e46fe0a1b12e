//! File descriptors (the inodes of VMFS), kept in `.fdc.sf`: a lock block,
//! the file metadata block, then either the file's data inline ("resident",
//! small files and symlinks) or its array of block addresses.
//!
//! How the address array is read depends on the descriptor's zero-level
//! address type (ZLA): direct file blocks or sub-blocks; single-indirect
//! pointer blocks (PB/PB2) each holding block addresses; double-indirect
//! (pointer blocks of pointer blocks); or resident data.
//!
//! VMFS 5: 2 KiB descriptors (lock 512 B, metadata at 512, 256 u32
//! addresses or 1 KiB of data at 1024), 4 KiB pointer blocks of 1024 u32.
//! VMFS 6: two metadata blocks of `mdAlignment` (lock, then metadata with
//! inline data right after it); u64 addresses aligned to the end of the
//! descriptor; 64 KiB pointer blocks of 8192 u64.

use super::fsinfo::FsInfo;
use crate::le::{u32le, u64le};

pub const ZLA_FILE_BLOCK: u32 = 1;
pub const ZLA_SUB_BLOCK: u32 = 2;
pub const ZLA_POINTER_BLOCK: u32 = 3;
pub const ZLA_POINTER2_BLOCK: u32 = 5;
pub const ZLA_DOUBLE_INDIRECT: u32 = 0x10D0;
pub const ZLA_RESIDENT: u32 = 0x10D1;

pub const TYPE_DIRECTORY: u32 = 2;
pub const TYPE_REGFILE: u32 = 3;
pub const TYPE_SYMLINK: u32 = 4;
pub const TYPE_SYSFILE: u32 = 5;
pub const TYPE_RDM: u32 = 6;

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;

/// Where the parts of a descriptor and a pointer block lie, per version.
#[derive(Clone, Debug)]
pub struct Layout {
    pub fd_size: u64,
    pub meta_off: usize,
    pub data_off: usize,
    pub data_size: usize,
    pub addrs_off: usize,
    pub addrs_count: usize,
    pub addr64: bool,
    pub ptrs_per_pb: u64,
}

impl Layout {
    pub fn new(fs: &FsInfo) -> Layout {
        if !fs.is_vmfs6() {
            return Layout { fd_size: 2048, meta_off: 512, data_off: 1024, data_size: 1024, addrs_off: 1024, addrs_count: 256, addr64: false, ptrs_per_pb: 1024 };
        }
        // md_alignment is a validated power of two in 1 KiB..64 KiB.
        let md = fs.md_alignment as usize;
        let addrs_size = if md <= 4096 { 2560 } else { md / 2 };
        Layout {
            fd_size: 2 * md as u64,
            meta_off: md,
            data_off: md + 512,
            data_size: md - 512,
            addrs_off: 2 * md - addrs_size,
            addrs_count: addrs_size / 8,
            addr64: true,
            ptrs_per_pb: if md < 0x10000 { 8192 } else { (md / 8) as u64 },
        }
    }

    /// Bytes of one pointer block.
    pub fn pb_bytes(&self) -> u64 {
        self.ptrs_per_pb * if self.addr64 { 8 } else { 4 }
    }
}

/// A parsed file descriptor.
#[derive(Clone, Debug)]
pub struct Fd {
    /// Its own FD address (the file id).
    pub addr: u32,
    /// Byte offset on the volume where it was read (for errors).
    pub vol_offset: u64,
    pub desc_addr: u32,
    pub link_count: u32,
    pub kind: u32,
    pub length: u64,
    pub block_size: u64,
    pub mtime: u32,
    pub ctime: u32,
    pub atime: u32,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub zla: u32,
    /// The address array (u32 words widened on VMFS 5).
    pub addrs: Vec<u64>,
    /// The inline data area (meaningful for resident files).
    pub inline: Vec<u8>,
}

impl Fd {
    /// Parses a descriptor read from the volume; `raw` is `layout.fd_size`
    /// bytes (the caller read exactly that).
    pub fn parse(raw: &[u8], addr: u32, vol_offset: u64, l: &Layout) -> Fd {
        let m = raw.get(l.meta_off..).unwrap_or(&[]);
        let word = |i: usize| -> u64 {
            if l.addr64 {
                u64le(raw, l.addrs_off + i * 8)
            } else {
                u64::from(u32le(raw, l.addrs_off + i * 4))
            }
        };
        let addrs = (0..l.addrs_count).map(word).collect();
        Fd {
            addr,
            vol_offset,
            desc_addr: u32le(m, 0),
            link_count: u32le(m, 8),
            kind: u32le(m, 0xc),
            length: u64le(m, 0x14),
            block_size: u64le(m, 0x1c),
            mtime: u32le(m, 0x2c),
            ctime: u32le(m, 0x30),
            atime: u32le(m, 0x34),
            uid: u32le(m, 0x38),
            gid: u32le(m, 0x3c),
            mode: u32le(m, 0x40),
            zla: u32le(m, 0x44),
            addrs,
            inline: raw.get(l.data_off..l.data_off + l.data_size).unwrap_or(&[]).to_vec(),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == TYPE_DIRECTORY || (self.kind == TYPE_SYSFILE && self.mode & S_IFMT == S_IFDIR)
    }
}

/// Where the address of file block `block_num` is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// `addrs[i]` is the block address.
    Direct(usize),
    /// `addrs[i]` is a pointer block; entry `j` of it is the block address.
    Single(usize, u64),
    /// `addrs[i]` is a pointer block of pointer blocks: entry `j` of it,
    /// then entry `k` of that.
    Double(usize, u64, u64),
}

/// Locates file block `block_num` for a descriptor with this ZLA. `Err`
/// names why the block cannot exist (beyond the address array).
pub fn locate(zla: u32, block_num: u64, ptrs_per_pb: u64, addrs_count: usize) -> Result<Slot, String> {
    let idx = |i: u64| -> Result<usize, String> {
        usize::try_from(i).ok().filter(|&i| i < addrs_count).ok_or_else(|| format!("block {block_num} lies beyond the {addrs_count}-entry address array"))
    };
    match zla {
        ZLA_FILE_BLOCK | ZLA_SUB_BLOCK => Ok(Slot::Direct(idx(block_num)?)),
        ZLA_POINTER_BLOCK | ZLA_POINTER2_BLOCK => Ok(Slot::Single(idx(block_num / ptrs_per_pb)?, block_num % ptrs_per_pb)),
        ZLA_DOUBLE_INDIRECT => {
            let per_top = ptrs_per_pb.saturating_mul(ptrs_per_pb);
            Ok(Slot::Double(idx(block_num / per_top)?, (block_num / ptrs_per_pb) % ptrs_per_pb, block_num % ptrs_per_pb))
        }
        other => Err(format!("unknown address type (ZLA) {other:#x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_direct_and_indirect() {
        assert_eq!(locate(ZLA_FILE_BLOCK, 5, 1024, 256), Ok(Slot::Direct(5)));
        assert!(locate(ZLA_FILE_BLOCK, 256, 1024, 256).is_err());
        assert_eq!(locate(ZLA_POINTER_BLOCK, 1024 * 3 + 7, 1024, 256), Ok(Slot::Single(3, 7)));
        assert_eq!(locate(ZLA_POINTER2_BLOCK, 0, 1024, 256), Ok(Slot::Single(0, 0)));
        assert!(locate(ZLA_POINTER_BLOCK, 1024 * 256, 1024, 256).is_err());
        assert_eq!(locate(ZLA_DOUBLE_INDIRECT, 1024 * 1024 * 2 + 1024 * 5 + 9, 1024, 256), Ok(Slot::Double(2, 5, 9)));
        assert_eq!(locate(ZLA_DOUBLE_INDIRECT, 8192 * 8192 + 1, 8192, 320), Ok(Slot::Double(1, 0, 1)));
        assert!(locate(0x77, 0, 1024, 256).is_err());
    }

    #[test]
    fn layouts() {
        let mut fs = FsInfo {
            major: 14,
            minor: 81,
            uuid: String::new(),
            label: String::new(),
            dense_sb: false,
            file_block_size: 1 << 20,
            sub_block_size: 8192,
            fdc_cluster_group_offset: 0,
            fdc_clusters_per_group: 64,
            pb2_vol_addr: 0,
            pb2_fd_addr: 0,
            sdd_vol_addr: 0,
            sdd_fd_addr: 0,
            md_alignment: 0,
            sfb_to_lfb_shift: 0,
            creation_time: 0,
        };
        let l5 = Layout::new(&fs);
        assert_eq!((l5.fd_size, l5.addrs_count, l5.pb_bytes()), (2048, 256, 4096));
        fs.major = 24;
        fs.md_alignment = 4096;
        let l6 = Layout::new(&fs);
        assert_eq!((l6.fd_size, l6.meta_off, l6.data_off, l6.addrs_off, l6.addrs_count), (8192, 4096, 4608, 8192 - 2560, 320));
        assert_eq!(l6.pb_bytes(), 65536);
    }
}

//! The VMFS filesystem descriptor ("FS info", the volume header): 2 MiB
//! into the logical volume. Magic, version, UUID, label, block sizes and
//! the few locations needed to find the system files.

use super::lvm::uuid_string;
use crate::block::ImageFile;
use crate::le::{u16le, u32le, u64le};
use crate::Result;

pub const FS_HEADER_OFFSET: u64 = 0x20_0000;
pub const VMFS_MAGIC: u32 = 0x2FAB_F15E;
pub const VMFSL_MAGIC: u32 = 0x2FAB_F15F;
/// Major versions from this one on are VMFS 6.
pub const VMFS6_MAJOR: u32 = 24;
/// The "dense sub-blocks per cluster" option (widens SB addresses).
const CONFIG_DENSE_SBPC: u32 = 4;

#[derive(Clone, Debug)]
pub struct FsInfo {
    pub major: u32,
    pub minor: u8,
    pub uuid: String,
    pub label: String,
    pub dense_sb: bool,
    pub file_block_size: u64,
    pub sub_block_size: u64,
    pub fdc_cluster_group_offset: u64,
    pub fdc_clusters_per_group: u64,
    pub pb2_vol_addr: u64,
    pub pb2_fd_addr: u32,
    pub sdd_vol_addr: u64,
    pub sdd_fd_addr: u32,
    /// VMFS 6 metadata alignment (size of one metadata block).
    pub md_alignment: u64,
    /// VMFS 6: log2(large file block / small file block).
    pub sfb_to_lfb_shift: u32,
    pub creation_time: u32,
}

impl FsInfo {
    pub fn is_vmfs6(&self) -> bool {
        self.major >= VMFS6_MAJOR
    }

    pub fn has_magic(buf: &[u8]) -> bool {
        matches!(u32le(buf, 0), VMFS_MAGIC | VMFSL_MAGIC)
    }

    pub fn parse(vol: &ImageFile) -> Result<FsInfo> {
        let what = "VMFS filesystem descriptor";
        let at = FS_HEADER_OFFSET;
        let d = vol.read_vec(what, at, 0x200)?;
        let magic = u32le(&d, 0);
        if !Self::has_magic(&d) {
            return Err(vol.corrupt(what, at, format!("bad magic {magic:#010x} (expected {VMFS_MAGIC:#010x}): not a VMFS volume")));
        }
        let major = u32le(&d, 4);
        let label_raw = d.get(0x1d..0x9d).unwrap_or(&[]);
        let label_len = label_raw.iter().position(|&b| b == 0).unwrap_or(label_raw.len());
        let fs = FsInfo {
            major,
            minor: d.get(8).copied().unwrap_or(0),
            uuid: uuid_string(d.get(9..0x19).unwrap_or(&[])),
            label: String::from_utf8_lossy(label_raw.get(..label_len).unwrap_or(&[])).into_owned(),
            dense_sb: u32le(&d, 0x19) & CONFIG_DENSE_SBPC != 0,
            file_block_size: u64le(&d, 0xa1),
            sub_block_size: u64::from(u32le(&d, 0xd9)),
            fdc_cluster_group_offset: u64::from(u32le(&d, 0xd1)),
            fdc_clusters_per_group: u64::from(u32le(&d, 0xd5)),
            pb2_vol_addr: u64le(&d, 0xe1),
            pb2_fd_addr: u32le(&d, 0xe9),
            sdd_vol_addr: u64le(&d, 0x105),
            sdd_fd_addr: u32le(&d, 0x10d),
            md_alignment: u64::from(u32le(&d, 0x134)),
            sfb_to_lfb_shift: u32::from(u16le(&d, 0x138)),
            creation_time: u32le(&d, 0xa9),
        };
        if !(5..=30).contains(&major) {
            return Err(vol.unsupported(what, at + 4, format!("VMFS major version {major} (VMFS 5 and 6 are read)")));
        }
        if major < 14 {
            return Err(vol.unsupported(what, at + 4, format!("VMFS 3 (major version {major}); this reader handles VMFS 5 and 6")));
        }
        // 1 MiB is the only VMFS 5/6 file block size ESXi creates; accept the
        // powers of two VMFS 3 allowed (up to 8 MiB) but nothing absurd.
        let pow2_in = |v: u64, lo: u64, hi: u64| v.is_power_of_two() && (lo..=hi).contains(&v);
        if !pow2_in(fs.file_block_size, 64 << 10, 64 << 20) {
            return Err(vol.corrupt(what, at + 0xa1, format!("file block size {} is not a power of two in 64 KiB..64 MiB", fs.file_block_size)));
        }
        if !pow2_in(fs.sub_block_size, 512, fs.file_block_size) {
            return Err(vol.corrupt(what, at + 0xd9, format!("sub-block size {} is not a power of two in 512..file block size", fs.sub_block_size)));
        }
        if fs.fdc_clusters_per_group == 0 || fs.fdc_clusters_per_group > 1 << 16 {
            return Err(vol.corrupt(what, at + 0xd5, format!("{} FD clusters per group", fs.fdc_clusters_per_group)));
        }
        if fs.is_vmfs6() {
            if !pow2_in(fs.md_alignment, 1024, 1 << 16) {
                return Err(vol.corrupt(what, at + 0x134, format!("metadata alignment {} is not a power of two in 1 KiB..64 KiB", fs.md_alignment)));
            }
            if fs.sfb_to_lfb_shift > 12 {
                return Err(vol.corrupt(what, at + 0x138, format!("large/small file block shift {} is absurd", fs.sfb_to_lfb_shift)));
            }
        }
        Ok(fs)
    }
}

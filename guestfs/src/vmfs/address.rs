//! VMFS block addresses: opaque 32-bit (VMFS 5) or 64-bit (VMFS 6) words
//! whose low three bits say what they address. The rest is type specific:
//! a block number for file blocks, a (cluster, resource) pair for the
//! resources kept in the `.sf` resource files.
//!
//! Layouts (bit ranges, LSB first), from the published format descriptions:
//!
//! | type | VMFS 5 (u32) | VMFS 6 (u64) |
//! |---|---|---|
//! | 1 FB / SFB | tbz 5, block 6..32 | tbz bitmap 7..15, cluster 15..46, resource 51..64 |
//! | 2 SB | dense-hi 3..5, cluster 6..28, resource 28..32 | cluster 6..42, resource 56..64 |
//! | 3 PB, 5 PB2 | cluster 6..28, resource 28..32 | cluster 6..42, resource 56..64 |
//! | 4 FD | cluster 6..22, resource 22..32 | same (u32) |
//! | 7 LFB | - | tbz bitmap 7..15, block 15..46 |

pub const TYPE_FILE_BLOCK: u8 = 1;
pub const TYPE_SUB_BLOCK: u8 = 2;
pub const TYPE_POINTER_BLOCK: u8 = 3;
pub const TYPE_FILE_DESCRIPTOR: u8 = 4;
pub const TYPE_POINTER2_BLOCK: u8 = 5;
pub const TYPE_LARGE_FILE_BLOCK: u8 = 7;

/// A decoded address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    /// No block: the range is unallocated and reads as zeros.
    Null,
    /// VMFS 5 file block `block` (volume offset `block * file_block_size`).
    FileBlock { block: u64, tbz: bool },
    /// VMFS 6 small file block; its block number is
    /// `cluster * resources_per_cluster + resource` in the SFB resource.
    SmallFileBlock { cluster: u64, resource: u64, tbz: u8 },
    /// VMFS 6 large file block (volume offset `block << lfb_shift`).
    LargeFileBlock { block: u64, tbz: u8 },
    SubBlock { cluster: u64, resource: u64 },
    PointerBlock { cluster: u64, resource: u64 },
    PointerBlock2 { cluster: u64, resource: u64 },
    FileDescriptor { cluster: u64, resource: u64 },
    /// A type this reader does not know (journal blocks, garbage).
    Other { kind: u8 },
}

impl Addr {
    /// Decodes a VMFS 5 (32-bit) address. `dense_sb` is the volume's
    /// "dense sub-blocks per cluster" option, which widens the SB resource.
    pub fn decode5(a: u32, dense_sb: bool) -> Addr {
        if a == 0 {
            return Addr::Null;
        }
        let kind = (a & 7) as u8;
        let cr = |a: u32| (u64::from((a >> 6) & 0x3F_FFFF), u64::from(a >> 28));
        match kind {
            TYPE_FILE_BLOCK => Addr::FileBlock { block: u64::from(a >> 6), tbz: a & 0x20 != 0 },
            TYPE_SUB_BLOCK => {
                let (cluster, mut resource) = cr(a);
                if dense_sb {
                    resource |= u64::from(a & 0x18) << 1;
                }
                Addr::SubBlock { cluster, resource }
            }
            TYPE_POINTER_BLOCK => {
                let (cluster, resource) = cr(a);
                Addr::PointerBlock { cluster, resource }
            }
            TYPE_POINTER2_BLOCK => {
                let (cluster, resource) = cr(a);
                Addr::PointerBlock2 { cluster, resource }
            }
            TYPE_FILE_DESCRIPTOR => fd(a),
            kind => Addr::Other { kind },
        }
    }

    /// Decodes a VMFS 6 (64-bit) address.
    pub fn decode6(a: u64) -> Addr {
        if a == 0 {
            return Addr::Null;
        }
        let kind = (a & 7) as u8;
        let tbz = ((a >> 7) & 0xFF) as u8;
        let cr = |a: u64| ((a >> 6) & 0xF_FFFF_FFFF, a >> 56);
        match kind {
            TYPE_FILE_BLOCK => Addr::SmallFileBlock { cluster: (a >> 15) & 0x7FFF_FFFF, resource: (a >> 51) & 0x1FFF, tbz },
            TYPE_LARGE_FILE_BLOCK => Addr::LargeFileBlock { block: (a >> 15) & 0x7FFF_FFFF, tbz },
            TYPE_SUB_BLOCK => {
                let (cluster, resource) = cr(a);
                Addr::SubBlock { cluster, resource }
            }
            TYPE_POINTER_BLOCK => {
                let (cluster, resource) = cr(a);
                Addr::PointerBlock { cluster, resource }
            }
            TYPE_POINTER2_BLOCK => {
                let (cluster, resource) = cr(a);
                Addr::PointerBlock2 { cluster, resource }
            }
            TYPE_FILE_DESCRIPTOR => match u32::try_from(a) {
                Ok(a32) => fd(a32),
                Err(_) => Addr::Other { kind },
            },
            kind => Addr::Other { kind },
        }
    }
}

fn fd(a: u32) -> Addr {
    Addr::FileDescriptor { cluster: u64::from((a >> 6) & 0xFFFF), resource: u64::from(a >> 22) }
}

/// The (cluster, resource) of a file descriptor address; `None` when the
/// word is not an FD address.
pub fn fd_parts(a: u32) -> Option<(u64, u64)> {
    match Addr::decode5(a, false) {
        Addr::FileDescriptor { cluster, resource } => Some((cluster, resource)),
        _ => None,
    }
}

/// Builds an FD address (tests and the generator's counterpart).
pub fn fd_addr(cluster: u32, resource: u32) -> u32 {
    u32::from(TYPE_FILE_DESCRIPTOR) | ((cluster & 0xFFFF) << 6) | ((resource & 0x3FF) << 22)
}

/// How an address is shown in errors: `<FB 23>`, `<PB c1 r5>`.
pub fn describe(a: Addr) -> String {
    match a {
        Addr::Null => "<null>".into(),
        Addr::FileBlock { block, tbz } => format!("<FB {block}{}>", if tbz { " tbz" } else { "" }),
        Addr::SmallFileBlock { cluster, resource, tbz } => format!("<SFB c{cluster} r{resource} tbz {tbz:#x}>"),
        Addr::LargeFileBlock { block, tbz } => format!("<LFB {block} tbz {tbz:#x}>"),
        Addr::SubBlock { cluster, resource } => format!("<SB c{cluster} r{resource}>"),
        Addr::PointerBlock { cluster, resource } => format!("<PB c{cluster} r{resource}>"),
        Addr::PointerBlock2 { cluster, resource } => format!("<PB2 c{cluster} r{resource}>"),
        Addr::FileDescriptor { cluster, resource } => format!("<FD c{cluster} r{resource}>"),
        Addr::Other { kind } => format!("<type {kind}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmfs5_file_blocks() {
        // Root directory of the ESXi-made sample: FB 5.
        assert_eq!(Addr::decode5(0x141, false), Addr::FileBlock { block: 5, tbz: false });
        assert_eq!(Addr::decode5((77 << 6) | 0x20 | 1, false), Addr::FileBlock { block: 77, tbz: true });
        assert_eq!(Addr::decode5(u32::MAX & !6, false), Addr::FileBlock { block: 0x3FF_FFFF, tbz: true });
        assert_eq!(Addr::decode5(0, false), Addr::Null);
    }

    #[test]
    fn vmfs5_resources() {
        let a = 2 | (1234 << 6) | (9 << 28);
        assert_eq!(Addr::decode5(a, false), Addr::SubBlock { cluster: 1234, resource: 9 });
        // Dense sub-blocks: bits 3..5 are resource bits 4..6.
        assert_eq!(Addr::decode5(a | 0x18, true), Addr::SubBlock { cluster: 1234, resource: 9 | 0x30 });
        assert_eq!(Addr::decode5(a | 0x18, false), Addr::SubBlock { cluster: 1234, resource: 9 });
        assert_eq!(Addr::decode5(3 | (7 << 6) | (15 << 28), false), Addr::PointerBlock { cluster: 7, resource: 15 });
        assert_eq!(Addr::decode5(5 | (0x3F_FFFF << 6), false), Addr::PointerBlock2 { cluster: 0x3F_FFFF, resource: 0 });
        assert_eq!(Addr::decode5(6, false), Addr::Other { kind: 6 });
    }

    #[test]
    fn file_descriptors() {
        // System file descriptors as the format defines them.
        assert_eq!(fd_parts(0x0000_0004), Some((0, 0)));
        assert_eq!(fd_parts(0x0080_0004), Some((0, 2)));
        assert_eq!(fd_parts(0x01C0_0004), Some((0, 7)));
        assert_eq!(fd_parts(fd_addr(513, 1000)), Some((513, 1000)));
        assert_eq!(fd_parts(0x141), None);
    }

    #[test]
    fn vmfs6_addresses() {
        let sfb = 1 | (0x5A << 7) | (123_456 << 15) | (4321u64 << 51);
        assert_eq!(Addr::decode6(sfb), Addr::SmallFileBlock { cluster: 123_456, resource: 4321, tbz: 0x5A });
        let lfb = 7 | (0xFF << 7) | (0x7FFF_FFFF << 15);
        assert_eq!(Addr::decode6(lfb), Addr::LargeFileBlock { block: 0x7FFF_FFFF, tbz: 0xFF });
        let pb = 3 | (0xF_FFFF_FFFF << 6) | (200u64 << 56);
        assert_eq!(Addr::decode6(pb), Addr::PointerBlock { cluster: 0xF_FFFF_FFFF, resource: 200 });
        assert_eq!(Addr::decode6(5 | (3 << 6) | (1u64 << 56)), Addr::PointerBlock2 { cluster: 3, resource: 1 });
        assert_eq!(Addr::decode6(2 | (9 << 6) | (255u64 << 56)), Addr::SubBlock { cluster: 9, resource: 255 });
        assert_eq!(Addr::decode6(0x0080_0004), Addr::FileDescriptor { cluster: 0, resource: 2 });
        assert_eq!(Addr::decode6(1 << 40 | 4), Addr::Other { kind: 4 });
    }
}

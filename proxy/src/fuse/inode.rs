//! FUSE inode numbers <-> guest tree nodes.
//!
//! The numbering is computed, not stored: a guest file's number packs the
//! volume it lives on (16 bits) and its `FileId` (48 bits), so the table
//! never grows however many files the backup walks, numbers are stable for
//! the life of the mount, and the same file under two names (hard links)
//! has one number. Guest ids are per filesystem (ext4 inode, NTFS MFT
//! record, FAT entry position) and repeat across volumes, so they cannot
//! be used as they are.
//!
//! Layout: slot 0 holds the synthetic directories (1 = root as FUSE wants,
//! then one number per disk, then one per volume); slot `s` (1..=0xFFFE)
//! holds the files of the `s`-th volume of the tree.

use guestfs::fs::FileId;
use guestfs::tree::{GuestTree, Node};

const SLOT_SHIFT: u32 = 48;
const ID_MASK: u64 = (1 << SLOT_SHIFT) - 1;
/// Highest volume slot (0xFFFF is kept free).
const MAX_SLOT: usize = 0xFFFE;
pub const ROOT_INO: u64 = 1;

pub struct Inodes {
    /// Volume slot (index + 1) -> (disk, volume).
    volumes: Vec<(usize, usize)>,
    /// First synthetic number of each disk's volumes, by disk.
    first_volume: Vec<usize>,
    disks: usize,
}

impl Inodes {
    pub fn new(tree: &GuestTree) -> anyhow::Result<Inodes> {
        let mut volumes = Vec::new();
        let mut first_volume = Vec::new();
        for (d, disk) in tree.disks.iter().enumerate() {
            first_volume.push(volumes.len());
            for v in 0..disk.volumes.len() {
                volumes.push((d, v));
            }
        }
        if volumes.len() > MAX_SLOT {
            anyhow::bail!("{} volumes in the guest tree; a mount holds at most {MAX_SLOT}", volumes.len());
        }
        Ok(Inodes { volumes, first_volume, disks: tree.disks.len() })
    }

    fn volume_index(&self, d: usize, v: usize) -> Option<usize> {
        let i = self.first_volume.get(d)?.checked_add(v)?;
        (self.volumes.get(i) == Some(&(d, v))).then_some(i)
    }

    /// The number of a node; `None` for a guest id too large to pack
    /// (no filesystem this crate reads has one).
    pub fn ino(&self, node: Node) -> Option<u64> {
        match node {
            Node::Root => Some(ROOT_INO),
            Node::Disk(d) => u64::try_from(d).ok()?.checked_add(2),
            Node::Volume(d, v) => {
                let i = u64::try_from(self.volume_index(d, v)?).ok()?;
                i.checked_add(2)?.checked_add(u64::try_from(self.disks).ok()?)
            }
            Node::File(d, v, id) => {
                if id > ID_MASK {
                    return None;
                }
                let slot = u64::try_from(self.volume_index(d, v)?).ok()? + 1;
                Some(slot << SLOT_SHIFT | id)
            }
        }
    }

    /// The node of a number the kernel hands back.
    pub fn node(&self, ino: u64) -> Option<Node> {
        let slot = usize::try_from(ino >> SLOT_SHIFT).ok()?;
        let low = ino & ID_MASK;
        if slot == 0 {
            let n = usize::try_from(low).ok()?;
            return match n {
                0 => None,
                1 => Some(Node::Root),
                n if n - 2 < self.disks => Some(Node::Disk(n - 2)),
                n => {
                    let (d, v) = *self.volumes.get(n - 2 - self.disks)?;
                    Some(Node::Volume(d, v))
                }
            };
        }
        let (d, v) = *self.volumes.get(slot - 1)?;
        Some(Node::File(d, v, low as FileId))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(vols: &[usize]) -> Inodes {
        let mut volumes = Vec::new();
        let mut first_volume = Vec::new();
        for (d, n) in vols.iter().enumerate() {
            first_volume.push(volumes.len());
            volumes.extend((0..*n).map(|v| (d, v)));
        }
        Inodes { volumes, first_volume, disks: vols.len() }
    }

    #[test]
    fn numbers_round_trip_and_are_distinct() {
        let t = table(&[2, 3]);
        let nodes = [
            Node::Root,
            Node::Disk(0),
            Node::Disk(1),
            Node::Volume(0, 0),
            Node::Volume(0, 1),
            Node::Volume(1, 2),
            Node::File(0, 0, 2),
            Node::File(0, 1, 2),
            Node::File(1, 2, 2),
            Node::File(1, 0, ID_MASK),
        ];
        let mut seen = std::collections::HashSet::new();
        for n in nodes {
            let ino = t.ino(n).unwrap();
            assert!(seen.insert(ino), "{n:?} reuses {ino}");
            assert_eq!(t.node(ino), Some(n));
        }
        assert_eq!(t.ino(Node::Root), Some(1));
        assert_eq!(t.ino(Node::File(0, 0, ID_MASK + 1)), None);
        assert_eq!(t.ino(Node::Volume(0, 2)), None);
        assert_eq!(t.node(0), None);
        assert_eq!(t.node(2 + 2 + 5), None);
        assert_eq!(t.node(6 << SLOT_SHIFT | 5), None);
    }
}

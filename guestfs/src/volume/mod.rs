//! Volumes of a disk: partitions (MBR, GPT), LVM2 logical volumes, or the
//! whole disk when it carries a filesystem with no partition table.
//!
//! Disks are named `disk0`, `disk1`, ... in the order given, partitions
//! `disk0/p1`; errors carry these names. A damaged partition or logical
//! volume is an entry in [`DiskVolumes::errors`]; the others are still
//! listed.

mod gpt;
mod lvm;
mod mbr;
mod striped;

use crate::block::{ImageFile, ReadAt, SliceSource};
use crate::disk::Disk;
use crate::Result;
use std::sync::Arc;

/// A disk seen as a byte source, so volumes and filesystems read virtual
/// disks the same way as raw devices.
pub struct DiskSource(pub Disk);

impl ReadAt for DiskSource {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_at(buf, offset).map_err(std::io::Error::other)
    }

    fn size(&self) -> u64 {
        self.0.virtual_size()
    }
}

/// One volume of a disk.
#[derive(Clone)]
pub struct Volume {
    /// The guest-tree name (DESIGN.md): `p1`, `p5` (first logical),
    /// `lvm-<vg>-<lv>`, or `fs` for a bare filesystem.
    pub id: String,
    /// Byte offset on the disk (for LVM: of the first segment).
    pub start: u64,
    pub size: u64,
    /// Partition type as the table states it: MBR `0x83`, GPT type GUID
    /// (lowercase, as `lsblk`/`blkid` print it), `lvm` for logical volumes,
    /// empty for `fs`.
    pub part_type: String,
    /// GPT partition name or LV name.
    pub name: Option<String>,
    /// GPT unique partition GUID (lowercase) or LV uuid (as LVM prints it).
    pub uuid: Option<String>,
    /// The volume's bytes.
    pub source: Arc<dyn ReadAt>,
}

/// The volumes found on one disk, and the ones that could not be used
/// (a partition beyond the disk's end, a damaged logical volume): one bad
/// volume never hides the others.
#[derive(Default)]
pub struct DiskVolumes {
    pub volumes: Vec<Volume>,
    /// Volume id (or table name when the table itself is bad: `mbr`, `gpt`,
    /// `ebr`, `lvm`) and why.
    pub errors: Vec<(String, crate::Error)>,
}

/// MBR sector size; GPT detects its own.
const SECTOR: u64 = 512;

/// A partition as a table describes it.
pub(crate) struct Partition {
    pub number: u32,
    pub start: u64,
    pub size: u64,
    pub part_type: String,
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// The table marks it as an LVM PV (MBR 0x8e, GPT LVM type).
    pub lvm_type: bool,
}

#[derive(Default)]
pub(crate) struct PartitionTable {
    pub partitions: Vec<Partition>,
    pub errors: Vec<(String, crate::Error)>,
}

/// Finds the volumes of the disks of one VM (LVM volume groups may span
/// them). Returned per disk, in table order; each logical volume is
/// attributed to the disk holding its first segment.
pub fn find_volumes(disks: &[Arc<dyn ReadAt>]) -> Result<Vec<DiskVolumes>> {
    let mut out: Vec<DiskVolumes> = Vec::with_capacity(disks.len());
    let mut pvs = Vec::new();
    for (index, disk) in disks.iter().enumerate() {
        let name = format!("disk{index}");
        let file = ImageFile::new(disk.clone(), &name);
        let mut dv = DiskVolumes::default();
        let table = match mbr::read_mbr(&file) {
            Ok(mbr::Mbr::Table(t)) => Some(t),
            Ok(mbr::Mbr::Protective) => match gpt::read_gpt(&file) {
                Ok(t) => Some(t),
                Err(e) => {
                    dv.errors.push(("gpt".into(), e));
                    None
                }
            },
            Ok(mbr::Mbr::None) => None,
            Err(e) => {
                dv.errors.push(("mbr".into(), e));
                None
            }
        };
        if let Some(table) = table {
            dv.errors.extend(table.errors);
            for p in table.partitions {
                let id = format!("p{}", p.number);
                let Some(slice) = SliceSource::new(disk.clone(), p.start, p.size) else {
                    // The table parsers already refuse partitions past the end.
                    continue;
                };
                let source: Arc<dyn ReadAt> = Arc::new(slice);
                let part_file = ImageFile::new(source.clone(), format!("{name}/{id}"));
                match lvm::probe(&part_file) {
                    Ok(Some(label)) => pvs.push(lvm::PvCandidate { disk: index, start_on_disk: p.start, file: part_file, label }),
                    Ok(None) if p.lvm_type => tracing::warn!("{name}/{id}: partition type says LVM but there is no PV label"),
                    Ok(None) => {}
                    Err(e) => dv.errors.push((id.clone(), e)),
                }
                dv.volumes.push(Volume { id, start: p.start, size: p.size, part_type: p.part_type, name: p.name, uuid: p.uuid, source });
            }
        } else if dv.errors.is_empty() {
            match lvm::probe(&file) {
                Ok(Some(label)) => pvs.push(lvm::PvCandidate { disk: index, start_on_disk: 0, file, label }),
                Ok(None) => dv.volumes.push(Volume {
                    id: "fs".into(),
                    start: 0,
                    size: disk.size(),
                    part_type: String::new(),
                    name: None,
                    uuid: None,
                    source: disk.clone(),
                }),
                Err(e) => dv.errors.push(("lvm".into(), e)),
            }
        }
        out.push(dv);
    }
    let lvs = lvm::assemble(&pvs);
    for (disk, v) in lvs.volumes {
        if let Some(dv) = out.get_mut(disk) {
            dv.volumes.push(v);
        }
    }
    for (disk, id, e) in lvs.errors {
        if let Some(dv) = out.get_mut(disk) {
            dv.errors.push((id, e));
        }
    }
    Ok(out)
}

/// CRC-32 lookup table for the reflected IEEE polynomial 0xEDB88320.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Raw CRC-32 register update (no pre/post inversion): GPT wraps it in the
/// usual inversions, LVM seeds it with its own constant.
pub(crate) fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// The CRC-32 of GPT, zlib and Ethernet.
pub(crate) fn crc32_ieee(data: &[u8]) -> u32 {
    !crc32_update(!0, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32_ieee(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn bare_disk_is_one_fs_volume() {
        let d: Arc<dyn ReadAt> = Arc::new(MemSource(vec![0u8; 8192]));
        let v = find_volumes(&[d]).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].volumes.len(), 1);
        assert_eq!(v[0].volumes[0].id, "fs");
        assert_eq!(v[0].volumes[0].size, 8192);
    }
}

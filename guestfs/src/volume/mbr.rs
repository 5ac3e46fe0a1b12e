//! MBR partition tables: the four primary entries of sector 0 and the chain
//! of extended boot records (EBRs) holding logical partitions.
//!
//! Logical partitions are numbered from 5 in chain order, as Linux does. The
//! extended partition itself is a container, not a volume, so it is not
//! listed (Linux exposes it only as a 1 KiB stub). Sector size is 512: MBR
//! tables on 4K-sector disks are not handled (none of our hypervisors make
//! them), a protective MBR on such a disk only hands over to GPT.

use super::{Partition, PartitionTable, SECTOR};
use crate::block::ImageFile;
use crate::le::u32le;
use crate::Result;
use std::collections::HashSet;

/// What sector 0 holds.
pub(crate) enum Mbr {
    /// No MBR signature, or a boot sector that is not a partition table.
    None,
    /// A protective (or hybrid) MBR: the disk is GPT.
    Protective,
    Table(PartitionTable),
}

/// Enough for any real disk (Linux allows far fewer partitions per disk);
/// a longer chain is corrupt, and the bound stops a chain that never ends.
const MAX_EBRS: usize = 256;

const ENTRY_TABLE: usize = 446;

#[derive(Clone, Copy)]
struct Entry {
    status: u8,
    kind: u8,
    start: u32,
    sectors: u32,
}

fn entries(sector: &[u8]) -> [Entry; 4] {
    let entry = |i: usize| {
        let off = ENTRY_TABLE + 16 * i;
        Entry {
            status: sector.get(off).copied().unwrap_or(0),
            kind: sector.get(off + 4).copied().unwrap_or(0),
            start: u32le(sector, off + 8),
            sectors: u32le(sector, off + 12),
        }
    };
    [entry(0), entry(1), entry(2), entry(3)]
}

fn has_signature(sector: &[u8]) -> bool {
    sector.get(510..512) == Some(&[0x55, 0xaa][..])
}

pub(crate) fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0f | 0x85)
}

/// Reads sector 0 of `disk`.
pub(crate) fn read_mbr(disk: &ImageFile) -> Result<Mbr> {
    if disk.size() < SECTOR {
        return Ok(Mbr::None);
    }
    let mut sector = [0u8; 512];
    disk.read("MBR", 0, &mut sector)?;
    if !has_signature(&sector) {
        return Ok(Mbr::None);
    }
    let table = entries(&sector);
    // A filesystem boot sector (FAT, NTFS without partition table) also ends
    // in 55 AA; its boot code does not have 0x00/0x80 status bytes in all
    // four slots, and NTFS/exFAT name themselves.
    if table.iter().any(|e| e.status != 0 && e.status != 0x80)
        || sector.get(3..11) == Some(b"NTFS    ")
        || sector.get(3..11) == Some(b"EXFAT   ")
    {
        return Ok(Mbr::None);
    }
    if table.iter().any(|e| e.kind == 0xee) {
        return Ok(Mbr::Protective);
    }
    let disk_sectors = disk.size() / SECTOR;
    let mut out = PartitionTable::default();
    for (i, e) in table.iter().enumerate() {
        if e.kind == 0 || e.sectors == 0 {
            continue;
        }
        let number = i as u32 + 1;
        let entry_offset = (ENTRY_TABLE + 16 * i) as u64;
        let id = format!("p{number}");
        let end = u64::from(e.start) + u64::from(e.sectors);
        if e.start == 0 || end > disk_sectors {
            let why = if e.start == 0 {
                "partition starts at sector 0, over the MBR itself".to_string()
            } else {
                format!("partition (sectors {}..{end}) extends beyond the end of the disk ({disk_sectors} sectors)", e.start)
            };
            out.errors.push((id, disk.corrupt(&format!("MBR partition entry {number}"), entry_offset, why)));
            continue;
        }
        if is_extended(e.kind) {
            read_logical(disk, u64::from(e.start), u64::from(e.sectors), &mut out);
            continue;
        }
        out.partitions.push(Partition {
            number,
            start: u64::from(e.start) * SECTOR,
            size: u64::from(e.sectors) * SECTOR,
            part_type: format!("{:#04x}", e.kind),
            name: None,
            uuid: None,
            lvm_type: e.kind == 0x8e,
        });
    }
    // Logical partitions were pushed while walking the table; list in
    // number order (primaries first) like Linux and sfdisk.
    out.partitions.sort_by_key(|p| p.number);
    Ok(Mbr::Table(out))
}

/// Walks the EBR chain of the extended partition at `ext_start` (sectors).
/// Each EBR's first entry is a logical partition relative to that EBR; its
/// second entry links to the next EBR relative to the extended partition.
/// Errors go into `out.errors` under "ebr"; partitions found before a bad
/// link are kept.
fn read_logical(disk: &ImageFile, ext_start: u64, ext_sectors: u64, out: &mut PartitionTable) {
    let disk_sectors = disk.size() / SECTOR;
    let ext_end = ext_start.saturating_add(ext_sectors).min(disk_sectors);
    let mut seen = HashSet::new();
    let mut ebr = ext_start;
    let mut number = 5u32;
    loop {
        let ebr_offset = ebr * SECTOR;
        if seen.len() >= MAX_EBRS {
            out.errors.push(("ebr".into(), disk.corrupt("EBR chain", ebr_offset, format!("more than {MAX_EBRS} extended boot records"))));
            return;
        }
        if !seen.insert(ebr) {
            out.errors.push(("ebr".into(), disk.corrupt("EBR chain", ebr_offset, format!("the chain of extended boot records loops back to sector {ebr}"))));
            return;
        }
        let mut sector = [0u8; 512];
        if let Err(e) = disk.read("EBR", ebr_offset, &mut sector) {
            out.errors.push(("ebr".into(), e));
            return;
        }
        if !has_signature(&sector) {
            out.errors.push(("ebr".into(), disk.corrupt("EBR", ebr_offset, "missing 55 AA signature")));
            return;
        }
        let mut next = None;
        for (i, e) in entries(&sector).iter().enumerate() {
            if e.kind == 0 || e.sectors == 0 {
                continue;
            }
            if is_extended(e.kind) {
                if next.is_none() {
                    next = Some(ext_start + u64::from(e.start));
                }
                continue;
            }
            let id = format!("p{number}");
            let start = ebr + u64::from(e.start);
            let end = start + u64::from(e.sectors);
            let structure = format!("EBR entry {} (logical partition {number})", i + 1);
            let entry_offset = ebr_offset + (ENTRY_TABLE + 16 * i) as u64;
            if end > disk_sectors {
                let why = format!("partition (sectors {start}..{end}) extends beyond the end of the disk ({disk_sectors} sectors)");
                out.errors.push((id, disk.corrupt(&structure, entry_offset, why)));
            } else if e.start == 0 || end > ext_end {
                let why = format!("logical partition (sectors {start}..{end}) lies outside its extended partition (sectors {ext_start}..{ext_end})");
                out.errors.push((id, disk.corrupt(&structure, entry_offset, why)));
            } else {
                out.partitions.push(Partition {
                    number,
                    start: start * SECTOR,
                    size: u64::from(e.sectors) * SECTOR,
                    part_type: format!("{:#04x}", e.kind),
                    name: None,
                    uuid: None,
                    lvm_type: e.kind == 0x8e,
                });
            }
            number += 1;
        }
        match next {
            None => return,
            Some(n) if n < ext_start || n >= ext_end => {
                let why = format!("link to the next EBR (sector {n}) lies outside the extended partition (sectors {ext_start}..{ext_end})");
                out.errors.push(("ebr".into(), disk.corrupt("EBR", ebr_offset, why)));
                return;
            }
            Some(n) => ebr = n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;
    use std::sync::Arc;

    fn put(buf: &mut [u8], at: usize, kind: u8, start: u32, sectors: u32) {
        buf[at + 4] = kind;
        buf[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
        buf[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
    }

    fn disk(sectors: usize) -> Vec<u8> {
        let mut d = vec![0u8; sectors * 512];
        d[510] = 0x55;
        d[511] = 0xaa;
        d
    }

    fn ebr(d: &mut [u8], at_sector: usize, logical: (u32, u32), next: Option<(u32, u32)>) {
        let base = at_sector * 512;
        d[base + 510] = 0x55;
        d[base + 511] = 0xaa;
        put(d, base + 446, 0x83, logical.0, logical.1);
        if let Some((s, n)) = next {
            put(d, base + 462, 0x05, s, n);
        }
    }

    fn table(d: Vec<u8>) -> PartitionTable {
        let f = ImageFile::new(Arc::new(MemSource(d)), "disk0");
        match read_mbr(&f).unwrap() {
            Mbr::Table(t) => t,
            _ => panic!("not a table"),
        }
    }

    #[test]
    fn primaries_and_logicals() {
        let mut d = disk(400);
        put(&mut d, 446, 0x83, 10, 20);
        put(&mut d, 462, 0x05, 100, 200);
        ebr(&mut d, 100, (1, 10), Some((50, 30)));
        ebr(&mut d, 150, (2, 20), None);
        let t = table(d);
        assert!(t.errors.is_empty());
        let got: Vec<_> = t.partitions.iter().map(|p| (p.number, p.start / 512, p.size / 512)).collect();
        assert_eq!(got, vec![(1, 10, 20), (5, 101, 10), (6, 152, 20)]);
    }

    #[test]
    fn ebr_loop_is_an_error_and_keeps_found_partitions() {
        let mut d = disk(400);
        put(&mut d, 446, 0x05, 100, 200);
        ebr(&mut d, 100, (1, 10), Some((50, 30)));
        ebr(&mut d, 150, (2, 20), Some((0, 30)));
        let t = table(d);
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.errors.len(), 1);
        assert!(t.errors[0].1.to_string().contains("loops"), "{}", t.errors[0].1);
    }

    #[test]
    fn beyond_end_is_an_error_for_that_partition_only() {
        let mut d = disk(100);
        put(&mut d, 446, 0x83, 10, 20);
        put(&mut d, 462, 0x83, 50, 200);
        let t = table(d);
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(t.errors[0].0, "p2");
    }

    #[test]
    fn protective_and_boot_sector() {
        let mut d = disk(100);
        put(&mut d, 446, 0xee, 1, 99);
        let f = ImageFile::new(Arc::new(MemSource(d.clone())), "d");
        assert!(matches!(read_mbr(&f).unwrap(), Mbr::Protective));
        d[446] = 0x31; // boot code, not a status byte
        let f = ImageFile::new(Arc::new(MemSource(d)), "d");
        assert!(matches!(read_mbr(&f).unwrap(), Mbr::None));
    }
}

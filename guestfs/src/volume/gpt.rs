//! GUID partition tables.
//!
//! Written here rather than taken from the `gpt` crate: that crate reads
//! through a `DiskDevice` trait object that must implement `Read + Write +
//! Seek`, so it needs a mutable cursor (no positional, shared `&self` reads
//! from our thread-safe `ReadAt`) and an adapter with a write path that
//! must be made to fail, and its logical block size is configured by the
//! caller rather than detected. Its errors do not carry the disk, the
//! structure and the byte offset we report. The read-only part of GPT is
//! small (two headers, two CRCs, an entry array), so a parser that only
//! reads, bounds every size by the disk and falls back to the backup header
//! is less code to trust than an adapter around a read/write library.
//!
//! The logical sector size is found where the primary header lies: "EFI
//! PART" at byte 512 (512-byte sectors) or at byte 4096 (4K sectors).
//! Partitions are numbered by their slot in the entry array (slot 0 is
//! `p1`), as Linux does, so numbers can have gaps.

use super::{crc32_ieee, Partition, PartitionTable};
use crate::block::ImageFile;
use crate::le::{bytes, guid_string, u32le, u64le};
use crate::Result;

const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The UEFI spec allows 128 * 2^n byte entries; real tables have 128 of
/// 128 bytes. Bounds keep a hostile header from making us read much.
const MAX_ENTRIES: u32 = 65536;
const MAX_ENTRY_SIZE: u32 = 4096;
const MAX_ARRAY_BYTES: u64 = 8 << 20;

/// LVM's partition type GUID (E6D6D379-F507-44C2-A23C-238F2A3DF928).
const LVM_TYPE: &str = "e6d6d379-f507-44c2-a23c-238f2a3df928";

struct Header {
    my_lba: u64,
    entries_lba: u64,
    entries: u32,
    entry_size: u32,
    entries_crc: u32,
}

/// Reads the GPT of `disk`, from the primary header or, when it or its
/// entries are damaged, from the backup header at the last LBA.
pub(crate) fn read_gpt(disk: &ImageFile) -> Result<PartitionTable> {
    let sector_size = detect_sector_size(disk)?;
    let last_lba = (disk.size() / sector_size).saturating_sub(1);
    let primary = read_header(disk, sector_size, 1).and_then(|h| read_entries(disk, sector_size, &h).map(|e| (h, e)));
    let (_header, array, entry_size) = match primary {
        Ok((h, e)) => {
            let sz = h.entry_size;
            (h, e, sz)
        }
        Err(primary_err) => {
            let backup = read_header(disk, sector_size, last_lba).and_then(|h| read_entries(disk, sector_size, &h).map(|e| (h, e)));
            match backup {
                Ok((h, e)) => {
                    tracing::warn!("{}: primary GPT unusable ({primary_err}); using the backup GPT header at LBA {last_lba}", disk.path.display());
                    let sz = h.entry_size;
                    (h, e, sz)
                }
                Err(backup_err) => {
                    return Err(disk.corrupt(
                        "GPT",
                        sector_size,
                        format!("both GPT headers are unusable: primary: {primary_err}; backup at LBA {last_lba}: {backup_err}"),
                    ))
                }
            }
        }
    };
    Ok(parse_entries(disk, sector_size, &array, entry_size))
}

fn detect_sector_size(disk: &ImageFile) -> Result<u64> {
    for size in [512u64, 4096] {
        if disk.size() >= size * 2 {
            let mut sig = [0u8; 8];
            disk.read("GPT header signature", size, &mut sig)?;
            if &sig == SIGNATURE {
                return Ok(size);
            }
        }
    }
    // The primary is gone; look for a backup at the last LBA of either size.
    for size in [512u64, 4096] {
        if disk.size() >= size * 2 && disk.size() % size == 0 {
            let mut sig = [0u8; 8];
            disk.read("GPT header signature", disk.size() - size, &mut sig)?;
            if &sig == SIGNATURE {
                return Ok(size);
            }
        }
    }
    Err(disk.corrupt("GPT header", 512, "protective MBR present but no \"EFI PART\" header at LBA 1 (512 or 4096-byte sectors) nor at the last LBA"))
}

fn read_header(disk: &ImageFile, sector_size: u64, lba: u64) -> Result<Header> {
    let offset = lba * sector_size;
    let sector = disk.read_vec("GPT header", offset, sector_size)?;
    let bad = |why: String| disk.corrupt(&format!("GPT header at LBA {lba}"), offset, why);
    if sector.get(..8) != Some(&SIGNATURE[..]) {
        return Err(bad("no \"EFI PART\" signature".into()));
    }
    let header_size = u32le(&sector, 12);
    if header_size < 92 || u64::from(header_size) > sector_size {
        return Err(bad(format!("header size {header_size} is not between 92 and the sector size {sector_size}")));
    }
    let stored_crc = u32le(&sector, 16);
    let mut copy = sector.get(..header_size as usize).unwrap_or_default().to_vec();
    if let Some(f) = copy.get_mut(16..20) {
        f.fill(0);
    }
    let crc = crc32_ieee(&copy);
    if crc != stored_crc {
        return Err(bad(format!("header CRC32 mismatch (stored {stored_crc:#010x}, computed {crc:#010x})")));
    }
    let h = Header {
        my_lba: u64le(&sector, 24),
        entries_lba: u64le(&sector, 72),
        entries: u32le(&sector, 80),
        entry_size: u32le(&sector, 84),
        entries_crc: u32le(&sector, 88),
    };
    if h.my_lba != lba {
        return Err(bad(format!("header says it lies at LBA {}", h.my_lba)));
    }
    if h.entry_size < 128 || h.entry_size > MAX_ENTRY_SIZE || h.entry_size % 8 != 0 {
        return Err(bad(format!("partition entry size {} is invalid", h.entry_size)));
    }
    if h.entries > MAX_ENTRIES {
        return Err(bad(format!("{} partition entries (at most {MAX_ENTRIES} supported)", h.entries)));
    }
    Ok(h)
}

fn read_entries(disk: &ImageFile, sector_size: u64, h: &Header) -> Result<Vec<u8>> {
    let len = u64::from(h.entries) * u64::from(h.entry_size);
    let offset = h.entries_lba.checked_mul(sector_size).ok_or_else(|| {
        disk.corrupt("GPT header", h.my_lba * sector_size, format!("partition entry array LBA {} is impossible", h.entries_lba))
    })?;
    if len > MAX_ARRAY_BYTES {
        return Err(disk.corrupt("GPT partition entry array", offset, format!("{len} bytes is more than any real table")));
    }
    let array = disk.read_vec("GPT partition entry array", offset, len)?;
    let crc = crc32_ieee(&array);
    if crc != h.entries_crc {
        return Err(disk.corrupt(
            "GPT partition entry array",
            offset,
            format!("CRC32 mismatch (header of LBA {} says {:#010x}, computed {crc:#010x})", h.my_lba, h.entries_crc),
        ));
    }
    Ok(array)
}

fn parse_entries(disk: &ImageFile, sector_size: u64, array: &[u8], entry_size: u32) -> PartitionTable {
    let mut out = PartitionTable::default();
    let disk_sectors = disk.size() / sector_size;
    for (slot, e) in array.chunks_exact(entry_size as usize).enumerate() {
        let type_guid: [u8; 16] = bytes(e, 0);
        if type_guid == [0; 16] {
            continue;
        }
        let number = slot as u32 + 1;
        let part_type = guid_string(&type_guid);
        let first = u64le(e, 32);
        let last = u64le(e, 40);
        let name_units: Vec<u16> = e.get(56..128).unwrap_or_default().chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
        // Unpaired surrogates become U+FFFD: a name is a label, not a key.
        let name = String::from_utf16_lossy(&name_units);
        let id = format!("p{number}");
        if first == 0 || last < first || last >= disk_sectors {
            let why = format!("partition (LBA {first}..={last}) does not lie inside the disk ({disk_sectors} sectors of {sector_size} bytes)");
            out.errors.push((id, disk.corrupt(&format!("GPT partition entry {number}"), slot as u64 * u64::from(entry_size), why)));
            continue;
        }
        out.partitions.push(Partition {
            number,
            start: first * sector_size,
            size: (last - first + 1) * sector_size,
            lvm_type: part_type == LVM_TYPE,
            part_type,
            name: Some(name),
            uuid: Some(guid_string(&bytes(e, 16))),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;
    use std::sync::Arc;

    /// A minimal valid GPT with one partition, built by hand.
    fn gpt_disk(sector: usize, sectors: usize) -> Vec<u8> {
        let mut d = vec![0u8; sector * sectors];
        let last = sectors as u64 - 1;
        let mut entries = vec![0u8; 128 * 128];
        entries[0..16].copy_from_slice(&[0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4]);
        entries[16] = 1;
        entries[32..40].copy_from_slice(&34u64.to_le_bytes());
        entries[40..48].copy_from_slice(&40u64.to_le_bytes());
        for (i, c) in "data".encode_utf16().enumerate() {
            entries[56 + 2 * i..58 + 2 * i].copy_from_slice(&c.to_le_bytes());
        }
        let array_sectors = entries.len().div_ceil(sector) as u64;
        let put_header = |d: &mut Vec<u8>, my: u64, alt: u64, array_lba: u64| {
            let mut h = vec![0u8; 92];
            h[0..8].copy_from_slice(SIGNATURE);
            h[8..12].copy_from_slice(&0x10000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&my.to_le_bytes());
            h[32..40].copy_from_slice(&alt.to_le_bytes());
            h[72..80].copy_from_slice(&array_lba.to_le_bytes());
            h[80..84].copy_from_slice(&128u32.to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[88..92].copy_from_slice(&crc32_ieee(&entries).to_le_bytes());
            let crc = crc32_ieee(&h);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            let at = my as usize * sector;
            d[at..at + 92].copy_from_slice(&h);
            let at = array_lba as usize * sector;
            d[at..at + entries.len()].copy_from_slice(&entries);
        };
        put_header(&mut d, 1, last, 2);
        put_header(&mut d, last, 1, last - array_sectors);
        d
    }

    fn read(d: Vec<u8>) -> Result<PartitionTable> {
        read_gpt(&ImageFile::new(Arc::new(MemSource(d)), "disk0"))
    }

    #[test]
    fn reads_512_and_4k() {
        for sector in [512usize, 4096] {
            let t = read(gpt_disk(sector, 100)).unwrap();
            assert_eq!(t.partitions.len(), 1);
            let p = &t.partitions[0];
            assert_eq!((p.start, p.size), (34 * sector as u64, 7 * sector as u64));
            assert_eq!(p.name.as_deref(), Some("data"));
            assert_eq!(p.part_type, "0fc63daf-8483-4772-8e79-3d69d8477de4");
        }
    }

    #[test]
    fn falls_back_to_backup_then_fails_cleanly() {
        let mut d = gpt_disk(512, 100);
        d[512 + 40] ^= 1; // primary header CRC now wrong
        assert_eq!(read(d.clone()).unwrap().partitions.len(), 1);
        let mut e = gpt_disk(512, 100);
        e[1024] ^= 1; // primary entry array CRC wrong
        assert_eq!(read(e).unwrap().partitions.len(), 1);
        let n = d.len();
        d[n - 512 + 40] ^= 1;
        let err = read(d).err().expect("both damaged").to_string();
        assert!(err.contains("both GPT headers") && err.contains("CRC32"), "{err}");
    }
}

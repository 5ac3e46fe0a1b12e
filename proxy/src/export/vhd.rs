//! Dynamic VHD output: footer copy, dynamic header, BAT, 2 MiB blocks
//! (sector bitmap + data) allocated on first write, footer at the end.
//! All-zero granules are never written; blocks with no data stay
//! unallocated in the BAT.

use super::{Granule, ImageWriter};
use anyhow::{bail, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;

const SECTOR: u64 = 512;
const BLOCK: u64 = 2 << 20;
const BITMAP_SECTORS: u64 = 1; // 4096 sectors per block: 512 bytes of bitmap
const BAT_OFFSET: u64 = 1536;
/// Largest disk the VHD format holds (2040 GiB).
const MAX_SIZE: u64 = 2040 << 30;
/// Seconds from 1970-01-01 to 2000-01-01, VHD's epoch.
const VHD_EPOCH: u64 = 946_684_800;

pub struct VhdWriter {
    file: File,
    footer: [u8; 512],
    bat: Vec<u32>,
    next_sector: u64,
}

/// CHS geometry per the VHD specification's algorithm.
fn geometry(size: u64) -> (u16, u8, u8) {
    let mut total = (size / SECTOR).min(65535 * 16 * 255);
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17u64;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    total = cth / heads;
    (total.min(65535) as u16, heads as u8, spt as u8)
}

fn checksum(b: &[u8]) -> u32 {
    !b.iter().fold(0u32, |a, &x| a.wrapping_add(u32::from(x)))
}

impl VhdWriter {
    pub fn new(file: File, size: u64) -> Result<VhdWriter> {
        if size % SECTOR != 0 || size > MAX_SIZE {
            bail!("VHD holds whole sectors up to 2040 GiB; this disk is {size} bytes");
        }
        let entries = size.div_ceil(BLOCK);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let stamp = now.saturating_sub(VHD_EPOCH) as u32;
        let mut f = [0u8; 512];
        f[0..8].copy_from_slice(b"conectix");
        f[8..12].copy_from_slice(&2u32.to_be_bytes());
        f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        f[16..24].copy_from_slice(&SECTOR.to_be_bytes());
        f[24..28].copy_from_slice(&stamp.to_be_bytes());
        // Creator "win ": readers (qemu among them) then take the size from
        // the current-size field, not from the CHS geometry, which cannot
        // express every size.
        f[28..32].copy_from_slice(b"win ");
        f[32..36].copy_from_slice(&0x000a_0000u32.to_be_bytes());
        f[36..40].copy_from_slice(b"Wi2k");
        f[40..48].copy_from_slice(&size.to_be_bytes());
        f[48..56].copy_from_slice(&size.to_be_bytes());
        let (c, h, s) = geometry(size);
        f[56..58].copy_from_slice(&c.to_be_bytes());
        f[58] = h;
        f[59] = s;
        f[60..64].copy_from_slice(&3u32.to_be_bytes());
        let id: [u8; 16] = {
            let x = (now ^ u64::from(std::process::id()) << 20).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&x.to_le_bytes());
            id[8..].copy_from_slice(&x.rotate_left(29).wrapping_mul(0xD6E8_FEB8_6659_FD93).to_le_bytes());
            id[6] = (id[6] & 0x0f) | 0x40;
            id[8] = (id[8] & 0x3f) | 0x80;
            id
        };
        f[68..84].copy_from_slice(&id);
        let sum = checksum(&f);
        f[64..68].copy_from_slice(&sum.to_be_bytes());

        let mut d = [0u8; 1024];
        d[0..8].copy_from_slice(b"cxsparse");
        d[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        d[16..24].copy_from_slice(&BAT_OFFSET.to_be_bytes());
        d[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        d[28..32].copy_from_slice(&u32::try_from(entries)?.to_be_bytes());
        d[32..36].copy_from_slice(&(BLOCK as u32).to_be_bytes());
        let sum = checksum(&d);
        d[36..40].copy_from_slice(&sum.to_be_bytes());

        file.write_all_at(&f, 0)?;
        file.write_all_at(&d, SECTOR)?;
        let bat_bytes = (entries * 4).div_ceil(SECTOR) * SECTOR;
        Ok(VhdWriter {
            file,
            footer: f,
            bat: vec![u32::MAX; entries as usize],
            next_sector: (BAT_OFFSET + bat_bytes) / SECTOR,
        })
    }
}

impl ImageWriter for VhdWriter {
    fn granularity(&self) -> u64 {
        64 << 10
    }

    fn write(&mut self, g: Granule<'_>) -> Result<()> {
        let block = (g.offset / BLOCK) as usize;
        if self.bat[block] == u32::MAX {
            self.bat[block] = u32::try_from(self.next_sector)?;
            // Every sector of an allocated block is present in this file.
            self.file.write_all_at(&[0xffu8; 512], self.next_sector * SECTOR)?;
            self.next_sector += BITMAP_SECTORS + BLOCK / SECTOR;
        }
        let data = (u64::from(self.bat[block]) + BITMAP_SECTORS) * SECTOR + g.offset % BLOCK;
        self.file.write_all_at(g.data, data)?;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let bat: Vec<u8> = self.bat.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.file.write_all_at(&bat, BAT_OFFSET)?;
        let end = self.next_sector * SECTOR;
        self.file.write_all_at(&self.footer, end)?;
        self.file.set_len(end + SECTOR)?;
        self.file.sync_all()?;
        Ok(())
    }
}

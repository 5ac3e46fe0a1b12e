//! Dynamic VHDX output (MS-VHDX): file identifier, two headers, two region
//! tables, an empty log, metadata, BAT, and 2 MiB payload blocks allocated
//! on first write. No log entries are ever written (LogGuid is zero), so
//! nothing needs replaying; all-zero granules are never written and blocks
//! with no data stay NOT_PRESENT.

use super::{Granule, ImageWriter};
use anyhow::{bail, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const BLOCK: u64 = 2 * MIB;
const LOGICAL_SECTOR: u64 = 512;
const PHYSICAL_SECTOR: u32 = 4096;
/// Payload blocks per sector bitmap block: 2^23 sectors' worth.
const CHUNK_RATIO: u64 = (1 << 23) * LOGICAL_SECTOR / BLOCK;
const LOG_OFFSET: u64 = MIB;
const LOG_LENGTH: u64 = MIB;
const METADATA_OFFSET: u64 = 2 * MIB;
const METADATA_LENGTH: u64 = MIB;
const BAT_OFFSET: u64 = 3 * MIB;
/// Largest virtual disk VHDX defines (64 TiB).
const MAX_SIZE: u64 = 64 << 40;

const PAYLOAD_BLOCK_FULLY_PRESENT: u64 = 6;

const BAT_GUID: &str = "2DC27766-F623-4200-9D64-115E9BFD4A08";
const METADATA_GUID: &str = "8B7CA206-4790-4B9A-B8FE-575F050F886E";
const FILE_PARAMETERS: &str = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B";
const VIRTUAL_DISK_SIZE: &str = "2FA54224-CD1B-4876-B211-5DBED83BF4B8";
const VIRTUAL_DISK_ID: &str = "BECA12AB-B2E6-4523-93EF-C309E000C746";
const LOGICAL_SECTOR_SIZE: &str = "8141BF1D-A96F-4709-BA47-F233A8FAAB5F";
const PHYSICAL_SECTOR_SIZE: &str = "CDA348C7-445D-4471-9CC9-E9885251C556";

/// A GUID in Microsoft's byte order (first three fields little-endian).
fn guid(s: &str) -> [u8; 16] {
    let hex: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    let b: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0)).collect();
    let mut g = [0u8; 16];
    g[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    g[4..6].copy_from_slice(&[b[5], b[4]]);
    g[6..8].copy_from_slice(&[b[7], b[6]]);
    g[8..16].copy_from_slice(&b[8..16]);
    g
}

/// A fresh random-enough version-4 GUID (unique per export; not secret).
fn new_guid(salt: u64) -> [u8; 16] {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()) as u64;
    let mut x = t ^ (u64::from(std::process::id()) << 32) ^ salt.wrapping_mul(0xA076_1D64_78BD_642F);
    let mut g = [0u8; 16];
    for chunk in g.chunks_mut(8) {
        x ^= x >> 31;
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    g
}

fn put_crc(buf: &mut [u8]) {
    buf[4..8].fill(0);
    let c = crc32c::crc32c(buf);
    buf[4..8].copy_from_slice(&c.to_le_bytes());
}

pub struct VhdxWriter {
    file: File,
    bat: Vec<u64>,
    next_free: u64,
}

impl VhdxWriter {
    pub fn new(file: File, size: u64) -> Result<VhdxWriter> {
        if size % LOGICAL_SECTOR != 0 || size == 0 || size > MAX_SIZE {
            bail!("VHDX holds whole 512-byte sectors up to 64 TiB; this disk is {size} bytes");
        }
        let payload_blocks = size.div_ceil(BLOCK);
        let bat_entries = payload_blocks + (payload_blocks - 1) / CHUNK_RATIO;
        let bat_length = (bat_entries * 8).div_ceil(MIB) * MIB;

        // File type identifier.
        let mut ident = vec![0u8; (64 * KIB) as usize];
        ident[0..8].copy_from_slice(b"vhdxfile");
        for (i, u) in "vbproxy".encode_utf16().enumerate() {
            ident[8 + 2 * i..10 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        file.write_all_at(&ident, 0)?;

        // Two headers, sequence numbers 0 and 1: the second is current.
        let file_write = new_guid(1);
        let data_write = new_guid(2);
        for (i, at) in [64 * KIB, 128 * KIB].into_iter().enumerate() {
            let mut h = vec![0u8; (4 * KIB) as usize];
            h[0..4].copy_from_slice(b"head");
            h[8..16].copy_from_slice(&(i as u64).to_le_bytes());
            h[16..32].copy_from_slice(&file_write);
            h[32..48].copy_from_slice(&data_write);
            // LogGuid (48..64) zero: no log to replay.
            h[64..66].copy_from_slice(&0u16.to_le_bytes()); // log version
            h[66..68].copy_from_slice(&1u16.to_le_bytes()); // version
            h[68..72].copy_from_slice(&(LOG_LENGTH as u32).to_le_bytes());
            h[72..80].copy_from_slice(&LOG_OFFSET.to_le_bytes());
            put_crc(&mut h);
            file.write_all_at(&h, at)?;
        }

        // Two identical region tables.
        let mut rt = vec![0u8; (64 * KIB) as usize];
        rt[0..4].copy_from_slice(b"regi");
        rt[8..12].copy_from_slice(&2u32.to_le_bytes());
        for (i, (g, off, len)) in [(BAT_GUID, BAT_OFFSET, bat_length), (METADATA_GUID, METADATA_OFFSET, METADATA_LENGTH)].into_iter().enumerate() {
            let e = 16 + 32 * i;
            rt[e..e + 16].copy_from_slice(&guid(g));
            rt[e + 16..e + 24].copy_from_slice(&off.to_le_bytes());
            rt[e + 24..e + 28].copy_from_slice(&(len as u32).to_le_bytes());
            rt[e + 28..e + 32].copy_from_slice(&1u32.to_le_bytes()); // required
        }
        put_crc(&mut rt);
        file.write_all_at(&rt, 192 * KIB)?;
        file.write_all_at(&rt, 256 * KIB)?;

        // The log region stays zero (never written).
        file.write_all_at(&vec![0u8; LOG_LENGTH as usize], LOG_OFFSET)?;

        // Metadata: table at the region start, items from 64 KiB on.
        let mut md = vec![0u8; METADATA_LENGTH as usize];
        md[0..8].copy_from_slice(b"metadata");
        let disk_id = new_guid(3);
        let mut params = [0u8; 8];
        params[0..4].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        const VIRTUAL: u32 = 1 << 1;
        const REQUIRED: u32 = 1 << 2;
        let items: [(&str, Vec<u8>, u32); 5] = [
            (FILE_PARAMETERS, params.to_vec(), REQUIRED),
            (VIRTUAL_DISK_SIZE, size.to_le_bytes().to_vec(), VIRTUAL | REQUIRED),
            (VIRTUAL_DISK_ID, disk_id.to_vec(), VIRTUAL | REQUIRED),
            (LOGICAL_SECTOR_SIZE, (LOGICAL_SECTOR as u32).to_le_bytes().to_vec(), VIRTUAL | REQUIRED),
            (PHYSICAL_SECTOR_SIZE, PHYSICAL_SECTOR.to_le_bytes().to_vec(), VIRTUAL | REQUIRED),
        ];
        md[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
        let mut data_at = 64 * KIB as usize;
        for (i, (g, value, flags)) in items.iter().enumerate() {
            let e = 32 + 32 * i;
            md[e..e + 16].copy_from_slice(&guid(g));
            md[e + 16..e + 20].copy_from_slice(&(data_at as u32).to_le_bytes());
            md[e + 20..e + 24].copy_from_slice(&(value.len() as u32).to_le_bytes());
            md[e + 24..e + 28].copy_from_slice(&flags.to_le_bytes());
            md[data_at..data_at + value.len()].copy_from_slice(value);
            data_at += value.len().next_multiple_of(8);
        }
        file.write_all_at(&md, METADATA_OFFSET)?;

        Ok(VhdxWriter { file, bat: vec![0; bat_entries as usize], next_free: BAT_OFFSET + bat_length })
    }
}

impl ImageWriter for VhdxWriter {
    fn granularity(&self) -> u64 {
        64 * KIB
    }

    fn write(&mut self, g: Granule<'_>) -> Result<()> {
        let block = g.offset / BLOCK;
        // Payload entries are interleaved with one sector bitmap entry per chunk.
        let index = (block + block / CHUNK_RATIO) as usize;
        if self.bat[index] == 0 {
            self.bat[index] = self.next_free | PAYLOAD_BLOCK_FULLY_PRESENT;
            self.next_free += BLOCK;
        }
        let base = self.bat[index] & !0xF_FFFF;
        self.file.write_all_at(g.data, base + g.offset % BLOCK)?;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let bat: Vec<u8> = self.bat.iter().flat_map(|e| e.to_le_bytes()).collect();
        self.file.write_all_at(&bat, BAT_OFFSET)?;
        self.file.set_len(self.next_free)?;
        self.file.sync_all()?;
        Ok(())
    }
}

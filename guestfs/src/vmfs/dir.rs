//! Directory entries. A directory is a file whose content lists its
//! children by descriptor address, type and name.
//!
//! VMFS 5: an array of 140-byte entries (type u32, FD address u32,
//! generation u32, 128-byte NUL-padded name); address 0 marks a free slot.
//!
//! VMFS 6: a 64 KiB header block (version, entry count, up to 128
//! allocation-map block numbers, the `.`/`..` entries, a name hash table),
//! then `mdAlignment`-sized blocks. Allocation-map blocks give each block's
//! type in a nibble (low two bits: 1 entries, 2 hash links, 3 allocation
//! map); an entry block has a 64-byte header (slot count, a bitmap where a
//! clear bit marks a used slot) and 288-byte entries (type, address,
//! generation, hash fields, offset, 256-byte name). Listing walks the
//! allocation maps; the hash table only speeds up lookups.

use crate::le::{u16le, u32le};

pub const ENTRY5_SIZE: usize = 140;
const NAME5_LEN: usize = 128;
pub const DIR6_HEADER_BLOCK: u64 = 0x10000;
const DIR6_HEADER_SIZE: usize = 0x5F8;
const DIR6_VERSIONS: [u32; 2] = [0xF5_0001, 0xFD_C001];
const DIR6_BLOCK_HEADER: usize = 0x40;
const ENTRY6_SIZE: usize = 0x120;
const DIR6_TYPE_DIRENT: u8 = 1;
const DIR6_MAX_MAP_BLOCKS: u32 = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub kind: u32,
    pub addr: u32,
    pub name: Vec<u8>,
}

fn name_of(b: &[u8]) -> Vec<u8> {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b.get(..n).unwrap_or(&[]).to_vec()
}

/// Parses a VMFS 5 directory's content (its first `len` bytes).
pub fn parse_vmfs5(buf: &[u8]) -> Vec<RawEntry> {
    buf.chunks_exact(ENTRY5_SIZE)
        .filter(|e| u32le(e, 4) != 0)
        .map(|e| RawEntry { kind: u32le(e, 0), addr: u32le(e, 4), name: name_of(e.get(12..12 + NAME5_LEN).unwrap_or(&[])) })
        .collect()
}

/// Lists a VMFS 6 directory. `read(offset, buf)` reads the directory's
/// content; `len` is its size and `md` the metadata block size. `Err` says
/// what is wrong and at which offset of the directory.
pub fn parse_vmfs6(read: &mut dyn FnMut(u64, &mut [u8]) -> Result<(), String>, len: u64, md: u64) -> Result<Vec<RawEntry>, (u64, String)> {
    let io = |off: u64| move |e: String| (off, e);
    let mut h = vec![0u8; DIR6_HEADER_SIZE];
    read(0, &mut h).map_err(io(0))?;
    let version = u32le(&h, 0);
    if !DIR6_VERSIONS.contains(&version) {
        return Err((0, format!("bad directory header version {version:#x}")));
    }
    let num_entries = u64::from(u32le(&h, 4));
    let num_maps = u32le(&h, 0xc);
    if num_maps > DIR6_MAX_MAP_BLOCKS {
        return Err((0xc, format!("{num_maps} allocation-map blocks (at most {DIR6_MAX_MAP_BLOCKS})")));
    }
    // `.` and `..` live in the header and count towards the entry total.
    let mut remaining = num_entries;
    for at in [0x3B8usize, 0x4D8] {
        if u32le(&h, at + 4) != 0 {
            remaining = remaining.saturating_sub(1);
        }
    }
    let md_usize = usize::try_from(md).map_err(|_| (0, "metadata block size".to_string()))?;
    let nibbles_per_map = 2 * (md - DIR6_BLOCK_HEADER as u64);
    let block_off = |blk: u64| -> Result<u64, (u64, String)> {
        let off = blk.checked_mul(md).and_then(|o| o.checked_add(DIR6_HEADER_BLOCK)).filter(|o| o.checked_add(md).is_some_and(|e| e <= len));
        off.ok_or_else(|| (0, format!("directory block {blk} lies beyond the directory's {len} bytes")))
    };
    let mut out = Vec::new();
    let mut map = vec![0u8; md_usize];
    let mut blk = vec![0u8; md_usize];
    let max_slots = ((md_usize - DIR6_BLOCK_HEADER) / ENTRY6_SIZE).min(56 * 8);
    for i in 0..u64::from(num_maps) {
        if remaining == 0 {
            break;
        }
        let map_blk = u64::from(u32le(&h, 0x10 + 4 * i as usize));
        let off = block_off(map_blk)?;
        read(off, &mut map).map_err(io(off))?;
        for (n, byte) in map.get(DIR6_BLOCK_HEADER..).unwrap_or(&[]).iter().enumerate() {
            for (half, nib) in [(0u64, byte >> 4), (1, byte & 0xF)] {
                if nib & 3 != DIR6_TYPE_DIRENT || remaining == 0 {
                    continue;
                }
                let block = i * nibbles_per_map + 2 * n as u64 + half;
                let off = block_off(block)?;
                read(off, &mut blk).map_err(io(off))?;
                let slots = usize::from(u16le(&blk, 4)).min(max_slots);
                for s in 0..slots {
                    if remaining == 0 {
                        break;
                    }
                    let used = blk.get(8 + s / 8).is_some_and(|b| (b >> (s % 8)) & 1 == 0);
                    if !used {
                        continue;
                    }
                    let e = blk.get(DIR6_BLOCK_HEADER + s * ENTRY6_SIZE..DIR6_BLOCK_HEADER + (s + 1) * ENTRY6_SIZE).unwrap_or(&[]);
                    let addr = u32le(e, 4);
                    if addr == 0 {
                        continue;
                    }
                    out.push(RawEntry { kind: u32le(e, 0), addr, name: name_of(e.get(0x18..0x118).unwrap_or(&[])) });
                    remaining -= 1;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmfs5_entries() {
        let mut buf = vec![0u8; 3 * ENTRY5_SIZE];
        let mut put = |i: usize, kind: u32, addr: u32, name: &[u8]| {
            let e = &mut buf[i * ENTRY5_SIZE..];
            e[0..4].copy_from_slice(&kind.to_le_bytes());
            e[4..8].copy_from_slice(&addr.to_le_bytes());
            e[12..12 + name.len()].copy_from_slice(name);
        };
        put(0, 2, 4, b".");
        put(2, 3, 0x0240_0004, b"file5");
        let got = parse_vmfs5(&buf);
        assert_eq!(got.len(), 2, "free slot skipped");
        assert_eq!(got[1], RawEntry { kind: 3, addr: 0x0240_0004, name: b"file5".to_vec() });
    }
}

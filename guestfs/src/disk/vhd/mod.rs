//! VHD (Microsoft Virtual Hard Disk, qemu's `vpc`): fixed, dynamic and
//! differencing disks.
//!
//! - Fixed: the guest data followed by a 512-byte footer.
//! - Dynamic: footer copy, dynamic disk header, block allocation table
//!   (BAT), then blocks, each a sector bitmap followed by the block's data.
//! - Differencing: a dynamic disk whose sector bitmaps say which sectors
//!   it holds; the others come from the parent named by the header.
//!
//! The virtual size follows qemu's rule (see [`footer::Footer::virtual_size`]).
//!
//! Sector bitmaps of dynamic (non-differencing) disks are not consulted: an
//! allocated block reads from the block, as both qemu and Windows do (a
//! sector whose bit is cleared by hand still reads its stored bytes in
//! Windows 11), and qemu's map reports the whole block as data. The 1.0
//! spec reads as if a clear bit meant an unused sector, and a few readers
//! (MiniVHD, 7-Zip) return zeros there; writers zero-fill new blocks, so
//! the two readings only differ on hand-edited files, and we follow the
//! platform that writes these disks.

mod bat;
mod dynamic_header;
mod footer;
mod locator;

use super::{Allocation, Format, Layer, LinkId, ParentLink, MAX_VIRTUAL_SIZE};
use crate::block::ImageFile;
use crate::cache::BoundedCache;
use crate::namespace::Namespace;
use crate::Result;
use bat::Bat;
use dynamic_header::DynamicHeader;
use footer::{DiskType, Footer, FOOTER_SIZE};
use std::path::Path;

const SECTOR: u64 = 512;
/// Memory given to cached sector bitmaps of a differencing disk, and the
/// most bitmaps kept (the cache evicts by scanning its entries, so it
/// stays small; 256 bitmaps of 2 MiB blocks cover 512 MiB of disk).
const BITMAP_CACHE_BYTES: u64 = 4 << 20;
const BITMAP_CACHE_MAX_ENTRIES: u64 = 256;

pub fn open(_ns: &dyn Namespace, file: ImageFile) -> Result<Box<dyn Layer>> {
    let (footer, end_footer_ok) = Footer::read(&file)?;
    let footer_offset = file.size().saturating_sub(FOOTER_SIZE);
    let virtual_size = footer.virtual_size();
    if virtual_size > MAX_VIRTUAL_SIZE {
        return Err(file.corrupt(
            "VHD footer",
            footer_offset,
            format!("virtual size {virtual_size} exceeds the supported maximum of {MAX_VIRTUAL_SIZE} bytes"),
        ));
    }
    let sparse = match footer.disk_type {
        DiskType::Fixed => {
            if virtual_size > footer_offset {
                return Err(file.corrupt(
                    "VHD footer",
                    footer_offset,
                    format!("fixed disk of {virtual_size} bytes but only {footer_offset} bytes of data precede the footer; the file is truncated"),
                ));
            }
            None
        }
        DiskType::Dynamic | DiskType::Differencing => {
            // Blocks must end before the footer; when the end footer is
            // missing (truncated file) the file end is the only bound left.
            let data_end = if end_footer_ok { footer_offset } else { file.size() };
            Some(Sparse::open(&file, &footer, virtual_size, data_end)?)
        }
    };
    Ok(Box::new(VhdLayer { file, footer, virtual_size, sparse }))
}

pub struct VhdLayer {
    file: ImageFile,
    footer: Footer,
    virtual_size: u64,
    /// `None` for fixed disks.
    sparse: Option<Sparse>,
}

struct Sparse {
    bat: Bat,
    block_size: u64,
    /// Bytes of the sector bitmap in front of each block (whole sectors).
    bitmap_size: u64,
    /// Bitmaps of differencing disks' blocks, by block index.
    bitmaps: BoundedCache<u64, Vec<u8>>,
    parent: Option<ParentLink>,
}

impl Sparse {
    fn open(file: &ImageFile, footer: &Footer, virtual_size: u64, data_end: u64) -> Result<Sparse> {
        let header = DynamicHeader::read(file, footer.data_offset)?;
        let block_size = u64::from(header.block_size);
        let bitmap_size = (block_size / SECTOR).div_ceil(8).next_multiple_of(SECTOR);
        let bat = Bat::load(file, &header, virtual_size, bitmap_size, data_end)?;
        let parent = match footer.disk_type {
            DiskType::Differencing => {
                let locators = locator::read_locators(file, &header)?;
                let (candidates, hint) = locator::candidates(&file.path, &locators, &header.parent_name);
                if candidates.is_empty() {
                    return Err(file.corrupt(
                        "dynamic disk header",
                        header.offset,
                        "differencing disk names no parent (no usable parent locator and no parent name)",
                    ));
                }
                Some(ParentLink { candidates, hint, expect: Some(LinkId::VhdUniqueId(header.parent_unique_id)), format: None })
            }
            _ => None,
        };
        let cache_entries = usize::try_from((BITMAP_CACHE_BYTES / bitmap_size).clamp(16, BITMAP_CACHE_MAX_ENTRIES)).unwrap_or(16);
        Ok(Sparse { bat, block_size, bitmap_size, bitmaps: BoundedCache::new(cache_entries), parent })
    }

    /// The sector bitmap of an allocated block at `block_offset`.
    fn bitmap(&self, file: &ImageFile, index: u64, block_offset: u64) -> Result<std::sync::Arc<Vec<u8>>> {
        self.bitmaps.get_or_load(index, || {
            file.read_vec(&format!("sector bitmap of block {index}"), block_offset, self.bitmap_size)
        })
    }

    fn status(&self, file: &ImageFile, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        let index = offset / self.block_size;
        let in_block = offset % self.block_size;
        let to_block_end = (self.block_size - in_block).min(max_len);
        let Some(block_offset) = self.bat.block(index) else {
            // Extend over following unallocated blocks: one long run.
            let mut len = to_block_end;
            while len < max_len && self.bat.block((offset + len) / self.block_size).is_none() {
                len = (len + self.block_size).min(max_len);
            }
            return Ok((Allocation::Unallocated, len));
        };
        if self.parent.is_none() {
            let mut len = to_block_end;
            while len < max_len && self.bat.block((offset + len) / self.block_size).is_some() {
                len = (len + self.block_size).min(max_len);
            }
            return Ok((Allocation::Data, len));
        }
        // Differencing: each sector's bit says whether this file holds it
        // (bit set, most significant bit first) or the parent does.
        let bitmap = self.bitmap(file, index, block_offset)?;
        let bit = |sector: u64| -> bool {
            let byte = usize::try_from(sector / 8).ok().and_then(|i| bitmap.get(i)).copied().unwrap_or(0);
            byte & (0x80 >> (sector % 8)) != 0
        };
        let first = in_block / SECTOR;
        let here = bit(first);
        let sectors_in_block = self.block_size / SECTOR;
        let mut end = first + 1;
        while end < sectors_in_block && bit(end) == here && (end * SECTOR - in_block) < max_len {
            end += 1;
        }
        let len = (end * SECTOR - in_block).min(max_len);
        Ok((if here { Allocation::Data } else { Allocation::Unallocated }, len))
    }

    fn read_data(&self, file: &ImageFile, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let off = offset + done as u64;
            let index = off / self.block_size;
            let in_block = off % self.block_size;
            let n = usize::try_from(self.block_size - in_block).unwrap_or(usize::MAX).min(buf.len() - done);
            let Some(block_offset) = self.bat.block(index) else {
                return Err(file.corrupt(
                    &format!("BAT entry {index}"),
                    self.bat.entry_offset(index),
                    "read of an unallocated block (internal error)",
                ));
            };
            let chunk = buf.get_mut(done..done + n).unwrap_or_default();
            file.read(&format!("data of block {index}"), block_offset + self.bitmap_size + in_block, chunk)?;
            done += n;
        }
        Ok(())
    }
}

impl Layer for VhdLayer {
    fn format(&self) -> Format {
        Format::Vhd
    }

    fn variant(&self) -> String {
        self.footer.disk_type.name().into()
    }

    fn path(&self) -> &Path {
        &self.file.path
    }

    fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    fn status(&self, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        match &self.sparse {
            // A fixed disk is a raw image with a footer: host holes are zeros.
            None => Ok(super::raw::file_status(&self.file, offset, max_len)),
            Some(s) => s.status(&self.file, offset, max_len),
        }
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match &self.sparse {
            None => self.file.read("fixed disk data", offset, buf),
            Some(s) => s.read_data(&self.file, offset, buf),
        }
    }

    fn parent(&self) -> Option<&ParentLink> {
        self.sparse.as_ref().and_then(|s| s.parent.as_ref())
    }

    fn link_id(&self) -> Option<LinkId> {
        Some(LinkId::VhdUniqueId(self.footer.unique_id))
    }
}

#[cfg(test)]
mod tests {
    use super::dynamic_header::tests::make_header;
    use super::footer::tests::make_footer;
    use super::footer::checksum;
    use crate::disk::{open_disk, OpenOptions};
    use crate::namespace::MemFs;
    use std::path::Path;

    const BS: u32 = 4096;

    /// A dynamic (type 3) or differencing (type 4) disk of `blocks` blocks
    /// of 4 KiB; `alloc` lists (block, sector bitmap byte, fill byte).
    fn sparse_image(disk_type: u32, blocks: u32, alloc: &[(u32, u8, u8)], unique: u8, parent: Option<(u8, &str)>) -> Vec<u8> {
        let size = u64::from(blocks * BS);
        let mut f = make_footer(disk_type, size, b"win ", (0, 0, 0), 512);
        f[68..84].copy_from_slice(&[unique; 16]);
        f[64..68].copy_from_slice(&[0; 4]);
        let c = checksum(&f, 64);
        f[64..68].copy_from_slice(&c.to_be_bytes());
        let mut img = vec![0u8; 4096];
        img[..512].copy_from_slice(&f);
        let locator_text: Vec<u8> = parent.map(|(_, n)| n.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()).unwrap_or_default();
        let locators: Vec<(u32, u32, u64)> =
            if parent.is_some() { vec![(super::locator::W2RU, locator_text.len() as u32, 2048)] } else { vec![] };
        let mut h = make_header(1536, blocks, BS, "", &locators);
        if let Some((pid, _)) = parent {
            h[40..56].copy_from_slice(&[pid; 16]);
            h[36..40].copy_from_slice(&[0; 4]);
            let c = checksum(&h, 36);
            h[36..40].copy_from_slice(&c.to_be_bytes());
        }
        img[512..1536].copy_from_slice(&h);
        img[2048..2048 + locator_text.len()].copy_from_slice(&locator_text);
        for i in 0..blocks as usize {
            img[1536 + 4 * i..1540 + 4 * i].copy_from_slice(&u32::MAX.to_be_bytes());
        }
        for &(block, bits, fill) in alloc {
            let at = img.len();
            let i = block as usize;
            img[1536 + 4 * i..1540 + 4 * i].copy_from_slice(&((at / 512) as u32).to_be_bytes());
            let mut bitmap = vec![0u8; 512];
            bitmap[0] = bits;
            img.extend_from_slice(&bitmap);
            img.extend_from_slice(&vec![fill; BS as usize]);
        }
        img.extend_from_slice(&f);
        img
    }

    fn read_all(fs: &MemFs, top: &str) -> crate::Result<Vec<u8>> {
        let disk = open_disk(fs, Path::new(top), &OpenOptions::default())?;
        let mut buf = vec![0u8; disk.virtual_size() as usize];
        disk.read_at(&mut buf, 0)?;
        Ok(buf)
    }

    #[test]
    fn dynamic_ignores_bitmap_and_differencing_follows_it() {
        // Base: block 1 allocated with a bitmap saying nothing is there
        // (dynamic disks read the block anyway, like qemu).
        let base = sparse_image(3, 4, &[(1, 0x00, 0xaa), (2, 0xff, 0xbb)], 1, None);
        // Child: block 1 holds sectors 0 and 2 (bits 0b1010_0000), block 3
        // sector 7 only.
        let child = sparse_image(4, 4, &[(1, 0xa0, 0xcc), (3, 0x01, 0xdd)], 2, Some((1, ".\\base.vhd")));
        let fs = MemFs::default().with("/d/base.vhd", base).with("/d/child.vhd", child);
        let b = read_all(&fs, "/d/base.vhd").unwrap();
        assert!(b[..4096].iter().all(|&x| x == 0));
        assert!(b[4096..8192].iter().all(|&x| x == 0xaa));
        let c = read_all(&fs, "/d/child.vhd").unwrap();
        let sector = |n: usize| &c[n * 512..(n + 1) * 512];
        assert!(sector(8).iter().all(|&x| x == 0xcc));
        assert!(sector(9).iter().all(|&x| x == 0xaa));
        assert!(sector(10).iter().all(|&x| x == 0xcc));
        assert!(sector(11).iter().all(|&x| x == 0xaa));
        assert!(sector(16).iter().all(|&x| x == 0xbb));
        assert!(sector(24 + 6).iter().all(|&x| x == 0));
        assert!(sector(24 + 7).iter().all(|&x| x == 0xdd));
        let disk = open_disk(&fs, Path::new("/d/child.vhd"), &OpenOptions::default()).unwrap();
        let map = disk.map().unwrap();
        let at = |off: u64| map.iter().find(|e| e.start <= off && off < e.start + e.length).map(|e| (e.data, e.depth)).unwrap();
        assert_eq!(at(8 * 512), (true, 0));
        assert_eq!(at(9 * 512), (true, 1));
        assert_eq!(at(31 * 512), (true, 0));
        assert_eq!(at(30 * 512), (false, 2));
    }

    #[test]
    fn parent_identity_is_checked() {
        let base = sparse_image(3, 4, &[], 1, None);
        let child = sparse_image(4, 4, &[], 2, Some((9, "base.vhd")));
        let fs = MemFs::default().with("/d/base.vhd", base).with("/d/child.vhd", child);
        let e = read_all(&fs, "/d/child.vhd").unwrap_err();
        assert!(e.is_safety_refusal(), "{e}");
        let fs = MemFs::default().with("/d/child.vhd", sparse_image(4, 4, &[], 2, Some((1, "gone.vhd"))));
        let e = read_all(&fs, "/d/child.vhd").unwrap_err();
        assert!(e.is_safety_refusal() && e.to_string().contains("gone.vhd"), "{e}");
    }

    #[test]
    fn wild_bat_entry_and_small_table_are_corrupt() {
        let mut img = sparse_image(3, 4, &[(0, 0xff, 1)], 1, None);
        let len = img.len();
        img[1536..1540].copy_from_slice(&((len / 512) as u32).to_be_bytes());
        let fs = MemFs::default().with("/d/a.vhd", img);
        let e = read_all(&fs, "/d/a.vhd").unwrap_err().to_string();
        assert!(e.contains("BAT entry 0") && e.contains("offset 1536"), "{e}");
        let mut img = sparse_image(3, 4, &[], 1, None);
        let mut h = make_header(1536, 3, BS, "", &[]);
        h[36..40].copy_from_slice(&[0; 4]);
        let c = checksum(&h, 36);
        h[36..40].copy_from_slice(&c.to_be_bytes());
        img[512..1536].copy_from_slice(&h);
        let fs = MemFs::default().with("/d/a.vhd", img);
        let e = read_all(&fs, "/d/a.vhd").unwrap_err().to_string();
        assert!(e.contains("max table entries 3"), "{e}");
    }

    #[test]
    fn locator_outside_the_file_is_corrupt() {
        let mut img = sparse_image(4, 4, &[], 2, Some((1, "base.vhd")));
        // Locator 0's data offset (header 512 + table 576 + 16).
        img[512 + 576 + 16..512 + 576 + 24].copy_from_slice(&(1u64 << 40).to_be_bytes());
        img[512 + 36..512 + 40].copy_from_slice(&[0; 4]);
        let c = checksum(&img[512..1536], 36);
        img[512 + 36..512 + 40].copy_from_slice(&c.to_be_bytes());
        let fs = MemFs::default().with("/d/c.vhd", img);
        let e = read_all(&fs, "/d/c.vhd").unwrap_err().to_string();
        assert!(e.contains("parent locator 0 (W2ru)") && e.contains("beyond the end"), "{e}");
    }

    #[test]
    fn fixed_disk_is_data_before_footer() {
        let mut img = vec![7u8; 8192];
        img.extend_from_slice(&make_footer(2, 8192, b"win ", (0, 0, 0), u64::MAX));
        let fs = MemFs::default().with("/d/f.vhd", img.clone());
        assert_eq!(read_all(&fs, "/d/f.vhd").unwrap(), vec![7u8; 8192]);
        let short = img[512..].to_vec();
        let fs = MemFs::default().with("/d/f.vhd", short);
        assert!(read_all(&fs, "/d/f.vhd").unwrap_err().to_string().contains("truncated"));
    }
}

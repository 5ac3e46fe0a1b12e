//! Hosted sparse extents (`KDMV`): monolithicSparse, twoGbMaxExtentSparse
//! extents, streamOptimized.
//!
//! The virtual range is cut into grains (usually 64 KiB). A grain directory
//! (GD) of 32-bit sector offsets points to grain tables (GT) of
//! `numGTEsPerGT` 32-bit grain sector offsets. GTE 0: the grain is not in
//! this file (the parent supplies it); GTE 1 with the zeroed-grain flag: the
//! grain reads as zeros. In compressed (streamOptimized) extents a GTE
//! points to a grain marker: `lba: u64` (sector of the grain in the virtual
//! disk), `size: u32`, then `size` bytes of zlib data.

use super::extent::Extent;
use super::sparse_header::{self as hdr, SparseHeader, GD_AT_END, SECTOR};
use crate::block::ImageFile;
use crate::cache::BoundedCache;
use crate::disk::Allocation;
use crate::le::{u32le, u64le};
use crate::Result;
use std::path::PathBuf;

/// Grain tables kept decoded (at most 64 × 256 KiB with the largest tables
/// accepted; 64 × 2 KiB in practice).
const GT_CACHE: usize = 64;
/// Decompressed grains kept (at most 16 × 1 MiB).
const GRAIN_CACHE: usize = 16;

/// Metadata marker types of streamOptimized files.
const MARKER_EOS: u32 = 0;
const MARKER_FOOTER: u32 = 3;

pub struct HostedSparseExtent {
    file: ImageFile,
    header: SparseHeader,
    gd: Vec<u32>,
    tables: BoundedCache<u64, Vec<u32>>,
    grains: BoundedCache<u64, Vec<u8>>,
}

/// Where one grain is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grain {
    Unallocated,
    Zero,
    /// Uncompressed, at this byte offset of the file.
    Plain(u64),
    /// Compressed, grain marker at this byte offset.
    Compressed(u64),
}

impl HostedSparseExtent {
    /// Opens the extent and returns the text of its embedded descriptor when
    /// it has one (monolithicSparse, streamOptimized).
    pub fn open(file: ImageFile) -> Result<(HostedSparseExtent, Option<Vec<u8>>)> {
        let mut buf = [0u8; hdr::HEADER_LEN];
        file.read("sparse extent header", 0, &mut buf)?;
        let mut header = hdr::parse(&file, &buf, 0)?;
        if header.gd_offset == GD_AT_END {
            header = read_footer(&file)?;
        }
        let descriptor = if header.desc_offset != 0 && header.desc_sectors != 0 {
            let text = file.read_vec("embedded descriptor", header.desc_offset * SECTOR, header.desc_sectors * SECTOR)?;
            // qemu leaves the area zeroed in the extents of split disks.
            (text.first().is_some_and(|&b| b != 0)).then_some(text)
        } else {
            None
        };
        // Bounded by MAX_GD_BYTES in the header checks and by the file size here.
        let gd_at = header.gd_offset * SECTOR;
        let raw = file.read_vec("grain directory", gd_at, header.gd_entries() * 4)?;
        let gd = raw.chunks_exact(4).map(|c| u32le(c, 0)).collect();
        let extent = HostedSparseExtent {
            file,
            header,
            gd,
            tables: BoundedCache::new(GT_CACHE),
            grains: BoundedCache::new(GRAIN_CACHE),
        };
        Ok((extent, descriptor))
    }

    pub fn header(&self) -> &SparseHeader {
        &self.header
    }

    fn grain_bytes(&self) -> u64 {
        self.header.grain_bytes()
    }

    /// Where grain `g` is, checked against the file size so that a table
    /// entry pointing past the end is an error on `status` (map, inspect,
    /// export) and never reads as zeros.
    fn lookup(&self, g: u64) -> Result<Grain> {
        let per_gt = u64::from(self.header.gtes_per_gt);
        let gd_index = g / per_gt;
        let gd_at = self.header.gd_offset * SECTOR;
        let gde = usize::try_from(gd_index).ok().and_then(|i| self.gd.get(i)).copied().ok_or_else(|| {
            self.file.corrupt("grain directory", gd_at, format!("grain {g} lies outside the grain directory"))
        })?;
        if gde == 0 {
            return Ok(Grain::Unallocated);
        }
        let gt_at = u64::from(gde) * SECTOR;
        let table = self.tables.get_or_load(gd_index, || {
            let raw = self.file.read_vec(&format!("grain table {gd_index}"), gt_at, per_gt * 4)?;
            Ok::<_, crate::Error>(raw.chunks_exact(4).map(|c| u32le(c, 0)).collect::<Vec<u32>>())
        })?;
        let i = g % per_gt;
        let gte = usize::try_from(i).ok().and_then(|i| table.get(i)).copied().unwrap_or(0);
        let entry_at = gt_at + i * 4;
        let structure = || format!("grain table {gd_index} entry {i} (grain {g})");
        match gte {
            0 => return Ok(Grain::Unallocated),
            1 if self.header.zero_grain() => return Ok(Grain::Zero),
            1 => {
                return Err(self.file.corrupt(
                    &structure(),
                    entry_at,
                    "entry 1 (zeroed grain) in an extent without the zeroed-grain flag; it would point into the header",
                ))
            }
            _ => {}
        }
        let at = u64::from(gte) * SECTOR;
        let grain_start = g * self.grain_bytes();
        let needed = if self.header.compressed() {
            12
        } else {
            self.grain_bytes().min(self.header.capacity_bytes() - grain_start)
        };
        let size = self.file.size();
        if at.checked_add(needed).is_none_or(|end| end > size) {
            return Err(self.file.corrupt(
                &structure(),
                entry_at,
                format!("points to byte offset {at} (sector {gte}), past the end of the file ({size} bytes); the file is truncated or the table is corrupt"),
            ));
        }
        Ok(if self.header.compressed() { Grain::Compressed(at) } else { Grain::Plain(at) })
    }

    /// The allocation of the grain containing `pos` and where its run ends
    /// (a whole grain table's range when the directory entry is 0).
    fn class_at(&self, pos: u64) -> Result<(Allocation, u64)> {
        let gb = self.grain_bytes();
        let g = pos / gb;
        let per_gt = u64::from(self.header.gtes_per_gt);
        let gde = usize::try_from(g / per_gt).ok().and_then(|i| self.gd.get(i)).copied();
        if gde == Some(0) {
            return Ok((Allocation::Unallocated, (g / per_gt + 1) * self.header.gt_coverage()));
        }
        let alloc = match self.lookup(g)? {
            Grain::Unallocated => Allocation::Unallocated,
            Grain::Zero => Allocation::Zero,
            Grain::Plain(_) | Grain::Compressed(_) => Allocation::Data,
        };
        Ok((alloc, (g + 1) * gb))
    }

    /// Decompresses grain `g` whose marker is at `at`.
    fn decompress(&self, g: u64, at: u64) -> Result<Vec<u8>> {
        let gb = self.grain_bytes();
        let mut marker = [0u8; 12];
        self.file.read("grain marker", at, &mut marker)?;
        let lba = u64le(&marker, 0);
        let len = u32le(&marker, 8);
        let structure = format!("compressed grain {g}");
        let expect = g * self.header.grain_sectors;
        if lba != expect {
            return Err(self.file.corrupt(
                &structure,
                at,
                format!("grain marker names sector {lba}, the grain table expects sector {expect}"),
            ));
        }
        // zlib never expands data by more than a few bytes per 16 KiB.
        let max_len = gb + gb / 2 + 4096;
        if len == 0 || u64::from(len) > max_len {
            return Err(self.file.corrupt(&structure, at, format!("grain marker gives a compressed size of {len} bytes")));
        }
        let data = self.file.read_vec(&structure, at + 12, u64::from(len))?;
        let mut out = vec![0u8; gb as usize];
        let mut z = flate2::Decompress::new(true);
        let status = z
            .decompress(&data, &mut out, flate2::FlushDecompress::Finish)
            .map_err(|e| self.file.corrupt(&structure, at, format!("cannot be decompressed: {e}")))?;
        if status != flate2::Status::StreamEnd {
            return Err(self.file.corrupt(
                &structure,
                at,
                "compressed data is incomplete or decompresses to more than one grain",
            ));
        }
        let needed = gb.min(self.header.capacity_bytes() - g * gb);
        if z.total_out() < needed {
            return Err(self.file.corrupt(
                &structure,
                at,
                format!("decompresses to {} bytes, the grain holds {needed}", z.total_out()),
            ));
        }
        Ok(out)
    }
}

/// Reads the footer of a streamOptimized file written as a stream: footer
/// marker, footer (a copy of the header with the real gdOffset), end-of-stream
/// marker, each one sector, at the end of the file.
fn read_footer(file: &ImageFile) -> Result<SparseHeader> {
    let size = file.size();
    let base = size.checked_sub(3 * SECTOR).ok_or_else(|| {
        file.corrupt("sparse extent header", 56, "gdOffset says the grain directory is in the footer, but the file is too small for one")
    })?;
    let mut b = vec![0u8; 3 * SECTOR as usize];
    file.read("sparse extent footer", base, &mut b)?;
    let marker_ok = |off: usize, ty: u32| u32le(&b, off + 8) == 0 && u32le(&b, off + 12) == ty;
    if !marker_ok(0, MARKER_FOOTER) {
        return Err(file.corrupt("footer marker", base, "no footer marker before the footer (file truncated?)"));
    }
    if !marker_ok(2 * SECTOR as usize, MARKER_EOS) {
        return Err(file.corrupt("end-of-stream marker", base + 2 * SECTOR, "no end-of-stream marker after the footer"));
    }
    let footer = hdr::parse(file, b.get(SECTOR as usize..2 * SECTOR as usize).unwrap_or(&[]), base + SECTOR)?;
    if footer.gd_offset == GD_AT_END {
        return Err(file.corrupt("sparse extent footer", base + SECTOR + 56, "the footer does not say where the grain directory is"));
    }
    Ok(footer)
}

impl Extent for HostedSparseExtent {
    fn size(&self) -> u64 {
        self.header.capacity_bytes()
    }

    fn status(&self, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        let limit = offset + max_len;
        let (first, mut pos) = self.class_at(offset)?;
        while pos < limit {
            let (a, end) = self.class_at(pos)?;
            if a != first {
                break;
            }
            pos = end;
        }
        Ok((first, pos.min(limit) - offset))
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let gb = self.grain_bytes();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let g = pos / gb;
            let in_grain = pos % gb;
            let n = (gb - in_grain).min((buf.len() - done) as u64) as usize;
            let chunk = buf.get_mut(done..done + n).unwrap_or(&mut []);
            match self.lookup(g)? {
                Grain::Plain(at) => self.file.read(&format!("grain {g}"), at + in_grain, chunk)?,
                Grain::Compressed(at) => {
                    let grain = self.grains.get_or_load(g, || self.decompress(g, at))?;
                    let src = grain.get(in_grain as usize..in_grain as usize + n).unwrap_or(&[]);
                    if src.len() != n {
                        return Err(self.file.corrupt("grain", at, "decompressed grain too short (internal error)"));
                    }
                    chunk.copy_from_slice(src);
                }
                Grain::Zero | Grain::Unallocated => {
                    return Err(self.file.corrupt(
                        &format!("grain {g}"),
                        0,
                        "read of a grain that holds no data (internal error)",
                    ))
                }
            }
            done += n;
        }
        Ok(())
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.file.path.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;
    use hdr::tests::header;
    use std::io::Write;
    use std::sync::Arc;

    fn file(data: Vec<u8>) -> ImageFile {
        ImageFile::new(Arc::new(MemSource(data)), "t.vmdk")
    }

    /// A 2-grain extent: GD at sector 1, GT at sector 2, grains at 8 and 136.
    fn plain(gte0: u32, gte1: u32, flags: u32) -> Vec<u8> {
        let mut d = header(256, flags, 0, 1);
        d.resize(512 * 264, 0);
        d[512..516].copy_from_slice(&2u32.to_le_bytes());
        d[1024..1028].copy_from_slice(&gte0.to_le_bytes());
        d[1028..1032].copy_from_slice(&gte1.to_le_bytes());
        d[8 * 512..8 * 512 + 65536].fill(0xab);
        d[136 * 512..136 * 512 + 65536].fill(0xcd);
        d
    }

    #[test]
    fn reads_plain_grains_and_runs() {
        let (e, desc) = HostedSparseExtent::open(file(plain(8, 136, 0))).unwrap();
        assert!(desc.is_none());
        assert_eq!(e.status(0, 131072).unwrap(), (Allocation::Data, 131072));
        let mut b = vec![0u8; 4];
        e.read_data(65534, &mut b).unwrap();
        assert_eq!(b, [0xab, 0xab, 0xcd, 0xcd]);
        let (e, _) = HostedSparseExtent::open(file(plain(0, 1, hdr::FLAG_ZERO_GRAIN))).unwrap();
        assert_eq!(e.status(0, 131072).unwrap(), (Allocation::Unallocated, 65536));
        assert_eq!(e.status(65536, 65536).unwrap(), (Allocation::Zero, 65536));
    }

    #[test]
    fn entry_past_end_is_an_error() {
        let (e, _) = HostedSparseExtent::open(file(plain(8, 100_000, 0))).unwrap();
        let err = e.status(0, 131072).unwrap_err().to_string();
        assert!(err.contains("grain table 0 entry 1") && err.contains("past the end"), "{err}");
        let (e, _) = HostedSparseExtent::open(file(plain(8, 1, 0))).unwrap();
        assert!(e.status(65536, 1).is_err());
    }

    fn compressed(content: &[u8], lba: u64) -> Vec<u8> {
        let mut d = header(128, hdr::FLAG_COMPRESSED | hdr::FLAG_MARKERS, hdr::COMPRESS_DEFLATE, 1);
        d.resize(512 * 8, 0);
        d[512..516].copy_from_slice(&2u32.to_le_bytes());
        d[1024..1028].copy_from_slice(&8u32.to_le_bytes());
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(content).unwrap();
        let c = z.finish().unwrap();
        d.extend_from_slice(&lba.to_le_bytes());
        d.extend_from_slice(&(c.len() as u32).to_le_bytes());
        d.extend_from_slice(&c);
        d.resize(d.len().div_ceil(512) * 512, 0);
        d
    }

    #[test]
    fn reads_compressed_grain_and_refuses_bad_ones() {
        let content: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let (e, _) = HostedSparseExtent::open(file(compressed(&content, 0))).unwrap();
        let mut b = vec![0u8; 65536];
        e.read_data(0, &mut b).unwrap();
        assert_eq!(b, content);
        // Wrong lba in the marker.
        let (e, _) = HostedSparseExtent::open(file(compressed(&content, 128))).unwrap();
        assert!(e.read_data(0, &mut b).unwrap_err().to_string().contains("marker"));
        // Damaged zlib data.
        let mut d = compressed(&content, 0);
        for x in &mut d[8 * 512 + 20..8 * 512 + 40] {
            *x ^= 0x5a;
        }
        let (e, _) = HostedSparseExtent::open(file(d)).unwrap();
        assert!(e.read_data(0, &mut b).is_err());
        // A grain that decompresses short.
        let (e, _) = HostedSparseExtent::open(file(compressed(&content[..1000], 0))).unwrap();
        assert!(e.read_data(0, &mut b).is_err());
    }

    #[test]
    fn reads_footer_when_gd_at_end() {
        let content = vec![7u8; 65536];
        let mut d = compressed(&content, 0);
        d[56..64].copy_from_slice(&GD_AT_END.to_le_bytes());
        let mut footer_marker = vec![0u8; 512];
        footer_marker[0..8].copy_from_slice(&1u64.to_le_bytes());
        footer_marker[12..16].copy_from_slice(&MARKER_FOOTER.to_le_bytes());
        let footer = header(128, hdr::FLAG_COMPRESSED | hdr::FLAG_MARKERS, hdr::COMPRESS_DEFLATE, 1);
        d.extend_from_slice(&footer_marker);
        d.extend_from_slice(&footer);
        d.extend_from_slice(&[0u8; 512]);
        let (e, _) = HostedSparseExtent::open(file(d.clone())).unwrap();
        let mut b = vec![0u8; 65536];
        e.read_data(0, &mut b).unwrap();
        assert_eq!(b, content);
        // Without the footer marker it is refused.
        let n = d.len();
        d[n - 1536 + 12] = 9;
        assert!(HostedSparseExtent::open(file(d)).is_err());
    }
}

//! VMDK outputs: streamOptimized (compressed grains with markers, grain
//! directory at the end: the form an OVA carries, writable to a pipe),
//! monolithicSparse (hosted sparse extent with an embedded descriptor), and
//! flat (an ESX-style descriptor plus a `-flat.vmdk` extent).

use super::{Granule, ImageWriter};
use anyhow::{bail, Result};
use flate2::write::ZlibEncoder;
use flate2::Compression;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

const SECTOR: u64 = 512;
const GRAIN_SECTORS: u64 = 128;
const GRAIN: u64 = GRAIN_SECTORS * SECTOR;
const GTES_PER_GT: u64 = 512;
const GT_BYTES: u64 = GTES_PER_GT * 4;
const DESCRIPTOR_SECTORS: u64 = 20;
/// Grains start here: header, descriptor, padding to a grain boundary.
const OVERHEAD_SECTORS: u64 = 128;
const GD_AT_END: u64 = u64::MAX;

const FLAG_NEWLINE_TEST: u32 = 1 << 0;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;

const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

fn check_size(size: u64) -> Result<u64> {
    if size % SECTOR != 0 {
        bail!("VMDK holds whole 512-byte sectors; this disk is {size} bytes");
    }
    Ok(size / SECTOR)
}

/// A content ID for the descriptor: any value but 0xffffffff/0xfffffffe.
fn new_cid() -> u32 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let x = (t as u64 ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 32) as u32) & 0x7fff_ffff
}

fn descriptor(create_type: &str, sectors: u64, extent: &str) -> String {
    let cylinders = (sectors / (16 * 63)).clamp(1, 65535);
    format!(
        "# Disk DescriptorFile\nversion=1\nCID={:08x}\nparentCID=ffffffff\ncreateType=\"{create_type}\"\n\n\
         # Extent description\n{extent}\n\n# The Disk Data Base\n#DDB\n\n\
         ddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"{cylinders}\"\nddb.geometry.heads = \"16\"\n\
         ddb.geometry.sectors = \"63\"\nddb.adapterType = \"lsilogic\"\nddb.toolsVersion = \"2147483647\"\n",
        new_cid()
    )
}

struct Header {
    version: u32,
    flags: u32,
    capacity: u64,
    gd_offset: u64,
    compress: u16,
}

fn header_bytes(h: &Header) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..4].copy_from_slice(b"KDMV");
    b[4..8].copy_from_slice(&h.version.to_le_bytes());
    b[8..12].copy_from_slice(&h.flags.to_le_bytes());
    b[12..20].copy_from_slice(&h.capacity.to_le_bytes());
    b[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    b[28..36].copy_from_slice(&1u64.to_le_bytes());
    b[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
    b[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    b[48..56].copy_from_slice(&0u64.to_le_bytes()); // no redundant GD
    b[56..64].copy_from_slice(&h.gd_offset.to_le_bytes());
    b[64..72].copy_from_slice(&OVERHEAD_SECTORS.to_le_bytes());
    b[72] = 0;
    b[73..77].copy_from_slice(b"\n \r\n");
    b[77..79].copy_from_slice(&h.compress.to_le_bytes());
    b
}

/// The header sector plus the descriptor area, up to the first grain.
fn preamble(h: &Header, desc: &str) -> Result<Vec<u8>> {
    if desc.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
        bail!("VMDK descriptor too long");
    }
    let mut out = vec![0u8; (OVERHEAD_SECTORS * SECTOR) as usize];
    out[..512].copy_from_slice(&header_bytes(h));
    out[512..512 + desc.len()].copy_from_slice(desc.as_bytes());
    Ok(out)
}

// ------------------------------------------------------------ streamOptimized

pub struct StreamWriter {
    out: Box<dyn Write>,
    /// Bytes written so far (the stream position).
    pos: u64,
    capacity: u64,
    gd: Vec<u32>,
    /// The grain table being filled: (its index, entries).
    gt: Option<(u64, Vec<u32>)>,
}

fn compress_grain(data: &[u8]) -> Result<Vec<u8>> {
    let mut e = ZlibEncoder::new(Vec::with_capacity(data.len() / 2), Compression::fast());
    e.write_all(data)?;
    // A short last grain is stored whole: readers expect full grains.
    if (data.len() as u64) < GRAIN {
        e.write_all(&vec![0u8; (GRAIN - data.len() as u64) as usize])?;
    }
    Ok(e.finish()?)
}

impl StreamWriter {
    pub fn new(out: Box<dyn Write>, size: u64, name: &str) -> Result<StreamWriter> {
        let capacity = check_size(size)?;
        let grains = capacity.div_ceil(GRAIN_SECTORS);
        let gts = grains.div_ceil(GTES_PER_GT);
        let mut w = StreamWriter { out, pos: 0, capacity, gd: vec![0; gts as usize], gt: None };
        let h = Header {
            version: 3,
            flags: FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity,
            gd_offset: GD_AT_END,
            compress: 1,
        };
        let desc = descriptor("streamOptimized", capacity, &format!("RW {capacity} SPARSE \"{name}\""));
        let pre = preamble(&h, &desc)?;
        w.emit(&pre)?;
        Ok(w)
    }

    fn emit(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn pad_sector(&mut self) -> Result<()> {
        let rem = self.pos % SECTOR;
        if rem != 0 {
            self.emit(&vec![0u8; (SECTOR - rem) as usize])?;
        }
        Ok(())
    }

    /// A metadata marker sector followed by `payload` (padded to sectors).
    fn metadata(&mut self, kind: u32, payload: &[u8]) -> Result<u64> {
        let sectors = (payload.len() as u64).div_ceil(SECTOR);
        let mut m = [0u8; 512];
        m[0..8].copy_from_slice(&sectors.to_le_bytes());
        m[12..16].copy_from_slice(&kind.to_le_bytes());
        self.emit(&m)?;
        let at = self.pos / SECTOR;
        self.emit(payload)?;
        self.pad_sector()?;
        Ok(at)
    }

    fn flush_gt(&mut self) -> Result<()> {
        if let Some((index, table)) = self.gt.take() {
            let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
            let at = self.metadata(MARKER_GT, &bytes)?;
            self.gd[index as usize] = u32::try_from(at)?;
        }
        Ok(())
    }
}

impl ImageWriter for StreamWriter {
    fn granularity(&self) -> u64 {
        GRAIN
    }

    fn preparer(&self) -> Option<fn(&[u8]) -> Result<Vec<u8>>> {
        Some(compress_grain)
    }

    fn write(&mut self, g: Granule<'_>) -> Result<()> {
        let grain = g.offset / GRAIN;
        let gt_index = grain / GTES_PER_GT;
        if self.gt.as_ref().map(|t| t.0) != Some(gt_index) {
            self.flush_gt()?;
            self.gt = Some((gt_index, vec![0; GTES_PER_GT as usize]));
        }
        let compressed = match g.prepared {
            Some(c) => c,
            None => compress_grain(g.data)?,
        };
        let at = self.pos / SECTOR;
        let mut marker = [0u8; 12];
        marker[0..8].copy_from_slice(&(grain * GRAIN_SECTORS).to_le_bytes());
        marker[8..12].copy_from_slice(&u32::try_from(compressed.len())?.to_le_bytes());
        self.emit(&marker)?;
        self.emit(&compressed)?;
        self.pad_sector()?;
        if let Some((_, t)) = self.gt.as_mut() {
            t[(grain % GTES_PER_GT) as usize] = u32::try_from(at)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush_gt()?;
        let gd: Vec<u8> = self.gd.iter().flat_map(|e| e.to_le_bytes()).collect();
        let gd_at = self.metadata(MARKER_GD, &gd)?;
        let footer = Header {
            version: 3,
            flags: FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity: self.capacity,
            gd_offset: gd_at,
            compress: 1,
        };
        self.metadata(MARKER_FOOTER, &header_bytes(&footer))?;
        let mut eos = [0u8; 512];
        eos[12..16].copy_from_slice(&MARKER_EOS.to_le_bytes());
        self.emit(&eos)?;
        self.out.flush()?;
        Ok(())
    }
}

// ------------------------------------------------------------ monolithicSparse

pub struct SparseWriter {
    file: File,
    capacity: u64,
    gd_sector: u64,
    gts: Vec<u32>,
    next_sector: u64,
}

impl SparseWriter {
    pub fn new(file: File, size: u64, name: &str) -> Result<SparseWriter> {
        let capacity = check_size(size)?;
        let grains = capacity.div_ceil(GRAIN_SECTORS);
        let gt_count = grains.div_ceil(GTES_PER_GT);
        let gd_sector = OVERHEAD_SECTORS;
        let gd_sectors = (gt_count * 4).div_ceil(SECTOR);
        // Grain tables follow the directory; grains follow, grain-aligned.
        let gts_start = gd_sector + gd_sectors;
        let data_start = (gts_start + gt_count * (GT_BYTES / SECTOR)).div_ceil(GRAIN_SECTORS) * GRAIN_SECTORS;
        let h = Header { version: 1, flags: FLAG_NEWLINE_TEST, capacity, gd_offset: gd_sector, compress: 0 };
        let desc = descriptor("monolithicSparse", capacity, &format!("RW {capacity} SPARSE \"{name}\""));
        let mut pre = preamble(&h, &desc)?;
        // overHead in the header: where grains start.
        pre[64..72].copy_from_slice(&data_start.to_le_bytes());
        file.write_all_at(&pre, 0)?;
        Ok(SparseWriter { file, capacity, gd_sector, gts: vec![0; (gt_count * GTES_PER_GT) as usize], next_sector: data_start })
    }
}

impl ImageWriter for SparseWriter {
    fn granularity(&self) -> u64 {
        GRAIN
    }

    fn write(&mut self, g: Granule<'_>) -> Result<()> {
        let grain = g.offset / GRAIN;
        self.file.write_all_at(g.data, self.next_sector * SECTOR)?;
        self.gts[grain as usize] = u32::try_from(self.next_sector)?;
        self.next_sector += GRAIN_SECTORS;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let gt_count = self.gts.len() as u64 / GTES_PER_GT;
        let gd_sectors = (gt_count * 4).div_ceil(SECTOR);
        let gts_start = self.gd_sector + gd_sectors;
        let gd: Vec<u8> =
            (0..gt_count).flat_map(|i| ((gts_start + i * (GT_BYTES / SECTOR)) as u32).to_le_bytes()).collect();
        self.file.write_all_at(&gd, self.gd_sector * SECTOR)?;
        let gts: Vec<u8> = self.gts.iter().flat_map(|e| e.to_le_bytes()).collect();
        self.file.write_all_at(&gts, gts_start * SECTOR)?;
        self.file.set_len(self.next_sector * SECTOR)?;
        let _ = self.capacity;
        self.file.sync_all()?;
        Ok(())
    }
}

// ------------------------------------------------------------ flat

/// `NAME-flat.vmdk` beside `NAME.vmdk`, as ESX names it.
pub fn flat_extent_name(output: &Path) -> String {
    let stem = output.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "disk".into());
    format!("{stem}-flat.vmdk")
}

pub struct FlatWriter {
    flat: File,
    flusher: super::flush::Flusher,
}

impl FlatWriter {
    pub fn new(mut desc: File, flat: File, size: u64, flat_name: &str) -> Result<FlatWriter> {
        let capacity = check_size(size)?;
        let text = descriptor("vmfs", capacity, &format!("RW {capacity} VMFS \"{flat_name}\""));
        desc.write_all(text.as_bytes())?;
        desc.sync_all()?;
        flat.set_len(size)?;
        let flusher = super::flush::Flusher::new(&flat);
        Ok(FlatWriter { flat, flusher })
    }
}

impl ImageWriter for FlatWriter {
    fn takes_runs(&self) -> bool {
        true
    }

    fn granularity(&self) -> u64 {
        GRAIN
    }

    fn write(&mut self, g: Granule<'_>) -> Result<()> {
        self.flat.write_all_at(g.data, g.offset)?;
        self.flusher.wrote(g.data.len() as u64);
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.flat.sync_all()?;
        Ok(())
    }
}

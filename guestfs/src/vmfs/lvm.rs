//! The VMFS logical volume manager: every LUN (or partition) of a datastore
//! starts with an LVM device header at 1 MiB that names the logical volume
//! it belongs to and lists its physical extents (PEs): which byte range of
//! this device holds which byte range of the volume. A spanned datastore
//! has several devices; the volume is the union of their PEs.
//!
//! Layout (offsets from the header at 1 MiB), from the published format
//! descriptions: device metadata (magic `0xc001d00d`, versions, sizes, PE
//! counts, device UUID); the volume table after 512 bytes (LVM 6:
//! `mdAlignment` bytes), 512-byte entries; the PE bitmap at 512 KiB past the
//! volume table, then 8192 PE table entries of 128 bytes; more bitmap+table
//! pairs follow (`numPEMaps`) and extended metadata regions may chain more.

use crate::block::{ImageFile, ReadAt};
use crate::le::{u32le, u64le};
use crate::{Error, Result};
use std::io;
use std::sync::Arc;

pub const LVM_HEADER_OFFSET: u64 = 0x10_0000;
pub const LVM_MAGIC: u32 = 0xC001_D00D;
const PES_PER_MAP: u64 = 8192;
const PE_ENTRY_SIZE: u64 = 128;
const VOL_ENTRY_SIZE: u64 = 512;
/// Real devices have a handful of PEs; bound what a hostile header can make
/// us read (8 maps of 8192 entries, 8 MiB of tables).
const MAX_PES: u32 = 8 * 8192;
const MAX_EXT_REGIONS: usize = 16;
/// No datastore spans more extents than ESXi allows (32).
const MAX_EXTENTS: usize = 64;

/// A VMFS UUID as ESXi prints it: `timeLo-timeHi-rand-mac`.
pub fn uuid_string(b: &[u8]) -> String {
    let lo = u32le(b, 0);
    let hi = u32le(b, 4);
    let rand = u16::from_le_bytes([b.get(8).copied().unwrap_or(0), b.get(9).copied().unwrap_or(0)]);
    let mac: String = b.get(10..16).unwrap_or(&[]).iter().map(|x| format!("{x:02x}")).collect();
    format!("{lo:08x}-{hi:08x}-{rand:04x}-{mac}")
}

/// What one device says about the volume it carries.
#[derive(Clone, Debug)]
pub struct DeviceVolume {
    pub logical_size: u64,
    pub name: String,
    /// Logical volume UUID + snapshot id: equal on every extent of a volume.
    pub lv_uuid: String,
    pub snap_id: u32,
    pub volume_id: u32,
    pub first_pe: u64,
    pub last_pe: u64,
    pub num_devs: u32,
}

#[derive(Clone, Copy, Debug)]
struct Pe {
    volume_id: u32,
    p_offset: u64,
    l_offset: u64,
    length: u64,
}

/// One parsed LVM device header.
pub struct Device {
    pub file: ImageFile,
    pub major: u32,
    pub dev_uuid: String,
    pub volume: DeviceVolume,
    pes: Vec<Pe>,
}

/// Whether `src` starts with an LVM device header.
pub fn has_lvm_magic(src: &dyn ReadAt) -> bool {
    let mut b = [0u8; 4];
    src.size() >= LVM_HEADER_OFFSET + 512 && src.read_exact_at(&mut b, LVM_HEADER_OFFSET).is_ok() && u32::from_le_bytes(b) == LVM_MAGIC
}

impl Device {
    pub fn parse(file: ImageFile) -> Result<Device> {
        let what = "VMFS LVM device header";
        let h = file.read_vec(what, LVM_HEADER_OFFSET, 512)?;
        let magic = u32le(&h, 0);
        if magic != LVM_MAGIC {
            return Err(file.corrupt(what, LVM_HEADER_OFFSET, format!("bad magic {magic:#010x} (expected {LVM_MAGIC:#010x})")));
        }
        let major = u32le(&h, 4);
        if !(3..=6).contains(&major) {
            return Err(file.unsupported(what, LVM_HEADER_OFFSET, format!("LVM major version {major}")));
        }
        let num_volumes = u32le(&h, 0x66);
        let num_pes = u32le(&h, 0x6a);
        let num_pe_maps = u32le(&h, 0xbe).max(1);
        let ext_offset = u64le(&h, 0xc2);
        let md_alignment = u32le(&h, 0xca);
        let dev_uuid = uuid_string(h.get(0x82..0x92).unwrap_or(&[]));
        let (devmeta_size, bitmap_size) = if major >= 6 {
            if !(512..=1 << 20).contains(&md_alignment) || !md_alignment.is_power_of_two() {
                return Err(file.corrupt(what, LVM_HEADER_OFFSET + 0xca, format!("metadata alignment {md_alignment} is not a power of two in 512..1 MiB")));
            }
            (u64::from(md_alignment), u64::from(md_alignment).max(1024))
        } else {
            (512, 1024)
        };
        if num_volumes != 1 {
            return Err(file.unsupported(what, LVM_HEADER_OFFSET + 0x66, format!("{num_volumes} logical volumes on one device (a datastore device carries exactly one)")));
        }
        if num_pes == 0 || num_pes > MAX_PES {
            return Err(file.corrupt(what, LVM_HEADER_OFFSET + 0x6a, format!("{num_pes} physical extents (expected 1..{MAX_PES})")));
        }
        let vol_off = LVM_HEADER_OFFSET + devmeta_size;
        let v = file.read_vec("VMFS LVM volume descriptor", vol_off, VOL_ENTRY_SIZE)?;
        let name_raw = v.get(0x14..0x54).unwrap_or(&[]);
        let name_len = name_raw.iter().position(|&b| b == 0).unwrap_or(name_raw.len());
        let volume = DeviceVolume {
            logical_size: u64le(&v, 0),
            name: String::from_utf8_lossy(name_raw.get(..name_len).unwrap_or(&[])).into_owned(),
            lv_uuid: uuid_string(v.get(0x54..0x64).unwrap_or(&[])),
            snap_id: u32le(&v, 0x64),
            volume_id: u32le(&v, 0x70),
            first_pe: u64le(&v, 0x78),
            last_pe: u64le(&v, 0x80),
            num_devs: u32le(&v, 0x90),
        };
        // PE maps: bitmap + table pairs, in the main region and then in
        // chained extended regions. The bitmap sits 512 KiB past the volume
        // table (volume table, reserved space and device-name table).
        let bitmap_rel = devmeta_size + 1024 * 512;
        let map_stride = bitmap_size + PES_PER_MAP * PE_ENTRY_SIZE;
        let mut map_tables = Vec::new();
        for i in 0..u64::from(num_pe_maps.min(8)) {
            map_tables.push(LVM_HEADER_OFFSET + bitmap_rel + i * map_stride + bitmap_size);
        }
        let mut next = ext_offset;
        let mut regions = 0;
        while next != 0 && map_tables.len() as u64 * PES_PER_MAP < u64::from(num_pes) {
            regions += 1;
            if regions > MAX_EXT_REGIONS {
                return Err(file.corrupt("VMFS LVM extended metadata", next, "chain of extended metadata regions too long (loop?)"));
            }
            let e = file.read_vec("VMFS LVM extended metadata", next, 24)?;
            if u32le(&e, 0) != LVM_MAGIC {
                return Err(file.corrupt("VMFS LVM extended metadata", next, "bad magic"));
            }
            for i in 0..u64::from(u32le(&e, 4).min(8)) {
                let t = next.checked_add(bitmap_rel + i * map_stride + bitmap_size);
                map_tables.push(t.ok_or_else(|| file.corrupt("VMFS LVM extended metadata", next, "offset overflows"))?);
            }
            next = u64le(&e, 0x10);
        }
        let mut pes = Vec::new();
        let mut left = u64::from(num_pes);
        for table in map_tables {
            if left == 0 {
                break;
            }
            let n = left.min(PES_PER_MAP);
            let t = file.read_vec("VMFS LVM physical extent table", table, n * PE_ENTRY_SIZE)?;
            for e in t.chunks_exact(PE_ENTRY_SIZE as usize) {
                if e.first().copied().unwrap_or(0) == 0 {
                    continue;
                }
                pes.push(Pe { volume_id: u32le(e, 5), p_offset: u64le(e, 9), l_offset: u64le(e, 0x11), length: u64le(e, 0x19) });
            }
            left -= n;
        }
        if left != 0 {
            return Err(file.corrupt(what, LVM_HEADER_OFFSET + 0x6a, format!("header lists {num_pes} physical extents but its tables hold fewer")));
        }
        Ok(Device { file, major, dev_uuid, volume, pes })
    }
}

#[derive(Clone)]
struct Run {
    logical: u64,
    physical: u64,
    len: u64,
    dev: usize,
}

/// The logical volume assembled from its devices: a read-only byte source.
pub struct LogicalVolume {
    devs: Vec<Arc<dyn ReadAt>>,
    runs: Vec<Run>,
    size: u64,
}

/// The volume's identity as the LVM records it.
#[derive(Clone, Debug)]
pub struct VolumeInfo {
    pub name: String,
    pub lv_uuid: String,
    pub size: u64,
    pub extents: usize,
}

impl LogicalVolume {
    /// Assembles the volume from its devices, given in any order. Refuses
    /// when devices belong to different volumes, one is missing, or one is
    /// given twice.
    pub fn assemble(devices: Vec<Device>, name: &str) -> Result<(LogicalVolume, VolumeInfo)> {
        let err = |reason: String| Error::corrupt(std::path::Path::new(name), "VMFS LVM volume", LVM_HEADER_OFFSET, reason);
        if devices.is_empty() {
            return Err(err("no extents given".into()));
        }
        if devices.len() > MAX_EXTENTS {
            return Err(err(format!("{} extents given; a datastore has at most {MAX_EXTENTS}", devices.len())));
        }
        let mut devices = devices;
        devices.sort_by_key(|d| d.volume.first_pe);
        let first = devices[0].volume.clone();
        for d in &devices {
            if (d.volume.lv_uuid.as_str(), d.volume.snap_id) != (first.lv_uuid.as_str(), first.snap_id) {
                return Err(err(format!(
                    "{} belongs to volume {} (snapshot {}), but {} belongs to volume {} (snapshot {}): the extents are from different datastores",
                    d.file.path.display(),
                    d.volume.lv_uuid,
                    d.volume.snap_id,
                    devices[0].file.path.display(),
                    first.lv_uuid,
                    first.snap_id
                )));
            }
        }
        for w in devices.windows(2) {
            if w[0].dev_uuid == w[1].dev_uuid {
                return Err(err(format!("device {} is given twice ({} and {})", w[0].dev_uuid, w[0].file.path.display(), w[1].file.path.display())));
            }
        }
        let mut expect_pe = 0u64;
        for d in &devices {
            if d.volume.first_pe != expect_pe {
                return Err(err(format!(
                    "volume {} ({:?}) is missing the extent holding physical extent {expect_pe} (next given extent {} starts at {})",
                    first.lv_uuid,
                    first.name,
                    d.file.path.display(),
                    d.volume.first_pe
                )));
            }
            expect_pe = d.volume.last_pe.checked_add(1).ok_or_else(|| err("physical extent numbers overflow".into()))?;
        }
        let want = u64::from(first.num_devs);
        if want != devices.len() as u64 {
            return Err(err(format!(
                "volume {} ({:?}) spans {want} extents but {} were given: give every extent (LUN or partition) of the datastore",
                first.lv_uuid,
                first.name,
                devices.len()
            )));
        }
        let mut runs = Vec::new();
        for (i, d) in devices.iter().enumerate() {
            for pe in d.pes.iter().filter(|p| p.volume_id == d.volume.volume_id) {
                let end = pe.p_offset.checked_add(pe.length);
                if pe.length == 0 || end.is_none_or(|e| e > d.file.size()) {
                    return Err(d.file.corrupt(
                        "VMFS LVM physical extent",
                        pe.p_offset,
                        format!("extent of {} bytes at {} lies beyond the end of the device ({} bytes): truncated?", pe.length, pe.p_offset, d.file.size()),
                    ));
                }
                runs.push(Run { logical: pe.l_offset, physical: pe.p_offset, len: pe.length, dev: i });
            }
        }
        runs.sort_by_key(|r| r.logical);
        let mut at = 0u64;
        for r in &runs {
            if r.logical != at {
                return Err(err(format!("no physical extent holds volume bytes {at}..{} (extent missing or table damaged)", r.logical)));
            }
            at = at.checked_add(r.len).ok_or_else(|| err("volume size overflows".into()))?;
        }
        if at < first.logical_size {
            return Err(err(format!("the physical extents cover {at} bytes but the volume is {} bytes", first.logical_size)));
        }
        let info = VolumeInfo { name: first.name.clone(), lv_uuid: first.lv_uuid.clone(), size: first.logical_size, extents: devices.len() };
        let devs = devices.into_iter().map(|d| d.file.src).collect();
        Ok((LogicalVolume { devs, runs, size: first.logical_size }, info))
    }

    /// A bare volume (no LVM header: a VMFS filesystem image by itself).
    pub fn bare(src: Arc<dyn ReadAt>) -> LogicalVolume {
        let size = src.size();
        LogicalVolume { devs: vec![src], runs: vec![Run { logical: 0, physical: 0, len: size, dev: 0 }], size }
    }
}

impl ReadAt for LogicalVolume {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or(io::ErrorKind::UnexpectedEof)?;
        if end > self.size {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut done = 0usize;
        let mut pos = offset;
        let mut i = self.runs.partition_point(|r| r.logical + r.len <= pos);
        while done < buf.len() {
            let r = self.runs.get(i).ok_or(io::ErrorKind::UnexpectedEof)?;
            let in_run = pos - r.logical;
            let n = (r.len - in_run).min((buf.len() - done) as u64) as usize;
            let dev = self.devs.get(r.dev).ok_or(io::ErrorKind::UnexpectedEof)?;
            dev.read_exact_at(&mut buf[done..done + n], r.physical + in_run)?;
            done += n;
            pos += n as u64;
            i += 1;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }
}

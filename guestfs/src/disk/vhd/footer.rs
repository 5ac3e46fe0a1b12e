//! The VHD hard disk footer: 512 big-endian bytes at the end of every VHD
//! file, with a copy at offset 0 in dynamic and differencing disks (the
//! copy exists precisely so a damaged end of file can be survived).

use crate::block::ImageFile;
use crate::le::{bytes, u16be, u32be, u64be};
use crate::{Error, Result};

pub const FOOTER_SIZE: u64 = 512;
const COOKIE: &[u8; 8] = b"conectix";
const CHECKSUM_FIELD: usize = 64;
/// Bit 1 of the features field is "reserved, must be set"; bit 0 marks a
/// temporary disk. Other bits are undefined: an image using them was made
/// by something we do not know, but no defined bit changes how data is
/// laid out, so they are ignored rather than refused.
const FILE_FORMAT_VERSION_MAJOR: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskType {
    Fixed,
    Dynamic,
    Differencing,
}

impl DiskType {
    pub fn name(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Footer {
    /// Where the dynamic disk header lies (dynamic/differencing only).
    pub data_offset: u64,
    pub creator_app: [u8; 4],
    pub current_size: u64,
    pub cylinders: u16,
    pub heads: u8,
    pub sectors_per_track: u8,
    pub disk_type: DiskType,
    pub unique_id: [u8; 16],
}

/// The VHD checksum: the ones' complement of the byte sum of the
/// structure, taken with its own checksum field as zero. Shared with the
/// dynamic disk header, which uses the same rule.
pub fn checksum(buf: &[u8], checksum_field: usize) -> u32 {
    let sum = buf
        .iter()
        .enumerate()
        .filter(|(i, _)| !(checksum_field..checksum_field + 4).contains(i))
        .fold(0u32, |acc, (_, b)| acc.wrapping_add(u32::from(*b)));
    !sum
}

impl Footer {
    /// Parses and checks one footer copy read from `offset`.
    pub fn parse(file: &ImageFile, offset: u64, buf: &[u8; 512]) -> Result<Footer> {
        let corrupt = |reason: String| file.corrupt("VHD footer", offset, reason);
        if buf.get(0..8) != Some(&COOKIE[..]) {
            return Err(corrupt("no \"conectix\" cookie".into()));
        }
        let stored = u32be(buf, CHECKSUM_FIELD);
        let computed = checksum(buf, CHECKSUM_FIELD);
        if stored != computed {
            return Err(corrupt(format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")));
        }
        let version = u32be(buf, 12);
        if version >> 16 != FILE_FORMAT_VERSION_MAJOR {
            return Err(file.unsupported("VHD footer", offset, format!("file format version {version:#010x} (only 1.x is defined)")));
        }
        let disk_type = match u32be(buf, 60) {
            2 => DiskType::Fixed,
            3 => DiskType::Dynamic,
            4 => DiskType::Differencing,
            t => return Err(file.unsupported("VHD footer", offset, format!("disk type {t} (2 fixed, 3 dynamic, 4 differencing are defined)"))),
        };
        Ok(Footer {
            data_offset: u64be(buf, 16),
            creator_app: bytes(buf, 28),
            current_size: u64be(buf, 48),
            cylinders: u16be(buf, 56),
            heads: bytes::<1>(buf, 58)[0],
            sectors_per_track: bytes::<1>(buf, 59)[0],
            disk_type,
            unique_id: bytes(buf, 68),
        })
    }

    /// Reads the footer of `file`: the copy at the end, or for a dynamic or
    /// differencing disk whose end copy is damaged or missing (a truncated
    /// file), the copy at offset 0, with a warning. Returns the footer and
    /// whether the end copy was valid.
    pub fn read(file: &ImageFile) -> Result<(Footer, bool)> {
        let size = file.size();
        let end_off = size.checked_sub(FOOTER_SIZE).ok_or_else(|| Error::Truncated {
            path: file.path.clone(),
            structure: "VHD footer".into(),
            offset: 0,
            len: FOOTER_SIZE,
            file_size: size,
        })?;
        let mut buf = [0u8; 512];
        file.read("VHD footer", end_off, &mut buf)?;
        let end = Footer::parse(file, end_off, &buf);
        if let Ok(f) = end {
            return Ok((f, true));
        }
        let mut head = [0u8; 512];
        file.read("VHD footer copy", 0, &mut head)?;
        // Fixed disks have no copy: offset 0 is guest data there, and a
        // guest could store a valid-looking footer in its first sector.
        match (end, Footer::parse(file, 0, &head)) {
            (Err(end_err), Ok(copy)) if copy.disk_type != DiskType::Fixed => {
                tracing::warn!(
                    path = %file.path.display(),
                    "VHD footer at the end of the file is damaged ({end_err}); using the copy at offset 0"
                );
                Ok((copy, false))
            }
            (Err(end_err), _) => Err(end_err),
            (Ok(f), _) => Ok((f, true)),
        }
    }

    /// The virtual size qemu exposes, which is what every tool comparing
    /// with qemu (and qemu-made images' consumers) expects.
    ///
    /// Virtual PC sized disks by their CHS geometry and stored a larger
    /// current size; Hyper-V and later tools use the current size. qemu
    /// therefore takes cylinders x heads x sectors x 512 unless the creator
    /// application is one known to use the current size (`win ` Hyper-V,
    /// `qem2` qemu with force_size, `d2v ` Disk2vhd, `tap\0` blktap,
    /// `CTXS` XenConverter), or the geometry is the maximum CHS value
    /// 65535/16/255 (which cannot describe the disk). The current size is
    /// taken in whole sectors.
    pub fn virtual_size(&self) -> u64 {
        const SIZE_CREATORS: [&[u8; 4]; 5] = [b"win ", b"qem2", b"d2v ", b"tap\0", b"CTXS"];
        const MAX_GEOMETRY: u64 = 65535 * 16 * 255;
        let chs = u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track);
        let uses_size = SIZE_CREATORS.contains(&&self.creator_app) || chs == MAX_GEOMETRY;
        if uses_size {
            self.current_size / 512 * 512
        } else {
            chs * 512
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::block::MemSource;
    use std::sync::Arc;

    /// "No data offset" marker of fixed disks.
    const NO_DATA_OFFSET: u64 = u64::MAX;

    /// A valid footer for unit tests.
    pub fn make_footer(disk_type: u32, size: u64, creator: &[u8; 4], chs: (u16, u8, u8), data_offset: u64) -> [u8; 512] {
        let mut f = [0u8; 512];
        f[0..8].copy_from_slice(COOKIE);
        f[8..12].copy_from_slice(&2u32.to_be_bytes());
        f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        f[16..24].copy_from_slice(&data_offset.to_be_bytes());
        f[28..32].copy_from_slice(creator);
        f[40..48].copy_from_slice(&size.to_be_bytes());
        f[48..56].copy_from_slice(&size.to_be_bytes());
        f[56..58].copy_from_slice(&chs.0.to_be_bytes());
        f[58] = chs.1;
        f[59] = chs.2;
        f[60..64].copy_from_slice(&disk_type.to_be_bytes());
        f[68..84].copy_from_slice(&[0x11; 16]);
        let c = checksum(&f, 64);
        f[64..68].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn image(data: Vec<u8>) -> ImageFile {
        ImageFile::new(Arc::new(MemSource(data)), "t.vhd")
    }

    #[test]
    fn checksum_is_verified() {
        let mut f = make_footer(2, 1 << 20, b"win ", (0, 0, 0), NO_DATA_OFFSET);
        assert!(Footer::parse(&image(vec![]), 0, &f).is_ok());
        f[100] ^= 1;
        let e = Footer::parse(&image(vec![]), 0, &f).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
    }

    #[test]
    fn size_rule_follows_creator() {
        let f = |creator: &[u8; 4], chs| {
            let b = make_footer(3, 10_000_000, creator, chs, 512);
            Footer::parse(&image(vec![]), 0, &b).unwrap().virtual_size()
        };
        assert_eq!(f(b"qemu", (100, 16, 63)), 100 * 16 * 63 * 512);
        assert_eq!(f(b"vpc ", (100, 16, 63)), 100 * 16 * 63 * 512);
        assert_eq!(f(b"win ", (100, 16, 63)), 10_000_000 / 512 * 512);
        assert_eq!(f(b"qem2", (100, 16, 63)), 10_000_000 / 512 * 512);
        assert_eq!(f(b"tap\0", (100, 16, 63)), 10_000_000 / 512 * 512);
        assert_eq!(f(b"qemu", (65535, 16, 255)), 10_000_000 / 512 * 512);
    }

    #[test]
    fn unknown_disk_type_and_version_are_refused() {
        let mut b = make_footer(5, 1 << 20, b"win ", (0, 0, 0), 512);
        let e = Footer::parse(&image(vec![]), 0, &b).unwrap_err().to_string();
        assert!(e.contains("disk type 5"), "{e}");
        b = make_footer(3, 1 << 20, b"win ", (0, 0, 0), 512);
        b[12..16].copy_from_slice(&0x0002_0000u32.to_be_bytes());
        let c = checksum(&b, 64);
        b[64..68].copy_from_slice(&c.to_be_bytes());
        assert!(Footer::parse(&image(vec![]), 0, &b).is_err());
    }

    #[test]
    fn damaged_end_footer_falls_back_to_copy_for_dynamic_only() {
        let dynamic = make_footer(3, 1 << 20, b"win ", (0, 0, 0), 512);
        let mut file = vec![0u8; 4096];
        file[0..512].copy_from_slice(&dynamic);
        file[4096 - 512..].copy_from_slice(&dynamic);
        file[4096 - 400] ^= 0xff;
        let (f, end_ok) = Footer::read(&image(file.clone())).unwrap();
        assert!(!end_ok);
        assert_eq!(f.disk_type, DiskType::Dynamic);
        // Both copies bad: corrupt, naming the end footer.
        file[100] ^= 0xff;
        let e = Footer::read(&image(file)).unwrap_err().to_string();
        assert!(e.contains("VHD footer") && e.contains("checksum"), "{e}");
        // A fixed footer at offset 0 is guest data, never a fallback.
        let fixed = make_footer(2, 1 << 20, b"win ", (0, 0, 0), NO_DATA_OFFSET);
        let mut file = vec![0u8; 4096];
        file[0..512].copy_from_slice(&fixed);
        assert!(Footer::read(&image(file)).is_err());
        assert!(Footer::read(&image(vec![0u8; 100])).is_err());
    }
}

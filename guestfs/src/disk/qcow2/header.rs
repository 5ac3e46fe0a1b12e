//! The qcow2 header (versions 2 and 3) and its header extensions.
//!
//! Everything a reader must understand lives here; everything that only
//! matters to a writer (refcounts, snapshots, bitmaps) is parsed no further
//! than needed to skip it. Anything that changes how guest data is found
//! and that this reader does not implement (encryption, external data
//! files, unknown incompatible features) is refused, because reading such
//! an image as if it were plain would return wrong data.

use crate::block::ImageFile;
use crate::disk::{Format, MAX_VIRTUAL_SIZE};
use crate::le::{u32be, u64be};
use crate::Result;

pub const MAGIC: &[u8; 4] = b"QFI\xfb";

/// Size of the version 2 header; version 3 headers are at least
/// [`V3_MIN_HEADER`] bytes.
const V2_HEADER: u32 = 72;
const V3_MIN_HEADER: u32 = 104;
/// Offset of the optional `compression_type` byte (version 3).
const COMPRESSION_TYPE_OFFSET: u32 = 104;

/// Smallest cluster size the specification allows (512 bytes).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster size qemu creates or opens (2 MiB); nothing else writes
/// qcow2, so anything larger is a damaged header.
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Extended L2 entries split a cluster into 32 subclusters of at least
/// 512 bytes.
const MIN_EXTENDED_L2_CLUSTER_BITS: u32 = 14;
/// The specification caps backing file names at 1023 bytes.
const MAX_BACKING_NAME: u32 = 1023;

// Incompatible feature bits (version 3).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_EXTERNAL_DATA: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION_TYPE: u64 = 1 << 3;
pub const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_EXTERNAL_DATA | INCOMPAT_COMPRESSION_TYPE | INCOMPAT_EXTENDED_L2;

// Header extension types.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
const EXT_BITMAPS: u32 = 0x2385_2875;
const EXT_ENCRYPTION: u32 = 0x0537_be77;
const EXT_EXTERNAL_DATA: u32 = 0x4441_5441;

/// Size of one feature name table entry: type, bit, 46-byte name.
const FEATURE_NAME_ENTRY: usize = 48;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (RFC 1951) without zlib framing: qemu's "zlib" type.
    Deflate,
    Zstd,
}

#[derive(Clone, Debug)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub incompatible: u64,
    pub compression: Compression,
    pub extended_l2: bool,
    /// The backing file name exactly as stored; `None` without a backing file.
    pub backing_name: Option<String>,
    /// The backing format recorded by `qemu-img create -F`.
    pub backing_format: Option<Format>,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Parses and validates the header and its extensions.
    pub fn read(file: &ImageFile) -> Result<Header> {
        let file_size = file.size();
        let mut fixed = [0u8; V3_MIN_HEADER as usize];
        let fixed_len = file_size.min(fixed.len() as u64) as usize;
        let fixed = fixed.get_mut(..fixed_len).unwrap_or_default();
        file.read("qcow2 header", 0, fixed)?;
        if fixed.get(0..4) != Some(&MAGIC[..]) {
            return Err(file.corrupt("qcow2 header", 0, "no qcow2 magic (QFI\\xfb): not a qcow2 image"));
        }
        if fixed.len() < V2_HEADER as usize {
            // Let read() produce the standard "beyond the end of the file" error.
            file.read("qcow2 header", 0, &mut [0u8; V2_HEADER as usize])?;
        }
        let version = u32be(fixed, 4);
        if version != 2 && version != 3 {
            return Err(file.unsupported("qcow2 header", 4, format!("version {version} (only versions 2 and 3 exist)")));
        }
        let cluster_bits = u32be(fixed, 20);
        if cluster_bits < MIN_CLUSTER_BITS {
            return Err(file.corrupt("qcow2 header", 20, format!("cluster_bits {cluster_bits} is below the minimum of {MIN_CLUSTER_BITS}")));
        }
        if cluster_bits > MAX_CLUSTER_BITS {
            return Err(file.unsupported(
                "qcow2 header",
                20,
                format!("cluster_bits {cluster_bits} is outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS} (512 bytes to 2 MiB clusters, qemu's limits)"),
            ));
        }
        let cluster_size = 1u64 << cluster_bits;
        let size = u64be(fixed, 24);
        if size > MAX_VIRTUAL_SIZE {
            return Err(file.unsupported(
                "qcow2 header",
                24,
                format!("virtual size {size} bytes exceeds the limit of {MAX_VIRTUAL_SIZE} bytes (1 PiB)"),
            ));
        }
        let crypt_method = u32be(fixed, 32);
        if crypt_method != 0 {
            let how = match crypt_method {
                1 => "AES",
                2 => "LUKS",
                _ => "unknown method",
            };
            return Err(file.unsupported("qcow2 header", 32, format!("encrypted image ({how}, crypt_method {crypt_method})")));
        }

        let mut header = Header {
            version,
            cluster_bits,
            size,
            l1_size: u32be(fixed, 36),
            l1_table_offset: u64be(fixed, 40),
            incompatible: 0,
            compression: Compression::Deflate,
            extended_l2: false,
            backing_name: None,
            backing_format: None,
        };

        let header_length = if version == 2 {
            V2_HEADER
        } else {
            if fixed.len() < V3_MIN_HEADER as usize {
                file.read("qcow2 version 3 header", 0, &mut [0u8; V3_MIN_HEADER as usize])?;
            }
            let header_length = u32be(fixed, 100);
            if header_length < V3_MIN_HEADER || header_length % 8 != 0 || u64::from(header_length) > cluster_size {
                return Err(file.corrupt(
                    "qcow2 header",
                    100,
                    format!("header_length {header_length} is not a multiple of 8 between {V3_MIN_HEADER} and the cluster size {cluster_size}"),
                ));
            }
            header.incompatible = u64be(fixed, 72);
            header_length
        };

        // The header extension area runs from the end of the header to the
        // backing file name, or to the end of the first cluster.
        let backing_offset = u64be(fixed, 8);
        let backing_len = u32be(fixed, 16);
        let ext_end = if backing_offset != 0 {
            if backing_len > MAX_BACKING_NAME {
                return Err(file.corrupt("qcow2 header", 16, format!("backing file name length {backing_len} exceeds {MAX_BACKING_NAME} bytes")));
            }
            if backing_offset < u64::from(header_length) || backing_offset.saturating_add(u64::from(backing_len)) > cluster_size {
                return Err(file.corrupt(
                    "qcow2 header",
                    8,
                    format!("backing file name at offset {backing_offset} ({backing_len} bytes) is not inside the first cluster after the header"),
                ));
            }
            backing_offset
        } else {
            cluster_size
        };
        // The first cluster may be cut short in a tiny file; extensions
        // cannot lie beyond the end of the file anyway.
        let ext_end = ext_end.min(file_size).max(u64::from(header_length));
        let area = file.read_vec("qcow2 header", 0, ext_end)?;

        if version == 3 {
            header.check_v3_fields(file, &area, header_length)?;
        }
        let extensions = Extensions::parse(file, &area, header_length as usize)?;
        header.check_features(file, &extensions)?;
        header.backing_format = match &extensions.backing_format {
            Some((name, off)) => Some(backing_format(file, name, *off)?),
            None => None,
        };
        if backing_offset != 0 && backing_len > 0 {
            let name = file.read_vec("backing file name", backing_offset, u64::from(backing_len))?;
            let name = String::from_utf8(name)
                .map_err(|_| file.unsupported("backing file name", backing_offset, "the name is not valid UTF-8"))?;
            header.backing_name = Some(name);
        }
        Ok(header)
    }

    /// Version 3 only: incompatible features and the compression type.
    fn check_v3_fields(&mut self, file: &ImageFile, area: &[u8], header_length: u32) -> Result<()> {
        let compression_type = if header_length > COMPRESSION_TYPE_OFFSET {
            area.get(COMPRESSION_TYPE_OFFSET as usize).copied().unwrap_or(0)
        } else {
            0
        };
        let flagged = self.incompatible & INCOMPAT_COMPRESSION_TYPE != 0;
        self.compression = match (flagged, compression_type) {
            (false, 0) => Compression::Deflate,
            (true, 1) => Compression::Zstd,
            (false, t) => {
                return Err(file.corrupt(
                    "qcow2 header",
                    u64::from(COMPRESSION_TYPE_OFFSET),
                    format!("compression_type {t} without the compression type feature bit"),
                ))
            }
            (true, 0) => {
                return Err(file.corrupt(
                    "qcow2 header",
                    u64::from(COMPRESSION_TYPE_OFFSET),
                    "the compression type feature bit is set but compression_type is 0 or absent",
                ))
            }
            (true, t) => {
                return Err(file.unsupported("qcow2 header", u64::from(COMPRESSION_TYPE_OFFSET), format!("compression_type {t}")))
            }
        };
        self.extended_l2 = self.incompatible & INCOMPAT_EXTENDED_L2 != 0;
        if self.extended_l2 && self.cluster_bits < MIN_EXTENDED_L2_CLUSTER_BITS {
            return Err(file.corrupt(
                "qcow2 header",
                20,
                format!("extended L2 entries need clusters of at least 16 KiB, cluster_bits is {}", self.cluster_bits),
            ));
        }
        Ok(())
    }

    fn check_features(&self, file: &ImageFile, ext: &Extensions) -> Result<()> {
        let unknown = self.incompatible & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let names: Vec<String> = (0..64)
                .filter(|bit| unknown & (1u64 << bit) != 0)
                .map(|bit| match ext.feature_name(0, bit) {
                    Some(name) => format!("bit {bit} \"{name}\""),
                    None => format!("bit {bit}"),
                })
                .collect();
            return Err(file.unsupported("qcow2 header", 72, format!("unknown incompatible features: {}", names.join(", "))));
        }
        // The corrupt bit is qemu's own finding that the metadata is
        // inconsistent (e.g. an L2 entry pointing into another structure).
        // qemu still opens such images read-only, but a backup taken from
        // them may silently contain wrong data; refusing makes the
        // administrator repair a copy (`qemu-img check -r`) first.
        if self.incompatible & INCOMPAT_CORRUPT != 0 {
            return Err(file.corrupt(
                "qcow2 header",
                72,
                "qemu marked this image corrupt (incompatible feature bit 1): its metadata may map guest data to the wrong place; check and repair a copy with qemu-img check -r",
            ));
        }
        if let Some(off) = ext.external_data {
            return Err(file.unsupported("external data file name header extension", off, "guest data is in an external data file"));
        }
        if self.incompatible & INCOMPAT_EXTERNAL_DATA != 0 {
            return Err(file.unsupported("qcow2 header", 72, "guest data is in an external data file (incompatible feature bit 2)"));
        }
        if let Some(off) = ext.encryption {
            return Err(file.unsupported("encryption header extension", off, "encrypted image"));
        }
        // The dirty bit only says refcounts may be stale (lazy refcounts);
        // the L1/L2 mapping is always consistent, so reading is safe.
        Ok(())
    }

    /// A short description: version and the features that change reading.
    pub fn variant(&self) -> String {
        let mut features = Vec::new();
        if self.compression == Compression::Zstd {
            features.push("zstd");
        }
        if self.extended_l2 {
            features.push("extended_l2");
        }
        if features.is_empty() {
            format!("v{}", self.version)
        } else {
            format!("v{} ({})", self.version, features.join(", "))
        }
    }
}

/// What the header extensions say, with the file offset of each extension
/// for error messages.
#[derive(Default)]
struct Extensions {
    backing_format: Option<(String, u64)>,
    /// (type, bit, name)
    feature_names: Vec<(u8, u8, String)>,
    external_data: Option<u64>,
    encryption: Option<u64>,
}

impl Extensions {
    fn parse(file: &ImageFile, area: &[u8], start: usize) -> Result<Extensions> {
        let mut ext = Extensions::default();
        let mut pos = start;
        // Each extension is at least 8 bytes, so this loop ends.
        while let Some(head) = pos.checked_add(8).and_then(|end| area.get(pos..end)) {
            let kind = u32be(head, 0);
            let len = u32be(head, 4) as usize;
            let off = pos as u64;
            if kind == EXT_END {
                break;
            }
            let data_start = pos + 8;
            let data = data_start
                .checked_add(len)
                .and_then(|end| area.get(data_start..end))
                .ok_or_else(|| {
                    file.corrupt(
                        &format!("header extension {kind:#010x}"),
                        off,
                        format!("length {len} runs past the end of the header extension area ({} bytes)", area.len()),
                    )
                })?;
            match kind {
                EXT_BACKING_FORMAT => {
                    let name = String::from_utf8(data.to_vec()).map_err(|_| {
                        file.corrupt("backing format header extension", off, "the format name is not valid UTF-8")
                    })?;
                    ext.backing_format = Some((name, off));
                }
                EXT_FEATURE_NAMES => {
                    for entry in data.chunks_exact(FEATURE_NAME_ENTRY) {
                        let (kind, bit) = (entry.first().copied().unwrap_or(0), entry.get(1).copied().unwrap_or(0));
                        let raw = entry.get(2..).unwrap_or_default();
                        let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
                        ext.feature_names.push((kind, bit, String::from_utf8_lossy(raw).into_owned()));
                    }
                }
                EXT_EXTERNAL_DATA => ext.external_data = Some(off),
                EXT_ENCRYPTION => ext.encryption = Some(off),
                // Bitmaps describe changed blocks for incremental backup
                // tools; they never change what the guest reads.
                EXT_BITMAPS => {}
                // Unknown extensions may be ignored (specification).
                _ => {}
            }
            let padded = len.checked_add(7).map(|l| l & !7).unwrap_or(usize::MAX);
            pos = data_start.saturating_add(padded);
        }
        Ok(ext)
    }

    fn feature_name(&self, kind: u8, bit: u32) -> Option<&str> {
        self.feature_names.iter().find(|(k, b, _)| *k == kind && u32::from(*b) == bit).map(|(_, _, n)| n.as_str())
    }
}

/// Maps qemu's format names to ours.
fn backing_format(file: &ImageFile, name: &str, offset: u64) -> Result<Format> {
    Ok(match name {
        "raw" => Format::Raw,
        "qcow2" => Format::Qcow2,
        "vmdk" => Format::Vmdk,
        "vpc" => Format::Vhd,
        "vhdx" => Format::Vhdx,
        _ => return Err(file.unsupported("backing format header extension", offset, format!("backing file format {name:?}"))),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::block::MemSource;
    use crate::Error;
    use std::sync::Arc;

    /// A v3 header: 64 KiB clusters, 1 MiB disk, L1 at cluster 1.
    pub(crate) fn v3_header() -> Vec<u8> {
        let mut h = vec![0u8; 0x10000];
        h[0..4].copy_from_slice(MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
        h[36..40].copy_from_slice(&1u32.to_be_bytes());
        h[40..48].copy_from_slice(&0x10000u64.to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&112u32.to_be_bytes());
        h
    }

    fn parse(bytes: Vec<u8>) -> Result<Header> {
        Header::read(&ImageFile::new(Arc::new(MemSource(bytes)), "t.qcow2"))
    }

    fn put_ext(h: &mut [u8], at: usize, kind: u32, data: &[u8]) -> usize {
        h[at..at + 4].copy_from_slice(&kind.to_be_bytes());
        h[at + 4..at + 8].copy_from_slice(&(data.len() as u32).to_be_bytes());
        h[at + 8..at + 8 + data.len()].copy_from_slice(data);
        at + 8 + ((data.len() + 7) & !7)
    }

    #[test]
    fn parses_minimal_v3() {
        let h = parse(v3_header()).unwrap();
        assert_eq!((h.version, h.cluster_bits, h.size, h.l1_size), (3, 16, 1 << 20, 1));
        assert_eq!(h.compression, Compression::Deflate);
        assert_eq!(h.variant(), "v3");
        assert!(h.backing_name.is_none());
    }

    #[test]
    fn parses_v2_with_backing_and_format() {
        let mut b = v3_header();
        b[4..8].copy_from_slice(&2u32.to_be_bytes());
        b[72..112].fill(0); // v2 has no v3 fields; extensions start at 72
        let next = put_ext(&mut b, 72, EXT_BACKING_FORMAT, b"raw");
        put_ext(&mut b, next, EXT_END, b"");
        let name = b"../base.img";
        b[8..16].copy_from_slice(&512u64.to_be_bytes());
        b[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
        b[512..512 + name.len()].copy_from_slice(name);
        let h = parse(b).unwrap();
        assert_eq!(h.variant(), "v2");
        assert_eq!(h.backing_name.as_deref(), Some("../base.img"));
        assert_eq!(h.backing_format, Some(Format::Raw));
    }

    #[test]
    fn refuses_bad_magic_version_and_cluster_bits() {
        let mut b = v3_header();
        b[0] = b'X';
        assert!(matches!(parse(b), Err(Error::Corrupt { .. })));
        let mut b = v3_header();
        b[4..8].copy_from_slice(&4u32.to_be_bytes());
        assert!(matches!(parse(b), Err(Error::Unsupported { .. })));
        for bits in [0u32, 8, 22, 64, u32::MAX] {
            let mut b = v3_header();
            b[20..24].copy_from_slice(&bits.to_be_bytes());
            assert!(parse(b).is_err(), "cluster_bits {bits}");
        }
    }

    #[test]
    fn refuses_huge_size_and_encryption() {
        let mut b = v3_header();
        b[24..32].copy_from_slice(&(1u64 << 60).to_be_bytes());
        assert!(matches!(parse(b), Err(Error::Unsupported { offset: 24, .. })));
        let mut b = v3_header();
        b[32..36].copy_from_slice(&2u32.to_be_bytes());
        let e = parse(b).unwrap_err().to_string();
        assert!(e.contains("encrypted"), "{e}");
    }

    #[test]
    fn truncated_header_is_an_error() {
        let b = v3_header()[..90].to_vec();
        assert!(matches!(parse(b), Err(Error::Truncated { .. })));
        let b = v3_header()[..40].to_vec();
        assert!(matches!(parse(b), Err(Error::Truncated { .. })));
    }

    #[test]
    fn feature_bits() {
        let set = |bits: u64, ctype: u8| {
            let mut b = v3_header();
            b[72..80].copy_from_slice(&bits.to_be_bytes());
            b[104] = ctype;
            parse(b)
        };
        assert!(set(INCOMPAT_DIRTY, 0).is_ok());
        assert!(matches!(set(INCOMPAT_CORRUPT, 0), Err(Error::Corrupt { .. })));
        assert!(matches!(set(INCOMPAT_EXTERNAL_DATA, 0), Err(Error::Unsupported { .. })));
        assert_eq!(set(INCOMPAT_COMPRESSION_TYPE, 1).unwrap().compression, Compression::Zstd);
        assert!(set(INCOMPAT_COMPRESSION_TYPE, 0).is_err());
        assert!(set(INCOMPAT_COMPRESSION_TYPE, 2).is_err());
        assert!(set(0, 1).is_err());
        let h = set(INCOMPAT_EXTENDED_L2, 0).unwrap();
        assert!(h.extended_l2);
        assert_eq!(h.variant(), "v3 (extended_l2)");
        let e = set(1 << 9, 0).unwrap_err().to_string();
        assert!(e.contains("bit 9"), "{e}");
    }

    #[test]
    fn unknown_feature_named_from_table() {
        let mut b = v3_header();
        b[72..80].copy_from_slice(&(1u64 << 7).to_be_bytes());
        let mut entry = vec![0u8, 7];
        entry.extend_from_slice(b"shiny new thing");
        entry.resize(FEATURE_NAME_ENTRY, 0);
        put_ext(&mut b, 112, EXT_FEATURE_NAMES, &entry);
        let e = parse(b).unwrap_err().to_string();
        assert!(e.contains("shiny new thing"), "{e}");
    }

    #[test]
    fn extensions_bounds_and_refusals() {
        let mut b = v3_header();
        b[112..116].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        b[116..120].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(parse(b), Err(Error::Corrupt { .. })));
        let mut b = v3_header();
        put_ext(&mut b, 112, EXT_EXTERNAL_DATA, b"data.raw");
        assert!(matches!(parse(b), Err(Error::Unsupported { .. })));
        let mut b = v3_header();
        put_ext(&mut b, 112, EXT_BACKING_FORMAT, b"qed");
        assert!(matches!(parse(b), Err(Error::Unsupported { .. })));
        let mut b = v3_header();
        put_ext(&mut b, 112, EXT_BITMAPS, &[0u8; 24]);
        assert!(parse(b).is_ok());
    }

    #[test]
    fn backing_name_bounds() {
        let mut b = v3_header();
        b[8..16].copy_from_slice(&0xfff0u64.to_be_bytes());
        b[16..20].copy_from_slice(&100u32.to_be_bytes());
        assert!(matches!(parse(b), Err(Error::Corrupt { offset: 8, .. })));
        let mut b = v3_header();
        b[8..16].copy_from_slice(&512u64.to_be_bytes());
        b[16..20].copy_from_slice(&5000u32.to_be_bytes());
        assert!(matches!(parse(b), Err(Error::Corrupt { offset: 16, .. })));
    }
}

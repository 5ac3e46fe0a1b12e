//! What is on a LUN, from its headers only: a VMFS volume (LVM header
//! magic 0xc001d00d at 1 MiB, FS info magic 0x2fabf15e with UUID and
//! label), an LVM2 physical volume label, a GPT/MBR partition table (and
//! then what the datastore partition holds), or a filesystem the guestfs
//! library reads (NTFS, ext4, FAT). The full VMFS reader lives elsewhere;
//! this reads the two headers an identity check needs.

use super::info::Content;
use guestfs::block::{ReadAt, SliceSource};
use std::sync::Arc;

const MIB: u64 = 1 << 20;
/// VMFS LVM volume header, from the start of the VMFS partition.
const VMFS_LVM_OFFSET: u64 = MIB;
const VMFS_LVM_MAGIC: u32 = 0xc001_d00d;
/// Volume (extent) UUID in the LVM header.
const VMFS_LVM_UUID: usize = 0x82;
/// FS info header magic; the header sits 2 MiB into the logical volume,
/// whose data starts 16 MiB (VMFS 3/5) or 17 MiB into the partition.
const VMFS_FS_MAGIC: u32 = 0x2fab_f15e;
const VMFS_FS_OFFSETS: [u64; 2] = [0x120_0000, 0x130_0000];
const VMFS_FS_UUID: usize = 0x09;
const VMFS_FS_LABEL: usize = 0x1d;
const VMFS_LABEL_LEN: usize = 128;
/// GPT partition type of a VMFS datastore partition.
pub const GPT_VMFS: &str = "aa31e02a-400f-11db-9590-000c2911d1b8";
/// MBR partition type of VMFS.
pub const MBR_VMFS: &str = "0xfb";

fn read(src: &dyn ReadAt, offset: u64, len: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; len];
    src.read_exact_at(&mut b, offset).ok()?;
    Some(b)
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// A VMFS UUID the way ESXi prints it (`esxcli storage vmfs extent list`,
/// `/vmfs/volumes/<uuid>`), by the VMFS reader's own formatter.
fn vmfs_uuid(b: &[u8]) -> Option<String> {
    b.get(..16).map(guestfs::vmfs::lvm::uuid_string)
}

fn text(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = scsi::ascii_field(b.get(..end)?);
    (!s.is_empty()).then_some(s)
}

/// A VMFS volume on `src` (a partition, or a whole LUN), or `None`.
pub fn probe_vmfs(src: &dyn ReadAt) -> Option<Content> {
    let lvm = read(src, VMFS_LVM_OFFSET, 512)?;
    if le32(&lvm, 0)? != VMFS_LVM_MAGIC {
        return None;
    }
    let mut c = Content { kind: "vmfs".into(), volume_uuid: vmfs_uuid(lvm.get(VMFS_LVM_UUID..)?), ..Default::default() };
    // Only the head extent of a spanned datastore holds the FS info.
    for off in VMFS_FS_OFFSETS {
        let Some(fs) = read(src, off, 512) else { continue };
        if le32(&fs, 0) == Some(VMFS_FS_MAGIC) {
            c.version = fs.get(8).map(|v| format!("{v}"));
            c.uuid = fs.get(VMFS_FS_UUID..).and_then(vmfs_uuid);
            c.label = fs.get(VMFS_FS_LABEL..VMFS_FS_LABEL + VMFS_LABEL_LEN).and_then(text);
            break;
        }
    }
    Some(c)
}

/// An LVM2 PV label ("LABELONE" in one of the first four sectors, type
/// "LVM2 001"), with the PV UUID as `pvs` prints it.
fn probe_lvm_pv(src: &dyn ReadAt) -> Option<Content> {
    let head = read(src, 0, 2048)?;
    for sector in 0..4usize {
        let s = head.get(sector * 512..sector * 512 + 512)?;
        if s.get(0..8)? == b"LABELONE" && s.get(24..32)? == b"LVM2 001" {
            let raw = s.get(32..64)?;
            let id: String = raw.iter().map(|&c| if c.is_ascii_alphanumeric() { c as char } else { '?' }).collect();
            let groups = [6usize, 4, 4, 4, 4, 4, 6];
            let mut parts = Vec::new();
            let mut at = 0;
            for g in groups {
                parts.push(id.get(at..at + g)?.to_string());
                at += g;
            }
            return Some(Content { kind: "lvm-pv".into(), uuid: Some(parts.join("-")), ..Default::default() });
        }
    }
    None
}

fn probe_filesystem(src: Arc<dyn ReadAt>, name: &str) -> Option<Content> {
    match guestfs::fs::open_filesystem(src, name) {
        Ok(Some(fs)) => {
            let i = fs.info();
            Some(Content { kind: i.kind, label: i.label.filter(|l| !l.is_empty()), uuid: i.uuid, ..Default::default() })
        }
        Ok(None) => None,
        Err(e) => Some(Content { kind: "unknown".into(), error: Some(format!("{e}")), ..Default::default() }),
    }
}

/// What a volume holds: VMFS, an LVM PV or a filesystem.
fn probe_volume(src: Arc<dyn ReadAt>, name: &str) -> Option<Content> {
    probe_vmfs(&*src).or_else(|| probe_lvm_pv(&*src)).or_else(|| probe_filesystem(src, name))
}

/// Partition table kind from sector 0: a protective MBR (type 0xee) means
/// GPT.
fn table_kind(src: &dyn ReadAt) -> Option<&'static str> {
    let s = read(src, 0, 512)?;
    if s.get(510..512)? != [0x55, 0xaa] {
        return None;
    }
    let types: Vec<u8> = (0..4).filter_map(|i| s.get(446 + i * 16 + 4).copied()).collect();
    if types.contains(&0xee) {
        Some("gpt")
    } else if types.iter().any(|&t| t != 0) {
        Some("mbr")
    } else {
        None
    }
}

/// Probes a LUN's content from its headers. Never fails: what cannot be
/// read is `unknown` with the reason.
pub fn probe(src: Arc<dyn ReadAt>, name: &str) -> Content {
    if let Some(c) = probe_vmfs(&*src) {
        return c;
    }
    if let Some(c) = probe_lvm_pv(&*src) {
        return c;
    }
    if let Some(kind) = table_kind(&*src) {
        return probe_partitioned(src, name, kind);
    }
    if let Some(c) = probe_filesystem(src.clone(), name) {
        return c;
    }
    let size = src.size();
    let head = read(&*src, 0, usize::try_from(MIB.min(size)).unwrap_or(0));
    match head {
        Some(h) if h.iter().all(|&b| b == 0) => Content { kind: "empty".into(), ..Default::default() },
        Some(_) => Content { kind: "unknown".into(), ..Default::default() },
        None => Content { kind: "unknown".into(), error: Some(format!("{name}: cannot read the first MiB")), ..Default::default() },
    }
}

/// A partitioned LUN: the datastore partition is the VMFS-typed one, else
/// the largest; its content is reported as `partition`.
fn probe_partitioned(src: Arc<dyn ReadAt>, name: &str, kind: &str) -> Content {
    let mut c = Content { kind: kind.into(), ..Default::default() };
    let found = match guestfs::volume::find_volumes(std::slice::from_ref(&src)) {
        Ok(mut v) => v.pop().unwrap_or_default(),
        Err(e) => {
            c.error = Some(format!("{name}: partition table: {e}"));
            return c;
        }
    };
    if let Some((id, e)) = found.errors.first() {
        c.error = Some(format!("{name}: {id}: {e}"));
    }
    let parts: Vec<_> = found.volumes.iter().filter(|v| v.id.starts_with('p')).collect();
    let chosen = parts
        .iter()
        .find(|v| v.part_type.eq_ignore_ascii_case(GPT_VMFS) || v.part_type.eq_ignore_ascii_case(MBR_VMFS))
        .or_else(|| parts.iter().max_by_key(|v| v.size));
    if let Some(v) = chosen {
        c.partition_number = v.id.strip_prefix('p').and_then(|n| n.parse().ok());
        let Some(slice) = SliceSource::new(src.clone(), v.start, v.size) else { return c };
        if let Some(inner) = probe_volume(Arc::new(slice), &format!("{name}/{}", v.id)) {
            c.partition = Some(inner.kind);
            c.label = inner.label;
            c.uuid = inner.uuid;
            c.volume_uuid = inner.volume_uuid;
            c.version = inner.version;
            if inner.error.is_some() {
                c.error = inner.error;
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestfs::block::MemSource;

    #[test]
    fn vmfs_headers() {
        let mut d = vec![0u8; 0x140_0000];
        d[0x10_0000..0x10_0004].copy_from_slice(&VMFS_LVM_MAGIC.to_le_bytes());
        let fs = 0x120_0000;
        d[fs..fs + 4].copy_from_slice(&VMFS_FS_MAGIC.to_le_bytes());
        d[fs + 8] = 5;
        let uuid = [0xa2, 0x08, 0x80, 0x4d, 0x8c, 0x96, 0x40, 0x99, 0xdf, 0x04, 0x00, 0x1e, 0x4f, 0x1f, 0xbf, 0x2a];
        d[fs + 9..fs + 25].copy_from_slice(&uuid);
        d[fs + 0x1d..fs + 0x1d + 5].copy_from_slice(b"ds-01");
        let c = probe(Arc::new(MemSource(d)), "t");
        assert_eq!(c.kind, "vmfs");
        assert_eq!(c.uuid.as_deref(), Some("4d8008a2-9940968c-04df-001e4f1fbf2a"));
        assert_eq!(c.label.as_deref(), Some("ds-01"));
    }

    #[test]
    fn short_and_empty() {
        assert_eq!(probe(Arc::new(MemSource(vec![0; 4096])), "t").kind, "empty");
        assert_eq!(probe(Arc::new(MemSource(vec![1; 10])), "t").kind, "unknown");
    }
}

//! Read-only VMFS 5 and VMFS 6 datastores (VMware ESXi).
//!
//! Layers: the LVM ([`lvm`]) assembles the logical volume from one or more
//! extents (LUNs or partitions); the filesystem descriptor ([`fsinfo`]) at
//! 2 MiB into the volume gives block sizes and where the system files are;
//! file descriptors ([`descriptor`]) live in the `.fdc.sf` resource file
//! ([`resource`]) and map file offsets to blocks through direct addresses,
//! pointer blocks (`.pbc.sf`, `.pb2.sf`) or sub-blocks (`.sbc.sf`);
//! directories ([`dir`]) list children by descriptor address.
//!
//! Written from the published format descriptions (the dissect.vmfs and
//! vmfs-tools documentation of the on-disk layout); no code copied. Checked
//! against an ESXi-made VMFS 5 volume with `vmfs-fuse` as the oracle.
//!
//! Holes: a null block address and a block whose to-be-zeroed (TBZ) flag is
//! set read as zeros and are reported as holes by `data_ranges`; that is
//! what ESXi returns for them. Everything else that cannot be resolved is an
//! error naming `datastore:/path`, the structure and the byte offset.
//!
//! Caches (bounded): file descriptors and pointer blocks.

pub mod address;
pub mod descriptor;
pub mod dir;
pub mod fsinfo;
pub mod lvm;
pub mod resource;

use crate::block::{ImageFile, ReadAt};
use crate::cache::BoundedCache;
use crate::fs::{DirEntry, FileId, FileKind, Filesystem, FsInfo as FsSummary, Stat, Timestamp};
use crate::{Error, Result};
use address::{describe, fd_parts, Addr};
use descriptor::{locate, Fd, Layout, Slot};
use fsinfo::{FsInfo, FS_HEADER_OFFSET};
use lvm::{Device, LogicalVolume, VolumeInfo};
use resource::{ResourceMeta, RES_META_SIZE};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

const ROOT_FD: u32 = 0x0000_0004;
const FBB_FD: u32 = 0x0040_0004;
const FDC_FD: u32 = 0x0080_0004;
const PBC_FD: u32 = 0x00C0_0004;
const SBC_FD: u32 = 0x0100_0004;
const PB2_FD6: u32 = 0x0180_0004;

/// Resource files reading pointer blocks stored in resource files that
/// themselves need pointer blocks: real volumes need two levels; more means
/// the metadata loops.
const MAX_DEPTH: u32 = 4;
const FD_CACHE: usize = 4096;
/// 256 pointer blocks: 1 MiB on VMFS 5 (each maps 1 GiB of file), 16 MiB on
/// VMFS 6.
const PB_CACHE: usize = 256;
const MAX_DIR_BYTES: u64 = 64 << 20;
const MAX_SYMLINK: u64 = 4096;
const MAX_PATHS: usize = 1 << 20;

/// Cheap check: an LVM device header at 1 MiB, or a bare VMFS filesystem
/// descriptor at 2 MiB.
pub fn probe(src: &dyn ReadAt) -> bool {
    if lvm::has_lvm_magic(src) {
        return true;
    }
    let mut b = [0u8; 4];
    src.size() >= FS_HEADER_OFFSET + 512 && src.read_exact_at(&mut b, FS_HEADER_OFFSET).is_ok() && FsInfo::has_magic(&b)
}

/// A resource file: its header and its own descriptor.
struct Resource {
    what: &'static str,
    meta: ResourceMeta,
    fd: Fd,
}

/// A piece of a file: `len` bytes at volume offset `phys`, or zeros.
#[derive(Clone, Copy, Debug)]
struct Piece {
    phys: Option<u64>,
    len: u64,
}

pub struct Vmfs {
    name: String,
    vol: ImageFile,
    fs: FsInfo,
    layout: Layout,
    lvm: Option<VolumeInfo>,
    fdc: Option<Resource>,
    sbc: Option<Resource>,
    pbc: Option<Resource>,
    pb2: Option<Resource>,
    /// VMFS 6: small file blocks per SFB cluster.
    sfb_per_cluster: u64,
    fds: BoundedCache<u32, Fd>,
    pbs: BoundedCache<u64, Vec<u64>>,
    /// Paths and parents of descriptors seen while listing, for error
    /// messages and directory-loop detection.
    paths: Mutex<HashMap<u32, (u32, String)>>,
}

impl Vmfs {
    /// Opens a volume from its extents (one LUN/partition each, any order).
    pub fn open(extents: Vec<Arc<dyn ReadAt>>, name: &str) -> Result<Vmfs> {
        let nerr = |reason: &str| Error::corrupt(Path::new(name), "VMFS volume", 0, reason);
        let (volume, info): (Arc<dyn ReadAt>, Option<VolumeInfo>) = if extents.iter().all(|e| lvm::has_lvm_magic(e.as_ref())) && !extents.is_empty() {
            let many = extents.len() > 1;
            let devices = extents
                .into_iter()
                .enumerate()
                .map(|(i, src)| Device::parse(ImageFile::new(src, if many { format!("{name} (extent {i})") } else { name.to_string() })))
                .collect::<Result<Vec<_>>>()?;
            let (lv, info) = LogicalVolume::assemble(devices, name)?;
            (Arc::new(lv), Some(info))
        } else if extents.len() == 1 && probe(extents[0].as_ref()) {
            (Arc::new(LogicalVolume::bare(extents[0].clone())), None)
        } else if extents.is_empty() {
            return Err(nerr("no extents given"));
        } else {
            let bad = extents.iter().position(|e| !lvm::has_lvm_magic(e.as_ref())).unwrap_or(0);
            return Err(Error::corrupt(
                Path::new(&format!("{name} (extent {bad})")),
                "VMFS LVM device header",
                lvm::LVM_HEADER_OFFSET,
                format!("no LVM magic {:#010x}: not a VMFS extent", lvm::LVM_MAGIC),
            ));
        };
        // Offsets in volume-level errors are logical-volume offsets: say so.
        let vol = ImageFile::new(volume, format!("{name} (logical volume)"));
        let fs = FsInfo::parse(&vol)?;
        let layout = Layout::new(&fs);
        let mut v = Vmfs {
            name: name.to_string(),
            vol,
            fs,
            layout,
            lvm: info,
            fdc: None,
            sbc: None,
            pbc: None,
            pb2: None,
            sfb_per_cluster: 0,
            fds: BoundedCache::new(FD_CACHE),
            pbs: BoundedCache::new(PB_CACHE),
            paths: Mutex::new(HashMap::new()),
        };
        v.paths_insert(ROOT_FD, ROOT_FD, "/".into());
        v.fdc = Some(v.open_resource(".fdc.sf", FDC_FD)?);
        v.pbc = Some(v.open_resource(".pbc.sf", PBC_FD)?);
        v.sbc = Some(v.open_resource(".sbc.sf", SBC_FD)?);
        if v.fs.pb2_vol_addr != 0 {
            let addr = if v.fs.is_vmfs6() { PB2_FD6 } else { v.fs.pb2_fd_addr };
            v.pb2 = Some(v.open_resource(".pb2.sf", addr)?);
        }
        if v.fs.is_vmfs6() {
            // .fbb.sf holds the large-file-block metadata, and at
            // `childMetaOffset` the small-file-block metadata we need to
            // turn SFB (cluster, resource) into a block number.
            let fbb = v.open_resource(".fbb.sf", FBB_FD)?;
            let child = fbb.meta.child_meta_offset;
            let raw = v.read_sys(&fbb, child, RES_META_SIZE)?;
            let sfb = ResourceMeta::parse(&raw, true, fbb.meta.cluster_header_size)
                .map_err(|r| v.fd_corrupt(&fbb.fd, ".fbb.sf small-file-block metadata", child, r))?;
            v.sfb_per_cluster = sfb.resources_per_cluster;
        }
        let root = v.fd(ROOT_FD)?;
        if !root.is_dir() {
            return Err(v.fd_corrupt(&root, "root directory descriptor", root.vol_offset, "is not a directory"));
        }
        tracing::debug!(name, label = %v.fs.label, uuid = %v.fs.uuid, major = v.fs.major, "opened VMFS volume");
        Ok(v)
    }

    pub fn label(&self) -> &str {
        &self.fs.label
    }

    /// The filesystem UUID as ESXi prints it (`5f1e2d3c-12345678-abcd-001122334455`).
    pub fn uuid(&self) -> String {
        self.fs.uuid.clone()
    }

    /// (5, 81) for VMFS-5.81, (6, 82) for VMFS-6.82.
    pub fn version(&self) -> (u32, u32) {
        (if self.fs.is_vmfs6() { 6 } else { 5 }, u32::from(self.fs.minor))
    }

    pub fn block_size(&self) -> u64 {
        self.fs.file_block_size
    }

    /// The LVM's view (volume name, LVM UUID, extents); `None` for a bare
    /// filesystem image.
    pub fn lvm_info(&self) -> Option<&VolumeInfo> {
        self.lvm.as_ref()
    }

    // ---- errors ----

    fn where_of(&self, addr: u32) -> String {
        let g = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        match g.get(&addr) {
            Some((_, p)) => format!("{}:{p}", self.name),
            None => {
                let (c, r) = fd_parts(addr).unwrap_or((0, 0));
                format!("{}:<file descriptor c{c} r{r}>", self.name)
            }
        }
    }

    fn fd_corrupt(&self, fd: &Fd, structure: &str, offset: u64, reason: impl Into<String>) -> Error {
        Error::corrupt(Path::new(&self.where_of(fd.addr)), structure, offset, reason)
    }

    fn fd_unsupported(&self, fd: &Fd, structure: &str, offset: u64, reason: impl Into<String>) -> Error {
        Error::unsupported(Path::new(&self.where_of(fd.addr)), structure, offset, reason)
    }

    fn paths_insert(&self, id: u32, parent: u32, path: String) {
        let mut g = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() < MAX_PATHS || g.contains_key(&id) {
            g.insert(id, (parent, path));
        }
    }

    // ---- descriptors ----

    /// Volume offset of a system file's descriptor, computed without the
    /// `.fdc.sf` mapping (which is itself such a file).
    fn sfd_offset(&self, addr: u32) -> Result<u64> {
        let fs = &self.fs;
        let (_, resource) = fd_parts(addr).ok_or_else(|| self.vol.corrupt("system file descriptor address", FS_HEADER_OFFSET, format!("{addr:#x} is not an FD address")))?;
        let overflow = || self.vol.corrupt("VMFS filesystem descriptor", FS_HEADER_OFFSET, "system file offsets overflow");
        if fs.is_vmfs6() {
            let md = fs.md_alignment;
            let cg = (((md << 10) + 0x3F_FFFF) & !0xF_FFFF).checked_add(fs.fdc_cluster_group_offset).ok_or_else(overflow)?;
            let rs = 2 * md;
            return cg.checked_add(fs.fdc_clusters_per_group * rs).and_then(|o| o.checked_add(resource * rs)).ok_or_else(overflow);
        }
        if !fs.dense_sb {
            if addr == fs.pb2_fd_addr && fs.pb2_vol_addr != 0 {
                return Ok(fs.pb2_vol_addr);
            }
            if addr == fs.sdd_fd_addr && fs.sdd_vol_addr != 0 {
                return Ok(fs.sdd_vol_addr);
            }
        }
        let fbs = fs.file_block_size;
        let cg = (fbs * fbs.checked_add(0x3F_FFFF).ok_or_else(overflow)?.div_euclid(fbs)).checked_add(fs.fdc_cluster_group_offset).ok_or_else(overflow)?;
        cg.checked_add(fs.fdc_clusters_per_group * 1024).and_then(|o| o.checked_add(resource << 11)).ok_or_else(overflow)
    }

    fn open_resource(&self, what: &'static str, addr: u32) -> Result<Resource> {
        let at = self.sfd_offset(addr)?;
        let structure = format!("{what} file descriptor");
        let raw = self.vol.read_vec(&structure, at, self.layout.fd_size)?;
        let fd = Fd::parse(&raw, addr, at, &self.layout);
        if fd.desc_addr != addr || fd.kind != descriptor::TYPE_SYSFILE {
            return Err(self.vol.corrupt(
                &structure,
                at,
                format!("holds address {:#x} type {} (expected system file {addr:#x}): the filesystem descriptor or {what} is damaged", fd.desc_addr, fd.kind),
            ));
        }
        let chs = if self.fs.is_vmfs6() { 2 * self.fs.md_alignment } else { 1024 };
        let tmp = Resource { what, meta: ResourceMeta { resources_per_cluster: 1, clusters_per_group: 1, cluster_group_offset: 0, resource_size: 1, cluster_group_size: 0, num_cluster_groups: 0, child_meta_offset: 0, cluster_header_size: chs }, fd };
        let raw = self.read_sys(&tmp, 0, RES_META_SIZE)?;
        let meta = ResourceMeta::parse(&raw, self.fs.is_vmfs6(), chs).map_err(|r| self.fd_corrupt(&tmp.fd, &format!("{what} resource metadata"), 0, r))?;
        Ok(Resource { what, meta, fd: tmp.fd })
    }

    /// Reads `len` bytes at `off` of a system (resource) file.
    fn read_sys(&self, res: &Resource, off: u64, len: u64) -> Result<Vec<u8>> {
        if off.checked_add(len).is_none_or(|e| e > res.fd.length) {
            return Err(self.fd_corrupt(&res.fd, res.what, off, format!("{len} bytes at {off} lie beyond the file's {} bytes", res.fd.length)));
        }
        let mut buf = vec![0u8; len as usize];
        self.read_into(&res.fd, off, &mut buf, 1)?;
        Ok(buf)
    }

    /// The descriptor at `addr`, through `.fdc.sf`.
    fn fd(&self, addr: u32) -> Result<Arc<Fd>> {
        self.fds.get_or_load(addr, || {
            let fdc = self.fdc.as_ref().ok_or_else(|| self.vol.corrupt(".fdc.sf", 0, "not open"))?;
            let bad = |reason: String| Error::corrupt(Path::new(&self.where_of(addr)), "file descriptor address", 0, reason);
            let (c, r) = fd_parts(addr).ok_or_else(|| bad(format!("{addr:#x} is not a file descriptor address")))?;
            let off = fdc.meta.resource_offset(c, r).ok_or_else(|| bad(format!("descriptor c{c} r{r} lies outside .fdc.sf's clusters")))?;
            let len = self.layout.fd_size;
            if off.checked_add(len).is_none_or(|e| e > fdc.fd.length) {
                return Err(bad(format!("descriptor c{c} r{r} at {off} lies beyond .fdc.sf ({} bytes)", fdc.fd.length)));
            }
            let vol_offset = self.map_piece(&fdc.fd, off, 1)?.phys.unwrap_or(0);
            let mut raw = vec![0u8; len as usize];
            self.read_into(&fdc.fd, off, &mut raw, 1)?;
            let fd = Fd::parse(&raw, addr, vol_offset, &self.layout);
            if fd.desc_addr != addr {
                return Err(Error::corrupt(
                    Path::new(&self.where_of(addr)),
                    "file descriptor",
                    vol_offset,
                    format!("descriptor slot holds address {:#x}, expected {addr:#x} (free or damaged descriptor)", fd.desc_addr),
                ));
            }
            Ok(fd)
        })
    }

    fn fd_of(&self, id: FileId) -> Result<Arc<Fd>> {
        let addr = u32::try_from(id).ok().filter(|a| fd_parts(*a).is_some());
        let addr = addr.ok_or_else(|| Error::corrupt(Path::new(&self.name), "file id", 0, format!("{id:#x} is not a VMFS file descriptor address")))?;
        self.fd(addr)
    }

    // ---- block mapping ----

    /// Maps file offset `off` (inside the file) to a piece of the volume.
    fn map_piece(&self, fd: &Fd, off: u64, depth: u32) -> Result<Piece> {
        let l = &self.layout;
        let bs = fd.block_size;
        if !bs.is_power_of_two() || !(512..=1 << 40).contains(&bs) {
            return Err(self.fd_corrupt(fd, "file descriptor", fd.vol_offset, format!("block size {bs} is not a power of two in 512..1 TiB")));
        }
        let block_num = off / bs;
        let in_block = off % bs;
        let to_block_end = bs - in_block;
        let what = format!("block map (offset {off})");
        let slot = locate(fd.zla, block_num, l.ptrs_per_pb, l.addrs_count).map_err(|r| self.fd_corrupt(fd, &what, fd.vol_offset, r))?;
        let top = |i: usize| fd.addrs.get(i).copied().unwrap_or(0);
        let word = match slot {
            Slot::Direct(i) => top(i),
            Slot::Single(i, j) => {
                if top(i) == 0 {
                    // A missing pointer block: all the blocks it would map are holes.
                    return Ok(Piece { phys: None, len: (l.ptrs_per_pb - j) * bs - in_block });
                }
                let pb = self.pointer_block(fd, top(i), depth)?;
                pb.get(j as usize).copied().unwrap_or(0)
            }
            Slot::Double(i, j, k) => {
                if top(i) == 0 {
                    let left = (l.ptrs_per_pb * l.ptrs_per_pb).saturating_sub(j * l.ptrs_per_pb + k).max(1);
                    return Ok(Piece { phys: None, len: left.saturating_mul(bs) - in_block });
                }
                let pb = self.pointer_block(fd, top(i), depth)?;
                let mid = pb.get(j as usize).copied().unwrap_or(0);
                if mid == 0 {
                    return Ok(Piece { phys: None, len: (l.ptrs_per_pb - k) * bs - in_block });
                }
                let pb2 = self.pointer_block(fd, mid, depth)?;
                pb2.get(k as usize).copied().unwrap_or(0)
            }
        };
        let addr = self.decode(word);
        let zero = Piece { phys: None, len: to_block_end };
        // The address type's own block size must be the descriptor's block
        // size: anything else would mix data of neighbouring blocks.
        let unit_check = |unit: u64, name: &str| -> Result<()> {
            if unit != bs {
                return Err(self.fd_unsupported(fd, &what, fd.vol_offset, format!("{name} of {unit} bytes in a file with {bs}-byte blocks ({})", describe(addr))));
            }
            Ok(())
        };
        let vol_at = |block: u64, unit: u64| -> Result<Piece> {
            let phys = block.checked_mul(unit).and_then(|p| p.checked_add(in_block)).filter(|p| *p < self.vol.size());
            let phys = phys.ok_or_else(|| self.fd_corrupt(fd, &what, fd.vol_offset, format!("{} lies beyond the end of the volume ({} bytes)", describe(addr), self.vol.size())))?;
            Ok(Piece { phys: Some(phys), len: to_block_end })
        };
        match addr {
            Addr::Null => Ok(zero),
            Addr::FileBlock { block, tbz } => {
                unit_check(self.fs.file_block_size, "file block")?;
                if tbz {
                    Ok(zero)
                } else {
                    vol_at(block, bs)
                }
            }
            Addr::SmallFileBlock { cluster, resource, tbz } => {
                unit_check(self.fs.file_block_size, "small file block")?;
                if resource >= self.sfb_per_cluster {
                    return Err(self.fd_corrupt(fd, &what, fd.vol_offset, format!("{}: resource beyond the {} per cluster", describe(addr), self.sfb_per_cluster)));
                }
                match tbz {
                    0 => vol_at(cluster.saturating_mul(self.sfb_per_cluster).saturating_add(resource), bs),
                    0xFF => Ok(zero),
                    _ => Err(self.fd_unsupported(fd, &what, fd.vol_offset, format!("partly zeroed block {} (TBZ bitmap {tbz:#04x})", describe(addr)))),
                }
            }
            Addr::LargeFileBlock { block, tbz } => {
                unit_check(self.fs.file_block_size << self.fs.sfb_to_lfb_shift, "large file block")?;
                match tbz {
                    0 => vol_at(block, bs),
                    0xFF => Ok(zero),
                    _ => Err(self.fd_unsupported(fd, &what, fd.vol_offset, format!("partly zeroed block {} (TBZ bitmap {tbz:#04x})", describe(addr)))),
                }
            }
            Addr::SubBlock { cluster, resource } => {
                unit_check(self.fs.sub_block_size, "sub-block")?;
                let sbc = self.resource_for(fd, addr, &what)?;
                let at = self.resource_at(fd, sbc, cluster, resource, bs, &what)?;
                if depth >= MAX_DEPTH {
                    return Err(self.fd_corrupt(fd, &what, fd.vol_offset, "sub-block chain too deep (metadata loop)"));
                }
                let p = self.map_piece(&sbc.fd, at + in_block, depth + 1)?;
                Ok(Piece { phys: p.phys, len: p.len.min(to_block_end) })
            }
            other => Err(self.fd_corrupt(fd, &what, fd.vol_offset, format!("{} where a data block address belongs", describe(other)))),
        }
    }

    fn decode(&self, word: u64) -> Addr {
        if self.layout.addr64 {
            Addr::decode6(word)
        } else {
            Addr::decode5(word as u32, self.fs.dense_sb)
        }
    }

    fn resource_for(&self, fd: &Fd, addr: Addr, what: &str) -> Result<&Resource> {
        let r = match addr {
            Addr::SubBlock { .. } => self.sbc.as_ref(),
            Addr::PointerBlock { .. } => self.pbc.as_ref(),
            Addr::PointerBlock2 { .. } => self.pb2.as_ref(),
            _ => None,
        };
        r.ok_or_else(|| self.fd_corrupt(fd, what, fd.vol_offset, format!("{}: the volume has no resource file for it", describe(addr))))
    }

    /// Offset in resource file `res` of (cluster, resource), with `len`
    /// bytes that must fit in one resource and in the file.
    fn resource_at(&self, fd: &Fd, res: &Resource, cluster: u64, resource: u64, len: u64, what: &str) -> Result<u64> {
        let off = res.meta.resource_offset(cluster, resource);
        let ok = off.filter(|o| len <= res.meta.resource_size && o.checked_add(len).is_some_and(|e| e <= res.fd.length));
        ok.ok_or_else(|| self.fd_corrupt(fd, what, fd.vol_offset, format!("c{cluster} r{resource} ({len} bytes) lies outside {} ({} bytes)", res.what, res.fd.length)))
    }

    /// A pointer block's entries, cached.
    fn pointer_block(&self, fd: &Fd, word: u64, depth: u32) -> Result<Arc<Vec<u64>>> {
        let what = "pointer block";
        if depth >= MAX_DEPTH {
            return Err(self.fd_corrupt(fd, what, fd.vol_offset, "pointer blocks nested too deep (metadata loop)"));
        }
        self.pbs.get_or_load(word, || {
            let addr = self.decode(word);
            let len = self.layout.pb_bytes();
            let mut buf = vec![0u8; len as usize];
            match addr {
                Addr::PointerBlock { cluster, resource } | Addr::PointerBlock2 { cluster, resource } | Addr::SubBlock { cluster, resource } => {
                    let res = self.resource_for(fd, addr, what)?;
                    let at = self.resource_at(fd, res, cluster, resource, len, what)?;
                    self.read_into(&res.fd, at, &mut buf, depth + 1)?;
                }
                Addr::FileBlock { block, tbz: false } => self.vol.read(what, block.saturating_mul(self.fs.file_block_size), &mut buf)?,
                Addr::SmallFileBlock { cluster, resource, tbz: 0 } if resource < self.sfb_per_cluster => {
                    let block = cluster.saturating_mul(self.sfb_per_cluster).saturating_add(resource);
                    self.vol.read(what, block.saturating_mul(self.fs.file_block_size), &mut buf)?
                }
                other => return Err(self.fd_corrupt(fd, what, fd.vol_offset, format!("{} is not a pointer block address", describe(other)))),
            }
            let entries = if self.layout.addr64 {
                buf.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
            } else {
                buf.chunks_exact(4).map(|c| u64::from(u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))).collect()
            };
            Ok(entries)
        })
    }

    /// Reads file content at `off` into `buf` (the caller clipped it to the
    /// file's length), coalescing contiguous pieces into one volume read.
    fn read_into(&self, fd: &Fd, off: u64, buf: &mut [u8], depth: u32) -> Result<()> {
        if fd.zla == descriptor::ZLA_RESIDENT {
            let start = usize::try_from(off).ok();
            let src = start.and_then(|s| fd.inline.get(s..s.checked_add(buf.len())?));
            let src = src.ok_or_else(|| self.fd_corrupt(fd, "resident data", fd.vol_offset, format!("{} bytes at {off} lie beyond the {}-byte inline data area", buf.len(), fd.inline.len())))?;
            buf.copy_from_slice(src);
            return Ok(());
        }
        let mut done = 0usize;
        while done < buf.len() {
            let want = (buf.len() - done) as u64;
            let p = self.map_piece(fd, off + done as u64, depth)?;
            let mut n = p.len.min(want);
            if n == 0 {
                return Err(self.fd_corrupt(fd, "block map", fd.vol_offset, "empty mapping"));
            }
            // Extend over following pieces that continue the same run.
            while n < want {
                let q = self.map_piece(fd, off + done as u64 + n, depth)?;
                let contiguous = match (p.phys, q.phys) {
                    (Some(a), Some(b)) => a + n == b,
                    (None, None) => true,
                    _ => false,
                };
                if !contiguous || q.len == 0 {
                    break;
                }
                n += q.len.min(want - n);
            }
            let chunk = &mut buf[done..done + n as usize];
            match p.phys {
                Some(phys) => self.vol.read("file data", phys, chunk).map_err(|e| match e {
                    Error::Truncated { .. } | Error::Io { .. } => self.fd_corrupt(fd, "file data", off + done as u64, format!("volume offset {phys}: {e}")),
                    e => e,
                })?,
                None => chunk.fill(0),
            }
            done += n as usize;
        }
        Ok(())
    }

    fn kind_of(&self, fd: &Fd) -> FileKind {
        match fd.kind {
            _ if fd.is_dir() => FileKind::Dir,
            descriptor::TYPE_SYMLINK => FileKind::Symlink,
            descriptor::TYPE_RDM => FileKind::BlockDevice,
            _ => FileKind::File,
        }
    }

    /// Whole content of a directory or symlink, bounded.
    fn read_all(&self, fd: &Fd, max: u64, what: &str) -> Result<Vec<u8>> {
        if fd.length > max {
            return Err(self.fd_corrupt(fd, what, fd.vol_offset, format!("{} bytes (more than {max})", fd.length)));
        }
        let mut buf = vec![0u8; fd.length as usize];
        self.read_into(fd, 0, &mut buf, 0)?;
        Ok(buf)
    }

    fn is_ancestor(&self, maybe: u32, of: u32) -> bool {
        let g = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        let mut cur = of;
        for _ in 0..4096 {
            if cur == maybe {
                return true;
            }
            match g.get(&cur) {
                Some((parent, _)) if *parent != cur => cur = *parent,
                _ => return false,
            }
        }
        true
    }
}

fn ts(secs: u32) -> Timestamp {
    Timestamp { secs: i64::from(secs), nanos: 0 }
}

impl Filesystem for Vmfs {
    fn info(&self) -> FsSummary {
        FsSummary {
            kind: "vmfs".into(),
            label: (!self.fs.label.is_empty()).then(|| self.fs.label.clone()),
            uuid: Some(self.fs.uuid.clone()),
            block_size: u32::try_from(self.fs.file_block_size).unwrap_or(u32::MAX),
            total_bytes: self.vol.size(),
            used_bytes: None,
        }
    }

    fn root(&self) -> FileId {
        FileId::from(ROOT_FD)
    }

    fn stat(&self, id: FileId) -> Result<Stat> {
        let fd = self.fd_of(id)?;
        let kind = self.kind_of(&fd);
        Ok(Stat {
            id,
            kind,
            size: fd.length,
            mode: fd.mode & 0o7777,
            uid: fd.uid,
            gid: fd.gid,
            nlink: fd.link_count,
            atime: ts(fd.atime),
            mtime: ts(fd.mtime),
            ctime: ts(fd.ctime),
            btime: None,
            rdev: 0,
        })
    }

    fn read_dir(&self, id: FileId) -> Result<Vec<DirEntry>> {
        let fd = self.fd_of(id)?;
        if !fd.is_dir() {
            return Err(self.fd_corrupt(&fd, "directory", fd.vol_offset, "not a directory"));
        }
        let raw = if self.fs.is_vmfs6() {
            let mut read = |off: u64, buf: &mut [u8]| -> std::result::Result<(), String> {
                if off.checked_add(buf.len() as u64).is_none_or(|e| e > fd.length) {
                    return Err(format!("{} bytes at {off} lie beyond the directory's {} bytes", buf.len(), fd.length));
                }
                self.read_into(&fd, off, buf, 0).map_err(|e| e.to_string())
            };
            if fd.length > MAX_DIR_BYTES {
                return Err(self.fd_corrupt(&fd, "directory", fd.vol_offset, format!("{} bytes (more than {MAX_DIR_BYTES})", fd.length)));
            }
            dir::parse_vmfs6(&mut read, fd.length, self.fs.md_alignment).map_err(|(off, r)| self.fd_corrupt(&fd, "VMFS 6 directory", off, r))?
        } else {
            dir::parse_vmfs5(&self.read_all(&fd, MAX_DIR_BYTES, "directory")?)
        };
        let dir_path = self.paths.lock().unwrap_or_else(|e| e.into_inner()).get(&fd.addr).map(|(_, p)| p.clone());
        let mut out = Vec::with_capacity(raw.len());
        for e in raw {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let shown = String::from_utf8_lossy(&e.name).into_owned();
            if e.name.is_empty() || e.name.contains(&b'/') || fd_parts(e.addr).is_none() {
                return Err(self.fd_corrupt(&fd, "directory entry", 0, format!("entry {shown:?} with address {:#x} is invalid", e.addr)));
            }
            let kind = match e.kind {
                descriptor::TYPE_DIRECTORY => FileKind::Dir,
                descriptor::TYPE_REGFILE => FileKind::File,
                descriptor::TYPE_SYMLINK => FileKind::Symlink,
                descriptor::TYPE_RDM => FileKind::BlockDevice,
                descriptor::TYPE_SYSFILE => self.kind_of(&*self.fd(e.addr)?),
                other => return Err(self.fd_corrupt(&fd, "directory entry", 0, format!("entry {shown:?} has unknown type {other}"))),
            };
            if kind == FileKind::Dir && self.is_ancestor(e.addr, fd.addr) {
                return Err(self.fd_corrupt(&fd, "directory entry", 0, format!("entry {shown:?} points back to an enclosing directory (directory loop)")));
            }
            if let Some(p) = &dir_path {
                let child = if p == "/" { format!("/{shown}") } else { format!("{p}/{shown}") };
                self.paths_insert(e.addr, fd.addr, child);
            }
            out.push(DirEntry { name: e.name, id: FileId::from(e.addr), kind });
        }
        Ok(out)
    }

    fn read(&self, id: FileId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let fd = self.fd_of(id)?;
        match self.kind_of(&fd) {
            FileKind::File => {}
            FileKind::BlockDevice => {
                return Err(self.fd_unsupported(&fd, "raw device mapping", fd.vol_offset, "an RDM file's data lives on the mapped LUN, not in the datastore"))
            }
            _ => return Err(self.fd_corrupt(&fd, "file", fd.vol_offset, "not a regular file")),
        }
        if offset >= fd.length {
            return Ok(0);
        }
        let n = (fd.length - offset).min(buf.len() as u64) as usize;
        self.read_into(&fd, offset, &mut buf[..n], 0)?;
        Ok(n)
    }

    fn readlink(&self, id: FileId) -> Result<Vec<u8>> {
        let fd = self.fd_of(id)?;
        if fd.kind != descriptor::TYPE_SYMLINK {
            return Err(self.fd_corrupt(&fd, "symlink", fd.vol_offset, "not a symlink"));
        }
        self.read_all(&fd, MAX_SYMLINK, "symlink target")
    }

    fn data_ranges(&self, id: FileId) -> Result<Vec<(u64, u64)>> {
        let fd = self.fd_of(id)?;
        if fd.length == 0 {
            return Ok(Vec::new());
        }
        if fd.zla == descriptor::ZLA_RESIDENT {
            return Ok(vec![(0, fd.length)]);
        }
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut off = 0u64;
        while off < fd.length {
            let p = self.map_piece(&fd, off, 0)?;
            let len = p.len.min(fd.length - off);
            if len == 0 {
                break;
            }
            if p.phys.is_some() {
                match out.last_mut() {
                    Some(last) if last.0 + last.1 == off => last.1 += len,
                    _ => out.push((off, len)),
                }
            }
            off += len;
        }
        Ok(out)
    }
}

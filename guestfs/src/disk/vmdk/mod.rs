//! VMDK: text descriptors composing extents (flat, sparse, zero, ESX
//! deltas), hosted sparse files with an embedded descriptor
//! (monolithicSparse, streamOptimized), and ESX delta extents opened on
//! their own.
//!
//! Every file opened here becomes one [`Layer`]; the parent named by
//! `parentFileNameHint` is opened by the chain, which checks its CID.
pub mod cowd;
pub mod descriptor;
pub mod extent;
pub mod flat;
pub mod hosted_sparse;
pub mod layer;
pub mod sesparse;
pub mod sparse_header;

use super::{Format, Layer, LinkId, ParentLink, MAX_VIRTUAL_SIZE};
use crate::block::ImageFile;
use crate::namespace::{resolve_relative, Namespace};
use crate::{Error, Result};
use cowd::CowdExtent;
use descriptor::{Access, Descriptor, ExtentKind, ExtentLine};
use extent::Extent;
use flat::{FlatExtent, NoAccessExtent, ZeroExtent};
use hosted_sparse::HostedSparseExtent;
use layer::VmdkLayer;
use sesparse::SeSparseExtent;
use sparse_header::SECTOR;
use std::path::Path;

const SESPARSE_MAGIC: u64 = 0xcafe_babe;

/// What kind of file this is, from its first bytes.
enum FileKind {
    HostedSparse,
    Cowd,
    SeSparse,
    Text,
}

fn kind_of(file: &ImageFile) -> Result<FileKind> {
    let mut head = [0u8; 8];
    let n = file.size().min(8) as usize;
    file.read("header", 0, head.get_mut(..n).unwrap_or(&mut []))?;
    Ok(match &head {
        [b'K', b'D', b'M', b'V', ..] => FileKind::HostedSparse,
        [b'C', b'O', b'W', b'D', ..] => FileKind::Cowd,
        h if u64::from_le_bytes(*h) == SESPARSE_MAGIC => FileKind::SeSparse,
        _ => FileKind::Text,
    })
}

/// Opens a VMDK file of any kind as one layer.
pub fn open(ns: &dyn Namespace, file: ImageFile) -> Result<Box<dyn Layer>> {
    let path = file.path.clone();
    // ESX delta extents (COWD, SEsparse) name no parent themselves: the
    // descriptor does. Opened alone, the parent is unknown, and reading
    // the delta as if it had none would give zeros where the parent has
    // data: the chain refuses such a link unless told to read it alone.
    let lone_delta = |variant: &str, e: Box<dyn Extent>| -> Result<Box<dyn Layer>> {
        let link = ParentLink {
            candidates: Vec::new(),
            hint: format!("unknown: a {variant} opened without its descriptor; open the .vmdk descriptor, or pass --no-parent to read this extent alone"),
            expect: None,
            format: None,
        };
        Ok(Box::new(VmdkLayer::new(path.clone(), variant.into(), vec![e], None, Some(link))?))
    };
    match kind_of(&file)? {
        FileKind::HostedSparse => open_hosted_sparse(file),
        FileKind::Cowd => lone_delta("vmfsSparse delta extent", Box::new(CowdExtent::open(file)?)),
        FileKind::SeSparse => lone_delta("seSparse delta extent", Box::new(SeSparseExtent::open(file)?)),
        FileKind::Text => open_descriptor_file(ns, file),
    }
}

/// A `KDMV` file: the file is the only extent; its embedded descriptor (if
/// any) gives the createType, CID and parent. A split disk's extent opened
/// on its own has no descriptor and reads as a disk of its own capacity.
fn open_hosted_sparse(file: ImageFile) -> Result<Box<dyn Layer>> {
    let path = file.path.clone();
    let (extent, text) = HostedSparseExtent::open(file.clone())?;
    let Some(text) = text else {
        return Ok(Box::new(VmdkLayer::new(path, "sparse extent".into(), vec![Box::new(extent)], None, None)?));
    };
    let at = extent.header().desc_offset * SECTOR;
    let d = descriptor::parse(&text).map_err(|e| file.corrupt("embedded descriptor", at, e.to_string()))?;
    check_create_type(&file, "embedded descriptor", at, &d)?;
    // The embedded descriptor of a monolithic file lists the file itself.
    // One that describes more than this file is the descriptor of a split
    // disk: reading this extent alone would be a different disk.
    let declared: Option<u64> = d.extents.iter().try_fold(0u64, |acc, e| acc.checked_add(e.sectors));
    if !d.extents.is_empty() && declared != Some(extent.header().capacity_sectors) {
        return Err(file.unsupported(
            "embedded descriptor",
            at,
            format!(
                "the embedded descriptor describes {} extents of {} sectors in all, but this file holds {} sectors; open the disk's own descriptor",
                d.extents.len(),
                declared.map_or("too many".into(), |s| s.to_string()),
                extent.header().capacity_sectors
            ),
        ));
    }
    let parent = parent_link(&file, &d)?;
    Ok(Box::new(VmdkLayer::new(path, d.create_type.clone(), vec![Box::new(extent)], d.cid, parent)?))
}

fn check_create_type(file: &ImageFile, structure: &str, at: u64, d: &Descriptor) -> Result<()> {
    if let Some(reason) = descriptor::refused_create_type(&d.create_type) {
        return Err(file.unsupported(structure, at, format!("createType {:?}: {reason}", d.create_type)));
    }
    if !descriptor::known_create_type(&d.create_type) {
        return Err(file.unsupported(structure, at, format!("unknown createType {:?}", d.create_type)));
    }
    Ok(())
}

/// The parent named by the descriptor. A `parentCID` without a hint is a
/// delta whose parent cannot be found: refused, since reading it alone
/// would give zeros where the parent has data.
fn parent_link(file: &ImageFile, d: &Descriptor) -> Result<Option<ParentLink>> {
    let Some(hint) = d.parent_hint.clone() else {
        return match d.parent_cid() {
            Some(cid) => Err(file.corrupt(
                "descriptor",
                0,
                format!("parentCID {cid:08x} says this is a delta disk, but no parentFileNameHint names its parent"),
            )),
            None => Ok(None),
        };
    };
    let mut candidates = vec![resolve_relative(&file.path, &hint)];
    // A hint written on another host (an absolute Windows or ESX path):
    // the parent usually sits beside the child. The CID check guards it.
    let normalized = hint.replace('\\', "/");
    if let Some(base) = normalized.rsplit('/').next().filter(|b| !b.is_empty() && *b != normalized) {
        let beside = resolve_relative(&file.path, base);
        if !candidates.contains(&beside) {
            candidates.push(beside);
        }
    }
    // parentCID ffffffff with a hint: qemu follows the hint, and so do we
    // (ignoring it would read zeros where the parent has data), without an
    // identity to check.
    Ok(Some(ParentLink { candidates, hint, expect: d.parent_cid().map(LinkId::VmdkCid), format: Some(Format::Vmdk) }))
}

/// A text descriptor file and the extents it names.
fn open_descriptor_file(ns: &dyn Namespace, file: ImageFile) -> Result<Box<dyn Layer>> {
    let size = file.size();
    if size > descriptor::MAX_DESCRIPTOR_BYTES as u64 {
        return Err(file.unsupported(
            "descriptor",
            0,
            format!("not a VMDK: no sparse or delta magic, and at {size} bytes too large for a text descriptor"),
        ));
    }
    let text = file.read_vec("descriptor", 0, size)?;
    let d = descriptor::parse(&text).map_err(|e| file.corrupt("descriptor", 0, e.to_string()))?;
    check_create_type(&file, "descriptor", 0, &d)?;
    if d.extents.is_empty() {
        return Err(file.corrupt("descriptor", 0, "no extent lines"));
    }
    let mut total = 0u64;
    let mut extents: Vec<Box<dyn Extent>> = Vec::with_capacity(d.extents.len());
    for line in &d.extents {
        let bytes = line.sectors.checked_mul(SECTOR);
        total = bytes.and_then(|b| total.checked_add(b)).filter(|&t| t <= MAX_VIRTUAL_SIZE).ok_or_else(|| {
            file.corrupt(&format!("extent on line {}", line.line), 0, format!("the extents add up to more than the {MAX_VIRTUAL_SIZE} bytes any disk can have"))
        })?;
        let e = open_extent(ns, &file.path, line, line.sectors * SECTOR)?;
        extents.push(if line.access == Access::NoAccess {
            Box::new(NoAccessExtent { inner: e, descriptor: file.path.clone(), line: line.line })
        } else {
            e
        });
    }
    let parent = parent_link(&file, &d)?;
    Ok(Box::new(VmdkLayer::new(file.path.clone(), d.create_type.clone(), extents, d.cid, parent)?))
}

fn open_extent(ns: &dyn Namespace, descriptor: &Path, line: &ExtentLine, size: u64) -> Result<Box<dyn Extent>> {
    let structure = || format!("extent on line {} ({:?})", line.line, line.file);
    let open_file = || -> Result<ImageFile> {
        let p = resolve_relative(descriptor, &line.file);
        Ok(ImageFile::new(ns.open(&p)?, p))
    };
    let check_size = |e: Box<dyn Extent>| -> Result<Box<dyn Extent>> {
        if e.size() != size {
            return Err(Error::corrupt(
                descriptor,
                structure(),
                0,
                format!("the descriptor gives {} sectors, the extent's own header {} sectors", line.sectors, e.size() / SECTOR),
            ));
        }
        Ok(e)
    };
    match line.kind {
        ExtentKind::RawDevice => Err(Error::unsupported(
            descriptor,
            structure(),
            0,
            format!("{} extent: raw device mapping, the data lives on another LUN, not in this file; back up the LUN itself", line.type_name),
        )),
        ExtentKind::Zero => Ok(Box::new(ZeroExtent { size })),
        ExtentKind::Flat => {
            let start = line.offset_sectors.checked_mul(SECTOR).ok_or_else(|| {
                Error::corrupt(descriptor, structure(), 0, format!("offset of {} sectors", line.offset_sectors))
            })?;
            Ok(Box::new(FlatExtent::open(open_file()?, start, size, descriptor, line.line)?))
        }
        ExtentKind::Sparse => {
            let f = open_file()?;
            match kind_of(&f)? {
                // An embedded descriptor of an extent is ignored: this
                // descriptor is the one that describes the disk.
                FileKind::HostedSparse => check_size(Box::new(HostedSparseExtent::open(f)?.0)),
                FileKind::Cowd => check_size(Box::new(CowdExtent::open(f)?)),
                _ => Err(Error::corrupt(
                    descriptor,
                    structure(),
                    0,
                    format!("{} extent file has neither the KDMV nor the COWD magic", line.type_name),
                )),
            }
        }
        ExtentKind::SeSparse => check_size(Box::new(SeSparseExtent::open(open_file()?)?)),
    }
}

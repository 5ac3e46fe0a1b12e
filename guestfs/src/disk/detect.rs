//! Format detection from content, never from the file name: a `.vmdk`
//! may be a descriptor, a sparse extent or a flat extent; a `.img` may be
//! anything.

use super::{qcow2, raw, vhd, vhdx, vmdk, Format, Layer};
use crate::block::ImageFile;
use crate::namespace::Namespace;
use crate::Result;
use std::path::Path;

/// Largest file taken as a VMDK text descriptor.
const MAX_DESCRIPTOR: u64 = 1 << 20;

/// Detects the format of `file` from its content.
pub fn detect(file: &ImageFile) -> Result<Format> {
    let size = file.size();
    let mut head = vec![0u8; size.min(4096) as usize];
    file.read("header", 0, &mut head)?;
    let magic4 = head.get(0..4).unwrap_or(&[]);
    match magic4 {
        b"KDMV" | b"COWD" => return Ok(Format::Vmdk),
        b"QFI\xfb" => return Ok(Format::Qcow2),
        _ => {}
    }
    if head.get(0..8) == Some(&0xcafe_babe_u64.to_le_bytes()[..]) {
        return Ok(Format::Vmdk); // SEsparse extent
    }
    if head.starts_with(b"vhdxfile") {
        return Ok(Format::Vhdx);
    }
    if head.starts_with(b"conectix") {
        return Ok(Format::Vhd); // dynamic: copy of the footer at offset 0
    }
    if size >= 512 {
        let mut footer = [0u8; 8];
        file.read("VHD footer", size - 512, &mut footer)?;
        if &footer == b"conectix" {
            return Ok(Format::Vhd); // fixed: footer only
        }
    }
    if size <= MAX_DESCRIPTOR && vmdk::descriptor::looks_like_descriptor(&head) {
        return Ok(Format::Vmdk);
    }
    Ok(Format::Raw)
}

/// Opens one layer; `format` is taken as given when the child recorded it
/// (qcow2 backing_fmt), otherwise detected.
pub fn open_layer(ns: &dyn Namespace, path: &Path, format: Option<Format>) -> Result<Box<dyn Layer>> {
    let file = ImageFile::new(ns.open(path)?, path);
    let format = match format {
        Some(f) => f,
        None => detect(&file)?,
    };
    tracing::debug!(path = %path.display(), format = format.name(), "opening layer");
    match format {
        Format::Raw => Ok(Box::new(raw::RawLayer::open(file))),
        Format::Vmdk => vmdk::open(ns, file),
        Format::Vhd => vhd::open(ns, file),
        Format::Vhdx => vhdx::open(ns, file),
        Format::Qcow2 => qcow2::open(ns, file),
    }
}

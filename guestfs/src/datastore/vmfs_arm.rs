//! The VMFS arm of datastore probing. The VMFS reader lives in its own
//! module; this file is the one place that calls it, so the datastore code
//! does not change when the reader arrives.

use crate::block::ReadAt;
use crate::fs::Filesystem;
use crate::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;

/// Offset of the VMFS logical-volume header (LVM info) on a VMFS volume.
const VMFS_LVM_HEADER: u64 = 0x10_0000;
/// Its magic (little-endian).
const VMFS_LVM_MAGIC: u32 = 0xc001_d00d;

/// Whether `src` (a partition or a whole LUN) starts a VMFS volume.
pub fn probe(src: &dyn ReadAt) -> bool {
    let mut m = [0u8; 4];
    src.size() >= VMFS_LVM_HEADER + 512 && src.read_exact_at(&mut m, VMFS_LVM_HEADER).is_ok() && u32::from_le_bytes(m) == VMFS_LVM_MAGIC
}

/// Opens a VMFS volume over its extents (head extent first).
pub fn open_vmfs(extents: Vec<Arc<dyn ReadAt>>, name: &str) -> Result<Box<dyn Filesystem>> {
    let _ = extents;
    Err(Error::unsupported(&PathBuf::from(name), "VMFS volume", VMFS_LVM_HEADER, "VMFS reader not available in this build"))
}

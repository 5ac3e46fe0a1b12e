//! The VMFS arm of datastore probing: the one place the datastore code
//! calls the VMFS reader ([`crate::vmfs`]).

use crate::block::ReadAt;
use crate::fs::Filesystem;
use crate::Result;
use std::sync::Arc;

/// Whether `src` (a partition or a whole LUN) starts a VMFS volume.
pub fn probe(src: &dyn ReadAt) -> bool {
    crate::vmfs::probe(src)
}

/// Opens a VMFS volume over its extents (head extent first).
pub fn open_vmfs(extents: Vec<Arc<dyn ReadAt>>, name: &str) -> Result<Box<dyn Filesystem>> {
    Ok(Box::new(crate::vmfs::Vmfs::open(extents, name)?))
}

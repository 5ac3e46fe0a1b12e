//! Opening block devices: read-only, and nowhere else in the product.

use anyhow::Result;
use guestfs::block::{FileSource, ReadAt};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;

pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).map(|m| m.file_type().is_block_device()).unwrap_or(false)
}

/// Opens a block device read-only.
pub fn open_read_only(path: &Path) -> Result<Arc<dyn ReadAt>> {
    Ok(Arc::new(FileSource::open(path)?))
}

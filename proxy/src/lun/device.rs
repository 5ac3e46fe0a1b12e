//! Opening block devices: read-only, and nowhere else in the product.
//!
//! Every open is `O_RDONLY | O_CLOEXEC`. Not `O_EXCL`: that fails while a
//! filesystem on the device is mounted (the appliance's own disk, or a
//! datastore an admin mounted by hand), and buys nothing for a reader.
//! A device opened for data reading ([`open_read_only`]) gets the kernel
//! read-only flag (BLKROSET) before anything reads it, and is refused when
//! the flag cannot be set. Discovery ([`probe`]) reads headers only and
//! leaves the flag as it is, so that `lun list` reports it truthfully and
//! never changes the appliance's own boot disk (docs/DECISIONS.md).

use super::Refused;
use crate::sys;
use anyhow::{Context, Result};
use guestfs::block::{FileSource, ReadAt};
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).map(|m| m.file_type().is_block_device()).unwrap_or(false)
}

/// The one place a device node is opened: read-only, close-on-exec.
fn open_rdonly(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening {} read-only", path.display()))
}

/// Opens a block device for reading data: sets the kernel read-only flag
/// first, checks it took, and refuses (exit 3) a device that stays
/// writable.
pub fn open_read_only(path: &Path) -> Result<Arc<dyn ReadAt>> {
    let file = open_rdonly(path)?;
    make_read_only(&file, path)?;
    let size = sys::size_bytes(&file).with_context(|| format!("{}: BLKGETSIZE64", path.display()))?;
    Ok(Arc::new(FileSource::from_file(file, size)))
}

/// Sets BLKROSET on an open device and proves it with BLKROGET.
fn make_read_only(file: &File, path: &Path) -> Result<()> {
    if let Err(e) = sys::set_read_only(file, true) {
        // Not fatal by itself: the flag may already be set (by the udev
        // rule) and BLKROSET needs CAP_SYS_ADMIN. BLKROGET decides.
        tracing::debug!("{}: BLKROSET: {e}", path.display());
    }
    match sys::is_read_only(file) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refused(format!(
            "{}: the kernel read-only flag could not be set (BLKROSET needs root / CAP_SYS_ADMIN); refusing to read a writable device: run `vbproxy guard apply --device {}` as root",
            path.display(),
            path.display()
        ))
        .into()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("{}: BLKROGET", path.display()))),
    }
}

/// Sets the read-only flag of a device and returns what BLKROGET reads
/// back (the guard's `apply`).
pub fn set_read_only(path: &Path) -> Result<bool> {
    let file = open_rdonly(path)?;
    sys::set_read_only(&file, true).with_context(|| format!("{}: BLKROSET", path.display()))?;
    sys::is_read_only(&file).with_context(|| format!("{}: BLKROGET", path.display()))
}

/// The kernel read-only flag of a device (BLKROGET).
pub fn read_only_flag(path: &Path) -> Result<bool> {
    let file = open_rdonly(path)?;
    sys::is_read_only(&file).with_context(|| format!("{}: BLKROGET", path.display()))
}

/// A device (or, under a test fixture root, an image file standing in for
/// one) opened for discovery: identity commands and header reads.
pub struct Probe {
    pub file: File,
    /// A real block device (SG_IO and the block ioctls apply).
    pub is_block: bool,
    pub size: u64,
}

impl Probe {
    /// The device's bytes, for content probing (headers only).
    pub fn source(&self) -> Result<Arc<dyn ReadAt>> {
        let file = self.file.try_clone().context("duplicating the device fd")?;
        Ok(Arc::new(FileSource::from_file(file, self.size)))
    }
}

/// Opens a device node read-only for discovery, without touching its
/// read-only flag.
pub fn probe(path: &Path) -> Result<Probe> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    let is_block = meta.file_type().is_block_device();
    if !is_block && !meta.file_type().is_file() {
        anyhow::bail!("{}: neither a block device nor an image file", path.display());
    }
    let file = open_rdonly(path)?;
    let size = if is_block { sys::size_bytes(&file).with_context(|| format!("{}: BLKGETSIZE64", path.display()))? } else { meta.len() };
    Ok(Probe { file, is_block, size })
}

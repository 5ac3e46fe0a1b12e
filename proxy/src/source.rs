//! Turning a SOURCE argument into an open disk.

use anyhow::Result;
use guestfs::disk::{open_disk, Disk, OpenOptions};
use guestfs::namespace::LocalFs;
use std::path::Path;

/// `--no-parent`: read delta extents given without their descriptor alone.
static NO_PARENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_no_parent(on: bool) {
    NO_PARENT.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Opens an image file (or block device) and its whole snapshot chain.
pub fn open(source: &Path) -> Result<Disk> {
    let opts = OpenOptions { allow_unknown_parent: NO_PARENT.load(std::sync::atomic::Ordering::Relaxed), ..Default::default() };
    Ok(open_disk(&LocalFs, source, &opts)?)
}

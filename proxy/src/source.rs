//! Turning a SOURCE argument into an open disk.

use anyhow::Result;
use guestfs::disk::{open_disk, Disk, OpenOptions};
use guestfs::namespace::LocalFs;
use std::path::Path;

/// Opens an image file (or block device) and its whole snapshot chain.
pub fn open(source: &Path) -> Result<Disk> {
    Ok(open_disk(&LocalFs, source, &OpenOptions::default())?)
}

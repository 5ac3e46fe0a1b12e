//! Turning a SOURCE argument into an open disk.
//!
//! A SOURCE is an image file, a block device, an `iscsi://` LUN, or
//! `STORE#/path` (a file inside the datastore that STORE holds). Each kind
//! is opened by its own module; this one only dispatches.

use anyhow::Result;
use guestfs::block::{FileSource, ReadAt};
use guestfs::disk::{open_disk, Disk, OpenOptions};
use guestfs::namespace::{LocalFs, SingleSource};
use std::path::Path;
use std::sync::Arc;

/// `--no-parent`: read delta extents given without their descriptor alone.
static NO_PARENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_no_parent(on: bool) {
    NO_PARENT.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub fn open_options() -> OpenOptions {
    OpenOptions { allow_unknown_parent: NO_PARENT.load(std::sync::atomic::Ordering::Relaxed), ..Default::default() }
}

/// Opens the bytes a SOURCE names, before any disk format is read: an image
/// file, a block device (through the LUN layer, the only module that opens
/// devices) or an iSCSI LUN (through the built-in read-only initiator).
pub fn open_block(spec: &str) -> Result<Arc<dyn ReadAt>> {
    if spec.starts_with("iscsi://") {
        return crate::iscsi_source::open(spec);
    }
    let path = Path::new(spec);
    if crate::lun::device::is_block_device(path) {
        return crate::lun::device::open_read_only(path);
    }
    Ok(Arc::new(FileSource::open(path)?))
}

/// Opens a SOURCE and its whole snapshot chain.
pub fn open(source: &Path) -> Result<Disk> {
    let opts = open_options();
    let spec = source.to_string_lossy();
    // A path that exists as a whole on the local filesystem is always a
    // plain file (DESIGN.md), even with '#' or "iscsi:" in its name.
    if !source.exists() {
        if spec.starts_with("iscsi://") {
            let src = open_block(&spec)?;
            return Ok(open_disk(&SingleSource { name: source.to_owned(), source: src }, source, &opts)?);
        }
    }
    if crate::lun::device::is_block_device(source) {
        let src = open_block(&spec)?;
        return Ok(open_disk(&SingleSource { name: source.to_owned(), source: src }, source, &opts)?);
    }
    Ok(open_disk(&LocalFs, source, &opts)?)
}

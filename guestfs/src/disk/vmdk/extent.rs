//! The interface every kind of VMDK extent implements. A descriptor maps
//! consecutive ranges of the virtual disk to extents; each extent answers
//! for its own range, with offsets relative to the start of that range.

use crate::disk::Allocation;
use crate::Result;
use std::path::PathBuf;

pub trait Extent: Send + Sync {
    /// Bytes of virtual disk this extent covers (from its own header where
    /// it has one; the descriptor's sector count must agree).
    fn size(&self) -> u64;

    /// As [`crate::disk::Layer::status`], relative to the extent's start.
    fn status(&self, offset: u64, max_len: u64) -> Result<(Allocation, u64)>;

    /// As [`crate::disk::Layer::read_data`], relative to the extent's start.
    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// The files this extent reads.
    fn files(&self) -> Vec<PathBuf>;
}

//! Raw images: the virtual disk is the file. Holes in a sparse file read as
//! zeros and are reported as such in the map.

use super::{Allocation, Format, Layer};
use crate::block::ImageFile;
use crate::Result;
use std::path::Path;

pub struct RawLayer {
    file: ImageFile,
}

impl RawLayer {
    pub fn open(file: ImageFile) -> RawLayer {
        RawLayer { file }
    }
}

/// Allocation of a byte range of a plain file, from the host's hole map.
/// Shared with flat VMDK extents.
pub fn file_status(file: &ImageFile, offset: u64, max_len: u64) -> (Allocation, u64) {
    match file.src.extent_at(offset) {
        Some((true, n)) => (Allocation::Data, n.clamp(1, max_len)),
        Some((false, n)) => (Allocation::Zero, n.clamp(1, max_len)),
        None => (Allocation::Data, max_len),
    }
}

impl Layer for RawLayer {
    fn format(&self) -> Format {
        Format::Raw
    }

    fn variant(&self) -> String {
        "raw".into()
    }

    fn path(&self) -> &Path {
        &self.file.path
    }

    fn virtual_size(&self) -> u64 {
        self.file.size()
    }

    fn status(&self, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        Ok(file_status(&self.file, offset, max_len))
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read("data", offset, buf)
    }
}

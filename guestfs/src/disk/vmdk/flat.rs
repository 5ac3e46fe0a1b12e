//! The simple extents: flat (`FLAT`, `VMFS`: the data itself, from an
//! offset of a file), `ZERO` (no file, reads as zeros) and the guard that
//! makes a `NOACCESS` extent an error to read.

use super::extent::Extent;
use crate::block::ImageFile;
use crate::disk::Allocation;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

pub struct FlatExtent {
    file: ImageFile,
    start: u64,
    size: u64,
}

impl FlatExtent {
    /// A flat extent of `size` bytes starting at byte `start` of `file`.
    /// The whole range must be in the file: qemu would read zeros past the
    /// end of a short file, which for a flat extent means data that was
    /// lost, so it is refused here, naming the extent.
    pub fn open(file: ImageFile, start: u64, size: u64, descriptor: &Path, line: usize) -> Result<FlatExtent> {
        let file_size = file.size();
        if start.checked_add(size).is_none_or(|end| end > file_size) {
            return Err(Error::corrupt(
                descriptor,
                format!("extent on line {line} ({})", file.path.display()),
                0,
                format!(
                    "the flat extent needs bytes {start} to {} of its file, which has only {file_size} bytes (truncated or wrong file)",
                    start.saturating_add(size)
                ),
            ));
        }
        Ok(FlatExtent { file, start, size })
    }
}

impl Extent for FlatExtent {
    fn size(&self) -> u64 {
        self.size
    }

    /// Everything is data, as qemu's vmdk driver reports it: holes in the
    /// host file are the host's business.
    fn status(&self, _offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        Ok((Allocation::Data, max_len))
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read("flat extent data", self.start + offset, buf)
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.file.path.clone()]
    }
}

pub struct ZeroExtent {
    pub size: u64,
}

impl Extent for ZeroExtent {
    fn size(&self) -> u64 {
        self.size
    }

    fn status(&self, _offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        Ok((Allocation::Zero, max_len))
    }

    fn read_data(&self, _offset: u64, buf: &mut [u8]) -> Result<()> {
        buf.fill(0);
        Ok(())
    }

    fn files(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// A `NOACCESS` extent: the descriptor forbids reading this range, so any
/// question about it is an error (returning zeros would invent data).
pub struct NoAccessExtent {
    pub inner: Box<dyn Extent>,
    pub descriptor: PathBuf,
    pub line: usize,
}

impl NoAccessExtent {
    fn refuse(&self, offset: u64) -> Error {
        Error::unsupported(
            &self.descriptor,
            format!("NOACCESS extent on line {}", self.line),
            0,
            format!("the descriptor forbids reading this extent (byte {offset} of the extent was requested)"),
        )
    }
}

impl Extent for NoAccessExtent {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn status(&self, offset: u64, _max_len: u64) -> Result<(Allocation, u64)> {
        Err(self.refuse(offset))
    }

    fn read_data(&self, offset: u64, _buf: &mut [u8]) -> Result<()> {
        Err(self.refuse(offset))
    }

    fn files(&self) -> Vec<PathBuf> {
        self.inner.files()
    }
}

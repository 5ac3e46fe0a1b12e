//! ESX vmfsSparse (COWD) delta extents. Placeholder until the reader lands: refuses every file.

use super::extent::Extent;
use crate::block::ImageFile;
use crate::disk::Allocation;
use crate::Result;
use std::path::PathBuf;

pub struct CowdExtent {
    file: ImageFile,
}

impl CowdExtent {
    /// Opens the extent; its size comes from its own header.
    pub fn open(file: ImageFile) -> Result<CowdExtent> {
        Err(file.unsupported("header", 0, "cowd reader not built yet"))
    }
}

impl Extent for CowdExtent {
    fn size(&self) -> u64 {
        0
    }
    fn status(&self, _offset: u64, _max_len: u64) -> Result<(Allocation, u64)> {
        Err(self.file.unsupported("header", 0, "cowd reader not built yet"))
    }
    fn read_data(&self, _offset: u64, _buf: &mut [u8]) -> Result<()> {
        Err(self.file.unsupported("header", 0, "cowd reader not built yet"))
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.file.path.clone()]
    }
}

//! Placeholder until the vhdx reader lands; refuses every file.
use super::Layer;
use crate::block::ImageFile;
use crate::namespace::Namespace;
use crate::Result;

pub fn open(_ns: &dyn Namespace, file: ImageFile) -> Result<Box<dyn Layer>> {
    Err(file.unsupported("header", 0, "vhdx reader not built yet"))
}

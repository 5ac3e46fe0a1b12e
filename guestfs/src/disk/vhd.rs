//! Placeholder until the vhd reader lands; refuses every file.
use super::Layer;
use crate::block::ImageFile;
use crate::namespace::Namespace;
use crate::Result;

pub fn open(_ns: &dyn Namespace, file: ImageFile) -> Result<Box<dyn Layer>> {
    Err(file.unsupported("header", 0, "vhd reader not built yet"))
}

//! Placeholder until the VMDK reader lands; refuses every file.
pub mod cowd;
pub mod descriptor;
pub mod extent;
pub mod sesparse;
use super::Layer;
use crate::block::ImageFile;
use crate::namespace::Namespace;
use crate::Result;

pub fn open(_ns: &dyn Namespace, file: ImageFile) -> Result<Box<dyn Layer>> {
    Err(file.unsupported("header", 0, "vmdk reader not built yet"))
}

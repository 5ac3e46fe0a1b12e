//! fat reader. Placeholder: detects nothing until the reader lands.
use super::Filesystem;
use crate::block::ReadAt;
use crate::Result;
use std::sync::Arc;

/// `Ok(None)` when `src` does not carry this filesystem.
pub fn probe(_src: Arc<dyn ReadAt>, _name: &str) -> Result<Option<Box<dyn Filesystem>>> {
    Ok(None)
}

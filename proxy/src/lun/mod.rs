//! The SAN LUN layer: discovery, identity, validation against the cluster
//! inventory, and the read-only guard. `device` is the only module in the
//! product that opens a block device.

pub mod device;
pub mod info;

use crate::inventory::Inventory;
use anyhow::{Context, Result};
use guestfs::block::ReadAt;
use std::sync::Arc;

/// A datastore of the inventory, opened for reading.
pub struct OpenDatastore {
    pub name: String,
    /// The LUNs holding it, head extent first (several for a spanned VMFS).
    pub extents: Vec<Arc<dyn ReadAt>>,
}

/// Opens every datastore of the inventory.
pub fn open_datastores(inv: &Inventory) -> Result<Vec<OpenDatastore>> {
    let mut out = Vec::new();
    for ds in &inv.datastores {
        let source = ds.source.as_deref().with_context(|| format!("datastore {}: no source given", ds.name))?;
        let src = crate::source::open_block(source).with_context(|| format!("datastore {}", ds.name))?;
        out.push(OpenDatastore { name: ds.name.clone(), extents: vec![src] });
    }
    Ok(out)
}

//! The cluster inventory: the hosts' view of the datastore LUNs (docs/INVENTORY.md).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, rename = "datastore")]
    pub datastores: Vec<DatastoreEntry>,
    #[serde(default, rename = "snapshot")]
    pub snapshots: Vec<SnapshotEntry>,
}

/// A datastore as the hosts see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreEntry {
    pub name: String,
    /// The LUN number the hosts use.
    pub lun: u64,
    /// The device identifier the hosts use (`naa.…`, `eui.…`, `t10.…`).
    pub device: String,
    /// What is on it: `vmfs`, `ntfs`, `ext4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The datastore (VMFS volume / filesystem) UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Where this proxy reaches the LUN when it is not a local SCSI disk
    /// found by its identifier: `iscsi://…` or a device path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// An array snapshot LUN of a datastore: its own identifier and LUN
/// number, the source datastore's signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotEntry {
    pub name: String,
    /// The datastore it is a snapshot of.
    pub of: String,
    pub lun: u64,
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Inventory {
    /// Reads TOML (`.toml`) or JSON (anything else starting with `{`).
    pub fn load(path: &Path) -> Result<Inventory> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading inventory {}", path.display()))?;
        let inv: Inventory = if text.trim_start().starts_with('{') {
            serde_json::from_str(&text).with_context(|| format!("inventory {} (JSON)", path.display()))?
        } else {
            toml::from_str(&text).with_context(|| format!("inventory {} (TOML)", path.display()))?
        };
        Ok(inv)
    }
}

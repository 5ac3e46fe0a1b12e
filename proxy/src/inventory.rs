//! The cluster inventory: the hosts' view of the datastore LUNs
//! (docs/INVENTORY.md, docs/inventory.example.toml). Validation
//! (`lun::validate`) compares it with what the LUNs themselves show.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, rename = "datastore", skip_serializing_if = "Vec::is_empty")]
    pub datastores: Vec<DatastoreEntry>,
    #[serde(default, rename = "snapshot", skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotEntry>,
}

/// A datastore as the hosts see it. `lun`/`device`/`source` describe its
/// head extent (the LUN holding the VMFS FS info); a spanned VMFS lists
/// its other extents in `extents`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreEntry {
    pub name: String,
    /// The LUN number the hosts use. Required for validation; an import
    /// that could not learn it leaves it out (and validation refuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lun: Option<u64>,
    /// The device identifier the hosts use (`naa.…`, `eui.…`, `t10.…`).
    pub device: String,
    /// What is on it: `vmfs`, `ntfs`, `ext4`, `lvm-pv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The datastore (VMFS volume / filesystem) UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The partition of the LUN holding the datastore (ESXi: usually 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// Where this proxy reaches the LUN when it is not a local SCSI disk
    /// found by its identifier: `iscsi://…`, a device path, or an image
    /// file (tests; no identity to check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Further extents of a spanned VMFS datastore, in extent order.
    #[serde(default, rename = "extent", skip_serializing_if = "Vec::is_empty")]
    pub extents: Vec<ExtentEntry>,
}

/// A non-head extent of a spanned datastore.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtentEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lun: Option<u64>,
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// An array snapshot LUN of a datastore: its own identifier and LUN
/// number, the source datastore's signature (a block-level copy carries
/// the same VMFS UUID and label).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotEntry {
    pub name: String,
    /// The datastore it is a snapshot of.
    pub of: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lun: Option<u64>,
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Inventory {
    /// Reads TOML, or JSON (a file whose first non-blank character is `{`).
    pub fn load(path: &Path) -> Result<Inventory> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading inventory {}", path.display()))?;
        let inv: Inventory = if text.trim_start().starts_with('{') {
            serde_json::from_str(&text).with_context(|| format!("inventory {} (JSON)", path.display()))?
        } else {
            toml::from_str(&text).with_context(|| format!("inventory {} (TOML)", path.display()))?
        };
        inv.check().with_context(|| format!("inventory {}", path.display()))?;
        Ok(inv)
    }

    /// Consistency of the file itself: unique names, snapshots of known
    /// datastores, no identifier used twice.
    pub fn check(&self) -> Result<()> {
        let mut names = std::collections::HashSet::new();
        let mut ids = std::collections::HashMap::new();
        let mut use_id = |id: &str, who: &str| -> Result<()> {
            if let Some(prev) = ids.insert(id.to_ascii_lowercase(), who.to_string()) {
                anyhow::bail!("device {id} is listed twice ({prev} and {who})");
            }
            Ok(())
        };
        for d in &self.datastores {
            anyhow::ensure!(names.insert(d.name.as_str()), "datastore name {} is used twice", d.name);
            use_id(&d.device, &format!("datastore {}", d.name))?;
            for e in &d.extents {
                use_id(&e.device, &format!("datastore {} extent", d.name))?;
            }
        }
        for s in &self.snapshots {
            anyhow::ensure!(names.insert(s.name.as_str()), "name {} is used twice", s.name);
            anyhow::ensure!(self.datastore(&s.of).is_some(), "snapshot {}: `of = \"{}\"` names no datastore of the inventory", s.name, s.of);
            use_id(&s.device, &format!("snapshot {}", s.name))?;
        }
        Ok(())
    }

    pub fn datastore(&self, name: &str) -> Option<&DatastoreEntry> {
        self.datastores.iter().find(|d| d.name == name)
    }

    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

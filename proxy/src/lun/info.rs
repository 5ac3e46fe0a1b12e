//! What vbproxy knows of one LUN, whichever way it was reached (a local
//! SCSI disk through sysfs and SG_IO, or a remote LUN through the iSCSI
//! initiator). Discovery fills it; validation and `lun list` read it.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct LunInfo {
    /// `/dev/sdb`, or the `iscsi://PORTAL/IQN/LUN` URL.
    pub device: String,
    /// Host:channel:target:lun of a local SCSI disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hctl: Option<String>,
    /// iSCSI target name, for remote LUNs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The LUN number.
    pub lun: u64,
    pub vendor: String,
    pub model: String,
    pub revision: String,
    /// VPD page 0x80 unit serial number.
    pub serial: Option<String>,
    /// VPD page 0x83 designators.
    pub designators: Vec<DesignatorInfo>,
    /// The identifier inventories use (`naa.…` preferred; see scsi::preferred_id).
    pub id: Option<String>,
    pub size: u64,
    pub logical_block_size: u32,
    pub physical_block_size: u32,
    /// The kernel read-only flag; `None` for a LUN that is not a block
    /// device (iSCSI through vbproxy's own initiator, read-only by construction).
    pub read_only: Option<bool>,
    /// What is on it.
    pub content: Content,
}

#[derive(Debug, Clone, Serialize)]
pub struct DesignatorInfo {
    /// `naa`, `eui64`, `t10`, `scsi-name`, ... (scsi::DesignatorType::name).
    #[serde(rename = "type")]
    pub kind: String,
    /// `lun`, `target-port`, `target`.
    pub association: String,
    /// `naa.6001405…`, `eui.…`, `t10.…`, or the name string.
    pub value: String,
}

/// The signature found on a LUN.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Content {
    /// `vmfs`, `ntfs`, `ext4`, `lvm-pv`, `gpt`, `mbr`, `empty`, `unknown`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// For a partitioned LUN, what the datastore partition holds (`vmfs`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// For a partitioned LUN, the number of the datastore partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_number: Option<u32>,
    /// VMFS: the LVM volume (extent) UUID of the LVM header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_uuid: Option<String>,
    /// VMFS: the FS info version byte (3, 5, 6), offset 8 of the FS info.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why the content could not be fully read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Content {
    /// What holds the datastore: the datastore partition's content on a
    /// partitioned LUN, else the LUN's own.
    pub fn effective_kind(&self) -> &str {
        self.partition.as_deref().unwrap_or(&self.kind)
    }
}

impl LunInfo {
    /// Whether `id` (an inventory's `naa.…`/`eui.…`/`t10.…`/serial) names
    /// this LUN: its preferred id, any logical-unit designator, or its
    /// unit serial number. Case-insensitive (ESXi prints lower-case hex).
    pub fn has_id(&self, id: &str) -> bool {
        let id = id.trim();
        let eq = |s: &str| s.eq_ignore_ascii_case(id);
        self.id.as_deref().is_some_and(eq)
            || self.designators.iter().any(|d| d.association == "lun" && eq(&d.value))
            || self.serial.as_deref().is_some_and(|s| eq(s) || id.strip_prefix("serial.").is_some_and(|x| x == s))
    }
}

impl DesignatorInfo {
    pub fn from_scsi(d: &scsi::Designator) -> DesignatorInfo {
        DesignatorInfo { kind: d.kind.name().to_string(), association: d.association.name().to_string(), value: d.id() }
    }
}

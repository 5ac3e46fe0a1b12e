//! The SAN LUN layer: discovery, identity, validation against the cluster
//! inventory, and the read-only guard. `device` is the only module in the
//! product that opens a block device.

pub mod cli;
pub mod content;
pub mod device;
pub mod esxcli;
pub mod guard;
pub mod identity;
pub mod info;
pub mod sysfs;
pub mod validate;

use crate::inventory::Inventory;
use anyhow::{Context, Result};
use guestfs::block::ReadAt;
use info::{Content, DesignatorInfo, LunInfo};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A refusal for safety (exit code 3): a LUN whose identity or content
/// does not match the inventory, a writable LUN, an undeclared snapshot.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Every local SCSI disk, with its identity and content.
pub fn discover_local() -> Result<Vec<LunInfo>> {
    Ok(sysfs::scan()?.iter().map(describe).collect())
}

/// One SCSI disk: SG_IO identity where the node is a real SCSI device,
/// sysfs's cached VPD pages otherwise (and as a cross-check).
fn describe(d: &sysfs::SysDisk) -> LunInfo {
    let path = d.dev_path();
    let mut info = LunInfo {
        device: path.display().to_string(),
        hctl: Some(d.hctl.clone()),
        target: None,
        lun: d.lun,
        vendor: d.vendor.clone(),
        model: d.model.clone(),
        revision: d.revision.clone(),
        serial: None,
        designators: Vec::new(),
        id: None,
        size: d.size,
        logical_block_size: d.logical_block_size,
        physical_block_size: d.physical_block_size,
        read_only: Some(d.read_only),
        content: Content::default(),
    };
    let sys_designators = d.vpd_pg83.as_deref().and_then(|b| match scsi::parse_device_identification(b) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("{}: sysfs vpd_pg83: {e}", d.name);
            None
        }
    });
    let sys_serial = d.vpd_pg80.as_deref().and_then(|b| scsi::parse_unit_serial(b).ok()).filter(|s| !s.is_empty());
    let probe = match device::probe(&path) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!("{}: {e:#}", d.name);
            info.content = Content { kind: "unknown".into(), error: Some(format!("{e:#}")), ..Default::default() };
            None
        }
    };
    let scsi_id = probe.as_ref().filter(|p| p.is_block).and_then(|p| match identity::query(&p.file) {
        Ok(i) => Some(i),
        Err(e) => {
            tracing::debug!("{}: SG_IO identity not available ({e:#}); using sysfs", path.display());
            None
        }
    });
    let designators = match (&scsi_id, sys_designators) {
        (Some(id), sys) => {
            if let Some(sys) = sys {
                if scsi::preferred_id(&sys) != scsi::preferred_id(&id.designators) {
                    tracing::warn!(
                        "{}: the device reports {:?} through SG_IO but sysfs has {:?}; using the device's",
                        path.display(),
                        scsi::preferred_id(&id.designators),
                        scsi::preferred_id(&sys)
                    );
                }
            }
            info.vendor = id.inquiry.vendor.clone();
            info.model = id.inquiry.model.clone();
            info.revision = id.inquiry.revision.clone();
            info.serial = id.serial.clone().or(sys_serial);
            if let Some(c) = id.capacity {
                info.logical_block_size = c.block_size;
                info.physical_block_size = u32::try_from(c.physical_block_size()).unwrap_or(c.block_size);
                info.size = c.size_bytes();
            }
            id.designators.clone()
        }
        (None, sys) => {
            info.serial = sys_serial;
            sys.unwrap_or_default()
        }
    };
    info.id = scsi::preferred_id(&designators).or_else(|| info.serial.clone());
    info.designators = designators.iter().map(DesignatorInfo::from_scsi).collect();
    if let Some(p) = probe {
        if p.is_block {
            // The flag the kernel enforces, read fresh; sysfs `ro` must agree.
            if let Ok(ro) = crate::sys::is_read_only(&p.file) {
                info.read_only = Some(ro || d.read_only);
            }
            if let Ok(size) = crate::sys::size_bytes(&p.file) {
                info.size = size;
            }
            if let (Ok(l), Ok(ph)) = (crate::sys::logical_block_size(&p.file), crate::sys::physical_block_size(&p.file)) {
                info.logical_block_size = l;
                info.physical_block_size = ph;
            }
        }
        match p.source() {
            Ok(src) => info.content = content::probe(src, &info.device),
            Err(e) => info.content = Content { kind: "unknown".into(), error: Some(format!("{e:#}")), ..Default::default() },
        }
    }
    info
}

/// `iscsi://PORTAL[:PORT]/IQN/LUN` split into portal, target and LUN.
pub fn parse_iscsi_url(url: &str) -> Option<(String, String, u64)> {
    let rest = url.strip_prefix("iscsi://")?;
    let rest = rest.split('#').next()?;
    let (portal, rest) = rest.split_once('/')?;
    let (iqn, lun) = rest.rsplit_once('/')?;
    Some((portal.to_string(), iqn.to_string(), lun.parse().ok()?))
}

/// How an inventory entry's LUN is reached.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// A LUN with an identity to check.
    Lun(Box<LunInfo>),
    /// A plain image file or a non-SCSI block device (tests, NFS-like
    /// stores): no identity to check.
    Unverified(PathBuf),
    /// Not found; the reason.
    Missing(String),
}

/// The LUNs validation looks at: local disks, plus the remote LUNs of the
/// portals `iscsi://` sources name (listed once per portal, every target).
pub struct LunPool {
    pub local: Vec<LunInfo>,
    remote: std::collections::HashMap<String, Result<Vec<LunInfo>, String>>,
}

impl LunPool {
    pub fn discover() -> Result<LunPool> {
        Ok(LunPool { local: discover_local()?, remote: Default::default() })
    }

    /// Every LUN seen so far (local and remote).
    pub fn all(&self) -> Vec<&LunInfo> {
        self.local.iter().chain(self.remote.values().filter_map(|r| r.as_ref().ok()).flatten()).collect()
    }

    /// Reads what is on every listed remote LUN not probed yet. A portal
    /// listing holds identities only, so without this a copy of a datastore
    /// on a portal the inventory uses (an array snapshot no entry names)
    /// would go unseen by the undeclared-snapshot check.
    pub fn probe_remote_contents(&mut self) {
        for luns in self.remote.values_mut().filter_map(|r| r.as_mut().ok()) {
            for l in luns.iter_mut().filter(|l| l.content.kind == "unknown" && l.content.error.is_none()) {
                l.content = match crate::iscsi_source::open(&l.device) {
                    Ok(src) => content::probe(src, &l.device),
                    Err(e) => Content { kind: "unknown".into(), error: Some(format!("{e:#}")), ..Default::default() },
                };
            }
        }
    }

    /// Finds the LUN an inventory entry means: by `source` when given,
    /// else by its identifier among the local disks.
    pub fn resolve(&mut self, id: &str, source: Option<&str>) -> Resolved {
        let Some(source) = source else {
            return match self.local.iter().find(|l| l.has_id(id)) {
                Some(l) => Resolved::Lun(Box::new(l.clone())),
                None => Resolved::Missing(format!("no local SCSI disk has identifier {id}")),
            };
        };
        if source.starts_with("iscsi://") {
            let Some((portal, iqn, lun)) = parse_iscsi_url(source) else {
                return Resolved::Missing(format!("{source}: not an iscsi://PORTAL[:PORT]/IQN/LUN URL"));
            };
            // The listing covers every target of the portal: one per portal,
            // so a LUN is never listed (and checked) twice.
            let listed = self
                .remote
                .entry(portal.clone())
                .or_insert_with(|| crate::iscsi_source::list_luns(&portal, crate::iscsi_source::auth_from(None, None).ok().flatten().as_ref()).map_err(|e| format!("{e:#}")));
            return match listed {
                Ok(luns) => match luns.iter_mut().find(|l| l.lun == lun && !matches!(l.target.as_deref(), Some(t) if t != iqn)) {
                    Some(l) => {
                        // The portal listing reads identities only; what is
                        // on the LUN is probed once it is the one asked for.
                        if l.content.kind == "unknown" && l.content.error.is_none() {
                            l.content = match crate::iscsi_source::open(source) {
                                Ok(src) => content::probe(src, &l.device),
                                Err(e) => Content { kind: "unknown".into(), error: Some(format!("{e:#}")), ..Default::default() },
                            };
                        }
                        Resolved::Lun(Box::new(l.clone()))
                    }
                    None => Resolved::Missing(format!("{source}: the target presents no LUN {lun}")),
                },
                Err(e) => Resolved::Missing(e.clone()),
            };
        }
        let path = Path::new(source);
        if device::is_block_device(path) {
            let name = sysfs::kernel_name(path);
            if let Some(l) = self.local.iter().find(|l| Path::new(&l.device).file_name().and_then(|n| n.to_str()) == name.as_deref()) {
                return Resolved::Lun(Box::new(l.clone()));
            }
            return Resolved::Unverified(path.to_owned());
        }
        if path.is_file() {
            // Under a sysfs fixture, image files stand in for device nodes.
            if let Some(l) = self.local.iter().find(|l| Path::new(&l.device) == path) {
                return Resolved::Lun(Box::new(l.clone()));
            }
            return Resolved::Unverified(path.to_owned());
        }
        Resolved::Missing(format!("{source}: no such device or file"))
    }
}

/// A datastore of the inventory, opened for reading.
#[allow(dead_code)] // used by the VM/backup jobs
pub struct OpenDatastore {
    pub name: String,
    /// For an array snapshot LUN: the datastore it is a snapshot of.
    pub snapshot_of: Option<String>,
    /// The LUNs holding it, head extent first (several for a spanned VMFS).
    pub extents: Vec<Arc<dyn ReadAt>>,
}

/// Opens one validated LUN read-only.
#[allow(dead_code)] // used by the VM/backup jobs
fn open_resolved(r: &Resolved, source: Option<&str>) -> Result<Arc<dyn ReadAt>> {
    match r {
        Resolved::Lun(l) if l.device.starts_with("iscsi://") => crate::iscsi_source::open(&l.device),
        Resolved::Lun(l) => match source {
            Some(s) if s.starts_with("iscsi://") => crate::iscsi_source::open(s),
            _ => {
                let p = Path::new(&l.device);
                if device::is_block_device(p) {
                    device::open_read_only(p)
                } else {
                    crate::source::open_block(&l.device)
                }
            }
        },
        Resolved::Unverified(p) => {
            tracing::warn!("{}: no SCSI identity to verify (image file or non-SCSI device); opened on the inventory's word", p.display());
            crate::source::open_block(&p.to_string_lossy())
        }
        Resolved::Missing(why) => anyhow::bail!("{why}"),
    }
}

/// Opens every datastore (and snapshot) of the inventory whose LUNs pass
/// validation. A datastore whose LUN is absent is skipped with a warning
/// (it is not zoned to this proxy); any other refusal (identity or
/// signature mismatch, writable LUN, undeclared snapshot) refuses the
/// whole call with exit 3, since it means the inventory and the SAN
/// disagree about what the proxy would read.
#[allow(dead_code)] // used by the VM/backup jobs
pub fn open_datastores(inv: &Inventory) -> Result<Vec<OpenDatastore>> {
    let mut pool = LunPool::discover()?;
    let report = validate::validate(inv, &mut pool);
    let refused: Vec<&validate::Check> = report.checks.iter().filter(|c| c.status == validate::Status::Refused && !c.is_missing()).collect();
    if !refused.is_empty() {
        let text: Vec<String> = refused.iter().map(|c| c.describe()).collect();
        return Err(Refused(format!("LUN validation refused:\n{}", text.join("\n"))).into());
    }
    let mut out = Vec::new();
    for ds in &inv.datastores {
        let parts = report.checks.iter().filter(|c| c.datastore == ds.name && c.role != validate::Role::Snapshot).collect::<Vec<_>>();
        if parts.iter().any(|c| c.is_missing()) {
            tracing::warn!("datastore {}: a LUN is missing; skipped", ds.name);
            continue;
        }
        let mut extents = Vec::new();
        let mut entries = vec![(ds.device.as_str(), ds.source.as_deref())];
        entries.extend(ds.extents.iter().map(|e| (e.device.as_str(), e.source.as_deref())));
        for (id, source) in entries {
            let r = pool.resolve(id, source);
            extents.push(open_resolved(&r, source).with_context(|| format!("datastore {}: LUN {id}", ds.name))?);
        }
        out.push(OpenDatastore { name: ds.name.clone(), snapshot_of: None, extents });
    }
    for s in &inv.snapshots {
        if report.checks.iter().any(|c| c.name == s.name && c.is_missing()) {
            tracing::warn!("snapshot {}: LUN {} is missing; skipped", s.name, s.device);
            continue;
        }
        let r = pool.resolve(&s.device, s.source.as_deref());
        let src = open_resolved(&r, s.source.as_deref()).with_context(|| format!("snapshot {}: LUN {}", s.name, s.device))?;
        out.push(OpenDatastore { name: s.name.clone(), snapshot_of: Some(s.of.clone()), extents: vec![src] });
    }
    Ok(out)
}

/// Refuses (exit 3) while any LUN of the inventory that this proxy can
/// reach as a block device is writable. Jobs call it before they start.
#[allow(dead_code)] // used by the VM/backup jobs
pub fn require_read_only(inv: &Inventory) -> Result<()> {
    let mut pool = LunPool::discover()?;
    let writable = guard::writable_inventory_luns(inv, &mut pool)?;
    if writable.is_empty() {
        return Ok(());
    }
    Err(Refused(format!(
        "refusing to start: inventory LUN(s) writable: {} (run `vbproxy guard apply --inventory FILE`)",
        writable.join(", ")
    ))
    .into())
}

#[cfg(test)]
mod tests {
    //! `open_datastores` and `require_read_only` over a one-disk sysfs
    //! fixture (the e2e tests cover `lun validate` / `guard` themselves).
    use super::*;
    use crate::inventory::DatastoreEntry;
    use std::os::unix::fs::FileExt;

    fn entry(uuid: &str) -> DatastoreEntry {
        DatastoreEntry {
            name: "ds".into(),
            lun: Some(4),
            device: "naa.60014050000000000000000000000042".into(),
            kind: Some("vmfs".into()),
            uuid: Some(uuid.into()),
            label: None,
            partition: None,
            source: None,
            extents: Vec::new(),
        }
    }

    #[test]
    fn open_datastores_validates_first() {
        let root = std::env::temp_dir().join(format!("vbproxy-lun-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let disk = root.join("sys/block/sdq");
        std::fs::create_dir_all(disk.join("device/scsi_device/1:0:0:4")).unwrap();
        std::fs::write(disk.join("device/type"), "0\n").unwrap();
        std::fs::write(disk.join("size"), "40960\n").unwrap();
        std::fs::write(disk.join("ro"), "1\n").unwrap();
        let naa = [0x60u8, 0x01, 0x40, 0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42];
        let mut page = vec![0, 0x83, 0, 20, 0x01, 0x03, 0, 16];
        page.extend_from_slice(&naa);
        std::fs::write(disk.join("device/vpd_pg83"), page).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        let img = std::fs::File::create(root.join("dev/sdq")).unwrap();
        img.set_len(20 << 20).unwrap();
        img.write_all_at(&0xc001_d00du32.to_le_bytes(), 1 << 20).unwrap();
        let mut fs = vec![0u8; 32];
        fs[0..4].copy_from_slice(&0x2fab_f15eu32.to_le_bytes());
        fs[9..25].copy_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 4, 5, 6, 7, 8, 9]);
        img.write_all_at(&fs, 0x120_0000).unwrap();
        std::env::set_var("VBPROXY_SYSFS_ROOT", root.join("sys"));
        std::env::set_var("VBPROXY_DEV_ROOT", root.join("dev"));
        let uuid = "00000001-00000002-0003-040506070809";

        let mut inv = Inventory { datastores: vec![entry(uuid)], ..Default::default() };
        let open = open_datastores(&inv).unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].extents[0].size(), 20 << 20);
        require_read_only(&inv).unwrap();

        // A signature mismatch refuses the whole call (exit 3).
        inv.datastores[0].uuid = Some("00000009-00000002-0003-040506070809".into());
        let e = open_datastores(&inv).err().unwrap();
        assert!(e.downcast_ref::<Refused>().is_some(), "{e:#}");
        assert!(format!("{e:#}").contains("uuid: inventory says 00000009"), "{e:#}");

        // A missing LUN is skipped...
        inv.datastores[0] = entry("0000000a-00000002-0003-040506070809");
        inv.datastores[0].device = "naa.6001405000000000000000000000ffff".into();
        assert!(open_datastores(&inv).unwrap().is_empty());
        // ...but one whose VMFS UUID is carried by another LUN: that LUN is
        // an undeclared snapshot or copy, refused.
        inv.datastores[0].uuid = Some(uuid.into());
        let e = open_datastores(&inv).err().unwrap();
        assert!(format!("{e:#}").contains("undeclared-snapshot"), "{e:#}");

        // A writable LUN: refused by both.
        inv.datastores[0] = entry(uuid);
        std::fs::write(disk.join("ro"), "0\n").unwrap();
        assert!(open_datastores(&inv).err().unwrap().downcast_ref::<Refused>().is_some());
        assert!(require_read_only(&inv).err().unwrap().downcast_ref::<Refused>().is_some());
        let _ = std::fs::remove_dir_all(&root);
    }
}

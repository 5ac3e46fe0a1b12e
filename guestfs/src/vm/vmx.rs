//! The `.vmx`: a VM's devices. This module finds its disks per controller
//! slot and says which ones a backup takes and why the others are left
//! out; it never opens a file.

use super::dict::{self, Dict, DictError};

/// Controller kinds that hold disks, in the order disks are listed.
pub const CONTROLLERS: [&str; 4] = ["scsi", "sata", "nvme", "ide"];

/// Highest bus or unit number accepted from a key (real ones are < 64):
/// bounds the names and sorts of hostile input.
const MAX_SLOT_NUMBER: u32 = 1023;

/// What a device slot holds, as far as the `.vmx` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskUse {
    /// A virtual disk to back up (its file is a descriptor or an image).
    Backup,
    /// Not backed up, with the reason (independent, raw device mapping,
    /// no file).
    Skip(String),
    /// A CD/DVD drive: not a disk, ignored.
    CdRom,
}

/// One disk device of the `.vmx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmxDisk {
    /// `scsi`, `sata`, `nvme`, `ide`.
    pub controller: String,
    pub bus: u32,
    pub unit: u32,
    /// `fileName` as written (relative to the `.vmx` directory, or an
    /// absolute `/vmfs/volumes/<datastore>/...` path); empty when absent.
    pub file_name: String,
    pub device_type: Option<String>,
    pub mode: Option<String>,
    pub use_: DiskUse,
}

impl VmxDisk {
    /// The guest-tree name (DESIGN.md): `scsi0-0`.
    pub fn slot(&self) -> String {
        format!("{}{}-{}", self.controller, self.bus, self.unit)
    }

    /// The `.vmx`/`.vmsd` node name: `scsi0:0`.
    pub fn node(&self) -> String {
        format!("{}{}:{}", self.controller, self.bus, self.unit)
    }
}

/// A parsed `.vmx`.
#[derive(Debug, Clone)]
pub struct Vmx {
    pub dict: Dict,
}

pub const RDM_REASON: &str = "not backed up: raw device mapping (the LUN itself must be backed up)";

impl Vmx {
    pub fn parse(bytes: &[u8]) -> Result<Vmx, DictError> {
        let dict = dict::parse(bytes, ".vmx")?;
        // A file with none of the keys every VM has is not a .vmx (a
        // descriptor or a random text file given by mistake).
        let known = ["config.version", "virtualhw.version", "displayname", "guestos"];
        if !known.iter().any(|k| dict.get(k).is_some()) {
            return Err(DictError { line: 0, reason: "no config.version, virtualHW.version, displayName or guestOS: not a .vmx file".into() });
        }
        Ok(Vmx { dict })
    }

    pub fn display_name(&self) -> Option<&str> {
        self.dict.get("displayName")
    }

    pub fn guest_os(&self) -> Option<&str> {
        self.dict.get("guestOS")
    }

    pub fn nvram(&self) -> Option<&str> {
        self.dict.get("nvram")
    }

    pub fn uuid_bios(&self) -> Option<&str> {
        self.dict.get("uuid.bios")
    }

    pub fn hardware_version(&self) -> Option<&str> {
        self.dict.get("virtualHW.version")
    }

    /// Every present disk-like device (disks and CD-ROMs), sorted by
    /// controller kind ([`CONTROLLERS`] order), bus, unit.
    pub fn disks(&self) -> Vec<VmxDisk> {
        let mut slots: Vec<(usize, u32, u32)> = Vec::new();
        for (key, _) in self.dict.iter() {
            if let Some(slot) = parse_slot_key(key) {
                if !slots.contains(&slot) {
                    slots.push(slot);
                }
            }
        }
        slots.sort_unstable();
        let mut out = Vec::new();
        for (ci, bus, unit) in slots {
            let Some(controller) = CONTROLLERS.get(ci) else { continue };
            let prefix = format!("{controller}{bus}:{unit}");
            if self.dict.get_bool(&format!("{prefix}.present")) != Some(true) {
                continue;
            }
            if self.dict.get_bool(&format!("{controller}{bus}.present")) == Some(false) {
                continue;
            }
            let file_name = self.dict.get(&format!("{prefix}.fileName")).unwrap_or("").to_owned();
            let device_type = self.dict.get(&format!("{prefix}.deviceType")).map(str::to_owned);
            let mode = self.dict.get(&format!("{prefix}.mode")).map(str::to_owned);
            let use_ = classify(&file_name, device_type.as_deref(), mode.as_deref());
            out.push(VmxDisk { controller: (*controller).to_owned(), bus, unit, file_name, device_type, mode, use_ });
        }
        out
    }
}

/// `scsi0:1.anything` → (controller index, bus, unit).
fn parse_slot_key(key: &str) -> Option<(usize, u32, u32)> {
    let (ci, rest) = CONTROLLERS.iter().enumerate().find_map(|(i, c)| key.strip_prefix(c).map(|r| (i, r)))?;
    let (slot, _field) = rest.split_once('.')?;
    let (bus, unit) = slot.split_once(':')?;
    let num = |s: &str| -> Option<u32> {
        if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().filter(|&n| n <= MAX_SLOT_NUMBER)
    };
    Some((ci, num(bus)?, num(unit)?))
}

fn classify(file_name: &str, device_type: Option<&str>, mode: Option<&str>) -> DiskUse {
    let dt = device_type.map(str::to_ascii_lowercase).unwrap_or_default();
    if dt.contains("cdrom") || (dt.is_empty() && file_name.to_ascii_lowercase().ends_with(".iso")) {
        return DiskUse::CdRom;
    }
    match dt.as_str() {
        "rawdisk" => return DiskUse::Skip(RDM_REASON.into()),
        "scsi-passthru" => return DiskUse::Skip("not backed up: SCSI passthrough device, not a virtual disk".into()),
        "" | "disk" | "scsi-harddisk" | "ata-harddisk" | "plaindisk" => {}
        other => return DiskUse::Skip(format!("not backed up: device type {other:?} is not a virtual disk")),
    }
    if let Some(m) = mode {
        if m.to_ascii_lowercase().starts_with("independent") {
            return DiskUse::Skip(format!("not backed up: independent disk (mode {m}) is excluded from snapshots"));
        }
    }
    if file_name.is_empty() {
        return DiskUse::Skip("not backed up: no fileName".into());
    }
    DiskUse::Backup
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESXI: &str = r#".encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "web01"
guestOS = "windows2019srv-64"
nvram = "web01.nvram"
uuid.bios = "42 1a 2b 3c 4d 5e 6f 70-81 92 a3 b4 c5 d6 e7 f8"
scsi0.present = "TRUE"
scsi0.virtualDev = "lsisas1068"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "web01-000001.vmdk"
scsi0:0.deviceType = "scsi-hardDisk"
scsi0:1.present = "TRUE"
scsi0:1.fileName = "/vmfs/volumes/5f1c2a3b-11223344-5566-001122334455/web01/rdm.vmdk"
scsi0:1.deviceType = "rawDisk"
scsi0:2.present = "TRUE"
scsi0:2.fileName = "scratch.vmdk"
scsi0:2.mode = "independent-persistent"
scsi0:3.present = "FALSE"
scsi0:3.fileName = "old.vmdk"
sata0.present = "TRUE"
sata0:0.present = "TRUE"
sata0:0.fileName = "web01_1.vmdk"
sata0:1.present = "TRUE"
sata0:1.deviceType = "cdrom-image"
sata0:1.fileName = "/vmfs/volumes/iso/win.iso"
ide1:0.present = "TRUE"
ide1:0.fileName = "web01_2.vmdk"
nvme0.present = "TRUE"
nvme0:10.present = "TRUE"
nvme0:10.fileName = "web01_3.vmdk"
nvme0:2.present = "TRUE"
nvme0:2.fileName = "web01_4.vmdk"
"#;

    #[test]
    fn esxi_vmx_disks_by_slot() {
        let v = Vmx::parse(ESXI.as_bytes()).unwrap();
        assert_eq!(v.display_name(), Some("web01"));
        assert_eq!(v.guest_os(), Some("windows2019srv-64"));
        assert_eq!(v.nvram(), Some("web01.nvram"));
        let d = v.disks();
        let slots: Vec<_> = d.iter().map(|d| d.slot()).collect();
        assert_eq!(slots, ["scsi0-0", "scsi0-1", "scsi0-2", "sata0-0", "sata0-1", "nvme0-2", "nvme0-10", "ide1-0"]);
        assert_eq!(d[0].use_, DiskUse::Backup);
        assert_eq!(d[0].file_name, "web01-000001.vmdk");
        assert_eq!(d[1].use_, DiskUse::Skip(RDM_REASON.into()));
        assert!(matches!(&d[2].use_, DiskUse::Skip(r) if r.contains("independent-persistent")));
        assert_eq!(d[4].use_, DiskUse::CdRom);
        assert_eq!(d[7].node(), "ide1:0");
    }

    #[test]
    fn absent_controller_hides_its_disks_and_non_vmx_is_refused() {
        let v = Vmx::parse(b"displayName = \"x\"\nscsi1.present = \"FALSE\"\nscsi1:0.present = \"TRUE\"\nscsi1:0.fileName = \"a.vmdk\"\n").unwrap();
        assert!(v.disks().is_empty());
        assert!(Vmx::parse(b"# Disk DescriptorFile\nversion=1\ncreateType=\"vmfs\"\n").is_err());
        assert!(Vmx::parse(b"displayName = \"x\"\nscsi99999:0.present = \"TRUE\"\n").unwrap().disks().is_empty());
    }
}

//! The kernel's view of SCSI disks, from sysfs: `/sys/block/<sdX>` with its
//! `device/` (the SCSI device: `scsi_device/H:C:T:L`, `type`, `vendor`,
//! `model`, `rev`, `vpd_pg80`, `vpd_pg83`), `size` (512-byte sectors),
//! `ro`, `queue/logical_block_size` and `queue/physical_block_size`.
//!
//! `VBPROXY_SYSFS_ROOT` (tests) replaces `/sys`, `VBPROXY_DEV_ROOT`
//! replaces `/dev` (where the device nodes may then be image files).

use anyhow::{Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest sysfs attribute read (VPD pages are at most 64 KiB + header).
const MAX_ATTR: u64 = 70_000;

pub fn sys_root() -> PathBuf {
    std::env::var_os("VBPROXY_SYSFS_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/sys"))
}

pub fn dev_root() -> PathBuf {
    std::env::var_os("VBPROXY_DEV_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/dev"))
}

/// True when running against a test fixture instead of the real /sys.
pub fn is_fixture() -> bool {
    std::env::var_os("VBPROXY_SYSFS_ROOT").is_some()
}

/// A SCSI disk as sysfs describes it.
#[derive(Debug, Clone)]
pub struct SysDisk {
    /// Kernel name: `sdb`.
    pub name: String,
    /// `host:channel:target:lun`.
    pub hctl: String,
    pub lun: u64,
    pub vendor: String,
    pub model: String,
    pub revision: String,
    /// Raw VPD pages as the kernel cached them (absent on old kernels or
    /// devices without them).
    pub vpd_pg80: Option<Vec<u8>>,
    pub vpd_pg83: Option<Vec<u8>>,
    pub size: u64,
    pub logical_block_size: u32,
    pub physical_block_size: u32,
    pub read_only: bool,
}

impl SysDisk {
    pub fn dev_path(&self) -> PathBuf {
        dev_root().join(&self.name)
    }
}

/// Reads a small attribute file, bounded.
pub fn read_attr_bytes(path: &Path) -> Option<Vec<u8>> {
    let f = std::fs::File::open(path).ok()?;
    let mut out = Vec::new();
    f.take(MAX_ATTR).read_to_end(&mut out).ok()?;
    Some(out)
}

/// A text attribute, trimmed; control characters shown as `?` so a
/// hostile device name cannot drive the admin's terminal.
pub fn read_attr(path: &Path) -> Option<String> {
    let b = read_attr_bytes(path)?;
    let s: String = String::from_utf8_lossy(&b).chars().map(|c| if c.is_control() && c != '\n' { '?' } else { c }).collect();
    Some(s.trim().to_string())
}

fn read_num(path: &Path) -> Option<u64> {
    read_attr(path)?.trim().parse().ok()
}

/// `H:C:T:L` of a SCSI device directory, from its `scsi_device/` entry.
fn hctl_of(device_dir: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(device_dir.join("scsi_device"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.split(':').count() == 4 && n.split(':').all(|p| p.parse::<u64>().is_ok()))
        .collect();
    names.sort();
    names.into_iter().next()
}

/// Sorts `sda < sdb < sdz < sdaa` as the kernel allocates them.
fn disk_order(a: &String, b: &String) -> std::cmp::Ordering {
    (a.len(), a).cmp(&(b.len(), b))
}

/// Every SCSI disk (peripheral type 0) the kernel has, in name order.
/// No /sys/block at all is an error; no SCSI disk is an empty list.
pub fn scan() -> Result<Vec<SysDisk>> {
    let root = sys_root();
    let block = root.join("block");
    let mut names: Vec<String> = std::fs::read_dir(&block)
        .with_context(|| format!("listing {}", block.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort_by(disk_order);
    let mut out = Vec::new();
    for name in names {
        let dir = block.join(&name);
        let device = dir.join("device");
        let Some(hctl) = hctl_of(&device) else { continue };
        // Peripheral device type 0: direct-access block device (disk).
        if read_num(&device.join("type")) != Some(0) {
            tracing::debug!("{name}: SCSI device {hctl} is not a disk");
            continue;
        }
        let lun = hctl.rsplit(':').next().and_then(|l| l.parse().ok()).unwrap_or(0);
        let sectors = read_num(&dir.join("size")).unwrap_or(0);
        let lbs = read_num(&dir.join("queue/logical_block_size")).and_then(|n| u32::try_from(n).ok()).unwrap_or(512);
        out.push(SysDisk {
            hctl,
            lun,
            vendor: read_attr(&device.join("vendor")).unwrap_or_default(),
            model: read_attr(&device.join("model")).unwrap_or_default(),
            revision: read_attr(&device.join("rev")).unwrap_or_default(),
            vpd_pg80: read_attr_bytes(&device.join("vpd_pg80")).filter(|b| !b.is_empty()),
            vpd_pg83: read_attr_bytes(&device.join("vpd_pg83")).filter(|b| !b.is_empty()),
            // `size` is in 512-byte units whatever the logical block size.
            size: sectors.saturating_mul(512),
            logical_block_size: lbs,
            physical_block_size: read_num(&dir.join("queue/physical_block_size")).and_then(|n| u32::try_from(n).ok()).unwrap_or(lbs),
            read_only: read_num(&dir.join("ro")) == Some(1),
            name,
        });
    }
    Ok(out)
}

/// The sysfs `ro` attribute of a block device by kernel name.
pub fn read_only(name: &str) -> Option<bool> {
    read_num(&sys_root().join("block").join(name).join("ro")).map(|v| v == 1)
}

/// The kernel name (`sdb`) of a device node, from its device number
/// (`/sys/dev/block/MAJ:MIN`), or from the path's file name under a
/// fixture root.
pub fn kernel_name(dev: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if !is_fixture() {
        let rdev = std::fs::metadata(dev).ok()?.rdev();
        let link = sys_root().join(format!("dev/block/{}:{}", libc_major(rdev), libc_minor(rdev)));
        let target = std::fs::read_link(link).ok()?;
        return target.file_name()?.to_str().map(str::to_string);
    }
    dev.file_name()?.to_str().map(str::to_string)
}

/// Linux dev_t encoding (glibc's gnu_dev_major/minor), without unsafe.
pub fn libc_major(rdev: u64) -> u64 {
    ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff)
}

pub fn libc_minor(rdev: u64) -> u64 {
    ((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff)
}

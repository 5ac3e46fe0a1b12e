//! The read-only guard (DESIGN.md non-negotiable 1): sets the kernel
//! read-only flag (BLKROSET) on every inventory LUN, on every SAN disk
//! (`--all-san`: every SCSI disk but the appliance's own) or on given
//! devices, and proves it by reading back both BLKROGET and sysfs `ro`.
//! `status` lists any writable one as a hazard.

use super::{device, sysfs, LunPool, Resolved};
use crate::inventory::Inventory;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A device the guard looks after, and why.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    pub why: Vec<String>,
}

/// The state of one device after `apply` or for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub device: String,
    /// Kernel name (`sdb`, `loop3`).
    pub name: Option<String>,
    /// Why it is guarded: `inventory:<datastore>`, `san`, `device`.
    pub why: Vec<String>,
    /// BLKROGET (`null` when it could not be read).
    pub read_only: Option<bool>,
    /// sysfs `ro` (`null` when absent).
    pub sysfs_read_only: Option<bool>,
    /// Read-only by both measures.
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn add(targets: &mut Vec<Target>, path: PathBuf, why: String) {
    match targets.iter_mut().find(|t| t.path == path) {
        Some(t) => t.why.push(why),
        None => targets.push(Target { path, why: vec![why] }),
    }
}

/// Kernel names of the disks the appliance itself uses: holding `/` or any
/// mounted filesystem or active swap, through partitions and device-mapper
/// / md stacking (sysfs `slaves`).
pub fn system_disks() -> BTreeSet<String> {
    use std::os::unix::fs::MetadataExt;
    let mut devs: BTreeSet<(u64, u64)> = BTreeSet::new();
    let add_path = |p: &str, devs: &mut BTreeSet<(u64, u64)>| {
        if let Ok(m) = std::fs::metadata(p) {
            if std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()) {
                devs.insert((sysfs::libc_major(m.rdev()), sysfs::libc_minor(m.rdev())));
            }
        }
    };
    if let Ok(mounts) = crate::mountinfo::read() {
        for m in mounts {
            if let Some((maj, min)) = m.dev.split_once(':') {
                if let (Ok(a), Ok(b)) = (maj.parse::<u64>(), min.parse::<u64>()) {
                    if a != 0 {
                        devs.insert((a, b));
                    }
                }
            }
            // Btrfs and others report an anonymous 0:N; the mount source
            // names the real device.
            if m.source.starts_with("/dev/") {
                add_path(&m.source, &mut devs);
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/swaps") {
        for line in text.lines().skip(1) {
            if let Some(p) = line.split_whitespace().next() {
                add_path(p, &mut devs);
            }
        }
    }
    let root = sysfs::sys_root();
    let mut out = BTreeSet::new();
    let mut todo: Vec<PathBuf> =
        devs.iter().filter_map(|(a, b)| std::fs::canonicalize(root.join(format!("dev/block/{a}:{b}"))).ok()).collect();
    let mut seen = BTreeSet::new();
    while let Some(dir) = todo.pop() {
        if !seen.insert(dir.clone()) || seen.len() > 10_000 {
            continue;
        }
        // A partition's disk is its parent directory.
        let disk = if dir.join("partition").exists() { dir.parent().map(Path::to_path_buf) } else { Some(dir.clone()) };
        let Some(disk) = disk else { continue };
        if let Some(n) = disk.file_name().and_then(|n| n.to_str()) {
            out.insert(n.to_string());
        }
        for d in [&dir, &disk] {
            if let Ok(rd) = std::fs::read_dir(d.join("slaves")) {
                todo.extend(rd.filter_map(|e| std::fs::canonicalize(e.ok()?.path()).ok()));
            }
        }
    }
    out
}

/// The devices to guard: inventory LUNs reachable as block devices, every
/// SAN disk with `all_san`, and explicit devices.
pub fn targets(inv: Option<&Inventory>, all_san: bool, devices: &[PathBuf], pool: &mut LunPool) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    if let Some(inv) = inv {
        for (name, id, source) in inventory_luns(inv) {
            match pool.resolve(&id, source.as_deref()) {
                Resolved::Lun(l) if !l.device.starts_with("iscsi://") => add(&mut out, PathBuf::from(&l.device), format!("inventory:{name}")),
                Resolved::Lun(_) => {} // vbproxy's own initiator: read-only by construction.
                Resolved::Unverified(p) if device::is_block_device(&p) => add(&mut out, p, format!("inventory:{name}")),
                Resolved::Unverified(_) => {}
                Resolved::Missing(why) => tracing::warn!("inventory {name}: {why}"),
            }
        }
    }
    if all_san {
        let system = system_disks();
        for d in sysfs::scan()? {
            if system.contains(&d.name) {
                tracing::info!("{}: holds the appliance's own filesystems; not a SAN disk", d.name);
                continue;
            }
            add(&mut out, d.dev_path(), "san".into());
        }
    }
    for d in devices {
        add(&mut out, d.clone(), "device".into());
    }
    Ok(out)
}

/// (entry name, identifier, source) of every LUN the inventory names.
fn inventory_luns(inv: &Inventory) -> Vec<(String, String, Option<String>)> {
    let mut v = Vec::new();
    for d in &inv.datastores {
        v.push((d.name.clone(), d.device.clone(), d.source.clone()));
        for e in &d.extents {
            v.push((d.name.clone(), e.device.clone(), e.source.clone()));
        }
    }
    for s in &inv.snapshots {
        v.push((s.name.clone(), s.device.clone(), s.source.clone()));
    }
    v
}

fn measure(t: &Target, error: Option<String>) -> Entry {
    let name = sysfs::kernel_name(&t.path);
    let (ioctl, err) = match device::read_only_flag(&t.path) {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let sys = name.as_deref().and_then(sysfs::read_only);
    // A fixture's image file has no BLKROGET; sysfs decides there.
    let ok = match (ioctl, sys) {
        (Some(a), Some(b)) => a && b,
        (Some(a), None) => a,
        (None, Some(b)) => b && sysfs::is_fixture(),
        (None, None) => false,
    };
    Entry { device: t.path.display().to_string(), name, why: t.why.clone(), read_only: ioctl, sysfs_read_only: sys, ok, error: error.or(if ioctl.is_none() && !sysfs::is_fixture() { err } else { None }) }
}

/// Sets the flag on every target, then measures it again.
pub fn apply(targets: &[Target]) -> Vec<Entry> {
    targets
        .iter()
        .map(|t| {
            let err = device::set_read_only(&t.path).err().map(|e| format!("{e:#}"));
            measure(t, err)
        })
        .collect()
}

pub fn status(targets: &[Target]) -> Vec<Entry> {
    targets.iter().map(|t| measure(t, None)).collect()
}

/// Inventory LUNs reachable here as block devices that are writable.
#[allow(dead_code)] // used by lun::require_read_only
pub fn writable_inventory_luns(inv: &Inventory, pool: &mut LunPool) -> Result<Vec<String>> {
    let t = targets(Some(inv), false, &[], pool)?;
    Ok(status(&t).into_iter().filter(|e| !e.ok).map(|e| format!("{} ({})", e.device, e.why.join(", "))).collect())
}

pub fn print_table(entries: &[Entry]) {
    println!("{:<20} {:<10} {:<10} {:<8} WHY", "DEVICE", "BLKROGET", "SYSFS-RO", "STATE");
    for e in entries {
        let b = |v: Option<bool>| v.map_or("?".to_string(), |x| if x { "ro".into() } else { "rw".into() });
        println!(
            "{:<20} {:<10} {:<10} {:<8} {}",
            e.device,
            b(e.read_only),
            b(e.sysfs_read_only),
            if e.ok { "ok" } else { "HAZARD" },
            e.why.join(",")
        );
        if let Some(err) = &e.error {
            println!("    error: {err}");
        }
    }
}

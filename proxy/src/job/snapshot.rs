//! Choosing which state of a VM's disks a job reads.
//!
//! A VMware snapshot freezes the descriptors the disks were at and makes
//! the VM write new delta files on top. The `.vmsd` records, per snapshot,
//! the frozen descriptor of each disk. By default a job reads the disks as
//! of `snapshot.current` (stable while the VM keeps writing its newest
//! delta); `--snapshot NAME` picks another snapshot; `--snapshot running`
//! reads the VM's current top disks, which only hold still on an array
//! snapshot LUN.

use anyhow::{bail, Result};

/// What `--snapshot` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Current,
    Running,
    Named(String),
}

impl Want {
    pub fn parse(arg: Option<&str>) -> Want {
        match arg {
            None | Some("current") => Want::Current,
            Some("running") => Want::Running,
            Some(n) => Want::Named(n.to_owned()),
        }
    }
}

/// One snapshot as the `.vmsd` records it.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub uid: u64,
    pub name: String,
    /// (`scsi0:0`, frozen descriptor file name as written).
    pub disks: Vec<(String, String)>,
}

/// The snapshot tree, reduced to what the choice needs.
#[derive(Debug, Clone, Default)]
pub struct SnapshotTree {
    pub current: Option<u64>,
    pub snapshots: Vec<SnapshotInfo>,
}

/// The disk state chosen: a label for the job record and, per slot, the
/// SOURCE spec to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// The snapshot's name, or `running`.
    pub label: String,
    pub disks: Vec<(String, String)>,
    /// Said to the admin on standard error.
    pub warnings: Vec<String>,
}

pub const RUNNING_WARNING: &str =
    "reading the VM's running disks: consistent only if the datastore LUN is an array snapshot (the VM may be writing them now)";

/// Chooses the disks' state. `disks` are the VM's (slot, top spec) pairs;
/// `vmx_spec` locates the VM directory the `.vmsd` names files in.
pub fn choose(want: &Want, tree: &SnapshotTree, disks: &[(String, String)], vmx_spec: &str) -> Result<Chosen> {
    let snap = match want {
        Want::Running => None,
        Want::Current => match tree.current.and_then(|c| tree.snapshots.iter().find(|s| s.uid == c)) {
            Some(s) => Some(s),
            None if tree.current.is_some() => {
                bail!("the .vmsd names snapshot uid {} as current, but has no such snapshot", tree.current.unwrap_or_default())
            }
            None => {
                return Ok(Chosen {
                    label: "running".into(),
                    disks: disks.to_vec(),
                    warnings: vec![format!("the VM has no snapshot; {RUNNING_WARNING}")],
                })
            }
        },
        Want::Named(n) => {
            let found: Vec<&SnapshotInfo> = tree.snapshots.iter().filter(|s| &s.name == n).collect();
            match found.as_slice() {
                [one] => Some(*one),
                [] => {
                    let names: Vec<&str> = tree.snapshots.iter().map(|s| s.name.as_str()).collect();
                    bail!("the VM has no snapshot named {n:?} (snapshots: {})", if names.is_empty() { "none".into() } else { names.join(", ") })
                }
                _ => bail!("{} snapshots are named {n:?}; rename one in the VM's snapshot manager", found.len()),
            }
        }
    };
    let Some(snap) = snap else {
        return Ok(Chosen { label: "running".into(), disks: disks.to_vec(), warnings: vec![RUNNING_WARNING.into()] });
    };
    let mut out = Vec::new();
    for (slot, _) in disks {
        let node = slot.replacen('-', ":", 1);
        let Some((_, file)) = snap.disks.iter().find(|(n, _)| *n == node) else {
            bail!("disk {slot} is not in snapshot {:?} (added after it was taken?); choose --snapshot running or another snapshot", snap.name);
        };
        out.push((slot.clone(), sibling(vmx_spec, file)?));
    }
    Ok(Chosen { label: snap.name.clone(), disks: out, warnings: Vec::new() })
}

/// The spec of `name` as the `.vmx` at `vmx_spec` names it: relative names
/// are in the VM's directory, inside the same datastore.
pub fn sibling(vmx_spec: &str, name: &str) -> Result<String> {
    if name.is_empty() || name.contains('\0') {
        bail!("{vmx_spec}: empty or invalid file name {name:?} in the VM configuration");
    }
    let in_store = vmx_spec.contains('#');
    if name.starts_with('/') {
        if in_store {
            bail!(
                "{vmx_spec}: the VM configuration names {name:?} by an absolute host path; only files in the VM's directory can be read from the datastore"
            );
        }
        return Ok(name.to_owned());
    }
    Ok(match vmx_spec.rfind('/') {
        Some(i) => format!("{}{name}", vmx_spec.get(..=i).unwrap_or_default()),
        None => name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> SnapshotTree {
        SnapshotTree {
            current: Some(2),
            snapshots: vec![
                SnapshotInfo { uid: 1, name: "nightly".into(), disks: vec![("scsi0:0".into(), "web01.vmdk".into()), ("scsi0:1".into(), "web01_1.vmdk".into())] },
                SnapshotInfo {
                    uid: 2,
                    name: "backup".into(),
                    disks: vec![("scsi0:0".into(), "web01-000001.vmdk".into()), ("scsi0:1".into(), "web01_1-000001.vmdk".into())],
                },
            ],
        }
    }

    fn disks() -> Vec<(String, String)> {
        vec![("scsi0-0".into(), "/d#/web01/web01-000002.vmdk".into()), ("scsi0-1".into(), "/d#/web01/web01_1-000002.vmdk".into())]
    }

    #[test]
    fn current_snapshot_gives_its_frozen_descriptors() {
        let c = choose(&Want::Current, &tree(), &disks(), "/d#/web01/web01.vmx").unwrap();
        assert_eq!(c.label, "backup");
        assert_eq!(c.disks[0], ("scsi0-0".into(), "/d#/web01/web01-000001.vmdk".into()));
        assert_eq!(c.disks[1].1, "/d#/web01/web01_1-000001.vmdk");
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn named_running_and_none() {
        let c = choose(&Want::Named("nightly".into()), &tree(), &disks(), "vm/web01.vmx").unwrap();
        assert_eq!(c.disks[0].1, "vm/web01.vmdk");
        let r = choose(&Want::Running, &tree(), &disks(), "vm/web01.vmx").unwrap();
        assert_eq!((r.label.as_str(), r.disks.clone()), ("running", disks()));
        assert_eq!(r.warnings.len(), 1);
        let none = choose(&Want::Current, &SnapshotTree::default(), &disks(), "web01.vmx").unwrap();
        assert_eq!(none.label, "running");
        let e = choose(&Want::Named("weekly".into()), &tree(), &disks(), "web01.vmx").unwrap_err();
        assert_eq!(e.to_string(), "the VM has no snapshot named \"weekly\" (snapshots: nightly, backup)");
    }

    #[test]
    fn missing_disk_and_bad_current_are_errors() {
        let mut t = tree();
        t.snapshots[1].disks.pop();
        let e = choose(&Want::Current, &t, &disks(), "web01.vmx").unwrap_err();
        assert!(e.to_string().contains("disk scsi0-1 is not in snapshot \"backup\""), "{e}");
        t.current = Some(9);
        assert!(choose(&Want::Current, &t, &disks(), "web01.vmx").is_err());
    }

    #[test]
    fn siblings() {
        assert_eq!(sibling("web01.vmx", "a.vmdk").unwrap(), "a.vmdk");
        assert_eq!(sibling("/x/web01.vmx", "/y/a.vmdk").unwrap(), "/y/a.vmdk");
        assert!(sibling("iscsi://h/iqn/3#/web01/web01.vmx", "/vmfs/volumes/x/a.vmdk").is_err());
        assert_eq!(sibling("iscsi://h/iqn/3#/web01/web01.vmx", "a.vmdk").unwrap(), "iscsi://h/iqn/3#/web01/a.vmdk");
    }
}

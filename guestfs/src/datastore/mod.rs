//! Datastores: what is on a LUN (DESIGN.md layer 2). A VMFS volume
//! (VMware), an NTFS volume (Hyper-V, holding VHD/VHDX), or an ext4 volume
//! (KVM, holding qcow2/raw), on the whole device or on a partition of it.
//! A datastore yields its files as byte sources through [`FsNamespace`], so
//! disks are opened inside it with [`crate::disk::open_disk`].
//!
//! An NFS datastore mounted by the OS is a local directory and needs none
//! of this: [`crate::namespace::LocalFs`] reads it.

pub mod fsns;
pub mod vmfs_arm;

pub use fsns::FsNamespace;

use crate::block::ReadAt;
use crate::fs::{open_filesystem, Filesystem};
use crate::volume::{find_volumes, Volume};
use crate::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;

/// GPT partition type of a VMFS volume (lowercase, as the volume layer writes it).
pub const GPT_VMFS: &str = "aa31e02a-400f-11db-9590-000c2911d1b8";
/// MBR partition type of a VMFS volume.
pub const MBR_VMFS: &str = "0xfb";

/// Filesystems that hold VM disks.
const DATASTORE_KINDS: [&str; 5] = ["vmfs", "ntfs", "ext2", "ext3", "ext4"];

/// An opened datastore.
pub struct Datastore {
    /// The name it was opened under (a device, an image, an inventory name).
    pub name: String,
    /// `vmfs`, `ntfs`, `ext4`...
    pub kind: String,
    pub label: Option<String>,
    pub uuid: Option<String>,
    /// Where on the (head) device: `fs` for the whole device, `p1`... for a partition.
    pub volume: String,
    pub fs: Arc<dyn Filesystem>,
}

impl std::fmt::Debug for Datastore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datastore").field("name", &self.name).field("kind", &self.kind).field("label", &self.label).field("uuid", &self.uuid).field("volume", &self.volume).finish()
    }
}

impl Datastore {
    /// The datastore's files, named `PREFIX/dir/file`. ESX paths
    /// `/vmfs/volumes/<label or uuid or extra alias>/...` resolve here too.
    pub fn namespace(&self, prefix: &str, extra_aliases: &[String]) -> FsNamespace {
        let mut aliases: Vec<String> = self.label.iter().chain(self.uuid.iter()).cloned().collect();
        aliases.extend(extra_aliases.iter().cloned());
        FsNamespace::new(self.fs.clone(), prefix, aliases)
    }
}

/// The volume of one extent that holds the datastore: the VMFS partition
/// if the table has one, else the first partition holding a datastore
/// filesystem, else the whole device when it has no partition table.
fn datastore_volume(src: &Arc<dyn ReadAt>, name: &str) -> Result<(Volume, Option<Box<dyn Filesystem>>)> {
    let found = find_volumes(std::slice::from_ref(src))?;
    let Some(dv) = found.into_iter().next() else {
        return Err(no_datastore(name, "no volumes".into()));
    };
    if let Some(v) = dv.volumes.iter().find(|v| v.part_type == GPT_VMFS || v.part_type == MBR_VMFS) {
        return Ok((v.clone(), None));
    }
    let mut seen = Vec::new();
    for v in &dv.volumes {
        if vmfs_arm::probe(&*v.source) {
            return Ok((v.clone(), None));
        }
        match open_filesystem(v.source.clone(), &format!("{name}/{}", v.id)) {
            Ok(Some(fs)) => {
                let kind = fs.info().kind;
                if DATASTORE_KINDS.contains(&kind.as_str()) {
                    return Ok((v.clone(), Some(fs)));
                }
                seen.push(format!("{}: {kind}", v.id));
            }
            Ok(None) => seen.push(format!("{}: no known filesystem", v.id)),
            // A damaged datastore filesystem is that, not "nothing here".
            Err(e) => return Err(e),
        }
    }
    for (id, e) in &dv.errors {
        seen.push(format!("{id}: {e}"));
    }
    let detail = if seen.is_empty() { "no volumes".to_owned() } else { seen.join("; ") };
    Err(no_datastore(name, detail))
}

fn no_datastore(name: &str, detail: String) -> Error {
    Error::unsupported(&PathBuf::from(name), "datastore", 0, format!("no VMFS, NTFS or ext4 volume found ({detail})"))
}

/// Opens the datastore on `extents` (a spanned VMFS has several; the head
/// extent first). `name` is used in messages.
pub fn open_datastore(extents: Vec<Arc<dyn ReadAt>>, name: &str) -> Result<Datastore> {
    let Some(head) = extents.first() else {
        return Err(no_datastore(name, "no extents given".into()));
    };
    let (vol, fs) = datastore_volume(head, name)?;
    let fs: Box<dyn Filesystem> = match fs {
        Some(fs) if extents.len() == 1 => fs,
        Some(fs) => {
            return Err(Error::unsupported(
                &PathBuf::from(name),
                "datastore",
                vol.start,
                format!("{} extents given, but only VMFS spans several and this is {}", extents.len(), fs.info().kind),
            ))
        }
        None => {
            let mut parts = vec![vol.source.clone()];
            for (i, e) in extents.iter().enumerate().skip(1) {
                let (v, fs) = datastore_volume(e, &format!("{name} extent {i}"))?;
                if fs.is_some() {
                    return Err(Error::corrupt(&PathBuf::from(name), "VMFS extent", 0, format!("extent {i} holds no VMFS volume")));
                }
                parts.push(v.source);
            }
            vmfs_arm::open_vmfs(parts, name)?
        }
    };
    let info = fs.info();
    tracing::debug!(name, kind = %info.kind, volume = %vol.id, "datastore opened");
    Ok(Datastore { name: name.to_owned(), kind: info.kind, label: info.label, uuid: info.uuid, volume: vol.id, fs: Arc::from(fs) })
}

//! Virtual disks: one [`Layer`] per image file (or per VMDK descriptor and
//! its extents), composed top-down into a [`Disk`] that follows the snapshot
//! chain.
//!
//! Each format only answers two questions about its own file: what a range
//! of the virtual disk is in *this* file ([`Layer::status`]) and what the
//! bytes of an allocated range are ([`Layer::read_data`]). Everything about
//! chains (reading through to a parent, parents shorter than the child,
//! loops, depth, identity checks) lives once, in [`chain`].

pub mod chain;
pub mod detect;
pub mod map;
pub mod qcow2;
pub mod raw;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

pub use chain::{open_disk, Disk, OpenOptions};
pub use map::MapEntry;

use crate::Result;
use std::path::{Path, PathBuf};

/// Largest virtual size accepted from any header: 1 PiB. No hypervisor
/// creates larger disks (VMDK: 62 TiB, VHDX: 64 TiB); a larger value is a
/// corrupt or hostile header, and refusing it early bounds every table size
/// derived from it.
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 50;

/// Longest snapshot chain followed. ESXi allows 32 snapshots; the margin is
/// for hosted products.
pub const MAX_CHAIN_DEPTH: usize = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Vmdk,
    Vhd,
    Vhdx,
    Qcow2,
}

impl Format {
    /// The name `qemu-img info` uses for the format.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vpc",
            Format::Vhdx => "vhdx",
            Format::Qcow2 => "qcow2",
        }
    }
}

/// What one image file says about a range of its virtual disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    /// The bytes are stored in this file; [`Layer::read_data`] returns them.
    Data,
    /// This file says the range reads as zeros (a zero grain, a zero
    /// cluster, a hole in a flat file). The parent is not consulted.
    Zero,
    /// This file says nothing about the range: the parent supplies it, or
    /// zeros when there is no parent.
    Unallocated,
}

/// What a child records about its parent, checked when the chain is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkId {
    /// VMDK content ID: the child's `parentCID` must equal the parent's `CID`.
    VmdkCid(u32),
    /// VHD unique id (footer) and, for the child, the parent's modification
    /// time it recorded (not checked: copying a file changes nothing inside
    /// it, but the unique id must match).
    VhdUniqueId([u8; 16]),
    /// VHDX DataWriteGuid of the parent (parent_linkage).
    VhdxDataWriteGuid([u8; 16]),
}

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkId::VmdkCid(c) => write!(f, "CID {c:08x}"),
            LinkId::VhdUniqueId(g) => write!(f, "unique id {}", crate::le::uuid_string(g)),
            LinkId::VhdxDataWriteGuid(g) => write!(f, "DataWriteGuid {}", crate::le::guid_string(g)),
        }
    }
}

/// How a differencing layer names its parent.
#[derive(Clone, Debug)]
pub struct ParentLink {
    /// Candidate paths in the order the format prefers them, each already
    /// resolved against the child's directory where relative. The first
    /// that exists is used.
    pub candidates: Vec<PathBuf>,
    /// The name as written in the file, for error messages.
    pub hint: String,
    /// What the parent's [`Layer::link_id`] must be, when the format records it.
    pub expect: Option<LinkId>,
    /// Format of the parent when the child records it (qcow2 backing_fmt);
    /// otherwise the parent is detected from its content.
    pub format: Option<Format>,
}

/// One image file of a chain (a VMDK descriptor with all its extents counts
/// as one layer).
pub trait Layer: Send + Sync {
    fn format(&self) -> Format;

    /// The format's own name for the variant: `monolithicSparse`,
    /// `streamOptimized`, `dynamic`, `fixed`, `differencing`, `v3`...
    fn variant(&self) -> String;

    /// The file the layer was opened from (descriptor, header file).
    fn path(&self) -> &Path;

    /// Every file belonging to this layer (descriptor and extents).
    fn files(&self) -> Vec<PathBuf> {
        vec![self.path().to_owned()]
    }

    fn virtual_size(&self) -> u64;

    /// The allocation at `offset` and how many bytes from `offset` share it:
    /// `1..=max_len`. Called with `offset < virtual_size()` and
    /// `offset + max_len <= virtual_size()`, `max_len > 0`. Returning a long
    /// run where cheap (adjacent allocated grains) makes reads faster.
    fn status(&self, offset: u64, max_len: u64) -> Result<(Allocation, u64)>;

    /// Reads bytes of a range that [`Layer::status`] reported as `Data`
    /// (`buf` never extends past the run status returned for `offset`).
    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// The parent, for differencing layers.
    fn parent(&self) -> Option<&ParentLink> {
        None
    }

    /// What a child of this layer records about it.
    fn link_id(&self) -> Option<LinkId> {
        None
    }
}

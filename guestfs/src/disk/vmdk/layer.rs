//! A VMDK as one [`Layer`]: consecutive extents, each answering for its own
//! range of the virtual disk, plus what the descriptor says about the
//! snapshot chain (CID, parent).

use super::extent::Extent;
use crate::disk::{Allocation, Format, Layer, LinkId, ParentLink};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

pub struct VmdkLayer {
    path: PathBuf,
    variant: String,
    /// Start of each extent in the virtual disk, ascending; `starts[0] == 0`.
    starts: Vec<u64>,
    extents: Vec<Box<dyn Extent>>,
    size: u64,
    cid: Option<u32>,
    parent: Option<ParentLink>,
}

impl VmdkLayer {
    /// Composes `extents` in order. The caller checked the total against
    /// `MAX_VIRTUAL_SIZE`.
    pub fn new(
        path: PathBuf,
        variant: String,
        extents: Vec<Box<dyn Extent>>,
        cid: Option<u32>,
        parent: Option<ParentLink>,
    ) -> Result<VmdkLayer> {
        let mut starts = Vec::with_capacity(extents.len());
        let mut size = 0u64;
        for e in &extents {
            starts.push(size);
            size = size
                .checked_add(e.size())
                .filter(|&s| s <= crate::disk::MAX_VIRTUAL_SIZE)
                .ok_or_else(|| Error::corrupt(&path, "descriptor", 0, "the extents add up to more than any disk can hold"))?;
        }
        if extents.is_empty() || size == 0 {
            return Err(Error::corrupt(&path, "descriptor", 0, "the disk has no extents"));
        }
        Ok(VmdkLayer { path, variant, starts, extents, size, cid, parent })
    }

    /// The extent holding `offset` (< size), its start and its end.
    fn extent_at(&self, offset: u64) -> Result<(&dyn Extent, u64, u64)> {
        let i = self.starts.partition_point(|&s| s <= offset).saturating_sub(1);
        let (Some(e), Some(&start)) = (self.extents.get(i), self.starts.get(i)) else {
            return Err(Error::corrupt(&self.path, "extent map", offset, "no extent covers this offset (internal error)"));
        };
        Ok((&**e, start, start + e.size()))
    }
}

impl Layer for VmdkLayer {
    fn format(&self) -> Format {
        Format::Vmdk
    }

    fn variant(&self) -> String {
        self.variant.clone()
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut out = vec![self.path.clone()];
        for f in self.extents.iter().flat_map(|e| e.files()) {
            if !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn status(&self, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        let (e, start, end) = self.extent_at(offset)?;
        let len = max_len.min(end - offset);
        let (a, n) = e.status(offset - start, len)?;
        if n == 0 || n > len {
            return Err(Error::corrupt(&self.path, "extent map", offset, format!("extent returned a run of {n} bytes for {len} (internal error)")));
        }
        Ok((a, n))
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (e, start, end) = self.extent_at(pos)?;
            let n = ((end - pos) as usize).min(buf.len() - done);
            let chunk = buf.get_mut(done..done + n).unwrap_or(&mut []);
            e.read_data(pos - start, chunk)?;
            done += n;
        }
        Ok(())
    }

    fn parent(&self) -> Option<&ParentLink> {
        self.parent.as_ref()
    }

    fn link_id(&self) -> Option<LinkId> {
        self.cid.map(LinkId::VmdkCid)
    }
}

//! VHDX (MS-VHDX v1): fixed, dynamic and differencing disks.
//!
//! Opening goes: file identifier and current header ([`header`]) → log
//! replay into memory when the file was not closed cleanly ([`log`]) →
//! region table ([`region`]) → metadata ([`metadata`]) → BAT ([`bat`]).
//! Everything after the headers is read through the replay overlay, so a
//! dirty file reads as it would after a writer replayed its log, and the
//! file itself is never written.

mod bat;
mod guid;
mod header;
mod log;
mod metadata;
mod region;

use super::{Allocation, Format, Layer, LinkId, ParentLink};
use crate::block::ImageFile;
use crate::namespace::{resolve_relative, Namespace};
use crate::Result;
use bat::{Bat, Block};
use guid::Guid;
use metadata::Metadata;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Longest run of blocks merged by one `status` call: bounds the work of a
/// call on a huge, empty disk.
const MAX_MERGED_BLOCKS: u64 = 4096;

pub fn open(_ns: &dyn Namespace, file: ImageFile) -> Result<Box<dyn Layer>> {
    Ok(Box::new(VhdxLayer::open(file)?))
}

pub struct VhdxLayer {
    path: PathBuf,
    /// The file as seen through the replayed log (the file itself when the
    /// log is clean).
    data: ImageFile,
    meta: Metadata,
    bat: Bat,
    data_write_guid: Guid,
    parent: Option<ParentLink>,
}

impl VhdxLayer {
    pub fn open(file: ImageFile) -> Result<VhdxLayer> {
        let header = header::read_current(&file)?;
        let data = match log::replay(&file, &header)? {
            Some(overlay) => ImageFile::new(Arc::new(overlay), file.path.clone()),
            None => file.clone(),
        };
        let regions = region::read(&data)?;
        let meta = metadata::read(&data, regions.metadata)?;
        let bat = Bat::new(&data, regions.bat, meta.virtual_size, meta.block_size, meta.logical_sector_size, meta.has_parent)?;
        let parent = if meta.has_parent { Some(parent_link(&file, &meta)?) } else { None };
        tracing::debug!(
            path = %file.path.display(),
            virtual_size = meta.virtual_size,
            block_size = meta.block_size,
            chunk_ratio = bat.chunk_ratio(),
            blocks = bat.data_blocks(),
            physical_sector_size = ?meta.physical_sector_size,
            page83 = ?meta.page83,
            "opened vhdx"
        );
        Ok(VhdxLayer { path: file.path.clone(), data, meta, bat, data_write_guid: header.data_write_guid, parent })
    }

    /// Allocation of `[offset, offset + max_len)` inside one block.
    fn block_status(&self, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        let bs = self.meta.block_size;
        let block = offset / bs;
        let run = max_len.min(bs - offset % bs);
        let differencing = self.meta.has_parent;
        let alloc = match self.bat.block(&self.data, block, self.meta.virtual_size)? {
            // Fixed/dynamic: undefined content, read as zeros (no parent to
            // fall through to); differencing: the parent has it.
            Block::NotPresent | Block::Undefined => Allocation::Unallocated,
            Block::Zero => Allocation::Zero,
            // Trimmed: undefined content. Without a parent zeros are the
            // honest answer; with one, the parent's data is as valid.
            Block::Unmapped if differencing => Allocation::Unallocated,
            Block::Unmapped => Allocation::Zero,
            Block::Full(_) => Allocation::Data,
            Block::Partial(_) => {
                let (present, n) = self.bat.sector_run(&self.data, offset, run)?;
                let alloc = if present { Allocation::Data } else { Allocation::Unallocated };
                return Ok((alloc, n));
            }
        };
        Ok((alloc, run))
    }
}

fn parent_link(file: &ImageFile, meta: &Metadata) -> Result<ParentLink> {
    let Some(loc) = meta.parent_locator.as_ref() else {
        return Err(file.corrupt("parent locator", 0, "missing"));
    };
    let linkage = loc
        .get("parent_linkage")
        .ok_or_else(|| file.corrupt("parent locator", loc.offset, "no parent_linkage entry"))?;
    let expect = Guid::parse(linkage)
        .ok_or_else(|| file.corrupt("parent locator", loc.offset, format!("parent_linkage {linkage:?} is not a GUID")))?;
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(rel) = loc.get("relative_path").filter(|s| !s.is_empty()) {
        candidates.push(resolve_relative(&file.path, rel));
    }
    if let Some(abs) = loc.get("absolute_win32_path").filter(|s| !s.is_empty()) {
        // A Windows path means nothing here; its file name beside the child
        // is where a copied chain usually has the parent.
        let name = abs.rsplit(['\\', '/']).next().unwrap_or(abs);
        if !name.is_empty() {
            let p = resolve_relative(&file.path, name);
            if !candidates.contains(&p) {
                candidates.push(p);
            }
        }
    }
    let hint = ["relative_path", "absolute_win32_path", "volume_path"]
        .iter()
        .find_map(|k| loc.get(k).filter(|s| !s.is_empty()))
        .unwrap_or(linkage)
        .to_owned();
    if candidates.is_empty() {
        return Err(file.corrupt("parent locator", loc.offset, "names no relative_path or absolute_win32_path of the parent"));
    }
    Ok(ParentLink { candidates, hint, expect: Some(LinkId::VhdxDataWriteGuid(expect.0)), format: None })
}

impl Layer for VhdxLayer {
    fn format(&self) -> Format {
        Format::Vhdx
    }

    fn variant(&self) -> String {
        if self.meta.has_parent {
            "differencing"
        } else if self.meta.leave_blocks_allocated {
            "fixed"
        } else {
            "dynamic"
        }
        .into()
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn virtual_size(&self) -> u64 {
        self.meta.virtual_size
    }

    fn status(&self, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        let (alloc, mut len) = self.block_status(offset, max_len)?;
        // Merge following blocks in the same state (whole blocks only: a
        // partial block ends the run where its bitmap changes).
        let mut merged = 0;
        while len < max_len && merged < MAX_MERGED_BLOCKS {
            let (next, n) = self.block_status(offset + len, max_len - len)?;
            if next != alloc {
                break;
            }
            len += n;
            merged += 1;
        }
        Ok((alloc, len))
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.meta.block_size;
        let mut done = 0usize;
        while done < buf.len() {
            let off = offset + done as u64;
            let block = off / bs;
            let n = ((bs - off % bs) as usize).min(buf.len() - done);
            let at = match self.bat.block(&self.data, block, self.meta.virtual_size)? {
                Block::Full(at) | Block::Partial(at) => at,
                other => {
                    return Err(self.data.corrupt(
                        &format!("BAT entry {} (payload block {block})", self.bat.payload_index(block)),
                        self.bat.entry_offset(self.bat.payload_index(block)),
                        format!("block state {other:?} changed while reading (internal error)"),
                    ))
                }
            };
            let chunk = buf.get_mut(done..done + n).unwrap_or(&mut []);
            self.data.read(&format!("payload block {block}"), at + off % bs, chunk)?;
            done += n;
        }
        Ok(())
    }

    fn parent(&self) -> Option<&ParentLink> {
        self.parent.as_ref()
    }

    fn link_id(&self) -> Option<LinkId> {
        Some(LinkId::VhdxDataWriteGuid(self.data_write_guid.0))
    }
}

//! Where a file's blocks are: the extent tree (ext4) or the classic
//! direct/indirect block map (ext2/3), both turned into one sorted list of
//! runs that `read` and `data_ranges` use without touching metadata again.
//!
//! Hostile trees are bounded: every extent-tree level must have exactly the
//! depth its parent announces (so descent ends after at most 5 levels),
//! every tree block may be visited once (a block referenced twice is a
//! loop or a cross-link), runs must be in logical order without overlap,
//! and nothing beyond the file size is collected, so the list never holds
//! more runs than the file has blocks.

use super::inode::{Inode, FLAG_EXTENTS};
use super::Ext4Fs;
use crate::le::{u16le, u32le};
use crate::Result;
use std::collections::HashSet;

/// Logical blocks `logical..logical+len` live at `physical..`. Unwritten
/// (preallocated) extents read as zeros and are not data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub logical: u64,
    pub physical: u64,
    pub len: u64,
    pub init: bool,
}

const EXTENT_MAGIC: u16 = 0xF30A;
const MAX_EXTENT_DEPTH: u16 = 5;
const UNINIT_LEN_BASE: u16 = 32768;

struct Walk<'a> {
    fs: &'a Ext4Fs,
    ino: u32,
    size_blocks: u64,
    visited: HashSet<u64>,
    out: Vec<Run>,
}

impl Walk<'_> {
    fn corrupt(&self, what: &str, offset: u64, reason: String) -> crate::Error {
        self.fs.file.corrupt(&format!("inode {} {what}", self.ino), offset, reason)
    }

    fn push(&mut self, run: Run, at: u64) -> Result<()> {
        if run.logical >= self.size_blocks || run.len == 0 {
            return Ok(());
        }
        let len = run.len.min(self.size_blocks - run.logical);
        let end = run.physical.checked_add(run.len);
        if end.is_none_or(|e| e > self.fs.sb.blocks_count) {
            return Err(self.corrupt(
                "block map",
                at,
                format!("blocks {}+{} lie beyond the filesystem ({} blocks)", run.physical, run.len, self.fs.sb.blocks_count),
            ));
        }
        if let Some(last) = self.out.last_mut() {
            if run.logical < last.logical + last.len {
                return Err(self.corrupt("extent tree", at, format!("extent at logical block {} overlaps or is out of order", run.logical)));
            }
            if last.init == run.init && last.logical + last.len == run.logical && last.physical + last.len == run.physical {
                last.len += len;
                return Ok(());
            }
        }
        self.out.push(Run { len, ..run });
        Ok(())
    }

    /// One extent-tree node (`node` read from byte `at`, or the inode's
    /// `i_block`). `depth` is what the parent says this node's depth is.
    fn extent_node(&mut self, node: &[u8], at: u64, depth: Option<u16>) -> Result<()> {
        if u16le(node, 0) != EXTENT_MAGIC {
            return Err(self.corrupt("extent header", at, "bad extent header magic".into()));
        }
        let entries = usize::from(u16le(node, 2));
        let node_depth = u16le(node, 6);
        if 12 + 12 * entries > node.len() {
            return Err(self.corrupt("extent header", at, format!("{entries} entries do not fit in the node")));
        }
        if node_depth > MAX_EXTENT_DEPTH || depth.is_some_and(|d| d != node_depth) {
            return Err(self.corrupt(
                "extent header",
                at,
                format!("depth {node_depth} where {depth:?} was expected (extent tree loop or corruption)"),
            ));
        }
        for i in 0..entries {
            let e = 12 + 12 * i;
            let logical = u64::from(u32le(node, e));
            if node_depth == 0 {
                let raw_len = u16le(node, e + 4);
                let (len, init) = if raw_len > UNINIT_LEN_BASE { (raw_len - UNINIT_LEN_BASE, false) } else { (raw_len, true) };
                let physical = (u64::from(u16le(node, e + 6)) << 32) | u64::from(u32le(node, e + 8));
                self.push(Run { logical, physical, len: u64::from(len), init }, at)?;
            } else {
                if logical >= self.size_blocks {
                    continue; // preallocated past the end: not file content
                }
                let child = (u64::from(u16le(node, e + 8)) << 32) | u64::from(u32le(node, e + 4));
                if !self.visited.insert(child) {
                    return Err(self.corrupt("extent index", at, format!("extent tree block {child} is referenced twice (loop)")));
                }
                let buf = self.fs.meta_block(child, &format!("inode {} extent tree block", self.ino))?;
                let off = self.fs.sb.block_offset(child).unwrap_or(0);
                self.extent_node(&buf, off, Some(node_depth - 1))?;
            }
        }
        Ok(())
    }

    /// The pointers of one indirect block (`level` 1 = points at data).
    fn indirect(&mut self, block: u64, level: u32, logical: u64) -> Result<()> {
        if block == 0 || logical >= self.size_blocks {
            return Ok(());
        }
        if !self.visited.insert(block) {
            return Err(self.corrupt("indirect block", block * u64::from(self.fs.sb.block_size), format!("block {block} is referenced twice (loop)")));
        }
        let buf = self.fs.meta_block(block, &format!("inode {} indirect block", self.ino))?;
        let per = u64::from(self.fs.sb.block_size / 4);
        let span = per.pow(level - 1);
        let at = self.fs.sb.block_offset(block).unwrap_or(0);
        for i in 0..per {
            let ptr = u64::from(u32le(&buf, usize::try_from(i * 4).unwrap_or(0)));
            let l = logical + i * span;
            if l >= self.size_blocks {
                break;
            }
            if level == 1 {
                if ptr != 0 {
                    self.push(Run { logical: l, physical: ptr, len: 1, init: true }, at)?;
                }
            } else {
                self.indirect(ptr, level - 1, l)?;
            }
        }
        Ok(())
    }
}

impl Ext4Fs {
    /// The runs of `inode`'s content, sorted by logical block.
    pub(super) fn load_map(&self, inode: &Inode) -> Result<Vec<Run>> {
        let bs = u64::from(self.sb.block_size);
        let size_blocks = inode.size.div_ceil(bs);
        if size_blocks > 1 << 32 {
            return Err(self.file.corrupt(&format!("inode {}", inode.ino), 0, format!("size {} exceeds what 32-bit block numbers address", inode.size)));
        }
        let mut w = Walk { fs: self, ino: inode.ino, size_blocks, visited: HashSet::new(), out: Vec::new() };
        if inode.has_flag(FLAG_EXTENTS) {
            w.extent_node(&inode.i_block, 0, None)?;
        } else {
            let per = bs / 4;
            for i in 0..12u64 {
                let ptr = u64::from(inode.i_block_u32(i as usize));
                if ptr != 0 {
                    w.push(Run { logical: i, physical: ptr, len: 1, init: true }, 0)?;
                }
            }
            let mut start = 12;
            for (slot, level) in [(12usize, 1u32), (13, 2), (14, 3)] {
                w.indirect(u64::from(inode.i_block_u32(slot)), level, start)?;
                start += per.pow(level);
            }
        }
        Ok(w.out)
    }
}

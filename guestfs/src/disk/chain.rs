//! Snapshot chains: opening a disk follows its parents, checks each link,
//! and composes the layers so reads fall through to the layer that holds
//! each range.

use super::detect::open_layer;
use super::map::{push_coalesced, MapEntry};
use super::{Allocation, Format, Layer, LinkId, MAX_CHAIN_DEPTH};
use crate::namespace::Namespace;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Longest chain accepted.
    pub max_depth: usize,
    /// Read a delta whose parent is unknown (an ESX delta extent opened
    /// without its descriptor) as if it had no parent. Off by default:
    /// ranges the delta does not hold would read as zeros.
    pub allow_unknown_parent: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { max_depth: MAX_CHAIN_DEPTH, allow_unknown_parent: false }
    }
}

/// A virtual disk: the top layer and all its parents, top first.
#[derive(Clone)]
pub struct Disk {
    layers: Vec<Arc<dyn Layer>>,
}

/// Where a range of the disk comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Index of the supplying layer; `layers().len()` when no layer has it.
    pub depth: usize,
    /// `true`: bytes stored in that layer; `false`: reads as zeros.
    pub data: bool,
    pub len: u64,
}

impl Disk {
    /// Composes layers (top first). `open_disk` is the usual way in; this is
    /// for callers that open layers themselves (tests, datastores).
    pub fn from_layers(layers: Vec<Arc<dyn Layer>>) -> Option<Disk> {
        (!layers.is_empty()).then_some(Disk { layers })
    }

    pub fn layers(&self) -> &[Arc<dyn Layer>] {
        &self.layers
    }

    pub fn top(&self) -> &dyn Layer {
        &*self.layers[0]
    }

    pub fn virtual_size(&self) -> u64 {
        self.top().virtual_size()
    }

    /// The disk made of this disk's layers from `depth` down: the state of
    /// the disk before the snapshots above `depth` were taken.
    pub fn below(&self, depth: usize) -> Option<Disk> {
        Disk::from_layers(self.layers.get(depth..)?.to_vec())
    }

    /// Finds which layer supplies `offset` and for how many bytes (at most
    /// `max_len`). A parent smaller than its child reads as zeros past its
    /// end, as in qemu and VMware.
    pub fn resolve(&self, offset: u64, max_len: u64) -> Result<Resolved> {
        let mut len = max_len;
        for (depth, layer) in self.layers.iter().enumerate() {
            let size = layer.virtual_size();
            if offset >= size {
                return Ok(Resolved { depth, data: false, len });
            }
            len = len.min(size - offset);
            let (alloc, n) = layer.status(offset, len)?;
            if n == 0 || n > len {
                return Err(Error::corrupt(
                    layer.path(),
                    "allocation map",
                    offset,
                    format!("reader returned a run of {n} bytes for a request of {len} (internal error)"),
                ));
            }
            len = n;
            match alloc {
                Allocation::Data => return Ok(Resolved { depth, data: true, len }),
                Allocation::Zero => return Ok(Resolved { depth, data: false, len }),
                Allocation::Unallocated => {}
            }
        }
        Ok(Resolved { depth: self.layers.len(), data: false, len })
    }

    /// Reads `buf.len()` bytes at `offset` of the virtual disk.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let size = self.virtual_size();
        let len = buf.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::OutOfRange { offset, len, size });
        }
        let mut done = 0usize;
        while done < buf.len() {
            let off = offset + done as u64;
            let r = self.resolve(off, (buf.len() - done) as u64)?;
            let chunk = &mut buf[done..done + r.len as usize];
            if r.data {
                self.layers[r.depth].read_data(off, chunk)?;
            } else {
                chunk.fill(0);
            }
            done += r.len as usize;
        }
        Ok(())
    }

    /// The allocation map of the range `[start, start+len)`, coalesced.
    pub fn map_range(&self, start: u64, len: u64) -> Result<Vec<MapEntry>> {
        let end = start.saturating_add(len).min(self.virtual_size());
        let mut out = Vec::new();
        let mut off = start;
        while off < end {
            let r = self.resolve(off, end - off)?;
            push_coalesced(&mut out, MapEntry { start: off, length: r.len, data: r.data, zero: !r.data, depth: r.depth });
            off += r.len;
        }
        Ok(out)
    }

    /// The allocation map of the whole disk.
    pub fn map(&self) -> Result<Vec<MapEntry>> {
        self.map_range(0, self.virtual_size())
    }

    /// Bytes of the virtual disk that layer `depth` itself stores.
    pub fn layer_allocated(&self, depth: usize) -> Result<u64> {
        let layer = &self.layers[depth];
        let size = layer.virtual_size();
        let mut off = 0;
        let mut total = 0u64;
        while off < size {
            let (alloc, n) = layer.status(off, size - off)?;
            if n == 0 || n > size - off {
                return Err(Error::corrupt(layer.path(), "allocation map", off, "reader returned an invalid run (internal error)"));
            }
            if alloc == Allocation::Data {
                total += n;
            }
            off += n;
        }
        Ok(total)
    }
}

/// Opens the disk at `path` and every parent it names.
pub fn open_disk(ns: &dyn Namespace, path: &Path, opts: &OpenOptions) -> Result<Disk> {
    let mut layers: Vec<Arc<dyn Layer>> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut next: (PathBuf, Option<Format>, Option<LinkId>) = (path.to_owned(), None, None);
    loop {
        let (path, format, expect) = next;
        let id = ns.identity(&path)?;
        paths.push(path.clone());
        if seen.contains(&id) {
            return Err(Error::ChainLoop { chain: paths });
        }
        seen.push(id);
        if layers.len() >= opts.max_depth {
            return Err(Error::ChainTooDeep { path, max: opts.max_depth });
        }
        let layer: Arc<dyn Layer> = Arc::from(open_layer(ns, &path, format)?);
        if let (Some(child), Some(expect)) = (layers.last(), expect) {
            let got = layer.link_id();
            if got.as_ref() != Some(&expect) {
                let found = got.map_or("nothing to compare".to_owned(), |g| g.to_string());
                return Err(Error::ParentMismatch {
                    child: child.path().to_owned(),
                    parent: path,
                    reason: format!("the child expects {expect}, the parent has {found}; the parent was modified after the snapshot or is another disk"),
                });
            }
        }
        let link = layer.parent().cloned();
        layers.push(layer);
        let Some(link) = link else { break };
        if link.candidates.is_empty() && opts.allow_unknown_parent {
            tracing::warn!("{}: read without its parent ({})", layers.last().map(|l| l.path().display().to_string()).unwrap_or_default(), link.hint);
            break;
        }
        let child = layers.last().map(|l| l.path().to_owned()).unwrap_or_default();
        let Some(found) = link.candidates.iter().find(|c| ns.exists(c)) else {
            let tried = link.candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ");
            return Err(Error::MissingParent { child, hint: link.hint.clone(), tried });
        };
        next = (found.clone(), link.format, link.expect.clone());
    }
    Ok(Disk { layers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::Allocation::{self, *};

    /// A layer described by runs of (length, allocation, fill byte).
    struct FakeLayer {
        runs: Vec<(u64, Allocation, u8)>,
        path: PathBuf,
    }

    impl FakeLayer {
        fn new(name: &str, runs: &[(u64, Allocation, u8)]) -> Arc<dyn Layer> {
            Arc::new(FakeLayer { runs: runs.to_vec(), path: name.into() })
        }
        fn find(&self, offset: u64) -> (u64, Allocation, u8, u64) {
            let mut start = 0;
            for &(len, a, b) in &self.runs {
                if offset < start + len {
                    return (start, a, b, start + len - offset);
                }
                start += len;
            }
            unreachable!("offset {offset} outside fake layer")
        }
    }

    impl Layer for FakeLayer {
        fn format(&self) -> Format {
            Format::Raw
        }
        fn variant(&self) -> String {
            "fake".into()
        }
        fn path(&self) -> &Path {
            &self.path
        }
        fn virtual_size(&self) -> u64 {
            self.runs.iter().map(|r| r.0).sum()
        }
        fn status(&self, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
            let (_, a, _, left) = self.find(offset);
            Ok((a, left.min(max_len)))
        }
        fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            let (_, a, b, left) = self.find(offset);
            assert_eq!(a, Data, "read_data outside a data run");
            assert!(buf.len() as u64 <= left, "read_data crosses a run");
            buf.fill(b);
            Ok(())
        }
    }

    fn read_all(d: &Disk) -> Vec<u8> {
        let mut v = vec![0xEE; d.virtual_size() as usize];
        d.read_at(&mut v, 0).unwrap();
        v
    }

    #[test]
    fn reads_fall_through_unallocated_and_stop_at_zero() {
        let top = FakeLayer::new("top", &[(4, Data, 1), (4, Unallocated, 0), (4, Zero, 0), (4, Unallocated, 0)]);
        let base = FakeLayer::new("base", &[(16, Data, 9)]);
        let d = Disk::from_layers(vec![top, base]).unwrap();
        assert_eq!(read_all(&d), [[1u8; 4], [9; 4], [0; 4], [9; 4]].concat());
        let map = d.map().unwrap();
        let summary: Vec<_> = map.iter().map(|e| (e.start, e.length, e.data, e.depth)).collect();
        assert_eq!(summary, vec![(0, 4, true, 0), (4, 4, true, 1), (8, 4, false, 0), (12, 4, true, 1)]);
        assert_eq!(d.layer_allocated(0).unwrap(), 4);
        assert_eq!(d.layer_allocated(1).unwrap(), 16);
    }

    #[test]
    fn parent_shorter_than_child_reads_zeros_past_its_end() {
        let top = FakeLayer::new("top", &[(16, Unallocated, 0)]);
        let base = FakeLayer::new("base", &[(6, Data, 7)]);
        let d = Disk::from_layers(vec![top, base]).unwrap();
        assert_eq!(read_all(&d), [vec![7u8; 6], vec![0; 10]].concat());
    }

    #[test]
    fn unallocated_everywhere_reads_zeros() {
        let d = Disk::from_layers(vec![FakeLayer::new("only", &[(8, Unallocated, 0)])]).unwrap();
        assert_eq!(read_all(&d), vec![0u8; 8]);
        assert_eq!(d.map().unwrap()[0].depth, 1);
    }

    #[test]
    fn below_gives_the_pre_snapshot_state() {
        let top = FakeLayer::new("top", &[(8, Data, 1)]);
        let base = FakeLayer::new("base", &[(8, Data, 2)]);
        let d = Disk::from_layers(vec![top, base]).unwrap();
        assert_eq!(read_all(&d.below(1).unwrap()), vec![2u8; 8]);
        assert!(d.below(2).is_none());
    }

    #[test]
    fn reads_outside_the_disk_are_errors() {
        let d = Disk::from_layers(vec![FakeLayer::new("x", &[(8, Data, 1)])]).unwrap();
        let mut b = [0u8; 4];
        assert!(matches!(d.read_at(&mut b, 6), Err(Error::OutOfRange { .. })));
        assert!(matches!(d.read_at(&mut b, u64::MAX - 1), Err(Error::OutOfRange { .. })));
    }

    struct LyingLayer;
    impl Layer for LyingLayer {
        fn format(&self) -> Format {
            Format::Raw
        }
        fn variant(&self) -> String {
            "liar".into()
        }
        fn path(&self) -> &Path {
            Path::new("liar")
        }
        fn virtual_size(&self) -> u64 {
            8
        }
        fn status(&self, _: u64, max_len: u64) -> Result<(Allocation, u64)> {
            Ok((Data, max_len + 1))
        }
        fn read_data(&self, _: u64, _: &mut [u8]) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reader_returning_an_invalid_run_is_an_error_not_a_hang() {
        let d = Disk::from_layers(vec![Arc::new(LyingLayer) as Arc<dyn Layer>]).unwrap();
        let mut b = [0u8; 4];
        assert!(matches!(d.read_at(&mut b, 0), Err(Error::Corrupt { .. })));
        assert!(d.layer_allocated(0).is_err());
    }
}

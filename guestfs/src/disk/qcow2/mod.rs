//! qcow2 images, versions 2 and 3 (qemu's native format).
//!
//! Only the active state is read: internal snapshots, refcounts and
//! bitmaps concern writers and other tools. A guest cluster is found
//! through the L1 table ([`table`]) and its L2 entry: unallocated (the
//! backing file supplies it; [`crate::disk::chain`] reads through), zero,
//! stored, compressed ([`compressed`]), or split into 32 subclusters with
//! extended L2 entries.

mod compressed;
mod header;
mod table;

use super::{Allocation, Format, Layer, ParentLink};
use crate::block::ImageFile;
use crate::cache::BoundedCache;
use crate::namespace::{resolve_relative, Namespace};
use crate::Result;
use header::Header;
use std::path::Path;
use std::sync::Arc;
use table::{Cluster, Located, Tables, SUBCLUSTERS};

/// Memory spent on cached decompressed clusters, whatever the cluster size.
const DECOMPRESSED_CACHE_BYTES: u64 = 8 << 20;

pub struct Qcow2Layer {
    file: ImageFile,
    header: Header,
    tables: Tables,
    /// Decompressed clusters by their raw L2 descriptor.
    decompressed: BoundedCache<u64, Vec<u8>>,
    parent: Option<ParentLink>,
}

pub fn open(_ns: &dyn Namespace, file: ImageFile) -> Result<Box<dyn Layer>> {
    Ok(Box::new(Qcow2Layer::open(file)?))
}

impl Qcow2Layer {
    pub fn open(file: ImageFile) -> Result<Qcow2Layer> {
        let header = Header::read(&file)?;
        let tables = Tables::load(&file, &header)?;
        let parent = match &header.backing_name {
            None => None,
            Some(name) => Some(parent_link(&file, name, &header)?),
        };
        let decompressed = BoundedCache::new((DECOMPRESSED_CACHE_BYTES >> header.cluster_bits).max(2) as usize);
        Ok(Qcow2Layer { file, header, tables, decompressed, parent })
    }

    fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    fn subcluster_size(&self) -> u64 {
        self.cluster_size() / u64::from(SUBCLUSTERS)
    }

    /// What the bytes `[from, to)` of a cluster (offsets inside the
    /// cluster, `from < to <= cluster size`) are: the allocation at `from`
    /// and where in the cluster that allocation ends (at most `to`). Data
    /// must lie inside the file; a table pointing past its end is an error
    /// here, so that no caller mistakes missing data for zeros.
    fn cluster_run(&self, c: &Located, from: u64, to: u64) -> Result<(Allocation, u64)> {
        let (alloc, end, host) = match c.cluster {
            Cluster::Unallocated => (Allocation::Unallocated, to, None),
            Cluster::Zero => (Allocation::Zero, to, None),
            Cluster::Standard { host } => (Allocation::Data, to, Some(host)),
            Cluster::Compressed { .. } => (Allocation::Data, to, None),
            Cluster::Subclusters { host, alloc, zero } => {
                let sub = self.subcluster_size();
                let state = |i: u64| {
                    let bit = 1u32 << i;
                    if alloc & bit != 0 {
                        Allocation::Data
                    } else if zero & bit != 0 {
                        Allocation::Zero
                    } else {
                        Allocation::Unallocated
                    }
                };
                let first = from / sub;
                let kind = state(first);
                let mut i = first + 1;
                while i < u64::from(SUBCLUSTERS) && i * sub < to && state(i) == kind {
                    i += 1;
                }
                (kind, (i * sub).min(to), Some(host))
            }
        };
        if let (Allocation::Data, Some(host)) = (alloc, host) {
            let file_size = self.file.size();
            if host.saturating_add(end) > file_size {
                return Err(self.file.corrupt(
                    &c.structure(),
                    c.table + c.index * if self.header.extended_l2 { 16 } else { 8 },
                    format!(
                        "guest data at host offset {} ({} bytes) lies beyond the end of the file ({file_size} bytes); the image is truncated",
                        host + from,
                        end - from
                    ),
                ));
            }
        }
        Ok((alloc, end))
    }

    /// The allocation at `pos` and where the run of that allocation ends,
    /// looking no further than the L2 table of `pos` and `end`.
    fn table_run(&self, pos: u64, end: u64) -> Result<(Allocation, u64)> {
        let span = self.tables.l2_span();
        let table_end = (pos / span + 1).saturating_mul(span).min(end);
        let Some((l2, table)) = self.tables.table(pos / span)? else {
            return Ok((Allocation::Unallocated, table_end));
        };
        let cs = self.cluster_size();
        let mut kind = None;
        let mut at = pos;
        while at < table_end {
            let cluster_start = at - at % cs;
            let index = (at / cs) % (span / cs);
            let entry = self.tables.decode(l2, &table, index)?;
            let to = (table_end - cluster_start).min(cs);
            let (alloc, run_end) = self.cluster_run(&entry, at - cluster_start, to)?;
            match kind {
                None => kind = Some(alloc),
                Some(k) if k != alloc => break,
                Some(_) => {}
            }
            at = cluster_start + run_end;
            if run_end < to {
                break; // the allocation changes inside this cluster
            }
        }
        Ok((kind.unwrap_or(Allocation::Unallocated), at))
    }

    fn decompressed(&self, c: &Located, host: u64, len: u64) -> Result<Arc<Vec<u8>>> {
        self.decompressed.get_or_load(c.raw, || {
            compressed::read_cluster(&self.file, self.header.compression, &c.structure(), host, len, self.cluster_size())
        })
    }
}

/// The backing file as a [`ParentLink`]: relative names are relative to
/// the image's directory, as in qemu.
fn parent_link(file: &ImageFile, name: &str, header: &Header) -> Result<ParentLink> {
    // qemu also accepts protocol URLs and JSON specifications as backing
    // "files"; they name no file we could open.
    let is_protocol = name.starts_with("json:")
        || name.split_once("://").is_some_and(|(scheme, _)| !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+'));
    if is_protocol {
        return Err(file.unsupported("backing file name", 8, format!("backing file {name:?} is not a file name")));
    }
    Ok(ParentLink {
        candidates: vec![resolve_relative(&file.path, name)],
        hint: name.to_owned(),
        expect: None,
        format: header.backing_format,
    })
}

impl Layer for Qcow2Layer {
    fn format(&self) -> Format {
        Format::Qcow2
    }

    fn variant(&self) -> String {
        self.header.variant()
    }

    fn path(&self) -> &Path {
        &self.file.path
    }

    fn virtual_size(&self) -> u64 {
        self.header.size
    }

    fn status(&self, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        let end = offset.saturating_add(max_len).min(self.header.size);
        let (kind, mut pos) = self.table_run(offset, end)?;
        while pos < end {
            let (next, next_end) = self.table_run(pos, end)?;
            if next != kind {
                break;
            }
            pos = next_end;
        }
        Ok((kind, pos.min(end).saturating_sub(offset).max(1)))
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let cs = self.cluster_size();
        let internal = |host: u64| self.file.corrupt("guest data cluster", host, "buffer arithmetic failed (internal error)");
        // Adjacent host clusters are read with one call.
        let mut pending: Option<(u64, usize, usize)> = None; // (host, buf start, len)
        let flush = |pending: &mut Option<(u64, usize, usize)>, buf: &mut [u8]| -> Result<()> {
            if let Some((host, start, len)) = pending.take() {
                let dst = buf.get_mut(start..start + len).ok_or_else(|| internal(host))?;
                self.file.read("guest data cluster", host, dst)?;
            }
            Ok(())
        };
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let in_cluster = pos % cs;
            let n = (cs - in_cluster).min((buf.len() - done) as u64);
            let entry = self.tables.cluster(pos / cs)?;
            let (alloc, run_end) = self.cluster_run(&entry, in_cluster, in_cluster + n)?;
            if alloc != Allocation::Data || run_end < in_cluster + n {
                return Err(self.file.corrupt(
                    &entry.structure(),
                    entry.table,
                    format!("read of guest offset {pos} outside stored data (internal error)"),
                ));
            }
            let n_usize = n as usize;
            match entry.cluster {
                Cluster::Standard { host } | Cluster::Subclusters { host, .. } => {
                    let host = host + in_cluster;
                    match &mut pending {
                        Some((h, _, len)) if *h + *len as u64 == host => *len += n_usize,
                        _ => {
                            flush(&mut pending, buf)?;
                            pending = Some((host, done, n_usize));
                        }
                    }
                }
                Cluster::Compressed { host, len } => {
                    flush(&mut pending, buf)?;
                    let data = self.decompressed(&entry, host, len)?;
                    let src = data.get(in_cluster as usize..in_cluster as usize + n_usize);
                    let dst = buf.get_mut(done..done + n_usize);
                    match (src, dst) {
                        (Some(src), Some(dst)) => dst.copy_from_slice(src),
                        _ => return Err(internal(host)),
                    }
                }
                Cluster::Unallocated | Cluster::Zero => {} // excluded above
            }
            done += n_usize;
        }
        flush(&mut pending, buf)
    }

    fn parent(&self) -> Option<&ParentLink> {
        self.parent.as_ref()
    }
}

#[cfg(test)]
mod tests;

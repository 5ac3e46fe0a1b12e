//! The two-level cluster mapping: the L1 table (loaded whole when the image
//! is opened) and the L2 tables (one cluster each, loaded on demand through
//! a bounded cache), and the decoding of L2 entries into what a guest
//! cluster is.

use super::header::Header;
use crate::block::ImageFile;
use crate::cache::BoundedCache;
use crate::Result;
use std::sync::Arc;

/// qemu refuses L1 tables above 32 MiB (4 Mi entries); no qemu-made image
/// has one, so a larger one is a damaged or hostile header.
const MAX_L1_BYTES: u64 = 32 << 20;
/// Memory spent on cached L2 tables, whatever the cluster size.
const L2_CACHE_BYTES: u64 = 16 << 20;

/// L1 entry: bits 9-55 are the L2 table offset, bit 63 is COPIED (a
/// writer's refcount hint), everything else is reserved.
const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;

/// L2 entry flags and standard cluster descriptor fields.
const L2_COPIED: u64 = 1 << 63;
const L2_COMPRESSED: u64 = 1 << 62;
const L2_ZERO: u64 = 1;
const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_STANDARD_RESERVED: u64 = 0x3f00_0000_0000_01fe;

/// Subclusters per cluster with extended L2 entries.
pub const SUBCLUSTERS: u32 = 32;

/// What one guest cluster is, according to its L2 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cluster {
    /// Not in this file: the backing file supplies it.
    Unallocated,
    /// Reads as zeros (zero flag, version 3).
    Zero,
    /// Stored uncompressed at `host` (cluster-aligned).
    Standard { host: u64 },
    /// Stored compressed: `len` bytes at `host` (not aligned; the count is
    /// rounded up to whole sectors, so it may reach past the data).
    Compressed { host: u64, len: u64 },
    /// Extended L2 entry: per subcluster, allocated at `host + i *
    /// subcluster size` (bit i of `alloc`), zero (bit i of `zero`), or
    /// unallocated (neither).
    Subclusters { host: u64, alloc: u32, zero: u32 },
}

/// A decoded L2 entry and where it is in the file, for error messages.
#[derive(Clone, Copy, Debug)]
pub struct Located {
    pub cluster: Cluster,
    /// The raw descriptor (first 64 bits), a key for cached decompressions.
    pub raw: u64,
    /// Offset of the L2 table holding the entry; 0 when the L1 entry is empty.
    pub table: u64,
    pub index: u64,
}

impl Located {
    /// The name of the entry, for error messages.
    pub fn structure(&self) -> String {
        format!("L2 table at offset {} entry {}", self.table, self.index)
    }
}

pub struct Tables {
    file: ImageFile,
    cluster_bits: u32,
    /// log2 of the number of entries per L2 table.
    l2_bits: u32,
    extended_l2: bool,
    /// The zero flag exists from version 3 on, and not with extended L2.
    zero_flag: bool,
    l1_offset: u64,
    /// L2 table offsets, validated; 0 for "no L2 table".
    l1: Vec<u64>,
    /// Raw L2 entries by table offset (two words per entry with extended L2).
    l2_cache: BoundedCache<u64, Vec<u64>>,
}

impl Tables {
    pub fn load(file: &ImageFile, header: &Header) -> Result<Tables> {
        let cluster_bits = header.cluster_bits;
        let cluster_size = header.cluster_size();
        let entry_bytes_log2 = if header.extended_l2 { 4 } else { 3 };
        let l2_bits = cluster_bits - entry_bytes_log2;
        // Entries needed to map the whole disk; the header may declare more
        // (qemu leaves room to grow), never fewer.
        let guest_clusters = header.size.div_ceil(cluster_size);
        let needed = guest_clusters.div_ceil(1u64 << l2_bits);
        let l1_size = u64::from(header.l1_size);
        if l1_size < needed {
            return Err(file.corrupt(
                "qcow2 header",
                36,
                format!("l1_size {l1_size} is too small for a disk of {} bytes ({needed} entries needed)", header.size),
            ));
        }
        let l1_bytes = l1_size * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(file.unsupported("qcow2 header", 36, format!("l1_size {l1_size}: an L1 table of {l1_bytes} bytes exceeds qemu's limit of 32 MiB")));
        }
        let l1_offset = header.l1_table_offset;
        if l1_offset % cluster_size != 0 {
            return Err(file.corrupt("qcow2 header", 40, format!("L1 table offset {l1_offset} is not aligned to the cluster size {cluster_size}")));
        }
        if l1_offset.checked_add(l1_bytes).is_none_or(|end| end > file.size()) {
            return Err(file.corrupt(
                "L1 table",
                l1_offset,
                format!("{l1_size} entries ({l1_bytes} bytes) reach beyond the end of the file ({} bytes)", file.size()),
            ));
        }

        let file_size = file.size();
        let mut l1 = Vec::with_capacity(needed as usize);
        // Read in chunks so that a 32 MiB table does not exist twice in memory.
        let mut chunk = vec![0u8; (1 << 20).min(needed * 8) as usize];
        let mut index = 0u64;
        while index < needed {
            let n = (needed - index).min(chunk.len() as u64 / 8);
            let buf = chunk.get_mut(..(n * 8) as usize).unwrap_or_default();
            file.read("L1 table", l1_offset + index * 8, buf)?;
            for word in buf.chunks_exact(8) {
                let entry = u64::from_be_bytes(word.try_into().unwrap_or_default());
                let at = l1_offset + index * 8;
                let name = || format!("L1 table entry {index}");
                if entry & L1_RESERVED != 0 {
                    return Err(file.corrupt(&name(), at, format!("reserved bits set in {entry:#018x}")));
                }
                let l2 = entry & L1_OFFSET_MASK;
                if l2 % cluster_size != 0 {
                    return Err(file.corrupt(&name(), at, format!("L2 table offset {l2} is not aligned to the cluster size {cluster_size}")));
                }
                if l2 != 0 && l2.saturating_add(cluster_size) > file_size {
                    return Err(file.corrupt(
                        &name(),
                        at,
                        format!("points to an L2 table at offset {l2}, beyond the end of the file ({file_size} bytes)"),
                    ));
                }
                l1.push(l2);
                index += 1;
            }
        }

        Ok(Tables {
            file: file.clone(),
            cluster_bits,
            l2_bits,
            extended_l2: header.extended_l2,
            zero_flag: header.version >= 3 && !header.extended_l2,
            l1_offset,
            l1,
            l2_cache: BoundedCache::new((L2_CACHE_BYTES >> cluster_bits).max(4) as usize),
        })
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Guest bytes mapped by one L2 table.
    pub fn l2_span(&self) -> u64 {
        1 << (self.cluster_bits + self.l2_bits)
    }

    /// The L2 table for guest clusters of L1 entry `l1_index`, or `None`
    /// when the entry is empty (everything it maps is unallocated).
    pub fn table(&self, l1_index: u64) -> Result<Option<(u64, Arc<Vec<u64>>)>> {
        let l2 = usize::try_from(l1_index).ok().and_then(|i| self.l1.get(i)).copied().ok_or_else(|| {
            self.file.corrupt("L1 table", self.l1_offset, format!("no entry {l1_index} (internal error: offset outside the disk)"))
        })?;
        if l2 == 0 {
            return Ok(None);
        }
        let cluster_size = self.cluster_size();
        let table = self.l2_cache.get_or_load(l2, || -> Result<Vec<u64>> {
            let bytes = self.file.read_vec("L2 table", l2, cluster_size)?;
            Ok(bytes.chunks_exact(8).map(|w| u64::from_be_bytes(w.try_into().unwrap_or_default())).collect())
        })?;
        Ok(Some((l2, table)))
    }

    /// The entry for guest cluster `guest_cluster`.
    pub fn cluster(&self, guest_cluster: u64) -> Result<Located> {
        let l1_index = guest_cluster >> self.l2_bits;
        let index = guest_cluster & ((1 << self.l2_bits) - 1);
        match self.table(l1_index)? {
            None => Ok(Located { cluster: Cluster::Unallocated, raw: 0, table: 0, index }),
            Some((l2, table)) => self.decode(l2, &table, index),
        }
    }

    /// Decodes entry `index` of the L2 table at `l2`, checking every
    /// reserved bit and offset so that a damaged entry is an error rather
    /// than a read from the wrong place.
    pub fn decode(&self, l2: u64, table: &[u64], index: u64) -> Result<Located> {
        let words = if self.extended_l2 { 2 } else { 1 };
        let at = l2 + index * 8 * words;
        let word = |i: u64| usize::try_from(index * words + i).ok().and_then(|i| table.get(i)).copied();
        let (Some(entry), Some(bitmap)) = (word(0), if self.extended_l2 { word(1) } else { Some(0) }) else {
            return Err(self.file.corrupt("L2 table", l2, format!("no entry {index} (internal error)")));
        };
        let located = |cluster| Located { cluster, raw: entry, table: l2, index };
        let name = || located(Cluster::Unallocated).structure();
        let corrupt = |reason: String| self.file.corrupt(&name(), at, reason);
        let file_size = self.file.size();

        if entry & L2_COMPRESSED != 0 {
            // Compressed descriptor: x = 62 - (cluster_bits - 8) low bits of
            // byte offset, then the count of additional 512-byte sectors.
            let x = 70 - self.cluster_bits;
            let host = entry & ((1u64 << x) - 1);
            let sectors = (entry >> x) & ((1u64 << (62 - x)) - 1);
            if host >> 56 != 0 {
                return Err(corrupt(format!("compressed cluster offset {host} uses reserved bits 56 and above")));
            }
            if bitmap != 0 {
                return Err(corrupt(format!("compressed cluster with a non-zero subcluster bitmap {bitmap:#018x}")));
            }
            if host >= file_size {
                return Err(corrupt(format!(
                    "compressed cluster at offset {host} lies beyond the end of the file ({file_size} bytes)"
                )));
            }
            let len = (sectors + 1) * 512 - (host & 511);
            return Ok(located(Cluster::Compressed { host, len }));
        }

        let reserved = L2_STANDARD_RESERVED | if self.zero_flag { 0 } else { L2_ZERO };
        if entry & reserved != 0 {
            return Err(corrupt(format!("reserved bits set in {entry:#018x}")));
        }
        let host = entry & L2_OFFSET_MASK;
        if host % self.cluster_size() != 0 {
            return Err(corrupt(format!("data cluster offset {host} is not aligned to the cluster size {}", self.cluster_size())));
        }
        if self.zero_flag && entry & L2_ZERO != 0 {
            // A zero cluster may keep a preallocated host cluster; it is
            // never read.
            return Ok(located(Cluster::Zero));
        }
        if host == 0 && entry & L2_COPIED != 0 {
            // Host offset 0 with COPIED only exists with external data files.
            return Err(corrupt(format!("data cluster at host offset 0 (the header) in {entry:#018x}")));
        }
        if host >= file_size {
            return Err(corrupt(format!(
                "data cluster at offset {host} lies beyond the end of the file ({file_size} bytes): the image is truncated or the entry is corrupt"
            )));
        }
        if !self.extended_l2 {
            return Ok(located(if host == 0 { Cluster::Unallocated } else { Cluster::Standard { host } }));
        }
        let alloc = u32::try_from(bitmap & 0xffff_ffff).unwrap_or_default();
        let zero = u32::try_from(bitmap >> 32).unwrap_or_default();
        if alloc & zero != 0 {
            return Err(corrupt(format!("subclusters {:#010x} are marked both allocated and zero", alloc & zero)));
        }
        if host == 0 && alloc != 0 {
            return Err(corrupt(format!("subclusters {alloc:#010x} are allocated but the entry has no host cluster")));
        }
        Ok(located(Cluster::Subclusters { host, alloc, zero }))
    }
}

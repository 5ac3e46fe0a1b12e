//! qcow2 version 3 output, 64 KiB clusters, written in one pass: data
//! clusters and L2 tables are appended as the disk is read; the refcount
//! structures, the L1 table and the header are written at the end, when
//! every cluster's place is known. All-zero clusters are left unallocated
//! (there is no backing file, so they read as zeros).

use super::{Granule, ImageWriter};
use anyhow::{bail, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
const L2_ENTRIES: u64 = CLUSTER / 8;
/// Refcount entries are 16 bits (refcount_order 4).
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER / 2;
const OFLAG_COPIED: u64 = 1 << 63;
const HEADER_LEN: u32 = 104;

pub struct Qcow2Writer {
    file: File,
    size: u64,
    l1: Vec<u64>,
    l1_offset: u64,
    /// The L2 table being filled, and its index in L1.
    l2: Option<(u64, Vec<u64>)>,
    next_free: u64,
}

impl Qcow2Writer {
    pub fn new(file: File, size: u64) -> Result<Qcow2Writer> {
        let l1_entries = size.div_ceil(CLUSTER * L2_ENTRIES);
        if l1_entries > (32 << 20) / 8 {
            bail!("disk too large for a qcow2 with 64 KiB clusters");
        }
        let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER).max(1);
        Ok(Qcow2Writer {
            file,
            size,
            l1: vec![0; l1_entries as usize],
            l1_offset: CLUSTER,
            l2: None,
            next_free: CLUSTER * (1 + l1_clusters),
        })
    }

    fn alloc(&mut self) -> u64 {
        let off = self.next_free;
        self.next_free += CLUSTER;
        off
    }

    fn flush_l2(&mut self) -> Result<()> {
        if let Some((index, table)) = self.l2.take() {
            let off = self.alloc();
            let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.file.write_all_at(&bytes, off)?;
            self.l1[index as usize] = off | OFLAG_COPIED;
        }
        Ok(())
    }
}

impl ImageWriter for Qcow2Writer {
    fn granularity(&self) -> u64 {
        CLUSTER
    }

    fn write(&mut self, g: Granule<'_>) -> Result<()> {
        let cluster = g.offset / CLUSTER;
        let l1_index = cluster / L2_ENTRIES;
        if self.l2.as_ref().map(|l| l.0) != Some(l1_index) {
            self.flush_l2()?;
            self.l2 = Some((l1_index, vec![0; L2_ENTRIES as usize]));
        }
        let off = self.alloc();
        // A short final cluster is padded: the file holds whole clusters.
        self.file.write_all_at(g.data, off)?;
        if let Some((_, table)) = self.l2.as_mut() {
            table[(cluster % L2_ENTRIES) as usize] = off | OFLAG_COPIED;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush_l2()?;
        // Refcounts must cover every cluster, including the refcount table
        // and blocks themselves: grow until the count is stable.
        let used = self.next_free / CLUSTER;
        let (mut blocks, mut table_clusters) = (1u64, 1u64);
        loop {
            let total = used + blocks + table_clusters;
            let nb = total.div_ceil(REFCOUNTS_PER_BLOCK);
            let nt = (nb * 8).div_ceil(CLUSTER);
            if nb == blocks && nt == table_clusters {
                break;
            }
            blocks = nb;
            table_clusters = nt;
        }
        let table_off = self.next_free;
        let first_block = table_off + table_clusters * CLUSTER;
        let total = used + blocks + table_clusters;
        let mut table = vec![0u8; (table_clusters * CLUSTER) as usize];
        for b in 0..blocks {
            let off = first_block + b * CLUSTER;
            table[(b * 8) as usize..(b * 8 + 8) as usize].copy_from_slice(&off.to_be_bytes());
            let mut block = vec![0u8; CLUSTER as usize];
            let start = b * REFCOUNTS_PER_BLOCK;
            let end = ((b + 1) * REFCOUNTS_PER_BLOCK).min(total);
            for c in start..end {
                let i = ((c - start) * 2) as usize;
                block[i..i + 2].copy_from_slice(&1u16.to_be_bytes());
            }
            self.file.write_all_at(&block, off)?;
        }
        self.file.write_all_at(&table, table_off)?;
        let l1: Vec<u8> = self.l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.file.write_all_at(&l1, self.l1_offset)?;

        let mut h = vec![0u8; CLUSTER as usize];
        h[0..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
        h[24..32].copy_from_slice(&self.size.to_be_bytes());
        h[36..40].copy_from_slice(&(self.l1.len() as u32).to_be_bytes());
        h[40..48].copy_from_slice(&self.l1_offset.to_be_bytes());
        h[48..56].copy_from_slice(&table_off.to_be_bytes());
        h[56..60].copy_from_slice(&(table_clusters as u32).to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order: 16-bit
        h[100..104].copy_from_slice(&HEADER_LEN.to_be_bytes());
        // Bytes 104..112 stay zero: the end-of-extensions marker.
        self.file.write_all_at(&h, 0)?;
        self.file.set_len(first_block + blocks * CLUSTER)?;
        self.file.sync_all()?;
        Ok(())
    }
}

//! The manifest digest: SHA-256 hash list with 1 MiB leaves.
//!
//! `digest = SHA-256( SHA-256(block 0) || SHA-256(block 1) || ... )` over the
//! logical bytes, in 1 MiB blocks (the last one short). A plain SHA-256 of a
//! 64 GiB disk costs 64 GiB of hashing even when 1 GiB is allocated; with
//! leaves, every all-zero block has the same, precomputed leaf, so the cost
//! follows the allocated bytes. Anyone can check it without vbproxy:
//! `split -b 1M --filter='sha256sum | cut -c1-64 | xxd -r -p' disk.raw | sha256sum`.

use sha2::{Digest, Sha256};

pub const LEAF: u64 = 1 << 20;
pub const ALGORITHM: &str = "sha256-hashlist-1MiB";

pub struct HashList {
    outer: Sha256,
    zero_leaf: [u8; 32],
    /// Bytes covered so far (always a multiple of LEAF until the end).
    pub covered: u64,
}

impl Default for HashList {
    fn default() -> Self {
        HashList { outer: Sha256::new(), zero_leaf: Sha256::digest(vec![0u8; LEAF as usize]).into(), covered: 0 }
    }
}

impl HashList {
    /// The leaf of one block (full-size blocks; the last may be short).
    /// A full all-zero block, the commonest by far, costs a scan instead of
    /// a hash.
    pub fn leaf(block: &[u8]) -> [u8; 32] {
        static ZERO_LEAF: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        if block.len() as u64 == LEAF && block.iter().all(|&b| b == 0) {
            return *ZERO_LEAF.get_or_init(|| Sha256::digest(vec![0u8; LEAF as usize]).into());
        }
        Sha256::digest(block).into()
    }

    pub fn push_leaf(&mut self, leaf: &[u8; 32], len: u64) {
        self.outer.update(leaf);
        self.covered += len;
    }

    /// Adds `n` full all-zero blocks.
    pub fn push_zero_blocks(&mut self, n: u64) {
        for _ in 0..n {
            self.outer.update(self.zero_leaf);
        }
        self.covered += n * LEAF;
    }

    /// Adds a short all-zero final block.
    pub fn push_zero_tail(&mut self, len: u64) {
        let leaf = Self::leaf(&vec![0u8; len as usize]);
        self.push_leaf(&leaf, len);
    }

    pub fn finish(self) -> String {
        format!("{:x}", self.outer.finalize())
    }
}

/// Digest of a file, reading only its data extents (holes are zero blocks).
pub fn file_digest(path: &std::path::Path) -> std::io::Result<(u64, String)> {
    use guestfs::block::{FileSource, ReadAt};
    let src = FileSource::open(path).map_err(std::io::Error::other)?;
    let size = src.size();
    let mut h = HashList::default();
    let mut buf = vec![0u8; LEAF as usize];
    let mut off = 0;
    while off < size {
        let n = LEAF.min(size - off);
        // A block that is entirely a hole is a zero block without reading.
        let hole = matches!(src.extent_at(off), Some((false, len)) if len >= n);
        if hole && n == LEAF {
            h.push_zero_blocks(1);
        } else if hole {
            h.push_zero_tail(n);
        } else {
            src.read_exact_at(&mut buf[..n as usize], off)?;
            h.push_leaf(&HashList::leaf(&buf[..n as usize]), n);
        }
        off += n;
    }
    Ok((size, h.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_hash_like_real_zeros() {
        let mut a = HashList::default();
        a.push_zero_blocks(2);
        a.push_zero_tail(100);
        let mut b = HashList::default();
        let z = vec![0u8; LEAF as usize];
        b.push_leaf(&HashList::leaf(&z), LEAF);
        b.push_leaf(&HashList::leaf(&z), LEAF);
        b.push_leaf(&HashList::leaf(&z[..100]), 100);
        assert_eq!(a.finish(), b.finish());
    }
}

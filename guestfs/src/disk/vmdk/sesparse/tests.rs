//! Header and table edge cases on SEsparse files built in memory.

use super::*;
use crate::block::MemSource;
use std::sync::Arc;

const GD_SECTOR: u64 = 16;
const GT_SECTOR: u64 = 24;
const GRAINS_SECTOR: u64 = GT_SECTOR + 3 * 64;

/// An SEsparse file of `sectors` capacity with room for three grain tables
/// (the directory maps table t to slot n-1-t, to exercise the index
/// indirection) and grain table entries `entries` (grain index,
/// raw entry). Allocated entries get their grain filled with `index as u8`.
fn build(sectors: u64, entries: &[(u64, u64)]) -> Vec<u8> {
    let mut f = vec![0u8; (GRAINS_SECTOR * 512) as usize];
    let put = |f: &mut Vec<u8>, at: u64, v: u64| f[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
    put(&mut f, 0, 0xcafe_babe);
    put(&mut f, 8, 0x0000_0002_0000_0001);
    put(&mut f, 16, sectors);
    put(&mut f, 24, 8);
    put(&mut f, 32, 64);
    let regions = [(1, 1), (2, 2), (4, 4), (GD_SECTOR, 8), (GT_SECTOR, 3 * 64), (0, 0), (0, 0), (GRAINS_SECTOR, 1 << 20)];
    for (i, (o, s)) in regions.iter().enumerate() {
        put(&mut f, 80 + i as u64 * 16, *o);
        put(&mut f, 88 + i as u64 * 16, *s);
    }
    put(&mut f, 512, 0xcafe_cafe);
    let tables = sectors.div_ceil(8 * 4096);
    for t in 0..tables.min(3) {
        let slot = tables.min(3) - 1 - t;
        put(&mut f, GD_SECTOR * 512 + t * 8, 0x1000_0000_0000_0000 | slot);
    }
    for &(g, entry) in entries {
        let (t, i) = (g / 4096, g % 4096);
        let slot = tables.min(3) - 1 - t;
        put(&mut f, (GT_SECTOR + slot * 64) * 512 + i * 8, entry);
        // Indexes far out are there to be refused: no data for them.
        if entry >> 60 == 3 && entry & 0x0000_ffff_ffff_ffff < 16 {
            let index = ((entry & 0x0fff_0000_0000_0000) >> 48) | ((entry & 0x0000_ffff_ffff_ffff) << 12);
            let at = ((GRAINS_SECTOR + index * 8) * 512) as usize;
            if f.len() < at + 4096 {
                f.resize(at + 4096, 0);
            }
            f[at..at + 4096].fill(index as u8);
        }
    }
    f
}

/// The table entry of an allocated grain at `index`.
fn allocated(index: u64) -> u64 {
    0x3000_0000_0000_0000 | ((index & 0xfff) << 48) | (index >> 12)
}

fn open(bytes: Vec<u8>) -> Result<SeSparseExtent> {
    SeSparseExtent::open(ImageFile::new(Arc::new(MemSource(bytes)), "x-sesparse.vmdk"))
}

#[test]
fn entry_types_and_index_encoding() {
    // 32 MiB + 3 sectors: three tables, the last one holding only a
    // partial grain (3 of its 8 sectors inside the capacity).
    let sectors = 65536 + 3;
    let e = open(build(
        sectors,
        &[(0, allocated(5)), (1, allocated(4097)), (2, 0x1000_0000_0000_0007), (3, 0x2000_0000_0000_0000), (8192, allocated(1))],
    ))
    .unwrap();
    assert_eq!(e.size(), sectors * 512);
    assert_eq!(e.status(0, e.size()).unwrap(), (Allocation::Data, 8192));
    assert_eq!(e.status(8192, e.size() - 8192).unwrap(), (Allocation::Zero, 8192));
    assert_eq!(e.status(16384, e.size() - 16384).unwrap(), (Allocation::Unallocated, (32 << 20) - 16384));
    assert_eq!(e.status(32 << 20, 3 * 512).unwrap(), (Allocation::Data, 3 * 512));
    let mut b = vec![0u8; 8192 + 4096];
    e.read_data(0, &mut b).unwrap();
    assert!(b[..4096].iter().all(|&x| x == 5));
    assert!(b[4096..8192].iter().all(|&x| x == (4097u64 as u8)));
    assert!(b[8192..].iter().all(|&x| x == 0), "unmapped reads as zeros");
    let mut b = vec![0u8; 3 * 512];
    e.read_data(32 << 20, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 1));
}

fn expect_err(bytes: Vec<u8>, needle: &str) {
    let e = open(bytes).err().expect("open must fail").to_string();
    assert!(e.contains(needle) && e.contains("x-sesparse.vmdk"), "{e} lacks {needle:?}");
}

#[test]
fn header_errors() {
    let good = build(1000, &[]);
    let set = |at: usize, v: u64| {
        let mut b = good.clone();
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        b
    };
    expect_err(set(0, 0xcafe_babf), "bad magic");
    expect_err(set(8, 0x0000_0003_0000_0000), "version 3.0");
    expect_err(set(16, 1 << 60), "exceeds");
    expect_err(set(16, 0), "capacity is 0");
    expect_err(set(24, 16), "grain size");
    expect_err(set(32, 128), "grain table size");
    expect_err(set(40, 1), "flags");
    expect_err(set(56, 1), "reserved");
    expect_err(set(300, 1), "padding");
    expect_err(set(512, 0xcafe_babe), "volatile header at offset 512: bad magic");
    expect_err(set(512 + 24, 1), "replayJournal");
    expect_err(set(80 + 3 * 16, 4), "journal overlaps grain directory");
    expect_err(set(80 + 3 * 16, u64::MAX), "overflows");
    // Capacity needing more directory entries than the 8-sector region holds.
    expect_err(set(16, 8 * 4096 * 8 * 64 + 1), "cannot cover");
    expect_err(good[..8 * 512].to_vec(), "grain directory at offset 8192");
}

#[test]
fn table_entry_errors_name_entry_and_offset() {
    let status_err = |entries: &[(u64, u64)], needle: &str| {
        let e = open(build(1000, entries)).unwrap();
        let err = e.status(0, e.size()).unwrap_err().to_string();
        assert!(err.contains(needle), "{err} lacks {needle:?}");
    };
    let gt = GT_SECTOR * 512;
    status_err(&[(0, 0x0000_0000_0000_0001)], &format!("grain table 0 entry 0 at offset {gt}"));
    status_err(&[(1, 0x4000_0000_0000_0000)], &format!("grain table 0 entry 1 at offset {}: unknown grain entry", gt + 8));
    status_err(&[(0, allocated(1 << 20))], "outside the grain region");
    let mut b = build(1000, &[(0, allocated(3))]);
    b.truncate(b.len() - 1);
    let e = open(b).unwrap();
    assert!(e.status(0, 512).unwrap_err().to_string().contains("beyond the end of the file"));
    let mut b = build(1000, &[]);
    b[(GD_SECTOR * 512) as usize..(GD_SECTOR * 512) as usize + 8].copy_from_slice(&0x1000_0000_0000_0009u64.to_le_bytes());
    let e = open(b).unwrap();
    let err = e.status(0, 512).unwrap_err().to_string();
    assert!(err.contains(&format!("grain directory entry 0 at offset {}", GD_SECTOR * 512)), "{err}");
}

//! In-memory images built field by field: layouts qemu would never write
//! (damaged entries) and the decoding of every entry kind.

use super::header::tests::v3_header;
use super::*;
use crate::block::MemSource;
use crate::Error;

const CS: u64 = 0x10000;
const L1: usize = 0x10000;
const L2: usize = 0x20000;
const DATA: u64 = 0x30000;

/// v3, 64 KiB clusters, 1 MiB disk; L1 at cluster 1 pointing to an L2 table
/// at cluster 2; `extra` clusters of file after that.
fn image(extended: bool, extra: usize) -> Vec<u8> {
    let mut b = v3_header();
    if extended {
        b[72..80].copy_from_slice(&(1u64 << 4).to_be_bytes());
    }
    b.resize(0x30000 + extra * CS as usize, 0);
    b[L1..L1 + 8].copy_from_slice(&(L2 as u64 | 1 << 63).to_be_bytes());
    b
}

fn set_l2(b: &mut [u8], index: usize, entry: u64) {
    b[L2 + index * 8..L2 + index * 8 + 8].copy_from_slice(&entry.to_be_bytes());
}

fn set_ext_l2(b: &mut [u8], index: usize, entry: u64, bitmap: u64) {
    b[L2 + index * 16..L2 + index * 16 + 8].copy_from_slice(&entry.to_be_bytes());
    b[L2 + index * 16 + 8..L2 + index * 16 + 16].copy_from_slice(&bitmap.to_be_bytes());
}

fn open(b: Vec<u8>) -> Result<Qcow2Layer> {
    Qcow2Layer::open(ImageFile::new(Arc::new(MemSource(b)), "/vm/disk.qcow2"))
}

fn read(l: &Qcow2Layer, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    l.read_data(offset, &mut buf)?;
    Ok(buf)
}

#[test]
fn standard_zero_and_unallocated_clusters() {
    let mut b = image(false, 2);
    set_l2(&mut b, 0, DATA | 1 << 63);
    set_l2(&mut b, 1, (DATA + CS) | 1 << 63);
    set_l2(&mut b, 3, 1); // zero, no host cluster
    set_l2(&mut b, 4, (DATA + CS) | 1); // zero with preallocation: not read
    b[DATA as usize..DATA as usize + 2 * CS as usize].fill(0x5a);
    b[DATA as usize + CS as usize] = 0x77;
    let l = open(b).unwrap();
    assert_eq!(l.variant(), "v3");
    assert_eq!(l.status(0, 1 << 20).unwrap(), (Allocation::Data, 2 * CS));
    assert_eq!(l.status(100, 1000).unwrap(), (Allocation::Data, 1000));
    assert_eq!(l.status(2 * CS, (1 << 20) - 2 * CS).unwrap(), (Allocation::Unallocated, CS));
    assert_eq!(l.status(3 * CS + 5, 4 * CS).unwrap(), (Allocation::Zero, 2 * CS - 5));
    assert_eq!(l.status(5 * CS, 11 * CS).unwrap(), (Allocation::Unallocated, 11 * CS));
    let data = read(&l, CS - 2, 4).unwrap();
    assert_eq!(data, [0x5a, 0x5a, 0x77, 0x5a]);
}

#[test]
fn l2_entry_problems_are_errors_naming_the_entry() {
    let cases: [(u64, &str); 5] = [
        (0x0100_0000_0000_0000 | DATA, "reserved"),
        (DATA + 512, "aligned"),
        (0x7000_0000 | 1 << 63, "beyond the end"),
        (1 << 63, "host offset 0"),
        (2, "reserved"),
    ];
    for (entry, needle) in cases {
        let mut b = image(false, 1);
        set_l2(&mut b, 7, entry);
        let l = open(b).unwrap();
        let e = l.status(7 * CS, CS).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Corrupt { offset, .. } if offset == L2 as u64 + 7 * 8), "{msg}");
        assert!(msg.contains("entry 7") && msg.contains(needle), "{msg}");
    }
}

#[test]
fn data_cluster_cut_by_the_end_of_the_file_is_an_error() {
    let mut b = image(false, 1);
    set_l2(&mut b, 0, DATA);
    b.truncate(DATA as usize + 4096);
    let l = open(b).unwrap();
    assert_eq!(l.status(0, 4096).unwrap(), (Allocation::Data, 4096));
    let e = l.status(0, CS).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn l1_problems_are_errors_at_open() {
    let mut b = image(false, 0);
    b[L1..L1 + 8].copy_from_slice(&0x4000_0000u64.to_be_bytes());
    let e = open(b).err().unwrap().to_string();
    assert!(e.contains("L1 table entry 0") && e.contains("beyond the end"), "{e}");
    let mut b = image(false, 0);
    b[L1..L1 + 8].copy_from_slice(&(L2 as u64 | 0x100).to_be_bytes());
    assert!(open(b).is_err());
    // l1_size too large for the file, and too small for the disk.
    let mut b = image(false, 0);
    b[36..40].copy_from_slice(&0x0fff_ffffu32.to_be_bytes());
    assert!(open(b).err().unwrap().to_string().contains("L1 table"));
    let mut b = image(false, 0);
    b[24..32].copy_from_slice(&(1u64 << 40).to_be_bytes());
    assert!(open(b).err().unwrap().to_string().contains("too small"));
    let mut b = image(false, 0);
    b[40..48].copy_from_slice(&0x10200u64.to_be_bytes());
    assert!(open(b).is_err());
}

/// Raw deflate as qcow2 stores it (shared with `compressed`'s tests).
pub(super) fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let mut out = vec![0u8; data.len() + 1024];
    c.compress(data, &mut out, flate2::FlushCompress::Finish).unwrap();
    out.truncate(c.total_out() as usize);
    out
}

/// A compressed descriptor for 64 KiB clusters (x = 54).
fn compressed_entry(host: u64, len: u64) -> u64 {
    let sectors = (host % 512 + len).div_ceil(512) - 1;
    1 << 62 | sectors << 54 | host
}

#[test]
fn compressed_cluster_reads_and_damage_is_an_error() {
    let content: Vec<u8> = (0..CS).map(|i| (i / 7) as u8).collect();
    let stored = deflate(&content);
    let host = DATA + 100; // compressed data is not aligned
    let mut b = image(false, 1);
    b[host as usize..host as usize + stored.len()].copy_from_slice(&stored);
    set_l2(&mut b, 2, compressed_entry(host, stored.len() as u64));
    let l = open(b.clone()).unwrap();
    assert_eq!(l.status(2 * CS, CS).unwrap(), (Allocation::Data, CS));
    assert_eq!(read(&l, 2 * CS + 10, 1000).unwrap(), content[10..1010]);

    // The sector count reaching past the end of the file is normal.
    let mut cut = b.clone();
    cut.truncate(host as usize + stored.len());
    assert_eq!(read(&open(cut).unwrap(), 2 * CS, CS as usize).unwrap(), content);

    let mut bad = b.clone();
    bad[host as usize..host as usize + 40].fill(0xee);
    let e = read(&open(bad).unwrap(), 2 * CS, 512).unwrap_err().to_string();
    assert!(e.contains("compressed cluster") && e.contains("entry 2"), "{e}");

    let mut short = b;
    let half = deflate(&content[..1000]);
    short[host as usize..host as usize + half.len()].copy_from_slice(&half);
    assert!(read(&open(short).unwrap(), 2 * CS, 512).is_err());
}

#[test]
fn zstd_compressed_cluster() {
    let content: Vec<u8> = (0..CS).map(|i| (i / 13) as u8).collect();
    let stored = ruzstd::encoding::compress_to_vec(&content[..], ruzstd::encoding::CompressionLevel::Fastest);
    let mut b = image(false, 2);
    b[72..80].copy_from_slice(&(1u64 << 3).to_be_bytes());
    b[104] = 1;
    b[DATA as usize..DATA as usize + stored.len()].copy_from_slice(&stored);
    set_l2(&mut b, 0, compressed_entry(DATA, stored.len() as u64));
    let l = open(b).unwrap();
    assert_eq!(l.variant(), "v3 (zstd)");
    assert_eq!(read(&l, 0, CS as usize).unwrap(), content);
}

#[test]
fn extended_l2_subclusters() {
    let sub = CS / 32;
    let mut b = image(true, 1);
    // Subclusters 0-3 allocated, 4-5 zero, the rest unallocated.
    set_ext_l2(&mut b, 0, DATA | 1 << 63, 0x0000_0030_0000_000f);
    // Zero subclusters without a host cluster.
    set_ext_l2(&mut b, 1, 0, 0xffff_ffff_0000_0000);
    for (i, byte) in b[DATA as usize..DATA as usize + 4 * sub as usize].iter_mut().enumerate() {
        *byte = (i / sub as usize) as u8 + 1;
    }
    let l = open(b.clone()).unwrap();
    assert_eq!(l.variant(), "v3 (extended_l2)");
    assert_eq!(l.status(0, CS).unwrap(), (Allocation::Data, 4 * sub));
    assert_eq!(l.status(4 * sub, CS - 4 * sub).unwrap(), (Allocation::Zero, 2 * sub));
    assert_eq!(l.status(6 * sub, CS - 6 * sub).unwrap(), (Allocation::Unallocated, 26 * sub));
    assert_eq!(l.status(CS, CS).unwrap(), (Allocation::Zero, CS));
    assert_eq!(read(&l, sub - 1, 2).unwrap(), [1, 2]);

    let mut both = b.clone();
    set_ext_l2(&mut both, 0, DATA, 0x0000_0001_0000_0001);
    assert!(open(both).unwrap().status(0, CS).unwrap_err().to_string().contains("both"));
    let mut nohost = b.clone();
    set_ext_l2(&mut nohost, 0, 0, 1);
    assert!(open(nohost).unwrap().status(0, CS).is_err());
    let mut zero_bit = b;
    set_ext_l2(&mut zero_bit, 0, DATA | 1, 1);
    assert!(open(zero_bit).unwrap().status(0, CS).unwrap_err().to_string().contains("reserved"));
}

#[test]
fn version_2_has_no_zero_flag() {
    let mut b = image(false, 0);
    b[4..8].copy_from_slice(&2u32.to_be_bytes());
    b[72..112].fill(0);
    set_l2(&mut b, 0, 1);
    let l = open(b).unwrap();
    assert_eq!(l.variant(), "v2");
    assert!(l.status(0, CS).unwrap_err().to_string().contains("reserved"));
}

#[test]
fn backing_file_link() {
    let mut b = image(false, 0);
    let name = b"base.qcow2";
    b[8..16].copy_from_slice(&0x200u64.to_be_bytes());
    b[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
    b[0x200..0x200 + name.len()].copy_from_slice(name);
    let l = open(b.clone()).unwrap();
    let p = l.parent().unwrap();
    assert_eq!(p.candidates, [std::path::PathBuf::from("/vm/base.qcow2")]);
    assert_eq!((p.hint.as_str(), p.format, p.expect.clone()), ("base.qcow2", None, None));

    let abs = b"/data/base.raw";
    b[16..20].copy_from_slice(&(abs.len() as u32).to_be_bytes());
    b[0x200..0x200 + abs.len()].copy_from_slice(abs);
    assert_eq!(open(b.clone()).unwrap().parent().unwrap().candidates, [std::path::PathBuf::from("/data/base.raw")]);

    let url = b"nbd://host/x";
    b[16..20].copy_from_slice(&(url.len() as u32).to_be_bytes());
    b[0x200..0x200 + url.len()].copy_from_slice(url);
    assert!(matches!(open(b), Err(Error::Unsupported { .. })));
}

#[test]
fn hostile_sizes_fail_fast() {
    // Largest accepted virtual size with the smallest clusters: the L1
    // table it needs cannot fit in the file.
    let mut b = image(false, 0);
    b[20..24].copy_from_slice(&9u32.to_be_bytes());
    b[24..32].copy_from_slice(&(1u64 << 50).to_be_bytes());
    b[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
    b[40..48].copy_from_slice(&0x200u64.to_be_bytes());
    assert!(open(b).is_err());
}

//! qcow2 images made by qemu-img/qemu-io, read by vbproxy and compared
//! with qemu; damaged copies must fail cleanly, never read as zeros.
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use vbproxy_e2e::*;

const SIZE: u64 = 2 * GIB + 100 * MIB;
const KIB: u64 = 1024;

fn create(img: &Path, size: u64, opts: &[&str]) {
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).args(opts).arg(img).arg(size.to_string()));
}

/// `qemu-io -f qcow2 -c CMD...` for commands the harness has no helper for
/// (compressed writes).
fn qemu_io(img: &Path, cmds: &[String]) {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "qcow2"]);
    for c in cmds {
        cmd.args(["-c", c]);
    }
    run(cmd.arg(img));
}

/// Rewrites every file of a freshly built fixture with `cp --sparse=always`.
/// qemu leaves preallocated (unwritten) extents that read as zeros; ext4
/// reports them as holes until a read pulls them into the page cache and
/// then as data, which changes the harness's extent-based content digest
/// although no byte changed. A plain copy has only written data and holes.
fn settle(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let tmp = path.with_extension("settling");
        run(Command::new("cp").arg("--sparse=always").arg(&path).arg(&tmp));
        std::fs::rename(&tmp, &path).unwrap();
    }
}

/// A cached fixture, settled after `build`.
fn qcow2_fixture(name: &str, build: impl FnOnce(&Path)) -> PathBuf {
    fixture(name, |d| {
        build(d);
        settle(d);
    })
}

fn pattern(offset: u64, len: u64, byte: u8) -> GuestWrite {
    GuestWrite { offset, len, fill: Fill::Pattern(byte) }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A fixture with one image made by `qemu-img create` and the standard writes.
/// Image files are named after their fixture: the harness names scratch
/// directories after the image file, and tests run in parallel.
fn standard_fixture(name: &str, opts: &[&str]) -> PathBuf {
    let file = format!("{name}.qcow2");
    let dir = qcow2_fixture(name, |d| {
        let img = d.join(&file);
        create(&img, SIZE, opts);
        qemu_io_write(&img, "qcow2", &standard_writes(SIZE));
    });
    dir.join(file)
}

fn variant(img: &Path) -> String {
    let info: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["inspect", "--json", s(img)])).unwrap();
    info["disks"][0]["variant"].as_str().unwrap().to_owned()
}

/// Exports the disk with vbproxy and returns the bytes at the given ranges.
fn exported(img: &Path, ranges: &[(u64, usize)]) -> Vec<Vec<u8>> {
    let dir = scratch(&format!("qcow2-export-{}", img.file_name().unwrap().to_string_lossy()));
    let out = dir.join("out.raw");
    let guard = SourceGuard::new(&[img.parent().unwrap()]);
    vbproxy_ok(&["export", "--format", "raw-sparse", s(img), "-o", s(&out)]);
    guard.check();
    let f = std::fs::File::open(&out).unwrap();
    let r = ranges
        .iter()
        .map(|&(off, len)| {
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, off).unwrap();
            buf
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn assert_bytes(img: &Path, expect: &[(u64, usize, u8)]) {
    let ranges: Vec<(u64, usize)> = expect.iter().map(|&(o, l, _)| (o, l)).collect();
    for ((off, len, byte), got) in expect.iter().zip(exported(img, &ranges)) {
        assert!(got.iter().all(|b| b == byte), "{}: {len} bytes at {off} should all be {byte:#04x}", img.display());
    }
}

// ---------------------------------------------------------------- formats

#[test]
fn v3_default_matches_qemu() {
    let img = standard_fixture("qcow2-v3-v2", &[]);
    assert_matches_qemu(&img, &[img.parent().unwrap()]);
    assert_eq!(variant(&img), "v3");
}

#[test]
fn v2_compat_0_10_matches_qemu() {
    let img = standard_fixture("qcow2-v2-v2", &["-o", "compat=0.10"]);
    assert_matches_qemu(&img, &[img.parent().unwrap()]);
    assert_eq!(variant(&img), "v2");
}

#[test]
fn cluster_size_512_matches_qemu() {
    let img = standard_fixture("qcow2-c512-v2", &["-o", "cluster_size=512"]);
    assert_matches_qemu(&img, &[img.parent().unwrap()]);
}

#[test]
fn cluster_size_2m_matches_qemu() {
    let img = standard_fixture("qcow2-c2m-v2", &["-o", "cluster_size=2M"]);
    assert_matches_qemu(&img, &[img.parent().unwrap()]);
}

#[test]
fn extended_l2_matches_qemu() {
    let img = standard_fixture("qcow2-extl2-v2", &["-o", "extended_l2=on"]);
    assert_matches_qemu(&img, &[img.parent().unwrap()]);
    assert_eq!(variant(&img), "v3 (extended_l2)");
}

#[test]
fn unaligned_virtual_size_matches_qemu() {
    // The last cluster is only partly inside the disk.
    let size = 100 * MIB + 4096 + 512;
    let dir = qcow2_fixture("qcow2-odd-size-v2", |d| {
        let img = d.join("odd-size.qcow2");
        create(&img, size, &[]);
        qemu_io_write(&img, "qcow2", &standard_writes(size));
    });
    let img = dir.join("odd-size.qcow2");
    assert_matches_qemu(&img, &[&dir]);
}

#[test]
fn internal_snapshot_reads_the_active_state() {
    let dir = qcow2_fixture("qcow2-snapshot-v1", |d| {
        let img = d.join("snap.qcow2");
        create(&img, SIZE, &[]);
        qemu_io_write(&img, "qcow2", &[pattern(0, 2 * MIB, 0xa1), pattern(2 * GIB, MIB, 0xa2)]);
        run(Command::new("qemu-img").args(["snapshot", "-c", "before"]).arg(&img));
        qemu_io_write(&img, "qcow2", &[pattern(MIB, 64 * KIB, 0xb1), GuestWrite { offset: 2 * GIB, len: 64 * KIB, fill: Fill::Zeroes }]);
    });
    let img = dir.join("snap.qcow2");
    assert_matches_qemu(&img, &[&dir]);
    assert_bytes(&img, &[(0, MIB as usize, 0xa1), (MIB, 64 * KIB as usize, 0xb1), (2 * GIB, 64 * KIB as usize, 0), (2 * GIB + 64 * KIB, 64 * KIB as usize, 0xa2)]);
}

/// Content that compresses: qemu stores incompressible clusters uncompressed.
fn compressible_writes() -> Vec<GuestWrite> {
    let mut w = standard_writes(SIZE);
    w.push(pattern(64 * MIB, 4 * MIB, 0x3c));
    w.push(pattern(2 * GIB - 128 * KIB, 256 * KIB, 0x5d));
    w
}

/// Random nibbles: compresses to about half, so compressed clusters span
/// many sectors (pattern clusters fit in one).
fn half_compressible(d: &Path) -> PathBuf {
    let f = d.join("half.bin");
    std::fs::write(&f, pseudo_random(11, MIB as usize).iter().map(|b| b & 0x0f).collect::<Vec<u8>>()).unwrap();
    f
}

fn converted_fixture(name: &str, opts: &[&str]) -> PathBuf {
    let file = format!("{name}.qcow2");
    let dir = qcow2_fixture(name, |d| {
        let src = d.join("src.qcow2");
        create(&src, SIZE, &[]);
        qemu_io_write(&src, "qcow2", &compressible_writes());
        let half = half_compressible(d);
        qemu_io(&src, &[format!("write -q -s {} 32M 1M", half.display())]);
        std::fs::remove_file(&half).unwrap();
        let img = d.join(&file);
        run(Command::new("qemu-img").args(["convert", "-c", "-O", "qcow2"]).args(opts).arg(&src).arg(&img));
        std::fs::remove_file(&src).unwrap();
    });
    dir.join(file)
}

#[test]
fn compressed_deflate_convert_matches_qemu() {
    let img = converted_fixture("qcow2-deflate-v3", &[]);
    assert!(first_compressed_entry(&img).is_some(), "fixture has no compressed cluster");
    assert_matches_qemu(&img, &[img.parent().unwrap()]);
    assert_bytes(&img, &[(64 * MIB, 4 * MIB as usize, 0x3c), (2 * GIB - 128 * KIB, 256 * KIB as usize, 0x5d)]);
}

#[test]
fn compressed_zstd_convert_matches_qemu() {
    let img = converted_fixture("qcow2-zstd-v3", &["-o", "compression_type=zstd"]);
    assert!(first_compressed_entry(&img).is_some(), "fixture has no compressed cluster");
    assert_matches_qemu(&img, &[img.parent().unwrap()]);
    assert_eq!(variant(&img), "v3 (zstd)");
}

fn compressed_writes_fixture(name: &str, opts: &[&str]) -> PathBuf {
    let file = format!("{name}.qcow2");
    let dir = qcow2_fixture(name, |d| {
        let img = d.join(&file);
        create(&img, SIZE, opts);
        let rnd = d.join("random.bin");
        std::fs::write(&rnd, pseudo_random(7, 256 * 1024)).unwrap();
        let half = half_compressible(d);
        qemu_io(
            &img,
            &[
                format!("write -c -s {} 32M 1M", half.display()),
                "write -c -P 0x41 0 128k".into(),
                // Incompressible: qemu stores it as a normal cluster.
                format!("write -c -s {} 1M 256k", rnd.display()),
                "write -c -P 0x42 2097088k 128k".into(), // 2 GiB - 64 KiB, across 2 GiB
                "write -c -P 0x43 2150336k 64k".into(),  // last cluster of the disk
                // Overwrite half a compressed cluster: qemu rewrites it uncompressed.
                "write -P 0x44 32k 4k".into(),
            ],
        );
        std::fs::remove_file(&rnd).unwrap();
        std::fs::remove_file(&half).unwrap();
    });
    dir.join(file)
}

#[test]
fn compressed_writes_deflate_match_qemu() {
    let img = compressed_writes_fixture("qcow2-writec-v3", &[]);
    assert!(first_compressed_entry(&img).is_some());
    assert_matches_qemu(&img, &[img.parent().unwrap()]);
    assert_bytes(&img, &[(0, 32 * 1024, 0x41), (32 * 1024, 4096, 0x44), (2 * GIB - 64 * KIB, 128 * KIB as usize, 0x42)]);
}

#[test]
fn compressed_writes_zstd_match_qemu() {
    let img = compressed_writes_fixture("qcow2-writec-zstd-v3", &["-o", "compression_type=zstd"]);
    assert!(first_compressed_entry(&img).is_some());
    assert_matches_qemu(&img, &[img.parent().unwrap()]);
    assert_bytes(&img, &[(2150336 * KIB, 64 * KIB as usize, 0x43)]);
}

// ----------------------------------------------------------------- chains

/// base <- d1 <- d2, each with overlapping writes.
fn chain_fixture() -> PathBuf {
    qcow2_fixture("qcow2-chain-v2", |d| {
        let base = d.join("base.qcow2");
        create(&base, SIZE, &[]);
        let mut w = standard_writes(SIZE);
        w.push(pattern(16 * MIB, MIB, 0x11));
        w.push(pattern(2 * GIB - 64 * KIB, 128 * KIB, 0x12));
        qemu_io_write(&base, "qcow2", &w);
        // Relative backing names: the fixture directory is renamed into place.
        let d1 = d.join("d1.qcow2");
        create(&d1, SIZE, &["-b", "base.qcow2", "-F", "qcow2"]);
        qemu_io_write(&d1, "qcow2", &[pattern(16 * MIB + 512 * KIB, MIB, 0x21), pattern(2 * GIB, 4 * KIB, 0x22)]);
        let d2 = d.join("d2.qcow2");
        create(&d2, SIZE, &["-b", "d1.qcow2", "-F", "qcow2", "-o", "compat=0.10"]);
        qemu_io_write(&d2, "qcow2", &[pattern(17 * MIB, MIB, 0x31), pattern(2 * GIB - 4 * KIB, 2 * KIB, 0x32)]);
    })
}

#[test]
fn chain_top_reads_the_latest_writes() {
    let dir = chain_fixture();
    let top = dir.join("d2.qcow2");
    assert_matches_qemu(&top, &[&dir]);
    assert_bytes(
        &top,
        &[
            (16 * MIB, 512 * KIB as usize, 0x11),
            (16 * MIB + 512 * KIB, 512 * KIB as usize, 0x21),
            (17 * MIB, MIB as usize, 0x31),
            (2 * GIB - 64 * KIB, 60 * KIB as usize, 0x12),
            (2 * GIB - 4 * KIB, 2 * KIB as usize, 0x32),
            (2 * GIB - 2 * KIB, 2 * KIB as usize, 0x12),
            (2 * GIB, 4 * KIB as usize, 0x22),
            (2 * GIB + 4 * KIB, 60 * KIB as usize, 0x12),
        ],
    );
    let info: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["inspect", "--json", s(&top)])).unwrap();
    let chain = info["disks"][0]["chain"].as_array().unwrap();
    let names: Vec<&str> = chain.iter().map(|c| c["path"].as_str().unwrap().rsplit('/').next().unwrap()).collect();
    assert_eq!(names, ["d2.qcow2", "d1.qcow2", "base.qcow2"]);
    assert_eq!(chain[0]["variant"], "v2");
}

#[test]
fn chain_middle_and_base_read_their_own_state() {
    let dir = chain_fixture();
    let d1 = dir.join("d1.qcow2");
    assert_matches_qemu(&d1, &[&dir]);
    assert_bytes(&d1, &[(16 * MIB, 512 * KIB as usize, 0x11), (16 * MIB + 512 * KIB, MIB as usize, 0x21), (17 * MIB + 512 * KIB, 512 * KIB as usize, 0)]);
    let base = dir.join("base.qcow2");
    assert_matches_qemu(&base, &[&dir]);
    assert_bytes(&base, &[(16 * MIB, MIB as usize, 0x11), (17 * MIB, MIB as usize, 0), (2 * GIB, 4 * KIB as usize, 0x12)]);
}

#[test]
fn raw_backing_file_matches_qemu() {
    let dir = qcow2_fixture("qcow2-rawbacking-v3", |d| {
        let base = d.join("base.raw");
        run(Command::new("qemu-img").args(["create", "-q", "-f", "raw"]).arg(&base).arg(SIZE.to_string()));
        qemu_io_write(&base, "raw", &standard_writes(SIZE));
        let top = d.join("raw-top.qcow2");
        create(&top, SIZE, &["-b", "base.raw", "-F", "raw"]);
        qemu_io_write(&top, "qcow2", &[pattern(MIB, 4 * KIB, 0x77), pattern(7 * MIB + 100 * KIB, 8 * KIB, 0x78)]);
    });
    let top = dir.join("raw-top.qcow2");
    assert_matches_qemu(&top, &[&dir]);
    assert_bytes(&top, &[(MIB, 4096, 0x77), (MIB + 4096, 512, 0x22), (MIB + 4608, 512, 0), (7 * MIB + 100 * KIB, 8192, 0x78)]);
}

#[test]
fn backing_file_smaller_than_overlay_matches_qemu() {
    let dir = qcow2_fixture("qcow2-smallbacking-v3", |d| {
        let base = d.join("base.qcow2");
        create(&base, GIB, &[]);
        qemu_io_write(&base, "qcow2", &[pattern(GIB - MIB, MIB, 0x55), pattern(0, 64 * KIB, 0x56)]);
        let top = d.join("small-top.qcow2");
        create(&top, SIZE, &["-b", "base.qcow2", "-F", "qcow2"]);
        // A write straddling the end of the backing file, and one past it.
        qemu_io_write(&top, "qcow2", &[pattern(GIB - 16 * KIB, 32 * KIB, 0x66), pattern(GIB + MIB, 64 * KIB, 0x67)]);
    });
    let top = dir.join("small-top.qcow2");
    assert_matches_qemu(&top, &[&dir]);
    assert_bytes(
        &top,
        &[
            (GIB - MIB, (MIB - 16 * KIB) as usize, 0x55),
            (GIB - 16 * KIB, 32 * KIB as usize, 0x66),
            (GIB + 16 * KIB, MIB as usize - 16 * KIB as usize, 0),
            (GIB + MIB, 64 * KIB as usize, 0x67),
        ],
    );
}

#[test]
fn zero_clusters_hide_backing_data() {
    let dir = qcow2_fixture("qcow2-zero-over-backing-v3", |d| {
        let base = d.join("base.qcow2");
        create(&base, SIZE, &[]);
        qemu_io_write(&base, "qcow2", &[pattern(0, 8 * MIB, 0x99), pattern(2 * GIB - MIB, 2 * MIB, 0x98)]);
        let top = d.join("zero-top.qcow2");
        create(&top, SIZE, &["-b", "base.qcow2", "-F", "qcow2"]);
        qemu_io_write(
            &top,
            "qcow2",
            &[GuestWrite { offset: MIB, len: MIB, fill: Fill::Zeroes }, GuestWrite { offset: 2 * GIB - 64 * KIB, len: 128 * KIB, fill: Fill::Zeroes }],
        );
        let ext = d.join("top-extl2.qcow2");
        create(&ext, SIZE, &["-b", "base.qcow2", "-F", "qcow2", "-o", "extended_l2=on"]);
        // 4 KiB zero subclusters (64 KiB clusters) inside backed data.
        qemu_io_write(&ext, "qcow2", &[GuestWrite { offset: 3 * MIB + 4 * KIB, len: 8 * KIB, fill: Fill::Zeroes }, pattern(3 * MIB + 20 * KIB, 2 * KIB, 0x97)]);
    });
    let top = dir.join("zero-top.qcow2");
    assert_matches_qemu(&top, &[&dir]);
    assert_bytes(&top, &[(0, MIB as usize, 0x99), (MIB, MIB as usize, 0), (2 * MIB, MIB as usize, 0x99), (2 * GIB - 64 * KIB, 128 * KIB as usize, 0), (2 * GIB + 64 * KIB, 64 * KIB as usize, 0x98)]);
    let ext = dir.join("top-extl2.qcow2");
    assert_matches_qemu(&ext, &[&dir]);
    assert_bytes(
        &ext,
        &[(3 * MIB, 4 * KIB as usize, 0x99), (3 * MIB + 4 * KIB, 8 * KIB as usize, 0), (3 * MIB + 12 * KIB, 8 * KIB as usize, 0x99), (3 * MIB + 20 * KIB, 2 * KIB as usize, 0x97)],
    );
}

// ----------------------------------------------------------------- errors

fn be64(path: &Path, off: u64) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(path).unwrap().read_exact_at(&mut b, off).unwrap();
    u64::from_be_bytes(b)
}

fn be32(path: &Path, off: u64) -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open(path).unwrap().read_exact_at(&mut b, off).unwrap();
    u32::from_be_bytes(b)
}

fn patch(path: &Path, off: u64, bytes: &[u8]) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, off).unwrap();
}

/// A copy of a cached fixture image in a scratch directory.
fn damaged_copy(src: &Path, test: &str) -> PathBuf {
    let dir = scratch(&format!("qcow2-{test}"));
    let dst = dir.join(format!("damaged-{test}.qcow2"));
    std::fs::copy(src, &dst).unwrap();
    dst
}

/// Offset of the L2 table that L1 entry 0 points to.
fn first_l2_table(img: &Path) -> u64 {
    let l1 = be64(img, 40);
    be64(img, l1) & 0x00ff_ffff_ffff_fe00
}

/// File offset and value of the first compressed L2 entry (64 KiB
/// clusters, standard L2 entries), scanning every L2 table.
fn first_compressed_entry(img: &Path) -> Option<(u64, u64)> {
    assert_eq!(be32(img, 20), 16, "helper expects 64 KiB clusters");
    let l1 = be64(img, 40);
    for i in 0..u64::from(be32(img, 36)) {
        let l2 = be64(img, l1 + 8 * i) & 0x00ff_ffff_ffff_fe00;
        if l2 == 0 {
            continue;
        }
        for j in 0..8192 {
            let e = be64(img, l2 + 8 * j);
            if e & (1 << 62) != 0 {
                return Some((l2 + 8 * j, e));
            }
        }
    }
    None
}

/// `assert_clean_error`, with the binary built first: the harness starts
/// its 1 s clock before `vbproxy_bin()` builds the binary on first use.
fn clean_error(args: &[&str], code: i32, needles: &[&str]) -> String {
    vbproxy_bin();
    assert_clean_error(args, code, needles)
}

fn run_export_fails(img: &Path, needles: &[&str]) {
    let out = img.with_file_name("out.raw");
    clean_error(&["export", "--format", "raw-sparse", s(img), "-o", s(&out)], 1, needles);
    assert!(!out.exists(), "a failed export left {}", out.display());
}

#[test]
fn missing_backing_file_is_refused() {
    let dir = chain_fixture();
    let img = damaged_copy(&dir.join("d1.qcow2"), "missing-backing");
    clean_error(&["inspect", s(&img)], 3, &["damaged-", "base.qcow2", "not found"]);
}

#[test]
fn backing_loop_is_refused() {
    let dir = scratch("qcow2-loop");
    let (a, b) = (dir.join("a.qcow2"), dir.join("b.qcow2"));
    create(&a, 64 * MIB, &[]);
    create(&b, 64 * MIB, &["-b", "a.qcow2", "-F", "qcow2"]);
    run(Command::new("qemu-img").args(["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2"]).arg(&a));
    clean_error(&["inspect", s(&b)], 3, &["loops", "a.qcow2", "b.qcow2"]);
}

#[test]
fn truncated_image_is_an_error() {
    let img = damaged_copy(&standard_fixture("qcow2-v3-v2", &[]), "truncated");
    let len = std::fs::metadata(&img).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(len - 64 * KIB).unwrap();
    clean_error(&["inspect", s(&img)], 1, &["damaged-", "beyond the end of the file"]);
    run_export_fails(&img, &["damaged-", "beyond the end of the file"]);
}

#[test]
fn l1_entry_past_end_of_file_is_an_error() {
    let img = damaged_copy(&standard_fixture("qcow2-v3-v2", &[]), "l1-past-eof");
    let l1 = be64(&img, 40);
    patch(&img, l1, &(1u64 << 63 | 1 << 40).to_be_bytes());
    let needle = format!("offset {l1}");
    clean_error(&["inspect", s(&img)], 1, &["damaged-", "L1 table entry 0", &needle, "beyond the end of the file"]);
    run_export_fails(&img, &["damaged-", "L1 table entry 0"]);
}

#[test]
fn l2_entry_past_end_of_file_is_an_error() {
    let img = damaged_copy(&standard_fixture("qcow2-v3-v2", &[]), "l2-past-eof");
    let l2 = first_l2_table(&img);
    // Entry 0 maps guest offset 0, which the standard writes filled.
    assert_ne!(be64(&img, l2), 0);
    patch(&img, l2, &(1u64 << 63 | 1 << 40).to_be_bytes());
    let table = format!("L2 table at offset {l2} entry 0");
    clean_error(&["inspect", s(&img)], 1, &["damaged-", &table, "beyond the end of the file"]);
    run_export_fails(&img, &["damaged-", &table, "beyond the end of the file"]);
}

#[test]
fn huge_virtual_size_is_refused() {
    let img = damaged_copy(&standard_fixture("qcow2-v3-v2", &[]), "size-2-60");
    patch(&img, 24, &(1u64 << 60).to_be_bytes());
    clean_error(&["inspect", s(&img)], 1, &["damaged-", "qcow2 header", "offset 24", "virtual size"]);
}

#[test]
fn huge_l1_size_is_an_error() {
    let img = damaged_copy(&standard_fixture("qcow2-v3-v2", &[]), "l1-size");
    patch(&img, 36, &0x7fff_ffffu32.to_be_bytes());
    clean_error(&["inspect", s(&img)], 1, &["damaged-", "l1_size"]);
    patch(&img, 36, &4_000_000u32.to_be_bytes()); // 32 MB table: under qemu's cap, past the file
    clean_error(&["inspect", s(&img)], 1, &["damaged-", "L1 table", "beyond the end of the file"]);
}

#[test]
fn cluster_bits_out_of_range_is_refused() {
    let img = damaged_copy(&standard_fixture("qcow2-v3-v2", &[]), "cluster-bits");
    patch(&img, 20, &30u32.to_be_bytes());
    clean_error(&["inspect", s(&img)], 1, &["damaged-", "cluster_bits 30", "offset 20"]);
    patch(&img, 20, &8u32.to_be_bytes());
    clean_error(&["inspect", s(&img)], 1, &["damaged-", "cluster_bits 8"]);
}

#[test]
fn corrupt_compressed_cluster_is_an_error() {
    for (fixture_img, test) in [
        (converted_fixture("qcow2-deflate-v3", &[]), "bad-deflate"),
        (converted_fixture("qcow2-zstd-v3", &["-o", "compression_type=zstd"]), "bad-zstd"),
    ] {
        let img = damaged_copy(&fixture_img, test);
        let (at, entry) = first_compressed_entry(&img).unwrap();
        let host = entry & ((1 << 54) - 1);
        patch(&img, host, &[0xff; 64]);
        // Opening and mapping do not decompress; reading does.
        vbproxy_ok(&["inspect", s(&img)]);
        let l2 = at & !0xffff;
        let entry_name = format!("L2 table at offset {l2} entry {}", (at - l2) / 8);
        run_export_fails(&img, &["damaged-", "compressed cluster", &entry_name, "does not decompress"]);
    }
}

#[test]
fn encrypted_image_is_refused() {
    let dir = scratch("qcow2-encrypted");
    let img = dir.join("enc.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "--object", "secret,id=sec0,data=backup-test"])
        .args(["-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10"])
        .arg(&img)
        .arg("64M"));
    clean_error(&["inspect", s(&img)], 1, &["enc.qcow2", "encrypted", "LUKS"]);
}

#[test]
fn external_data_file_is_refused() {
    let dir = scratch("qcow2-external-data");
    let img = dir.join("ext.qcow2");
    create(&img, 64 * MIB, &["-o", "data_file=ext.raw"]);
    qemu_io_write(&img, "qcow2", &[pattern(0, MIB, 0x5e)]);
    clean_error(&["inspect", s(&img)], 1, &["ext.qcow2", "external data file"]);
}

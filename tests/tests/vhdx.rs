//! VHDX: dynamic, fixed and small-block images and a dirty log made by qemu,
//! differencing chains made by an independent generator
//! (`tests/fixtures/make_vhdx_diff.py`) and checked against libvhdi's
//! `vhdimount` where FUSE works, and error cases.
//!
//! qemu's vhdx driver has no block-status callback: `qemu-img map` reports
//! every byte of a VHDX as data, so the data map is checked against the
//! blocks the writes touched instead of against `qemu-img map` (bytes and
//! virtual size are still compared with qemu).
use std::path::{Path, PathBuf};
use std::process::Command;
use vbproxy_e2e::*;

const SIZE: u64 = 2 * GIB + 100 * MIB;

fn qemu_create(img: &Path, opts: &str, size: u64) {
    run(Command::new("qemu-img").args(["create", "-q", "-f", "vhdx", "-o", opts]).arg(img).arg(size.to_string()));
}

fn block_size(img: &Path) -> u64 {
    qemu_info(img)["cluster-size"].as_u64().expect("cluster-size")
}

/// Ranges of whole blocks touched by `writes`, coalesced.
fn touched_blocks(writes: &[GuestWrite], bs: u64, size: u64) -> Vec<(u64, u64)> {
    let mut blocks: Vec<u64> = writes.iter().flat_map(|w| w.offset / bs..(w.offset + w.len).div_ceil(bs)).collect();
    blocks.sort();
    blocks.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for b in blocks {
        let (s, l) = (b * bs, bs.min(size - b * bs));
        match out.last_mut() {
            Some(last) if last.0 + last.1 == s => last.1 += l,
            _ => out.push((s, l)),
        }
    }
    out
}

fn our_map(img: &Path) -> Vec<(u64, u64)> {
    let m: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["map", "--json", img.to_str().unwrap()])).unwrap();
    data_ranges(&m)
}

/// Every byte `vbproxy export` reads equals `expected` (a raw file), the
/// data map equals `data` (when given), and the sources are unchanged.
fn assert_export_equals(img: &Path, sources: &[&Path], expected: &Path, data: Option<&[(u64, u64)]>) {
    let guard = SourceGuard::new(sources);
    let dir = scratch(&format!("export-{}-{}", std::process::id(), img.file_name().unwrap().to_string_lossy()));
    let ours = dir.join("ours.raw");
    vbproxy_ok(&["export", "--format", "raw-sparse", img.to_str().unwrap(), "-o", ours.to_str().unwrap()]);
    assert_files_equal(&ours, expected);
    if let Some(data) = data {
        assert_eq!(our_map(img), data, "data map of {}", img.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
    guard.check();
}

/// Bytes and virtual size against qemu; data map against `data`.
fn assert_reads_like_qemu(img: &Path, sources: &[&Path], data: &[(u64, u64)]) {
    let dir = scratch(&format!("qemu-{}-{}", std::process::id(), img.file_name().unwrap().to_string_lossy()));
    let theirs = dir.join("qemu.raw");
    run(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(img).arg(&theirs));
    assert_export_equals(img, sources, &theirs, Some(data));
    let info: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["inspect", "--json", img.to_str().unwrap()])).unwrap();
    assert_eq!(info["disks"][0]["virtual_size"].as_u64(), Some(qemu_virtual_size(img)));
    let _ = std::fs::remove_dir_all(&dir);
}

fn dynamic_fixture() -> PathBuf {
    fixture("vhdx-dynamic-v1", |d| {
        let img = d.join("disk.vhdx");
        qemu_create(&img, "subformat=dynamic", SIZE);
        qemu_io_write(&img, "vhdx", &standard_writes(SIZE));
    })
}

#[test]
fn dynamic_reads_like_qemu() {
    let dir = dynamic_fixture();
    let img = dir.join("disk.vhdx");
    let data = touched_blocks(&standard_writes(SIZE), block_size(&img), SIZE);
    assert_reads_like_qemu(&img, &[&dir], &data);
    assert!(vbproxy_ok(&["inspect", img.to_str().unwrap()]).contains("dynamic"));
}

#[test]
fn fixed_reads_like_qemu() {
    let dir = fixture("vhdx-fixed-v1", |d| {
        let img = d.join("disk.vhdx");
        qemu_create(&img, "subformat=fixed", SIZE);
        qemu_io_write(&img, "vhdx", &standard_writes(SIZE));
    });
    let img = dir.join("disk.vhdx");
    // qemu makes "fixed" blocks PAYLOAD_BLOCK_ZERO (its block_state_zero
    // default) with their space reserved, and FULLY_PRESENT once written.
    let data = touched_blocks(&standard_writes(SIZE), block_size(&img), SIZE);
    assert_reads_like_qemu(&img, &[&dir], &data);
    assert!(vbproxy_ok(&["inspect", img.to_str().unwrap()]).contains("fixed"));
}

#[test]
fn one_mib_blocks_and_large_log_read_like_qemu() {
    let dir = fixture("vhdx-1m-blocks-v1", |d| {
        let img = d.join("disk.vhdx");
        qemu_create(&img, "subformat=dynamic,block_size=1M,log_size=4M", SIZE);
        qemu_io_write(&img, "vhdx", &standard_writes(SIZE));
    });
    let img = dir.join("disk.vhdx");
    assert_eq!(block_size(&img), MIB);
    let data = touched_blocks(&standard_writes(SIZE), MIB, SIZE);
    assert_reads_like_qemu(&img, &[&dir], &data);
}

// ---------------------------------------------------------------- layout

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

const BAT_GUID: [u8; 16] = [0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08];
const META_GUID: [u8; 16] = [0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e];
const FILE_PARAMS: [u8; 16] = [0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b];
const VDISK_SIZE: [u8; 16] = [0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8];

fn read_head(img: &Path, len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut b = vec![0u8; len];
    std::fs::File::open(img).unwrap().read_exact(&mut b).unwrap();
    b
}

/// File offset of a region (from region table 1).
fn region_offset(img: &Path, guid: &[u8; 16]) -> u64 {
    let b = read_head(img, 256 * 1024);
    let t = &b[192 * 1024..];
    (0..u32_at(t, 8) as usize).map(|i| 16 + 32 * i).find(|&e| &t[e..e + 16] == guid).map(|e| u64_at(t, e + 16)).expect("region")
}

/// File offset of a metadata item.
fn metadata_item(img: &Path, guid: &[u8; 16]) -> u64 {
    let m = region_offset(img, &META_GUID);
    let b = read_head(img, (m + 65536) as usize);
    let t = &b[m as usize..];
    let count = u16::from_le_bytes([t[10], t[11]]) as usize;
    (0..count).map(|i| 32 + 32 * i).find(|&e| &t[e..e + 16] == guid).map(|e| m + u32_at(t, e + 16) as u64).expect("item")
}

/// The current header's (offset, LogGuid, log offset).
fn current_header(img: &Path) -> (u64, [u8; 16], u64) {
    let b = read_head(img, 192 * 1024);
    let (h1, h2) = (&b[65536..69632], &b[131072..135168]);
    let h = if u64_at(h2, 8) > u64_at(h1, 8) { (131072u64, h2) } else { (65536u64, h1) };
    (h.0, h.1[48..64].try_into().unwrap(), u64_at(h.1, 72))
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn copy_to_scratch(src: &Path, test: &str) -> PathBuf {
    let dir = scratch(&format!("vhdx-{test}"));
    let dst = dir.join("disk.vhdx");
    // --sparse=always keeps multi-GiB fixtures cheap.
    run(Command::new("cp").arg("--sparse=always").arg(src).arg(&dst));
    dst
}

// ------------------------------------------------------------- dirty log

/// A dynamic disk with the standard content, then one more write during
/// which qemu-io is killed (by gdb, at the BAT update that follows the log
/// write): the new block's BAT entry exists only in the log.
fn dirty_fixture() -> PathBuf {
    fixture("vhdx-dirty-log-v1", |d| {
        let img = d.join("dirty.vhdx");
        qemu_create(&img, "subformat=dynamic", SIZE);
        qemu_io_write(&img, "vhdx", &standard_writes(SIZE));
        // qemu replays and clears its log after every write, and `abort`
        // comes too late: stop it between the log flush and the BAT write.
        let bat = region_offset(&img, &BAT_GUID);
        run(Command::new("gdb").args([
            "-q",
            "-batch",
            "-ex",
            "set breakpoint pending on",
            "-ex",
            &format!("break pwrite64 if $rcx == {bat}"),
            "-ex",
            "run",
            "-ex",
            "kill",
            "--args",
            "qemu-io",
            "-f",
            "vhdx",
            "-c",
            &format!("write -q -P 119 {} 65536", 100 * MIB),
        ])
        .arg(&img));
        let (_, log_guid, _) = current_header(&img);
        assert_ne!(log_guid, [0u8; 16], "qemu-io was not stopped with a dirty log");
    })
}

#[test]
fn dirty_log_is_replayed_in_memory() {
    let dir = dirty_fixture();
    let img = dir.join("dirty.vhdx");
    let (_, log_guid, _) = current_header(&img);
    assert_ne!(log_guid, [0u8; 16]);
    // Oracle: a copy repaired by qemu (which replays the log on open).
    let work = scratch("vhdx-dirty-oracle");
    let repaired = work.join("repaired.vhdx");
    run(Command::new("cp").arg("--sparse=always").arg(&img).arg(&repaired));
    run(Command::new("qemu-img").args(["check", "-q", "-r", "all"]).arg(&repaired));
    let theirs = work.join("qemu.raw");
    run(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(&repaired).arg(&theirs));
    let mut writes = standard_writes(SIZE);
    writes.push(GuestWrite { offset: 100 * MIB, len: 65536, fill: Fill::Pattern(119) });
    let data = touched_blocks(&writes, block_size(&repaired), SIZE);
    // The block written last is only reachable through the log.
    assert!(data.iter().any(|&(s, l)| s <= 100 * MIB && 100 * MIB < s + l));
    assert_export_equals(&img, &[&dir], &theirs, Some(&data));
    let (_, still, _) = current_header(&img);
    assert_eq!(still, log_guid, "the dirty original must stay dirty");
}

#[test]
fn corrupt_dirty_log_is_refused() {
    let img = copy_to_scratch(&dirty_fixture().join("dirty.vhdx"), "bad-log");
    let (_, _, log_offset) = current_header(&img);
    // Damage the entry's data sector (first entry at the start of the log).
    let mut b = [0u8; 1];
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&img).unwrap();
        f.seek(SeekFrom::Start(log_offset + 4096 + 100)).unwrap();
        f.read_exact(&mut b).unwrap();
    }
    patch(&img, log_offset + 4096 + 100, &[b[0] ^ 0xff]);
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["disk.vhdx", "log entry", "CRC-32C", &log_offset.to_string()]);
}

// ----------------------------------------------------------- differencing

fn generator() -> PathBuf {
    workspace().join("tests/fixtures/make_vhdx_diff.py")
}

/// One guest write of a differencing child: (offset, length, byte).
type ChildWrite = (u64, u64, u8);

fn make_child(parent: &Path, child: &Path, block_size: u64, rel: &str, writes: &[ChildWrite], zero_blocks: &[u64], seed: u64) {
    let spec = serde_json::json!({
        "size": SIZE, "block_size": block_size, "sector": 512, "seed": seed,
        "relative_path": rel, "absolute_win32_path": format!("C:\\Hyper-V\\Disks\\{}", rel.trim_start_matches(".\\")),
        "writes": writes.iter().map(|w| serde_json::json!([w.0, w.1, w.2])).collect::<Vec<_>>(),
        "zero_blocks": zero_blocks,
    });
    let spec_path = child.with_extension("json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    run(Command::new("python3").arg(generator()).arg(parent).arg(child).arg(&spec_path));
    std::fs::remove_file(spec_path).unwrap();
}

const CHILD1_BLOCK: u64 = 2 * MIB;
const CHILD1: &[ChildWrite] = &[
    (512, 1024, 0x11),                   // partial block over the base's data
    (4 * MIB, 2 * MIB, 0x12),            // a full block
    (2 * GIB - 512, 8192, 0x13),         // partial blocks on both sides of 2 GiB
];
const CHILD1_ZERO_BLOCKS: &[u64] = &[4]; // 8..10 MiB: zeros over the base's data
const CHILD2_BLOCK: u64 = MIB;
const CHILD2: &[ChildWrite] = &[
    (0, 512, 0x21),
    (1024, 512, 0x22),                   // over child1's write
    (4 * MIB + 4096, 4096, 0x23),        // inside child1's full block
    (100 * MIB, MIB, 0x24),
];

/// base.vhdx (qemu, standard content) <- child1.vhdx <- child2.vhdx.
fn chain_fixture() -> PathBuf {
    fixture("vhdx-chain-v1", |d| {
        let base = d.join("base.vhdx");
        qemu_create(&base, "subformat=dynamic", SIZE);
        qemu_io_write(&base, "vhdx", &standard_writes(SIZE));
        make_child(&base, &d.join("child1.vhdx"), CHILD1_BLOCK, ".\\base.vhdx", CHILD1, CHILD1_ZERO_BLOCKS, 1);
        make_child(&d.join("child1.vhdx"), &d.join("child2.vhdx"), CHILD2_BLOCK, "child1.vhdx", CHILD2, &[], 2);
    })
}

/// The base's content (qemu) with the children's writes applied.
fn expected_raw(base: &Path, out: &Path, layers: &[(&[ChildWrite], &[u64], u64)]) {
    run(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(base).arg(out));
    for (writes, zero_blocks, bs) in layers {
        for &(off, len, byte) in writes.iter() {
            patch(out, off, &vec![byte; len as usize]);
        }
        for &b in zero_blocks.iter() {
            patch(out, b * bs, &vec![0u8; *bs as usize]);
        }
    }
}

/// libvhdi's view of a differencing child through FUSE, when available.
struct VhdiMount {
    dir: PathBuf,
}

impl VhdiMount {
    fn new(image: &Path, name: &str) -> Option<VhdiMount> {
        let dir = scratch(&format!("vhdimount-{name}"));
        let ok = Command::new("vhdimount").arg(image).arg(&dir).current_dir(image.parent().unwrap()).status().ok()?.success();
        (ok && dir.join("vhdi1").exists()).then_some(VhdiMount { dir })
    }
    /// vhdimount lists the parent chain too; the child is the last one.
    fn top(&self) -> PathBuf {
        let mut names: Vec<_> = std::fs::read_dir(&self.dir).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        names.pop().unwrap()
    }
}

impl Drop for VhdiMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn differencing_chain_reads_last_write() {
    let dir = chain_fixture();
    let (base, child1, child2) = (dir.join("base.vhdx"), dir.join("child1.vhdx"), dir.join("child2.vhdx"));
    let info = vbproxy_ok(&["inspect", child2.to_str().unwrap()]);
    assert!(info.contains("differencing") && info.contains("3 layers"), "{info}");

    let work = scratch("vhdx-chain-expected");
    let top = work.join("top.raw");
    expected_raw(&base, &top, &[(CHILD1, CHILD1_ZERO_BLOCKS, CHILD1_BLOCK), (CHILD2, &[], CHILD2_BLOCK)]);
    assert_export_equals(&child2, &[&dir], &top, None);
    let mid = work.join("child1.raw");
    expected_raw(&base, &mid, &[(CHILD1, CHILD1_ZERO_BLOCKS, CHILD1_BLOCK)]);
    assert_export_equals(&child1, &[&dir], &mid, None);
    // The base alone is the state before the snapshots.
    let data = touched_blocks(&standard_writes(SIZE), block_size(&base), SIZE);
    assert_reads_like_qemu(&base, &[&dir], &data);

    // Independent reader: libvhdi (vhdimount) on the top and the middle.
    // libvhdi 20210425 reads a PAYLOAD_BLOCK_ZERO block of a differencing
    // disk from the parent; MS-VHDX defines the state as zeros for every
    // disk type (otherwise it would mean NOT_PRESENT). Its view is therefore
    // compared with the expected content minus child1's zero block.
    let libvhdi_top = work.join("libvhdi-top.raw");
    expected_raw(&base, &libvhdi_top, &[(CHILD1, &[], CHILD1_BLOCK), (CHILD2, &[], CHILD2_BLOCK)]);
    let libvhdi_mid = work.join("libvhdi-mid.raw");
    expected_raw(&base, &libvhdi_mid, &[(CHILD1, &[], CHILD1_BLOCK)]);
    for (img, expected, name) in [(&child2, &libvhdi_top, "top"), (&child1, &libvhdi_mid, "mid")] {
        match VhdiMount::new(img, name) {
            Some(m) => assert_files_equal(expected, &m.top()),
            None => eprintln!("vhdimount unavailable (no FUSE?): {name} checked against the generator's expected content only"),
        }
    }
}

#[test]
fn differencing_map_names_the_layer() {
    let dir = chain_fixture();
    let child2 = dir.join("child2.vhdx");
    let m: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["map", "--json", child2.to_str().unwrap()])).unwrap();
    let depth_at = |off: u64| -> (i64, bool) {
        let e = m.as_array().unwrap().iter().find(|e| {
            let (s, l) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            s <= off && off < s + l
        });
        let e = e.unwrap();
        (e["depth"].as_i64().unwrap(), e["data"].as_bool().unwrap())
    };
    assert_eq!(depth_at(0), (0, true)); // child2's sector
    assert_eq!(depth_at(512), (1, true)); // child1's sector
    assert_eq!(depth_at(1024), (0, true));
    assert_eq!(depth_at(1536), (2, true)); // base's random data
    assert_eq!(depth_at(4 * MIB), (1, true));
    assert_eq!(depth_at(4 * MIB + 4096), (0, true));
    assert_eq!(depth_at(8 * MIB + 4096).1, false); // child1's zero block
    assert_eq!(depth_at(100 * MIB), (0, true));
}

// ------------------------------------------------------------ error cases

#[test]
fn missing_parent_is_refused() {
    let dir = scratch("vhdx-missing-parent");
    let child = dir.join("child1.vhdx");
    std::fs::copy(chain_fixture().join("child1.vhdx"), &child).unwrap();
    assert_clean_error(&["inspect", child.to_str().unwrap()], 3, &["child1.vhdx", "base.vhdx", "not found"]);
}

#[test]
fn parent_with_other_data_write_guid_is_refused() {
    let dir = scratch("vhdx-parent-mismatch");
    let src = chain_fixture();
    std::fs::copy(src.join("child1.vhdx"), dir.join("child1.vhdx")).unwrap();
    run(Command::new("cp").arg("--sparse=always").arg(src.join("base.vhdx")).arg(dir.join("base.vhdx")));
    // Writing to the parent after the snapshot changes its DataWriteGuid.
    run(Command::new("qemu-io").args(["-f", "vhdx", "-c", "write -q -P 1 0 512"]).arg(dir.join("base.vhdx")));
    assert_clean_error(&["inspect", dir.join("child1.vhdx").to_str().unwrap()], 3, &["child1.vhdx", "base.vhdx", "DataWriteGuid"]);
}

#[test]
fn parent_loop_is_refused() {
    let dir = scratch("vhdx-loop");
    let me = dir.join("self.vhdx");
    make_child(&chain_fixture().join("base.vhdx"), &me, MIB, ".\\self.vhdx", &[(0, 512, 1)], &[], 3);
    assert_clean_error(&["inspect", me.to_str().unwrap()], 3, &["loops", "self.vhdx"]);
}

#[test]
fn both_headers_corrupt_is_refused() {
    let img = copy_to_scratch(&dynamic_fixture().join("disk.vhdx"), "bad-headers");
    patch(&img, 65536 + 200, b"XX");
    patch(&img, 131072 + 200, b"XX");
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["disk.vhdx", "VHDX header", "65536", "neither header"]);
}

#[test]
fn truncated_file_is_refused() {
    let img = copy_to_scratch(&dynamic_fixture().join("disk.vhdx"), "truncated");
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(MIB + 512 * 1024).unwrap();
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["disk.vhdx", "region table entry", "beyond the end of the file"]);
}

#[test]
fn bat_entry_past_end_of_file_is_refused() {
    let img = copy_to_scratch(&dynamic_fixture().join("disk.vhdx"), "bat-past-end");
    let bat = region_offset(&img, &BAT_GUID);
    // Block 0: fully present, at 1 TiB.
    patch(&img, bat, &((1u64 << 20) << 20 | 6).to_le_bytes());
    let needles = ["disk.vhdx", "BAT entry 0", &bat.to_string(), "outside the file"];
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &needles);
    let out = img.with_extension("raw");
    assert_clean_error(&["export", "--format", "raw-sparse", img.to_str().unwrap(), "-o", out.to_str().unwrap()], 1, &needles);
}

#[test]
fn huge_virtual_size_is_refused() {
    let img = copy_to_scratch(&dynamic_fixture().join("disk.vhdx"), "huge-size");
    let at = metadata_item(&img, &VDISK_SIZE);
    patch(&img, at, &(1u64 << 60).to_le_bytes());
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["disk.vhdx", "virtual disk size", &at.to_string(), "larger than"]);
}

#[test]
fn absurd_block_size_is_refused() {
    let img = copy_to_scratch(&dynamic_fixture().join("disk.vhdx"), "block-size");
    let at = metadata_item(&img, &FILE_PARAMS);
    patch(&img, at, &(1u32 << 31).to_le_bytes());
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["disk.vhdx", "file parameters", &at.to_string(), "block size"]);
}

//! VHD (qemu's `vpc`): fixed and dynamic disks made by qemu-img and checked
//! against qemu; differencing chains made by an independent generator
//! written from the VHD specification (tests/fixtures/make_vhd_differencing.py;
//! no Debian package creates differencing VHDs and qemu cannot read them),
//! checked against libvhdi (python3-libvhdi) reading the same chain.
use std::path::{Path, PathBuf};
use std::process::Command;
use vbproxy_e2e::*;

const SIZE: u64 = 2 * GIB + 100 * MIB;

/// qemu's virtual size of a VHD; `-f vpc` because qemu probes fixed VHDs
/// (no magic at offset 0) as raw.
fn vpc_virtual_size(img: &Path) -> u64 {
    let info: serde_json::Value =
        serde_json::from_str(&qemu_img(&["info", "-f", "vpc", "--output=json", img.to_str().unwrap()])).unwrap();
    info["virtual-size"].as_u64().unwrap()
}

fn qemu_vpc(dir: &Path, name: &str, opts: &str) -> PathBuf {
    let img = dir.join(name);
    run(Command::new("qemu-img").args(["create", "-q", "-f", "vpc", "-o", opts]).arg(&img).arg(SIZE.to_string()));
    let size = vpc_virtual_size(&img);
    qemu_io_write(&img, "vpc", &standard_writes(size));
    img
}

fn dynamic_fixture() -> PathBuf {
    fixture("vhd-dynamic-v1", |d| {
        qemu_vpc(d, "disk.vhd", "subformat=dynamic");
    })
    .join("disk.vhd")
}

fn dynamic_force_fixture() -> PathBuf {
    fixture("vhd-dynamic-force-v1", |d| {
        qemu_vpc(d, "disk.vhd", "subformat=dynamic,force_size=on");
    })
    .join("disk.vhd")
}

#[test]
fn dynamic_disk_reads_like_qemu() {
    let img = dynamic_fixture();
    assert_matches_qemu(&img, &[img.parent().unwrap()]);
}

#[test]
fn dynamic_disk_with_force_size_reads_like_qemu() {
    let img = dynamic_force_fixture();
    // force_size keeps the requested size; without it qemu rounds up to
    // whole CHS cylinders, so both size rules are exercised.
    assert_eq!(qemu_virtual_size(&img), SIZE);
    assert_matches_qemu(&img, &[img.parent().unwrap()]);
}

/// `assert_matches_qemu` for fixed disks, which qemu only reads as VHD when
/// told (`-f vpc`): without it, qemu probes them as raw (no magic at 0).
fn assert_fixed_matches_qemu(img: &Path) {
    let dir = img.parent().unwrap();
    let guard = SourceGuard::new(&[dir]);
    let out = scratch(&format!("fixed-cmp-{}", img.parent().unwrap().file_name().unwrap().to_string_lossy()));
    let (theirs, ours) = (out.join("qemu.raw"), out.join("ours.raw"));
    run(Command::new("qemu-img").args(["convert", "-f", "vpc", "-O", "raw"]).arg(img).arg(&theirs));
    vbproxy_ok(&["export", "--format", "raw-sparse", img.to_str().unwrap(), "-o", ours.to_str().unwrap()]);
    assert_files_equal(&ours, &theirs);
    // qemu marks all of a fixed disk as data, and holes of the host file as
    // zero; we report those holes as zero ranges, so compare our data with
    // qemu's data that is not zero.
    let qmap: serde_json::Value =
        serde_json::from_str(&qemu_img(&["map", "-f", "vpc", "--output=json", img.to_str().unwrap()])).unwrap();
    let qmap: Vec<serde_json::Value> =
        qmap.as_array().unwrap().iter().filter(|e| e["zero"] == false).cloned().collect();
    let omap: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["map", "--json", img.to_str().unwrap()])).unwrap();
    assert_eq!(data_ranges(&omap), data_ranges(&serde_json::Value::Array(qmap)));
    let ours: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["inspect", "--json", img.to_str().unwrap()])).unwrap();
    assert_eq!(ours["disks"][0]["virtual_size"].as_u64(), Some(vpc_virtual_size(img)));
    assert_eq!(ours["disks"][0]["variant"], "fixed");
    let _ = std::fs::remove_dir_all(&out);
    guard.check();
}

#[test]
fn fixed_disk_reads_like_qemu() {
    let dir = fixture("vhd-fixed-v1", |d| {
        qemu_vpc(d, "disk.vhd", "subformat=fixed");
    });
    assert_fixed_matches_qemu(&dir.join("disk.vhd"));
}

#[test]
fn fixed_disk_with_force_size_reads_like_qemu() {
    let dir = fixture("vhd-fixed-force-v1", |d| {
        qemu_vpc(d, "disk.vhd", "subformat=fixed,force_size=on");
    });
    assert_fixed_matches_qemu(&dir.join("disk.vhd"));
}

// ---------------------------------------------------------------- chains

fn python() -> Command {
    // The system interpreter: python3-libvhdi installs its module there.
    Command::new("/usr/bin/python3")
}

fn fixture_script(name: &str) -> PathBuf {
    workspace().join("tests/fixtures").join(name)
}

/// A write to a differencing disk made by the generator.
struct DiffWrite {
    offset: u64,
    len: u64,
    fill: Fill,
}

fn make_differencing(out: &Path, parent: Option<&Path>, extra: &[&str], writes: &[DiffWrite]) {
    let mut cmd = python();
    cmd.arg(fixture_script("make_vhd_differencing.py")).arg(out);
    if let Some(p) = parent {
        cmd.arg("--parent").arg(p);
    }
    cmd.args(extra);
    let mut tmp = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        let what = match w.fill {
            Fill::Pattern(p) => format!("pattern={p}"),
            Fill::Random(seed) => {
                let f = out.with_extension(format!("src{i}"));
                std::fs::write(&f, pseudo_random(seed, w.len as usize)).unwrap();
                tmp.push(f.clone());
                format!("file={}", f.display())
            }
            Fill::Zeroes => "pattern=0".to_string(),
        };
        cmd.arg("--write").arg(format!("{}:{}:{what}", w.offset, w.len));
    }
    run(&mut cmd);
    for f in tmp {
        let _ = std::fs::remove_file(f);
    }
}

fn snap1_writes(size: u64) -> Vec<DiffWrite> {
    use Fill::*;
    vec![
        DiffWrite { offset: 0, len: 8192, fill: Pattern(0xa1) },
        DiffWrite { offset: 7 * MIB + 1536, len: MIB, fill: Random(11) },
        DiffWrite { offset: 2 * GIB - 4096, len: 16384, fill: Pattern(0xa2) },
        DiffWrite { offset: 100 * MIB, len: 4096, fill: Pattern(0xa3) },
        DiffWrite { offset: size - 1024, len: 512, fill: Pattern(0xa4) },
    ]
}

fn snap2_writes(size: u64) -> Vec<DiffWrite> {
    use Fill::*;
    vec![
        DiffWrite { offset: 4096, len: 8192, fill: Pattern(0xb1) },
        DiffWrite { offset: 8 * MIB, len: 4096, fill: Pattern(0xb2) },
        DiffWrite { offset: 2 * GIB, len: 1024, fill: Pattern(0xb3) },
        DiffWrite { offset: 50 * MIB + 512, len: 512, fill: Random(12) },
        DiffWrite { offset: size - 512, len: 512, fill: Pattern(0xb5) },
    ]
}

/// The same writes widened to whole 4 KiB pages: libvhdi 20210425 (the
/// oracle) misreads sector bitmap bytes that are only partly set (after a
/// set bit it takes the rest of the byte from the child), so the chain
/// compared with it sets whole bitmap bytes, as Hyper-V's 4 KiB writes do.
fn widen_4k(writes: Vec<DiffWrite>) -> Vec<DiffWrite> {
    writes
        .into_iter()
        .map(|w| {
            let start = w.offset / 4096 * 4096;
            let end = (w.offset + w.len).div_ceil(4096) * 4096;
            DiffWrite { offset: start, len: end - start, fill: w.fill }
        })
        .collect()
}

/// base/base.vhd (qemu, dynamic) <- snap1.vhd (512 KiB blocks, relative
/// and absolute Windows locators; its parent name alone would not find the
/// parent, which lies in a subdirectory) <- snap2.vhd (2 MiB blocks, only
/// an absolute Windows locator naming another host's drive). Writes are
/// sector-granular. snap1-4k.vhd <- snap2-4k.vhd: the same on the same
/// base with the writes widened to 4 KiB, for libvhdi.
fn chain_fixture() -> PathBuf {
    fixture("vhd-chain-v2", |d| {
        std::fs::create_dir_all(d.join("base")).unwrap();
        let base = qemu_vpc(&d.join("base"), "base.vhd", "subformat=dynamic");
        let size = qemu_virtual_size(&base);
        for (suffix, s1, s2) in [
            ("", snap1_writes(size), snap2_writes(size)),
            ("-4k", widen_4k(snap1_writes(size)), widen_4k(snap2_writes(size))),
        ] {
            let snap1 = d.join(format!("snap1{suffix}.vhd"));
            make_differencing(
                &snap1,
                Some(&base),
                &[
                    "--locator", "W2ru=.\\base\\base.vhd",
                    "--locator", "W2ku=C:\\VMs\\vm\\base\\base.vhd",
                    "--parent-name", "base.vhd",
                    "--block-size", "524288",
                ],
                &s1,
            );
            let w2ku = format!("W2ku=C:\\VMs\\vm\\snap1{suffix}.vhd");
            make_differencing(&d.join(format!("snap2{suffix}.vhd")), Some(&snap1), &["--locator", &w2ku, "--parent-name", ""], &s2);
        }
    })
}

/// The expected content of a chain, computed without any VHD reader of
/// ours: qemu's raw image of the base with the snapshots' writes replayed.
fn expected_raw(base: &Path, layers: &[Vec<DiffWrite>], out: &Path) {
    use std::os::unix::fs::FileExt;
    run(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(base).arg(out));
    let f = std::fs::OpenOptions::new().write(true).open(out).unwrap();
    for w in layers.iter().flatten() {
        let data = match w.fill {
            Fill::Pattern(p) => vec![p; w.len as usize],
            Fill::Random(seed) => pseudo_random(seed, w.len as usize),
            Fill::Zeroes => vec![0; w.len as usize],
        };
        f.write_all_at(&data, w.offset).unwrap();
    }
}

/// libvhdi's reading of a chain (top first) as a raw file.
fn libvhdi_raw(chain: &[PathBuf], out: &Path) {
    let mut cmd = python();
    cmd.arg(fixture_script("vhd_libvhdi_dump.py")).arg(out).args(chain);
    run(&mut cmd);
}

fn export(img: &Path, out: &Path) {
    vbproxy_ok(&["export", "--format", "raw-sparse", img.to_str().unwrap(), "-o", out.to_str().unwrap()]);
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    std::fs::File::open(path).unwrap().read_exact_at(&mut buf, offset).unwrap();
    buf
}

#[test]
fn differencing_chain_reads_like_libvhdi() {
    let dir = chain_fixture();
    let guard = SourceGuard::new(&[&dir]);
    let out = scratch("vhd-chain-libvhdi");
    let (base, snap1, snap2) = (dir.join("base/base.vhd"), dir.join("snap1-4k.vhd"), dir.join("snap2-4k.vhd"));
    for (name, chain) in [("top", vec![snap2.clone(), snap1.clone(), base.clone()]), ("mid", vec![snap1.clone(), base.clone()])] {
        let (ours, theirs) = (out.join(format!("{name}.ours.raw")), out.join(format!("{name}.libvhdi.raw")));
        libvhdi_raw(&chain, &theirs);
        export(&chain[0], &ours);
        assert_files_equal(&ours, &theirs);
    }
    let _ = std::fs::remove_dir_all(&out);
    guard.check();
}

#[test]
fn differencing_chain_reads_the_writes_replayed_on_qemus_base() {
    let dir = chain_fixture();
    let guard = SourceGuard::new(&[&dir]);
    let out = scratch("vhd-chain-expected");
    let base = dir.join("base/base.vhd");
    let size = qemu_virtual_size(&base);
    for (top, layers) in [
        ("snap2.vhd", vec![snap1_writes(size), snap2_writes(size)]),
        ("snap1.vhd", vec![snap1_writes(size)]),
        ("snap2-4k.vhd", vec![widen_4k(snap1_writes(size)), widen_4k(snap2_writes(size))]),
    ] {
        let (ours, expected) = (out.join("ours.raw"), out.join("expected.raw"));
        expected_raw(&base, &layers, &expected);
        export(&dir.join(top), &ours);
        assert_files_equal(&ours, &expected);
    }
    let _ = std::fs::remove_dir_all(&out);
    guard.check();
}

#[test]
fn differencing_chain_reads_last_write_and_base_keeps_pre_snapshot_state() {
    let dir = chain_fixture();
    let guard = SourceGuard::new(&[&dir]);
    let out = scratch("vhd-chain-content");
    let (base, snap1, snap2) = (dir.join("base/base.vhd"), dir.join("snap1.vhd"), dir.join("snap2.vhd"));
    let size = qemu_virtual_size(&base);
    let (top, mid, bottom) = (out.join("top.raw"), out.join("mid.raw"), out.join("base.raw"));
    export(&snap2, &top);
    export(&snap1, &mid);
    export(&base, &bottom);
    let random1 = pseudo_random(1, 64 * 1024);
    // Sector 0..8 K: snap1 wrote 0xa1; snap2 overwrote 4 K..12 K with 0xb1.
    assert_eq!(read_at(&top, 0, 4096), vec![0xa1; 4096]);
    assert_eq!(read_at(&top, 4096, 8192), vec![0xb1; 8192]);
    assert_eq!(read_at(&top, 12288, 4096), random1[12288..16384].to_vec());
    assert_eq!(read_at(&mid, 4096, 4096), vec![0xa1; 4096]);
    assert_eq!(read_at(&mid, 8192, 4096), random1[8192..12288].to_vec());
    assert_eq!(read_at(&bottom, 0, 65536), random1);
    // Across 2 GiB: base random, snap1 0xa2 over 2G-4K..2G+12K, snap2 0xb3 over 2G..2G+1K.
    assert_eq!(read_at(&top, 2 * GIB - 4096, 4096), vec![0xa2; 4096]);
    assert_eq!(read_at(&top, 2 * GIB, 1024), vec![0xb3; 1024]);
    assert_eq!(read_at(&top, 2 * GIB + 1024, 11264), vec![0xa2; 11264]);
    assert_eq!(read_at(&bottom, 2 * GIB - 4096, 4096), pseudo_random(3, 64 * 1024)[28672..32768].to_vec());
    // Last sectors: base 0x66, snap1 0xa4 on the one before, snap2 0xb5 on the last.
    assert_eq!(read_at(&top, size - 1024, 1024), [vec![0xa4; 512], vec![0xb5; 512]].concat());
    assert_eq!(read_at(&mid, size - 512, 512), vec![0x66; 512]);
    assert_eq!(read_at(&bottom, size - 1024, 1024), [vec![0; 512], vec![0x66; 512]].concat());
    // Written in a block the parents never allocated.
    assert_eq!(read_at(&top, 100 * MIB, 4096), vec![0xa3; 4096]);
    assert_eq!(read_at(&bottom, 100 * MIB, 4096), vec![0; 4096]);
    assert_eq!(read_at(&top, 50 * MIB + 512, 512), pseudo_random(12, 512));
    let _ = std::fs::remove_dir_all(&out);
    guard.check();
}

#[test]
fn differencing_chain_map_and_inspect() {
    let dir = chain_fixture();
    let guard = SourceGuard::new(&[&dir]);
    let (base, snap2) = (dir.join("base/base.vhd"), dir.join("snap2.vhd"));
    let size = qemu_virtual_size(&base);
    // Data = base's data (per qemu) plus every sector the snapshots wrote.
    let qmap: serde_json::Value =
        serde_json::from_str(&qemu_img(&["map", "--output=json", base.to_str().unwrap()])).unwrap();
    let mut ranges: Vec<(u64, u64)> = data_ranges(&qmap);
    for w in snap1_writes(size).iter().chain(&snap2_writes(size)) {
        ranges.push((w.offset, w.len));
    }
    ranges.sort();
    let mut expected: Vec<(u64, u64)> = Vec::new();
    for (s, l) in ranges {
        match expected.last_mut() {
            Some(last) if s <= last.0 + last.1 => last.1 = last.1.max(s + l - last.0),
            _ => expected.push((s, l)),
        }
    }
    let omap: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["map", "--json", snap2.to_str().unwrap()])).unwrap();
    assert_eq!(data_ranges(&omap), expected);
    // Which layer supplies what.
    let depth_at = |off: u64| {
        omap.as_array().unwrap().iter().find(|e| {
            let (s, l) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            s <= off && off < s + l
        }).unwrap()["depth"].as_u64().unwrap()
    };
    assert_eq!([depth_at(0), depth_at(4096), depth_at(12288), depth_at(100 * MIB), depth_at(size - 512)], [1, 0, 2, 1, 0]);
    let info: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["inspect", "--json", snap2.to_str().unwrap()])).unwrap();
    let chain = info["disks"][0]["chain"].as_array().unwrap();
    let variants: Vec<&str> = chain.iter().map(|c| c["variant"].as_str().unwrap()).collect();
    assert_eq!(variants, ["differencing", "differencing", "dynamic"]);
    assert!(chain[2]["path"].as_str().unwrap().ends_with("base/base.vhd"));
    assert_eq!(info["disks"][0]["virtual_size"].as_u64(), Some(size));
    assert_eq!(chain[0]["allocated"].as_u64(), Some(snap2_writes(size).iter().map(|w| w.len).sum()));
    guard.check();
}

// ---------------------------------------------------------- error cases

/// Copies a fixture file into `dir`, keeping holes.
fn copy_into(src: &Path, dir: &Path) -> PathBuf {
    let dst = dir.join(src.file_name().unwrap());
    run(Command::new("cp").arg("--sparse=always").arg(src).arg(&dst));
    dst
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, offset).unwrap();
}

/// Recomputes the VHD checksum (ones' complement byte sum) of the
/// structure of `len` bytes at `offset` whose checksum field is at `field`.
fn fix_checksum(path: &Path, offset: u64, len: usize, field: usize) {
    let mut buf = read_at(path, offset, len);
    buf[field..field + 4].fill(0);
    let sum = buf.iter().fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
    patch(path, offset + field as u64, &(!sum).to_be_bytes());
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn missing_parent_is_refused() {
    let dir = chain_fixture();
    let s = scratch("vhd-missing-parent");
    let snap1 = copy_into(&dir.join("snap1.vhd"), &s);
    assert_clean_error(&["inspect", snap1.to_str().unwrap()], 3, &["snap1.vhd", "C:\\\\VMs\\\\vm\\\\base\\\\base.vhd", "not found", "base/base.vhd"]);
}

#[test]
fn parent_unique_id_mismatch_is_refused() {
    let dir = chain_fixture();
    let s = scratch("vhd-parent-mismatch");
    let snap1 = copy_into(&dir.join("snap1.vhd"), &s);
    // Another disk of the same name where the parent should be.
    std::fs::create_dir_all(s.join("base")).unwrap();
    run(Command::new("qemu-img").args(["create", "-q", "-f", "vpc", "-o", "subformat=dynamic"]).arg(s.join("base/base.vhd")).arg(SIZE.to_string()));
    assert_clean_error(&["inspect", snap1.to_str().unwrap()], 3, &["snap1.vhd", "base.vhd", "does not match", "unique id"]);
}

#[test]
fn parent_loop_is_refused() {
    let s = scratch("vhd-parent-loop");
    let (a, b) = ("11".repeat(16), "22".repeat(16));
    let size = (64 * MIB).to_string();
    let w = [DiffWrite { offset: 0, len: 512, fill: Fill::Pattern(1) }];
    make_differencing(&s.join("a.vhd"), None, &["--uuid", &a, "--parent-uuid", &b, "--size", &size, "--locator", "W2ru=.\\b.vhd", "--parent-name", "b.vhd"], &w);
    make_differencing(&s.join("b.vhd"), None, &["--uuid", &b, "--parent-uuid", &a, "--size", &size, "--locator", "W2ru=.\\a.vhd", "--parent-name", "a.vhd"], &w);
    assert_clean_error(&["inspect", s.join("a.vhd").to_str().unwrap()], 3, &["loops", "a.vhd", "b.vhd"]);
}

#[test]
fn truncated_dynamic_disk_is_corrupt() {
    let s = scratch("vhd-truncated");
    let img = copy_into(&dynamic_fixture(), &s);
    let size = file_size(&img);
    // Cut the end footer and the second half of the last block.
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(size - 512 - MIB).unwrap();
    let err = assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["disk.vhd", "BAT entry", "truncated"]);
    assert!(err.contains("copy at offset 0"), "no warning about the footer copy: {err}");
}

/// A qemu-made dynamic disk whose BAT entry 0 points past the end of the file.
fn bat_past_end(s: &Path) -> (PathBuf, String) {
    let img = copy_into(&dynamic_fixture(), s);
    let table = u64::from_be_bytes(read_at(&img, 512 + 16, 8).try_into().unwrap());
    assert_ne!(read_at(&img, table, 4), vec![0xff; 4], "block 0 is allocated in the fixture");
    patch(&img, table, &((file_size(&img) / 512 + 100) as u32).to_be_bytes());
    (img, format!("offset {table}"))
}

#[test]
fn bat_entry_past_end_of_file_is_corrupt() {
    let (img, at) = bat_past_end(&scratch("vhd-bat-past-end"));
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &[&name(&img), "BAT entry 0", &at, "outside"]);
}

#[test]
fn bat_entry_past_end_of_file_fails_export() {
    let s = scratch("vhd-bat-past-end-export");
    let (img, at) = bat_past_end(&s);
    let out = s.join("out.raw");
    assert_clean_error(
        &["export", "--format", "raw-sparse", img.to_str().unwrap(), "-o", out.to_str().unwrap()],
        1,
        &[&name(&img), "BAT entry 0", &at],
    );
}

#[test]
fn footer_checksum_bad_on_both_copies_is_corrupt() {
    let s = scratch("vhd-footer-checksum");
    let img = copy_into(&dynamic_fixture(), &s);
    let end = file_size(&img) - 512;
    for at in [0, end] {
        let b = read_at(&img, at + 200, 1)[0];
        patch(&img, at + 200, &[b ^ 0x5a]);
    }
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["disk.vhd", "VHD footer", &format!("offset {end}"), "checksum"]);
}

#[test]
fn damaged_end_footer_uses_the_copy_at_offset_0() {
    let s = scratch("vhd-end-footer-damaged");
    let img = copy_into(&dynamic_fixture(), &s);
    let end = file_size(&img) - 512;
    patch(&img, end + 200, &[0x5a]);
    // qemu reads the copy at offset 0 of dynamic disks: same answer.
    assert_matches_qemu(&img, &[&s]);
    let out = vbproxy().args(["inspect", img.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("using the copy at offset 0"));
}

#[test]
fn virtual_size_rule_matches_qemu_for_each_creator() {
    // A current size larger than the CHS geometry: Virtual PC and qemu's
    // own non-forced images are sized by CHS, Hyper-V and blktap images by
    // the current size. qemu decides by the creator application.
    let s = scratch("vhd-size-rule");
    for creator in [*b"qemu", *b"vpc ", *b"win ", *b"tap\0"] {
        let img = copy_into(&dynamic_fixture(), &s);
        let end = file_size(&img) - 512;
        let chs = vpc_virtual_size(&img);
        for at in [0, end] {
            patch(&img, at + 28, &creator);
            patch(&img, at + 48, &(chs + MIB).to_be_bytes());
            fix_checksum(&img, at, 512, 64);
        }
        let expected = if creator == *b"win " || creator == *b"tap\0" { chs + MIB } else { chs };
        assert_eq!(vpc_virtual_size(&img), expected, "qemu's rule for creator {creator:?}");
        assert_matches_qemu(&img, &[&s]);
        std::fs::remove_file(&img).unwrap();
    }
}

#[test]
fn absurd_current_size_is_refused() {
    let s = scratch("vhd-absurd-size");
    // A qem2 disk: its size is the footer's current size, not CHS.
    let img = copy_into(&dynamic_force_fixture(), &s);
    let end = file_size(&img) - 512;
    for at in [0, end] {
        patch(&img, at + 48, &(1u64 << 60).to_be_bytes());
        fix_checksum(&img, at, 512, 64);
    }
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["disk.vhd", "VHD footer", "1152921504606846976", "exceeds"]);
}

#[test]
fn absurd_max_table_entries_is_refused() {
    let s = scratch("vhd-absurd-entries");
    let img = copy_into(&dynamic_fixture(), &s);
    patch(&img, 512 + 28, &(1u32 << 31).to_be_bytes());
    fix_checksum(&img, 512, 1024, 36);
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["disk.vhd", "dynamic disk header", "offset 512", "2147483648"]);
}

#[test]
fn absurd_block_size_is_refused() {
    let s = scratch("vhd-absurd-block");
    let img = copy_into(&dynamic_fixture(), &s);
    patch(&img, 512 + 32, &(1u32 << 31).to_be_bytes());
    fix_checksum(&img, 512, 1024, 36);
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["disk.vhd", "dynamic disk header", "offset 512", "block size 2147483648", "power of two"]);
}

#[test]
fn differencing_bitmap_past_end_fails_export() {
    // A differencing disk whose BAT entry points past the end: an error
    // through the chain too, never the parent's data or zeros.
    let dir = chain_fixture();
    let s = scratch("vhd-diff-bat-past-end");
    std::fs::create_dir_all(s.join("base")).unwrap();
    copy_into(&dir.join("base/base.vhd"), &s.join("base"));
    let snap1 = copy_into(&dir.join("snap1.vhd"), &s);
    let table = u64::from_be_bytes(read_at(&snap1, 512 + 16, 8).try_into().unwrap());
    assert_ne!(read_at(&snap1, table, 4), vec![0xff; 4]);
    patch(&snap1, table, &((file_size(&snap1) / 512 + 1) as u32).to_be_bytes());
    let out = s.join("out.raw");
    assert_clean_error(
        &["export", "--format", "raw-sparse", snap1.to_str().unwrap(), "-o", out.to_str().unwrap()],
        1,
        &["snap1.vhd", "BAT entry 0", &format!("offset {table}")],
    );
}

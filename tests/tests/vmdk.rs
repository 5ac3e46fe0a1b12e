//! VMDK: every subformat qemu-img makes, hand-written ESX-style
//! descriptors, snapshot chains, and damaged files, checked against qemu.
use std::path::{Path, PathBuf};
use std::process::Command;
use vbproxy_e2e::*;

const SIZE: u64 = 2 * GIB + 100 * MIB;

fn qemu_img_in(dir: &Path, args: &[&str]) {
    run(Command::new("qemu-img").current_dir(dir).args(args));
}

/// A `SIZE` disk of the given subformat with the standard content, in
/// `<dir>/<sub>[-zg].vmdk`. Image names are unique across tests because
/// `assert_matches_qemu` names its scratch directory after the image.
fn subformat(sub: &str, extra_opts: &str) -> PathBuf {
    let stem = format!("{sub}{}", if extra_opts.is_empty() { "" } else { "-zg" });
    let file = format!("{stem}.vmdk");
    let dir = fixture(&format!("vmdk-{stem}-v2"), |d| {
        let opts = format!("subformat={sub}{extra_opts}");
        qemu_img_in(d, &["create", "-q", "-f", "vmdk", "-o", &opts, &file, &SIZE.to_string()]);
        qemu_io_write(&d.join(&file), "vmdk", &standard_writes(SIZE));
    });
    dir.join(file)
}

fn dir_of(img: &Path) -> &Path {
    img.parent().unwrap()
}

/// A scratch directory holding copies of `files` of `from`. Every test uses
/// its own image name: the comparison scratch directory is named after it.
fn copy_to(name: &str, from: &Path, files: &[&str]) -> PathBuf {
    let d = scratch(name);
    for f in files {
        std::fs::copy(from.join(f), d.join(f)).unwrap();
    }
    d
}

fn check_subformat(sub: &str, extra: &str) {
    let img = subformat(sub, extra);
    assert_matches_qemu(&img, &[dir_of(&img)]);
    let info: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["inspect", "--json", img.to_str().unwrap()])).unwrap();
    assert_eq!(info["disks"][0]["variant"], sub);
}

#[test]
fn monolithic_sparse_reads_like_qemu() {
    check_subformat("monolithicSparse", "");
}

#[test]
fn monolithic_flat_reads_like_qemu() {
    check_subformat("monolithicFlat", "");
}

#[test]
fn two_gb_max_extent_sparse_reads_like_qemu() {
    check_subformat("twoGbMaxExtentSparse", "");
    // An extent opened on its own is a disk of its own capacity: the
    // disk's bytes from 2 GiB on. qemu refuses to open the extent alone,
    // so it reads that range of the whole disk.
    let img = subformat("twoGbMaxExtentSparse", "");
    let dir = dir_of(&img);
    let guard = SourceGuard::new(&[dir]);
    let work = scratch("vmdk-s002-alone");
    let spec = serde_json::json!({
        "driver": "raw", "offset": 2 * GIB, "size": SIZE - 2 * GIB,
        "file": { "driver": "vmdk", "file": { "driver": "file", "filename": img } }
    });
    run(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(format!("json:{spec}")).arg(work.join("qemu.raw")));
    let extent = dir.join("twoGbMaxExtentSparse-s002.vmdk");
    let ours = work.join("ours.raw");
    vbproxy_ok(&["export", "--format", "raw-sparse", extent.to_str().unwrap(), "-o", ours.to_str().unwrap()]);
    assert_files_equal(&ours, &work.join("qemu.raw"));
    guard.check();
}

#[test]
fn two_gb_max_extent_flat_reads_like_qemu() {
    check_subformat("twoGbMaxExtentFlat", "");
}

#[test]
fn zeroed_grains_read_like_qemu() {
    // `write -z` in the standard content becomes GTE 1 (zeroed grain).
    check_subformat("monolithicSparse", ",zeroed_grain=on");
    let img = subformat("monolithicSparse", ",zeroed_grain=on");
    let map: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["map", "--json", img.to_str().unwrap()])).unwrap();
    let zero_at_8m = map.as_array().unwrap().iter().any(|e| {
        let (s, l) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        s <= 8 * MIB && 8 * MIB < s + l && !e["data"].as_bool().unwrap()
    });
    assert!(zero_at_8m, "zeroed grain at 8 MiB not reported as zero: {map}");
}

fn stream_optimized() -> PathBuf {
    let src = subformat("monolithicSparse", "");
    fixture("vmdk-streamOptimized-v2", |d| {
        run(Command::new("qemu-img")
            .args(["convert", "-O", "vmdk", "-o", "subformat=streamOptimized"])
            .arg(&src)
            .arg(d.join("stream.vmdk")));
    })
}

#[test]
fn stream_optimized_reads_like_qemu() {
    let dir = stream_optimized();
    assert_matches_qemu(&dir.join("stream.vmdk"), &[&dir]);
}

/// A raw file with the standard content, for hand-written descriptors.
fn raw_fixture() -> PathBuf {
    fixture("vmdk-raw-parts-v1", |d| {
        let size = 64 * MIB;
        qemu_img_in(d, &["create", "-q", "-f", "raw", "data.raw", &size.to_string()]);
        qemu_io_write(&d.join("data.raw"), "raw", &standard_writes(size));
        qemu_img_in(d, &["create", "-q", "-f", "vmdk", "sparse.vmdk", &(16 * MIB).to_string()]);
        qemu_io_write(&d.join("sparse.vmdk"), "vmdk", &standard_writes(16 * MIB));
    })
}

fn descriptor(create_type: &str, extents: &[&str], extra: &str) -> String {
    format!(
        "# Disk DescriptorFile\r\nversion=1\r\nencoding=\"UTF-8\"\r\nCID=5a5a0001\r\nparentCID=ffffffff\r\ncreateType=\"{create_type}\"\r\n\r\n# Extent description\r\n{}\r\n\r\n# The Disk Data Base\r\n#DDB\r\n{extra}ddb.adapterType = \"lsilogic\"\r\nddb.geometry.cylinders = \"8\"\r\nddb.uuid = \"60 00 C2 9a\"\r\n",
        extents.join("\r\n")
    )
}

/// A scratch directory holding copies of the raw parts and `text` as
/// `<name>.vmdk`; returns the descriptor's path.
fn hand_written(name: &str, text: &str) -> PathBuf {
    let parts = raw_fixture();
    let d = scratch(name);
    for f in ["data.raw", "sparse.vmdk"] {
        std::fs::copy(parts.join(f), d.join(f)).unwrap();
    }
    let img = d.join(format!("{name}.vmdk"));
    std::fs::write(&img, text).unwrap();
    img
}

#[test]
fn esx_vmfs_descriptor_reads_like_qemu() {
    let sectors = (64 * MIB / 512).to_string();
    let img = hand_written("vmdk-vmfs", &descriptor("vmfs", &[&format!("RW {sectors} VMFS \"data.raw\"")], ""));
    assert_matches_qemu(&img, &[dir_of(&img)]);
}

#[test]
fn esx_vmfs_thin_descriptor_reads_the_flat_file() {
    // qemu 10 refuses createType vmfsThin, so the oracle is the flat file itself.
    let sectors = (64 * MIB / 512).to_string();
    let img = hand_written(
        "vmdk-vmfsthin",
        &descriptor("vmfsThin", &[&format!("RW {sectors} VMFS \"data.raw\"")], "ddb.thinProvisioned = \"1\"\r\n"),
    );
    let guard = SourceGuard::new(&[dir_of(&img)]);
    let out = scratch("vmdk-vmfsthin-out").join("out.raw");
    vbproxy_ok(&["export", "--format", "raw-sparse", img.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_files_equal(&out, &dir_of(&img).join("data.raw"));
    guard.check();
}

#[test]
fn custom_multi_extent_descriptor_reads_like_qemu() {
    // A sparse extent, then 32 MiB of the raw file from 16 MiB on.
    let img = hand_written(
        "vmdk-multi",
        &descriptor(
            "vmfs",
            &[&format!("RW {} SPARSE \"sparse.vmdk\"", 16 * MIB / 512), &format!("RW {} FLAT \"data.raw\" {}", 32 * MIB / 512, 16 * MIB / 512)],
            "",
        ),
    );
    assert_matches_qemu(&img, &[dir_of(&img)]);
}

#[test]
fn zero_extent_reads_as_zeros_between_other_extents() {
    // qemu 10 drops ZERO extent lines (shifting every later extent), so the
    // expected image is assembled from the parts as qemu reads them.
    let img = hand_written(
        "vmdk-zero-extent",
        &descriptor(
            "custom",
            &[
                &format!("RW {} SPARSE \"sparse.vmdk\"", 16 * MIB / 512),
                &format!("RW {} ZERO", 4 * MIB / 512),
                &format!("RW {} FLAT \"data.raw\" {}", 8 * MIB / 512, 4 * MIB / 512),
            ],
            "",
        ),
    );
    let guard = SourceGuard::new(&[dir_of(&img)]);
    let work = scratch("vmdk-zero-extent-out");
    let sparse_raw = work.join("sparse.raw");
    run(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(dir_of(&img).join("sparse.vmdk")).arg(&sparse_raw));
    let mut expected = std::fs::read(&sparse_raw).unwrap();
    expected.extend_from_slice(&vec![0u8; 4 * MIB as usize]);
    let data = std::fs::read(dir_of(&img).join("data.raw")).unwrap();
    expected.extend_from_slice(&data[4 * MIB as usize..12 * MIB as usize]);
    std::fs::write(work.join("expected.raw"), &expected).unwrap();
    let out = work.join("out.raw");
    vbproxy_ok(&["export", "--format", "raw-sparse", img.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_files_equal(&out, &work.join("expected.raw"));
    let map: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["map", "--json", img.to_str().unwrap()])).unwrap();
    let ranges = data_ranges(&map);
    assert!(ranges.iter().all(|&(s, l)| s + l <= 16 * MIB || s >= 20 * MIB), "ZERO extent reported as data: {ranges:?}");
    assert_eq!(ranges.last().copied(), Some((20 * MIB, 8 * MIB)));
    guard.check();
}

/// base (monolithicSparse) <- d1 <- d2, each written with different,
/// overlapping content after its parent was last written.
fn chain() -> PathBuf {
    use Fill::*;
    fixture("vmdk-chain-v1", |d| {
        qemu_img_in(d, &["create", "-q", "-f", "vmdk", "base.vmdk", &SIZE.to_string()]);
        qemu_io_write(&d.join("base.vmdk"), "vmdk", &standard_writes(SIZE));
        qemu_img_in(d, &["create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "d1.vmdk"]);
        qemu_io_write(
            &d.join("d1.vmdk"),
            "vmdk",
            &[
                GuestWrite { offset: 32 * 1024, len: 64 * 1024, fill: Pattern(0x71) },
                GuestWrite { offset: 2 * GIB - 4096, len: 8192, fill: Random(11) },
                GuestWrite { offset: 8 * MIB + 4096, len: 4096, fill: Pattern(0x72) },
                GuestWrite { offset: 20 * MIB, len: MIB, fill: Random(12) },
            ],
        );
        qemu_img_in(d, &["create", "-q", "-f", "vmdk", "-b", "d1.vmdk", "-F", "vmdk", "d2.vmdk"]);
        qemu_io_write(
            &d.join("d2.vmdk"),
            "vmdk",
            &[
                GuestWrite { offset: 60 * 1024, len: 8192, fill: Pattern(0x81) },
                GuestWrite { offset: 20 * MIB + 512, len: 1024, fill: Zeroes },
                GuestWrite { offset: 7 * MIB, len: 4096, fill: Random(21) },
                GuestWrite { offset: SIZE - 4096, len: 4096, fill: Pattern(0x82) },
            ],
        );
    })
}

#[test]
fn snapshot_chain_reads_like_qemu_at_every_level() {
    let dir = chain();
    for f in ["d2.vmdk", "d1.vmdk", "base.vmdk"] {
        assert_matches_qemu(&dir.join(f), &[&dir]);
    }
}

#[test]
fn inspect_lists_the_chain() {
    let dir = chain();
    let info: serde_json::Value =
        serde_json::from_str(&vbproxy_ok(&["inspect", "--json", dir.join("d2.vmdk").to_str().unwrap()])).unwrap();
    let chain = info["disks"][0]["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 3, "{info}");
    for (c, name) in chain.iter().zip(["d2.vmdk", "d1.vmdk", "base.vmdk"]) {
        assert_eq!(c["format"], "vmdk");
        assert_eq!(c["variant"], "monolithicSparse");
        assert!(c["path"].as_str().unwrap().ends_with(name), "{c}");
    }
}

// ---- damaged files ----

fn le32(b: &[u8], off: usize) -> u64 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) as u64
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0u8; len];
    std::fs::File::open(path).unwrap().read_exact_at(&mut b, offset).unwrap();
    b
}

/// Rewrites the descriptor embedded in a hosted sparse file.
fn edit_embedded_descriptor(path: &Path, edit: impl Fn(&str) -> String) {
    let h = read_at(path, 0, 512);
    let (off, len) = (le64(&h, 28) * 512, le64(&h, 36) * 512);
    let raw = read_at(path, off, len as usize);
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let text = edit(std::str::from_utf8(&raw[..end]).unwrap());
    assert!(text.len() < len as usize);
    let mut new = text.into_bytes();
    new.resize(len as usize, 0);
    patch(path, off, &new);
}

/// Byte offset of grain table `gd_index`'s entry `i` in a hosted sparse file.
fn gte_offset(path: &Path, gd_index: u64, i: u64) -> u64 {
    let h = read_at(path, 0, 512);
    let gd = le64(&h, 56) * 512;
    let gt = le32(&read_at(path, gd + 4 * gd_index, 4), 0) * 512;
    assert!(gt != 0);
    gt + 4 * i
}

fn export_args<'a>(img: &'a str, out: &'a str) -> Vec<&'a str> {
    vec!["export", "--format", "raw-sparse", img, "-o", out]
}

#[test]
fn missing_parent_is_refused() {
    let d = copy_to("vmdk-missing-parent", &chain(), &["d1.vmdk"]);
    let img = d.join("d1.vmdk");
    assert_clean_error(&["inspect", img.to_str().unwrap()], 3, &["d1.vmdk", "base.vmdk", "not found"]);
}

#[test]
fn parent_cid_mismatch_is_refused() {
    let d = copy_to("vmdk-cid-mismatch", &chain(), &["base.vmdk", "d1.vmdk"]);
    let img = d.join("d1.vmdk");
    edit_embedded_descriptor(&img, |t| {
        t.lines()
            .map(|l| if l.starts_with("parentCID=") { "parentCID=0badc1d0".to_owned() } else { l.to_owned() })
            .collect::<Vec<_>>()
            .join("\n")
    });
    assert_clean_error(&["inspect", img.to_str().unwrap()], 3, &["d1.vmdk", "base.vmdk", "CID 0badc1d0"]);
}

fn set_hint(path: &Path, hint: &str) {
    edit_embedded_descriptor(path, |t| t.replace("parentFileNameHint=\"base.vmdk\"", &format!("parentFileNameHint=\"{hint}\"")));
}

#[test]
fn parent_naming_itself_is_a_loop() {
    let d = copy_to("vmdk-self-loop", &chain(), &["d1.vmdk"]);
    let img = d.join("d1.vmdk");
    set_hint(&img, "d1.vmdk");
    assert_clean_error(&["inspect", img.to_str().unwrap()], 3, &["loop", "d1.vmdk"]);
}

#[test]
fn two_file_parent_cycle_is_a_loop() {
    let d = scratch("vmdk-two-loop");
    let src = chain();
    std::fs::copy(src.join("d1.vmdk"), d.join("a.vmdk")).unwrap();
    std::fs::copy(src.join("d1.vmdk"), d.join("b.vmdk")).unwrap();
    set_hint(&d.join("a.vmdk"), "b.vmdk");
    set_hint(&d.join("b.vmdk"), "a.vmdk");
    // Make the CIDs agree so that only the loop can stop the chain.
    for f in ["a.vmdk", "b.vmdk"] {
        edit_embedded_descriptor(&d.join(f), |t| {
            t.lines()
                .map(|l| if l.starts_with("CID=") || l.starts_with("parentCID=") { format!("{}=12345678", l.split('=').next().unwrap()) } else { l.to_owned() })
                .collect::<Vec<_>>()
                .join("\n")
        });
    }
    let img = d.join("a.vmdk");
    assert_clean_error(&["inspect", img.to_str().unwrap()], 3, &["loop", "a.vmdk", "b.vmdk"]);
}

#[test]
fn truncated_sparse_extent_is_an_error() {
    let src = subformat("monolithicSparse", "");
    let d = copy_to("vmdk-truncated", dir_of(&src), &["monolithicSparse.vmdk"]);
    let img = d.join("monolithicSparse.vmdk");
    let len = std::fs::metadata(&img).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(len / 2).unwrap();
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["monolithicSparse.vmdk", "grain table", "past the end"]);
    let out = d.join("out.raw");
    assert_clean_error(&export_args(img.to_str().unwrap(), out.to_str().unwrap()), 1, &["monolithicSparse.vmdk", "grain table", "past the end"]);
}

#[test]
fn sparse_extent_cut_inside_its_metadata_is_an_error() {
    let src = subformat("monolithicSparse", "");
    let d = copy_to("vmdk-truncated-gd", dir_of(&src), &["monolithicSparse.vmdk"]);
    let img = d.join("monolithicSparse.vmdk");
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(12 * 1024).unwrap();
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["monolithicSparse.vmdk", "grain directory", "truncated"]);
}

#[test]
fn grain_table_entry_past_end_is_an_error() {
    let src = subformat("monolithicSparse", "");
    let d = copy_to("vmdk-gte-past-end", dir_of(&src), &["monolithicSparse.vmdk"]);
    let img = d.join("monolithicSparse.vmdk");
    let at = gte_offset(&img, 0, 0);
    patch(&img, at, &0x7fff_fff0u32.to_le_bytes());
    let at_s = format!("offset {at}");
    let needles = ["monolithicSparse.vmdk", "grain table 0 entry 0", &at_s, "past the end"];
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &needles);
    let out = d.join("out.raw");
    assert_clean_error(&export_args(img.to_str().unwrap(), out.to_str().unwrap()), 1, &needles);
}

#[test]
fn grain_directory_entry_past_end_is_an_error() {
    let src = subformat("monolithicSparse", "");
    let d = copy_to("vmdk-gde-past-end", dir_of(&src), &["monolithicSparse.vmdk"]);
    let img = d.join("monolithicSparse.vmdk");
    let gd = le64(&read_at(&img, 0, 512), 56) * 512;
    patch(&img, gd, &0x0100_0000u32.to_le_bytes());
    let out = d.join("out.raw");
    let at_s = format!("offset {}", 0x0100_0000u64 * 512);
    assert_clean_error(&export_args(img.to_str().unwrap(), out.to_str().unwrap()), 1, &["monolithicSparse.vmdk", "grain table 0", &at_s]);
}

fn patched_header(name: &str, offset: u64, bytes: &[u8]) -> PathBuf {
    let src = subformat("monolithicSparse", "");
    let d = copy_to(name, dir_of(&src), &["monolithicSparse.vmdk"]);
    let img = d.join("monolithicSparse.vmdk");
    patch(&img, offset, bytes);
    img
}

#[test]
fn huge_capacity_is_refused() {
    let img = patched_header("vmdk-capacity", 12, &(1u64 << 60).to_le_bytes());
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["monolithicSparse.vmdk", "sparse extent header", "capacity"]);
}

#[test]
fn huge_grain_size_is_refused() {
    let img = patched_header("vmdk-grain-size", 20, &(1u64 << 31).to_le_bytes());
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["monolithicSparse.vmdk", "sparse extent header", "offset 20", "grain size"]);
}

#[test]
fn huge_grain_table_is_refused() {
    let img = patched_header("vmdk-gtes", 44, &0x4000_0000u32.to_le_bytes());
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["monolithicSparse.vmdk", "sparse extent header", "offset 44", "grain table"]);
}

#[test]
fn corrupt_compressed_grain_is_an_error() {
    let d = copy_to("vmdk-bad-zlib", &stream_optimized(), &["stream.vmdk"]);
    let img = d.join("stream.vmdk");
    let marker = le32(&read_at(&img, gte_offset(&img, 0, 0), 4), 0) * 512;
    let mut data = read_at(&img, marker + 12, 64);
    for b in &mut data[8..] {
        *b ^= 0xa5;
    }
    patch(&img, marker + 12, &data);
    let out = d.join("out.raw");
    let at_s = format!("offset {marker}");
    assert_clean_error(&export_args(img.to_str().unwrap(), out.to_str().unwrap()), 1, &["stream.vmdk", "compressed grain 0", &at_s]);
}

#[test]
fn compressed_grain_with_wrong_marker_is_an_error() {
    let d = copy_to("vmdk-bad-marker", &stream_optimized(), &["stream.vmdk"]);
    let img = d.join("stream.vmdk");
    let marker = le32(&read_at(&img, gte_offset(&img, 0, 0), 4), 0) * 512;
    patch(&img, marker, &4096u64.to_le_bytes());
    let out = d.join("out.raw");
    assert_clean_error(&export_args(img.to_str().unwrap(), out.to_str().unwrap()), 1, &["stream.vmdk", "compressed grain 0", "marker"]);
}

#[test]
fn noaccess_extent_is_an_error() {
    let img = hand_written(
        "vmdk-noaccess",
        &descriptor(
            "vmfs",
            &[&format!("RW {} SPARSE \"sparse.vmdk\"", 16 * MIB / 512), &format!("NOACCESS {} FLAT \"data.raw\" 0", 32 * MIB / 512)],
            "",
        ),
    );
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["vmdk-noaccess.vmdk", "NOACCESS extent on line 10"]);
}

#[test]
fn raw_device_mapping_is_refused() {
    let img = hand_written(
        "vmdk-rdm",
        &descriptor("vmfsPassthroughRawDeviceMap", &["RW 2097152 VMFSRDM \"disk-rdmp.vmdk\""], ""),
    );
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["vmdk-rdm.vmdk", "raw device mapping", "another LUN"]);
    // An RDM extent in an otherwise ordinary descriptor too.
    std::fs::write(&img, descriptor("vmfs", &["RW 2097152 VMFSRDM \"disk-rdmp.vmdk\""], "")).unwrap();
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["vmdk-rdm.vmdk", "extent on line 9", "raw device mapping"]);
}

#[test]
fn short_flat_extent_is_an_error() {
    let img = hand_written("vmdk-short-flat", &descriptor("vmfs", &[&format!("RW {} VMFS \"data.raw\"", 64 * MIB / 512 + 1)], ""));
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["vmdk-short-flat.vmdk", "extent on line 9", "data.raw", "only 67108864 bytes"]);
}

#[test]
fn sparse_extent_size_must_match_descriptor() {
    let img = hand_written("vmdk-size-mismatch", &descriptor("vmfs", &[&format!("RW {} SPARSE \"sparse.vmdk\"", 16 * MIB / 512 + 128)], ""));
    assert_clean_error(&["inspect", img.to_str().unwrap()], 1, &["vmdk-size-mismatch.vmdk", "extent on line 9", "sectors"]);
}

#[test]
fn zeroed_grains_in_a_delta_hide_parent_data() {
    // GTE 1 must read as zeros, not fall through to the parent.
    use Fill::*;
    let dir = fixture("vmdk-zg-delta-v1", |d| {
        let size = 64 * MIB;
        qemu_img_in(d, &["create", "-q", "-f", "vmdk", "zg-base.vmdk", &size.to_string()]);
        qemu_io_write(&d.join("zg-base.vmdk"), "vmdk", &standard_writes(size));
        qemu_img_in(d, &["create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", "-b", "zg-base.vmdk", "-F", "vmdk", "zg-delta.vmdk"]);
        qemu_io_write(
            &d.join("zg-delta.vmdk"),
            "vmdk",
            &[
                GuestWrite { offset: 0, len: 64 * 1024, fill: Zeroes },
                GuestWrite { offset: 7 * MIB, len: MIB, fill: Zeroes },
                GuestWrite { offset: 9 * MIB + 4096, len: 4096, fill: Zeroes },
            ],
        );
    });
    assert_matches_qemu(&dir.join("zg-delta.vmdk"), &[&dir]);
}

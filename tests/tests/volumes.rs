//! Volumes (MBR, GPT, LVM2) against the tools that made them: partition
//! fields compared with `sfdisk --json`, logical volumes with `lvs`/`pvs`/
//! `vgs` reports, and every volume's bytes read back through our sources
//! and compared with the content written at the places the tools report.
use guestfs::block::{FileSource, ReadAt};
use guestfs::volume::{find_volumes, DiskVolumes, Volume};
use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use vbproxy_e2e::*;

fn open(paths: &[PathBuf]) -> Vec<Arc<dyn ReadAt>> {
    paths.iter().map(|p| Arc::new(FileSource::open(p).expect("open image")) as Arc<dyn ReadAt>).collect()
}

fn vol<'a>(dv: &'a DiskVolumes, id: &str) -> &'a Volume {
    dv.volumes.iter().find(|v| v.id == id).unwrap_or_else(|| {
        panic!("no volume {id}; have {:?}; errors {:?}", dv.volumes.iter().map(|v| &v.id).collect::<Vec<_>>(), errors(dv))
    })
}

fn errors(dv: &DiskVolumes) -> Vec<String> {
    dv.errors.iter().map(|(id, e)| format!("{id}: {e}")).collect()
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).expect("open fixture for writing");
    f.write_all_at(data, offset).expect("write fixture");
}

fn read_file_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open(path).unwrap().read_exact_at(&mut buf, offset).unwrap();
    buf
}

fn read_vol(v: &Volume, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    v.source.read_exact_at(&mut buf, offset).unwrap_or_else(|e| panic!("read {} at {offset}: {e}", v.id));
    buf
}

fn sfdisk_json(dev: &Path) -> Value {
    serde_json::from_str(&run_text(Command::new("sfdisk").arg("--json").arg(dev))).expect("sfdisk json")
}

/// Partition number from an sfdisk node name (`/x/disk.raw12` -> 12).
fn node_number(node: &str) -> u32 {
    let digits: String = node.chars().rev().take_while(|c| c.is_ascii_digit()).collect::<Vec<_>>().into_iter().rev().collect();
    digits.parse().expect("partition number")
}

const CONTENT_HEAD: usize = 64 * 1024;
const CONTENT_TAIL: usize = 4096;

/// Writes recognisable content at the start and end of every partition the
/// table lists (except extended containers).
fn fill_partitions(img: &Path, table: &Value) {
    let sector = table["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
    for p in table["partitiontable"]["partitions"].as_array().unwrap() {
        if matches!(p["type"].as_str(), Some("5" | "f" | "85")) {
            continue;
        }
        let n = node_number(p["node"].as_str().unwrap());
        let (start, size) = (p["start"].as_u64().unwrap() * sector, p["size"].as_u64().unwrap() * sector);
        write_at(img, start, &pseudo_random(u64::from(n), CONTENT_HEAD));
        write_at(img, start + size - CONTENT_TAIL as u64, &vec![0x40 + n as u8; CONTENT_TAIL]);
    }
}

/// Compares our partitions with sfdisk's report field by field, and their
/// bytes with the image at sfdisk's offsets and with the content written.
fn assert_partitions_match(dv: &DiskVolumes, table: &Value, img: &Path) {
    let t = &table["partitiontable"];
    let sector = t["sectorsize"].as_u64().unwrap_or(512);
    let gpt = t["label"] == "gpt";
    let mut expected_ids = Vec::new();
    for p in t["partitions"].as_array().unwrap() {
        let ty = p["type"].as_str().unwrap();
        if !gpt && matches!(ty, "5" | "f" | "85") {
            continue; // extended containers are not volumes
        }
        let n = node_number(p["node"].as_str().unwrap());
        let id = format!("p{n}");
        let v = vol(dv, &id);
        let (start, size) = (p["start"].as_u64().unwrap() * sector, p["size"].as_u64().unwrap() * sector);
        assert_eq!(v.start, start, "{id} start");
        assert_eq!(v.size, size, "{id} size");
        assert_eq!(v.source.size(), size, "{id} source size");
        if gpt {
            assert_eq!(v.part_type, ty.to_lowercase(), "{id} type");
            assert_eq!(v.uuid.as_deref(), Some(p["uuid"].as_str().unwrap().to_lowercase().as_str()), "{id} uuid");
            assert_eq!(v.name.as_deref().unwrap_or(""), p["name"].as_str().unwrap_or(""), "{id} name");
        } else {
            assert_eq!(v.part_type, format!("0x{:0>2}", ty), "{id} type");
            assert_eq!(v.name, None);
        }
        let head = read_vol(v, 0, CONTENT_HEAD);
        assert_eq!(head, read_file_at(img, start, CONTENT_HEAD), "{id} first bytes vs image at sfdisk's start");
        assert_eq!(head, pseudo_random(u64::from(n), CONTENT_HEAD), "{id} first bytes vs content written");
        let tail = read_vol(v, size - CONTENT_TAIL as u64, CONTENT_TAIL);
        assert_eq!(tail, vec![0x40 + n as u8; CONTENT_TAIL], "{id} last bytes");
        assert!(v.source.read_exact_at(&mut [0u8; 1], size).is_err(), "{id}: read past its end must fail");
        expected_ids.push(id);
    }
    let ours: Vec<&str> = dv.volumes.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ours, expected_ids, "volume list (in table order)");
}

fn sparse_image(path: &Path, size: u64) {
    run(Command::new("truncate").arg("-s").arg(size.to_string()).arg(path));
}

fn sfdisk_script(img: &Path, script: &str) {
    use std::io::Write;
    let mut child = Command::new("sfdisk").arg("-q").arg(img).stdin(std::process::Stdio::piped()).spawn().expect("run sfdisk");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk failed");
}

fn mbr_fixture() -> PathBuf {
    fixture("vol-mbr-v1", |d| {
        let img = d.join("disk.raw");
        sparse_image(&img, 2 * GIB + 100 * MIB);
        // Two primaries, an extended partition holding two logicals, the
        // last one crossing 2 GiB.
        sfdisk_script(&img, "label: dos\n,1GiB,83\n,600MiB,7\n,,5\n,200MiB,83\n,,8e\n");
        fill_partitions(&img, &sfdisk_json(&img));
    })
}

fn gpt_fixture() -> PathBuf {
    fixture("vol-gpt-v1", |d| {
        let img = d.join("disk.raw");
        sparse_image(&img, 300 * MIB);
        // Slot 3 left empty: Linux numbers by slot, so p4 follows p2.
        run(Command::new("sgdisk")
            .args(["-n", "1:2048:+100M", "-t", "1:8300", "-c", "1:root fs"])
            .args(["-n", "2:0:+50M", "-t", "2:ef00", "-c", "2:EFI system"])
            .args(["-n", "4:0:+30M", "-t", "4:0700", "-c", "4:Données ünï"])
            .arg(&img));
        fill_partitions(&img, &sfdisk_json(&img));
    })
}

/// A loop device, detached when dropped (also when a test fails).
struct Loop(String);

impl Loop {
    fn attach(args: &[&str], img: &Path) -> Loop {
        Loop(run_text(Command::new("losetup").args(args).args(["-f", "--show"]).arg(img)).trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn gpt4k_fixture() -> PathBuf {
    fixture("vol-gpt4k-v1", |d| {
        let img = d.join("disk.raw");
        sparse_image(&img, 64 * MIB);
        // sgdisk takes the sector size from the device: a loop device with
        // 4096-byte logical sectors.
        {
            let dev = Loop::attach(&["--sector-size", "4096"], &img);
            run(Command::new("sgdisk").args(["-n", "1:0:+20M", "-c", "1:four-k", "-n", "2:0:0", "-t", "2:8300", "-c", "2:rest"]).arg(&dev.0));
            let json = run_text(Command::new("sfdisk").arg("--json").arg(&dev.0));
            let table: Value = serde_json::from_str(&json).unwrap();
            assert_eq!(table["partitiontable"]["sectorsize"], 4096);
            std::fs::write(d.join("sfdisk.json"), json).unwrap();
        }
        let table: Value = serde_json::from_str(&std::fs::read_to_string(d.join("sfdisk.json")).unwrap()).unwrap();
        fill_partitions(&img, &table);
    })
}

#[test]
fn mbr_primaries_and_logicals_match_sfdisk() {
    let dir = mbr_fixture();
    let img = dir.join("disk.raw");
    let guard = SourceGuard::new(&[&dir]);
    let vols = find_volumes(&open(&[img.clone()])).unwrap();
    assert!(vols[0].errors.is_empty(), "{:?}", errors(&vols[0]));
    let table = sfdisk_json(&img);
    assert_partitions_match(&vols[0], &table, &img);
    assert_eq!(vols[0].volumes.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), ["p1", "p2", "p5", "p6"]);
    guard.check();
}

#[test]
fn gpt_named_partitions_match_sfdisk() {
    let dir = gpt_fixture();
    let img = dir.join("disk.raw");
    let guard = SourceGuard::new(&[&dir]);
    let vols = find_volumes(&open(&[img.clone()])).unwrap();
    assert!(vols[0].errors.is_empty(), "{:?}", errors(&vols[0]));
    assert_partitions_match(&vols[0], &sfdisk_json(&img), &img);
    // sgdisk's own view of names and types, as a second oracle.
    let info = run_text(Command::new("sgdisk").args(["-i", "4"]).arg(&img));
    assert!(info.contains("Partition name: 'Données ünï'"), "{info}");
    assert_eq!(vol(&vols[0], "p4").name.as_deref(), Some("Données ünï"));
    assert!(info.contains("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"), "{info}");
    guard.check();
}

#[test]
fn gpt_with_4k_sectors_matches_sfdisk() {
    let dir = gpt4k_fixture();
    let img = dir.join("disk.raw");
    let guard = SourceGuard::new(&[&dir]);
    let vols = find_volumes(&open(&[img.clone()])).unwrap();
    assert!(vols[0].errors.is_empty(), "{:?}", errors(&vols[0]));
    let table: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("sfdisk.json")).unwrap()).unwrap();
    assert_partitions_match(&vols[0], &table, &img);
    assert_eq!(vol(&vols[0], "p1").start % 4096, 0);
    guard.check();
}

fn scratch_copy(test: &str, src: &Path) -> PathBuf {
    let d = scratch(test);
    let dst = d.join("disk.raw");
    run(Command::new("cp").arg("--sparse=always").arg(src).arg(&dst));
    dst
}

#[test]
fn gpt_damaged_primary_header_uses_backup() {
    let orig = gpt_fixture().join("disk.raw");
    let table = sfdisk_json(&orig);
    // Damage the primary header (its CRC no longer matches).
    let img = scratch_copy("vol-gpt-bad-primary", &orig);
    write_at(&img, 512 + 60, &[0xde, 0xad]);
    let vols = find_volumes(&open(&[img.clone()])).unwrap();
    assert!(vols[0].errors.is_empty(), "{:?}", errors(&vols[0]));
    assert_partitions_match(&vols[0], &table, &img);
    // Damage the primary entry array instead (header fine, array CRC wrong).
    let img = scratch_copy("vol-gpt-bad-entries", &orig);
    write_at(&img, 1024 + 60, &[0xde, 0xad]);
    let vols = find_volumes(&open(&[img.clone()])).unwrap();
    assert!(vols[0].errors.is_empty(), "{:?}", errors(&vols[0]));
    assert_partitions_match(&vols[0], &table, &img);
}

#[test]
fn gpt_both_headers_damaged_is_a_clear_error() {
    let orig = gpt_fixture().join("disk.raw");
    let img = scratch_copy("vol-gpt-bad-both", &orig);
    let size = std::fs::metadata(&img).unwrap().len();
    write_at(&img, 512 + 60, &[0xde, 0xad]);
    write_at(&img, size - 512 + 60, &[0xde, 0xad]);
    let guard = SourceGuard::new(&[&img]);
    let vols = find_volumes(&open(&[img.clone()])).unwrap();
    assert!(vols[0].volumes.is_empty());
    let errs = errors(&vols[0]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let e = &errs[0];
    assert!(e.starts_with("gpt: disk0") && e.contains("both GPT headers") && e.contains("CRC32 mismatch") && e.contains("LBA 1") && e.contains("LBA 614399"), "{e}");
    guard.check();
}

/// Sector of the second EBR and the offset of the extended partition's
/// start, from sfdisk's report (the EBR sits one sector... before its
/// logical partition's data start only with sfdisk's default gap, so read
/// the chain instead of assuming).
fn ebr_chain(img: &Path, ext_start: u64) -> Vec<u64> {
    let mut out = vec![ext_start];
    let mut cur = ext_start;
    loop {
        let s = read_file_at(img, cur * 512, 512);
        let next = u32::from_le_bytes(s[462 + 8..462 + 12].try_into().unwrap()) as u64;
        if s[462 + 4] == 0 {
            return out;
        }
        cur = ext_start + next;
        out.push(cur);
    }
}

#[test]
fn mbr_ebr_chain_loop_is_an_error_and_keeps_other_partitions() {
    let orig = mbr_fixture().join("disk.raw");
    let table = sfdisk_json(&orig);
    let ext = table["partitiontable"]["partitions"].as_array().unwrap().iter().find(|p| p["type"] == "5").unwrap()["start"].as_u64().unwrap();
    let img = scratch_copy("vol-mbr-ebr-loop", &orig);
    let chain = ebr_chain(&img, ext);
    assert_eq!(chain.len(), 2, "sfdisk made two EBRs");
    // Point the second EBR's link back at the first (relative start 0).
    write_at(&img, chain[1] * 512 + 462, &[0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    let vols = find_volumes(&open(&[img.clone()])).unwrap();
    let ids: Vec<&str> = vols[0].volumes.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["p1", "p2", "p5", "p6"]);
    let errs = errors(&vols[0]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("ebr: disk0") && errs[0].contains("loops back to sector"), "{errs:?}");
}

#[test]
fn mbr_partition_beyond_disk_end_is_an_error_for_that_partition() {
    let orig = mbr_fixture().join("disk.raw");
    let table = sfdisk_json(&orig);
    let img = scratch_copy("vol-mbr-beyond-end", &orig);
    // Make p2 (entry 2) 4 GiB long on a 2.1 GiB disk.
    write_at(&img, 446 + 16 + 12, &(8u32 << 20).to_le_bytes());
    let vols = find_volumes(&open(&[img.clone()])).unwrap();
    let ids: Vec<&str> = vols[0].volumes.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["p1", "p5", "p6"]);
    let errs = errors(&vols[0]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("p2: disk0: MBR partition entry 2 at offset 462") && errs[0].contains("beyond the end of the disk"), "{errs:?}");
    // The others are still right.
    let p1 = &table["partitiontable"]["partitions"][0];
    assert_eq!(vol(&vols[0], "p1").start, p1["start"].as_u64().unwrap() * 512);
}

#[test]
fn bare_filesystem_disk_is_one_fs_volume() {
    let dir = fixture("vol-bare-v1", |d| {
        let img = d.join("disk.raw");
        sparse_image(&img, 64 * MIB);
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
    });
    let img = dir.join("disk.raw");
    let vols = find_volumes(&open(&[img.clone()])).unwrap();
    assert!(vols[0].errors.is_empty(), "{:?}", errors(&vols[0]));
    let ids: Vec<(&str, u64, u64)> = vols[0].volumes.iter().map(|v| (v.id.as_str(), v.start, v.size)).collect();
    assert_eq!(ids, [("fs", 0, 64 * MIB)]);
}

// ---------------------------------------------------------------- LVM

/// Where each PV of the LVM fixture lives: loop device name at build time,
/// image index and byte offset of the PV in that image.
struct PvPlace {
    dev: String,
    image: usize,
    offset: u64,
}

const LVM_IMAGES: [&str; 3] = ["d0.raw", "d1.raw", "d2.raw"];

fn lvm(args: &[&str], devs: &str) -> String {
    run_text(
        Command::new("lvm")
            .args(args)
            .args(["--config", "global { activation = 0 } backup { backup = 0 archive = 0 }", "--devices", devs])
            .env("LVM_SUPPRESS_FD_WARNINGS", "1"),
    )
}

/// Three disks of one VM: d0 has an MBR with a 0x8e partition, d1 is a
/// whole-disk PV, d2 has a GPT with an LVM partition. VG vg0 spans them:
/// `lin` is linear on d0 then extended onto d2, `str` is striped over d0 and
/// d1 (64 KiB stripes), `span` starts on d2 and is extended onto d1.
/// The tools' reports are saved with the fixture; the LV content is written
/// at the places those reports give.
fn lvm_fixture() -> PathBuf {
    fixture("vol-lvm-v1", |d| {
        let imgs: Vec<PathBuf> = LVM_IMAGES.iter().map(|n| d.join(n)).collect();
        sparse_image(&imgs[0], 300 * MIB);
        sparse_image(&imgs[1], 200 * MIB);
        sparse_image(&imgs[2], 200 * MIB);
        sfdisk_script(&imgs[0], "label: dos\n,40MiB,83\n,,8e\n");
        run(Command::new("sgdisk").args(["-n", "1:2048:0", "-t", "1:8e00", "-c", "1:pv"]).arg(&imgs[2]));
        let part = |img: &Path, n: usize| {
            let t = sfdisk_json(img);
            let p = &t["partitiontable"]["partitions"][n];
            (p["start"].as_u64().unwrap() * 512, p["size"].as_u64().unwrap() * 512)
        };
        let (a_off, a_len) = part(&imgs[0], 1);
        let (c_off, c_len) = part(&imgs[2], 0);
        let a = Loop::attach(&["-o", &a_off.to_string(), "--sizelimit", &a_len.to_string()], &imgs[0]);
        let b = Loop::attach(&[], &imgs[1]);
        let c = Loop::attach(&["-o", &c_off.to_string(), "--sizelimit", &c_len.to_string()], &imgs[2]);
        let devs = format!("{},{},{}", a.0, b.0, c.0);
        lvm(&["pvcreate", "-q", &a.0, &b.0, &c.0], &devs);
        lvm(&["vgcreate", "-q", "-s", "4m", "vg0", &a.0, &b.0, &c.0], &devs);
        lvm(&["lvcreate", "-q", "-an", "-Zn", "-Wn", "-L", "20m", "-n", "lin", "vg0", &a.0], &devs);
        lvm(&["lvcreate", "-q", "-an", "-Zn", "-Wn", "-i2", "-I64k", "-L", "40m", "-n", "str", "vg0", &a.0, &b.0], &devs);
        lvm(&["lvcreate", "-q", "-an", "-Zn", "-Wn", "-L", "8m", "-n", "span", "vg0", &c.0], &devs);
        lvm(&["lvextend", "-q", "-L", "+12m", "vg0/span", &b.0], &devs);
        lvm(&["lvextend", "-q", "-L", "+8m", "vg0/lin", &c.0], &devs);
        let report = |args: &[&str]| -> Value { serde_json::from_str(&lvm(args, &devs)).unwrap() };
        let lvs = report(&["lvs", "--segments", "--units", "b", "--nosuffix", "--reportformat", "json", "-o", "lv_name,lv_uuid,lv_size,segtype,seg_start_pe,seg_size_pe,stripes,stripe_size,seg_pe_ranges", "vg0"]);
        let pvs = report(&["pvs", "--units", "b", "--nosuffix", "--reportformat", "json", "-o", "pv_name,pv_uuid,pe_start"]);
        let vgs = report(&["vgs", "--units", "b", "--nosuffix", "--reportformat", "json", "-o", "vg_name,vg_extent_size"]);
        let places = serde_json::json!([
            {"dev": a.0, "image": 0, "offset": a_off},
            {"dev": b.0, "image": 1, "offset": 0},
            {"dev": c.0, "image": 2, "offset": c_off},
        ]);
        std::fs::write(d.join("lvm-report.json"), serde_json::to_string_pretty(&serde_json::json!({"lvs": lvs, "pvs": pvs, "vgs": vgs, "places": places})).unwrap()).unwrap();
        drop((a, b, c));
        let model = LvmModel::load(d);
        for (i, lv) in model.lv_names().iter().enumerate() {
            let content = pseudo_random(100 + i as u64, model.lv_size(lv) as usize);
            for (lv_off, len, image, image_off) in model.pieces(lv) {
                write_at(&imgs[image], image_off, &content[lv_off as usize..(lv_off + len) as usize]);
            }
        }
    })
}

/// The tools' view of the LVM fixture, and the LV -> image mapping it
/// implies (device-mapper's linear and striped targets).
struct LvmModel {
    report: Value,
    places: Vec<PvPlace>,
    extent: u64,
}

impl LvmModel {
    fn load(dir: &Path) -> LvmModel {
        let report: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("lvm-report.json")).unwrap()).unwrap();
        let places = report["places"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| PvPlace { dev: p["dev"].as_str().unwrap().into(), image: p["image"].as_u64().unwrap() as usize, offset: p["offset"].as_u64().unwrap() })
            .collect();
        let extent = report["vgs"]["report"][0]["vg"][0]["vg_extent_size"].as_str().unwrap().parse().unwrap();
        LvmModel { report, places, extent }
    }

    fn segs(&self) -> &Vec<Value> {
        self.report["lvs"]["report"][0]["seg"].as_array().unwrap()
    }

    fn lv_names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.segs().iter().map(|s| s["lv_name"].as_str().unwrap().to_string()).collect();
        n.dedup();
        n
    }

    fn lv_size(&self, lv: &str) -> u64 {
        self.segs().iter().find(|s| s["lv_name"] == lv).unwrap()["lv_size"].as_str().unwrap().parse().unwrap()
    }

    fn lv_uuid(&self, lv: &str) -> String {
        self.segs().iter().find(|s| s["lv_name"] == lv).unwrap()["lv_uuid"].as_str().unwrap().into()
    }

    fn pv(&self, dev: &str) -> (&PvPlace, u64, String) {
        let place = self.places.iter().find(|p| p.dev == dev).unwrap();
        let pv = self.report["pvs"]["report"][0]["pv"].as_array().unwrap().iter().find(|p| p["pv_name"] == dev).unwrap();
        (place, pv["pe_start"].as_str().unwrap().parse().unwrap(), pv["pv_uuid"].as_str().unwrap().into())
    }

    /// Devices an LV uses, in segment order.
    fn devices(&self, lv: &str) -> Vec<String> {
        let mut out = Vec::new();
        for s in self.segs().iter().filter(|s| s["lv_name"] == lv) {
            for r in s["seg_pe_ranges"].as_str().unwrap().split_whitespace() {
                out.push(r.split(':').next().unwrap().to_string());
            }
        }
        out
    }

    /// (LV offset, length, image index, image offset) pieces of an LV.
    fn pieces(&self, lv: &str) -> Vec<(u64, u64, usize, u64)> {
        let mut out = Vec::new();
        for s in self.segs().iter().filter(|s| s["lv_name"] == lv) {
            let num = |k: &str| -> u64 { s[k].as_str().unwrap().trim().parse().unwrap() };
            let seg_start = num("seg_start_pe") * self.extent;
            let seg_len = num("seg_size_pe") * self.extent;
            let stripes = num("stripes");
            let ranges: Vec<(u64, u64)> = s["seg_pe_ranges"]
                .as_str()
                .unwrap()
                .split_whitespace()
                .map(|r| {
                    let (dev, ext) = r.split_once(':').unwrap();
                    let first: u64 = ext.split('-').next().unwrap().parse().unwrap();
                    let (place, pe_start, _) = self.pv(dev);
                    (place.image as u64, place.offset + pe_start + first * self.extent)
                })
                .collect();
            assert_eq!(ranges.len() as u64, stripes);
            let chunk = if stripes == 1 { seg_len } else { num("stripe_size") };
            let mut o = 0;
            while o < seg_len {
                let n = chunk.min(seg_len - o);
                let c = o / chunk;
                let (image, base) = ranges[(c % stripes) as usize];
                out.push((seg_start + o, n, image as usize, base + (c / stripes) * chunk));
                o += n;
            }
        }
        out
    }
}

fn lvm_images(dir: &Path) -> Vec<PathBuf> {
    LVM_IMAGES.iter().map(|n| dir.join(n)).collect()
}

#[test]
fn lvm_linear_striped_and_spanning_lvs_match_lvs_report() {
    let dir = lvm_fixture();
    let guard = SourceGuard::new(&[&dir]);
    let model = LvmModel::load(&dir);
    let imgs = lvm_images(&dir);
    let vols = find_volumes(&open(&imgs)).unwrap();
    for dv in &vols {
        assert!(dv.errors.is_empty(), "{:?}", errors(dv));
    }
    let ids = |i: usize| vols[i].volumes.iter().map(|v| v.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(0), ["p1", "p2", "lvm-vg0-lin", "lvm-vg0-str"]);
    assert_eq!(ids(1), Vec::<String>::new());
    assert_eq!(ids(2), ["p1", "lvm-vg0-span"]);
    assert_eq!(vol(&vols[0], "p2").part_type, "0x8e");
    assert_eq!(model.lv_names(), ["lin", "span", "str"]); // lvs sorts by name
    // Each LV is on several PVs, as intended.
    assert_eq!(model.devices("lin").len(), 2);
    assert_eq!(model.devices("str").len(), 2);
    assert_eq!(model.devices("span").len(), 2);
    for (i, lv) in model.lv_names().iter().enumerate() {
        let first = model.pieces(lv)[0];
        let dv = &vols[first.2];
        let v = vol(dv, &format!("lvm-vg0-{lv}"));
        assert_eq!(v.name.as_deref(), Some(lv.as_str()));
        assert_eq!(v.part_type, "lvm");
        assert_eq!(v.size, model.lv_size(lv), "{lv} size");
        assert_eq!(v.source.size(), model.lv_size(lv));
        assert_eq!(v.uuid.as_deref(), Some(model.lv_uuid(lv).as_str()), "{lv} uuid");
        assert_eq!(v.start, first.3, "{lv} start on its disk");
        // Every byte: what we read = what was written = what the image holds
        // at the places the tools report.
        let ours = read_vol(v, 0, v.size as usize);
        assert!(ours == pseudo_random(100 + i as u64, v.size as usize), "{lv}: content differs from what was written");
        for (lv_off, len, image, image_off) in model.pieces(lv) {
            assert!(ours[lv_off as usize..(lv_off + len) as usize] == read_file_at(&imgs[image], image_off, len as usize)[..], "{lv} at {lv_off}");
        }
        // Unaligned reads across stripe chunks and segment boundaries.
        for &(off, len) in &[(65536 - 100, 300usize), (12 * MIB - 7, 4096 + 14), (v.size - 1000, 1000)] {
            assert_eq!(read_vol(v, off, len), ours[off as usize..off as usize + len], "{lv} read at {off}");
        }
        assert!(v.source.read_exact_at(&mut [0u8; 2], v.size - 1).is_err());
    }
    guard.check();
}

#[test]
fn lvm_missing_pv_is_an_error_for_the_lvs_that_need_it() {
    let dir = lvm_fixture();
    let model = LvmModel::load(&dir);
    let imgs = lvm_images(&dir);
    // The VM's disk d1 (whole-disk PV) is not given.
    let vols = find_volumes(&open(&[imgs[0].clone(), imgs[2].clone()])).unwrap();
    let (_, _, missing_uuid) = model.pv(&model.places[1].dev);
    assert_eq!(vols[0].volumes.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), ["p1", "p2", "lvm-vg0-lin"]);
    assert_eq!(vols[1].volumes.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), ["p1"]);
    let mut errs: Vec<String> = vols.iter().flat_map(errors).collect();
    errs.sort();
    assert_eq!(errs.len(), 2, "{errs:?}");
    for (e, lv) in errs.iter().zip(["span", "str"]) {
        assert!(e.starts_with(&format!("lvm-vg0-{lv}: ")) && e.contains(&missing_uuid) && e.contains("on none of the VM's disks"), "{e}");
    }
    // lin is still right.
    let lin = vol(&vols[0], "lvm-vg0-lin");
    assert!(read_vol(lin, 0, lin.size as usize) == pseudo_random(100, lin.size as usize));
}

/// Byte offset, inside its image, of the current metadata text of the PV
/// at `place` (from the metadata area header at PV byte 4096).
fn metadata_text_offset(img: &Path, pv_offset: u64) -> u64 {
    let h = read_file_at(img, pv_offset + 4096, 512);
    assert_eq!(&h[4..20], b"\x20LVM2\x20x[5A%r0N*>");
    pv_offset + 4096 + u64::from_le_bytes(h[40..48].try_into().unwrap())
}

#[test]
fn lvm_metadata_checksum_mismatch_is_a_clear_error() {
    let dir = lvm_fixture();
    let model = LvmModel::load(&dir);
    let d = scratch("vol-lvm-bad-metadata");
    let imgs: Vec<PathBuf> = LVM_IMAGES
        .iter()
        .map(|n| {
            let dst = d.join(n);
            run(Command::new("cp").arg("--sparse=always").arg(dir.join(n)).arg(&dst));
            dst
        })
        .collect();
    // One damaged copy: the other PVs' copies are used.
    let p0 = &model.places[0];
    let text0 = metadata_text_offset(&imgs[p0.image], p0.offset);
    write_at(&imgs[p0.image], text0 + 3, b"X");
    let vols = find_volumes(&open(&imgs)).unwrap();
    assert!(vols.iter().all(|v| v.errors.is_empty()), "{:?}", vols.iter().flat_map(errors).collect::<Vec<_>>());
    assert_eq!(vols.iter().map(|v| v.volumes.len()).sum::<usize>(), 3 + 3);
    // Every copy damaged: a clear error per PV, no logical volumes.
    for p in &model.places[1..] {
        let t = metadata_text_offset(&imgs[p.image], p.offset);
        write_at(&imgs[p.image], t + 3, b"X");
    }
    let vols = find_volumes(&open(&imgs)).unwrap();
    let errs: Vec<String> = vols.iter().flat_map(errors).collect();
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(errs[0].starts_with(&format!("lvm: disk0/p2: LVM metadata text at offset {}", text0 - p0.offset)) && errs[0].contains("checksum mismatch"), "{errs:?}");
    assert!(errs[1].starts_with("lvm: disk1: LVM metadata text") && errs[2].starts_with("lvm: disk2/p1: LVM metadata text"), "{errs:?}");
    assert!(vols.iter().flat_map(|v| &v.volumes).all(|v| !v.id.starts_with("lvm-")));
}

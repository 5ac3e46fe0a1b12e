//! Datastores: `datastore ls` against the kernel's / ntfs-3g's view of the
//! same volume, and `SOURCE#/path` disks (VMDK chains on NTFS, qcow2 over
//! raw on ext4, ext4 on a GPT partition) against `qemu-img convert` of the
//! same chain outside the datastore. Needs: ntfs-3g, e2fsprogs, gdisk
//! (sgdisk), qemu-utils, util-linux (losetup, mount), time, root.

#[path = "../fixtures/ds_common.rs"]
mod common;

use common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use vbproxy_e2e::*;

/// name -> (type, size, mode, mtime, target) as the OS shows a directory.
fn os_listing(dir: &Path) -> BTreeMap<String, (String, u64, u64, i64, Option<String>)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        let t = if m.is_dir() { "dir" } else if m.file_type().is_symlink() { "symlink" } else { "file" };
        let target = m.file_type().is_symlink().then(|| std::fs::read_link(e.path()).unwrap().display().to_string());
        let size = if m.is_dir() { 0 } else { m.len() };
        out.insert(e.file_name().to_string_lossy().into_owned(), (t.to_string(), size, (m.mode() & 0o7777) as u64, m.mtime(), target));
    }
    out
}

fn our_listing(args: &[&str]) -> BTreeMap<String, (String, u64, u64, i64, Option<String>)> {
    let out = vbproxy_ok(&[&["datastore", "ls", "--json"], args].concat());
    let v: serde_json::Value = serde_json::from_str(&out).expect("datastore ls --json");
    let mut m = BTreeMap::new();
    for it in v.as_array().expect("a list") {
        let keys: Vec<&String> = it.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["name", "type", "size", "mode", "mtime", "target"], "fields of {it}");
        let t = it["type"].as_str().unwrap().to_string();
        let size = if t == "dir" { 0 } else { it["size"].as_u64().unwrap() };
        m.insert(
            it["name"].as_str().unwrap().to_string(),
            (t, size, it["mode"].as_u64().unwrap(), it["mtime"].as_i64().unwrap(), it["target"].as_str().map(str::to_owned)),
        );
    }
    m
}

/// `vbproxy export --format raw SPEC` equals `qemu-img convert -O raw` of
/// the local copy of the same chain (qemu-img compare).
fn assert_export_matches(spec: &str, local_top: &Path, name: &str) {
    let dir = scratch(name);
    let ours = dir.join("ours.raw");
    let theirs = dir.join("theirs.raw");
    vbproxy_ok(&["export", "-q", "--format", "raw", "--no-manifest", spec, "-o", ours.to_str().unwrap()]);
    run(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(local_top).arg(&theirs));
    run(Command::new("qemu-img").args(["compare", "-q", "-f", "raw", "-F", "raw"]).arg(&ours).arg(&theirs));
    assert_files_equal(&ours, &theirs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ntfs_datastore_ls_matches_ntfs3g() {
    let (img, _) = ntfs_store();
    let guard = SourceGuard::new(&[&img]);
    let m = Mount::new(&img, 0, std::fs::metadata(&img).unwrap().len(), "ntfs-3g", &scratch("ds-ntfs-ls").join("mnt"), true);
    for dir in ["/", "/web01", "/loop"] {
        let theirs = os_listing(&m.dir.join(dir.trim_start_matches('/')));
        let ours = our_listing(&[img.to_str().unwrap(), dir]);
        assert_eq!(ours, theirs, "datastore ls {dir}");
    }
    assert!(our_listing(&[img.to_str().unwrap(), "/web01"]).contains_key("web01-000002.vmdk"));
    // SOURCE#/dir is the same as SOURCE /dir; a file lists itself.
    assert_eq!(our_listing(&[&hash(&img, "/web01")]), our_listing(&[img.to_str().unwrap(), "/web01"]));
    let one = our_listing(&[img.to_str().unwrap(), "/web01/web01.vmx"]);
    assert_eq!(one.keys().collect::<Vec<_>>(), ["web01.vmx"]);
    // Long listing: a header naming the datastore, sizes and times.
    let long = vbproxy_ok(&["datastore", "ls", "-l", img.to_str().unwrap(), "/web01"]);
    let first = long.lines().next().unwrap();
    assert!(first.starts_with("# datastore ") && first.contains("ntfs label DS_NTFS"), "{first}");
    let nvram = std::fs::metadata(m.dir.join("web01/web01.nvram")).unwrap().len();
    assert!(long.lines().any(|l| l.ends_with(" web01.nvram") && l.contains(&format!(" {nvram} "))), "{long}");
    drop(m);
    guard.check();
}

#[test]
fn ntfs_datastore_vmdk_chain_export_equals_qemu() {
    let (img, local) = ntfs_store();
    let guard = SourceGuard::new(&[&img]);
    assert_export_matches(&hash(&img, "/web01/web01-000002.vmdk"), &local.join("web01/web01-000002.vmdk"), "ds-ntfs-export");
    // A flat descriptor with its extent beside it.
    assert_export_matches(&hash(&img, "/web01/web01_1.vmdk"), &local.join("web01/web01_1.vmdk"), "ds-ntfs-export-flat");
    guard.check();
}

#[test]
fn inspect_ls_cat_through_hash() {
    let (img, _) = ntfs_store();
    let guard = SourceGuard::new(&[&img]);
    let spec = hash(&img, "/web01/web01-000002.vmdk");
    let info: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["inspect", "--json", &spec])).unwrap();
    let chain: Vec<&str> = info["disks"][0]["chain"].as_array().unwrap().iter().map(|l| l["path"].as_str().unwrap()).collect();
    assert_eq!(chain, [spec.clone(), hash(&img, "/web01/web01-000001.vmdk"), hash(&img, "/web01/web01.vmdk")]);
    assert_eq!(info["disks"][0]["virtual_size"].as_u64(), Some(DISK_SIZE));
    let data = hash(&img, "/web01/web01_1.vmdk");
    let info: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["inspect", "--json", &data])).unwrap();
    assert_eq!(info["disks"][0]["volumes"][0]["filesystem"], "ext4");
    assert_eq!(info["disks"][0]["volumes"][0]["label"], "WEB01DATA");
    let names: Vec<String> = vbproxy_ok(&["ls", &data, "/fs"]).lines().map(str::to_owned).collect();
    for (f, _) in guest_files() {
        assert!(names.contains(&f.split('/').next().unwrap().to_string()), "{f} missing from {names:?}");
    }
    for (f, bytes) in guest_files() {
        let out = vbproxy().args(["cat", &data, &format!("/fs/{f}")]).output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, bytes, "cat {f}");
    }
    guard.check();
}

#[test]
fn ext4_datastore_ls_and_qcow2_over_raw() {
    let (img, local) = ext4_store();
    let guard = SourceGuard::new(&[&img]);
    let m = Mount::new(&img, 0, std::fs::metadata(&img).unwrap().len(), "ext4", &scratch("ds-ext4-ls").join("mnt"), true);
    for dir in ["/kvm01", "/app02"] {
        assert_eq!(our_listing(&[img.to_str().unwrap(), dir]), os_listing(&m.dir.join(dir.trim_start_matches('/'))), "datastore ls {dir}");
    }
    let root = our_listing(&[img.to_str().unwrap()]);
    assert_eq!(root, os_listing(&m.dir), "datastore ls /");
    drop(m);
    let long = vbproxy_ok(&["datastore", "ls", "-l", img.to_str().unwrap(), "/"]);
    assert!(long.lines().next().unwrap().contains("ext4 label DS_EXT4"), "{long}");
    assert_export_matches(&hash(&img, "/kvm01/kvm01.qcow2"), &local.join("kvm01/kvm01.qcow2"), "ds-ext4-export");
    guard.check();
}

#[test]
fn gpt_lun_datastore_on_partition() {
    let (lun, local) = gpt_lun();
    let guard = SourceGuard::new(&[&lun]);
    let long = vbproxy_ok(&["datastore", "ls", "-l", lun.to_str().unwrap(), "/kvm01"]);
    assert!(long.lines().next().unwrap().contains("volume p2"), "{long}");
    let m = Mount::new(&lun, GPT_P2_START, GPT_P2_SIZE, "ext4", &scratch("ds-gpt-ls").join("mnt"), true);
    assert_eq!(our_listing(&[lun.to_str().unwrap(), "/kvm01"]), os_listing(&m.dir.join("kvm01")));
    drop(m);
    assert_export_matches(&hash(&lun, "/kvm01/kvm01.qcow2"), &local.join("kvm01/kvm01.qcow2"), "ds-gpt-export");
    let info: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["inspect", "--json", &hash(&lun, "/kvm01/kvm01.qcow2")])).unwrap();
    assert_eq!(info["disks"][0]["chain"].as_array().unwrap().len(), 2);
    assert_eq!(info["disks"][0]["chain"][1]["format"], "raw");
    guard.check();
}

#[test]
fn missing_parent_and_loop_inside_the_datastore_are_refused() {
    let (img, _) = ntfs_store();
    let guard = SourceGuard::new(&[&img]);
    let orphan = hash(&img, "/broken/orphan.vmdk");
    for cmd in ["inspect", "map"] {
        assert_clean_error(&[cmd, &orphan], 3, &["/broken/orphan.vmdk", "gone.vmdk", "not found"]);
    }
    let out = scratch("ds-orphan-export").join("o.raw");
    assert_clean_error(&["export", "-q", &orphan, "-o", out.to_str().unwrap()], 3, &["gone.vmdk"]);
    assert!(!out.exists() || std::fs::metadata(&out).unwrap().len() == 0, "no output for a refused chain");
    assert_clean_error(&["inspect", &hash(&img, "/loop/a.vmdk")], 3, &["loops", "a.vmdk", "b.vmdk"]);
    assert_clean_error(&["inspect", &hash(&img, "/web01/nothere.vmdk")], 1, &["/web01/nothere.vmdk"]);
    assert_clean_error(&["datastore", "ls", img.to_str().unwrap(), "/nothere"], 1, &["/nothere", "not found"]);
    guard.check();
}

#[test]
fn not_a_datastore_and_local_hash_paths() {
    // An image with no filesystem is no datastore.
    let d = scratch("ds-not-a-store");
    let blank = d.join("blank.img");
    std::fs::File::create(&blank).unwrap().set_len(8 * MIB).unwrap();
    assert_clean_error(&["datastore", "ls", blank.to_str().unwrap()], 1, &["blank.img", "no VMFS, NTFS or ext4"]);
    // A local path that exists as a whole is a plain file, '#' or not.
    let (_, local) = ext4_store();
    let odd = d.join("store#");
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::copy(local.join("kvm01/base.raw"), odd.join("disk.raw")).unwrap();
    let info: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["inspect", "--json", odd.join("disk.raw").to_str().unwrap()])).unwrap();
    assert_eq!(info["disks"][0]["format"], "raw");
    // A local directory is a datastore mounted by the OS.
    let listing = our_listing(&[local.to_str().unwrap(), "/kvm01"]);
    assert_eq!(listing, os_listing(&local.join("kvm01")));
    assert_export_matches(&hash(&local, "/kvm01/kvm01.qcow2"), &local.join("kvm01/kvm01.qcow2"), "ds-local-dir-export");
}

/// The ESXi-made VMFS 5 sample (outside the repository), decompressed.
fn vmfs_sample() -> Option<std::path::PathBuf> {
    let Some(gz) = corpus("vmfs5.bin.gz") else {
        eprintln!("SKIPPED: ../shared/corpus/vmfs5.bin.gz is absent");
        return None;
    };
    let d = fixture("ds-vmfs5-v1", |d| {
        let out = run(Command::new("gzip").arg("-dc").arg(&gz));
        std::fs::write(d.join("vmfs5.bin"), out.stdout).unwrap();
        // The same volume on partition 1 of a GPT LUN, type VMFS (fb00).
        let lun = d.join("lun.img");
        std::fs::File::create(&lun).unwrap().set_len(MIB + 512 * MIB + MIB).unwrap();
        run(Command::new("sgdisk").args(["-n", "1:2048:+512M", "-t", "1:fb00"]).arg(&lun));
        run(Command::new("dd").arg(format!("if={}", d.join("vmfs5.bin").display())).arg(format!("of={}", lun.display())).args(["bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"]));
    });
    Some(d)
}

struct FuseMount(std::path::PathBuf);
impl Drop for FuseMount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount").arg("-u").arg(&self.0).status();
    }
}

#[test]
fn vmfs_datastore_ls_matches_vmfs_fuse() {
    let Some(d) = vmfs_sample() else { return };
    let (img, lun) = (d.join("vmfs5.bin"), d.join("lun.img"));
    let guard = SourceGuard::new(&[&img, &lun]);
    let mnt = scratch("ds-vmfs-fuse").join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    run(Command::new("vmfs-fuse").args(["-o", "ro"]).arg(&img).arg(&mnt));
    let m = FuseMount(mnt.clone());
    assert_eq!(our_listing(&[img.to_str().unwrap(), "/directory"]), os_listing(&mnt.join("directory")));
    let ours: Vec<String> = our_listing(&[img.to_str().unwrap()]).into_keys().collect();
    let theirs: Vec<String> = os_listing(&mnt).into_keys().collect();
    assert_eq!(ours, theirs, "names at the root");
    drop(m);
    // On a GPT partition of type VMFS: the same datastore.
    assert_eq!(our_listing(&[lun.to_str().unwrap(), "/directory"]), our_listing(&[img.to_str().unwrap(), "/directory"]));
    let long = vbproxy_ok(&["datastore", "ls", "-l", lun.to_str().unwrap()]);
    assert!(long.lines().next().unwrap().contains("vmfs label VMFS5 Test uuid 61137dd5-df6bc2c8-f0e7-000c29801686 volume p1"), "{long}");
    guard.check();
}

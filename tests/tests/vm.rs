//! VMs: `.vmx`/`.vmsd` read from datastores (ESXi-style configuration with
//! SCSI, SATA, IDE and NVMe slots, an RDM, an independent disk, a CD-ROM),
//! `vm list` over an inventory of two datastore images, a `.vmx` as SOURCE
//! (its disks named by controller slot), and refusals of broken VMs.
//! Needs: ntfs-3g, e2fsprogs, qemu-utils, util-linux, time, root.

#[path = "../fixtures/ds_common.rs"]
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use vbproxy_e2e::*;

fn inventory(name: &str, stores: &[(&str, &Path)]) -> PathBuf {
    let d = scratch(name);
    let mut text = String::from("cluster = \"test\"\n");
    for (i, (n, p)) in stores.iter().enumerate() {
        text.push_str(&format!("\n[[datastore]]\nname = \"{n}\"\nlun = {i}\ndevice = \"naa.60000000000000000000000000000{i:03}\"\nsource = \"{}\"\n", p.display()));
    }
    let f = d.join("inventory.toml");
    std::fs::write(&f, text).unwrap();
    f
}

fn vm_list_json(inv: &Path) -> serde_json::Value {
    serde_json::from_str(&vbproxy_ok(&["vm", "list", "--json", "--inventory", inv.to_str().unwrap()])).expect("vm list --json")
}

#[test]
fn vm_list_on_two_datastores() {
    let (ntfs, local) = ntfs_store();
    let (ext4, _) = ext4_store();
    let guard = SourceGuard::new(&[&ntfs, &ext4]);
    let inv = inventory("vm-list", &[("ds-ntfs", &ntfs), ("ds-ext4", &ext4)]);
    let v = vm_list_json(&inv);
    assert_eq!(v["errors"], serde_json::json!([]));
    let vms = v["vms"].as_array().unwrap();
    let names: Vec<&str> = vms.iter().map(|v| v["name"].as_str().unwrap_or("?")).collect();
    assert_eq!(names, ["web01", "app02"], "{v:#}");

    let web = &vms[0];
    assert_eq!(web["datastore"], "ds-ntfs");
    assert_eq!(web["vmx"], hash(&ntfs, "/web01/web01.vmx"));
    assert_eq!(web["guest_os"], "windows2019srv-64");
    assert_eq!(web["uuid_bios"], "42 1a 2b 3c 4d 5e 6f 70-81 92 a3 b4 c5 d6 e7 f8");
    let disks = web["disks"].as_array().unwrap();
    let slots: Vec<&str> = disks.iter().map(|d| d["slot"].as_str().unwrap()).collect();
    assert_eq!(slots, ["scsi0-0", "sata0-0"]);
    assert_eq!(disks[0]["file"], "web01-000002.vmdk");
    assert_eq!(disks[0]["chain_depth"], 3);
    assert_eq!(disks[0]["virtual_size"].as_u64(), Some(qemu_virtual_size(&local.join("web01/web01-000002.vmdk"))));
    assert_eq!(disks[1]["chain_depth"], 1);
    assert_eq!(disks[1]["format"], "vmdk");
    let skipped: Vec<(&str, &str)> = web["skipped"].as_array().unwrap().iter().map(|s| (s["slot"].as_str().unwrap(), s["reason"].as_str().unwrap())).collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(skipped[0].0, "scsi0-1");
    assert!(skipped[0].1.contains("raw device mapping (the LUN itself must be backed up)") && skipped[0].1.contains("vmfsPassthroughRawDeviceMap"));
    assert_eq!(skipped[1].0, "scsi0-2");
    assert!(skipped[1].1.contains("independent-persistent"));
    let snap = &web["snapshots"];
    assert_eq!(snap["count"], 2);
    assert_eq!(snap["current"], "backup \"nightly\"");
    assert_eq!(snap["tree"][0]["name"], "before patch");
    assert_eq!(snap["tree"][0]["disks"][0], serde_json::json!({"slot": "scsi0-0", "file": "web01.vmdk"}));
    assert_eq!(snap["tree"][1]["depth"], 1);
    assert_eq!(snap["tree"][1]["current"], true);
    let files: Vec<&str> = web["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert_eq!(files, ["web01.vmx", "web01.nvram", "web01.vmsd"]);

    // app02 on ext4 names a disk on the NTFS datastore by its inventory name.
    let app = &vms[1];
    assert_eq!(app["datastore"], "ds-ext4");
    let slots: Vec<&str> = app["disks"].as_array().unwrap().iter().map(|d| d["slot"].as_str().unwrap()).collect();
    assert_eq!(slots, ["scsi0-0", "nvme0-0"]);
    assert_eq!(app["disks"][1]["spec"], hash(&ntfs, "/shared/app02-data.vmdk"));
    assert_eq!(app["disks"][1]["virtual_size"].as_u64(), Some(8 * MIB));
    assert!(app["snapshots"].is_null());

    let text = vbproxy_ok(&["vm", "list", "--inventory", inv.to_str().unwrap()]);
    assert!(text.contains("web01  (datastore ds-ntfs"), "{text}");
    assert!(text.contains("snapshots: 2, current backup \"nightly\""), "{text}");
    assert!(text.contains("scsi0-1   skipped: not backed up: raw device mapping"), "{text}");
    guard.check();
}

#[test]
fn vmx_as_source_opens_disks_by_slot() {
    let (ntfs, local) = ntfs_store();
    let guard = SourceGuard::new(&[&ntfs, &local]);
    for vmx in [hash(&ntfs, "/web01/web01.vmx"), local.join("web01/web01.vmx").display().to_string()] {
        let out = vbproxy().args(["ls", &vmx, "/"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "sata0-0\nscsi0-0\n");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("scsi0-1: not backed up: raw device mapping"), "{err}");
        assert!(err.contains("scsi0-2: not backed up: independent disk"), "{err}");
        assert!(!err.contains("sata0-1"), "the CD-ROM is not a disk: {err}");
        for (f, bytes) in guest_files() {
            let out = vbproxy().args(["cat", &vmx, &format!("/sata0-0/fs/{f}")]).output().unwrap();
            assert_eq!(out.stdout, bytes, "cat {f} via {vmx}");
        }
    }
    // tar of the VM: the ext4 disk's files under its slot name.
    let tar = scratch("vm-tar").join("vm.tar");
    let out = vbproxy().args(["tar", "--path", "/sata0-0", &hash(&ntfs, "/web01/web01.vmx")]).output().unwrap();
    assert!(out.status.success());
    std::fs::write(&tar, &out.stdout).unwrap();
    let listing = run_text(Command::new("tar").arg("-tf").arg(&tar));
    assert!(listing.lines().any(|l| l.ends_with("fs/hello.txt")), "{listing}");
    guard.check();
}

#[test]
fn broken_vms_are_clean_errors() {
    let bad = bad_store();
    let (ntfs, _) = ntfs_store();
    let guard = SourceGuard::new(&[&bad, &ntfs]);
    assert_clean_error(&["ls", &hash(&bad, "/bad/bad.vmx"), "/"], 1, &["bad.vmx", "line 3"]);
    assert_clean_error(&["ls", &hash(&bad, "/missing/missing.vmx"), "/"], 1, &["missing.vmx", "scsi0:0.fileName", "nothere.vmdk", "not found"]);
    assert_clean_error(&["ls", &hash(&bad, "/loop/loop.vmx"), "/"], 3, &["loops", "a.vmdk"]);
    // A disk descriptor given as a .vmx is refused as not a .vmx.
    let d = scratch("vm-not-vmx");
    let f = d.join("fake.vmx");
    std::fs::write(&f, "# Disk DescriptorFile\nversion=1\ncreateType=\"vmfs\"\n").unwrap();
    assert_clean_error(&["ls", f.to_str().unwrap(), "/"], 1, &["fake.vmx", "not a .vmx"]);
    // vm list over a datastore of broken VMs: each named, exit 1.
    let inv = inventory("vm-list-bad", &[("ds-bad", &bad)]);
    let out = vbproxy().args(["vm", "list", "--json", "--inventory", inv.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vms = v["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 3, "{v:#}");
    assert!(vms[0]["error"].as_str().unwrap().contains("line 3"), "{v:#}");
    assert!(vms[1]["disks"][0]["error"].as_str().unwrap().contains("loops"), "{v:#}");
    assert!(vms[2]["error"].as_str().unwrap().contains("nothere.vmdk"), "{v:#}");
    // An inventory datastore that holds no datastore filesystem.
    let blank = d.join("blank.img");
    std::fs::File::create(&blank).unwrap().set_len(4 * MIB).unwrap();
    let inv = inventory("vm-list-blank", &[("ds-blank", &blank)]);
    assert_clean_error(&["vm", "list", "--inventory", inv.to_str().unwrap()], 1, &["ds-blank", "no VMFS, NTFS or ext4"]);
    guard.check();
}

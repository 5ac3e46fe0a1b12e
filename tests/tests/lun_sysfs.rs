//! `vbproxy lun list` over a sysfs fixture tree (three SCSI disks with
//! VPD pages built from SPC-4's layout, a CD-ROM and a virtio disk to be
//! ignored) whose device nodes are images made by sgdisk, mkntfs and
//! pvcreate. Oracles: blkid for the on-disk UUIDs and labels, the bytes
//! written into the VPD pages for the identifiers. Also: the real /sys.

#[path = "../fixtures/sysfs_fixture.rs"]
mod sysfs_fixture;

use serde_json::{json, Value};
use sysfs_fixture::*;
use vbproxy_e2e::*;

#[test]
fn lun_list_json_shows_exactly_the_fixture() {
    let w = World::new("lun-sysfs-list", false);
    let guard = SourceGuard::new(&w.sources());
    // The oracle for the on-disk identities: blkid, probing the VMFS
    // partition (1 MiB) for the LVM header and its data area (+16 MiB) for
    // the FS info, and the NTFS image.
    let (t, _, _) = blkid_at(&w.images.vmfs, 1 << 20);
    assert_eq!(t, "VMFS_volume_member");
    let vol_uuid = blkid_tag(&w.images.vmfs, 1 << 20, "UUID_SUB");
    assert_eq!(vol_uuid.len(), 35);
    let (t, fs_uuid, fs_label) = blkid_at(&w.images.vmfs, (1 << 20) + (16 << 20));
    assert_eq!((t.as_str(), fs_label.as_str()), ("VMFS", VMFS_LABEL));
    let (t, ntfs_uuid, ntfs_label) = blkid_at(&w.images.ntfs, 0);
    assert_eq!((t.as_str(), ntfs_label.as_str()), ("ntfs", NTFS_LABEL));

    let out = w.vbproxy(&["lun", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dev = |n: &str| w.dev.join(n).display().to_string();
    let expected = json!([
        {
            "device": dev("sdb"), "hctl": "2:0:0:3", "lun": 3,
            "vendor": "LIO-ORG", "model": "ds-vmfs01", "revision": "4.0",
            "serial": SDB_SERIAL,
            "designators": [
                {"type": "naa", "association": "lun", "value": SDB_ID},
                {"type": "t10", "association": "lun", "value": format!("t10.{SDB_T10}")},
                {"type": "relative-target-port", "association": "target-port", "value": "relative-target-port.1"},
                {"type": "scsi-name", "association": "target", "value": SDB_TARGET}
            ],
            "id": SDB_ID,
            "size": 64u64 << 20, "logical_block_size": 512, "physical_block_size": 4096,
            "read_only": true,
            "content": {"type": "gpt", "label": VMFS_LABEL, "uuid": fs_uuid, "partition": "vmfs",
                        "partition_number": 1, "volume_uuid": vol_uuid, "version": "5"}
        },
        {
            "device": dev("sdc"), "hctl": "2:0:0:5", "lun": 5,
            "vendor": "DGC", "model": "VRAID", "revision": "5100",
            "serial": SDC_SERIAL,
            "designators": [{"type": "eui64", "association": "lun", "value": SDC_ID}],
            "id": SDC_ID,
            "size": 32u64 << 20, "logical_block_size": 512, "physical_block_size": 512,
            "read_only": true,
            "content": {"type": "ntfs", "label": NTFS_LABEL, "uuid": ntfs_uuid}
        },
        {
            "device": dev("sdd"), "hctl": "3:0:1:7", "lun": 7,
            "vendor": "IET", "model": "VIRTUAL-DISK", "revision": "0001",
            "serial": null,
            "designators": [{"type": "t10", "association": "lun", "value": format!("t10.{SDD_T10}")}],
            "id": format!("t10.{SDD_T10}"),
            "size": 16u64 << 20, "logical_block_size": 512, "physical_block_size": 512,
            "read_only": false,
            "content": {"type": "lvm-pv", "uuid": w.images.lvm_uuid}
        }
    ]);
    assert_eq!(got, expected, "got:\n{}", serde_json::to_string_pretty(&got).unwrap());

    // The table names the same disks.
    let out = w.vbproxy(&["lun", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for s in [SDB_ID, SDC_ID, "3:0:1:7", "gpt/vmfs", "ntfs", "lvm-pv"] {
        assert!(text.contains(s), "{s} missing from:\n{text}");
    }
    assert!(!text.contains("sr0") && !text.contains("vda"), "{text}");
    guard.check();
}

#[test]
fn hostile_vpd_page_is_reported_not_trusted() {
    let w = World::new("lun-sysfs-hostile", false);
    // A page 0x83 whose designator runs past the page end.
    let mut p = sdb_pg83(&SDB_NAA);
    p[7] = 250;
    std::fs::write(w.sys.join("block/sdb/device/vpd_pg83"), p).unwrap();
    let out = w.vbproxy(&["lun", "list", "--json"]);
    assert!(out.status.success());
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got[0]["designators"], json!([]));
    // Without page 0x83 the unit serial is the identifier left.
    assert_eq!(got[0]["id"], SDB_SERIAL);
    assert!(String::from_utf8_lossy(&out.stderr).contains("vpd_pg83"));
}

#[test]
fn lun_list_on_the_real_sys() {
    // Whatever this machine has (often no SCSI disk at all: an empty list).
    let out = vbproxy().args(["lun", "list", "--json"]).env_remove("VBPROXY_SYSFS_ROOT").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.is_array());
    let out = vbproxy().args(["lun", "list"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("DEVICE"));
}

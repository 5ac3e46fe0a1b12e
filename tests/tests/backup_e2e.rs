//! Backup jobs end to end over a real SAN: an ext4 datastore LUN image
//! (`mkfs.ext4 -d`) holding the VM `web01` (tests/fixtures/backup_common.rs:
//! VMDK chains made by qemu-img/qemu-io over guest disks with NTFS, FAT32
//! and ext4 volumes made by real tools) is served by tgtd on 127.0.0.1;
//! the inventory names it by `iscsi://` URL and by the identifier the LUN
//! really reports (read by `vbproxy lun list --iscsi`, checked against
//! libiscsi's `iscsi-inq`).
//! - `backup prepare --mode file`: GNU tar and restic (backup, then
//!   restore) of the FUSE tree hold the same files, by content hash, as
//!   ntfs-3g and kernel ext4 mounts of the guest volumes; cleanup leaves
//!   no mount and no journal entry;
//! - `backup prepare --mode fullvm`: each export equals the snapshot's
//!   chain (`qemu-img compare` against the same files outside the LUN);
//! - the LUN's backing file is unchanged (hash before/after).
//! Needs root, tgt, libiscsi-bin, restic, FUSE, loop devices, qemu-utils,
//! ntfs-3g, e2fsprogs, dosfstools, mtools, tar.

#[path = "../fixtures/backup_common.rs"]
mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use vbproxy_e2e::tgtd::Tgtd;
use vbproxy_e2e::*;

const IQN: &str = "iqn.2026-11.test.vbproxy:backup-e2e";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The identifier LUN 3 reports, as vbproxy reads it; libiscsi's
/// iscsi-inq must show the same designator in VPD page 0x83.
fn lun_identifier(t: &Tgtd) -> String {
    let v: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["lun", "list", "--iscsi", &t.portal(), "--json"])).expect("lun list --json");
    let list = v.as_array().cloned().or_else(|| v["luns"].as_array().cloned()).unwrap_or_default();
    let lun = list.iter().find(|l| l["lun"] == 3 && l["target"] == IQN).unwrap_or_else(|| panic!("LUN 3 not listed: {v:#}"));
    let id = lun["id"].as_str().unwrap_or_else(|| panic!("LUN 3 has no identifier: {lun:#}")).to_owned();
    let inq = run_text(Command::new("iscsi-inq").args(["-e", "1", "-c", "131"]).arg(format!("iscsi://{}/{IQN}/3", t.portal())));
    // iscsi-inq prints binary (NAA) designators unreadably; the ASCII T10
    // vendor designator (tgtd's scsi_id) is compared instead, and the
    // NAA's presence.
    assert!(inq.contains("Designator Type:(3) NAA") && inq.contains("[vbproxy-backup-ds]"), "iscsi-inq VPD 0x83:\n{inq}");
    assert!(lun.to_string().contains("vbproxy-backup-ds"), "vbproxy sees the T10 designator: {lun:#}");
    assert!(id.starts_with("naa."), "{id}");
    id
}

#[test]
fn file_and_fullvm_jobs_over_iscsi_match_the_guest_and_leave_the_lun_untouched() {
    let ds = datastore_image();
    let vm = backup_vm();
    let ds_hash = sha256_file(&ds);
    let guard = SourceGuard::new(&[&ds, &vm]);
    let w = World::new("backup-e2e");
    let mut tg = Tgtd::start("backup-e2e");
    tg.add_target(1, IQN);
    tg.add_lun(1, 3, &ds, &[("scsi_id", "vbproxy-backup-ds"), ("scsi_sn", "BKPDS0003")]);
    tg.bind_all(1);
    let id = lun_identifier(&tg);
    let inv = w.dir.join("inventory.toml");
    std::fs::write(&inv, format!("cluster = \"e2e\"\n\n[[datastore]]\nname = \"ds-backup\"\nlun = 3\ndevice = \"{id}\"\nkind = \"ext4\"\nlabel = \"DS_BACKUP\"\nsource = \"{}\"\n", tg.url(IQN, 3))).unwrap();

    // File mode.
    let t = w.dir.join("tree");
    let v = w.json(&["backup", "prepare", "--inventory", s(&inv), "--vm", "web01", "--mode", "file", "--target", s(&t), "--json"]);
    assert_eq!(v["snapshot"], "backup");
    assert!(v["disks"][0]["source"].as_str().unwrap().starts_with("iscsi://"), "{v:#}");
    assert_eq!(fstype_at(&t).as_deref(), Some("fuse.vbproxy"));
    assert_tree_matches_real_mounts(&t, &w.dir);

    // restic: back the tree up, restore it, compare with the oracles.
    let repo = w.dir.join("restic-repo");
    let restic = |args: &[&str]| run_text(Command::new("restic").args(args).arg("--repo").arg(&repo).env("RESTIC_PASSWORD", "vbproxy-test").env("RESTIC_CACHE_DIR", w.dir.join("restic-cache")));
    restic(&["init", "-q"]);
    restic(&["backup", "-q", "--tag", v["job_id"].as_str().unwrap(), s(&t)]);
    let restored = w.dir.join("restic-restore");
    restic(&["restore", "latest", "--target", s(&restored)]);
    let r = restored.join(t.strip_prefix("/").unwrap());
    let m = cli::mount_ntfs_ro(&ntfs_raw(), &w.dir.join("oracle-ntfs-2"));
    let theirs_ntfs = content_hashes(&m.dir, Some(&m.dir));
    drop(m);
    assert_same_content(&content_hashes(&r.join("scsi0-0/p1"), None), &theirs_ntfs, "NTFS volume (FUSE + restic vs ntfs-3g)");
    let dumped = Command::new("restic").args(["dump", "latest"]).arg(t.join("scsi0-1/p1/small.txt")).arg("--repo").arg(&repo).env("RESTIC_PASSWORD", "vbproxy-test").env("RESTIC_CACHE_DIR", w.dir.join("restic-cache")).output().unwrap();
    assert_eq!(dumped.stdout, b"hello, ext4\n", "restic dump: {}", String::from_utf8_lossy(&dumped.stderr));

    w.ok(&["backup", "cleanup", s(&t)]);
    assert!(mounts_under(&t).is_empty(), "a mount is left");
    assert!(w.entries().is_empty());

    // Full VM.
    let f = w.dir.join("fullvm");
    w.ok(&["backup", "prepare", "--inventory", s(&inv), "--vm", "web01", "--mode", "fullvm", "--format", "qcow2", "--target", s(&f)]);
    for (file, chain) in [("scsi0-0.qcow2", "web01-000001.vmdk"), ("scsi0-1.qcow2", "data.vmdk")] {
        let o = Command::new("qemu-img").arg("compare").arg(f.join(file)).arg(vm.join("web01").join(chain)).output().unwrap();
        assert!(o.status.success(), "{file} vs {chain}: {}", String::from_utf8_lossy(&o.stdout));
    }
    assert_eq!(std::fs::read(f.join("web01.vmx")).unwrap(), std::fs::read(vm.join("web01/web01.vmx")).unwrap());
    assert!(f.join("MANIFEST.json").exists());
    w.ok(&["backup", "cleanup", s(&f)]);
    assert!(!f.exists() && w.entries().is_empty());

    drop(tg);
    assert_eq!(sha256_file(&ds), ds_hash, "the LUN's backing file changed");
    guard.check();
}

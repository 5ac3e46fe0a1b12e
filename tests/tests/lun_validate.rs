//! `vbproxy lun validate` over the sysfs fixture (tests/fixtures/sysfs,
//! tests/fixtures/sysfs_fixture.rs): a fully matching inventory passes;
//! a missing LUN, a LUN number mismatch, an identifier mismatch, a
//! signature mismatch (NTFS where VMFS is expected), a writable LUN and an
//! undeclared snapshot are each refused with exit 3, naming both views.
//! `inventory import-esxcli` from saved esxcli output gives the expected
//! inventory.

#[path = "../fixtures/sysfs_fixture.rs"]
mod sysfs_fixture;

use serde_json::Value;
use std::path::PathBuf;
use sysfs_fixture::*;
use vbproxy_e2e::*;

const FS_UUID: &str = "4d8008a2-9940968c-04df-001e4f1fbf2a";

fn matching(ntfs_uuid: &str) -> String {
    format!(
        r#"cluster = "test"

[[datastore]]
name = "ds-vmfs01"
lun = 3
device = "{SDB_ID}"
kind = "vmfs"
uuid = "{FS_UUID}"
label = "{VMFS_LABEL}"
partition = 1

[[datastore]]
name = "hyperv"
lun = 5
device = "{SDC_ID}"
kind = "ntfs"
uuid = "{ntfs_uuid}"
label = "{NTFS_LABEL}"
"#
    )
}

fn ntfs_uuid(w: &World) -> String {
    blkid_at(&w.images.ntfs, 0).1
}

fn write_inv(w: &World, text: &str) -> PathBuf {
    let p = w.sys.parent().unwrap().join("inventory.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `lun validate`, expecting exit 3; returns stdout + stderr.
fn refused(w: &World, inv: &str) -> String {
    let p = write_inv(w, inv);
    let out = w.vbproxy(&["lun", "validate", "--inventory", p.to_str().unwrap()]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "expected exit 3:\n{text}");
    assert!(!text.contains("panicked"), "{text}");
    text
}

#[test]
fn matching_inventory_passes() {
    let w = World::new("lun-validate-ok", false);
    let guard = SourceGuard::new(&w.sources());
    let p = write_inv(&w, &matching(&ntfs_uuid(&w)));
    let out = w.vbproxy(&["lun", "validate", "--inventory", p.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], true);
    assert_eq!(r["checks"].as_array().unwrap().len(), 2);
    assert_eq!(r["checks"][0]["status"], "ok");
    assert_eq!(r["checks"][0]["found"]["device"], SDB_ID);
    assert_eq!(r["checks"][0]["found"]["kind"], "vmfs");
    assert_eq!(r["checks"][1]["found"]["lun"], 5);
    // The same inventory as JSON.
    let json = format!(
        r#"{{"datastore":[{{"name":"ds-vmfs01","lun":3,"device":"{SDB_ID}","kind":"vmfs","uuid":"{FS_UUID}"}}]}}"#
    );
    let p = w.sys.parent().unwrap().join("inventory.json");
    std::fs::write(&p, json).unwrap();
    let out = w.vbproxy(&["lun", "validate", "--inventory", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    guard.check();
}

#[test]
fn missing_lun_is_refused() {
    let w = World::new("lun-validate-missing", false);
    let inv = matching(&ntfs_uuid(&w)).replace(SDC_ID, "eui.00000000deadbeef");
    let t = refused(&w, &inv);
    assert!(t.contains("missing") && t.contains("eui.00000000deadbeef") && t.contains("no local SCSI disk has identifier"), "{t}");
}

#[test]
fn lun_number_mismatch_is_refused() {
    let w = World::new("lun-validate-number", false);
    let inv = matching(&ntfs_uuid(&w)).replace("lun = 3", "lun = 4");
    let t = refused(&w, &inv);
    assert!(t.contains("lun: inventory says 4; LUN shows 3"), "{t}");
}

#[test]
fn identifier_mismatch_is_refused() {
    let w = World::new("lun-validate-id", false);
    // The inventory reaches the LUN by path, but names another identifier.
    let other = "naa.600140500000000000000000000000aa";
    let inv = matching(&ntfs_uuid(&w)).replace(
        &format!("device = \"{SDB_ID}\""),
        &format!("device = \"{other}\"\nsource = \"{}\"", w.dev.join("sdb").display()),
    );
    let t = refused(&w, &inv);
    assert!(t.contains(&format!("device: inventory says {other}; LUN shows {SDB_ID}")), "{t}");
}

#[test]
fn signature_mismatch_is_refused() {
    let w = World::new("lun-validate-sig", false);
    // NTFS where VMFS is expected: the NTFS LUN listed as a VMFS datastore.
    let inv = format!(
        "[[datastore]]\nname = \"ds-wrong\"\nlun = 5\ndevice = \"{SDC_ID}\"\nkind = \"vmfs\"\nuuid = \"{FS_UUID}\"\n"
    );
    let t = refused(&w, &inv);
    assert!(t.contains("kind: inventory says vmfs; LUN shows ntfs"), "{t}");
    assert!(t.contains(&format!("uuid: inventory says {FS_UUID}; LUN shows {}", ntfs_uuid(&w))), "{t}");
    // A label mismatch alone is refused too.
    let inv = matching(&ntfs_uuid(&w)).replace(&format!("label = \"{VMFS_LABEL}\""), "label = \"ds-other\"");
    let t = refused(&w, &inv);
    assert!(t.contains(&format!("label: inventory says ds-other; LUN shows {VMFS_LABEL}")), "{t}");
    // JSON names both views.
    let p = write_inv(&w, &inv);
    let out = w.vbproxy(&["lun", "validate", "--json", "--inventory", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], false);
    assert_eq!(r["checks"][0]["status"], "refused");
    assert_eq!(r["checks"][0]["problems"][0]["field"], "label");
    assert_eq!(r["checks"][0]["inventory"]["label"], "ds-other");
    assert_eq!(r["checks"][0]["found"]["label"], VMFS_LABEL);
}

#[test]
fn writable_lun_is_refused() {
    let w = World::new("lun-validate-rw", false);
    let inv = format!("{}\n[[datastore]]\nname = \"lvm\"\nlun = 7\ndevice = \"t10.{SDD_T10}\"\nkind = \"lvm-pv\"\nuuid = \"{}\"\n", matching(&ntfs_uuid(&w)), w.images.lvm_uuid);
    let t = refused(&w, &inv);
    assert!(t.contains("writable") && t.contains("guard apply"), "{t}");
    w.set_ro("sdd", true);
    let p = write_inv(&w, &inv);
    let out = w.vbproxy(&["lun", "validate", "--inventory", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn undeclared_snapshot_is_refused_and_a_declared_one_accepted() {
    let w = World::new("lun-validate-snap", true);
    let base = matching(&ntfs_uuid(&w));
    let t = refused(&w, &base);
    assert!(t.contains("undeclared-snapshot") && t.contains(SDE_ID) && t.contains(FS_UUID), "{t}");
    let declared = format!("{base}\n[[snapshot]]\nname = \"ds-vmfs01-snap\"\nof = \"ds-vmfs01\"\nlun = 9\ndevice = \"{SDE_ID}\"\n");
    let p = write_inv(&w, &declared);
    let out = w.vbproxy(&["lun", "validate", "--json", "--inventory", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["checks"][2]["role"], "snapshot");
    assert_eq!(r["checks"][2]["found"]["uuid"], FS_UUID);
    // Declared with the wrong LUN number: refused.
    let t = refused(&w, &declared.replace("lun = 9", "lun = 8"));
    assert!(t.contains("lun: inventory says 8; LUN shows 9"), "{t}");
}

#[test]
fn inventory_without_lun_number_or_signature_is_refused() {
    let w = World::new("lun-validate-incomplete", false);
    let t = refused(&w, &format!("[[datastore]]\nname = \"ds\"\ndevice = \"{SDB_ID}\"\n"));
    assert!(t.contains("lun: inventory says (not set") && t.contains("signature: inventory says (no kind"), "{t}");
    // Malformed inventories are usage-level failures (exit 1), not panics.
    let p = write_inv(&w, "[[datastore]]\nname = 3\n");
    let out = w.vbproxy(&["lun", "validate", "--inventory", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let p = write_inv(&w, &format!("[[snapshot]]\nname = \"s\"\nof = \"nope\"\nlun = 1\ndevice = \"{SDB_ID}\"\n"));
    let out = w.vbproxy(&["lun", "validate", "--inventory", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("names no datastore"));
}

#[test]
fn esxcli_import_gives_the_expected_inventory() {
    let dir = workspace().join("tests/fixtures/esxcli");
    let out_dir = scratch("lun-esxcli");
    let out = out_dir.join("inv.toml");
    let f = |n: &str| dir.join(n).display().to_string();
    let o = vbproxy()
        .args(["inventory", "import-esxcli", "--devices", &f("device-list.txt"), "--extents", &f("extent-list.txt"), "--paths", &f("path-list.txt"), "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("datastore1") && err.contains("host-local"), "{err}");
    assert!(err.contains("naa.6001405fffeeddccbbaa998877665544") && err.contains("snapshot"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), std::fs::read_to_string(dir.join("expected-inventory.toml")).unwrap());

    // Without the path list: no LUN numbers, a warning per device.
    let o = vbproxy().args(["inventory", "import-esxcli", "--devices", &f("device-list.txt"), "--extents", &f("extent-list.txt")]).output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains("lun ="), "{text}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("LUN number unknown"));

    // The imported inventory validates its ds-vmfs01 entry against the
    // fixture LUN (ds-spanned's LUNs are not there: refused as missing).
    let w = World::new("lun-esxcli-validate", false);
    let o = w.vbproxy(&["lun", "validate", "--json", "--inventory", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ds = r["checks"].as_array().unwrap().iter().find(|c| c["name"] == "ds-vmfs01").unwrap().clone();
    assert_eq!(ds["status"], "ok", "{ds}");
    let spanned: Vec<&Value> = r["checks"].as_array().unwrap().iter().filter(|c| c["datastore"] == "ds-spanned").collect();
    assert_eq!(spanned.len(), 2);
    assert!(spanned.iter().all(|c| c["problems"][0]["field"] == "missing"));
}

#[test]
fn documented_example_inventory_loads() {
    // It names LUNs this machine does not have: refused (3), not a parse error (1).
    let w = World::new("lun-validate-example", false);
    let ex = workspace().join("docs/inventory.example.toml");
    let o = w.vbproxy(&["lun", "validate", "--json", "--inventory", ex.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    // ds-vmfs01 is the fixture's sdb; its declared snapshot is absent (missing).
    let c = r["checks"].as_array().unwrap();
    assert_eq!(c.iter().find(|c| c["name"] == "ds-vmfs01").unwrap()["status"], "ok");
    assert_eq!(c.len(), 5);
}

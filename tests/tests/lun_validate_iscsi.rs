//! `vbproxy lun validate` over a real SAN: one private tgtd on 127.0.0.1
//! serves LUN 3 = the ESXi-made VMFS 5 volume (`../shared/corpus/vmfs5.bin.gz`),
//! LUN 5 = an NTFS volume made by mkntfs, LUN 9 = a second copy of the VMFS
//! volume (an array snapshot: the same VMFS UUID under its own LUN number
//! and identifier). Each LUN has its own scsi_id/scsi_sn. The identifiers
//! the inventories name are the ones `vbproxy lun list --iscsi` reads,
//! cross-checked with libiscsi's `iscsi-inq`; the VMFS UUID and label come
//! from `debugvmfs` and `blkid`, the NTFS UUID from `blkid` and `ntfsinfo`.
//!
//! A matching inventory passes (exit 0, every check ok); a LUN number
//! mismatch, an identifier mismatch, NTFS where VMFS is expected, a VMFS
//! UUID mismatch, a missing LUN and an undeclared snapshot LUN reachable
//! on the portal are each refused with exit 3, naming both views (what the
//! inventory says, what the LUN shows); `vm list` and `backup prepare`
//! refuse a mismatching inventory the same way. Backing files are hashed
//! before and after. The VMFS cases skip with a message without the corpus.
//! Needs root, tgt, libiscsi-bin, ntfs-3g (mkntfs, ntfsinfo), vmfs-tools
//! (debugvmfs), util-linux (blkid).

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use vbproxy_e2e::tgtd::Tgtd;
use vbproxy_e2e::*;

const IQN: &str = "iqn.2026-11.test.vbproxy:validate";
const VMFS_LUN: u64 = 3;
const NTFS_LUN: u64 = 5;
const SNAP_LUN: u64 = 9;
const NTFS_LABEL: &str = "hyperv-vols";
/// Where the corpus volume's logical volume (its single PE) starts: blkid
/// probed there finds the VMFS filesystem descriptor 2 MiB further on.
const VMFS_FS_OFFSET: u64 = 0x110_0000;

/// The backing files: `ntfs.img` always; `vmfs5.bin` and its copy
/// `vmfs5-snap.bin` (sparse) when the corpus is there.
fn backing() -> (PathBuf, bool) {
    let gz = corpus("vmfs5.bin.gz");
    let name = if gz.is_some() { "lun-validate-iscsi-v1" } else { "lun-validate-iscsi-ntfs-v1" };
    let dir = fixture(name, |d| {
        let ntfs = d.join("ntfs.img");
        run(Command::new("truncate").args(["-s", "32M"]).arg(&ntfs));
        run(Command::new("mkntfs").args(["-q", "-F", "-Q", "-L", NTFS_LABEL]).arg(&ntfs));
        if let Some(gz) = &gz {
            let tmp = d.join("unpacked.bin");
            let out = std::fs::File::create(&tmp).unwrap();
            let st = Command::new("gzip").arg("-dc").arg(gz).stdout(Stdio::from(out)).status().unwrap();
            assert!(st.success(), "gzip -dc {}", gz.display());
            for f in ["vmfs5.bin", "vmfs5-snap.bin"] {
                run(Command::new("cp").arg("--sparse=always").arg(&tmp).arg(d.join(f)));
            }
            std::fs::remove_file(&tmp).unwrap();
        }
    });
    (dir, gz.is_some())
}

/// What the oracles say of the VMFS volume.
struct Vmfs {
    uuid: String,
    label: String,
    /// LUN 3's and LUN 9's identifiers as vbproxy reads them.
    id: String,
    snap_id: String,
}

struct World {
    t: Tgtd,
    dir: PathBuf,
    ntfs_id: String,
    ntfs_uuid: String,
    vmfs: Option<Vmfs>,
    guard: Option<SourceGuard>,
}

/// iscsi-inq's `Key:[value]` or `Key:value` line.
fn field(text: &str, key: &str) -> String {
    let line = text.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in {text}"));
    line[key.len()..].trim_start_matches(':').trim().trim_start_matches('[').trim_end_matches(']').trim().to_string()
}

/// The identifier vbproxy reads for `lun` (from `lun list --iscsi --json`),
/// checked against iscsi-inq: the unit serial number (VPD 0x80) is the
/// LUN's scsi_sn, the T10 vendor designator (VPD 0x83) its scsi_id, and one
/// of the NAA designators libiscsi prints (raw bytes up to the first NUL)
/// is a prefix of vbproxy's `naa.` identifier.
fn identifier(t: &Tgtd, listed: &[Value], lun: u64, scsi_id: &str, scsi_sn: &str) -> String {
    let l = listed.iter().find(|l| l["lun"] == lun && l["target"] == IQN).unwrap_or_else(|| panic!("LUN {lun} not listed: {listed:#?}"));
    let id = l["id"].as_str().unwrap_or_else(|| panic!("LUN {lun} has no identifier: {l:#}")).to_string();
    assert!(id.starts_with("naa."), "{id}");
    let url = t.url(IQN, lun);
    let sn = run_text(Command::new("iscsi-inq").args(["-e", "1", "-c", "128", &url]));
    assert_eq!(field(&sn, "Unit Serial Number"), scsi_sn, "{url}: iscsi-inq");
    assert_eq!(l["serial"], scsi_sn, "{url}: vbproxy");
    let out = Command::new("iscsi-inq").args(["-e", "1", "-c", "131", &url]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains(&format!("[{scsi_id}]")), "{url}: iscsi-inq VPD 0x83 lacks the T10 id:\n{text}");
    assert!(l["designators"].as_array().unwrap().iter().any(|d| d["value"] == format!("t10.{scsi_id}")), "{l:#}");
    let mut naa_type = false;
    let mut prefixes = Vec::new();
    for line in out.stdout.split(|&b| b == b'\n') {
        if let Some(v) = line.strip_prefix(b"Designator Type:") {
            naa_type = String::from_utf8_lossy(v).contains("NAA");
        } else if let (true, Some(v)) = (naa_type, line.strip_prefix(b"Designator:[")) {
            let raw = v.strip_suffix(b"]").unwrap_or(v);
            prefixes.push(raw.iter().map(|b| format!("{b:02x}")).collect::<String>());
        }
    }
    assert!(prefixes.iter().any(|p| !p.is_empty() && id["naa.".len()..].starts_with(p.as_str())), "{url}: {id} vs iscsi-inq NAA {prefixes:?}\n{text}");
    id
}

impl World {
    /// A tgtd serving the LUNs (the VMFS ones only with the corpus).
    fn new(name: &str) -> World {
        let (dir, has_vmfs) = backing();
        if !has_vmfs {
            eprintln!("SKIPPED (VMFS parts): ../shared/corpus/vmfs5.bin.gz is absent");
        }
        let mut files = vec![dir.join("ntfs.img")];
        if has_vmfs {
            files.push(dir.join("vmfs5.bin"));
            files.push(dir.join("vmfs5-snap.bin"));
        }
        let guard = SourceGuard::new(&files);
        // tgtd derives its NAA from the scsi_id's characters read as hex
        // digits (others count as 0): the ids differ in their hex digits.
        let mut t = Tgtd::start(name);
        t.add_target(1, IQN);
        if has_vmfs {
            t.add_lun(1, VMFS_LUN, &dir.join("vmfs5.bin"), &[("scsi_id", "vbpval-lun3"), ("scsi_sn", "VAL-SN-0003")]);
        }
        t.add_lun(1, NTFS_LUN, &dir.join("ntfs.img"), &[("scsi_id", "vbpval-lun5"), ("scsi_sn", "VAL-SN-0005")]);
        if has_vmfs {
            t.add_lun(1, SNAP_LUN, &dir.join("vmfs5-snap.bin"), &[("scsi_id", "vbpval-lun9"), ("scsi_sn", "VAL-SN-0009")]);
        }
        t.bind_all(1);
        let v: Value = serde_json::from_str(&vbproxy_ok(&["lun", "list", "--iscsi", &t.portal(), "--json"])).expect("lun list --json");
        let listed = v.as_array().cloned().unwrap_or_default();
        let ntfs_id = identifier(&t, &listed, NTFS_LUN, "vbpval-lun5", "VAL-SN-0005");
        // The NTFS UUID as blkid prints it: the boot sector's 64-bit volume
        // serial number (little-endian at byte 0x48) in hex; the label as
        // ntfsinfo reads it from $Volume.
        let ntfs = dir.join("ntfs.img");
        let ntfs_uuid = run_text(Command::new("blkid").args(["-p", "-s", "UUID", "-o", "value"]).arg(&ntfs)).trim().to_string();
        let boot = std::fs::read(&ntfs).unwrap();
        let serial = u64::from_le_bytes(boot[0x48..0x50].try_into().unwrap());
        assert_eq!(ntfs_uuid, format!("{serial:016X}"), "blkid vs the boot sector");
        let info = run_text(Command::new("ntfsinfo").args(["-m", "-f"]).arg(&ntfs));
        assert_eq!(field(&info, "\tVolume Name"), NTFS_LABEL, "ntfsinfo");
        let vmfs = has_vmfs.then(|| {
            let img = dir.join("vmfs5.bin");
            let show = run_text(Command::new("debugvmfs").arg(&img).arg("show"));
            let value = |key: &str| {
                let line = show.lines().map(str::trim_start).find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("debugvmfs show: no {key}:\n{show}"));
                line[key.len()..].trim().to_string()
            };
            let (uuid, label) = (value("UUID:"), value("Label:"));
            let get = |tag: &str| run_text(Command::new("blkid").args(["-p", "-O", &VMFS_FS_OFFSET.to_string(), "-s", tag, "-o", "value"]).arg(&img)).trim().to_string();
            assert_eq!(get("TYPE"), "VMFS");
            assert_eq!((get("UUID"), get("LABEL")), (uuid.clone(), label.clone()), "blkid vs debugvmfs");
            let id = identifier(&t, &listed, VMFS_LUN, "vbpval-lun3", "VAL-SN-0003");
            let snap_id = identifier(&t, &listed, SNAP_LUN, "vbpval-lun9", "VAL-SN-0009");
            Vmfs { uuid, label, id, snap_id }
        });
        if let Some(m) = &vmfs {
            assert!(m.id != m.snap_id && m.id != ntfs_id && m.snap_id != ntfs_id, "identifiers not distinct: {} {} {ntfs_id}", m.id, m.snap_id);
        }
        let dir = scratch(&format!("lun-validate-iscsi-{name}"));
        World { t, dir, ntfs_id, ntfs_uuid, vmfs, guard: Some(guard) }
    }

    fn vmfs(&self) -> Option<&Vmfs> {
        if self.vmfs.is_none() {
            eprintln!("SKIPPED: this case needs the VMFS corpus sample");
        }
        self.vmfs.as_ref()
    }

    fn ntfs_entry(&self) -> String {
        format!(
            "[[datastore]]\nname = \"hyperv\"\nlun = {NTFS_LUN}\ndevice = \"{}\"\nkind = \"ntfs\"\nuuid = \"{}\"\nlabel = \"{NTFS_LABEL}\"\nsource = \"{}\"\n",
            self.ntfs_id,
            self.ntfs_uuid,
            self.t.url(IQN, NTFS_LUN)
        )
    }

    fn vmfs_entry(&self, m: &Vmfs) -> String {
        format!(
            "[[datastore]]\nname = \"ds-vmfs5\"\nlun = {VMFS_LUN}\ndevice = \"{}\"\nkind = \"vmfs\"\nuuid = \"{}\"\nlabel = \"{}\"\nsource = \"{}\"\n",
            m.id,
            m.uuid,
            m.label,
            self.t.url(IQN, VMFS_LUN)
        )
    }

    fn snapshot_entry(&self, m: &Vmfs) -> String {
        format!("[[snapshot]]\nname = \"ds-vmfs5-snap\"\nof = \"ds-vmfs5\"\nlun = {SNAP_LUN}\ndevice = \"{}\"\nsource = \"{}\"\n", m.snap_id, self.t.url(IQN, SNAP_LUN))
    }

    /// The whole matching inventory (VMFS parts only with the corpus).
    fn matching(&self) -> String {
        let mut s = String::from("cluster = \"iscsi-test\"\n\n");
        if let Some(m) = &self.vmfs {
            s.push_str(&self.vmfs_entry(m));
            s.push('\n');
        }
        s.push_str(&self.ntfs_entry());
        if let Some(m) = &self.vmfs {
            s.push('\n');
            s.push_str(&self.snapshot_entry(m));
        }
        s
    }

    fn write(&self, text: &str) -> PathBuf {
        let p = self.dir.join("inventory.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Runs vbproxy; returns (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let o = vbproxy().args(args).output().unwrap();
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    }

    /// `lun validate` of `inv`, expecting exit 3; returns stdout + stderr
    /// and the `--json` report.
    fn refused(&self, inv: &str) -> (String, Value) {
        let p = self.write(inv);
        let p = p.to_str().unwrap();
        let (code, out, err) = self.run(&["lun", "validate", "--inventory", p]);
        let text = format!("{out}{err}");
        assert_eq!(code, 3, "expected exit 3:\n{text}\ninventory:\n{inv}");
        assert!(!text.contains("panicked"), "{text}");
        let (code, out, err) = self.run(&["lun", "validate", "--json", "--inventory", p]);
        assert_eq!(code, 3, "--json: {err}");
        let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(r["ok"], false, "{r:#}");
        (text, r)
    }

    /// Stops tgtd, then checks the backing files are unchanged.
    fn finish(mut self) {
        let guard = self.guard.take();
        drop(self);
        if let Some(g) = guard {
            g.check();
        }
    }
}

/// The check named `name` in a `--json` report.
fn check<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no check {name}: {r:#}"))
}

/// The problem `field` of a check.
fn problem<'a>(c: &'a Value, field: &str) -> &'a Value {
    c["problems"].as_array().unwrap().iter().find(|p| p["field"] == field).unwrap_or_else(|| panic!("no {field} problem: {c:#}"))
}

#[test]
fn matching_inventory_passes() {
    let w = World::new("ok");
    let p = w.write(&w.matching());
    let p = p.to_str().unwrap();
    let (code, out, err) = w.run(&["lun", "validate", "--inventory", p]);
    assert_eq!(code, 0, "{out}{err}");
    let n = if w.vmfs.is_some() { 3 } else { 1 };
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), n, "one line per check, no problem lines:\n{out}");
    assert!(rows.iter().all(|l| l.split_whitespace().nth(2) == Some("ok")), "{out}");
    let (code, out, err) = w.run(&["lun", "validate", "--json", "--inventory", p]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["ok"], true);
    assert_eq!(r["checks"].as_array().unwrap().len(), n, "{r:#}");
    let c = check(&r, "hyperv");
    assert_eq!(c["status"], "ok");
    assert_eq!(c["found"]["lun"], NTFS_LUN);
    assert_eq!(c["found"]["device"], w.ntfs_id.as_str());
    assert_eq!(c["found"]["kind"], "ntfs");
    assert_eq!(c["found"]["uuid"], w.ntfs_uuid.as_str());
    assert_eq!(c["found"]["label"], NTFS_LABEL);
    assert_eq!(c["found"]["path"], w.t.url(IQN, NTFS_LUN).as_str());
    if let Some(m) = &w.vmfs {
        let c = check(&r, "ds-vmfs5");
        assert_eq!((&c["status"], &c["role"]), (&Value::from("ok"), &Value::from("datastore")), "{c:#}");
        assert_eq!(c["found"]["lun"], VMFS_LUN);
        assert_eq!(c["found"]["device"], m.id.as_str());
        assert_eq!(c["found"]["kind"], "vmfs");
        assert_eq!(c["found"]["uuid"], m.uuid.as_str());
        assert_eq!(c["found"]["label"], m.label.as_str());
        let s = check(&r, "ds-vmfs5-snap");
        assert_eq!((&s["status"], &s["role"]), (&Value::from("ok"), &Value::from("snapshot")), "{s:#}");
        assert_eq!(s["found"]["lun"], SNAP_LUN);
        assert_eq!(s["found"]["device"], m.snap_id.as_str());
        assert_eq!(s["found"]["uuid"], m.uuid.as_str());
    }
    w.finish();
}

#[test]
fn lun_number_mismatch_is_refused() {
    let w = World::new("number");
    let Some(m) = w.vmfs() else { return };
    let inv = w.matching().replace(&format!("lun = {VMFS_LUN}\ndevice = \"{}\"", m.id), &format!("lun = 4\ndevice = \"{}\"", m.id));
    let (t, r) = w.refused(&inv);
    assert!(t.contains(&format!("lun: inventory says 4; LUN shows {VMFS_LUN}")), "{t}");
    assert!(t.contains(&format!("datastore ds-vmfs5: inventory says LUN 4 {}; LUN shows LUN {VMFS_LUN} {} at {}", m.id, m.id, w.t.url(IQN, VMFS_LUN))), "{t}");
    let c = check(&r, "ds-vmfs5");
    assert_eq!(c["status"], "refused");
    assert_eq!((&c["inventory"]["lun"], &c["found"]["lun"]), (&Value::from(4), &Value::from(VMFS_LUN)));
    assert_eq!(c["problems"].as_array().unwrap().len(), 1, "only the number differs: {c:#}");
    // The other entries still pass.
    assert_eq!(check(&r, "hyperv")["status"], "ok");
    w.finish();
}

#[test]
fn identifier_mismatch_is_refused() {
    let w = World::new("ident");
    // The right LUN number, reached by URL, but another identifier.
    let other = "naa.600140500000000000000000000000aa";
    let inv = w.matching().replace(&format!("device = \"{}\"", w.ntfs_id), &format!("device = \"{other}\""));
    let (t, r) = w.refused(&inv);
    assert!(t.contains(&format!("device: inventory says {other}; LUN shows {}", w.ntfs_id)), "{t}");
    let c = check(&r, "hyperv");
    assert_eq!(c["status"], "refused");
    assert_eq!(c["inventory"]["device"], other);
    assert_eq!(c["found"]["device"], w.ntfs_id.as_str());
    assert_eq!(problem(c, "device")["lun"], w.ntfs_id.as_str());
    w.finish();
}

#[test]
fn ntfs_where_vmfs_is_expected_is_refused() {
    let w = World::new("sig");
    let Some(m) = w.vmfs() else { return };
    // The VMFS datastore's entry pointed at the NTFS LUN (number, identifier, URL).
    let entry = w.vmfs_entry(m);
    let wrong = entry
        .replace(&format!("lun = {VMFS_LUN}"), &format!("lun = {NTFS_LUN}"))
        .replace(&m.id, &w.ntfs_id)
        .replace(&w.t.url(IQN, VMFS_LUN), &w.t.url(IQN, NTFS_LUN));
    let (t, r) = w.refused(&format!("{wrong}\n{}", w.snapshot_entry(m)));
    assert!(t.contains("kind: inventory says vmfs; LUN shows ntfs"), "{t}");
    assert!(t.contains(&format!("uuid: inventory says {}; LUN shows {}", m.uuid, w.ntfs_uuid)), "{t}");
    assert!(t.contains(&format!("label: inventory says {}; LUN shows {NTFS_LABEL}", m.label)), "{t}");
    let c = check(&r, "ds-vmfs5");
    assert_eq!((&c["inventory"]["kind"], &c["found"]["kind"]), (&Value::from("vmfs"), &Value::from("ntfs")));
    assert!(problem(c, "kind").is_object() && c["problems"].as_array().unwrap().iter().all(|p| p["field"] != "lun" && p["field"] != "device"), "{c:#}");
    // The snapshot entry is checked against the datastore's signature: LUN 9
    // still carries it, so it passes; the real VMFS LUN 3, now named by no
    // entry, carries the datastore's UUID: an undeclared copy.
    assert_eq!(check(&r, "ds-vmfs5-snap")["status"], "ok");
    let u = check(&r, &w.t.url(IQN, VMFS_LUN));
    assert_eq!(u["role"], "undeclared-snapshot", "{u:#}");
    w.finish();
}

#[test]
fn vmfs_uuid_mismatch_is_refused() {
    let w = World::new("uuid");
    let Some(m) = w.vmfs() else { return };
    let wrong = "61137dd5-00000000-0000-000c29801686";
    let (t, r) = w.refused(&w.matching().replace(&m.uuid, wrong));
    assert!(t.contains(&format!("uuid: inventory says {wrong}; LUN shows {}", m.uuid)), "{t}");
    let c = check(&r, "ds-vmfs5");
    assert_eq!(c["status"], "refused");
    assert_eq!((&c["inventory"]["uuid"], &c["found"]["uuid"]), (&Value::from(wrong), &Value::from(m.uuid.as_str())));
    assert_eq!(c["problems"].as_array().unwrap().len(), 1, "{c:#}");
    // The declared snapshot is held to the same (wrong) UUID.
    assert_eq!(problem(check(&r, "ds-vmfs5-snap"), "uuid")["lun"], m.uuid.as_str());
    w.finish();
}

#[test]
fn missing_lun_is_refused() {
    let w = World::new("missing");
    let url = w.t.url(IQN, 11);
    let extra = format!("\n[[datastore]]\nname = \"ds-gone\"\nlun = 11\ndevice = \"naa.6001405000000000000000000000beef\"\nkind = \"vmfs\"\nsource = \"{url}\"\n");
    let (t, r) = w.refused(&format!("{}{extra}", w.matching()));
    assert!(t.contains("datastore ds-gone: inventory says LUN 11 naa.6001405000000000000000000000beef; LUN shows nothing"), "{t}");
    assert!(t.contains(&format!("missing: inventory says present; LUN shows {url}: the target presents no LUN 11")), "{t}");
    let c = check(&r, "ds-gone");
    assert_eq!(c["found"], Value::Null);
    assert_eq!(c["inventory"]["lun"], 11);
    assert_eq!(check(&r, "hyperv")["status"], "ok");
    w.finish();
}

#[test]
fn undeclared_snapshot_on_the_portal_is_refused() {
    let w = World::new("snap");
    let Some(m) = w.vmfs() else { return };
    // No [[snapshot]] entry: LUN 9 is named by no entry, but it is on the
    // portal the inventory uses and carries ds-vmfs5's VMFS UUID.
    let inv = w.matching().replace(&w.snapshot_entry(m), "");
    assert!(!inv.contains("[[snapshot]]"));
    let snap_url = w.t.url(IQN, SNAP_LUN);
    let (t, r) = w.refused(&inv);
    assert!(t.contains("undeclared-snapshot"), "{t}");
    assert!(
        t.contains(&format!("undeclared snapshot of datastore ds-vmfs5: inventory says LUN {VMFS_LUN} {}; LUN shows LUN {SNAP_LUN} {} at {snap_url}", m.id, m.snap_id)),
        "{t}"
    );
    assert!(t.contains(&format!("no [[snapshot]] declares {}", m.snap_id)) && t.contains(&format!("carries VMFS UUID {}", m.uuid)), "{t}");
    let c = check(&r, &snap_url);
    assert_eq!((&c["role"], &c["status"]), (&Value::from("undeclared-snapshot"), &Value::from("refused")), "{c:#}");
    assert_eq!(c["datastore"], "ds-vmfs5");
    assert_eq!((&c["inventory"]["device"], &c["found"]["device"]), (&Value::from(m.id.as_str()), &Value::from(m.snap_id.as_str())));
    assert_eq!(c["found"]["uuid"], m.uuid.as_str());
    assert_eq!(c["found"]["lun"], SNAP_LUN);
    // The datastore itself is fine.
    assert_eq!(check(&r, "ds-vmfs5")["status"], "ok");
    // Declared under the wrong identifier: still undeclared (and the entry refused).
    let (t, _) = w.refused(&w.matching().replace(&format!("device = \"{}\"\nsource = \"{snap_url}\"", m.snap_id), &format!("device = \"naa.60014050000000000000000000000099\"\nsource = \"{snap_url}\"")));
    assert!(t.contains(&format!("device: inventory says naa.60014050000000000000000000000099; LUN shows {}", m.snap_id)) && t.contains("undeclared-snapshot"), "{t}");
    w.finish();
}

#[test]
fn jobs_refuse_a_mismatching_inventory() {
    let w = World::new("jobs");
    let other = "naa.600140500000000000000000000000ab";
    let p = w.write(&w.matching().replace(&format!("device = \"{}\"", w.ntfs_id), &format!("device = \"{other}\"")));
    let p = p.to_str().unwrap();
    let want = format!("device: inventory says {other}; LUN shows {}", w.ntfs_id);
    let (code, out, err) = w.run(&["vm", "list", "--inventory", p]);
    assert_eq!(code, 3, "vm list: {out}{err}");
    assert!(err.contains("LUN validation refused") && err.contains(&want), "{err}");
    let target = w.dir.join("tree");
    let (code, out, err) = w.run(&["backup", "prepare", "--inventory", p, "--vm", "web01", "--mode", "file", "--target", target.to_str().unwrap()]);
    assert_eq!(code, 3, "backup prepare: {out}{err}");
    assert!(err.contains(&want), "{err}");
    assert!(!target.exists() || std::fs::read_dir(&target).unwrap().next().is_none(), "backup prepare left something in {}", target.display());
    // The matching inventory: vm list runs (no VM on these volumes).
    let p = w.write(&w.matching());
    let (code, out, err) = w.run(&["vm", "list", "--inventory", p.to_str().unwrap()]);
    assert_eq!(code, 0, "vm list on the matching inventory: {out}{err}");
    w.finish();
}

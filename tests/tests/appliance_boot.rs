//! The appliance under a real Linux kernel: `appliance/build.sh` builds the
//! kernel + initramfs, qemu (`-accel tcg`) boots it with four virtio-scsi
//! disks at non-contiguous LUN numbers with NAA identifiers (`wwn=`) and
//! unit serials (`serial=`), and the appliance's `/init` runs the boot test
//! (`vbproxy.test=1`), printing each step between markers on ttyS0.
//!
//! The kernel's SCSI stack is the oracle for identity: what sysfs says
//! (`wwid`, raw VPD pages 0x80/0x83, H:C:T:L) must match what qemu was told
//! and what `vbproxy lun list` reports through SG_IO and sysfs; `blkid` on
//! the host is the oracle for content. For the guard: before
//! `guard apply --all-san` the SAN LUNs are writable (`guard status` exit 3),
//! after it they are read-only by BLKROGET and sysfs, `dd` onto them fails
//! in the kernel, the own disk (LUN 0, mounted) stays writable (a file the
//! VM wrote is read back on the host with debugfs), and every SAN image
//! hashes the same after the boot.
//!
//! The disks are attached writable on purpose: a `readonly=on` drive would
//! make qemu report write protection and the guard would prove nothing.
//!
//! One boot serves every test here (about 10-20 s under TCG); skipped with a
//! message when qemu-system-x86_64 is not installed (`make deps` installs
//! it).

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use vbproxy_e2e::*;

/// Hard limit for one boot; the appliance normally powers off after 6-10 s
/// of guest time.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// One disk given to the VM.
struct Disk {
    /// File name in the fixture.
    file: &'static str,
    lun: u32,
    /// What `lun list` must call its content.
    content: &'static str,
    /// The appliance's own disk (mounted, never guarded).
    own: bool,
}

const DISKS: [Disk; 4] = [
    Disk { file: "own.img", lun: 0, content: "gpt", own: true },
    Disk { file: "vmfs.img", lun: 3, content: "gpt", own: false },
    Disk { file: "ntfs.img", lun: 7, content: "ntfs", own: false },
    Disk { file: "empty.img", lun: 12, content: "empty", own: false },
];

fn wwn(lun: u32) -> String {
    format!("5000c500abcdef{lun:02x}")
}

fn serial(lun: u32) -> String {
    format!("SN-{lun}")
}

fn qemu_system() -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|p| p.join("qemu-system-x86_64")).find(|p| p.is_file())
}

/// The disk images, made by real tools: the own disk is GPT + ext4
/// labelled `vbproxy-data` (mkfs.ext4 first: it clears the first sectors of
/// the file, then sgdisk writes the table around it); the datastore LUN is
/// a GPT partition of the VMFS type with the VMFS LVM volume header magic
/// 0xc001d00d (little-endian) and a volume UUID at 1 MiB into the
/// partition, as blkid's `VMFS_volume_member` probe knows it; one mkntfs
/// volume; one all-zero disk.
fn disk_fixture() -> PathBuf {
    fixture("appliance-disks-v1", |dir| {
        let sh = |script: &str| {
            run(Command::new("bash").args(["-euo", "pipefail", "-c", script]).current_dir(dir));
        };
        sh("truncate -s 64M own.img
            mkfs.ext4 -q -F -L vbproxy-data -E offset=1048576 own.img 62M
            sgdisk -n1:2048:0 -t1:8300 own.img >/dev/null");
        sh("truncate -s 48M vmfs.img
            sgdisk -n1:2048:0 -t1:AA31E02A-400F-11DB-9590-000C2911D1B8 vmfs.img >/dev/null");
        let mut hdr = vec![0u8; 0x92];
        hdr[..4].copy_from_slice(&0xc001_d00d_u32.to_le_bytes());
        for (i, b) in hdr[0x82..0x92].iter_mut().enumerate() {
            *b = 0x10 + i as u8;
        }
        patch(&dir.join("vmfs.img"), 2 << 20, &hdr);
        sh("truncate -s 32M ntfs.img
            mkntfs -Q -F -L hyperv-ds ntfs.img >/dev/null 2>&1
            truncate -s 16M empty.img");
        // The oracles must see what the test expects before the VM does.
        let vmfs = run_text(Command::new("blkid").args(["-p", "-O", "1048576", "-o", "export"]).arg(dir.join("vmfs.img")));
        assert!(vmfs.contains("TYPE=VMFS_volume_member"), "blkid on vmfs.img: {vmfs}");
        let ntfs = run_text(Command::new("blkid").args(["-p", "-o", "export"]).arg(dir.join("ntfs.img")));
        assert!(ntfs.contains("TYPE=ntfs"), "blkid on ntfs.img: {ntfs}");
    })
}

fn patch(file: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(file).expect("open image");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(bytes).expect("write");
}

/// `blkid -p -o export` as a map (with an optional byte offset).
fn blkid(file: &Path, offset: Option<u64>) -> BTreeMap<String, String> {
    let mut cmd = Command::new("blkid");
    cmd.args(["-p", "-o", "export"]);
    if let Some(o) = offset {
        cmd.args(["-O", &o.to_string()]);
    }
    run_text(cmd.arg(file))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Builds the appliance with the vbproxy binary the other tests use (a
/// debug build: `make test` builds no release binary, and a second build
/// would cost CI minutes); `make appliance` builds the release one.
/// build.sh skips the work when its inputs hash the same.
fn build_appliance() -> PathBuf {
    let out = workspace().join("target/appliance-test");
    let t = Instant::now();
    run(Command::new(workspace().join("appliance/build.sh")).arg(&out).env("VBPROXY_BIN", vbproxy_bin()));
    eprintln!("appliance build/check: {:.1} s", t.elapsed().as_secs_f64());
    out
}

/// Kills qemu if the test ends (or panics) before it powered off.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// One step of the boot test: its output lines and exit code.
#[derive(Debug, Clone)]
struct Step {
    out: String,
    stderr: String,
    rc: i32,
}

struct Boot {
    steps: BTreeMap<String, Step>,
    /// Guest uptime (s) at each event.
    events: BTreeMap<String, f64>,
    console: String,
    dir: PathBuf,
    /// Some(message) when a SAN image changed.
    san_modified: Option<String>,
    wall: Duration,
}

impl Boot {
    fn step(&self, name: &str) -> &Step {
        self.steps.get(name).unwrap_or_else(|| panic!("no step {name:?} in the console output:\n{}", self.console))
    }

    fn json(&self, name: &str) -> Value {
        let s = self.step(name);
        serde_json::from_str(&s.out)
            .unwrap_or_else(|e| panic!("step {name}: not JSON ({e}):\n{}\nstderr:\n{}", s.out, s.stderr))
    }
}

/// Splits the console output into steps and events (appliance/init's
/// markers). Kernel lines and terminal control codes around them are
/// ignored; the console ends lines with CR LF.
fn parse_console(text: &str) -> (BTreeMap<String, Step>, BTreeMap<String, f64>) {
    let mut steps = BTreeMap::new();
    let mut events = BTreeMap::new();
    let mut cur: Option<(String, String, String)> = None;
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(pos) = line.find("@@VBPROXY ") {
            let rest = &line[pos + "@@VBPROXY ".len()..];
            if let Some(name) = rest.strip_prefix("begin ") {
                cur = Some((name.trim().to_string(), String::new(), String::new()));
            } else if let Some(end) = rest.strip_prefix("end ") {
                let (name, rc) = end.rsplit_once(" rc=").expect("end marker has rc=");
                let (n, out, err) = cur.take().expect("end marker without begin");
                assert_eq!(n, name, "markers interleaved");
                steps.insert(n, Step { out, stderr: err, rc: rc.trim().parse().expect("rc") });
            } else if let Some(ev) = rest.strip_prefix("event ") {
                if let Some((name, up)) = ev.rsplit_once(" uptime=") {
                    let key = name.split_whitespace().next().unwrap_or(name).to_string();
                    events.insert(key, up.trim().parse().unwrap_or(f64::NAN));
                }
            }
            continue;
        }
        if let Some((_, out, err)) = cur.as_mut() {
            match line.strip_prefix("#stderr: ") {
                Some(e) => {
                    err.push_str(e);
                    err.push('\n');
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    (steps, events)
}

fn boot() -> Boot {
    let qemu = qemu_system().expect("checked by the caller");
    let appliance = build_appliance();
    let fixture = disk_fixture();
    let dir = scratch("appliance_boot");
    for d in &DISKS {
        run(Command::new("cp").arg("--sparse=always").arg(fixture.join(d.file)).arg(dir.join(d.file)));
    }
    let san: Vec<PathBuf> = DISKS.iter().filter(|d| !d.own).map(|d| dir.join(d.file)).collect();
    let guard = SourceGuard::new(&san);

    let mut cmd = Command::new(qemu);
    cmd.args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-net", "none", "-kernel"])
        .arg(appliance.join("vmlinuz"))
        .arg("-initrd")
        .arg(appliance.join("initramfs.img"))
        .args(["-append", &format!("console=ttyS0 quiet panic=-1 vbproxy.test=1 vbproxy.disks={}", DISKS.len())])
        .args(["-device", "virtio-scsi-pci,id=scsi0"]);
    for d in &DISKS {
        let n = d.lun;
        cmd.arg("-drive").arg(format!("if=none,id=d{n},format=raw,file={}", dir.join(d.file).display()));
        cmd.arg("-device").arg(format!(
            "scsi-hd,drive=d{n},bus=scsi0.0,channel=0,scsi-id=0,lun={n},wwn=0x{},serial={}",
            wwn(n),
            serial(n)
        ));
    }
    let console_path = dir.join("console.log");
    let console = std::fs::File::create(&console_path).expect("console log");
    cmd.stdin(Stdio::null()).stdout(console.try_clone().expect("dup")).stderr(console);
    let start = Instant::now();
    let mut vm = Vm(cmd.spawn().expect("start qemu-system-x86_64"));
    let status = loop {
        if let Some(st) = vm.0.try_wait().expect("wait qemu") {
            break st;
        }
        if start.elapsed() > BOOT_TIMEOUT {
            drop(vm);
            panic!(
                "appliance did not power off within {BOOT_TIMEOUT:?}; console:\n{}",
                std::fs::read_to_string(&console_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let wall = start.elapsed();
    drop(vm);
    let console = String::from_utf8_lossy(&std::fs::read(&console_path).expect("read console")).into_owned();
    assert!(status.success(), "qemu exited with {status}; console:\n{console}");
    let (steps, events) = parse_console(&console);
    let san_modified = std::panic::catch_unwind(|| guard.check())
        .err()
        .map(|e| e.downcast_ref::<String>().cloned().unwrap_or_else(|| "a SAN image changed".into()));
    let boot = Boot { steps, events, console, dir, san_modified, wall };
    eprintln!(
        "appliance boot: guest uptime {:.2} s at /init, {:.2} s guarded, {:.2} s done; qemu wall time {:.1} s",
        boot.events.get("init").copied().unwrap_or(f64::NAN),
        boot.events.get("guarded").copied().unwrap_or(f64::NAN),
        boot.events.get("done").copied().unwrap_or(f64::NAN),
        boot.wall.as_secs_f64()
    );
    boot
}

/// The one boot all tests here share; `None` when qemu is absent. A boot
/// that failed is reported by every test (not retried).
fn booted() -> Option<&'static Boot> {
    static BOOT: OnceLock<Result<Boot, String>> = OnceLock::new();
    if qemu_system().is_none() {
        eprintln!("SKIPPED: qemu-system-x86_64 not installed (make deps installs qemu-system-x86)");
        return None;
    }
    let r = BOOT.get_or_init(|| {
        std::panic::catch_unwind(boot).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "boot failed".into())
        })
    });
    match r {
        Ok(b) => Some(b),
        Err(e) => panic!("appliance boot failed: {e}"),
    }
}

/// `key=value` fields of one report line.
fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace().filter_map(|w| w.split_once('=')).collect()
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The kernel's own view (sysfs, read with cat/xxd in the VM): every disk at
/// the LUN number qemu was given, NAA wwid from `wwn=`, VPD 0x80 = serial,
/// VPD 0x83 carrying the NAA designator, the right size.
#[test]
fn kernel_sees_luns_with_naa_and_serial() {
    let Some(b) = booted() else { return };
    assert_eq!(b.step("version").rc, 0);
    assert!(b.step("version").out.starts_with("vbproxy "), "{:?}", b.step("version"));
    let sysfs = b.step("sysfs");
    let lines: Vec<_> = sysfs.out.lines().map(fields).collect();
    assert_eq!(lines.len(), DISKS.len(), "sysfs report:\n{}", sysfs.out);
    for d in &DISKS {
        let hctl = format!("0:0:0:{}", d.lun);
        let l = lines.iter().find(|l| l.get("hctl") == Some(&hctl.as_str()));
        let l = l.unwrap_or_else(|| panic!("no SCSI device {hctl} in sysfs:\n{}", sysfs.out));
        assert_eq!(l["type"], "0", "{hctl}");
        assert_eq!(l["vendor"], "QEMU", "{hctl}");
        assert_eq!(l["wwid"], format!("naa.{}", wwn(d.lun)), "{hctl}");
        // VPD 0x80: page code, length, the serial.
        let sn = serial(d.lun);
        assert_eq!(l["pg80"], format!("0080{:04x}{}", sn.len(), hex(&sn)), "{hctl}");
        // VPD 0x83: an NAA designator (code set binary, association LUN,
        // type 3, length 8) with the wwn.
        assert!(l["pg83"].contains(&format!("01030008{}", wwn(d.lun))), "{hctl}: {}", l["pg83"]);
        let bytes = std::fs::metadata(b.dir.join(d.file)).expect("image").len();
        assert_eq!(l["size"].parse::<u64>().expect("size") * 512, bytes, "{hctl}");
    }
}

/// `vbproxy lun list --json` inside the VM against what qemu was given, the
/// kernel's sysfs, and blkid on the host images.
#[test]
fn lun_list_matches_qemu_kernel_and_blkid() {
    let Some(b) = booted() else { return };
    let step = b.step("lun-list");
    assert_eq!(step.rc, 0, "lun list: {step:?}");
    let list = b.json("lun-list");
    let luns = list.as_array().expect("a list");
    assert_eq!(luns.len(), DISKS.len(), "{list:#}");
    let sysfs: Vec<_> = b.step("sysfs").out.lines().map(fields).collect();
    for d in &DISKS {
        let n = d.lun;
        let l = luns.iter().find(|l| l["lun"] == n).unwrap_or_else(|| panic!("LUN {n} missing: {list:#}"));
        let kernel = sysfs.iter().find(|f| f.get("hctl") == Some(&format!("0:0:0:{n}").as_str())).expect("in sysfs");
        assert_eq!(l["hctl"], format!("0:0:0:{n}"));
        assert_eq!(l["device"], format!("/dev/{}", kernel["dev"]), "LUN {n}");
        assert_eq!(l["id"], format!("naa.{}", wwn(n)), "LUN {n}");
        assert_eq!(l["id"], kernel["wwid"], "LUN {n}: vbproxy and the kernel disagree");
        assert_eq!(l["serial"], serial(n), "LUN {n}");
        assert_eq!(l["vendor"], "QEMU");
        assert_eq!(l["model"], "QEMU HARDDISK");
        let naa: Vec<_> = l["designators"]
            .as_array()
            .expect("designators")
            .iter()
            .filter(|x| x["type"] == "naa" && x["association"] == "lun")
            .collect();
        assert_eq!(naa.len(), 1, "LUN {n}: {l:#}");
        assert_eq!(naa[0]["value"], format!("naa.{}", wwn(n)));
        let bytes = std::fs::metadata(b.dir.join(d.file)).expect("image").len();
        assert_eq!(l["size"], bytes, "LUN {n}");
        assert_eq!(l["logical_block_size"], 512);
        assert_eq!(l["content"]["type"], d.content, "LUN {n}: {l:#}");
        // After the guard: SAN LUNs read-only, the own disk not.
        assert_eq!(l["read_only"], !d.own, "LUN {n}");
    }
    let by = |n: u32| luns.iter().find(|l| l["lun"] == n).expect("lun");
    // The datastore: VMFS partition, volume UUID as blkid reads it.
    let vmfs = blkid(&b.dir.join("vmfs.img"), Some(1 << 20));
    assert_eq!(by(3)["content"]["partition"], "vmfs", "{:#}", by(3));
    assert_eq!(by(3)["content"]["volume_uuid"], vmfs["UUID_SUB"].as_str(), "{:#}", by(3));
    // NTFS: label and serial as blkid reads them.
    let ntfs = blkid(&b.dir.join("ntfs.img"), None);
    assert_eq!(by(7)["content"]["label"], ntfs["LABEL"].as_str(), "{:#}", by(7));
    assert_eq!(
        by(7)["content"]["uuid"].as_str().map(str::to_ascii_uppercase).as_deref(),
        Some(ntfs["UUID"].as_str()),
        "{:#}",
        by(7)
    );
    // The own disk: GPT, partition 1 holding ext4 that is mounted, so its
    // journal needs recovery: vbproxy reads only clean metadata and says so
    // instead of guessing.
    let own = &by(0)["content"];
    assert_eq!(own["partition_number"], 1, "{own:#}");
    assert!(
        own["partition"] == "ext4" || own["error"].as_str().is_some_and(|e| e.contains("journal needs recovery")),
        "{own:#}"
    );
    // The table form runs too.
    assert_eq!(b.step("lun-table").rc, 0, "{:?}", b.step("lun-table"));
}

/// `guard status` before: the SAN LUNs are writable, a hazard (exit 3);
/// `guard apply --all-san` guards exactly the three SAN LUNs, not the
/// mounted own disk; `guard status` after: exit 0.
#[test]
fn guard_applies_to_san_luns_only() {
    let Some(b) = booted() else { return };
    let own = b.step("own-disk").out.clone();
    let own_dev = fields(own.trim()).get("disk").map(|s| s.to_string()).unwrap_or_default();
    assert!(own_dev.starts_with("sd"), "own disk not found/mounted: {own}\n{}", b.console);
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> =
            v["devices"].as_array().expect("devices").iter().map(|d| d["name"].as_str().unwrap_or("?").to_string()).collect();
        n.sort();
        n
    };
    let mut san_devs: Vec<String> =
        b.step("ro").out.lines().map(fields).filter(|f| f["own"] == "0").map(|f| f["dev"].to_string()).collect();
    san_devs.sort();
    assert_eq!(san_devs.len(), 3, "{}", b.step("ro").out);

    let before = b.step("guard-status-before");
    assert_eq!(before.rc, 3, "guard status before apply must report writable LUNs: {before:?}");
    let v = b.json("guard-status-before");
    assert_eq!(v["ok"], false);
    assert_eq!(names(&v), san_devs, "{v:#}");
    assert!(v["devices"].as_array().unwrap().iter().all(|d| d["read_only"] == false && d["ok"] == false), "{v:#}");

    let apply = b.step("guard-apply");
    assert_eq!(apply.rc, 0, "{apply:?}");
    let v = b.json("guard-apply");
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(names(&v), san_devs, "the own disk {own_dev} must not be guarded: {v:#}");
    assert!(
        v["devices"].as_array().unwrap().iter().all(|d| d["read_only"] == true && d["sysfs_read_only"] == true),
        "{v:#}"
    );

    let after = b.step("guard-status-after");
    assert_eq!(after.rc, 0, "{after:?}");
    assert_eq!(b.json("guard-status-after")["ok"], true);

    // The kernel's view after the guard, read with busybox blockdev and sysfs.
    for f in b.step("ro").out.lines().map(fields) {
        let want = if f["own"] == "1" { "0" } else { "1" };
        assert_eq!((f["blockdev_ro"], f["sysfs_ro"]), (want, want), "{f:?}");
    }
}

/// Writes onto a guarded SAN LUN fail in the kernel, and no SAN image
/// changed; the own disk took the VM's write (read back with debugfs).
#[test]
fn san_luns_refuse_writes_own_disk_does_not() {
    let Some(b) = booted() else { return };
    let dd = b.step("dd");
    assert_eq!(dd.rc, 0, "{dd:?}");
    let lines: Vec<_> = dd.out.lines().collect();
    assert_eq!(lines.len(), 3, "{}", dd.out);
    for l in lines {
        let (_, msg) = l.split_once("msg=").expect("msg");
        assert!(!l.contains(" rc=0 "), "dd onto a guarded SAN LUN succeeded: {l}");
        assert!(msg.contains("Operation not permitted") || msg.contains("Read-only"), "{l}");
    }
    if let Some(m) = &b.san_modified {
        panic!("{m}");
    }
    let own = b.step("own-write");
    assert_eq!(own.rc, 0, "{own:?}");
    assert!(own.out.contains(" /var/lib/vbproxy ext4 rw"), "{}", own.out);
    let img = b.dir.join("own.img");
    let marker = run_text(Command::new("debugfs").args(["-R", "cat /boot-marker"]).arg(format!("{}?offset=1048576", img.display())));
    assert!(marker.starts_with("written at boot "), "{marker:?}");
    assert_eq!(Some(marker.trim()), own.out.lines().next().map(str::trim));
}

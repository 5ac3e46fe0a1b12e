//! The read-only guard on real loop devices (root): `guard status` sees a
//! writable device as a hazard (exit 3), `guard apply` sets the kernel
//! flag, and then dd, mkfs.ext4, sgdisk and wipefs all fail to write while
//! the image's hash stays the same. Also: `inspect` on a device goes
//! through the LUN layer (which sets the flag), guestfs's FileSource
//! refuses devices, and no other source file opens devices.

use std::path::{Path, PathBuf};
use std::process::Command;
use vbproxy_e2e::*;

/// A loop device over an image, writable (not `-r`); cleared read-only
/// and detached on drop, even when the test fails.
struct Loop {
    dev: String,
}

impl Loop {
    fn new(image: &Path) -> Loop {
        let dev = run_text(Command::new("losetup").args(["-f", "--show"]).arg(image)).trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup gave {dev:?}");
        Loop { dev }
    }

    fn ro(&self) -> bool {
        run_text(Command::new("blockdev").args(["--getro", &self.dev])).trim() == "1"
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("blockdev").args(["--setrw", &self.dev]).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn image(name: &str, mib: usize) -> PathBuf {
    let dir = scratch(name);
    let img = dir.join("lun.img");
    std::fs::write(&img, pseudo_random(7, mib << 20)).unwrap();
    // A signature for wipefs to erase (on a signature-less device it has
    // nothing to write and succeeds).
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
    img
}

fn fails(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(!out.status.success(), "{cmd:?} wrote to a guarded device:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn guard_apply_makes_every_writer_fail() {
    let img = image("guard-apply", 16);
    let before = sha256_file(&img);
    let lo = Loop::new(&img);
    assert!(!lo.ro());

    let (code, err) = vbproxy_fails(&["guard", "status", "--device", &lo.dev]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&lo.dev) && err.contains("hazard"), "{err}");

    let out = vbproxy_ok(&["guard", "apply", "--device", &lo.dev]);
    assert!(out.contains(&lo.dev), "{out}");
    assert!(lo.ro(), "blockdev --getro says writable after guard apply");

    let json: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["guard", "status", "--json", "--device", &lo.dev])).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["devices"][0]["read_only"], true);
    assert_eq!(json["devices"][0]["sysfs_read_only"], true);
    assert_eq!(json["devices"][0]["why"][0], "device");

    fails(Command::new("dd").args(["if=/dev/zero", &format!("of={}", lo.dev), "bs=4096", "count=1", "conv=notrunc,fsync"]));
    fails(Command::new("mkfs.ext4").args(["-q", "-F", &lo.dev]));
    fails(Command::new("sgdisk").args(["-o", &lo.dev]));
    fails(Command::new("wipefs").args(["-a", &lo.dev]));
    drop(lo);
    assert_eq!(sha256_file(&img), before, "the image changed under a guarded loop device");
}

#[test]
fn inspect_of_a_device_goes_through_the_lun_layer() {
    let dir = scratch("guard-inspect");
    let img = dir.join("ext4.img");
    run(Command::new("truncate").args(["-s", "16M"]).arg(&img));
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "guarded"]).arg(&img));
    let before = sha256_file(&img);
    let lo = Loop::new(&img);
    assert!(!lo.ro());

    // guestfs's FileSource refuses block devices before opening them.
    let err = guestfs::block::FileSource::open(Path::new(&lo.dev)).err().expect("FileSource opened a block device");
    assert!(format!("{err}").contains("LUN layer"), "{err}");

    let out = vbproxy_ok(&["inspect", "--json", &lo.dev]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["disks"][0]["volumes"][0]["label"], "guarded", "{out}");
    assert!(lo.ro(), "inspect read a device without setting it read-only first");
    drop(lo);
    assert_eq!(sha256_file(&img), before);
}

/// Calls that open files or devices, outside the modules allowed to.
#[test]
fn only_the_lun_layer_opens_devices() {
    // Modules that open regular files only (guestfs's FileSource refuses
    // devices at runtime; the test above proves it), plus the LUN layer's
    // device.rs, the one module that opens block devices.
    const ALLOWED: &[&str] = &[
        "guestfs/src/block.rs",    // FileSource::open: regular files, refuses devices
        "proxy/src/lun/device.rs", // the only device opener
        "proxy/src/lun/sysfs.rs",  // sysfs attribute files
        "proxy/src/export/",       // export outputs (created files), manifests
        "proxy/src/restore.rs",    // cp destinations
        "proxy/src/inventory.rs",  // read_to_string of the inventory
        "proxy/src/lun/cli.rs",    // esxcli output files, the inventory written
        "proxy/src/lun/guard.rs",  // /proc/self/mountinfo, /proc/swaps
        "proxy/src/fuse/mod.rs",   // /dev/fuse (a character device, not a LUN)
        "proxy/src/mountinfo.rs",  // /proc/self/mountinfo
        "proxy/src/mount.rs",      // the server's log file, /dev/null, /proc/PID/stat
        "proxy/src/job/journal.rs", // job entries, /proc/PID/stat, boot id
        "proxy/src/job/filemode.rs", // the mount server's pid file
        "proxy/src/job/fullvm.rs", // config files read through the source layer, written into the target
    ];
    const PATTERNS: &[&str] = &[
        "File::open(",
        "fs::OpenOptions",
        "OpenOptions::new(",
        "File::options(",
        "File::create(",
        "fs::read(",
        "fs::read_to_string(",
        "libc::open",
        "rustix::fs::open",
        "openat(",
    ];
    let root = workspace();
    let mut bad = Vec::new();
    for top in ["proxy/src", "guestfs/src"] {
        scan(&root, &root.join(top), &mut |rel, text| {
            if ALLOWED.iter().any(|a| rel.starts_with(a)) {
                return;
            }
            for (n, line) in text.lines().enumerate() {
                // Unit-test modules (at the end of a file) build fixtures.
                if line.trim() == "#[cfg(test)]" {
                    break;
                }
                let code = line.split("//").next().unwrap_or("");
                if PATTERNS.iter().any(|p| code.contains(p)) {
                    bad.push(format!("{rel}:{}: {}", n + 1, line.trim()));
                }
            }
        });
    }
    assert!(bad.is_empty(), "files or devices opened outside the allowed modules (route devices through proxy/src/lun/device.rs):\n{}", bad.join("\n"));
}

fn scan(root: &Path, dir: &Path, f: &mut dyn FnMut(&str, &str)) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            scan(root, &p, f);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            f(&rel, &std::fs::read_to_string(&p).unwrap());
        }
    }
}

#[test]
fn guard_by_inventory_and_validate_of_a_loop_source() {
    let img = image("guard-inventory", 16);
    let before = sha256_file(&img);
    let lo = Loop::new(&img);
    let dir = img.parent().unwrap().to_owned();
    let inv = dir.join("inv.toml");
    std::fs::write(&inv, format!("[[datastore]]\nname = \"loopds\"\nlun = 0\ndevice = \"naa.600140500000000000000000000000bb\"\nkind = \"ext4\"\nsource = \"{}\"\n", lo.dev)).unwrap();
    let inv_s = inv.to_str().unwrap();

    // A loop device has no SCSI identity: unverified, but writable is refused.
    let (code, err) = vbproxy_fails(&["lun", "validate", "--inventory", inv_s]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("writable"), "{err}");
    let (code, err) = vbproxy_fails(&["guard", "status", "--inventory", inv_s]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&lo.dev), "{err}");

    let out = vbproxy_ok(&["guard", "apply", "--inventory", inv_s]);
    assert!(out.contains("inventory:loopds"), "{out}");
    assert!(lo.ro());
    vbproxy_ok(&["guard", "status", "--inventory", inv_s]);
    let json: serde_json::Value = serde_json::from_str(&vbproxy_ok(&["lun", "validate", "--json", "--inventory", inv_s])).unwrap();
    assert_eq!(json["checks"][0]["status"], "unverified");
    drop(lo);
    assert_eq!(sha256_file(&img), before);
}

#[test]
fn guard_apply_needs_something_to_guard() {
    let (code, err) = vbproxy_fails(&["guard", "apply"]);
    assert_eq!(code, 2, "{err}");
}

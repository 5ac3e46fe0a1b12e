//! Backup jobs (`vbproxy backup prepare|cleanup`) on a VM directory made by
//! real tools (tests/fixtures/backup_common.rs), no SAN needed:
//! - file mode: the FUSE tree of the current snapshot's disks, archived by
//!   GNU tar, holds the same files (content hashes) as ntfs-3g and kernel
//!   ext4 mounts of the guest volumes; cleanup leaves no mount, no journal
//!   entry, no target it made; cleanup twice is fine;
//! - fullvm: every disk export equals its chosen chain (`qemu-img
//!   compare`), `--snapshot running` takes the top disks, the `.vmx`,
//!   `.vmsd`, `.nvram` are byte-exact, MANIFEST.json says what is there;
//! - the VM found through an inventory whose datastore is an image file;
//! - SIGKILL of prepare in the middle of an export, and of a file job's
//!   FUSE server: `cleanup --stale` leaves no `.partial`, no mount, no
//!   entry, and does not touch a live job;
//! - `--max-jobs`: a job over the limit exits 4 "busy" and makes nothing;
//! - hooks get the job in their environment; a failing hook fails the job
//!   and undoes it;
//! - a writable inventory LUN (loop device) is refused with exit 3 before
//!   anything is mounted.
//! Every source is hashed before and after. Needs root, FUSE, loop
//! devices, qemu-utils, ntfs-3g, e2fsprogs, dosfstools, mtools, tar.

#[path = "../fixtures/backup_common.rs"]
mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use vbproxy_e2e::*;

fn vmx() -> String {
    backup_vm().join("web01/web01.vmx").to_string_lossy().into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn file_mode_tree_matches_real_mounts_and_cleanup_is_complete() {
    let vm = backup_vm();
    let guard = SourceGuard::new(&[&vm]);
    let w = World::new("backup-file");
    let t = w.dir.join("target");
    let v = w.json(&["backup", "prepare", "--vmx", &vmx(), "--mode", "file", "--target", s(&t), "--json"]);
    assert_eq!(v["mode"], "file");
    assert_eq!(v["vm"], "web01");
    assert_eq!(v["snapshot"], "backup");
    assert_eq!(v["state"], "ready");
    let disks = v["disks"].as_array().unwrap();
    assert_eq!(disks.iter().map(|d| d["slot"].as_str().unwrap()).collect::<Vec<_>>(), ["scsi0-0", "scsi0-1"]);
    assert!(disks[0]["source"].as_str().unwrap().ends_with("web01/web01-000001.vmdk"), "{v:#}");
    assert!(disks[1]["source"].as_str().unwrap().ends_with("web01/data.vmdk"), "{v:#}");
    assert_eq!(fstype_at(&t).as_deref(), Some("fuse.vbproxy"));
    assert_eq!(w.entries().len(), 1);
    assert_eq!(w.entries()[0]["state"], "ready");
    assert_tree_matches_real_mounts(&t, &w.dir);
    // The FUSE tree is what `vbproxy tar` of the same chain holds.
    let via_tar = w.dir.join("vbproxy-tar");
    std::fs::create_dir_all(&via_tar).unwrap();
    let archive = w.dir.join("vbproxy.tar");
    let (code, err) = common::cli::vbproxy_tar(&[&vm.join("web01/web01-000001.vmdk")], "/p1", &archive);
    assert_eq!(code, 0, "{err}");
    common::cli::gnu_extract(&archive, &via_tar);
    assert_same_content(&content_hashes(&w.dir.join("x-fuse-ntfs"), None), &content_hashes(&via_tar, None), "FUSE tree vs vbproxy tar");

    let out = w.ok(&["backup", "cleanup", s(&t)]);
    assert!(out.contains("cleaned"), "{out}");
    assert!(mounts_under(&t).is_empty(), "a mount is left at {}", t.display());
    assert!(!t.exists(), "prepare made the target, cleanup removes it");
    assert!(w.entries().is_empty(), "journal entry left: {:?}", w.entries());
    let again = w.ok(&["backup", "cleanup", s(&t)]);
    assert!(again.contains("nothing to clean"), "{again}");
    guard.check();
}

#[test]
fn fullvm_exports_equal_the_chosen_chains_and_copy_the_config_byte_exact() {
    let vm = backup_vm();
    let web = vm.join("web01");
    let guard = SourceGuard::new(&[&vm]);
    let w = World::new("backup-fullvm");
    let t = w.dir.join("target");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(w.dir.join("keep"), b"not ours").unwrap();
    let v = w.json(&["backup", "prepare", "--vmx", &vmx(), "--mode", "fullvm", "--format", "qcow2", "--target", s(&t), "--json"]);
    assert_eq!(v["snapshot"], "backup");
    let cmp = |a: &Path, b: &Path| Command::new("qemu-img").arg("compare").arg(a).arg(b).output().unwrap();
    let o = cmp(&t.join("scsi0-0.qcow2"), &web.join("web01-000001.vmdk"));
    assert!(o.status.success(), "qemu-img compare: {}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(cmp(&t.join("scsi0-0.qcow2"), &web.join("web01-000002.vmdk")).status.code(), Some(1), "the running top differs from the snapshot");
    assert!(cmp(&t.join("scsi0-1.qcow2"), &web.join("data.vmdk")).status.success());
    for f in ["web01.vmx", "web01.vmsd", "web01.nvram"] {
        assert_eq!(std::fs::read(t.join(f)).unwrap(), std::fs::read(web.join(f)).unwrap(), "{f} is byte-exact");
    }
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(t.join("MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(m["job_id"], v["job_id"]);
    assert_eq!(m["vm"], "web01");
    assert_eq!(m["disks"][0]["slot"], "scsi0-0");
    assert_eq!(m["disks"][0]["file"], "scsi0-0.qcow2");
    assert_eq!(m["disks"][0]["chain"].as_array().unwrap().len(), 2);
    assert_eq!(m["disks"][0]["virtual_size"].as_u64(), Some(qemu_virtual_size(&web.join("web01.vmdk"))));
    let vmx_entry = m["files"].as_array().unwrap().iter().find(|f| f["name"] == "web01.vmx").unwrap();
    assert_eq!(vmx_entry["sha256"].as_str().unwrap(), sha256_file(&web.join("web01.vmx")));
    vbproxy_ok(&["verify", s(&t.join("scsi0-0.qcow2")), "--source", s(&web.join("web01-000001.vmdk"))]);
    let names: Vec<String> = std::fs::read_dir(&t).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".partial")), "{names:?}");
    w.ok(&["backup", "cleanup", s(&t)]);
    assert!(t.is_dir(), "a target prepare did not make is kept");
    assert_eq!(std::fs::read_dir(&t).unwrap().count(), 0, "everything prepare made is gone");
    assert!(w.dir.join("keep").exists());
    assert!(w.entries().is_empty());

    // --snapshot running: the top disks, with a warning.
    let o = w.out(&["backup", "prepare", "--vmx", &vmx(), "--mode", "fullvm", "--snapshot", "running", "--target", s(&t)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("array snapshot"));
    assert!(cmp(&t.join("scsi0-0.raw"), &web.join("web01-000002.vmdk")).status.success());
    assert!(cmp(&t.join("scsi0-1.raw"), &web.join("data-000001.vmdk")).status.success());
    w.ok(&["backup", "cleanup", s(&t)]);
    guard.check();
}

#[test]
fn vm_found_through_an_inventory_of_an_image_datastore() {
    let ds = datastore_image();
    let guard = SourceGuard::new(&[&ds]);
    let w = World::new("backup-inventory");
    let inv = w.dir.join("inventory.toml");
    std::fs::write(&inv, format!("[[datastore]]\nname = \"ds1\"\nlun = 0\ndevice = \"naa.600000000000000000000000000000b1\"\nsource = \"{}\"\n", ds.display())).unwrap();
    let t = w.dir.join("target");
    let v = w.json(&["backup", "prepare", "--inventory", s(&inv), "--vm", "web01", "--mode", "file", "--target", s(&t), "--json"]);
    assert!(v["disks"][0]["source"].as_str().unwrap().ends_with("#/web01/web01-000001.vmdk"), "{v:#}");
    assert_tree_matches_real_mounts(&t, &w.dir);
    w.ok(&["backup", "cleanup", s(&t)]);
    assert!(mounts_under(&t).is_empty());
    guard.check();
}

/// Waits until `f` holds (at most `secs`).
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed().as_secs() < secs, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn sigkill_during_export_and_of_the_fuse_server_then_stale_cleanup() {
    let vm = backup_vm();
    let guard = SourceGuard::new(&[&vm]);
    let w = World::new("backup-sigkill");
    // A live job that --stale must leave alone.
    let live = w.dir.join("live");
    w.ok(&["backup", "prepare", "--vmx", &vmx(), "--mode", "file", "--target", s(&live)]);

    let t = w.dir.join("export");
    let mut child = w.cmd(&["backup", "prepare", "--vmx", &vmx(), "--mode", "fullvm", "--format", "raw", "--rate-limit", "20M", "--target", s(&t)]).spawn().unwrap();
    wait_for(60, "a .partial export", || std::fs::read_dir(&t).map(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".partial"))).unwrap_or(false));
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(w.entries().len(), 2);

    // A file job whose FUSE server dies.
    let f = w.dir.join("file");
    w.ok(&["backup", "prepare", "--vmx", &vmx(), "--mode", "file", "--target", s(&f)]);
    let e = w.entries().into_iter().find(|e| e["target"] == s(&f)).unwrap();
    let pid = e["mount"]["server"]["pid"].as_u64().unwrap();
    run(Command::new("kill").args(["-KILL", &pid.to_string()]));
    wait_for(10, "the server to die", || !Path::new(&format!("/proc/{pid}")).exists());

    let out = w.ok(&["backup", "cleanup", "--stale"]);
    assert!(out.contains("stale, cleaned"), "{out}");
    assert!(!t.exists() || std::fs::read_dir(&t).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().ends_with(".partial")), "a .partial is left");
    assert!(!t.exists(), "the target the killed prepare made is gone with all it held");
    assert!(mounts_under(&f).is_empty(), "the dead mount is left at {}", f.display());
    let left: Vec<String> = w.entries().iter().map(|e| e["target"].as_str().unwrap().to_owned()).collect();
    assert_eq!(left, [s(&live)], "only the live job stays");
    assert_eq!(fstype_at(&live).as_deref(), Some("fuse.vbproxy"), "the live job's mount is untouched");
    let again = w.ok(&["backup", "cleanup", "--stale"]);
    assert!(again.contains("nothing to clean"), "{again}");
    w.ok(&["backup", "cleanup", s(&live)]);
    assert!(w.entries().is_empty());
    guard.check();
}

#[test]
fn a_job_over_max_jobs_exits_4_busy_and_makes_nothing() {
    let vm = backup_vm();
    let guard = SourceGuard::new(&[&vm]);
    let w = World::new("backup-busy");
    let (a, b) = (w.dir.join("a"), w.dir.join("b"));
    w.ok(&["backup", "prepare", "--vmx", &vmx(), "--mode", "file", "--max-jobs", "1", "--target", s(&a)]);
    let o = w.out(&["backup", "prepare", "--vmx", &vmx(), "--mode", "file", "--max-jobs", "1", "--target", s(&b)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("busy: 1 file jobs running (max 1); retry later"), "{err}");
    assert!(!b.exists());
    // Another mode has its own limit.
    let o = w.out(&["backup", "prepare", "--vmx", &vmx(), "--mode", "file", "--max-jobs", "2", "--target", s(&b)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    w.ok(&["backup", "cleanup", s(&b)]);
    w.ok(&["backup", "cleanup", s(&a)]);
    assert!(w.entries().is_empty());
    guard.check();
}

#[test]
fn hooks_get_the_job_and_a_failing_hook_undoes_it() {
    let vm = backup_vm();
    let guard = SourceGuard::new(&[&vm]);
    let w = World::new("backup-hooks");
    let t = w.dir.join("t");
    let (pre, post) = (w.dir.join("pre.env"), w.dir.join("post.txt"));
    let pre_cmd = format!("env | grep ^VBPROXY_ | sort > {}; test ! -e \"$VBPROXY_TARGET/scsi0-0\"", pre.display());
    let post_cmd = format!("cat \"$VBPROXY_TARGET/scsi0-0/p1/small.txt\" > {}", post.display());
    let v = w.json(&["backup", "prepare", "--vmx", &vmx(), "--mode", "file", "--target", s(&t), "--pre-command", &pre_cmd, "--post-command", &post_cmd, "--json"]);
    let env = std::fs::read_to_string(&pre).unwrap();
    for want in [
        format!("VBPROXY_JOB_ID={}", v["job_id"].as_str().unwrap()),
        "VBPROXY_VM=web01".into(),
        "VBPROXY_MODE=file".into(),
        format!("VBPROXY_TARGET={}", t.display()),
        "VBPROXY_DISKS=scsi0-0 scsi0-1".into(),
        "VBPROXY_SNAPSHOT=backup".into(),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} not in:\n{env}");
    }
    assert_eq!(std::fs::read(&post).unwrap(), b"hello, ntfs\n", "the post-command ran on the ready tree");
    w.ok(&["backup", "cleanup", s(&t)]);

    // A failing post-command: exit 1 with its status, nothing left.
    let o = w.out(&["backup", "prepare", "--vmx", &vmx(), "--mode", "file", "--target", s(&t), "--post-command", "exit 7"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("post-command failed with exit status 7"), "{err}");
    assert!(mounts_under(&t).is_empty() && !t.exists() && w.entries().is_empty());

    // --oneshot: the backup runs in the post-command, then cleanup.
    let o = w.out(&["backup", "prepare", "--vmx", &vmx(), "--mode", "file", "--target", s(&t), "--post-command", "test -f \"$VBPROXY_TARGET/scsi0-1/p1/small.txt\"", "--oneshot"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(mounts_under(&t).is_empty() && !t.exists() && w.entries().is_empty());
    guard.check();
}

#[test]
fn a_writable_inventory_lun_is_refused_before_anything_is_mounted() {
    let ds = datastore_image();
    let guard = SourceGuard::new(&[&ds]);
    let w = World::new("backup-writable");
    let lo = run_text(Command::new("losetup").args(["-f", "--show"]).arg(&ds)).trim().to_owned();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _d = Detach(lo.clone());
    let inv = w.dir.join("inventory.toml");
    std::fs::write(&inv, format!("[[datastore]]\nname = \"ds1\"\nlun = 0\ndevice = \"naa.600000000000000000000000000000b1\"\nsource = \"{lo}\"\n")).unwrap();
    let t = w.dir.join("t");
    let o = w.out(&["backup", "prepare", "--inventory", s(&inv), "--vm", "web01", "--mode", "file", "--target", s(&t)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("writable") && err.contains(&lo), "{err}");
    assert!(!t.exists() && mounts_under(&w.dir).is_empty() && w.entries().is_empty());
    drop(_d);
    guard.check();
}

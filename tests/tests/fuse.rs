//! `vbproxy mount` / `vbproxy umount`: the FUSE tree of a two-disk guest
//! (NTFS + FAT on one disk, ext4 on the other, made by mkntfs/ntfs-3g,
//! mkfs.vfat/mcopy and mkfs.ext4 -d) against what ntfs-3g, the kernel's
//! ext4 and mtools show of the same volumes; writes refused; parallel
//! readers; and the daemon contract scripts rely on (returns once live,
//! errors and exit codes from the server, umount waits, dead mounts).
//! Needs root, /dev/fuse, loop devices, ntfs-3g, e2fsprogs, dosfstools,
//! mtools, attr, tar, qemu-img, coreutils, findutils.

#[path = "../fixtures/cli_common.rs"]
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use vbproxy_e2e::tree::*;
use vbproxy_e2e::*;

/// A `vbproxy mount` unmounted on drop, even when the test fails.
struct FuseMount {
    dir: PathBuf,
    pid_file: PathBuf,
}

impl FuseMount {
    fn new(sources: &[&Path], dir: &Path) -> FuseMount {
        FuseMount::with_flags(sources, dir, &[])
    }

    fn with_flags(sources: &[&Path], dir: &Path, flags: &[&str]) -> FuseMount {
        std::fs::create_dir_all(dir).unwrap();
        let pid_file = dir.with_extension("pid");
        let mut args: Vec<String> = vec!["mount".into(), "--pid-file".into(), pid_file.display().to_string()];
        args.extend(flags.iter().map(|f| f.to_string()));
        args.extend(sources.iter().map(|s| s.display().to_string()));
        args.push(dir.display().to_string());
        let out = vbproxy().args(&args).output().expect("run vbproxy mount");
        assert!(out.status.success(), "vbproxy mount failed: {}", String::from_utf8_lossy(&out.stderr));
        FuseMount { dir: dir.to_owned(), pid_file }
    }

    fn pid(&self) -> u32 {
        std::fs::read_to_string(&self.pid_file).expect("pid file").trim().parse().expect("pid")
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if mount_entry(&self.dir).is_some() {
            let _ = vbproxy().args(["umount", "--lazy"]).arg(&self.dir).output();
        }
        if mount_entry(&self.dir).is_some() {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// The fstype of the mount at `dir` per /proc/self/mountinfo.
fn mount_entry(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (Path::new(f[4]) == dir).then(|| f[sep + 1].to_string())
    })
}

/// Whether a live (not zombie) process has this pid.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(')').map(|(_, r)| r.split_whitespace().next() != Some("Z")).unwrap_or(false),
        Err(_) => false,
    }
}

fn sources() -> (PathBuf, PathBuf) {
    (ntfs_disk(), ext4_disk())
}

#[test]
fn fuse_tree_matches_ntfs3g_kernel_ext4_and_mtools() {
    let (n, e) = sources();
    let guard = SourceGuard::new(&[&n, &e]);
    let work = scratch("fuse-tree");
    // The NTFS disk as qcow2 (the oracle mounts the raw bytes of the same disk).
    let m = FuseMount::new(&[&n.join("disk.qcow2"), &e.join("disk.raw")], &work.join("mnt"));
    assert_eq!(mount_entry(&m.dir).as_deref(), Some("fuse.vbproxy"));
    let mut top: Vec<String> = std::fs::read_dir(&m.dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    top.sort();
    assert_eq!(top, ["disk0", "disk1"]);

    // NTFS: everything ntfs-3g shows, field by field (xattrs = streams).
    let ours = tree_of_dir(&m.dir.join("disk0/p1"), true);
    let theirs = {
        let o = mount_ntfs_ro(&n.join("disk.raw"), &work.join("ntfs3g"));
        tree_of_dir(&o.dir, true)
    };
    assert_same_tree(&ours, &theirs, &Compare::everything());
    assert!(ours.len() > 300, "the NTFS fixture is all there ({} entries)", ours.len());
    assert_eq!(ours["links/a"].nlink, 3);
    assert_eq!(ours["links/a"].link_group, ours["hardlink_at_root"].link_group);
    assert_eq!((ours["small.txt"].mtime, ours["small.txt"].mtime_nanos), (981173106, 123456700));
    assert_eq!(ours["mib_plus_one.bin"].mtime, -14182940);

    // ext4: the kernel's own driver on a read-only loop device.
    let ours = tree_of_dir(&m.dir.join("disk1/p1"), true);
    let theirs = {
        let o = Mount::new(&e.join("disk.raw"), 2048 * SECTOR, 200 * MIB - 2048 * SECTOR, "ext4", &work.join("ext4"), true);
        tree_of_dir(&o.dir, true)
    };
    assert_same_tree(&ours, &theirs, &Compare { ignore: vec!["lost+found".into()], ..Compare::everything() });
    assert_eq!(ours["dir/random.bin"].mode, 0o4755);
    assert_eq!((ours["dir/random.bin"].uid, ours["dir/random.bin"].gid), (1234, 5678));
    assert_eq!(ours["sym_abs"].target.as_deref(), Some(b"/dir/sub/inner".as_slice()));
    assert_eq!(ours.keys().filter(|k| k.starts_with("twenty_thousand/")).count(), 20_000);

    // FAT: mtools extracts the volume (this kernel has no vfat driver).
    let xt = work.join("mtools");
    std::fs::create_dir_all(&xt).unwrap();
    run(Command::new("mcopy").arg("-i").arg(format!("{}@@{}", n.join("disk.raw").display(), P2_START * SECTOR)).args(["-s", "-m", "-n", "::*"]).arg(&xt));
    let (mut ours, mut theirs) = (tree_of_dir(&m.dir.join("disk0/p2"), false), tree_of_dir(&xt, false));
    ours.remove("");
    theirs.remove("");
    assert_same_tree(&ours, &theirs, &Compare { mode: false, owner: false, nlink: false, xattrs: false, nanos: false, ignore: vec![] });

    // st_blocks shows holes (du, tar --sparse rely on it).
    use std::os::unix::fs::MetadataExt;
    let sparse = std::fs::metadata(m.dir.join("disk1/p1/sparse.bin")).unwrap();
    assert_eq!(sparse.len(), 50 * MIB);
    assert!(sparse.blocks() * 512 < MIB, "sparse.bin reports {} blocks", sparse.blocks());
    drop(m);
    let _ = std::fs::remove_dir_all(&work);
    guard.check();
}

#[test]
fn fuse_refuses_every_write_with_erofs() {
    let (n, e) = sources();
    let guard = SourceGuard::new(&[&n, &e]);
    let work = scratch("fuse-erofs");
    let m = FuseMount::new(&[&n.join("disk.raw"), &e.join("disk.raw")], &work.join("mnt"));
    let d = m.dir.join("disk1/p1");
    let f = d.join("small.txt").display().to_string();
    let dir = d.display().to_string();
    let cases: Vec<Vec<String>> = vec![
        vec!["touch".into(), format!("{dir}/new")],
        vec!["touch".into(), f.clone()],
        vec!["sh".into(), "-c".into(), format!("echo x > '{f}'")],
        vec!["sh".into(), "-c".into(), format!("echo x >> '{f}'")],
        vec!["rm".into(), "-f".into(), f.clone()],
        vec!["mkdir".into(), format!("{dir}/newdir")],
        vec!["rmdir".into(), format!("{dir}/dir/sub")],
        vec!["truncate".into(), "-s".into(), "0".into(), f.clone()],
        vec!["mv".into(), f.clone(), format!("{dir}/moved")],
        vec!["ln".into(), f.clone(), format!("{dir}/hard")],
        vec!["ln".into(), "-s".into(), "x".into(), format!("{dir}/soft")],
        vec!["chmod".into(), "777".into(), f.clone()],
        vec!["chown".into(), "1:1".into(), f.clone()],
        vec!["setfattr".into(), "-n".into(), "user.new".into(), "-v".into(), "1".into(), f.clone()],
    ];
    for c in &cases {
        let out = Command::new(&c[0]).args(&c[1..]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{c:?} succeeded on the read-only mount");
        assert!(err.contains("Read-only file system"), "{c:?}: expected EROFS, got: {err}");
    }
    // O_RDWR open refused too (python: no shell redirection opens O_RDWR).
    let out = Command::new("python3").args(["-c", "import os,sys\ntry:\n os.open(sys.argv[1], os.O_RDWR)\nexcept OSError as e:\n print(e.errno)"]).arg(&f).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "30", "O_RDWR open gives EROFS (30)");
    assert_eq!(std::fs::read(&f).unwrap(), b"hello, ext4\n");
    drop(m);
    let _ = std::fs::remove_dir_all(&work);
    guard.check();
}

/// `sh -c CMD` output (panics on failure).
fn sh(cmd: &str) -> String {
    run_text(Command::new("sh").arg("-c").arg(cmd))
}

/// Hash of every regular file under `dir` (path and content, sorted), read
/// with read(2) in `block`-byte calls, or through mmap.
fn content_hash(dir: &Path, how: &str) -> String {
    let script = r#"
import hashlib, mmap, os, sys
root, how = sys.argv[1], sys.argv[2]
h = hashlib.sha256()
for d, _, files in sorted(os.walk(root)):
    for f in sorted(files):
        p = os.path.join(d, f)
        if os.path.islink(p) or not os.path.isfile(p):
            continue
        h.update(os.path.relpath(p, root).encode('utf-8', 'surrogateescape') + b'\0')
        with open(p, 'rb') as fh:
            if how == 'mmap':
                if os.path.getsize(p) > 0:
                    with mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) as m:
                        h.update(m[:])
            else:
                while True:
                    b = fh.read(int(how))
                    if not b:
                        break
                    h.update(b)
print(h.hexdigest())
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(dir).arg(how).output().expect("python3");
    assert!(out.status.success(), "hashing {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn fuse_direct_io_reads_and_mmaps_the_same_bytes() {
    let (_, e) = sources();
    let guard = SourceGuard::new(&[&e]);
    let work = scratch("fuse-direct-io");
    let src = e.join("disk.raw");
    let cached = FuseMount::new(&[&src], &work.join("cached"));
    let direct = FuseMount::with_flags(&[&src], &work.join("direct"), &["--direct-io"]);
    let want = content_hash(&cached.dir, "1048576");
    assert_eq!(want.len(), 64);
    // Small and odd-sized reads, 1 MiB reads, and mmap (which direct I/O
    // files only allow with FUSE_DIRECT_IO_ALLOW_MMAP) all see the same bytes.
    for how in ["10240", "1048576", "3000000", "mmap"] {
        assert_eq!(content_hash(&direct.dir, how), want, "--direct-io mount read with {how}");
    }
    assert_eq!(content_hash(&cached.dir, "mmap"), want, "page-cache mount through mmap");
    drop((cached, direct));
    let _ = std::fs::remove_dir_all(&work);
    guard.check();
}

#[test]
fn fuse_eight_parallel_readers_agree_and_gnu_tar_matches_vbproxy_tar() {
    let (n, e) = sources();
    let guard = SourceGuard::new(&[&n, &e]);
    let work = scratch("fuse-parallel");
    let srcs = [n.join("disk.raw"), e.join("disk.raw")];
    let m = FuseMount::new(&[&srcs[0], &srcs[1]], &work.join("mnt"));
    let mnt = m.dir.display().to_string();
    // The server reads with many threads (8 readers are not queued on one).
    let count = || std::fs::read_dir(format!("/proc/{}/task", m.pid())).unwrap().count();
    let start = std::time::Instant::now();
    while count() < 9 && start.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(count() >= 9, "the server runs {} threads", count());

    let tar_cmd = format!("tar -C '{mnt}' -cf - . | sha256sum");
    let find_cmd = format!("cd '{mnt}' && find . -type f -exec sha256sum {{}} + | sort | sha256sum");
    let (tar_base, find_base) = (sh(&tar_cmd), sh(&find_cmd));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let cmd = if i % 2 == 0 { tar_cmd.clone() } else { find_cmd.clone() };
            std::thread::spawn(move || (i, sh(&cmd)))
        })
        .collect();
    for h in handles {
        let (i, out) = h.join().unwrap();
        let want = if i % 2 == 0 { &tar_base } else { &find_base };
        assert_eq!(&out, want, "parallel reader {i} saw different bytes");
    }

    // GNU tar of the mount against `vbproxy tar` of the same sources:
    // both extracted by GNU tar, compared entry by entry.
    let (ours, theirs) = (work.join("vbproxy.tar"), work.join("gnu.tar"));
    let (code, err) = vbproxy_tar(&[&srcs[0], &srcs[1]], "/", &ours);
    assert_eq!(code, 0, "vbproxy tar: {err}");
    gnu_tar_of(&m.dir, &theirs);
    let (xo, xt) = (work.join("x-vbproxy"), work.join("x-gnu"));
    gnu_extract(&ours, &xo);
    gnu_extract(&theirs, &xt);
    let (to, tt) = (tree_of_dir(&xo, true), tree_of_dir(&xt, true));
    assert_same_tree(&to, &tt, &Compare::everything());
    assert!(to.len() > 20_000);
    drop(m);
    let _ = std::fs::remove_dir_all(&work);
    guard.check();
}

#[test]
fn fuse_daemon_contract() {
    let (n, e) = sources();
    let guard = SourceGuard::new(&[&n, &e]);
    let work = scratch("fuse-daemon");
    let raw = n.join("disk.raw");
    let dir = work.join("mnt");

    // Returns only once live: the very next stat sees the guest tree.
    let m = FuseMount::new(&[&raw], &dir);
    assert_eq!(mount_entry(&dir).as_deref(), Some("fuse.vbproxy"));
    assert_eq!(std::fs::read(dir.join("disk0/p1/small.txt")).unwrap(), b"hello, ntfs\n");
    let pid = m.pid();
    assert!(alive(pid), "server {pid} runs");
    let opts = sh(&format!("grep ' {} ' /proc/self/mountinfo", dir.display()));
    assert!(opts.contains(" ro,") && opts.contains("default_permissions") && opts.contains(" vbproxy "), "mount options: {opts}");

    // Busy without --lazy: refused, still mounted.
    let mut holder = Command::new("sleep").arg("30").current_dir(dir.join("disk0/p1")).spawn().unwrap();
    let (code, err) = vbproxy_fails(&["umount", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("busy"), "{err}");
    holder.kill().unwrap();
    holder.wait().unwrap();

    // umount waits for the server to exit.
    vbproxy_ok(&["umount", dir.to_str().unwrap()]);
    assert!(!alive(pid), "server {pid} still running after umount returned");
    assert_eq!(mount_entry(&dir), None);
    assert!(!m.pid_file.exists(), "pid file removed by the server");
    drop(m);

    // A killed server leaves a dead mount; umount still removes it.
    let m = FuseMount::new(&[&raw], &dir);
    let pid = m.pid();
    run(Command::new("kill").args(["-KILL", &pid.to_string()]));
    let start = std::time::Instant::now();
    while alive(pid) && start.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let err = std::fs::metadata(dir.join("disk0")).unwrap_err();
    // ENOTCONN, or ECONNABORTED as newer kernels say for an aborted connection.
    assert!(matches!(err.raw_os_error(), Some(107 | 103)), "dead mount: {err}");
    vbproxy_ok(&["umount", dir.to_str().unwrap()]);
    assert_eq!(mount_entry(&dir), None);
    drop(m);

    // Not a vbproxy mount: a plain directory, and a kernel ext4 mount.
    let (code, err) = vbproxy_fails(&["umount", work.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("not a vbproxy mount"), "{err}");
    {
        let o = Mount::new(&e.join("disk.raw"), 2048 * SECTOR, 200 * MIB - 2048 * SECTOR, "ext4", &work.join("ext4"), true);
        let (code, err) = vbproxy_fails(&["umount", o.dir.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert!(err.contains("not a vbproxy mount") && err.contains("ext4"), "{err}");
        assert_eq!(mount_entry(&o.dir).as_deref(), Some("ext4"), "left mounted");
    }

    // A bad source: exit 1 with the server's error printed by `mount`.
    let bad = work.join("nope.vmdk");
    std::fs::write(&bad, b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 100 FLAT \"missing-extent.vmdk\" 0\n").unwrap();
    let (code, err) = vbproxy_fails(&["mount", bad.to_str().unwrap(), dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("missing-extent.vmdk"), "error names the missing file: {err}");
    assert_eq!(mount_entry(&dir), None);
    let (code, err) = vbproxy_fails(&["mount", "/no/such/image.raw", dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("/no/such/image.raw"), "{err}");
    // Missing mount point: exit 1 before anything starts.
    let (code, err) = vbproxy_fails(&["mount", raw.to_str().unwrap(), work.join("absent").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("absent"), "{err}");

    // A snapshot whose parent is missing: refused for safety, exit 3.
    let base = work.join("base.qcow2");
    let child = work.join("child.qcow2");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&base).arg("16M"));
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"]).arg(&base).arg(&child));
    std::fs::remove_file(&base).unwrap();
    let (code, err) = vbproxy_fails(&["mount", child.to_str().unwrap(), dir.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("base.qcow2"), "{err}");
    assert_eq!(mount_entry(&dir), None);

    // --foreground serves in the calling process until unmounted.
    let mut fg = vbproxy().args(["mount", "--foreground"]).arg(&raw).arg(&dir).spawn().unwrap();
    let start = std::time::Instant::now();
    while mount_entry(&dir).is_none() && start.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(std::fs::read(dir.join("disk0/p1/docs/readme.txt")).unwrap(), b"read me\n");
    vbproxy_ok(&["umount", dir.to_str().unwrap()]);
    assert!(fg.wait().unwrap().success(), "foreground server exits 0 when unmounted");
    let _ = std::fs::remove_dir_all(&work);
    guard.check();
}

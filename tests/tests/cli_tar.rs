//! `vbproxy tar` against GNU tar of the same filesystem mounted read-only
//! (ntfs-3g / kernel ext4 / kernel vfat on a read-only loop device): both
//! archives are extracted by GNU tar as root and the extracted trees are
//! compared entry by entry (paths, kinds, sizes, content, mtimes with
//! nanoseconds, modes, owners, symlink targets, hard-link groups, xattrs).
//! Needs: ntfs-3g, fdisk (sfdisk), dosfstools, mtools, e2fsprogs, attr,
//! tar, python3, time, root, /dev/fuse and loop devices.

#[path = "../fixtures/cli_common.rs"]
mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use vbproxy_e2e::tree::*;
use vbproxy_e2e::*;

/// Extracts both archives and compares the trees; also the `tar -tv`
/// listings as sets.
fn assert_same_archives(ours: &Path, theirs: &Path, work: &Path, how: &Compare) {
    let (xo, xt) = (work.join("x-ours"), work.join("x-theirs"));
    gnu_extract(ours, &xo);
    gnu_extract(theirs, &xt);
    let (to, tt) = (tree_of_dir(&xo, how.xattrs), tree_of_dir(&xt, how.xattrs));
    assert_same_tree(&to, &tt, how);
    assert!(to.len() > 10, "the archive holds the fixture ({} entries)", to.len());
}

#[test]
fn tar_ntfs_matches_gnu_tar_of_ntfs3g() {
    let d = ntfs_disk();
    let img = d.join("disk.raw");
    let guard = SourceGuard::new(&[&d]);
    let work = scratch("cli-tar-ntfs");
    let (ours, theirs) = (work.join("ours.tar"), work.join("theirs.tar"));
    let (code, err) = vbproxy_tar(&[&img], "/p1", &ours);
    assert_eq!(code, 0, "vbproxy tar failed: {err}");
    {
        let m = mount_ntfs_ro(&img, &work.join("mnt"));
        gnu_tar_of(&m.dir, &theirs);
        // GNU tar's own check of our archive against the mount.
        let out = Command::new("tar").args(["--xattrs", "--xattrs-include=*", "-d", "-f"]).arg(&ours).arg("-C").arg(&m.dir).output().unwrap();
        assert!(out.status.success(), "tar -d reports differences:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    assert_same_archives(&ours, &theirs, &work, &Compare::everything());
    let (lo, lt) = (gnu_listing(&ours), gnu_listing(&theirs));
    assert_eq!(lo, lt, "tar -tv listings differ");
    // The fixture has what it claims.
    let x = tree_of_dir(&work.join("x-ours"), true);
    for (p, kind) in [("sym_rel", 'l'), ("sym_abs", 'l'), ("links/b", 'f'), ("sparse.bin", 'f'), ("adsdir", 'd')] {
        assert_eq!(x[p].kind, kind, "{p}");
    }
    assert_eq!(x["links/a"].nlink, 3);
    assert!(x["ads.txt"].xattrs.contains_key(b"user.note".as_slice()));
    assert!(x.keys().any(|k| k.len() > 300));
    assert_eq!((x["small.txt"].mtime, x["small.txt"].mtime_nanos), (981173106, 123456700));
    let _ = std::fs::remove_dir_all(&work);
    guard.check();
}

#[test]
fn tar_is_identical_from_raw_vmdk_vhd_vhdx_and_qcow2() {
    let d = ntfs_disk();
    let guard = SourceGuard::new(&[&d]);
    let work = scratch("cli-tar-formats");
    // VHD and VHDX wrappings made here by qemu-img from the cached raw disk.
    let vhd = work.join("disk.vhd");
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on"]).arg(d.join("disk.raw")).arg(&vhd));
    let vhdx = work.join("disk.vhdx");
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "vhdx"]).arg(d.join("disk.raw")).arg(&vhdx));
    let mut hashes = Vec::new();
    for src in [d.join("disk.raw"), d.join("disk.vmdk"), d.join("disk.qcow2"), vhd, vhdx] {
        let f = src.file_name().unwrap().to_string_lossy().into_owned();
        let out = work.join(format!("{f}.tar"));
        let (code, err) = vbproxy_tar(&[&src], "/p1", &out);
        assert_eq!(code, 0, "tar of {f}: {err}");
        hashes.push((f, sha256_file(&out)));
    }
    assert!(hashes.iter().all(|h| h.1 == hashes[0].1), "archives differ: {hashes:?}");
    let _ = std::fs::remove_dir_all(&work);
    guard.check();
}

#[test]
fn tar_python_tarfile_reads_our_archive() {
    let d = ntfs_disk();
    let work = scratch("cli-tar-python");
    let ours = work.join("ours.tar");
    let (code, err) = vbproxy_tar(&[&d.join("disk.raw")], "/p1", &ours);
    assert_eq!(code, 0, "{err}");
    let script = r#"
import sys, tarfile, hashlib
t = tarfile.open(sys.argv[1])
names = sorted(m.name for m in t.getmembers())
print(len(names))
m = t.getmember('./sparse.bin')
data = t.extractfile(m).read()
print(m.size, len(data), hashlib.sha256(data).hexdigest())
print(t.getmember('./links/b').islnk(), t.getmember('./sym_rel').issym(), t.getmember('./sym_rel').linkname)
print(t.getmember('./ads.txt').pax_headers.get('SCHILY.xattr.user.note'))
"#;
    let out = run_text(Command::new("python3").arg("-c").arg(script).arg(&ours));
    let lines: Vec<&str> = out.lines().collect();
    let gnu_names = run_text(Command::new("tar").arg("-tf").arg(&ours)).lines().count();
    assert_eq!(lines[0].parse::<usize>().unwrap(), gnu_names, "python sees as many members as GNU tar");
    let mut sparse = vec![0u8; 20 * MIB as usize];
    sparse[..4096].copy_from_slice(&pseudo_random(7, 4096));
    sparse[(10 * MIB + 123) as usize..(10 * MIB + 123 + 10_000) as usize].copy_from_slice(&pseudo_random(8, 10_000));
    let want = {
        use sha2::{Digest, Sha256};
        format!("{:x}", Sha256::digest(&sparse))
    };
    assert_eq!(lines[1], format!("{} {} {want}", 20 * MIB, 20 * MIB), "sparse member as python reads it");
    assert_eq!(lines[2], "True True small.txt");
    assert_eq!(lines[3], "stream value");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn tar_sub_path_holds_only_that_directory() {
    let d = ntfs_disk();
    let work = scratch("cli-tar-subpath");
    let ours = work.join("docs.tar");
    let (code, err) = vbproxy_tar(&[&d.join("disk.raw")], "/disk0/p1/docs", &ours);
    assert_eq!(code, 0, "{err}");
    let mut names: Vec<String> = run_text(Command::new("tar").arg("-tf").arg(&ours)).lines().map(String::from).collect();
    names.sort();
    assert_eq!(names, ["./", "./readme.txt", "./sub/", "./sub/inner.txt", "./sym_up"]);
    let _ = std::fs::remove_dir_all(&work);
}

/// A 4 GiB sparse file with data spread over it streams through `tar` in
/// bounded memory, and GNU tar extracts it with the data in place.
#[test]
fn tar_of_4gib_file_streams_in_bounded_memory() {
    let d = fixture("cli-ntfs-4gib-v1", |d| {
        let img = d.join("disk.raw");
        std::fs::File::create(&img).unwrap().set_len(96 * MIB).unwrap();
        sfdisk(&img, "label: dos\n2048,,7\n");
        let mnt = d.join("mnt-rw");
        {
            let m = Mount::new(&img, 2048 * SECTOR, 96 * MIB - 2048 * SECTOR, "mkntfs", &mnt, false);
            let mut f = std::fs::File::create(m.dir.join("huge.bin")).unwrap();
            use std::io::{Seek, SeekFrom, Write};
            for i in 0..16u64 {
                f.seek(SeekFrom::Start(i * 256 * MIB + i * 4096 + 7)).unwrap();
                f.write_all(&pseudo_random(100 + i, 2 * MIB as usize)).unwrap();
            }
            f.set_len(4 * GIB + 12345).unwrap();
        }
        std::fs::remove_dir(&mnt).unwrap();
    });
    let img = d.join("disk.raw");
    let guard = SourceGuard::new(&[&d]);
    let work = scratch("cli-tar-4gib");
    let out = work.join("huge.tar");
    let (kb, code, err) = vbproxy_rss(&["tar", "--path", "/p1", img.to_str().unwrap()], &out);
    assert_eq!(code, 0, "{err}");
    assert!(kb < 64 * 1024, "tar of a 4 GiB file peaked at {kb} KiB RSS");
    let x = work.join("x");
    gnu_extract(&out, &x);
    let f = std::fs::File::open(x.join("huge.bin")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 4 * GIB + 12345);
    use std::os::unix::fs::FileExt;
    for i in [0u64, 5, 15] {
        let mut buf = vec![0u8; 2 * MIB as usize + 2];
        let off = i * 256 * MIB + i * 4096 + 6;
        f.read_exact_at(&mut buf, off).unwrap();
        assert_eq!(buf[0], 0, "byte before piece {i}");
        assert_eq!(&buf[1..buf.len() - 1], &pseudo_random(100 + i, 2 * MIB as usize)[..], "piece {i}");
        assert_eq!(buf[buf.len() - 1], 0, "byte after piece {i}");
    }
    // And `cat` streams all 4 GiB (holes read as zeros) in bounded memory.
    let (kb, code, err) = vbproxy_rss(&["cat", img.to_str().unwrap(), "/p1/huge.bin"], Path::new("/dev/null"));
    assert_eq!(code, 0, "{err}");
    assert!(kb < 64 * 1024, "cat of a 4 GiB file peaked at {kb} KiB RSS");
    let _ = std::fs::remove_dir_all(&work);
    guard.check();
}

#[test]
fn tar_ext4_matches_gnu_tar_of_kernel_mount() {
    let d = ext4_disk();
    let img = d.join("disk.raw");
    let guard = SourceGuard::new(&[&d]);
    let work = scratch("cli-tar-ext4");
    let (ours, theirs) = (work.join("ours.tar"), work.join("theirs.tar"));
    let (code, err) = vbproxy_tar(&[&img], "/p1", &ours);
    assert_eq!(code, 0, "vbproxy tar failed: {err}");
    {
        let m = Mount::new(&img, 2048 * SECTOR, 200 * MIB - 2048 * SECTOR, "ext4", &work.join("mnt"), true);
        gnu_tar_of(&m.dir, &theirs);
    }
    let how = Compare { ignore: vec!["lost+found".into()], ..Compare::everything() };
    assert_same_archives(&ours, &theirs, &work, &how);
    let x = tree_of_dir(&work.join("x-ours"), true);
    assert_eq!(x["dir/random.bin"].mode, 0o4755);
    assert_eq!((x["dir/random.bin"].uid, x["dir/random.bin"].gid), (1234, 5678));
    assert_eq!(x["linked"].link_group, x["dir/linked2"].link_group);
    assert!(x.keys().filter(|k| k.starts_with("twenty_thousand/")).count() == 20_000);
    let _ = std::fs::remove_dir_all(&work);
    guard.check();
}

#[test]
fn tar_fat_matches_mtools() {
    let d = ntfs_disk();
    let img = d.join("disk.raw");
    let guard = SourceGuard::new(&[&d]);
    let work = scratch("cli-tar-fat");
    let ours = work.join("ours.tar");
    let (code, err) = vbproxy_tar(&[&img], "/p2", &ours);
    assert_eq!(code, 0, "vbproxy tar failed: {err}");
    // The oracle is mtools (this kernel has no vfat driver): `mcopy -s -m`
    // extracts the volume keeping mtimes; GNU tar extracts ours.
    // FAT has no owners, modes, links or xattrs; the root has no mtime.
    let how = Compare { mode: false, owner: false, nlink: false, xattrs: false, nanos: false, ignore: vec![] };
    let (xo, xt) = (work.join("x-ours"), work.join("x-theirs"));
    gnu_extract(&ours, &xo);
    std::fs::create_dir_all(&xt).unwrap();
    run(Command::new("mcopy")
        .arg("-i")
        .arg(format!("{}@@{}", img.display(), P2_START * SECTOR))
        .args(["-s", "-m", "-n", "::*"])
        .arg(&xt));
    let (mut to, mut tt) = (tree_of_dir(&xo, false), tree_of_dir(&xt, false));
    to.remove("");
    tt.remove("");
    assert_same_tree(&to, &tt, &how);
    assert!(to.contains_key("Long Directory Name/nested/Ünïcödé name.bin"));
    let _ = std::fs::remove_dir_all(&work);
    guard.check();
}

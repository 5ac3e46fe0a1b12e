//! Damaged guests through the CLI: a corrupt MFT record is an error for
//! that file only (`ls -R` and `tar` carry on, name it, exit 1, and the
//! archive stays valid); a partition beyond the end of the disk is an
//! error for that volume while the others list. Directory cycles are left
//! to the filesystem readers' unit tests (the CLI's own loop guard is the
//! `seen` set in files.rs); an NTFS cycle cannot be made without
//! rewriting index B-trees by hand.
//! Needs: ntfs-3g, fdisk, dosfstools, mtools, tar, time, root.

#[path = "../fixtures/cli_common.rs"]
mod common;

use common::*;
use std::process::Command;
use vbproxy_e2e::*;

#[test]
fn corrupt_mft_record_skips_that_file_only() {
    let d = ntfs_disk();
    let record = ntfs_record_of(&d.join("disk.raw"), "docs/readme.txt");
    let img = scratch_copy(&d.join("disk.raw"), "cli-bad-mft");
    let good = run_text(Command::new("tar").arg("-tf").arg({
        let t = img.with_extension("good.tar");
        let (code, err) = vbproxy_tar(&[&img], "/p1", &t);
        assert_eq!(code, 0, "{err}");
        t
    }));
    patch(&img, mft_record_offset(&img, P1_START * SECTOR, record), b"BAAD");
    let guard = SourceGuard::new(&[&img]);
    let raw = img.to_str().unwrap();

    let out = vbproxy().args(["ls", "-R", raw, "/p1"]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("docs/readme.txt") && stderr.contains(&format!("MFT record {record}")), "{stderr}");
    for name in ["small.txt", "inner.txt", "seventeen_mib.bin", "leaf.txt", "file-0299.txt"] {
        assert!(stdout.lines().any(|l| l == name), "{name} still listed");
    }
    assert!(!stdout.lines().any(|l| l == "readme.txt"));

    let tarfile = img.with_extension("bad.tar");
    let (code, err) = vbproxy_tar(&[&img], "/p1", &tarfile);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("./docs/readme.txt") && !err.contains("panicked"), "{err}");
    let listed = run_text(Command::new("tar").arg("-tf").arg(&tarfile));
    let mut want: Vec<&str> = good.lines().filter(|l| *l != "./docs/readme.txt").collect();
    let mut got: Vec<&str> = listed.lines().collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "the archive holds everything but the damaged file");
    // GNU tar extracts it without complaint.
    gnu_extract(&tarfile, &img.with_extension("x"));
    // cat of the damaged file: a clean error naming it.
    assert_clean_error(&["cat", raw, "/p1/docs/readme.txt"], 1, &["readme.txt", "MFT record"]);
    guard.check();
}

#[test]
fn partition_beyond_disk_end_is_an_error_for_that_volume() {
    let d = ntfs_disk();
    let img = scratch_copy(&d.join("disk.raw"), "cli-bad-beyond");
    // Partition 2's sector count (MBR entry 2, offset 462 + 12): 5 GiB.
    patch(&img, 446 + 16 + 12, &(10u32 << 20).to_le_bytes());
    let guard = SourceGuard::new(&[&img]);
    let raw = img.to_str().unwrap();
    let out = vbproxy().args(["ls", raw, "/disk0"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "p1\n");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("p2") && stderr.contains("beyond the end"), "{stderr}");
    // p1 reads as before.
    assert_eq!(vbproxy_ok(&["cat", raw, "/p1/small.txt"]), "hello, ntfs\n");
    assert_clean_error(&["ls", raw, "/p2"], 1, &["/p2", "not found"]);
    // tar of the whole tree: p1 archived, p2 named, exit 1.
    let t = img.with_extension("tar");
    let (code, err) = vbproxy_tar(&[&img], "/", &t);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("p2") && err.contains("beyond the end"), "{err}");
    let listed = run_text(Command::new("tar").arg("-tf").arg(&t));
    assert!(listed.lines().any(|l| l == "./disk0/p1/small.txt"), "{listed}");
    guard.check();
}

#[test]
fn truncated_disk_image_is_a_clean_error() {
    let d = ntfs_disk();
    let img = scratch_copy(&d.join("disk.raw"), "cli-bad-trunc");
    // Cut inside p1: its NTFS claims more sectors than remain.
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(100 * MIB).unwrap();
    let raw = img.to_str().unwrap();
    let err = assert_clean_error(&["ls", raw, "/disk0"], 1, &["p1"]);
    assert!(!err.contains("panicked"));
}

//! `vbproxy ls` and `cat` against the same NTFS filesystem mounted
//! read-only by ntfs-3g; the guest tree's disk level (single-disk
//! shorthand, two disks); exit codes; memory bounds of a huge listing.
//! Needs: ntfs-3g, fdisk, dosfstools, mtools, e2fsprogs, attr, time, root.

#[path = "../fixtures/cli_common.rs"]
mod common;

use common::*;
use std::collections::BTreeMap;
use std::process::Command;
use vbproxy_e2e::tree::*;
use vbproxy_e2e::*;

fn img() -> (std::path::PathBuf, std::path::PathBuf) {
    let d = ntfs_disk();
    (d.join("disk.raw"), d)
}

fn ls_json(args: &[&str]) -> Vec<serde_json::Value> {
    let out = vbproxy_ok(&[&["ls", "--json"], args].concat());
    serde_json::from_str::<serde_json::Value>(&out).expect("ls --json output").as_array().unwrap().clone()
}

fn mount_facts(name: &str) -> Tree {
    let (img, _) = img();
    let m = mount_ntfs_ro(&img, &scratch(name).join("mnt"));
    tree_of_dir(&m.dir, false)
}

#[test]
fn ls_json_recursive_matches_ntfs3g() {
    let (img, d) = img();
    let guard = SourceGuard::new(&[&d]);
    let theirs = mount_facts("cli-ls-json");
    let items = ls_json(&["-R", img.to_str().unwrap(), "/p1"]);
    let mut ours = BTreeMap::new();
    for it in &items {
        let path = it["path"].as_str().unwrap().to_string();
        assert_eq!(it["name"].as_str().unwrap(), path.rsplit('/').next().unwrap(), "name of {path}");
        assert!(ours.insert(path.clone(), it.clone()).is_none(), "{path} listed twice");
    }
    let want: Vec<&String> = theirs.keys().filter(|k| !k.is_empty()).collect();
    assert_eq!(ours.keys().collect::<Vec<_>>(), want, "paths listed");
    let mut diffs = Vec::new();
    for (path, it) in &ours {
        let t = &theirs[path];
        let kind = match t.kind {
            'f' => "file",
            'd' => "dir",
            'l' => "symlink",
            _ => "other",
        };
        let mut check = |what: &str, a: serde_json::Value, b: serde_json::Value| {
            if a != b {
                diffs.push(format!("{path}: {what}: ours {a}, theirs {b}"));
            }
        };
        check("type", it["type"].clone(), kind.into());
        if t.kind != 'd' {
            check("size", it["size"].clone(), t.size.into());
        }
        check("mode", it["mode"].clone(), t.mode.into());
        check("mtime", it["mtime"].clone(), t.mtime.into());
        check("uid", it["uid"].clone(), t.uid.into());
        let target = t.target.as_ref().map(|x| String::from_utf8(x.clone()).unwrap());
        check("target", it["target"].clone(), target.into());
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    assert_eq!(ours["sym_abs"]["target"], "/docs/readme.txt");
    guard.check();
}

#[test]
fn ls_plain_long_and_recursive() {
    let (img, _) = img();
    let img = img.to_str().unwrap();
    let theirs = mount_facts("cli-ls-plain");
    let root_names: Vec<String> = theirs.keys().filter(|k| !k.is_empty() && !k.contains('/')).cloned().collect();
    let out = vbproxy_ok(&["ls", img, "/p1"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), root_names.iter().map(String::as_str).collect::<Vec<_>>());

    let long = vbproxy_ok(&["ls", "-l", img, "/p1"]);
    let line = |name: &str| long.lines().find(|l| l.ends_with(name) || l.contains(&format!(" {name} -> "))).unwrap_or_else(|| panic!("{name} in {long}")).to_string();
    let small = line("small.txt");
    assert!(small.starts_with("-rwxrwxrwx") && small.contains(" 12 ") && small.contains("2001-02-03 04:05:06"), "{small}");
    assert!(line("sym_rel").starts_with('l') && line("sym_rel").ends_with("sym_rel -> small.txt"));
    assert!(line("docs").starts_with('d'));
    let hl = line("hardlink_at_root");
    assert_eq!(hl.split_whitespace().nth(1), Some("3"), "nlink of a file with three names: {hl}");
    // `ls -l` of a symlink shows the link, `ls` of a file shows just it.
    let one = vbproxy_ok(&["ls", "-l", img, "/p1/sym_dangling"]);
    assert!(one.trim_end().ends_with("sym_dangling -> nowhere/at/all"), "{one}");
    // As GNU ls: `ls LINK-TO-DIR` lists the directory, `ls -l` shows the link.
    assert_eq!(vbproxy_ok(&["ls", img, "/p1/sym_dir"]), "readme.txt\nsub\nsym_up\n");
    let l = vbproxy_ok(&["ls", "-l", img, "/p1/sym_dir"]);
    assert!(l.starts_with('l') && l.trim_end().ends_with("sym_dir -> docs"), "{l}");

    let rec = vbproxy_ok(&["ls", "-R", img, "/p1/docs"]);
    assert_eq!(rec, "readme.txt\nsub\nsym_up\n\nsub:\ninner.txt\n");
    let rec_all = vbproxy_ok(&["ls", "-R", img, "/p1"]);
    let names = rec_all.lines().filter(|l| !l.is_empty() && !l.ends_with(':')).count();
    assert_eq!(names, theirs.len() - 1, "ls -R lists every entry once");
}

#[test]
fn single_disk_shorthand_and_two_disks() {
    let (img, d) = img();
    let raw = img.to_str().unwrap();
    let qcow2 = d.join("disk.qcow2");
    let qcow2 = qcow2.to_str().unwrap();
    assert_eq!(vbproxy_ok(&["ls", raw, "/p1/docs"]), vbproxy_ok(&["ls", raw, "/disk0/p1/docs"]));
    assert_eq!(vbproxy_ok(&["cat", raw, "/p1/small.txt"]), vbproxy_ok(&["cat", raw, "/disk0/p1/small.txt"]));
    assert_eq!(vbproxy_ok(&["ls", raw, "/"]), "disk0\n");
    assert_eq!(vbproxy_ok(&["ls", raw, "/disk0"]), "p1\np2\n");
    // Two disks: both levels shown, the shorthand no longer applies.
    assert_eq!(vbproxy_ok(&["ls", raw, qcow2, "/"]), "disk0\ndisk1\n");
    assert_eq!(vbproxy_ok(&["cat", raw, qcow2, "/disk1/p1/docs/readme.txt"]), "read me\n");
    assert_eq!(vbproxy_ok(&["ls", raw, qcow2, "/disk1/p1/docs"]), vbproxy_ok(&["ls", raw, "/p1/docs"]));
    assert_clean_error(&["ls", raw, qcow2, "/p1/docs"], 1, &["/p1/docs", "not found"]);
}

#[test]
fn cat_matches_mount_bytes_and_follows_symlinks_inside_the_guest() {
    let (img, d) = img();
    let guard = SourceGuard::new(&[&d]);
    let m = mount_ntfs_ro(&img, &scratch("cli-cat").join("mnt"));
    let cat = |p: &str| run(vbproxy().args(["cat", img.to_str().unwrap(), &format!("/p1/{p}")])).stdout;
    for f in ["empty", "one_byte", "resident.bin", "b4095.bin", "b4097.bin", "mib_plus_one.bin", "seventeen_mib.bin", "sparse.bin", "sparse_tail.bin", "ads.txt", "héllo wörld ✓.txt", &long_name()] {
        assert_eq!(cat(f), std::fs::read(m.dir.join(f)).unwrap(), "cat {f}");
    }
    let deep = format!("{}/leaf.txt", deep_dir().display());
    assert_eq!(cat(&deep), b"deep\n");
    // Symlinks resolve inside the guest filesystem, never on the host.
    assert_eq!(cat("sym_rel"), b"hello, ntfs\n");
    assert_eq!(cat("sym_abs"), b"read me\n", "absolute target resolved against the guest root");
    assert_eq!(cat("sym_dir/readme.txt"), b"read me\n");
    assert_eq!(cat("docs/sym_up"), b"hello, ntfs\n");
    assert_eq!(cat("docs/../small.txt"), b"hello, ntfs\n");
    drop(m);
    guard.check();
}

#[test]
fn exit_codes_and_messages() {
    let (img, _) = img();
    let raw = img.to_str().unwrap();
    assert_clean_error(&["ls", raw, "/p1/no/such/file"], 1, &["/p1/no/such/file", "not found"]);
    assert_clean_error(&["cat", raw, "/p1/missing.txt"], 1, &["/p1/missing.txt", "not found"]);
    assert_clean_error(&["cat", raw, "/p1/docs"], 1, &["/p1/docs", "not a regular file"]);
    assert_clean_error(&["cat", raw, "/p1/sym_dangling"], 1, &["/p1/sym_dangling", "not found"]);
    assert_clean_error(&["ls", raw, "/p9"], 1, &["/p9", "not found"]);
    assert_clean_error(&["ls", "/nonexistent/disk.raw", "/p1"], 1, &["/nonexistent/disk.raw"]);
    // Usage errors: 2.
    assert_clean_error(&["ls", raw], 2, &[]);
    assert_clean_error(&["ls", "--bogus", raw, "/p1"], 2, &["--bogus"]);
    assert_clean_error(&["cat"], 2, &[]);
    assert_clean_error(&["cp", raw, "/p1/small.txt"], 2, &[]);
    assert_clean_error(&["tar"], 2, &[]);
}

/// 200,000 files (one directory of 100,000 plus 100 of 1,000): `ls -R`
/// peaks under 256 MiB RSS. ext4 only: building 200,000 files through
/// ntfs-3g takes minutes (20,000 took 17 s here).
#[test]
fn ls_of_200k_files_stays_under_256_mib() {
    let d = fixture("cli-ext4-200k-v1", |d| {
        let t = d.join("tree");
        std::fs::create_dir_all(t.join("flat")).unwrap();
        for i in 0..100_000 {
            std::fs::File::create(t.join(format!("flat/f{i:06}"))).unwrap();
        }
        for j in 0..100 {
            let sub = t.join(format!("d{j:03}"));
            std::fs::create_dir(&sub).unwrap();
            for i in 0..1000 {
                std::fs::File::create(sub.join(format!("file-with-a-longer-name-{i:04}"))).unwrap();
            }
        }
        let img = d.join("disk.raw");
        std::fs::File::create(&img).unwrap().set_len(400 * MIB).unwrap();
        sfdisk(&img, "label: dos\n2048,,83\n");
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-N", "220000", "-E", &format!("offset={}", 2048 * SECTOR), "-d"]).arg(&t).arg(&img).arg(format!("{}k", (400 * MIB - 2048 * SECTOR) / 1024)));
        std::fs::remove_dir_all(&t).unwrap();
    });
    let img = d.join("disk.raw");
    let guard = SourceGuard::new(&[&d]);
    let out = scratch("cli-ls-200k").join("ls.txt");
    let (kb, code, err) = vbproxy_rss(&["ls", "-R", "-l", img.to_str().unwrap(), "/p1"], &out);
    assert_eq!(code, 0, "{err}");
    assert!(kb < 256 * 1024, "ls -R of 200,000 files peaked at {kb} KiB RSS");
    let lines = std::fs::read_to_string(&out).unwrap().lines().filter(|l| l.starts_with('-')).count();
    assert_eq!(lines, 200_000);
    let (kb, code, err) = vbproxy_rss(&["tar", "--path", "/p1", img.to_str().unwrap()], &out.with_extension("tar"));
    assert_eq!(code, 0, "{err}");
    assert!(kb < 256 * 1024, "tar of 200,000 files peaked at {kb} KiB RSS");
    guard.check();
}

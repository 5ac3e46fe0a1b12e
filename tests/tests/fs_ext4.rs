//! ext2/3/4 reader against the kernel: images made by `mkfs.ext* -d` from a
//! tree this test builds, mounted read-only through a read-only loop
//! device, compared entry by entry with what `guestfs` shows.
use guestfs::block::{FileSource, ReadAt};
use guestfs::fs::{ext4, Filesystem};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use vbproxy_e2e::tree::{assert_same_tree, tree_of_dir, tree_of_fs, Compare};
use vbproxy_e2e::*;

fn sh(cmd: &str) {
    run(Command::new("sh").args(["-c", cmd]));
}

/// The source tree every image is made from.
fn build_tree(src: &Path, with_big: bool) {
    let w = |p: &str, data: &[u8]| {
        let p = src.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    w("small.txt", b"hello, ext4\n");
    w("one_mib.bin", &pseudo_random(1, MIB as usize));
    if with_big {
        w("big.bin", &pseudo_random(2, 64 * MIB as usize));
    }
    w("empty", b"");
    std::fs::create_dir_all(src.join("empty_dir")).unwrap();
    w("links/hard_a", b"hard link content\n");
    std::fs::hard_link(src.join("links/hard_a"), src.join("hard_b")).unwrap();
    std::fs::hard_link(src.join("links/hard_a"), src.join("links/hard_c")).unwrap();
    std::os::unix::fs::symlink("small.txt", src.join("fast_link")).unwrap();
    let long_target = format!("{}/target", "long-directory-name".repeat(10));
    std::os::unix::fs::symlink(&long_target, src.join("slow_link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/dangling", src.join("links/dangling")).unwrap();
    // Sparse: 1 MiB data, a 5 MiB hole, 1 MiB data, then a trailing hole.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(src.join("sparse.bin")).unwrap();
        f.write_all_at(&pseudo_random(3, MIB as usize), 0).unwrap();
        f.write_all_at(&pseudo_random(4, MIB as usize), 6 * MIB).unwrap();
        f.set_len(10 * MIB).unwrap();
    }
    // Many extents: every other 4 KiB block written (extent tree depth >= 1).
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(src.join("fragmented.bin")).unwrap();
        for i in 0..40u64 {
            f.write_all_at(&pseudo_random(100 + i, 4096), i * 8192).unwrap();
        }
    }
    std::fs::create_dir_all(src.join("bigdir")).unwrap();
    for i in 0..20_000 {
        let p = src.join(format!("bigdir/entry-{i:05}"));
        std::fs::write(p, if i % 1000 == 0 { format!("{i}\n").into_bytes() } else { Vec::new() }).unwrap();
    }
    w("ünïcødé/日本語のファイル.txt", "unicode content\n".as_bytes());
    w(&"n".repeat(255), b"long name\n");
    let deep: String = (0..40).map(|i| format!("d{i}/")).collect();
    w(&format!("{deep}leaf.txt"), b"deep\n");
    std::fs::create_dir_all(src.join("cyc/sub")).unwrap();
    w("cyc/sub/file", b"in the cycle dir\n");
    w("modes/setuid", b"#!/bin/sh\n");
    w("modes/private", b"secret\n");
    w("modes/owned", b"owned\n");
    std::fs::create_dir_all(src.join("modes/sticky")).unwrap();
    sh(&format!(
        "cd '{}' && chmod 4755 modes/setuid && chmod 600 modes/private && chmod 1777 modes/sticky && \
         chown 1000:1000 modes/owned && chown 12345:54321 modes/private && chown -h 7:8 fast_link && \
         mkfifo modes/fifo && mknod modes/null c 1 3 && \
         setfattr -n user.x -v hello small.txt && \
         setfattr -n user.empty modes/owned && \
         setfattr -n user.big -v 0x{} one_mib.bin && \
         setfattr -n user.dir -v dirvalue empty_dir && \
         touch -h -d '2001-02-03 04:05:06.123456789' small.txt fast_link && \
         touch -d '1960-06-01 00:00:01.5' modes/private && \
         touch -d '2100-01-01 12:00:00.987654321' modes/owned && \
         touch -d '1999-12-31 23:59:59' modes",
        src.display(),
        "ab".repeat(800)
    ));
}

/// Images made from the tree: (name, mkfs command).
const VARIANTS: &[(&str, &str)] = &[
    ("ext4.img", "mkfs.ext4 -q -F -b 4096 -L guestext4 -I 256"),
    ("ext4-1k.img", "mkfs.ext4 -q -F -b 1024"),
    ("ext3.img", "mkfs.ext3 -q -F"),
    ("ext2.img", "mkfs.ext2 -q -F"),
];

fn images() -> PathBuf {
    fixture("ext4-images-v2", |d| {
        let src = d.join("src");
        std::fs::create_dir_all(&src).unwrap();
        build_tree(&src, true);
        for (name, mkfs) in VARIANTS {
            let img = d.join(name);
            sh(&format!("truncate -s 256M '{}' && {mkfs} -d '{}' '{}'", img.display(), src.display(), img.display()));
        }
        std::fs::remove_dir_all(&src).unwrap();
        // Settle the host's delayed allocation so the source guard's
        // extent-aware digest is stable from the first test on.
        sh("sync");
    })
}

/// A read-only loop device with the image mounted read-only; unmounted and
/// detached on drop, also when the test fails.
struct Mount {
    dev: String,
    dir: PathBuf,
}

impl Mount {
    fn new(img: &Path, opts: &str, dir: PathBuf) -> Mount {
        let dev = run_text(Command::new("losetup").args(["-r", "-f", "--show"]).arg(img)).trim().to_string();
        std::fs::create_dir_all(&dir).unwrap();
        let m = Mount { dev, dir };
        run(Command::new("mount").args(["-o", opts]).arg(&m.dev).arg(&m.dir));
        m
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn open(img: &Path) -> Box<dyn Filesystem> {
    let src: Arc<dyn ReadAt> = Arc::new(FileSource::open(img).unwrap());
    guestfs::fs::open_filesystem(src, "disk0/p1").unwrap().expect("filesystem detected")
}

fn compare_with_kernel(name: &str) {
    let dir = images();
    let img = dir.join(name);
    let guard = SourceGuard::new(&[&img]);
    let fs = open(&img);
    let ours = tree_of_fs(fs.as_ref());
    let theirs = {
        let opts = if name.starts_with("ext2") { "ro" } else { "ro,noload" };
        let m = Mount::new(&img, opts, scratch(&format!("mnt-{name}")));
        tree_of_dir(&m.dir, true)
    };
    assert!(theirs.len() > 20_000, "kernel shows {} entries", theirs.len());
    assert_same_tree(&ours, &theirs, &Compare { ignore: vec!["lost+found".into()], ..Compare::everything() });
    guard.check();
}

#[test]
fn ext4_matches_kernel() {
    compare_with_kernel("ext4.img");
    let fs = open(&images().join("ext4.img"));
    let info = fs.info();
    assert_eq!((info.kind.as_str(), info.label.as_deref(), info.block_size), ("ext4", Some("guestext4"), 4096));
}

#[test]
fn ext4_1k_blocks_matches_kernel() {
    compare_with_kernel("ext4-1k.img");
}

#[test]
fn ext3_matches_kernel() {
    compare_with_kernel("ext3.img");
    assert_eq!(open(&images().join("ext3.img")).info().kind, "ext3");
}

#[test]
fn ext2_matches_kernel() {
    compare_with_kernel("ext2.img");
    assert_eq!(open(&images().join("ext2.img")).info().kind, "ext2");
}

fn path_id(fs: &dyn Filesystem, path: &str) -> u64 {
    let mut id = fs.root();
    for c in path.split('/') {
        id = fs.lookup(id, c.as_bytes()).unwrap().unwrap_or_else(|| panic!("{path}: {c} not found"));
    }
    id
}

#[test]
fn sparse_file_data_ranges_and_hard_links() {
    let img = images().join("ext4.img");
    let fs = open(&img);
    let id = path_id(fs.as_ref(), "sparse.bin");
    assert_eq!(fs.data_ranges(id).unwrap(), vec![(0, MIB), (6 * MIB, MIB)]);
    let mut buf = vec![0xAAu8; 4096];
    assert_eq!(fs.read(id, 3 * MIB, &mut buf).unwrap(), 4096);
    assert!(buf.iter().all(|&b| b == 0), "hole reads as zeros");
    let a = path_id(fs.as_ref(), "links/hard_a");
    assert_eq!(a, path_id(fs.as_ref(), "hard_b"));
    assert_eq!(fs.stat(a).unwrap().nlink, 3);
    let frag = path_id(fs.as_ref(), "fragmented.bin");
    assert_eq!(fs.data_ranges(frag).unwrap().len(), 40);
}

/// A copy of the ext4 image in a scratch directory, patched by `f`.
fn patched(test: &str, f: impl FnOnce(&Path)) -> PathBuf {
    let d = scratch(test);
    let img = d.join("ext4.img");
    run(Command::new("cp").arg("--sparse=always").arg(images().join("ext4.img")).arg(&img));
    f(&img);
    img
}

fn debugfs_w(img: &Path, cmds: &str) -> String {
    run_text(Command::new("debugfs").arg("-w").arg("-R").arg(cmds).arg(img))
}

fn open_err(img: &Path) -> String {
    let src: Arc<dyn ReadAt> = Arc::new(FileSource::open(img).unwrap());
    match guestfs::fs::open_filesystem(src, "disk0/p1") {
        Ok(_) => panic!("{} opened", img.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn needs_recovery_flag_is_refused() {
    let img = patched("ext4-needs-recovery", |img| {
        debugfs_w(img, "feature needs_recovery");
    });
    let guard = SourceGuard::new(&[&img]);
    let e = open_err(&img);
    assert!(e.contains("disk0/p1") && e.contains("journal needs recovery"), "{e}");
    guard.check();
}

#[test]
fn unreplayed_journal_transaction_is_refused() {
    // A real transaction in the jbd2 log (written by debugfs' journal
    // commands), once with needs_recovery set as debugfs leaves it and
    // once with the flag cleared: the log itself must still be noticed.
    let img = patched("ext4-journal-txn", |img| {
        let data = img.with_extension("blk");
        std::fs::write(&data, vec![0x5Au8; 4096]).unwrap();
        let cmds = img.with_extension("cmds");
        std::fs::write(&cmds, format!("jo\njw -b 60000 {}\njc\n", data.display())).unwrap();
        run(Command::new("debugfs").arg("-w").arg("-f").arg(&cmds).arg(img));
    });
    let e = open_err(&img);
    assert!(e.contains("journal"), "{e}");
    debugfs_w(&img, "feature -needs_recovery");
    let e = open_err(&img);
    assert!(e.contains("never replayed") && e.contains("journal superblock"), "{e}");
}

#[test]
fn huge_inode_count_is_refused() {
    let img = patched("ext4-huge-inodes", |img| {
        debugfs_w(img, "ssv inodes_count 4294967295");
    });
    let e = open_err(&img);
    assert!(e.contains("ext superblock") && e.contains("inodes do not fit"), "{e}");
}

fn block_of(img: &Path, path: &str, what: &str) -> u64 {
    // `ex` prints the extent tree; the first index level line gives the
    // leaf block (level, entries, logical range, then the leaf block and a length).
    let out = run_text(Command::new("debugfs").arg("-R").arg(format!("ex {path}")).arg(img));
    let line = out.lines().find(|l| l.trim_start().starts_with("0/ 1")).unwrap_or_else(|| panic!("no index level for {what}: {out}"));
    line.split_whitespace().rev().nth(1).unwrap().parse().unwrap()
}

#[test]
fn extent_tree_loop_is_an_error_for_that_file_only() {
    let img = patched("ext4-extent-loop", |img| {
        let leaf = block_of(img, "/fragmented.bin", "fragmented.bin");
        // Overwrite the leaf with an index node pointing at itself.
        let mut node = vec![0u8; 24];
        node[0..2].copy_from_slice(&0xF30Au16.to_le_bytes());
        node[2..4].copy_from_slice(&1u16.to_le_bytes());
        node[4..6].copy_from_slice(&340u16.to_le_bytes());
        node[6..8].copy_from_slice(&1u16.to_le_bytes());
        node[16..20].copy_from_slice(&(leaf as u32).to_le_bytes());
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
        f.write_all_at(&node, leaf * 4096).unwrap();
    });
    let guard = SourceGuard::new(&[&img]);
    let fs = open(&img);
    let id = path_id(fs.as_ref(), "fragmented.bin");
    let mut buf = vec![0u8; 4096];
    let e = fs.read(id, 0, &mut buf).unwrap_err().to_string();
    assert!(e.contains("disk0/p1") && e.contains(&format!("inode {id}")) && e.contains("extent"), "{e}");
    // Everything else still reads.
    let small = path_id(fs.as_ref(), "small.txt");
    assert_eq!(fs.read(small, 0, &mut buf).unwrap(), 12);
    assert_eq!(fs.read_dir(path_id(fs.as_ref(), "bigdir")).unwrap().len(), 20_000);
    guard.check();
}

#[test]
fn directory_cycle_is_an_error_for_that_directory_only() {
    let img = patched("ext4-dir-cycle", |img| {
        debugfs_w(img, "ln /cyc /cyc/sub/back");
    });
    let guard = SourceGuard::new(&[&img]);
    let fs = open(&img);
    let sub = path_id(fs.as_ref(), "cyc/sub");
    let e = fs.read_dir(sub).unwrap_err().to_string();
    assert!(e.contains("disk0/p1") && e.contains("directory cycle") && e.contains("back"), "{e}");
    assert_eq!(fs.read_dir(path_id(fs.as_ref(), "modes")).unwrap().len(), 6);
    guard.check();
}

#[test]
fn not_ext_is_not_detected() {
    let src: Arc<dyn ReadAt> = Arc::new(guestfs::block::MemSource(vec![0u8; 1 << 20]));
    assert!(ext4::probe(src, "mem").unwrap().is_none());
}

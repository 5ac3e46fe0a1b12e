//! FAT12/16/32 reader against mtools (this machine's kernel has no vfat
//! driver): images made by `mkfs.vfat` and filled by `mcopy -s -m`,
//! extracted again by `mcopy` as the oracle, compared entry by entry.
use guestfs::block::{FileSource, ReadAt};
use guestfs::fs::{fat, Filesystem};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use vbproxy_e2e::tree::{assert_same_tree, tree_of_dir, tree_of_fs, Compare};
use vbproxy_e2e::*;

fn sh(cmd: &str) {
    run(Command::new("sh").args(["-c", cmd]).env("LC_ALL", "C.UTF-8").env("MTOOLS_SKIP_CHECK", "1"));
}

fn build_tree(src: &Path, big: usize) {
    let w = |p: &str, data: &[u8]| {
        let p = src.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    w("README.TXT", b"upper case 8.3 name\n");
    w("lower.txt", b"lower case 8.3 name\n");
    w("MixedCase.Txt", b"mixed case needs a long name\n");
    w("Grüße aus Köln – 日本語.txt", "unicode long name\n".as_bytes());
    for i in 0..12 {
        w(&format!("Long File Name Collision {i}.data"), format!("collision {i}\n").as_bytes());
    }
    w("big.bin", &pseudo_random(7, big));
    w("empty.txt", b"");
    std::fs::create_dir_all(src.join("Empty Directory")).unwrap();
    w("nested/level two/Level Three/deepest file.txt", b"deep\n");
    for i in 0..300 {
        w(&format!("many/file with a long name number {i:03}.txt"), format!("{i}\n").as_bytes());
    }
    w("readonly.txt", b"read only\n");
    sh(&format!("cd '{}' && touch -d '2001-02-03 04:05:06' README.TXT && touch -d '2107-12-31 23:59:58' lower.txt", src.display()));
}

/// (image name, FAT bits, size in MiB, size of the big file)
const VARIANTS: &[(&str, u32, u64, usize)] = &[
    ("fat12.img", 12, 8, 3 << 20),
    ("fat16.img", 16, 64, 20 << 20),
    ("fat32.img", 32, 300, 40 << 20),
];

fn images() -> PathBuf {
    fixture("fat-images-v1", |d| {
        for &(name, bits, mib, big) in VARIANTS {
            let src = d.join(format!("src-{bits}"));
            build_tree(&src, big);
            let img = d.join(name);
            sh(&format!(
                "truncate -s {mib}M '{img}' && mkfs.vfat -F {bits} -n GUEST{bits} '{img}' >/dev/null && \
                 mcopy -s -m -i '{img}' '{src}'/* ::/ && mattrib -i '{img}' +r ::/readonly.txt",
                img = img.display(),
                src = src.display()
            ));
            std::fs::remove_dir_all(&src).unwrap();
        }
        sh("sync");
    })
}

fn open(img: &Path) -> Box<dyn Filesystem> {
    let src: Arc<dyn ReadAt> = Arc::new(FileSource::open(img).unwrap());
    guestfs::fs::open_filesystem(src, "disk0/p1").unwrap().expect("filesystem detected")
}

fn compare_with_mtools(name: &str) {
    let img = images().join(name);
    let guard = SourceGuard::new(&[&img]);
    let fs = open(&img);
    assert_eq!(fs.info().kind, "vfat");
    let ours = tree_of_fs(fs.as_ref());
    // This kernel has no vfat driver, so the oracle is mtools: `mcopy -s
    // -m` extracts every file with its name, content and mtime.
    let out = scratch(&format!("mcopy-{name}"));
    sh(&format!("mcopy -s -m -n -i '{}' '::/*' '{}'", img.display(), out.display()));
    let mut theirs = tree_of_dir(&out, false);
    // mtools counts 2100 as a leap year (it is not; the kernel and we
    // know): its times after Feb 2100 are one day late. The absolute value
    // is checked in `modes_follow_vfat_defaults`.
    if let Some(f) = theirs.get_mut("lower.txt") {
        f.mtime -= 86_400;
    }
    assert!(theirs.len() > 300, "kernel shows {} entries", theirs.len());
    // The root's times are not stored anywhere on FAT.
    // mtools extracts with the test's umask and owner, so modes and
    // owners are checked by `modes_follow_vfat_defaults` instead.
    let mut how = Compare { nlink: false, xattrs: false, mode: false, owner: false, ..Compare::everything() };
    how.ignore = Vec::new();
    let (mut ours, mut theirs) = (ours, theirs);
    ours.remove("");
    theirs.remove("");
    assert_same_tree(&ours, &theirs, &how);
    guard.check();
}

#[test]
fn fat12_matches_mtools() {
    compare_with_mtools("fat12.img");
}

#[test]
fn fat16_matches_mtools() {
    compare_with_mtools("fat16.img");
}

#[test]
fn fat32_matches_mtools() {
    compare_with_mtools("fat32.img");
    assert_eq!(open(&images().join("fat32.img")).info().label.as_deref(), Some("GUEST32"));
}

fn path_id(fs: &dyn Filesystem, path: &str) -> u64 {
    let mut id = fs.root();
    for c in path.split('/') {
        id = fs.lookup(id, c.as_bytes()).unwrap().unwrap_or_else(|| panic!("{path}: {c} not found"));
    }
    id
}

/// A FAT chain loop in a copy: an error for that file, the rest reads,
/// and the copy is unchanged by reading.
#[test]
fn fat_chain_loop_is_an_error_for_that_file_only() {
    for &(name, bits, _, _) in VARIANTS {
        let d = scratch(&format!("fat-loop-{bits}"));
        let img = d.join(name);
        std::fs::copy(images().join(name), &img).unwrap();
        let entry = path_id(open(&img).as_ref(), "big.bin");
        // The entry's first cluster, then the FAT geometry from the boot sector.
        let bytes = std::fs::read(&img).unwrap();
        let e = &bytes[entry as usize..entry as usize + 32];
        let first = u32::from(u16::from_le_bytes([e[26], e[27]])) | (u32::from(u16::from_le_bytes([e[20], e[21]])) << 16);
        let bps = u64::from(u16::from_le_bytes([bytes[11], bytes[12]]));
        let reserved = u64::from(u16::from_le_bytes([bytes[14], bytes[15]]));
        let fat_sectors = match u16::from_le_bytes([bytes[22], bytes[23]]) {
            0 => u64::from(u32::from_le_bytes([bytes[36], bytes[37], bytes[38], bytes[39]])),
            n => u64::from(n),
        };
        // Make cluster first+2 point back at first+1, in both FATs.
        let (c, target) = (first + 2, first + 1);
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
        for fat_no in 0..2u64 {
            let fat = (reserved + fat_no * fat_sectors) * bps;
            match bits {
                12 => {
                    let off = fat + u64::from(c) + u64::from(c) / 2;
                    let mut b = [0u8; 2];
                    f.read_exact_at(&mut b, off).unwrap();
                    let v = u16::from_le_bytes(b);
                    let v = if c % 2 == 0 { (v & 0xF000) | target as u16 } else { (v & 0x000F) | ((target as u16) << 4) };
                    f.write_all_at(&v.to_le_bytes(), off).unwrap();
                }
                16 => f.write_all_at(&(target as u16).to_le_bytes(), fat + u64::from(c) * 2).unwrap(),
                _ => f.write_all_at(&target.to_le_bytes(), fat + u64::from(c) * 4).unwrap(),
            }
        }
        drop(f);
        let guard = SourceGuard::new(&[&img]);
        let fs = open(&img);
        let mut buf = vec![0u8; 1 << 20];
        let err = fs.read(entry, 0, &mut buf).unwrap_err().to_string();
        assert!(err.contains("disk0/p1") && err.contains("loops"), "{name}: {err}");
        let other = path_id(fs.as_ref(), "nested/level two/Level Three/deepest file.txt");
        assert_eq!(fs.read(other, 0, &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"deep\n");
        assert_eq!(fs.read_dir(path_id(fs.as_ref(), "many")).unwrap().len(), 300);
        guard.check();
    }
}

#[test]
fn directory_cycle_is_an_error_for_that_directory() {
    // Point the entry of "Level Three" at the cluster of "nested": a loop.
    let d = scratch("fat-cycle");
    let img = d.join("fat16.img");
    std::fs::copy(images().join("fat16.img"), &img).unwrap();
    let (nested, level3) = {
        let fs = open(&img);
        (path_id(fs.as_ref(), "nested"), path_id(fs.as_ref(), "nested/level two/Level Three"))
    };
    let bytes = std::fs::read(&img).unwrap();
    let cluster = &bytes[nested as usize + 26..nested as usize + 28];
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(cluster, level3 + 26).unwrap();
    drop(f);
    let fs = open(&img);
    let e = fs.read_dir(path_id(fs.as_ref(), "nested/level two")).unwrap_err().to_string();
    assert!(e.contains("directory cycle") && e.contains("Level Three"), "{e}");
    assert_eq!(fs.read_dir(path_id(fs.as_ref(), "many")).unwrap().len(), 300);
}

#[test]
fn modes_follow_vfat_defaults() {
    let fs = open(&images().join("fat32.img"));
    let st = |p: &str| fs.stat(path_id(fs.as_ref(), p)).unwrap();
    assert_eq!((st("lower.txt").mode, st("lower.txt").uid, st("lower.txt").gid), (0o755, 0, 0));
    assert_eq!(st("readonly.txt").mode, 0o555);
    assert_eq!(st("nested").mode, 0o755);
    assert_eq!(st("README.TXT").mtime.secs, 981_173_106); // 2001-02-03 04:05:06 UTC
    assert_eq!(st("lower.txt").mtime.secs, 4_354_819_198); // 2107-12-31 23:59:58 UTC
}

#[test]
fn not_fat_is_not_detected() {
    let src: Arc<dyn ReadAt> = Arc::new(guestfs::block::MemSource(vec![0u8; 1 << 20]));
    assert!(fat::probe(src, "mem").unwrap().is_none());
}

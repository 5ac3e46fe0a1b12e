//! NTFS reader against ntfs-3g: a volume made by mkntfs and filled through
//! an ntfs-3g mount (read-write only while the fixture is built), then
//! compared with the same image mounted `ntfs-3g -o ro` on a read-only loop
//! device. Needs: ntfs-3g, attr (getfattr/setfattr), sleuthkit (istat),
//! util-linux (losetup), root and /dev/fuse.
//!
//! Metadata mapping checked here (documented in guestfs/src/fs/ntfs/mod.rs):
//! uid/gid 0 (root mounts), mode 0777 (READONLY attribute too), mtime with
//! 100 ns precision from $STANDARD_INFORMATION, named streams as `user.*`.
use guestfs::block::{FileSource, ReadAt, SliceSource};
use guestfs::fs::{FileKind, Filesystem};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use vbproxy_e2e::tree::*;
use vbproxy_e2e::*;

const VOLUME: &str = "disk0/p1";

/// Unmounts and detaches the loop device even when a test fails.
struct Mount {
    dir: PathBuf,
    loopdev: String,
}

impl Mount {
    fn new(img: &Path, dir: &Path, read_only: bool) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let mut l = Command::new("losetup");
        if read_only {
            l.arg("-r");
        }
        let loopdev = run_text(l.args(["-f", "--show"]).arg(img)).trim().to_string();
        let m = Mount { dir: dir.to_owned(), loopdev };
        let opts = if read_only { "ro,streams_interface=xattr" } else { "streams_interface=xattr" };
        run(Command::new("ntfs-3g").args(["-o", opts, &m.loopdev]).arg(dir));
        m
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = Command::new("losetup").args(["-d", &self.loopdev]).status();
    }
}

fn reparse_buffer(tag: u32, subst: &str, print: &str, flags: Option<u32>) -> String {
    let s: Vec<u8> = subst.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    let p: Vec<u8> = print.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    let mut d = Vec::new();
    for v in [0u16, s.len() as u16, s.len() as u16 + 2, p.len() as u16] {
        d.extend_from_slice(&v.to_le_bytes());
    }
    if let Some(f) = flags {
        d.extend_from_slice(&f.to_le_bytes());
    }
    d.extend_from_slice(&s);
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(&p);
    d.extend_from_slice(&[0, 0]);
    let mut b = tag.to_le_bytes().to_vec();
    b.extend_from_slice(&(d.len() as u16).to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&d);
    format!("0x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

fn setfattr(path: &Path, name: &str, value: &str) {
    run(Command::new("setfattr").args(["-n", name, "-v", value]).arg(path));
}

fn attrib(path: &Path) -> u32 {
    let out = run_text(Command::new("getfattr").args(["-n", "system.ntfs_attrib_be", "-e", "hex", "--absolute-names"]).arg(path));
    let hex = out.lines().find_map(|l| l.split_once("=0x")).map(|(_, h)| h.trim().to_string()).expect("attrib value");
    u32::from_str_radix(&hex, 16).unwrap()
}

fn fill(m: &Path) {
    let w = |rel: &str, data: &[u8]| std::fs::write(m.join(rel), data).unwrap_or_else(|e| panic!("write {rel}: {e}"));
    w("small.txt", b"hello, ntfs\n");
    w("resident.bin", &pseudo_random(1, 600));
    w("one_mib.bin", &pseudo_random(2, MIB as usize));
    w("big64.bin", &pseudo_random(3, 64 * MIB as usize));
    w("empty", b"");

    // Compressed directory: files created inside inherit the flag.
    std::fs::create_dir(m.join("cdir")).unwrap();
    setfattr(&m.join("cdir"), "system.ntfs_attrib_be", "0x00000800");
    let text: Vec<u8> = (0..400_000u32).map(|i| b"The quick brown fox jumps over the lazy dog. "[(i % 45) as usize]).collect();
    w("cdir/text.txt", &text);
    w("cdir/random.bin", &pseudo_random(4, 200_000));
    let mut mixed = pseudo_random(5, 300_000);
    mixed[100_000..200_000].fill(b'x');
    w("cdir/mixed.bin", &mixed);
    {
        let mut f = std::fs::File::create(m.join("cdir/holes.bin")).unwrap();
        f.write_all(&text[..70_000]).unwrap();
        f.seek(SeekFrom::Start(MIB)).unwrap();
        f.write_all(&pseudo_random(6, 5000)).unwrap();
        f.set_len(3 * MIB).unwrap();
    }
    for f in ["cdir/text.txt", "cdir/random.bin", "cdir/holes.bin"] {
        assert_ne!(attrib(&m.join(f)) & 0x800, 0, "{f} is not compressed");
    }

    // Sparse file.
    {
        let mut f = std::fs::File::create(m.join("sparse.bin")).unwrap();
        f.write_all(&pseudo_random(7, 4096)).unwrap();
        f.seek(SeekFrom::Start(10 * MIB + 123)).unwrap();
        f.write_all(&pseudo_random(8, 10_000)).unwrap();
        f.set_len(20 * MIB).unwrap();
    }

    // Alternate data streams.
    w("ads.txt", b"main stream\n");
    setfattr(&m.join("ads.txt"), "user.note", "stream value");
    let big = pseudo_random(9, 3000);
    setfattr(&m.join("ads.txt"), "user.blob", &format!("0x{}", big.iter().map(|x| format!("{x:02x}")).collect::<String>()));
    std::fs::create_dir(m.join("adsdir")).unwrap();
    setfattr(&m.join("adsdir"), "user.dirstream", "on a directory");

    // Hard links, across directories.
    std::fs::create_dir(m.join("links")).unwrap();
    w("links/a", b"linked content\n");
    std::fs::hard_link(m.join("links/a"), m.join("links/b")).unwrap();
    std::fs::hard_link(m.join("links/a"), m.join("hardlink_at_root")).unwrap();

    // Symlinks: ntfs-3g makes Interix links; reparse links via raw data.
    std::os::unix::fs::symlink("small.txt", m.join("sym_rel")).unwrap();
    std::os::unix::fs::symlink("/abs/target/x", m.join("sym_abs")).unwrap();
    w("reparse_rel", b"");
    setfattr(&m.join("reparse_rel"), "system.ntfs_reparse_data", &reparse_buffer(0xA000_000C, r"links\a", r"links\a", Some(1)));
    w("reparse_abs", b"");
    setfattr(&m.join("reparse_abs"), "system.ntfs_reparse_data", &reparse_buffer(0xA000_000C, r"\??\C:\Windows\System32", r"C:\Windows\System32", Some(0)));
    std::fs::create_dir(m.join("junction")).unwrap();
    setfattr(&m.join("junction"), "system.ntfs_reparse_data", &reparse_buffer(0xA000_0003, r"\??\C:\Users\Public", r"C:\Users\Public", None));

    // Special files ntfs-3g stores as Interix files.
    run(Command::new("mkfifo").arg(m.join("fifo")));

    // Names.
    w("héllo wörld ✓.txt", b"unicode\n");
    w("日本語.txt", b"japanese\n");
    w("emoji 😀.txt", b"astral plane\n");
    let long = format!("{}.txt", "L".repeat(251));
    w(&long, b"255 characters\n");
    let mut deep = PathBuf::from("deep");
    for i in 0..6 {
        deep.push(format!("{i}-{}", "d".repeat(60)));
    }
    std::fs::create_dir_all(m.join(&deep)).unwrap();
    std::fs::write(m.join(&deep).join("leaf.txt"), b"deep\n").unwrap();

    // Enough entries for the directory index to need INDX blocks.
    std::fs::create_dir(m.join("many")).unwrap();
    for i in 0..600 {
        w(&format!("many/file-{i:04}-with-a-longer-name.txt"), format!("{i}\n").as_bytes());
    }

    // Read-only attribute (ntfs-3g still shows 0777).
    w("readonly.txt", b"ro\n");
    setfattr(&m.join("readonly.txt"), "system.ntfs_attrib_be", "0x00000021");

    // Timestamps last (writes above would update them).
    run(Command::new("touch").args(["-m", "-d", "2001-02-03 04:05:06.123456789"]).arg(m.join("small.txt")));
    run(Command::new("touch").args(["-m", "-d", "1969-07-20 20:17:40"]).arg(m.join("one_mib.bin")));
    run(Command::new("touch").args(["-m", "-d", "2038-01-19 03:14:08.5"]).arg(m.join("links/a")));
}

fn main_fixture() -> PathBuf {
    fixture("ntfs-v1", |d| {
        let img = d.join("ntfs.img");
        std::fs::File::create(&img).unwrap().set_len(256 * MIB).unwrap();
        run(Command::new("mkntfs").args(["-F", "-Q", "-f", "-q", "-L", "VBTEST"]).arg(&img));
        let mnt = d.join("mnt-rw");
        {
            let m = Mount::new(&img, &mnt, false);
            fill(&m.dir);
        }
        std::fs::remove_dir(&mnt).unwrap();
    })
}

/// A volume with a WOF (CompactOS) file, whose content we refuse. Kept
/// apart from the main fixture: ntfs-3g shows such a file as a symlink to
/// an error text, and the tree walk reads every file.
fn wof_fixture() -> PathBuf {
    fixture("ntfs-wof-v1", |d| {
        let img = d.join("ntfs.img");
        std::fs::File::create(&img).unwrap().set_len(16 * MIB).unwrap();
        run(Command::new("mkntfs").args(["-F", "-Q", "-f", "-q"]).arg(&img));
        let mnt = d.join("mnt-rw");
        {
            let m = Mount::new(&img, &mnt, false);
            std::fs::create_dir(m.dir.join("refused")).unwrap();
            std::fs::write(m.dir.join("refused/wof.bin"), b"not really compressed").unwrap();
            // WOF reparse data: version 1, provider 1 (file), version 1, XPRESS8K.
            let wof = "0x170000801000000001000000010000000100000001000000";
            setfattr(&m.dir.join("refused/wof.bin"), "system.ntfs_reparse_data", wof);
            std::fs::write(m.dir.join("refused/plain.txt"), b"still readable").unwrap();
        }
        std::fs::remove_dir(&mnt).unwrap();
    })
}

fn open(img: &Path) -> Box<dyn Filesystem> {
    let src: Arc<dyn ReadAt> = Arc::new(FileSource::open(img).unwrap());
    let size = src.size();
    let part: Arc<dyn ReadAt> = Arc::new(SliceSource::new(src, 0, size).unwrap());
    guestfs::fs::open_filesystem(part, VOLUME).unwrap().expect("NTFS detected")
}

/// The tree ntfs-3g shows read-only, with link targets made relative to
/// the mount point (ntfs-3g prefixes absolute targets with it).
fn ntfs3g_tree(img: &Path, name: &str) -> Tree {
    let mnt = scratch(name).join("mnt");
    let m = Mount::new(img, &mnt, true);
    let mut t = tree_of_dir(&m.dir, true);
    let prefix = m.dir.to_string_lossy().into_owned();
    for f in t.values_mut() {
        if let Some(target) = &f.target {
            if let Some(rest) = target.strip_prefix(prefix.as_bytes()) {
                let rest = rest.to_vec();
                f.size = rest.len() as u64;
                f.target = Some(rest);
            }
        }
    }
    t
}

fn lookup(fs: &dyn Filesystem, path: &str) -> u64 {
    let mut id = fs.root();
    for part in path.split('/') {
        id = fs.lookup(id, part.as_bytes()).unwrap().unwrap_or_else(|| panic!("{path}: {part} not found"));
    }
    id
}

fn read_all(fs: &dyn Filesystem, id: u64) -> guestfs::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = fs.read(id, out.len() as u64, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn ntfs_tree_matches_ntfs3g() {
    let dir = main_fixture();
    let img = dir.join("ntfs.img");
    let guard = SourceGuard::new(&[&dir]);
    let theirs = ntfs3g_tree(&img, "ntfs-oracle");
    let fs = open(&img);
    assert_eq!(fs.info().kind, "ntfs");
    assert_eq!(fs.info().label.as_deref(), Some("VBTEST"));
    let ours = tree_of_fs(fs.as_ref());
    assert_same_tree(&ours, &theirs, &Compare::everything());
    // The fixture has what it claims to have.
    for (p, kind) in [("sym_rel", 'l'), ("reparse_abs", 'l'), ("junction", 'l'), ("fifo", 'p'), ("links/b", 'f')] {
        assert_eq!(ours[p].kind, kind, "{p}");
    }
    assert_eq!(ours["junction"].target.as_deref(), Some(b"/.NTFS-3G/C:/Users/Public".as_slice()));
    assert_eq!(ours["links/a"].nlink, 3);
    assert_eq!(ours["readonly.txt"].mode, 0o777, "ntfs-3g ignores the READONLY attribute");
    assert_eq!((ours["small.txt"].mtime, ours["small.txt"].mtime_nanos), (981173106, 123456700));
    assert_eq!(ours["ads.txt"].xattrs.get(b"user.note".as_slice()).map(Vec::as_slice), Some(b"stream value".as_slice()));
    assert!(ours.keys().any(|k| k.len() > 300), "deep path (> 260 characters) present");
    guard.check();
}

#[test]
fn ntfs_sparse_and_compressed_ranges() {
    let dir = main_fixture();
    let fs = open(&dir.join("ntfs.img"));
    let id = lookup(fs.as_ref(), "sparse.bin");
    let ranges = fs.data_ranges(id).unwrap();
    let data: u64 = ranges.iter().map(|r| r.1).sum();
    assert!(data < 2 * MIB, "sparse file should have holes: {ranges:?}");
    let content = read_all(fs.as_ref(), id).unwrap();
    assert_eq!(content.len() as u64, 20 * MIB);
    assert_eq!(&content[..4096], &pseudo_random(7, 4096)[..]);
    assert_eq!(&content[(10 * MIB + 123) as usize..(10 * MIB + 123 + 10_000) as usize], &pseudo_random(8, 10_000)[..]);
    // Compressed text reads back exactly (not the compressed bytes).
    let id = lookup(fs.as_ref(), "cdir/text.txt");
    let text = read_all(fs.as_ref(), id).unwrap();
    assert_eq!(text.len(), 400_000);
    assert!(text.starts_with(b"The quick brown fox"));
    // Unaligned reads across compression units.
    let mut buf = vec![0u8; 70_000];
    let n = fs.read(id, 65_000, &mut buf).unwrap();
    assert_eq!(&buf[..n], &text[65_000..65_000 + n]);
}

#[test]
fn ntfs_refuses_wof_content_but_lists_it() {
    let dir = wof_fixture();
    let guard = SourceGuard::new(&[&dir]);
    let fs = open(&dir.join("ntfs.img"));
    let plain = lookup(fs.as_ref(), "refused/plain.txt");
    assert_eq!(read_all(fs.as_ref(), plain).unwrap(), b"still readable");
    let id = lookup(fs.as_ref(), "refused/wof.bin");
    assert_eq!(fs.stat(id).unwrap().kind, FileKind::File);
    let e = fs.read(id, 0, &mut [0u8; 16]).unwrap_err().to_string();
    assert!(e.contains("WOF") && e.contains("disk0/p1:/refused/wof.bin"), "{e}");
    guard.check();
}

/// Byte offset of MFT record `n` (the first records are contiguous).
fn mft_record_offset(img: &Path, n: u64) -> u64 {
    let b = std::fs::read(img).unwrap();
    let bps = u64::from(u16::from_le_bytes([b[11], b[12]]));
    let cs = bps * u64::from(b[13]);
    let lcn = u64::from_le_bytes(b[0x30..0x38].try_into().unwrap());
    lcn * cs + n * 1024
}

fn patch(img: &Path, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn scratch_copy(name: &str) -> PathBuf {
    let dir = main_fixture();
    let copy = scratch(name).join("ntfs.img");
    run(Command::new("cp").arg("--sparse=always").arg(dir.join("ntfs.img")).arg(&copy));
    copy
}

#[test]
fn ntfs_corrupt_mft_record_is_an_error_for_that_file_only() {
    let img = scratch_copy("ntfs-bad-record");
    let (small, ads) = {
        let fs = open(&img);
        (lookup(fs.as_ref(), "small.txt"), lookup(fs.as_ref(), "ads.txt"))
    };
    patch(&img, mft_record_offset(&img, small), b"BAAD");
    // A torn write: the last two bytes of the first sector no longer match
    // the update sequence number.
    patch(&img, mft_record_offset(&img, ads) + 510, &[0xEE, 0xEE]);
    let guard = SourceGuard::new(&[&img]);
    let fs = open(&img);
    let names: Vec<_> = fs.read_dir(fs.root()).unwrap().into_iter().map(|e| e.name).collect();
    assert!(names.contains(&b"small.txt".to_vec()) && names.contains(&b"one_mib.bin".to_vec()));
    let e = fs.stat(small).unwrap_err().to_string();
    assert!(e.contains(&format!("MFT record {small}")) && e.contains("bad signature") && e.contains("disk0/p1"), "{e}");
    let e = fs.stat(ads).unwrap_err().to_string();
    assert!(e.contains("update sequence mismatch"), "{e}");
    let ok = lookup(fs.as_ref(), "one_mib.bin");
    assert_eq!(read_all(fs.as_ref(), ok).unwrap(), pseudo_random(2, MIB as usize));
    guard.check();
}

/// The clusters of a file's unnamed $DATA, from sleuthkit's istat.
fn clusters_of(img: &Path, record: u64) -> Vec<u64> {
    let out = run_text(Command::new("istat").arg(img).arg(record.to_string()));
    let mut lines = out.lines().skip_while(|l| !(l.starts_with("Type: $DATA") && l.contains("Name: N/A")));
    lines.next();
    lines
        .take_while(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .flat_map(|l| l.split_whitespace().filter_map(|x| x.parse().ok()).collect::<Vec<u64>>())
        .collect()
}

#[test]
fn ntfs_corrupt_compressed_unit_is_an_error_never_garbage() {
    let img = scratch_copy("ntfs-bad-lznt1");
    let id = lookup(open(&img).as_ref(), "cdir/text.txt");
    // istat lists sparse clusters as 0; 400,000 bytes need 98 clusters
    // uncompressed.
    let clusters: Vec<u64> = clusters_of(&img, id).into_iter().filter(|&c| c != 0).collect();
    assert!(!clusters.is_empty() && clusters.len() < 40, "compressed text uses few clusters: {clusters:?}");
    let cs = 4096;
    // A compressed chunk whose first token is a back-reference: impossible.
    patch(&img, clusters[0] * cs, &[0x03, 0x80, 0x01, 0x00, 0x00, 0x00]);
    let guard = SourceGuard::new(&[&img]);
    let fs = open(&img);
    let e = read_all(fs.as_ref(), id).unwrap_err().to_string();
    assert!(e.contains("LZNT1") && e.contains("disk0/p1:/cdir/text.txt"), "{e}");
    let other = lookup(fs.as_ref(), "cdir/random.bin");
    assert_eq!(read_all(fs.as_ref(), other).unwrap(), pseudo_random(4, 200_000));
    guard.check();
}

#[test]
fn ntfs_corrupt_index_block_fails_that_directory_only() {
    let img = scratch_copy("ntfs-bad-indx");
    let many = lookup(open(&img).as_ref(), "many");
    // Find the directory's INDX blocks by signature and break every one
    // that holds one of its names.
    let data = std::fs::read(&img).unwrap();
    let needle: Vec<u8> = "file-0300".encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    let mut patched = 0;
    for off in (0..data.len()).step_by(4096) {
        if data[off..off + 4] == *b"INDX" && data[off..off + 4096].windows(needle.len()).any(|w| w == needle) {
            patch(&img, off as u64, b"XXXX");
            patched += 1;
        }
    }
    assert!(patched > 0);
    let fs = open(&img);
    let e = fs.read_dir(many).unwrap_err().to_string();
    assert!(e.contains("index block") && e.contains("disk0/p1:/many"), "{e}");
    assert!(fs.read_dir(fs.root()).is_ok());
}

#[test]
fn ntfs_probe_ignores_other_data() {
    let src: Arc<dyn ReadAt> = Arc::new(guestfs::block::MemSource(vec![0u8; 1 << 20]));
    assert!(guestfs::fs::ntfs::probe(src, VOLUME).unwrap().is_none());
    let mut boot = vec![0u8; 1 << 20];
    boot[3..11].copy_from_slice(b"NTFS    ");
    let src: Arc<dyn ReadAt> = Arc::new(guestfs::block::MemSource(boot));
    let e = guestfs::fs::ntfs::probe(src, VOLUME).err().expect("garbage NTFS boot sector is an error").to_string();
    assert!(e.contains("disk0/p1") && e.contains("boot sector"), "{e}");
}

/// Walks everything, tolerating errors; returns how many entries were seen.
fn walk_tolerant(fs: &dyn Filesystem, id: u64, depth: usize, seen: &mut usize) {
    if depth > 64 || *seen > 100_000 {
        return;
    }
    let Ok(st) = fs.stat(id) else { return };
    *seen += 1;
    match st.kind {
        FileKind::Dir => {
            for e in fs.read_dir(id).unwrap_or_default() {
                walk_tolerant(fs, e.id, depth + 1, seen);
            }
        }
        FileKind::File => {
            let _ = read_all(fs, id);
            let _ = fs.xattrs(id);
            let _ = fs.data_ranges(id);
        }
        FileKind::Symlink => {
            let _ = fs.readlink(id);
        }
        _ => {}
    }
}

/// Random byte damage in the MFT and index blocks: errors, never a panic
/// or a hang.
#[test]
fn ntfs_random_damage_never_panics() {
    let img = scratch_copy("ntfs-fuzz");
    let pristine = std::fs::read(&img).unwrap();
    let mft = mft_record_offset(&img, 0) as usize;
    let indx: Vec<usize> = (0..pristine.len()).step_by(4096).filter(|&o| pristine[o..o + 4] == *b"INDX").collect();
    let mut rng = 0x1234_5678_9abc_def1u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..12 {
        let mut data = pristine.clone();
        for _ in 0..40 {
            let base = if next() % 2 == 0 || indx.is_empty() { mft } else { indx[(next() as usize) % indx.len()] };
            let off = base + (next() as usize) % (if base == mft { 800 * 1024 } else { 4096 });
            data[off] = next() as u8;
        }
        std::fs::write(&img, &data).unwrap();
        let start = std::time::Instant::now();
        let src: Arc<dyn ReadAt> = Arc::new(FileSource::open(&img).unwrap());
        if let Ok(Some(fs)) = guestfs::fs::open_filesystem(src, VOLUME) {
            let mut seen = 0;
            walk_tolerant(fs.as_ref(), fs.root(), 0, &mut seen);
        }
        assert!(start.elapsed().as_secs() < 30, "round {round} took too long");
    }
}

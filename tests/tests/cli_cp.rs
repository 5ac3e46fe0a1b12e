//! `vbproxy cp`: restores keep content, mode, mtimes, hard links and
//! symlinks (recreated, never followed), and nothing a hostile guest says
//! writes outside DEST. Hostile names the NTFS driver will not create
//! (`..`, `.`, `/`, NUL, two entries with one name) are made by patching
//! the UTF-16 name of a real entry, in its MFT record and in its parent's
//! index, in a copy of an ntfs-3g-built image.
//! Needs: ntfs-3g, fdisk, attr, root, /dev/fuse.

#[path = "../fixtures/cli_common.rs"]
mod common;

use common::*;
use std::path::{Path, PathBuf};
use vbproxy_e2e::tree::*;
use vbproxy_e2e::*;

const OUTSIDE: &str = "/tmp/vbproxy-cli-outside";

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// Replaces the $FILE_NAME name `from` by `to` (same length in UTF-16
/// units) in every MFT record and index block; returns how many.
fn rename_in_place(img: &Path, from: &str, to: &[u16]) -> usize {
    let data = std::fs::read(img).unwrap();
    let (f, t): (Vec<u8>, Vec<u8>) = (utf16(from), to.iter().flat_map(|u| u.to_le_bytes()).collect());
    assert_eq!(f.len(), t.len());
    let units = (f.len() / 2) as u8;
    let mut n = 0;
    for (block, sig) in [(1024usize, b"FILE"), (4096, b"INDX")] {
        for off in (0..data.len()).step_by(block) {
            if &data[off..off + 4] != sig {
                continue;
            }
            let rec = &data[off..off + block];
            for i in 2..block - f.len() {
                // A $FILE_NAME name: preceded by its length and namespace.
                if rec[i..i + f.len()] == f[..] && rec[i - 2] == units && rec[i - 1] <= 3 {
                    patch(img, (off + i) as u64, &t);
                    n += 1;
                }
            }
        }
    }
    n
}

fn fixture_disk() -> PathBuf {
    fixture("cli-cp-disk-v1", |d| {
        let img = d.join("disk.raw");
        std::fs::File::create(&img).unwrap().set_len(48 * MIB).unwrap();
        sfdisk(&img, "label: dos\n2048,,7\n");
        let mnt = d.join("mnt-rw");
        {
            let m = Mount::new(&img, 2048 * SECTOR, 48 * MIB - 2048 * SECTOR, "mkntfs", &mnt, false);
            let r = m.dir.join("restore");
            std::fs::create_dir_all(r.join("sub/deeper")).unwrap();
            std::fs::write(r.join("file.txt"), b"restore me\n").unwrap();
            std::fs::write(r.join("big.bin"), pseudo_random(40, 3 * MIB as usize + 5)).unwrap();
            std::fs::write(r.join("sub/deeper/leaf"), b"leaf\n").unwrap();
            std::fs::write(r.join("a"), b"linked\n").unwrap();
            std::fs::hard_link(r.join("a"), r.join("sub/b")).unwrap();
            std::os::unix::fs::symlink(OUTSIDE, r.join("link_out")).unwrap();
            std::os::unix::fs::symlink("../../../../../../../etc/passwd", r.join("link_up")).unwrap();
            std::os::unix::fs::symlink("file.txt", r.join("link_in")).unwrap();
            touch(&r.join("file.txt"), "2003-04-05 06:07:08.9");
            touch(&r.join("sub/deeper"), "1999-12-31 23:59:59.5");
            let case = |dir: &str, names: &[&str]| {
                std::fs::create_dir(m.dir.join(dir)).unwrap();
                std::fs::write(m.dir.join(dir).join("ok.txt"), b"fine\n").unwrap();
                for n in names {
                    std::fs::write(m.dir.join(dir).join(n), b"hostile\n").unwrap();
                }
            };
            case("t_dotdot", &["Ж1"]);
            case("t_dot", &["Ж"]);
            case("t_slash", &["ЖЖЖЖЖЖЖЖЖЖЖЖ"]);
            case("t_nul", &["aЖb"]);
            case("t_ctrl", &["bell\x07\nname", "..\\evil", "esc\x1b[2J"]);
            std::fs::create_dir(m.dir.join("t_symdir")).unwrap();
            std::fs::create_dir(m.dir.join("t_symdir/evil")).unwrap();
            std::fs::write(m.dir.join("t_symdir/evil/payload.txt"), b"payload\n").unwrap();
            std::os::unix::fs::symlink(OUTSIDE, m.dir.join("t_symdir/evim")).unwrap();
        }
        std::fs::remove_dir(&mnt).unwrap();
        let u = |s: &str| s.encode_utf16().collect::<Vec<u16>>();
        for (from, to) in [("Ж1", u("..")), ("Ж", u(".")), ("ЖЖЖЖЖЖЖЖЖЖЖЖ", u("../../escape")), ("aЖb", vec![b'a'.into(), 0, b'b'.into()]), ("evim", u("evil"))] {
            let n = rename_in_place(&img, from, &to);
            assert!(n >= 2, "{from}: patched {n} copies of the name (want MFT record and index)");
        }
    })
}

/// A work dir with DEST inside and a sentinel beside it.
fn work(name: &str) -> (PathBuf, PathBuf) {
    let w = scratch(name);
    let dest = w.join("dest");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(w.join("sentinel"), b"untouched").unwrap();
    (w, dest)
}

/// Nothing outside DEST: its parent holds only DEST and the sentinel, the
/// outside directory is still empty, no `escape`/`evil` appeared in /tmp.
fn assert_nothing_outside(w: &Path) {
    let mut names: Vec<String> = std::fs::read_dir(w).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["dest", "sentinel"], "DEST's parent changed");
    assert_eq!(std::fs::read(w.join("sentinel")).unwrap(), b"untouched");
    if Path::new(OUTSIDE).exists() {
        assert_eq!(std::fs::read_dir(OUTSIDE).unwrap().count(), 0, "{OUTSIDE} was written to");
    }
    for e in std::fs::read_dir("/tmp").unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(n != "escape" && n != "payload.txt" && n != "evil", "/tmp/{n} appeared");
    }
}

fn cp(img: &Path, path: &str, dest: &Path) -> (i32, String) {
    let out = vbproxy().args(["cp"]).arg(img).arg(path).arg(dest).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    (out.status.code().unwrap_or(-1), err)
}

fn mounted_tree(img: &Path, rel: &str, name: &str) -> Tree {
    let m = Mount::new(img, 2048 * SECTOR, 48 * MIB - 2048 * SECTOR, "ntfs-3g", &scratch(name).join("mnt"), true);
    tree_of_dir(&m.dir.join(rel), false)
}

#[test]
fn cp_directory_keeps_content_modes_times_links_and_symlinks() {
    let d = fixture_disk();
    let img = d.join("disk.raw");
    let guard = SourceGuard::new(&[&d]);
    let (w, dest) = work("cli-cp-dir");
    let (code, err) = cp(&img, "/p1/restore", &dest);
    assert_eq!(code, 0, "{err}");
    let ours = tree_of_dir(&dest.join("restore"), false);
    let theirs = mounted_tree(&img, "restore", "cli-cp-dir-mnt");
    assert_same_tree(&ours, &theirs, &Compare { xattrs: false, ..Compare::everything() });
    assert_eq!(ours["a"].link_group, ours["sub/b"].link_group);
    assert!(ours["a"].link_group.is_some());
    assert_eq!(std::fs::read_link(dest.join("restore/link_out")).unwrap(), Path::new(OUTSIDE));
    assert_nothing_outside(&w);
    guard.check();
}

#[test]
fn cp_single_file_and_rename() {
    let d = fixture_disk();
    let img = d.join("disk.raw");
    let (w, dest) = work("cli-cp-file");
    assert_eq!(cp(&img, "/p1/restore/file.txt", &dest).0, 0);
    assert_eq!(cp(&img, "/disk0/p1/restore/big.bin", &dest.join("renamed.bin")).0, 0);
    let theirs = mounted_tree(&img, "restore", "cli-cp-file-mnt");
    let ours = tree_of_dir(&dest, false);
    for (o, t) in [("file.txt", "file.txt"), ("renamed.bin", "big.bin")] {
        let (o, t) = (&ours[o], &theirs[t]);
        assert_eq!((o.sha256.clone(), o.size, o.mode, o.mtime, o.mtime_nanos), (t.sha256.clone(), t.size, t.mode, t.mtime, t.mtime_nanos));
    }
    assert_eq!((ours["file.txt"].mtime, ours["file.txt"].mtime_nanos), (1049522828, 900000000));
    assert_nothing_outside(&w);
}

#[test]
fn cp_refuses_to_overwrite() {
    let d = fixture_disk();
    let img = d.join("disk.raw");
    let (w, dest) = work("cli-cp-exists");
    std::fs::write(dest.join("file.txt"), b"precious").unwrap();
    let (code, err) = cp(&img, "/p1/restore/file.txt", &dest);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("file.txt") && err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(dest.join("file.txt")).unwrap(), b"precious");
    // DEST naming an existing file: refused too.
    let (code, err) = cp(&img, "/p1/restore/big.bin", &dest.join("file.txt"));
    assert_eq!(code, 1, "{err}");
    assert_eq!(std::fs::read(dest.join("file.txt")).unwrap(), b"precious");
    // An existing directory in a restored tree is not merged into.
    std::fs::create_dir(dest.join("restore")).unwrap();
    let (code, _) = cp(&img, "/p1/restore", &dest);
    assert_eq!(code, 1);
    assert_eq!(std::fs::read_dir(dest.join("restore")).unwrap().count(), 0);
    assert_nothing_outside(&w);
}

/// One directory holding `ok.txt` and one hostile name: the hostile entry
/// is reported and skipped (exit 1), `ok.txt` is restored, nothing lands
/// outside DEST.
fn hostile_case(dir: &str, needle: &str) {
    let d = fixture_disk();
    let img = d.join("disk.raw");
    let guard = SourceGuard::new(&[&d]);
    let (w, dest) = work(&format!("cli-cp-{dir}"));
    let listing = vbproxy_ok(&["ls", img.to_str().unwrap(), &format!("/p1/{dir}")]);
    assert!(listing.lines().any(|l| l.contains(needle)), "the crafted name is in the guest: {listing:?}");
    let (code, err) = cp(&img, &format!("/p1/{dir}"), &dest);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unsafe name") && err.contains(dir), "{err}");
    assert_eq!(std::fs::read(dest.join(dir).join("ok.txt")).unwrap(), b"fine\n");
    let mut names: Vec<_> = std::fs::read_dir(dest.join(dir)).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["ok.txt"]);
    assert_nothing_outside(&w);
    // tar leaves it out the same way.
    let (code, err) = vbproxy_tar(&[&img], &format!("/p1/{dir}"), &w.join("../x.tar"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unsafe name"), "{err}");
    guard.check();
}

#[test]
fn cp_name_dotdot_is_refused() {
    hostile_case("t_dotdot", "..");
}

#[test]
fn cp_name_dot_is_refused() {
    hostile_case("t_dot", ".");
}

#[test]
fn cp_name_with_slashes_is_refused() {
    hostile_case("t_slash", "../../escape");
}

#[test]
fn cp_name_with_nul_is_refused() {
    hostile_case("t_nul", "a\\u{0}b");
}

/// Control characters and backslashes are legal in one Linux name: the
/// entry is restored under exactly its name, inside DEST; messages escape
/// control characters.
#[test]
fn cp_control_characters_and_backslashes_stay_inside_dest() {
    let d = fixture_disk();
    let img = d.join("disk.raw");
    let (w, dest) = work("cli-cp-ctrl");
    let (code, err) = cp(&img, "/p1/t_ctrl", &dest);
    assert_eq!(code, 0, "{err}");
    for n in ["bell\x07\nname", "..\\evil", "esc\x1b[2J", "ok.txt"] {
        assert!(dest.join("t_ctrl").join(n).is_file(), "{n:?} restored");
    }
    let ls = vbproxy_ok(&["ls", img.to_str().unwrap(), "/p1/t_ctrl"]);
    assert!(!ls.contains('\x1b') && !ls.contains('\x07'), "ls escapes control characters: {ls:?}");
    assert_nothing_outside(&w);
}

/// A symlink `evil -> /tmp/...` and a directory `evil` with a file in the
/// same directory: the second `evil` fails (it exists), nothing is written
/// through the link.
#[test]
fn cp_symlink_and_directory_of_one_name_never_write_through_the_link() {
    let d = fixture_disk();
    let img = d.join("disk.raw");
    let _ = std::fs::remove_dir_all(OUTSIDE);
    std::fs::create_dir(OUTSIDE).unwrap();
    let (w, dest) = work("cli-cp-symdir");
    let ls = vbproxy_ok(&["ls", img.to_str().unwrap(), "/p1/t_symdir"]);
    assert_eq!(ls, "evil\nevil\n", "two entries named evil");
    let (code, err) = cp(&img, "/p1/t_symdir", &dest);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("t_symdir/evil") && err.contains("exists"), "{err}");
    assert_nothing_outside(&w);
    assert_eq!(std::fs::read_dir(OUTSIDE).unwrap().count(), 0);
    std::fs::remove_dir(OUTSIDE).unwrap();
}

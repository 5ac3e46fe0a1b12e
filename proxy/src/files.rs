//! File-level commands over the guest tree: `ls`, `cat`, `cp`, `tar`.

use crate::guest::{kind_name, mode_string, open_tree, printable, utc_time};
use crate::tar::{Entry, EntryKind, TarWriter};
use anyhow::{bail, Context, Result};
use guestfs::fs::{FileKind, Stat};
use guestfs::tree::{GuestTree, Node};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Most directory levels walked: deeper is a hostile or corrupt guest.
const MAX_DEPTH: usize = 1024;

/// Errors met while walking, reported on stderr as they happen; the
/// command still finishes what it can and exits 1.
#[derive(Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    fn report(&mut self, path: &[u8], e: impl std::fmt::Display) {
        let msg = format!("{}: {e}", printable(path));
        eprintln!("vbproxy: skipped {msg}");
        self.0.push(msg);
    }

    pub fn into_result(self, what: &str) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            bail!("{what}: {} entries could not be read (listed above)", self.0.len())
        }
    }
}

fn join(base: &[u8], name: &[u8]) -> Vec<u8> {
    if base.is_empty() {
        name.to_vec()
    } else {
        [base, b"/", name].concat()
    }
}

/// Volumes of a disk that could not be used (a partition beyond the end
/// of the disk, a broken table): listing or archiving the disk reports
/// them, so a missing volume never goes unnoticed.
fn report_disk_errors(tree: &GuestTree, node: Node, rel: &[u8], problems: &mut Problems) {
    if let Node::Disk(d) = node {
        for (id, e) in tree.disks.get(d).map(|d| d.errors.as_slice()).unwrap_or_default() {
            problems.report(&join(rel, id.as_bytes()), e);
        }
    }
}

/// Whether a guest name is safe to create as one path component.
fn safe_component(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

// ---------------------------------------------------------------- ls

pub fn ls(sources: &[PathBuf], path: &str, long: bool, recursive: bool, json: bool) -> Result<()> {
    let tree = open_tree(sources)?;
    // As GNU ls: a symlink given as PATH is shown itself (also when it
    // dangles), except that plain `ls` lists the directory it points to.
    let link = tree.resolve(path, false).with_context(|| format!("{path}: not found"))?;
    let node = match tree.stat(link)?.kind {
        FileKind::Symlink if !long && !json => match tree.resolve(path, true) {
            Ok(n) if tree.stat(n).is_ok_and(|st| st.kind == FileKind::Dir) => n,
            _ => link,
        },
        _ => link,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut problems = Problems::default();
    let mut json_items = Vec::new();
    let st = tree.stat(node)?;
    if st.kind != FileKind::Dir {
        let name = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path).as_bytes().to_vec();
        emit(&tree, node, &st, &name, &name, long, json, &mut out, &mut json_items)?;
    } else {
        let mut stack = vec![(node, Vec::new(), 0usize)];
        let mut seen = HashSet::new();
        while let Some((dir, rel, depth)) = stack.pop() {
            if !seen.insert(dir) || depth > MAX_DEPTH {
                problems.report(&rel, "directory loop or nesting too deep; not descended");
                continue;
            }
            report_disk_errors(&tree, dir, &rel, &mut problems);
            let mut entries = match tree.read_dir(dir) {
                Ok(e) => e,
                Err(e) => {
                    problems.report(&rel, e);
                    continue;
                }
            };
            entries.sort_by(|a, b| a.0.name.cmp(&b.0.name));
            if recursive && !json && depth > 0 {
                writeln!(out, "\n{}:", printable(&rel))?;
            }
            let mut subdirs = Vec::new();
            for (e, child) in entries {
                let crel = join(&rel, &e.name);
                match tree.stat(child) {
                    Ok(st) => {
                        emit(&tree, child, &st, &e.name, &crel, long, json, &mut out, &mut json_items)?;
                        if recursive && st.kind == FileKind::Dir {
                            subdirs.push((child, crel, depth + 1));
                        }
                    }
                    Err(err) => problems.report(&crel, err),
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
    }
    if json {
        serde_json::to_writer_pretty(&mut out, &json_items)?;
        writeln!(out)?;
    }
    out.flush()?;
    problems.into_result("ls")
}

#[allow(clippy::too_many_arguments)]
fn emit(
    tree: &GuestTree,
    node: Node,
    st: &Stat,
    name: &[u8],
    rel: &[u8],
    long: bool,
    json: bool,
    out: &mut impl Write,
    items: &mut Vec<serde_json::Value>,
) -> Result<()> {
    let target = if st.kind == FileKind::Symlink { tree.readlink(node).ok() } else { None };
    if json {
        items.push(serde_json::json!({
            "name": String::from_utf8_lossy(name),
            "path": String::from_utf8_lossy(rel),
            "type": kind_name(st.kind),
            "size": st.size,
            "mode": st.mode,
            "uid": st.uid,
            "gid": st.gid,
            "nlink": st.nlink,
            "mtime": st.mtime.secs,
            "target": target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
        }));
    } else if long {
        let t = target.map(|t| format!(" -> {}", printable(&t))).unwrap_or_default();
        writeln!(
            out,
            "{} {:>4} {:>5} {:>5} {:>12} {} {}{t}",
            mode_string(st),
            st.nlink,
            st.uid,
            st.gid,
            st.size,
            utc_time(st.mtime.secs),
            printable(name)
        )?;
    } else {
        writeln!(out, "{}", printable(name))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- cat

pub fn cat(sources: &[PathBuf], path: &str) -> Result<()> {
    let tree = open_tree(sources)?;
    let node = tree.resolve(path, true).with_context(|| format!("{path}: not found"))?;
    let st = tree.stat(node)?;
    if st.kind != FileKind::File {
        bail!("{path}: not a regular file ({})", kind_name(st.kind));
    }
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < st.size {
        let want = (st.size - off).min(buf.len() as u64) as usize;
        let n = tree.read(node, off, &mut buf[..want]).with_context(|| format!("{path}: read at offset {off}"))?;
        if n == 0 {
            bail!("{path}: file ends at {off} bytes, {} expected", st.size);
        }
        out.write_all(&buf[..n])?;
        off += n as u64;
    }
    out.flush()?;
    Ok(())
}

// ---------------------------------------------------------------- tar

pub fn tar(sources: &[PathBuf], path: &str) -> Result<()> {
    let tree = open_tree(sources)?;
    let node = tree.resolve(path, true).with_context(|| format!("{path}: not found"))?;
    let stdout = std::io::stdout().lock();
    let mut w = TarWriter::new(std::io::BufWriter::with_capacity(1 << 20, stdout));
    let mut problems = Problems::default();
    let mut links: HashMap<Node, Vec<u8>> = HashMap::new();
    let mut seen_dirs = HashSet::new();
    // (node, archive path, depth); the root of the walk is "."
    let mut stack = vec![(node, b".".to_vec(), 0usize)];
    while let Some((n, rel, depth)) = stack.pop() {
        let st = match tree.stat(n) {
            Ok(st) => st,
            Err(e) => {
                problems.report(&rel, e);
                continue;
            }
        };
        if st.kind == FileKind::Dir && (!seen_dirs.insert(n) || depth > MAX_DEPTH) {
            problems.report(&rel, "directory loop or nesting too deep; not descended");
            continue;
        }
        match tar_entry(&tree, n, &st, &rel, &mut links) {
            Ok(entry) => {
                let mut failed = None;
                let res = w.append(&entry, |off, buf| {
                    if failed.is_some() {
                        buf.fill(0);
                        return Ok(());
                    }
                    if let Err(e) = read_full(&tree, n, off, buf) {
                        // The header is out: finish the entry with zeros to keep
                        // the archive valid, and report the file as damaged.
                        failed = Some(format!("read failed at offset {off}, rest of the file is zeros in the archive: {e}"));
                        buf.fill(0);
                    }
                    Ok(())
                });
                res.context("writing the tar stream")?;
                if let Some(f) = failed {
                    problems.report(&rel, f);
                }
            }
            Err(e) => {
                problems.report(&rel, e);
                continue;
            }
        }
        if st.kind == FileKind::Dir {
            report_disk_errors(&tree, n, &rel, &mut problems);
            match tree.read_dir(n) {
                Ok(mut entries) => {
                    entries.sort_by(|a, b| b.0.name.cmp(&a.0.name));
                    for (e, child) in entries {
                        if !safe_component(&e.name) {
                            problems.report(&join(&rel, &e.name), "unsafe name in the guest filesystem; left out");
                            continue;
                        }
                        stack.push((child, join(&rel, &e.name), depth + 1));
                    }
                }
                Err(e) => problems.report(&rel, e),
            }
        }
    }
    w.finish()?;
    problems.into_result("tar")
}

fn read_full(tree: &GuestTree, n: Node, mut off: u64, mut buf: &mut [u8]) -> guestfs::Result<()> {
    while !buf.is_empty() {
        let got = tree.read(n, off, buf)?;
        if got == 0 {
            return Err(guestfs::Error::corrupt(Path::new("file"), "file content", off, "file shorter than its size"));
        }
        off += got as u64;
        buf = &mut buf[got..];
    }
    Ok(())
}

fn tar_entry(tree: &GuestTree, n: Node, st: &Stat, rel: &[u8], links: &mut HashMap<Node, Vec<u8>>) -> Result<Entry> {
    let kind = match st.kind {
        FileKind::Dir => EntryKind::Dir,
        FileKind::Symlink => EntryKind::Symlink(tree.readlink(n)?),
        FileKind::CharDevice => EntryKind::CharDevice(dev_major(st.rdev), dev_minor(st.rdev)),
        FileKind::BlockDevice => EntryKind::BlockDevice(dev_major(st.rdev), dev_minor(st.rdev)),
        FileKind::Fifo => EntryKind::Fifo,
        FileKind::Socket => bail!("socket: not archived (as GNU tar)"),
        FileKind::File => {
            if st.nlink > 1 {
                if let Some(first) = links.get(&n) {
                    EntryKind::HardLink(first.clone())
                } else {
                    links.insert(n, rel.to_vec());
                    EntryKind::File
                }
            } else {
                EntryKind::File
            }
        }
    };
    let is_file = kind == EntryKind::File;
    let sparse = if is_file { Some(tree.data_ranges(n)?) } else { None };
    if is_file && st.size > 0 {
        // Fail before the header is written for files that cannot be read at
        // all (undecodable compression, unsupported reparse points...).
        let mut probe = [0u8; 1];
        tree.read(n, 0, &mut probe)?;
    }
    let xattrs = tree.xattrs(n)?.into_iter().map(|x| (x.name, x.value)).collect();
    Ok(Entry {
        path: rel.to_vec(),
        kind,
        size: if is_file { st.size } else { 0 },
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        mtime_secs: st.mtime.secs,
        mtime_nanos: st.mtime.nanos,
        xattrs,
        sparse,
    })
}

fn dev_major(rdev: u64) -> u32 {
    (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff)) as u32
}

fn dev_minor(rdev: u64) -> u32 {
    (((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff)) as u32
}

// ---------------------------------------------------------------- cp

pub fn cp(sources: &[PathBuf], path: &str, dest: &Path) -> Result<()> {
    let tree = open_tree(sources)?;
    let node = tree.resolve(path, true).with_context(|| format!("{path}: not found"))?;
    let name = path.rsplit('/').find(|s| !s.is_empty() && *s != "." && *s != "..").unwrap_or("root").as_bytes().to_vec();
    let (dir, target_name) = if dest.is_dir() {
        (dest.to_owned(), name)
    } else {
        let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let file = dest.file_name().context("DEST has no file name")?;
        use std::os::unix::ffi::OsStrExt;
        (parent.to_owned(), file.as_bytes().to_vec())
    };
    let mut problems = Problems::default();
    crate::restore::restore(&tree, node, &dir, &target_name, &mut problems)?;
    problems.into_result("cp")
}

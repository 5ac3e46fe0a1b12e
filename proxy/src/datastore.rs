//! `vbproxy datastore ls [-l] [--json] SOURCE [PATH]`: the files of a
//! datastore (VMFS, NTFS or ext4 volume on a device, LUN or image; or a
//! local directory, an NFS datastore mounted by the OS).

use crate::guest::{kind_name, printable, utc_time};
use crate::source;
use anyhow::{bail, Context, Result};
use guestfs::fs::{FileKind, Stat};
use std::io::Write;
use std::path::Path;

/// One listed entry: the fields of DESIGN.md's `datastore ls --json`.
struct Item {
    name: Vec<u8>,
    kind: FileKind,
    size: u64,
    mode: u32,
    mtime: i64,
    target: Option<Vec<u8>>,
}

impl Item {
    fn from_stat(name: Vec<u8>, st: &Stat, target: Option<Vec<u8>>) -> Item {
        Item { name, kind: st.kind, size: st.size, mode: st.mode, mtime: st.mtime.secs, target }
    }
}

/// Entries of a datastore directory (or the one entry a file path names),
/// and a header describing the datastore.
fn list_store(spec: &str, path: &str) -> Result<(String, Vec<Item>)> {
    let store = source::open_store(spec)?;
    let ds = &store.ds;
    let header = format!(
        "datastore {}: {} label {} uuid {} volume {}",
        spec,
        ds.kind,
        ds.label.as_deref().unwrap_or("-"),
        ds.uuid.as_deref().unwrap_or("-"),
        ds.volume
    );
    let ns = store.namespace();
    let full = ns.name_of(path);
    let id = ns.lookup(&full).with_context(|| format!("{}: not found", full.display()))?;
    let fs = &ds.fs;
    let st = fs.stat(id)?;
    let readlink = |id, st: &Stat| if st.kind == FileKind::Symlink { fs.readlink(id).ok() } else { None };
    if st.kind != FileKind::Dir {
        let name = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path).as_bytes().to_vec();
        return Ok((header, vec![Item::from_stat(name, &st, readlink(id, &st))]));
    }
    let mut items = Vec::new();
    for e in fs.read_dir(id).with_context(|| format!("{}: reading directory", full.display()))? {
        let st = fs.stat(e.id).with_context(|| format!("{}/{}", full.display(), printable(&e.name)))?;
        items.push(Item::from_stat(e.name, &st, readlink(e.id, &st)));
    }
    Ok((header, items))
}

/// A datastore mounted by the OS (NFS): a local directory.
fn list_local(dir: &Path, path: &str) -> Result<(String, Vec<Item>)> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let p = dir.join(path.trim_start_matches('/'));
    let header = format!("datastore {}: local directory", dir.display());
    let item = |name: Vec<u8>, p: &Path| -> Result<Item> {
        let m = std::fs::symlink_metadata(p).with_context(|| format!("{}", p.display()))?;
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            FileKind::Dir
        } else if ft.is_symlink() {
            FileKind::Symlink
        } else if ft.is_file() {
            FileKind::File
        } else {
            FileKind::Fifo
        };
        let target = ft.is_symlink().then(|| std::fs::read_link(p).ok().map(|t| t.as_os_str().as_bytes().to_vec())).flatten();
        Ok(Item { name, kind, size: m.len(), mode: m.mode() & 0o7777, mtime: m.mtime(), target })
    };
    let m = std::fs::metadata(&p).with_context(|| format!("{}: not found", p.display()))?;
    if !m.is_dir() {
        let name = p.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
        return Ok((header, vec![item(name, &p)?]));
    }
    let mut items = Vec::new();
    for e in std::fs::read_dir(&p).with_context(|| format!("{}", p.display()))? {
        let e = e?;
        items.push(item(e.file_name().as_bytes().to_vec(), &e.path())?);
    }
    Ok((header, items))
}

pub fn ls(source_arg: &str, path: Option<&str>, long: bool, json: bool) -> Result<()> {
    // `STORE#/dir` is accepted for `STORE /dir`.
    let (spec, path) = match (path, Path::new(source_arg).exists()) {
        (None, false) => match source::split_store(source_arg) {
            Some((s, p)) => (s, p),
            None => (source_arg, "/"),
        },
        (p, _) => (source_arg, p.unwrap_or("/")),
    };
    if !path.starts_with('/') {
        bail!("{path}: PATH inside the datastore must start with /");
    }
    let (header, mut items) = if Path::new(spec).is_dir() { list_local(Path::new(spec), path)? } else { list_store(spec, path)? };
    items.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        let list: Vec<_> = items
            .iter()
            .map(|i| {
                serde_json::json!({
                    "name": String::from_utf8_lossy(&i.name),
                    "type": kind_name(i.kind),
                    "size": i.size,
                    "mode": i.mode,
                    "mtime": i.mtime,
                    "target": i.target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
    } else if long {
        writeln!(out, "# {header}")?;
        for i in &items {
            let st = Stat { kind: i.kind, mode: i.mode, ..Stat::synthetic_dir(0, 0) };
            let t = i.target.as_ref().map(|t| format!(" -> {}", printable(t))).unwrap_or_default();
            writeln!(out, "{} {:>14} {:>9} {} {}{t}", crate::guest::mode_string(&st), i.size, crate::human_size(i.size), utc_time(i.mtime), printable(&i.name))?;
        }
    } else {
        for i in &items {
            writeln!(out, "{}", printable(&i.name))?;
        }
    }
    out.flush()?;
    Ok(())
}

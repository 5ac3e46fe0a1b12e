//! File trees as facts, from two sides: a directory the kernel (or
//! ntfs-3g, or a FUSE mount) shows, and a `guestfs` filesystem. Tests build
//! both and compare them entry by entry, field by field.

use guestfs::fs::{FileKind, Filesystem};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Everything a backup needs to get right about one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// `f` file, `d` dir, `l` symlink, `c`/`b` devices, `p` fifo, `s` socket.
    pub kind: char,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nanos: u32,
    pub nlink: u32,
    pub target: Option<Vec<u8>>,
    pub sha256: Option<String>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The first path (in sorted order) of this entry's hard-link group;
    /// `None` for entries with one link.
    pub link_group: Option<String>,
}

/// Path (relative, `/`-separated, no leading slash; root is "") to facts.
pub type Tree = BTreeMap<String, Facts>;

fn kind_char(k: FileKind) -> char {
    match k {
        FileKind::File => 'f',
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
    }
}

fn hash_bytes(h: Sha256) -> String {
    format!("{:x}", h.finalize())
}

/// Fills `link_group` from per-entry identities (inode numbers).
fn assign_link_groups(tree: &mut Tree, ids: &HashMap<String, u64>) {
    let mut first: HashMap<u64, String> = HashMap::new();
    for (path, facts) in tree.iter() {
        if facts.kind != 'd' && facts.nlink > 1 {
            if let Some(id) = ids.get(path) {
                first.entry(*id).or_insert_with(|| path.clone());
            }
        }
    }
    for (path, facts) in tree.iter_mut() {
        if facts.kind != 'd' && facts.nlink > 1 {
            facts.link_group = ids.get(path).and_then(|id| first.get(id)).cloned();
        }
    }
}

/// The tree under a mounted directory, read with std::fs (and the
/// kernel's xattr interface through `getfattr` when `with_xattrs`).
pub fn tree_of_dir(root: &Path, with_xattrs: bool) -> Tree {
    let mut tree = Tree::new();
    let mut ids = HashMap::new();
    walk_dir(root, root, with_xattrs, &mut tree, &mut ids);
    assign_link_groups(&mut tree, &ids);
    tree
}

fn walk_dir(root: &Path, p: &Path, with_xattrs: bool, tree: &mut Tree, ids: &mut HashMap<String, u64>) {
    let meta = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
    let ft = meta.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_file() {
        'f'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_fifo() {
        'p'
    } else {
        's'
    };
    let sha256 = (kind == 'f').then(|| {
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
        std::io::copy(&mut f, &mut h).expect("read file");
        hash_bytes(h)
    });
    let target = (kind == 'l').then(|| std::fs::read_link(p).unwrap().as_os_str().as_bytes().to_vec());
    let xattrs = if with_xattrs && kind != 'l' { xattrs_of(p) } else { BTreeMap::new() };
    ids.insert(rel.clone(), meta.ino());
    tree.insert(
        rel,
        Facts {
            kind,
            size: if kind == 'd' { 0 } else { meta.len() },
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            mtime_nanos: meta.mtime_nsec() as u32,
            nlink: meta.nlink() as u32,
            target,
            sha256,
            xattrs,
            link_group: None,
        },
    );
    if kind == 'd' {
        let mut names: Vec<_> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for n in names {
            walk_dir(root, &n, with_xattrs, tree, ids);
        }
    }
}

/// Extended attributes of a path via `getfattr -d -m - -e hex` (attr
/// package), so the test crate needs no unsafe code.
fn xattrs_of(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let out = std::process::Command::new("getfattr")
        .args(["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names"])
        .arg(p)
        .output()
        .expect("run getfattr (apt-get install attr)");
    let mut map = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((name, value)) = line.split_once('=') else { continue };
        let hex = value.trim_start_matches("0x");
        let bytes = (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect();
        map.insert(name.as_bytes().to_vec(), bytes);
    }
    map
}

/// The tree of a `guestfs` filesystem.
pub fn tree_of_fs(fs: &dyn Filesystem) -> Tree {
    let mut tree = Tree::new();
    let mut ids = HashMap::new();
    walk_fs(fs, fs.root(), String::new(), &mut tree, &mut ids, 0);
    assign_link_groups(&mut tree, &ids);
    tree
}

fn walk_fs(fs: &dyn Filesystem, id: u64, rel: String, tree: &mut Tree, ids: &mut HashMap<String, u64>, depth: usize) {
    assert!(depth < 4096, "directory depth runaway at {rel}");
    let st = fs.stat(id).unwrap_or_else(|e| panic!("stat {rel}: {e}"));
    let kind = kind_char(st.kind);
    let sha256 = (kind == 'f').then(|| {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        loop {
            let n = fs.read(id, off, &mut buf).unwrap_or_else(|e| panic!("read {rel}: {e}"));
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            off += n as u64;
        }
        assert_eq!(off, st.size, "{rel}: read {off} bytes, stat says {}", st.size);
        hash_bytes(h)
    });
    let target = (kind == 'l').then(|| fs.readlink(id).unwrap_or_else(|e| panic!("readlink {rel}: {e}")));
    let xattrs = fs.xattrs(id).unwrap_or_else(|e| panic!("xattrs {rel}: {e}")).into_iter().map(|x| (x.name, x.value)).collect();
    ids.insert(rel.clone(), st.id);
    tree.insert(
        rel.clone(),
        Facts {
            kind,
            size: if kind == 'd' { 0 } else { st.size },
            mode: st.mode & 0o7777,
            uid: st.uid,
            gid: st.gid,
            mtime: st.mtime.secs,
            mtime_nanos: st.mtime.nanos,
            nlink: st.nlink,
            target,
            sha256,
            xattrs,
            link_group: None,
        },
    );
    if kind == 'd' {
        let mut entries = fs.read_dir(id).unwrap_or_else(|e| panic!("read_dir {rel}: {e}"));
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for e in entries {
            let name = String::from_utf8(e.name.clone()).expect("test names are UTF-8");
            let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            walk_fs(fs, e.id, child, tree, ids, depth + 1);
        }
    }
}

/// Which facts a comparison checks: filesystems differ in what they store
/// (FAT has no owners, modes or links; mtime resolution varies).
#[derive(Clone, Debug)]
pub struct Compare {
    pub mode: bool,
    pub owner: bool,
    pub nlink: bool,
    pub xattrs: bool,
    /// Compare mtime nanoseconds too.
    pub nanos: bool,
    /// Paths (relative) to leave out on both sides, e.g. `lost+found`.
    pub ignore: Vec<String>,
}

impl Compare {
    pub fn everything() -> Compare {
        Compare { mode: true, owner: true, nlink: true, xattrs: true, nanos: true, ignore: Vec::new() }
    }
}

/// Asserts two trees are the same entry by entry; the message lists every
/// difference (up to 50), not only the first.
pub fn assert_same_tree(ours: &Tree, theirs: &Tree, how: &Compare) {
    let ignored = |p: &str| how.ignore.iter().any(|i| p == i || p.starts_with(&format!("{i}/")));
    let mut diffs = Vec::new();
    for (path, t) in theirs {
        if ignored(path) {
            continue;
        }
        let Some(o) = ours.get(path) else {
            diffs.push(format!("missing in ours: {path:?}"));
            continue;
        };
        let mut f = |what: &str, eq: bool, a: String, b: String| {
            if !eq {
                diffs.push(format!("{path:?}: {what}: ours {a}, theirs {b}"));
            }
        };
        f("kind", o.kind == t.kind, o.kind.to_string(), t.kind.to_string());
        f("size", o.size == t.size, o.size.to_string(), t.size.to_string());
        f("content", o.sha256 == t.sha256, format!("{:?}", o.sha256), format!("{:?}", t.sha256));
        f("target", o.target == t.target, format!("{:?}", o.target), format!("{:?}", t.target));
        f("mtime", o.mtime == t.mtime, o.mtime.to_string(), t.mtime.to_string());
        if how.nanos {
            f("mtime ns", o.mtime_nanos == t.mtime_nanos, o.mtime_nanos.to_string(), t.mtime_nanos.to_string());
        }
        if how.mode {
            f("mode", o.mode == t.mode, format!("{:o}", o.mode), format!("{:o}", t.mode));
        }
        if how.owner {
            f("owner", (o.uid, o.gid) == (t.uid, t.gid), format!("{}:{}", o.uid, o.gid), format!("{}:{}", t.uid, t.gid));
        }
        if how.nlink && o.kind != 'd' {
            f("nlink", o.nlink == t.nlink, o.nlink.to_string(), t.nlink.to_string());
            f("hard-link group", o.link_group == t.link_group, format!("{:?}", o.link_group), format!("{:?}", t.link_group));
        }
        if how.xattrs {
            f("xattrs", o.xattrs == t.xattrs, format!("{:?}", o.xattrs), format!("{:?}", t.xattrs));
        }
    }
    for path in ours.keys() {
        if !ignored(path) && !theirs.contains_key(path) {
            diffs.push(format!("extra in ours: {path:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences between trees:\n{}",
        diffs.len(),
        diffs.iter().take(50).cloned().collect::<Vec<_>>().join("\n")
    );
}

//! The guest tree of DESIGN.md: `/<disk>/<volume>/<path inside the filesystem>`.
//! Every consumer (CLI, FUSE, tar, web) walks this one tree, so they all
//! show the same names, kinds and metadata.

use crate::block::ReadAt;
use crate::fs::{open_filesystem, DirEntry, FileId, FileKind, Filesystem, FsInfo, Stat, Xattr};
use crate::volume::{find_volumes, Volume};
use crate::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;

/// Symlinks followed while resolving one path, as Linux's MAXSYMLINKS.
const MAX_SYMLINK_HOPS: usize = 40;
/// Path components accepted in one lookup (hostile guests nest deeply).
const MAX_COMPONENTS: usize = 4096;

/// A node of the guest tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    Root,
    Disk(usize),
    /// A volume: the root directory of its filesystem (or an empty
    /// directory when it carries none this crate reads).
    Volume(usize, usize),
    /// A file inside the filesystem of volume (disk, volume).
    File(usize, usize, FileId),
}

pub struct TreeVolume {
    pub volume: Volume,
    /// The filesystem, `None` when no known signature was found, or why it
    /// could not be opened.
    pub fs: std::result::Result<Option<Box<dyn Filesystem>>, Error>,
}

pub struct TreeDisk {
    pub name: String,
    pub volumes: Vec<TreeVolume>,
    /// Volumes (or tables) that could not be used, and why.
    pub errors: Vec<(String, Error)>,
}

pub struct GuestTree {
    pub disks: Vec<TreeDisk>,
}

fn dir_stat(id: FileId) -> Stat {
    Stat::synthetic_dir(id, 0o555)
}

impl GuestTree {
    /// Builds the tree of the given disks (name, bytes): finds their
    /// volumes and opens the filesystems on them.
    pub fn open(disks: Vec<(String, Arc<dyn ReadAt>)>) -> Result<GuestTree> {
        let sources: Vec<Arc<dyn ReadAt>> = disks.iter().map(|d| d.1.clone()).collect();
        let found = find_volumes(&sources)?;
        let mut out = Vec::new();
        for ((name, _), dv) in disks.into_iter().zip(found) {
            let volumes = dv
                .volumes
                .into_iter()
                .map(|volume| {
                    let fs = open_filesystem(volume.source.clone(), &format!("{name}/{}", volume.id));
                    if let Err(e) = &fs {
                        tracing::warn!("{name}/{}: {e}", volume.id);
                    }
                    TreeVolume { volume, fs }
                })
                .collect();
            out.push(TreeDisk { name, volumes, errors: dv.errors });
        }
        Ok(GuestTree { disks: out })
    }

    /// The filesystem of a volume, or why there is none to read.
    pub fn fs(&self, disk: usize, vol: usize) -> Result<&dyn Filesystem> {
        let d = self.disks.get(disk).ok_or_else(|| not_found(&format!("disk #{disk}")))?;
        let v = d.volumes.get(vol).ok_or_else(|| not_found(&format!("{}/volume #{vol}", d.name)))?;
        match &v.fs {
            Ok(Some(fs)) => Ok(&**fs),
            Ok(None) => Err(Error::unsupported(
                &PathBuf::from(format!("{}/{}", d.name, v.volume.id)),
                "volume",
                v.volume.start,
                format!("no filesystem this version reads (partition type {})", v.volume.part_type),
            )),
            Err(e) => Err(Error::corrupt(
                &PathBuf::from(format!("{}/{}", d.name, v.volume.id)),
                "filesystem",
                v.volume.start,
                e.to_string(),
            )),
        }
    }

    /// The displayed path of a node's volume, for messages: `disk0/p1`.
    pub fn volume_name(&self, disk: usize, vol: usize) -> String {
        match self.disks.get(disk) {
            Some(d) => match d.volumes.get(vol) {
                Some(v) => format!("{}/{}", d.name, v.volume.id),
                None => d.name.clone(),
            },
            None => String::new(),
        }
    }

    /// Info of a volume's filesystem, if it has one.
    pub fn fs_info(&self, disk: usize, vol: usize) -> Option<FsInfo> {
        self.fs(disk, vol).ok().map(|f| f.info())
    }

    /// Resolves a guest path. With a single disk, the `/<disk>` level may
    /// be omitted (`/p1/Windows`). Symlinks inside a filesystem are
    /// followed, resolved against that filesystem's root, except the last
    /// component when `follow_last` is false (`ls -l`, `tar`). `..` is
    /// resolved on the path walked so far, never above the tree root.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<Node> {
        let split = |p: &[u8]| -> Vec<Vec<u8>> {
            p.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").map(|c| c.to_vec()).collect()
        };
        let mut comps = split(path.as_bytes());
        if self.disks.len() == 1 && comps.first().is_some_and(|c| *c != self.disks[0].name.as_bytes()) {
            comps.insert(0, self.disks[0].name.as_bytes().to_vec());
        }
        // Remaining components, next one last, so symlink targets can be
        // pushed in front of what is left.
        comps.reverse();
        let mut stack = vec![Node::Root];
        let mut hops = 0;
        while let Some(c) = comps.pop() {
            if comps.len() > MAX_COMPONENTS {
                return Err(not_found(path));
            }
            let here = *stack.last().unwrap_or(&Node::Root);
            if c == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let next = self.child(here, &c)?.ok_or_else(|| not_found(path))?;
            if let Node::File(d, v, id) = next {
                let fs = self.fs(d, v)?;
                if fs.stat(id)?.kind == FileKind::Symlink && (!comps.is_empty() || follow_last) {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(Error::corrupt(&PathBuf::from(path), "symbolic link", 0, "too many levels of symbolic links"));
                    }
                    let target = fs.readlink(id)?;
                    if target.starts_with(b"/") {
                        stack = vec![Node::Root, Node::Disk(d), Node::Volume(d, v)];
                    }
                    let mut t = split(&target);
                    t.reverse();
                    comps.extend(t);
                    continue;
                }
            }
            stack.push(next);
        }
        Ok(*stack.last().unwrap_or(&Node::Root))
    }

    fn child(&self, node: Node, name: &[u8]) -> Result<Option<Node>> {
        Ok(match node {
            Node::Root => self.disks.iter().position(|d| d.name.as_bytes() == name).map(Node::Disk),
            Node::Disk(d) => self.disks[d].volumes.iter().position(|v| v.volume.id.as_bytes() == name).map(|v| Node::Volume(d, v)),
            Node::Volume(d, v) => {
                let fs = self.fs(d, v)?;
                fs.lookup(fs.root(), name)?.map(|id| Node::File(d, v, id))
            }
            Node::File(d, v, id) => {
                let fs = self.fs(d, v)?;
                if fs.stat(id)?.kind != FileKind::Dir {
                    return Ok(None);
                }
                fs.lookup(id, name)?.map(|id| Node::File(d, v, id))
            }
        })
    }

    pub fn stat(&self, node: Node) -> Result<Stat> {
        match node {
            Node::Root => Ok(dir_stat(0)),
            Node::Disk(d) => Ok(dir_stat(d as u64)),
            Node::Volume(d, v) => match self.fs(d, v) {
                Ok(fs) => fs.stat(fs.root()),
                Err(_) => Ok(dir_stat(v as u64)),
            },
            Node::File(d, v, id) => self.fs(d, v)?.stat(id),
        }
    }

    /// Entries of a directory node, with their nodes.
    pub fn read_dir(&self, node: Node) -> Result<Vec<(DirEntry, Node)>> {
        let synth = |name: &str, id: u64, n: Node| (DirEntry { name: name.as_bytes().to_vec(), id, kind: FileKind::Dir }, n);
        match node {
            Node::Root => Ok(self.disks.iter().enumerate().map(|(i, d)| synth(&d.name, i as u64, Node::Disk(i))).collect()),
            Node::Disk(d) => Ok(self.disks[d]
                .volumes
                .iter()
                .enumerate()
                .map(|(i, v)| synth(&v.volume.id, i as u64, Node::Volume(d, i)))
                .collect()),
            Node::Volume(d, v) => {
                let fs = self.fs(d, v)?;
                Ok(fs.read_dir(fs.root())?.into_iter().map(|e| (Node::File(d, v, e.id), e)).map(|(n, e)| (e, n)).collect())
            }
            Node::File(d, v, id) => {
                let fs = self.fs(d, v)?;
                Ok(fs.read_dir(id)?.into_iter().map(|e| (Node::File(d, v, e.id), e)).map(|(n, e)| (e, n)).collect())
            }
        }
    }

    pub fn read(&self, node: Node, offset: u64, buf: &mut [u8]) -> Result<usize> {
        match node {
            Node::File(d, v, id) => self.fs(d, v)?.read(id, offset, buf),
            _ => Err(Error::unsupported(&PathBuf::from("/"), "directory", 0, "is a directory")),
        }
    }

    pub fn readlink(&self, node: Node) -> Result<Vec<u8>> {
        match node {
            Node::File(d, v, id) => self.fs(d, v)?.readlink(id),
            _ => Err(Error::unsupported(&PathBuf::from("/"), "directory", 0, "not a symbolic link")),
        }
    }

    pub fn xattrs(&self, node: Node) -> Result<Vec<Xattr>> {
        match node {
            Node::File(d, v, id) => self.fs(d, v)?.xattrs(id),
            Node::Volume(d, v) => match self.fs(d, v) {
                Ok(fs) => fs.xattrs(fs.root()),
                Err(_) => Ok(Vec::new()),
            },
            _ => Ok(Vec::new()),
        }
    }

    pub fn data_ranges(&self, node: Node) -> Result<Vec<(u64, u64)>> {
        match node {
            Node::File(d, v, id) => self.fs(d, v)?.data_ranges(id),
            _ => Ok(Vec::new()),
        }
    }
}

fn not_found(path: &str) -> Error {
    Error::Open { path: PathBuf::from(path), source: std::io::ErrorKind::NotFound.into() }
}

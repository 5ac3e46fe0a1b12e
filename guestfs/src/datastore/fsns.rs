//! A [`Namespace`] over a [`Filesystem`]: disk files found by path inside a
//! datastore, so descriptors, extents and parents resolve there exactly as
//! on the local filesystem.
//!
//! Paths handed out and accepted are `PREFIX/dir/file` (the prefix is the
//! caller's name for the datastore, e.g. `/dev/sdc#`), so that every error
//! message names the datastore as well as the file, and relative names
//! written in a disk resolve against the referring file's directory by the
//! usual path rules.

use crate::block::ReadAt;
use crate::fs::{FileId, FileKind, Filesystem};
use crate::namespace::Namespace;
use crate::{Error, Result};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Symlinks followed while resolving one path, as Linux's MAXSYMLINKS.
const MAX_SYMLINK_HOPS: usize = 40;
/// Components accepted in one path.
const MAX_COMPONENTS: usize = 4096;

#[derive(Clone)]
pub struct FsNamespace {
    fs: Arc<dyn Filesystem>,
    prefix: String,
    /// Names under which ESX paths `/vmfs/volumes/<name>/...` mean this
    /// datastore (its label, its UUID, the inventory name).
    aliases: Vec<String>,
}

impl FsNamespace {
    pub fn new(fs: Arc<dyn Filesystem>, prefix: impl Into<String>, aliases: Vec<String>) -> FsNamespace {
        FsNamespace { fs, prefix: prefix.into(), aliases }
    }

    /// The full name of a path inside the datastore (`PREFIX/dir/file`).
    pub fn name_of(&self, inner: &str) -> PathBuf {
        PathBuf::from(format!("{}{inner}", self.prefix))
    }

    /// The path inside the datastore that `path` names, if it is in this
    /// datastore at all.
    pub fn inner<'a>(&self, path: &'a Path) -> Option<&'a str> {
        let s = path.to_str()?;
        if let Some(rest) = s.strip_prefix(self.prefix.as_str()) {
            if rest.starts_with('/') || rest.is_empty() {
                return Some(rest);
            }
        }
        let rest = s.strip_prefix("/vmfs/volumes/")?;
        let (vol, rest) = rest.split_once('/')?;
        self.aliases.iter().any(|a| a == vol).then_some(rest)
    }

    fn not_found(path: &Path) -> Error {
        Error::Open { path: path.to_owned(), source: io::ErrorKind::NotFound.into() }
    }

    /// Resolves a path to a file id, following symlinks (resolved inside
    /// the datastore, absolute ones from its root).
    pub fn lookup(&self, path: &Path) -> Result<FileId> {
        let inner = self.inner(path).ok_or_else(|| Self::not_found(path))?;
        let split = |p: &[u8]| -> Vec<Vec<u8>> {
            p.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").map(<[u8]>::to_vec).collect()
        };
        let mut comps = split(inner.as_bytes());
        comps.reverse();
        let root = self.fs.root();
        let mut stack = vec![root];
        let mut hops = 0;
        while let Some(c) = comps.pop() {
            if comps.len() > MAX_COMPONENTS {
                return Err(Self::not_found(path));
            }
            if c == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let here = *stack.last().unwrap_or(&root);
            if self.fs.stat(here)?.kind != FileKind::Dir {
                return Err(Self::not_found(path));
            }
            let next = self.fs.lookup(here, &c)?.ok_or_else(|| Self::not_found(path))?;
            if self.fs.stat(next)?.kind == FileKind::Symlink {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(Error::corrupt(path, "symbolic link", 0, "too many levels of symbolic links"));
                }
                let target = self.fs.readlink(next)?;
                if target.starts_with(b"/") {
                    stack.truncate(1);
                }
                let mut t = split(&target);
                t.reverse();
                comps.extend(t);
                continue;
            }
            stack.push(next);
        }
        Ok(*stack.last().unwrap_or(&root))
    }
}

impl Namespace for FsNamespace {
    fn open(&self, path: &Path) -> Result<Arc<dyn ReadAt>> {
        let id = self.lookup(path)?;
        let st = self.fs.stat(id)?;
        if st.kind != FileKind::File {
            return Err(Error::Open { path: path.to_owned(), source: io::Error::other("not a regular file") });
        }
        Ok(Arc::new(FsFile { fs: self.fs.clone(), id, size: st.size, path: path.to_owned() }))
    }

    fn exists(&self, path: &Path) -> bool {
        self.lookup(path).and_then(|id| self.fs.stat(id)).is_ok_and(|st| st.kind != FileKind::Dir)
    }

    fn identity(&self, path: &Path) -> Result<PathBuf> {
        Ok(PathBuf::from(format!("{}@{}", self.prefix, self.lookup(path)?)))
    }
}

/// A file inside a datastore as a byte source.
pub struct FsFile {
    fs: Arc<dyn Filesystem>,
    id: FileId,
    size: u64,
    path: PathBuf,
}

impl ReadAt for FsFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or(io::ErrorKind::UnexpectedEof)?;
        if end > self.size {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut done = 0usize;
        while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
            let at = offset + done as u64;
            let n = self.fs.read(self.id, at, rest).map_err(io::Error::other)?;
            if n == 0 {
                // The filesystem ended the file early: never pad with zeros.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: file content ends at {at} bytes, its size is {}", self.path.display(), self.size),
                ));
            }
            done += n.min(rest.len());
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }
}

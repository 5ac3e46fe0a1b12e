//! Where disk files are found: a [`Namespace`] opens files by path, so that
//! a VMDK descriptor's extents and a differencing disk's parent resolve the
//! same way on the local filesystem, inside a datastore read from a LUN, or
//! in memory (fuzzing).

use crate::block::{FileSource, ReadAt};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub trait Namespace: Send + Sync {
    /// Opens a file read-only.
    fn open(&self, path: &Path) -> Result<Arc<dyn ReadAt>>;

    /// Whether a file exists at `path` (used to try parent-locator candidates).
    fn exists(&self, path: &Path) -> bool;

    /// A name that is the same for every path of the same file, used to
    /// detect loops in parent chains (`a -> ./b -> ../x/a`).
    fn identity(&self, path: &Path) -> Result<PathBuf>;
}

/// The local filesystem.
pub struct LocalFs;

impl Namespace for LocalFs {
    fn open(&self, path: &Path) -> Result<Arc<dyn ReadAt>> {
        Ok(Arc::new(FileSource::open(path)?))
    }

    fn exists(&self, path: &Path) -> bool {
        path.is_file() || path.metadata().map(|m| !m.is_dir()).unwrap_or(false)
    }

    fn identity(&self, path: &Path) -> Result<PathBuf> {
        std::fs::canonicalize(path).map_err(|source| Error::Open { path: path.to_owned(), source })
    }
}

/// Files held in memory by name: fuzz targets and unit tests.
#[derive(Default)]
pub struct MemFs {
    pub files: std::collections::HashMap<PathBuf, Arc<dyn ReadAt>>,
}

impl MemFs {
    pub fn with(mut self, path: impl Into<PathBuf>, data: Vec<u8>) -> MemFs {
        self.files.insert(path.into(), Arc::new(crate::block::MemSource(data)));
        self
    }
}

impl Namespace for MemFs {
    fn open(&self, path: &Path) -> Result<Arc<dyn ReadAt>> {
        self.files.get(path).cloned().ok_or_else(|| Error::Open {
            path: path.to_owned(),
            source: std::io::ErrorKind::NotFound.into(),
        })
    }

    fn exists(&self, path: &Path) -> bool {
        self.files.contains_key(path)
    }

    fn identity(&self, path: &Path) -> Result<PathBuf> {
        Ok(path.to_owned())
    }
}

/// Resolves a path written inside a disk file (an extent name, a parent
/// hint) against the directory of the file that names it. Windows-style
/// separators are accepted because Hyper-V and VMware Workstation on Windows
/// write them.
pub fn resolve_relative(referrer: &Path, name: &str) -> PathBuf {
    let name = name.replace('\\', "/");
    let p = Path::new(&name);
    if p.is_absolute() {
        return p.to_owned();
    }
    referrer.parent().unwrap_or(Path::new("")).join(p)
}

/// One byte source under one name: a LUN or block device read as a whole
/// disk, where there is no directory to find other files in.
pub struct SingleSource {
    pub name: PathBuf,
    pub source: Arc<dyn ReadAt>,
}

impl Namespace for SingleSource {
    fn open(&self, path: &Path) -> Result<Arc<dyn ReadAt>> {
        if path == self.name {
            Ok(self.source.clone())
        } else {
            Err(Error::Open { path: path.to_owned(), source: std::io::ErrorKind::NotFound.into() })
        }
    }

    fn exists(&self, path: &Path) -> bool {
        path == self.name
    }

    fn identity(&self, path: &Path) -> Result<PathBuf> {
        Ok(path.to_owned())
    }
}

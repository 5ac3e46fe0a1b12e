//! Block sources: positional, thread-safe, read-only byte sources.
//!
//! A [`ReadAt`] is the narrowest interface every upper layer needs: read
//! bytes at an offset, know the size. There is deliberately no write method
//! anywhere in this module, and [`FileSource::open`] opens read-only.

use crate::{Error, Result};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A positional, read-only byte source.
pub trait ReadAt: Send + Sync {
    /// Fills `buf` from `offset`. A read that runs past the end is an error
    /// (`UnexpectedEof`), never a short read.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Size in bytes.
    fn size(&self) -> u64;

    /// Where the host knows it: whether `offset` lies in data or in a hole,
    /// and how many bytes from `offset` are the same. Sources that cannot
    /// tell return `None` and callers treat everything as data.
    fn extent_at(&self, _offset: u64) -> Option<(bool, u64)> {
        None
    }
}

/// A regular file or a block device, opened read-only.
pub struct FileSource {
    file: File,
    size: u64,
}

impl FileSource {
    /// Opens `path` read-only. Block devices report their size via seeking to
    /// the end, which needs no ioctl.
    pub fn open(path: &Path) -> Result<FileSource> {
        let open_err = |source| Error::Open { path: path.to_owned(), source };
        // Block devices are opened by the LUN layer only (vbproxy's
        // lun::device), which sets the kernel read-only flag first and
        // wraps the fd with `from_file`. Checked before opening, so no
        // device is ever opened here.
        {
            use std::os::unix::fs::FileTypeExt;
            if std::fs::metadata(path).map_err(open_err)?.file_type().is_block_device() {
                return Err(open_err(io::Error::other(
                    "is a block device: open it through the LUN layer (vbproxy lun::device), which sets it read-only first",
                )));
            }
        }
        // Read-only is the only mode this crate ever uses.
        let file = File::options().read(true).open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        let size = if meta.file_type().is_file() {
            meta.len()
        } else {
            use std::io::{Seek, SeekFrom};
            (&file).seek(SeekFrom::End(0)).map_err(open_err)?
        };
        Ok(FileSource { file, size })
    }
}

impl FileSource {
    /// Wraps a file the caller already opened read-only (the LUN layer's
    /// block devices), with its size as the caller measured it.
    pub fn from_file(file: File, size: u64) -> FileSource {
        FileSource { file, size }
    }
}

impl ReadAt for FileSource {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn extent_at(&self, offset: u64) -> Option<(bool, u64)> {
        use rustix::fs::{seek, SeekFrom};
        if offset >= self.size {
            return None;
        }
        // SEEK_DATA from inside data returns the offset itself; from inside a
        // hole, the start of the next data (ENXIO: none up to the end).
        let data = match seek(&self.file, SeekFrom::Data(offset)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => self.size,
            Err(_) => return None,
        };
        if data > offset {
            return Some((false, data.min(self.size) - offset));
        }
        let hole = seek(&self.file, SeekFrom::Hole(offset)).ok()?;
        Some((true, hole.min(self.size).saturating_sub(offset).max(1)))
    }
}

/// An in-memory source, for fuzzing and unit tests.
pub struct MemSource(pub Vec<u8>);

impl ReadAt for MemSource {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start.checked_add(buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = self.0.get(start..end).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.0.len() as u64
    }
}

/// A byte range of another source (a partition, a file inside a datastore).
pub struct SliceSource {
    inner: Arc<dyn ReadAt>,
    start: u64,
    len: u64,
}

impl SliceSource {
    /// `None` when the range does not lie inside `inner`.
    pub fn new(inner: Arc<dyn ReadAt>, start: u64, len: u64) -> Option<SliceSource> {
        (start.checked_add(len)? <= inner.size()).then_some(SliceSource { inner, start, len })
    }
}

impl ReadAt for SliceSource {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or(io::ErrorKind::UnexpectedEof)?;
        if end > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.inner.read_exact_at(buf, self.start + offset)
    }

    fn size(&self) -> u64 {
        self.len
    }

    fn extent_at(&self, offset: u64) -> Option<(bool, u64)> {
        let (data, n) = self.inner.extent_at(self.start.checked_add(offset)?)?;
        Some((data, n.min(self.len.checked_sub(offset)?)))
    }
}

/// A source together with the path it came from: the handle every format
/// parser reads through, so that every error names the file, the structure
/// and the offset.
#[derive(Clone)]
pub struct ImageFile {
    pub src: Arc<dyn ReadAt>,
    pub path: PathBuf,
}

impl ImageFile {
    pub fn new(src: Arc<dyn ReadAt>, path: impl Into<PathBuf>) -> ImageFile {
        ImageFile { src, path: path.into() }
    }

    pub fn size(&self) -> u64 {
        self.src.size()
    }

    /// Reads `buf.len()` bytes of `structure` at `offset`; a structure that
    /// would extend past the end of the file is [`Error::Truncated`].
    pub fn read(&self, structure: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        let file_size = self.src.size();
        if offset.checked_add(len).is_none_or(|end| end > file_size) {
            return Err(Error::Truncated { path: self.path.clone(), structure: structure.into(), offset, len, file_size });
        }
        self.src.read_exact_at(buf, offset).map_err(|source| Error::Io {
            path: self.path.clone(),
            structure: structure.into(),
            offset,
            source,
        })
    }

    /// Reads a structure of `len` bytes into a new buffer. The length is
    /// checked against the file size before anything is allocated, so a
    /// hostile length cannot make us allocate more than the file holds.
    pub fn read_vec(&self, structure: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let file_size = self.src.size();
        if offset.checked_add(len).is_none_or(|end| end > file_size) {
            return Err(Error::Truncated { path: self.path.clone(), structure: structure.into(), offset, len, file_size });
        }
        let mut buf = vec![0u8; len as usize];
        self.read(structure, offset, &mut buf)?;
        Ok(buf)
    }

    pub fn corrupt(&self, structure: &str, offset: u64, reason: impl Into<String>) -> Error {
        Error::corrupt(&self.path, structure, offset, reason)
    }

    pub fn unsupported(&self, structure: &str, offset: u64, reason: impl Into<String>) -> Error {
        Error::unsupported(&self.path, structure, offset, reason)
    }
}

//! Guest filesystems behind one read-only interface. Every consumer (CLI,
//! FUSE, tar, web) sees a filesystem only through [`Filesystem`], so they
//! all show the same tree with the same metadata.

pub mod ext4;
pub mod fat;
pub mod ntfs;

use crate::block::ReadAt;
use crate::Result;
use std::sync::Arc;

/// Identifies a file within one filesystem (an inode number, an MFT
/// record number, a FAT directory-entry position...). Stable for the life
/// of the open filesystem; equal ids mean the same file (hard links).
pub type FileId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// A point in time: seconds since the Unix epoch (may be negative) and
/// nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub id: FileId,
    pub kind: FileKind,
    /// Bytes of content (for symlinks, the target length).
    pub size: u64,
    /// Permission bits and set-id/sticky bits (`0o7777`), without the type.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// Creation time where the filesystem records one.
    pub btime: Option<Timestamp>,
    /// Device number for device nodes (Linux `makedev` encoding).
    pub rdev: u64,
}

impl Stat {
    /// A directory with no stored metadata (the guest tree's disk and
    /// volume levels, FAT's root): owned by root, times zero.
    pub fn synthetic_dir(id: FileId, mode: u32) -> Stat {
        Stat {
            id,
            kind: FileKind::Dir,
            size: 0,
            mode,
            uid: 0,
            gid: 0,
            nlink: 2,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            btime: None,
            rdev: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The name as stored; NTFS/FAT UTF-16 names are converted to UTF-8.
    /// Never `.` or `..`; never contains `/` or NUL as stored by a sane
    /// filesystem, but consumers must still treat it as hostile.
    pub name: Vec<u8>,
    pub id: FileId,
    pub kind: FileKind,
}

/// Extended attributes (ext4 xattrs, NTFS alternate data streams exposed
/// as `user.` or named streams): name and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Filesystem-wide facts for `inspect`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsInfo {
    /// `ntfs`, `ext2`, `ext3`, `ext4`, `vfat` (FAT12/16/32).
    pub kind: String,
    pub label: Option<String>,
    pub uuid: Option<String>,
    pub block_size: u32,
    pub total_bytes: u64,
    pub used_bytes: Option<u64>,
}

/// A read-only filesystem.
pub trait Filesystem: Send + Sync {
    fn info(&self) -> FsInfo;

    fn root(&self) -> FileId;

    fn stat(&self, id: FileId) -> Result<Stat>;

    /// The entries of directory `id`, without `.` and `..`.
    fn read_dir(&self, id: FileId) -> Result<Vec<DirEntry>>;

    /// Finds `name` in directory `dir`. The default scans `read_dir`;
    /// filesystems with indexed directories override it.
    fn lookup(&self, dir: FileId, name: &[u8]) -> Result<Option<FileId>> {
        Ok(self.read_dir(dir)?.into_iter().find(|e| e.name == name).map(|e| e.id))
    }

    /// Reads file content at `offset`; returns the bytes read (0 at or past
    /// the end). Never returns bytes that are not the file's content: a
    /// compressed or encrypted file that cannot be decoded is an error.
    fn read(&self, id: FileId, offset: u64, buf: &mut [u8]) -> Result<usize>;

    /// The target of a symlink (as stored; NTFS reparse targets converted
    /// to a `/`-separated path where meaningful).
    fn readlink(&self, id: FileId) -> Result<Vec<u8>>;

    /// Extended attributes / alternate data streams. Default: none.
    fn xattrs(&self, _id: FileId) -> Result<Vec<Xattr>> {
        Ok(Vec::new())
    }

    /// Ranges of the file that hold data, for sparse-aware consumers
    /// (`(offset, length)`, sorted). Default: the whole file is data.
    fn data_ranges(&self, id: FileId) -> Result<Vec<(u64, u64)>> {
        let size = self.stat(id)?.size;
        Ok(if size == 0 { Vec::new() } else { vec![(0, size)] })
    }
}

/// Probes `src` (a volume) for a filesystem this crate reads. `Ok(None)`
/// when no known signature is present; an error when a signature is
/// present but the filesystem cannot be opened. `name` is used in errors
/// (e.g. `disk0/p1`).
pub fn open_filesystem(src: Arc<dyn ReadAt>, name: &str) -> Result<Option<Box<dyn Filesystem>>> {
    if let Some(fs) = ntfs::probe(src.clone(), name)? {
        return Ok(Some(fs));
    }
    if let Some(fs) = ext4::probe(src.clone(), name)? {
        return Ok(Some(fs));
    }
    fat::probe(src, name)
}

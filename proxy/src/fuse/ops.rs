//! The FUSE operations over the guest tree: lookups, attributes,
//! directory listings, reads, symlinks and xattrs; every operation that
//! would change something answers EROFS.

use super::attr::{file_attr, file_type};
use super::bufpool::BufPool;
use super::inode::Inodes;
use super::names::Names;
use fuser::{
    AccessFlags, Errno, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use guestfs::fs::{DirEntry, FileKind, Stat};
use guestfs::tree::{GuestTree, Node};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How long the kernel may trust names and attributes: the source does
/// not change while it is mounted (snapshots, images), so a long time.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Largest read and write request asked of the kernel (it caps them at
/// `fs.fuse.max_pages_limit`, 1 MiB by default).
pub const MAX_IO: u32 = 1 << 20;
/// `O_TRUNC` on Linux.
const O_TRUNC: i32 = 0o1000;

/// A directory's entries, read once at `opendir` and served from memory
/// to the `readdir` calls that page through it.
type Listing = Vec<(DirEntry, Node)>;

pub struct GuestFs {
    tree: Arc<GuestTree>,
    inodes: Inodes,
    names: Names,
    dirs: Mutex<HashMap<u64, Arc<Listing>>>,
    next_fh: AtomicU64,
    bufs: BufPool,
    /// FOPEN_KEEP_CACHE (the content never changes, so the page cache
    /// stays valid across opens) or FOPEN_DIRECT_IO (`--direct-io`).
    open_flags: FopenFlags,
}


impl GuestFs {
    pub fn new(tree: Arc<GuestTree>, direct_io: bool) -> anyhow::Result<GuestFs> {
        let inodes = Inodes::new(&tree)?;
        Ok(GuestFs {
            tree,
            inodes,
            names: Names::default(),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            bufs: BufPool::new(MAX_IO as usize),
            open_flags: if direct_io { FopenFlags::FOPEN_DIRECT_IO } else { FopenFlags::FOPEN_KEEP_CACHE },
        })
    }

    fn node(&self, ino: INodeNo) -> Result<Node, Errno> {
        self.inodes.node(ino.0).ok_or(Errno::ENOENT)
    }

    /// Logs a guest error with the file it concerns and maps it to errno:
    /// a missing name is ENOENT, everything else (corrupt structures,
    /// unsupported features, I/O errors on the source) is EIO.
    fn fail(&self, ino: u64, what: &str, e: guestfs::Error) -> Errno {
        if let guestfs::Error::Open { source, .. } = &e {
            if source.kind() == std::io::ErrorKind::NotFound {
                return Errno::ENOENT;
            }
        }
        tracing::error!("{}: {what}: {e}", self.names.path(ino));
        Errno::EIO
    }

    fn attr_of(&self, ino: u64, node: Node) -> Result<fuser::FileAttr, Errno> {
        let st = self.tree.stat(node).map_err(|e| self.fail(ino, "stat", e))?;
        let allocated = self.allocated(ino, node, &st);
        Ok(file_attr(ino, &st, allocated))
    }

    /// Bytes of data the file holds, for `st_blocks`.
    fn allocated(&self, ino: u64, node: Node, st: &Stat) -> u64 {
        if st.kind != FileKind::File {
            return st.size;
        }
        match self.tree.data_ranges(node) {
            Ok(r) => r.iter().fold(0u64, |a, (_, len)| a.saturating_add(*len)),
            Err(e) => {
                // Not worth failing `stat` over: the read will say what is wrong.
                tracing::warn!("{}: data ranges: {e}", self.names.path(ino));
                st.size
            }
        }
    }

    /// The child called `name` of directory `node`, as `GuestTree` walks.
    fn child(&self, node: Node, name: &[u8]) -> guestfs::Result<Option<Node>> {
        Ok(match node {
            Node::Root => self.tree.disks.iter().position(|d| d.name.as_bytes() == name).map(Node::Disk),
            Node::Disk(d) => self
                .tree
                .disks
                .get(d)
                .and_then(|disk| disk.volumes.iter().position(|v| v.volume.id.as_bytes() == name))
                .map(|v| Node::Volume(d, v)),
            Node::Volume(d, v) => {
                let fs = self.tree.fs(d, v)?;
                fs.lookup(fs.root(), name)?.map(|id| Node::File(d, v, id))
            }
            Node::File(d, v, id) => {
                let fs = self.tree.fs(d, v)?;
                fs.lookup(id, name)?.map(|id| Node::File(d, v, id))
            }
        })
    }

    fn listing(&self, ino: u64, node: Node) -> Result<Arc<Listing>, Errno> {
        let mut entries = self.tree.read_dir(node).map_err(|e| self.fail(ino, "reading the directory", e))?;
        let before = entries.len();
        entries.retain(|(e, _)| safe_name(&e.name));
        if entries.len() != before {
            tracing::warn!("{}: {} entries with names Linux cannot show were left out", self.names.path(ino), before - entries.len());
        }
        Ok(Arc::new(entries))
    }

    /// Reads `size` bytes at `offset` (fewer only at the end of the file).
    fn read_into(&self, ino: u64, node: Node, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset.saturating_add(done as u64);
            let n = self.tree.read(node, at, &mut buf[done..]).map_err(|e| self.fail(ino, &format!("read at offset {at}"), e))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        if done < buf.len() {
            // A short read ends the file for the kernel (it fills the rest of
            // the page with zeros): make sure the file really ends here.
            let size = self.tree.stat(node).map_err(|e| self.fail(ino, "stat", e))?.size;
            if offset.saturating_add(done as u64) < size {
                tracing::error!(
                    "{}: content ends at offset {} but the file is {size} bytes",
                    self.names.path(ino),
                    offset.saturating_add(done as u64)
                );
                return Err(Errno::EIO);
            }
        }
        Ok(done)
    }
}

/// Names Linux can carry as one path component.
fn safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0) && name.len() <= 1024
}

impl fuser::Filesystem for GuestFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each setter returns the nearest allowed value when it refuses one.
        if let Err(max) = config.set_max_write(MAX_IO) {
            let _ = config.set_max_write(max);
        }
        if let Err(max) = config.set_max_readahead(MAX_IO) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        for flag in [InitFlags::FUSE_PARALLEL_DIROPS, InitFlags::FUSE_CACHE_SYMLINKS] {
            if config.capabilities().contains(flag) {
                let _ = config.add_capabilities(flag);
            }
        }
        if self.open_flags.contains(FopenFlags::FOPEN_DIRECT_IO) {
            // Without this (kernels before 6.6) mmap, and so running a
            // program from the mount, fails on direct-I/O files.
            let mmap = InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP;
            if config.capabilities().contains(mmap) && config.add_capabilities(mmap).is_ok() {
                tracing::info!("direct I/O: reads bypass the mount's page cache");
            } else {
                tracing::warn!("direct I/O needs FUSE_DIRECT_IO_ALLOW_MMAP (Linux 6.6) for mmap; the kernel lacks it, so reads go through the page cache");
                self.open_flags = FopenFlags::FOPEN_KEEP_CACHE;
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let res = (|| {
            let pnode = self.node(parent)?;
            let name = name.as_bytes();
            let child = match self.child(pnode, name) {
                Ok(Some(c)) => c,
                Ok(None) => return Err(Errno::ENOENT),
                Err(e) => return Err(self.fail(parent.0, &format!("looking up {}", crate::guest::printable(name)), e)),
            };
            let ino = self.inodes.ino(child).ok_or(Errno::EOVERFLOW)?;
            let attr = self.attr_of(ino, child)?;
            self.names.looked_up(ino, parent.0, name);
            Ok(attr)
        })();
        match res {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.names.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino).and_then(|n| self.attr_of(ino.0, n)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino).and_then(|n| self.tree.readlink(n).map_err(|e| self.fail(ino.0, "readlink", e))) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        match self.node(ino) {
            Ok(_) => reply.opened(FileHandle(0), self.open_flags),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let want = size.min(MAX_IO) as usize;
        let mut buf = self.bufs.take();
        let Some(dst) = buf.get_mut(..want) else { return reply.error(Errno::EIO) };
        match self.read_into(ino.0, node, offset, dst) {
            Ok(n) => reply.data(dst.get(..n).unwrap_or_default()),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let res = self.node(ino).and_then(|n| self.listing(ino.0, n));
        match res {
            Ok(listing) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.dirs.lock().unwrap_or_else(|e| e.into_inner()).insert(fh, listing);
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR);
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let listing = self.dirs.lock().unwrap_or_else(|e| e.into_inner()).get(&fh.0).cloned();
        let listing = match listing {
            Some(l) => l,
            None => match self.node(ino).and_then(|n| self.listing(ino.0, n)) {
                Ok(l) => l,
                Err(e) => return reply.error(e),
            },
        };
        // Offsets: 1 after ".", 2 after "..", 3 + i after entry i. The
        // parent is not tracked; ".." carries this directory's number (the
        // kernel resolves ".." itself and never looks at it).
        let mut next = offset;
        if next == 0 {
            if reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            next = 1;
        }
        if next == 1 {
            if reply.add(ino, 2, FileType::Directory, "..") {
                return reply.ok();
            }
            next = 2;
        }
        let start = usize::try_from(next - 2).unwrap_or(usize::MAX);
        for (i, (e, node)) in listing.iter().enumerate().skip(start) {
            let Some(child) = self.inodes.ino(*node) else {
                tracing::error!("{}: entry {} has an id too large for a FUSE inode number; left out", self.names.path(ino.0), crate::guest::printable(&e.name));
                continue;
            };
            if reply.add(INodeNo(child), i as u64 + 3, file_type(e.kind), OsStr::from_bytes(&e.name)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner()).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        const BSIZE: u64 = 4096;
        let mut bytes = 0u64;
        for (d, disk) in self.tree.disks.iter().enumerate() {
            for v in 0..disk.volumes.len() {
                if let Some(info) = self.tree.fs_info(d, v) {
                    bytes = bytes.saturating_add(info.total_bytes);
                }
            }
        }
        reply.statfs(bytes / BSIZE, 0, 0, 0, 0, BSIZE as u32, 255, BSIZE as u32);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let res = self.node(ino).and_then(|n| self.tree.xattrs(n).map_err(|e| self.fail(ino.0, "xattrs", e)));
        match res {
            Ok(list) => match list.into_iter().find(|x| x.name == name.as_bytes()) {
                Some(x) => xattr_reply(reply, size, &x.value),
                None => reply.error(Errno::ENODATA),
            },
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let res = self.node(ino).and_then(|n| self.tree.xattrs(n).map_err(|e| self.fail(ino.0, "xattrs", e)));
        match res {
            Ok(list) => {
                let mut names = Vec::new();
                for x in list.iter().filter(|x| !x.name.is_empty() && !x.name.contains(&0)) {
                    names.extend_from_slice(&x.name);
                    names.push(0);
                }
                xattr_reply(reply, size, &names);
            }
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        match self.node(ino) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    // ------------------------------------------------ everything that writes

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, _r: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _t: &Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn rename(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _np: INodeNo, _nn: &OsStr, _f: RenameFlags, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn link(&self, _req: &Request, _i: INodeNo, _np: INodeNo, _nn: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, _f: i32, reply: ReplyCreate) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, _v: &[u8], _f: i32, _p: u32, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(&self, _req: &Request, _i: INodeNo, _fh: FileHandle, _o: u64, _l: u64, _m: i32, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
}

/// `size == 0` asks for the length; a buffer too small is ERANGE.
fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    let Ok(len) = u32::try_from(value.len()) else {
        return reply.error(Errno::E2BIG);
    };
    if size == 0 {
        reply.size(len);
    } else if len > size {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

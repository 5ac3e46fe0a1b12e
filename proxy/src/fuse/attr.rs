//! Guest `Stat` -> FUSE attributes, as `stat(2)` on the mount shows them.

use fuser::{FileAttr, FileType, INodeNo};
use guestfs::fs::{FileKind, Stat, Timestamp};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Block size reported in `st_blksize`: large, so `cp`/`cat` read in big
/// requests.
const BLKSIZE: u32 = 1 << 20;

pub fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}

/// A guest time as `SystemTime`; before 1970 too (`secs` negative, `nanos`
/// counted forward from `secs`). Times beyond what `SystemTime` holds
/// saturate at the epoch rather than fail the whole `stat`.
pub fn system_time(t: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nanos.min(999_999_999)));
    let base = if t.secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.secs.unsigned_abs()))
    };
    base.and_then(|b| b.checked_add(nanos)).unwrap_or(UNIX_EPOCH)
}

/// The kernel's 32-bit device encoding (`new_encode_dev`) of a glibc
/// `makedev` number; 0 when it does not fit.
pub fn kernel_rdev(rdev: u64) -> u32 {
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff);
    if major > 0xfff || minor > 0xf_ffff {
        return 0;
    }
    // Both bounded above, so the shifts stay inside 32 bits.
    u32::try_from((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)).unwrap_or(0)
}

/// `allocated`: bytes the file holds as data (from its data ranges), for
/// `st_blocks`, so `du` and sparse-aware backup tools see holes.
pub fn file_attr(ino: u64, st: &Stat, allocated: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.size,
        blocks: allocated.div_ceil(512),
        atime: system_time(st.atime),
        mtime: system_time(st.mtime),
        ctime: system_time(st.ctime),
        crtime: st.btime.map(system_time).unwrap_or(UNIX_EPOCH),
        kind: file_type(st.kind),
        perm: u16::try_from(st.mode & 0o7777).unwrap_or(0),
        nlink: st.nlink.max(1),
        uid: st.uid,
        gid: st.gid,
        rdev: kernel_rdev(st.rdev),
        blksize: BLKSIZE,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_1970_keep_nanoseconds() {
        let t = system_time(Timestamp { secs: -2, nanos: 250_000_000 });
        let d = UNIX_EPOCH.duration_since(t).unwrap();
        assert_eq!(d, Duration::from_millis(1750));
        let t = system_time(Timestamp { secs: 981_173_106, nanos: 123_456_789 });
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap(), Duration::new(981_173_106, 123_456_789));
    }

    #[test]
    fn device_numbers_use_the_kernel_encoding() {
        // glibc makedev(8, 1) and makedev(259, 0x12345)
        let glibc = |ma: u64, mi: u64| ((ma & 0xfffff000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffffff00) << 12) | (mi & 0xff);
        assert_eq!(kernel_rdev(glibc(8, 1)), 0x801);
        assert_eq!(kernel_rdev(glibc(259, 0x12345)), 0x45 | (259 << 8) | (0x123 << 20));
    }
}

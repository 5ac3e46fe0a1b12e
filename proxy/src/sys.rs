//! The only `unsafe` code in the product: the block-device ioctls
//! (BLKROSET, BLKROGET, BLKGETSIZE64, BLKSSZGET, BLKPBSZGET) and SCSI
//! generic pass-through (SG_IO).
//!
//! SG_IO here accepts only a [`scsi::ReadOnlyCommand`] and moves data only
//! from the device (`SG_DXFER_FROM_DEV`) or not at all (`SG_DXFER_NONE`):
//! there is no way to express a data-out transfer or a writing command.
//! Everything else in the product is `#![deny(unsafe_code)]`
//! (docs/DECISIONS.md).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

// <linux/fs.h>: _IO(0x12, n) and _IOR(0x12, 114, size_t). Defined here
// rather than taken from `libc`, which lacks some of them on some targets.
const BLKROSET: libc::Ioctl = 0x125d;
const BLKROGET: libc::Ioctl = 0x125e;
const BLKSSZGET: libc::Ioctl = 0x1268;
const BLKPBSZGET: libc::Ioctl = 0x127b;
#[cfg(target_pointer_width = "64")]
const BLKGETSIZE64: libc::Ioctl = 0x8008_1272;
#[cfg(target_pointer_width = "32")]
const BLKGETSIZE64: libc::Ioctl = 0x8004_1272;

// <scsi/sg.h>
const SG_IO: libc::Ioctl = 0x2285;
const SG_DXFER_NONE: libc::c_int = -1;
const SG_DXFER_FROM_DEV: libc::c_int = -3;
/// Bytes of sense data asked for (fixed format needs 18, descriptor more).
const SENSE_LEN: usize = 64;
/// Largest data-in buffer an SG_IO command of ours may ask for.
const MAX_DATA_IN: u64 = 16 << 20;

/// `struct sg_io_hdr` of <scsi/sg.h> (the same layout on every Linux ABI:
/// C ints, pointers and the natural padding between them).
#[repr(C)]
struct SgIoHdr {
    interface_id: libc::c_int,
    dxfer_direction: libc::c_int,
    cmd_len: libc::c_uchar,
    mx_sb_len: libc::c_uchar,
    iovec_count: libc::c_ushort,
    dxfer_len: libc::c_uint,
    dxferp: *mut libc::c_void,
    cmdp: *const libc::c_uchar,
    sbp: *mut libc::c_uchar,
    timeout: libc::c_uint,
    flags: libc::c_uint,
    pack_id: libc::c_int,
    usr_ptr: *mut libc::c_void,
    status: libc::c_uchar,
    masked_status: libc::c_uchar,
    msg_status: libc::c_uchar,
    sb_len_wr: libc::c_uchar,
    host_status: libc::c_ushort,
    driver_status: libc::c_ushort,
    resid: libc::c_int,
    duration: libc::c_uint,
    info: libc::c_uint,
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets (or clears) the kernel read-only flag of a block device (BLKROSET;
/// needs CAP_SYS_ADMIN). Clearing is only used by tests and `guard` never
/// calls it with `false`.
pub fn set_read_only(file: &File, ro: bool) -> io::Result<()> {
    let flag: libc::c_int = ro.into();
    // SAFETY: BLKROSET reads one `int` through the pointer; `flag` lives
    // for the whole call and the fd is valid while `file` is borrowed.
    check(unsafe { libc::ioctl(file.as_raw_fd(), BLKROSET, &flag as *const libc::c_int) })
}

/// The kernel read-only flag of a block device (BLKROGET).
pub fn is_read_only(file: &File) -> io::Result<bool> {
    let mut flag: libc::c_int = 0;
    // SAFETY: BLKROGET writes one `int` through the pointer, which points
    // to a live, writable local.
    check(unsafe { libc::ioctl(file.as_raw_fd(), BLKROGET, &mut flag as *mut libc::c_int) })?;
    Ok(flag != 0)
}

/// Size in bytes (BLKGETSIZE64).
pub fn size_bytes(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one `u64` (the kernel always stores a
    // u64 whatever the request number's size field says) to the live,
    // 8-byte local.
    check(unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) })?;
    Ok(size)
}

/// Logical block (sector) size (BLKSSZGET).
pub fn logical_block_size(file: &File) -> io::Result<u32> {
    let mut n: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one `int` to the live local.
    check(unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut n as *mut libc::c_int) })?;
    u32::try_from(n).map_err(|_| io::Error::other(format!("BLKSSZGET returned {n}")))
}

/// Physical block size (BLKPBSZGET).
pub fn physical_block_size(file: &File) -> io::Result<u32> {
    let mut n: libc::c_uint = 0;
    // SAFETY: BLKPBSZGET writes one `unsigned int` to the live local.
    check(unsafe { libc::ioctl(file.as_raw_fd(), BLKPBSZGET, &mut n as *mut libc::c_uint) })?;
    Ok(n)
}

/// What came back from one SG_IO command.
#[derive(Debug)]
pub struct SgResponse {
    /// The data-in bytes actually transferred (residual removed).
    pub data: Vec<u8>,
    /// SCSI status byte (0 GOOD, 2 CHECK CONDITION, ...).
    pub status: u8,
    pub host_status: u16,
    pub driver_status: u16,
    pub sense: Vec<u8>,
}

impl SgResponse {
    pub fn ok(&self) -> bool {
        self.status == 0 && self.host_status == 0 && (self.driver_status & 0x0f) == 0
    }
}

/// Sends one read-only SCSI command through SG_IO. `block_size` sizes a
/// READ(16)'s buffer. Works on an fd opened O_RDONLY: the kernel allows
/// these opcodes without write access.
pub fn sg_io(file: &File, cmd: scsi::ReadOnlyCommand, block_size: u32, timeout: Duration) -> io::Result<SgResponse> {
    let cdb = cmd.cdb();
    let want = cmd.data_in_len(block_size);
    if want > MAX_DATA_IN {
        return Err(io::Error::other(format!("{}: {want} bytes is more than one SG_IO command may read", cmd.name())));
    }
    let len = usize::try_from(want).map_err(io::Error::other)?;
    let mut data = vec![0u8; len];
    let mut sense = [0u8; SENSE_LEN];
    let cmd_len = u8::try_from(cdb.len()).map_err(io::Error::other)?;
    let mut hdr = SgIoHdr {
        interface_id: libc::c_int::from(b'S'),
        // Data moves from the device or not at all: never SG_DXFER_TO_DEV.
        dxfer_direction: if len == 0 { SG_DXFER_NONE } else { SG_DXFER_FROM_DEV },
        cmd_len,
        mx_sb_len: SENSE_LEN as u8,
        iovec_count: 0,
        dxfer_len: u32::try_from(len).map_err(io::Error::other)?,
        dxferp: if len == 0 { std::ptr::null_mut() } else { data.as_mut_ptr().cast() },
        cmdp: cdb.as_ptr(),
        sbp: sense.as_mut_ptr(),
        timeout: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        flags: 0,
        pack_id: 0,
        usr_ptr: std::ptr::null_mut(),
        status: 0,
        masked_status: 0,
        msg_status: 0,
        sb_len_wr: 0,
        host_status: 0,
        driver_status: 0,
        resid: 0,
        duration: 0,
        info: 0,
    };
    // SAFETY: `hdr` points to the CDB (`cdb`, `cmd_len` bytes), a data
    // buffer of exactly `dxfer_len` bytes (`data`) and a sense buffer of
    // `mx_sb_len` bytes (`sense`); all three outlive the call, which is
    // synchronous (SG_IO returns after the command completed or timed
    // out). The kernel writes only into `data`, `sense` and `hdr`.
    check(unsafe { libc::ioctl(file.as_raw_fd(), SG_IO, &mut hdr as *mut SgIoHdr) })?;
    let resid = usize::try_from(hdr.resid).unwrap_or(0).min(len);
    data.truncate(len - resid);
    let sense_len = usize::from(hdr.sb_len_wr).min(SENSE_LEN);
    Ok(SgResponse {
        data,
        status: hdr.status,
        host_status: hdr.host_status,
        driver_status: hdr.driver_status,
        sense: sense.get(..sense_len).unwrap_or_default().to_vec(),
    })
}

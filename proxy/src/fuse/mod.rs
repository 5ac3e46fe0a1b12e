//! The guest tree served read-only over FUSE (`vbproxy mount`).
//!
//! As root the mount is made with mount(2) directly (fstype
//! `fuse.vbproxy`, source `vbproxy`, `ro,nosuid,nodev`,
//! `default_permissions`); otherwise through `fusermount3`, as fuser does
//! it. The `fuser` crate runs the protocol: several event-loop threads,
//! each with its own cloned `/dev/fuse` descriptor, so parallel readers are
//! served in parallel.

mod attr;
mod bufpool;
mod inode;
mod names;
mod ops;

use anyhow::{Context, Result};
use guestfs::tree::GuestTree;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

pub use crate::mountinfo::FSTYPE;

/// Event-loop threads: enough that 8 parallel readers plus directory walks
/// never wait for each other (idle threads only block in read(2)).
const THREADS: usize = 16;

pub struct MountOptions {
    /// Let other users than the mounting one in (`allow_other`); the
    /// kernel still checks modes (`default_permissions`).
    pub allow_other: bool,
    /// Answer reads straight into the reader's buffer, bypassing the
    /// mount's page cache (`--direct-io`, see docs/MOUNT.md).
    pub direct_io: bool,
}

/// A live mount whose server has not started yet.
pub struct Mounted {
    session: fuser::Session<ops::GuestFs>,
}

/// Mounts the tree at `mount_point` (absolute) and completes the FUSE
/// handshake: once this returns, the mount answers.
pub fn mount(tree: Arc<GuestTree>, mount_point: &Path, opts: &MountOptions) -> Result<Mounted> {
    let fs = ops::GuestFs::new(tree, opts.direct_io)?;
    let acl = if opts.allow_other { fuser::SessionACL::All } else { fuser::SessionACL::Owner };
    let mut config = fuser::Config::default();
    config.acl = acl;
    config.n_threads = Some(THREADS);
    config.clone_fd = true;
    let session = if rustix::process::geteuid().is_root() {
        let fd = rustix::fs::open("/dev/fuse", rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC, rustix::fs::Mode::empty())
            .context("opening /dev/fuse (is the fuse module loaded?)")?;
        let data = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,default_permissions{}",
            fd.as_raw_fd(),
            if opts.allow_other { ",allow_other" } else { "" }
        );
        let data = std::ffi::CString::new(data).context("mount options")?;
        use rustix::mount::MountFlags;
        rustix::mount::mount("vbproxy", mount_point, FSTYPE, MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV, data.as_c_str())
            .with_context(|| format!("{}: mount(2) of the FUSE file system failed", mount_point.display()))?;
        match fuser::Session::from_fd(fs, fd, acl, config) {
            Ok(s) => s,
            Err(e) => {
                let _ = rustix::mount::unmount(mount_point, rustix::mount::UnmountFlags::DETACH);
                return Err(e).context("FUSE handshake with the kernel failed");
            }
        }
    } else {
        use fuser::MountOption as M;
        config.mount_options = vec![
            M::FSName("vbproxy".into()),
            M::Subtype("vbproxy".into()),
            M::RO,
            M::NoSuid,
            M::NoDev,
            M::DefaultPermissions,
        ];
        fuser::Session::new(fs, mount_point, &config).with_context(|| format!("{}: mounting through fusermount3 failed", mount_point.display()))?
    };
    Ok(Mounted { session })
}

impl Mounted {
    /// Serves requests until the file system is unmounted.
    pub fn run(self) -> Result<()> {
        self.session.run().context("FUSE session")
    }
}

/// Unmounts `mount_point`: lazily (detached now, gone when the last user
/// lets go) with `lazy`. As root through umount2(2), else `fusermount3 -u`.
pub fn unmount(mount_point: &Path, lazy: bool) -> std::io::Result<()> {
    if rustix::process::geteuid().is_root() {
        let flags = if lazy { rustix::mount::UnmountFlags::DETACH } else { rustix::mount::UnmountFlags::empty() };
        return rustix::mount::unmount(mount_point, flags).map_err(std::io::Error::from);
    }
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg("--").arg(mount_point).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("fusermount3 -u: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

//! File-mode jobs: the chosen disks' guest tree mounted read-only on the
//! target by `vbproxy mount` (a separate server process, in its own
//! session, so the job outlives the prepare command that made it).

use super::journal::{MountRecord, ProcessId};
use super::prepare::JobCtx;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Mounts `disks` (slot, spec) on the job's target. The journal records
/// the mount before it is attempted and the server once it is live.
pub fn mount(ctx: &mut JobCtx, disks: &[(String, String)]) -> Result<()> {
    let target = ctx.job.target.clone();
    let pid_file = ctx.journal.dir.join(format!("{}.pid", ctx.job.id));
    ctx.job.mount = Some(MountRecord { dir: target.clone(), started: true, server: None, pid_file: pid_file.clone() });
    ctx.save()?;
    let exe = std::env::current_exe().context("finding the vbproxy executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount").arg("--pid-file").arg(&pid_file);
    // The tree keeps the VM's slot names (DESIGN.md: `scsi0-0`), although
    // the sources are the snapshot's descriptors rather than the .vmx.
    let slots: Vec<&str> = disks.iter().map(|(slot, _)| slot.as_str()).collect();
    cmd.arg("--disk-names").arg(slots.join(","));
    for (_, spec) in disks {
        cmd.arg(spec);
    }
    cmd.arg(&target);
    tracing::info!("running {cmd:?}");
    let status = cmd.status().context("running vbproxy mount")?;
    if !status.success() {
        let msg = format!("vbproxy mount of {} on {} failed ({status}); its message is above", names(disks), target.display());
        if status.code() == Some(i32::from(crate::EXIT_REFUSED)) {
            return Err(crate::lun::Refused(msg).into());
        }
        bail!(msg);
    }
    let server = read_server(&pid_file).with_context(|| format!("{}: the mount server's pid", pid_file.display()))?;
    if let Some(m) = ctx.job.mount.as_mut() {
        m.server = Some(server);
    }
    ctx.save()
}

fn names(disks: &[(String, String)]) -> String {
    disks.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(", ")
}

fn read_server(pid_file: &Path) -> Result<ProcessId> {
    let text = std::fs::read_to_string(pid_file)?;
    let pid: u32 = text.trim().parse().with_context(|| format!("not a pid: {:?}", text.trim()))?;
    ProcessId::of(pid).with_context(|| format!("the mount server (pid {pid}) is not running"))
}

/// Unmounts a job's FUSE tree: `vbproxy umount` (waits for the server),
/// detaching lazily when it is busy or dead (`lazy`: straight away). A
/// mount of another kind at the same place is left alone.
pub fn unmount(dir: &Path, lazy: bool) -> Result<Option<String>> {
    match super::target::mounted_fstype(dir) {
        None => return Ok(None),
        Some(t) if t != crate::fuse::FSTYPE => {
            bail!("{}: a {t} mount is there, not this job's vbproxy mount; left alone", dir.display())
        }
        Some(_) => {}
    }
    let exe = std::env::current_exe().context("finding the vbproxy executable")?;
    let run = |lazy: bool| -> bool {
        let mut c = Command::new(&exe);
        c.arg("umount");
        if lazy {
            c.arg("--lazy");
        }
        c.arg(dir).status().is_ok_and(|s| s.success())
    };
    if !lazy && run(false) {
        return Ok(Some("unmounted".into()));
    }
    if run(true) {
        return Ok(Some(if lazy { "detached (lazy unmount)" } else { "busy: detached (lazy unmount)" }.into()));
    }
    // Last resort for a mount `vbproxy umount` cannot handle.
    let _ = Command::new("umount").arg("-l").arg(dir).status();
    std::thread::sleep(Duration::from_millis(50));
    if super::target::is_mountpoint(dir) {
        bail!("{}: cannot unmount the job's FUSE tree", dir.display());
    }
    Ok(Some("detached (umount -l)".into()))
}

//! `vbproxy mount` / `vbproxy umount`: the guest tree as a read-only FUSE
//! file system (the serving itself is in `fuse/`).
//!
//! Without `--foreground`, `mount` starts the server as a child
//! (`mount --foreground --daemon-child`, its own session, stdin from
//! /dev/null) and waits: the child writes `READY` on its stdout once the
//! mount answers, then points stdout and stderr at /dev/null (or `--log`).
//! The parent exits 0 only after `READY`; if the child ends first, its
//! error output is printed and its exit code (1, or 3 for a safety
//! refusal) returned. The server records its pid under a state directory,
//! keyed by the mount's device number, so `umount` can wait for it.

use crate::fuse::{self, MountOptions, FSTYPE};
use crate::mountinfo;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the parent waits for the server to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `umount` waits for the server to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const READY: &str = "READY";

pub struct MountArgs {
    pub foreground: bool,
    pub allow_other: bool,
    pub direct_io: bool,
    pub pid_file: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub daemon_child: bool,
    pub sources: Vec<PathBuf>,
    /// Names of the sources' disks in the tree (default `disk0`...).
    pub disk_names: Vec<String>,
    pub mount_point: PathBuf,
}

pub fn mount(a: MountArgs) -> Result<()> {
    let meta = std::fs::metadata(&a.mount_point).with_context(|| format!("{}: mount point", a.mount_point.display()))?;
    if !meta.is_dir() {
        bail!("{}: mount point is not a directory", a.mount_point.display());
    }
    let mount_point = a.mount_point.canonicalize().with_context(|| format!("{}: mount point", a.mount_point.display()))?;
    if a.foreground {
        serve(&a, &mount_point)
    } else {
        daemonize()
    }
}

/// The parent side: start the server, wait for `READY` or its death.
fn daemonize() -> Result<()> {
    let exe = std::env::current_exe().context("finding the vbproxy executable")?;
    // The same command line, with the server flags right after `mount`
    // (global flags such as --no-parent carry over as they were).
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let at = args.iter().position(|a| a == "mount").map_or(0, |i| i + 1);
    args.splice(at..at, ["--foreground".into(), "--daemon-child".into()]);
    let mut child = Command::new(exe)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the mount server")?;
    let (stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ready = stdout.map(std::io::BufReader::new).and_then(|mut r| {
            let mut line = String::new();
            r.read_line(&mut line).ok().map(|_| line.trim() == READY)
        });
        let _ = tx.send(ready == Some(true));
    });
    let (etx, erx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_end(&mut text);
        }
        let _ = etx.send(text);
    });
    let relay = |text: Vec<u8>| {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&text);
        let _ = err.flush();
    };
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(true) => {
            // Warnings the server printed while opening the sources; its
            // stderr closes right after READY.
            if let Ok(text) = erx.recv_timeout(Duration::from_secs(5)) {
                relay(text);
            }
            Ok(())
        }
        Ok(false) => {
            let status = child.wait().context("waiting for the mount server")?;
            relay(erx.recv_timeout(Duration::from_secs(5)).unwrap_or_default());
            let code = status.code().filter(|c| *c != 0).unwrap_or(i32::from(crate::EXIT_FAILURE));
            if status.code().is_none() {
                eprintln!("vbproxy: the mount server died ({status}) before the mount was ready");
            }
            std::process::exit(code);
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            relay(erx.recv_timeout(Duration::from_secs(5)).unwrap_or_default());
            bail!("the mount server was not ready within {} s; stopped it", READY_TIMEOUT.as_secs())
        }
    }
}

/// The server: open the sources, mount, answer until unmounted.
fn serve(a: &MountArgs, mount_point: &Path) -> Result<()> {
    if a.daemon_child {
        // Its own session: the admin's terminal or the backup job's
        // process group going away must not take the mount with it.
        let _ = rustix::process::setsid();
    }
    let tree = Arc::new(crate::guest::open_tree_named(&a.sources, &a.disk_names)?);
    let mounted = fuse::mount(tree, mount_point, &MountOptions { allow_other: a.allow_other, direct_io: a.direct_io })?;
    widen_readahead(mount_point);
    let state = state_file(mount_point);
    let pid = std::process::id();
    if let Some(s) = &state {
        let _ = s.parent().map(std::fs::create_dir_all);
        if let Err(e) = std::fs::write(s, format!("{pid}\n")) {
            tracing::warn!("{}: cannot record the server pid: {e}", s.display());
        }
    }
    if let Some(p) = &a.pid_file {
        if let Err(e) = std::fs::write(p, format!("{pid}\n")) {
            let _ = fuse::unmount(mount_point, true);
            return Err(e).with_context(|| format!("{}: writing the pid file", p.display()));
        }
    }
    stop_on_signals(mount_point.to_owned());
    if a.daemon_child {
        println!("{READY}");
        std::io::stdout().flush()?;
        detach_stdio(a.log.as_deref())?;
    } else if let Some(log) = &a.log {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("{}: log file", log.display()))?;
        rustix::stdio::dup2_stderr(&f)?;
    }
    tracing::info!("{}: mounted (pid {pid})", mount_point.display());
    let res = mounted.run();
    if let Some(s) = &state {
        let _ = std::fs::remove_file(s);
    }
    if let Some(p) = &a.pid_file {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!("{}: unmounted; server exits", mount_point.display());
    res
}

/// Readahead window of the mount (the kernel starts FUSE mounts at 128 KiB):
/// 4 MiB keeps several 1 MiB reads in flight for a sequential reader, which
/// roughly halves the time of `cat` of a large file. Only the mount's own
/// backing-device setting is touched; failing is harmless (slower reads).
fn widen_readahead(mount_point: &Path) {
    const READAHEAD_KB: u32 = 4096;
    let Some(entry) = mountinfo::find(mount_point).ok().flatten() else { return };
    let knob = format!("/sys/class/bdi/{}/read_ahead_kb", entry.dev);
    if let Err(e) = std::fs::write(&knob, READAHEAD_KB.to_string()) {
        tracing::debug!("{knob}: {e}; readahead left at the kernel default");
    }
}

/// stdout to /dev/null, stderr (the log) to `log` or /dev/null.
fn detach_stdio(log: Option<&Path>) -> Result<()> {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    rustix::stdio::dup2_stdout(&null)?;
    match log {
        Some(l) => {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(l).with_context(|| format!("{}: log file", l.display()))?;
            rustix::stdio::dup2_stderr(&f)?;
        }
        None => rustix::stdio::dup2_stderr(&null)?,
    }
    Ok(())
}

/// SIGTERM, SIGINT, SIGHUP: unmount (lazily, so an open file cannot keep
/// the server alive forever), which ends the session loop.
fn stop_on_signals(mount_point: PathBuf) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) else {
        tracing::warn!("cannot install signal handlers; unmount with `vbproxy umount`");
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!("signal {sig}: unmounting {}", mount_point.display());
            if let Err(e) = fuse::unmount(&mount_point, true) {
                tracing::error!("{}: unmount: {e}", mount_point.display());
                std::process::exit(1);
            }
        }
    });
}

/// Where the server of the mount at `mount_point` records its pid.
fn state_file(mount_point: &Path) -> Option<PathBuf> {
    let entry = mountinfo::find(mount_point).ok()??;
    Some(state_dir().join(entry.dev.replace(':', "_")))
}

fn state_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        PathBuf::from("/run/vbproxy/mounts")
    } else {
        let uid = rustix::process::geteuid().as_raw();
        std::env::var_os("XDG_RUNTIME_DIR")
            .map(|d| PathBuf::from(d).join("vbproxy-mounts"))
            .unwrap_or_else(|| std::env::temp_dir().join(format!("vbproxy-mounts-{uid}")))
    }
}

// ---------------------------------------------------------------- umount

pub fn umount(mount_point: &Path, lazy: bool) -> Result<()> {
    let abs = mountinfo::absolute(mount_point).with_context(|| format!("{}: mount point", mount_point.display()))?;
    let entry = mountinfo::find(&abs).context("reading /proc/self/mountinfo")?;
    let entry = match entry {
        Some(e) if e.fstype == FSTYPE => e,
        Some(e) => bail!("{}: not a vbproxy mount (a {} mount of {}); left alone", abs.display(), e.fstype, e.source),
        None => bail!("{}: not a vbproxy mount (nothing is mounted there)", abs.display()),
    };
    let state = state_dir().join(entry.dev.replace(':', "_"));
    let server = std::fs::read_to_string(&state).ok().and_then(|s| s.trim().parse::<u32>().ok()).filter(|p| is_server(*p));
    match fuse::unmount(&abs, lazy) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
            bail!("{}: busy (a process has a file or directory open in it); close it, or use --lazy to detach now", abs.display())
        }
        Err(e) => {
            // A dead server ("Transport endpoint is not connected") or an
            // odd state: detach it all the same.
            tracing::warn!("{}: unmount: {e}; detaching", abs.display());
            fuse::unmount(&abs, true).with_context(|| format!("{}: unmount failed ({e}), and so did a lazy detach", abs.display()))?;
        }
    }
    if let Some(pid) = server {
        let start = Instant::now();
        while is_server(pid) {
            if start.elapsed() > EXIT_TIMEOUT {
                if lazy {
                    eprintln!("vbproxy: {}: detached; the server (pid {pid}) exits when the last open file is closed", abs.display());
                    return Ok(());
                }
                bail!("{}: unmounted, but the server (pid {pid}) did not exit within {} s", abs.display(), EXIT_TIMEOUT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_file(&state);
    Ok(())
}

/// Whether `pid` is a live (not zombie) vbproxy process.
fn is_server(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // "pid (comm) S ...": comm may hold spaces and parentheses.
    let Some((head, rest)) = stat.rsplit_once(')') else { return false };
    let state = rest.split_whitespace().next().unwrap_or("");
    head.ends_with("(vbproxy") && state != "Z" && state != "X"
}

//! Single-file and directory restore (`vbproxy cp`).
//!
//! Whatever the guest's names and symlinks say, nothing is written outside
//! DEST: every path component is created relative to an open directory
//! handle with `O_NOFOLLOW | O_EXCL` (never through a path string that the
//! kernel could resolve through a symlink), names containing `/`, NUL, `.`
//! or `..` are refused, symlinks are recreated but never followed, and
//! nothing that already exists is overwritten.

use crate::files::Problems;
use anyhow::{Context, Result};
use guestfs::fs::{FileKind, Stat};
use guestfs::tree::{GuestTree, Node};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

const MAX_DEPTH: usize = 1024;

struct Restorer<'a> {
    tree: &'a GuestTree,
    problems: &'a mut Problems,
    /// First restored name of each hard-linked file: (its directory, name).
    links: HashMap<Node, (Arc<OwnedFd>, Vec<u8>)>,
}

fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: st.atime.secs, tv_nsec: st.atime.nanos.into() },
        last_modification: Timespec { tv_sec: st.mtime.secs, tv_nsec: st.mtime.nanos.into() },
    }
}

fn safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// Restores `node` as `name` inside directory `dest`.
pub fn restore(tree: &GuestTree, node: Node, dest: &Path, name: &[u8], problems: &mut Problems) -> Result<()> {
    let dir = rustix::fs::open(dest, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("{}: cannot open destination directory", dest.display()))?;
    let mut r = Restorer { tree, problems, links: HashMap::new() };
    let dir = Arc::new(dir);
    if !safe_name(name) {
        anyhow::bail!("refusing to create {:?} in {}", String::from_utf8_lossy(name), dest.display());
    }
    r.entry(&dir, node, name, name.to_vec(), 0);
    Ok(())
}

impl Restorer<'_> {
    fn entry(&mut self, dir: &Arc<OwnedFd>, node: Node, name: &[u8], rel: Vec<u8>, depth: usize) {
        if let Err(e) = self.try_entry(dir, node, name, &rel, depth) {
            self.problems_report(&rel, e);
        }
    }

    fn problems_report(&mut self, rel: &[u8], e: anyhow::Error) {
        let msg = format!("{}: {e:#}", crate::guest::printable(rel));
        eprintln!("vbproxy: not restored: {msg}");
        self.problems.0.push(msg);
    }

    fn try_entry(&mut self, dir: &Arc<OwnedFd>, node: Node, name: &[u8], rel: &[u8], depth: usize) -> Result<()> {
        let st = self.tree.stat(node)?;
        match st.kind {
            FileKind::File => self.file(dir, node, &st, name),
            FileKind::Symlink => {
                let target = self.tree.readlink(node)?;
                rustix::fs::symlinkat(target.as_slice(), dir.as_fd(), name).context("create symlink")?;
                rustix::fs::utimensat(dir.as_fd(), name, &times(&st), AtFlags::SYMLINK_NOFOLLOW).context("set symlink times")?;
                Ok(())
            }
            FileKind::Dir => {
                if depth > MAX_DEPTH {
                    anyhow::bail!("directory nesting too deep");
                }
                rustix::fs::mkdirat(dir.as_fd(), name, Mode::from_raw_mode(0o700)).context("create directory")?;
                let sub = Arc::new(
                    rustix::fs::openat(dir.as_fd(), name, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                        .context("open created directory")?,
                );
                let mut entries = self.tree.read_dir(node)?;
                entries.sort_by(|a, b| a.0.name.cmp(&b.0.name));
                for (e, child) in entries {
                    let crel = [rel, b"/", &e.name].concat();
                    if !safe_name(&e.name) {
                        self.problems_report(&crel, anyhow::anyhow!("unsafe name in the guest filesystem; not restored"));
                        continue;
                    }
                    self.entry(&sub, child, &e.name, crel, depth + 1);
                }
                // Mode and times last: children changed the mtime, and a
                // read-only mode would have blocked creating them.
                rustix::fs::fchmod(sub.as_fd(), Mode::from_raw_mode(st.mode & 0o7777)).context("set directory mode")?;
                rustix::fs::futimens(sub.as_fd(), &times(&st)).context("set directory times")?;
                Ok(())
            }
            other => anyhow::bail!("{other:?} not restored (device nodes, fifos and sockets are not files)"),
        }
    }

    fn file(&mut self, dir: &Arc<OwnedFd>, node: Node, st: &Stat, name: &[u8]) -> Result<()> {
        if st.nlink > 1 {
            if let Some((odir, oname)) = self.links.get(&node) {
                rustix::fs::linkat(odir.as_fd(), oname.as_slice(), dir.as_fd(), name, AtFlags::empty()).context("create hard link")?;
                return Ok(());
            }
        }
        let fd = rustix::fs::openat(
            dir.as_fd(),
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .context("create file")?;
        let file = File::from(fd);
        let result = (|| -> Result<()> {
            let mut buf = vec![0u8; 1 << 20];
            for (start, len) in self.tree.data_ranges(node)? {
                let mut off = start;
                while off < start + len {
                    let want = (start + len - off).min(buf.len() as u64) as usize;
                    let n = self.tree.read(node, off, &mut buf[..want]).with_context(|| format!("read at offset {off}"))?;
                    if n == 0 {
                        anyhow::bail!("file ends at {off}, {} expected", st.size);
                    }
                    file.write_all_at(&buf[..n], off)?;
                    off += n as u64;
                }
            }
            file.set_len(st.size)?;
            rustix::fs::fchmod(file.as_fd(), Mode::from_raw_mode(st.mode & 0o7777))?;
            rustix::fs::futimens(file.as_fd(), &times(st))?;
            Ok(())
        })();
        if let Err(e) = result {
            // Never leave a partial file that looks restored.
            let _ = rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::empty());
            return Err(e);
        }
        if st.nlink > 1 {
            self.links.insert(node, (dir.clone(), name.to_vec()));
        }
        Ok(())
    }
}

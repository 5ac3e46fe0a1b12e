//! The target directory of a job, and the mount table questions about it.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// The absolute form of a target as the journal records it: the parent
/// directory resolved (symlinks followed), the last name kept as given.
/// The same DIR named two ways (`./t`, `/abs/t`) gives the same path.
pub fn resolve(dir: &Path) -> Result<PathBuf> {
    let name = match dir.components().next_back() {
        Some(Component::Normal(n)) => n.to_owned(),
        _ => bail!("{}: not usable as a backup target (give a directory path ending in a name)", dir.display()),
    };
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let parent = std::fs::canonicalize(parent).with_context(|| format!("{}: the parent directory of the target does not exist", parent.display()))?;
    Ok(parent.join(name))
}

/// Checks the target is usable and makes it when absent; returns whether
/// it was made. A target must be an empty directory that is not a mount
/// point (or not exist yet), and not `/`.
pub fn prepare(target: &Path) -> Result<bool> {
    if target == Path::new("/") || target.parent().is_none() {
        bail!("refusing / as a backup target");
    }
    match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(target).with_context(|| format!("{}: cannot create the target directory", target.display()))?;
            Ok(true)
        }
        Err(e) => Err(e).with_context(|| format!("{}: cannot examine the target", target.display())),
        Ok(m) if m.file_type().is_symlink() => bail!("{}: is a symbolic link; give the directory itself", target.display()),
        Ok(m) if !m.is_dir() => bail!("{}: exists and is not a directory", target.display()),
        Ok(m) => {
            if is_mountpoint(target) || parent_dev(target).is_some_and(|d| d != m.dev()) {
                bail!("{}: is a mount point already (another job, or another filesystem); give an empty directory", target.display());
            }
            let mut rd = std::fs::read_dir(target).with_context(|| format!("{}: cannot list the target", target.display()))?;
            if rd.next().is_some() {
                bail!("{}: is not empty; a backup target must be an empty or absent directory", target.display());
            }
            Ok(false)
        }
    }
}

fn parent_dev(p: &Path) -> Option<u64> {
    std::fs::metadata(p.parent()?).ok().map(|m| m.dev())
}

/// The filesystem type mounted at exactly `dir` (the topmost), if any.
pub fn mounted_fstype(dir: &Path) -> Option<String> {
    crate::mountinfo::read().ok()?.into_iter().rev().find(|m| m.mount_point == dir).map(|m| m.fstype)
}

pub fn is_mountpoint(dir: &Path) -> bool {
    mounted_fstype(dir).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let base = std::env::temp_dir().join(format!("vbproxy-target-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let t = resolve(&base.join("t")).unwrap();
        assert!(prepare(&t).unwrap(), "an absent target is made");
        assert!(!prepare(&t).unwrap(), "an empty one is used");
        std::fs::write(t.join("x"), b"").unwrap();
        assert!(prepare(&t).unwrap_err().to_string().contains("is not empty"));
        assert!(prepare(Path::new("/")).is_err());
        assert!(resolve(Path::new("/")).is_err());
        assert!(resolve(&base.join("t/..")).is_err());
        assert!(is_mountpoint(Path::new("/")) || !Path::new("/proc/self/mountinfo").exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}

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

/// Decodes the octal escapes (`\040` for a space) of `/proc/self/mountinfo`.
fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let esc = b.get(i + 1..i + 4).filter(|d| b.get(i) == Some(&b'\\') && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match esc {
            Some(d) => {
                let v = d.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(b.get(i).copied().unwrap_or_default());
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// (mount point, filesystem type) of every mount, from mountinfo text.
fn parse_mountinfo(text: &str) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut halves = line.splitn(2, " - ");
        let (Some(pre), Some(post)) = (halves.next(), halves.next()) else { continue };
        let Some(mp) = pre.split(' ').nth(4) else { continue };
        let fstype = post.split(' ').next().unwrap_or_default();
        out.push((unescape(mp), fstype.to_owned()));
    }
    out
}

/// The filesystem type mounted at exactly `dir` (the topmost), if any.
pub fn mounted_fstype(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_mountinfo(&text).into_iter().rev().find(|(mp, _)| mp == dir).map(|(_, t)| t)
}

pub fn is_mountpoint(dir: &Path) -> bool {
    mounted_fstype(dir).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_with_escapes() {
        let t = "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - fuse.vbproxy vbproxy rw\n37 35 98:0 / / rw - ext4 /dev/sda1 rw\n";
        let m = parse_mountinfo(t);
        assert_eq!(m[0], (PathBuf::from("/mnt/a b"), "fuse.vbproxy".to_string()));
        assert_eq!(m[1].0, PathBuf::from("/"));
        assert_eq!(unescape("a\\134b\\0"), PathBuf::from("a\\b\\0"));
    }

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

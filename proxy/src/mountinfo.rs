//! Finding mounts in `/proc/self/mountinfo`: whether a directory is a
//! (vbproxy) mount and of what type, the mount's device number (which names
//! a FUSE connection and the server's state file), and the devices that
//! hold mounted filesystems (the appliance's own disks, for the guard).

use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// `fuse.<subtype>` as the kernel shows a vbproxy mount.
pub const FSTYPE: &str = "fuse.vbproxy";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted filesystem.
    pub dev: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space...).
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (u32::from(b[i + 1] - b'0') << 6) | (u32::from(b[i + 2] - b'0') << 3) | u32::from(b[i + 3] - b'0');
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

pub fn parse(text: &str) -> Vec<MountEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else { continue };
        let (Some(dev), Some(mp), Some(fstype), Some(source)) = (f.get(2), f.get(4), f.get(sep + 1), f.get(sep + 2)) else {
            continue;
        };
        out.push(MountEntry { dev: dev.to_string(), mount_point: unescape(mp), fstype: fstype.to_string(), source: source.to_string() });
    }
    out
}

pub fn read() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// The absolute path of a mount point without touching the mount itself
/// (a dead FUSE mount fails every `stat` with ENOTCONN): the parent is
/// canonicalized, the last component kept as given.
pub fn absolute(p: &Path) -> std::io::Result<PathBuf> {
    let abs = if p.is_absolute() { p.to_owned() } else { std::env::current_dir()?.join(p) };
    let mut comps: Vec<_> = Vec::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                comps.pop();
            }
            std::path::Component::CurDir => {}
            c => comps.push(c.as_os_str().to_owned()),
        }
    }
    let clean: PathBuf = comps.iter().collect();
    match (clean.parent(), clean.file_name()) {
        (Some(parent), Some(name)) => Ok(parent.canonicalize()?.join(name)),
        _ => Ok(clean),
    }
}

/// The topmost mount at `mount_point`, if any.
pub fn find(mount_point: &Path) -> std::io::Result<Option<MountEntry>> {
    Ok(read()?.into_iter().rev().find(|m| m.mount_point == mount_point))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fuse_entries_with_escaped_names() {
        let text = "36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    97 25 0:52 / /tmp/a\\040b ro,nosuid,nodev,relatime - fuse.vbproxy vbproxy ro,user_id=0,group_id=0,default_permissions\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].mount_point, PathBuf::from("/tmp/a b"));
        assert_eq!(m[1].fstype, FSTYPE);
        assert_eq!(m[1].dev, "0:52");
        assert_eq!(m[1].source, "vbproxy");
        assert_eq!(m[0].fstype, "ext3");
    }
}

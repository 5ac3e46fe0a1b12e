//! Guest OS detection for `inspect`: which volume holds an operating
//! system, and what it says about itself. Reads only small, well-known
//! files through the guest tree.

use crate::fs::FileKind;
use crate::tree::GuestTree;

/// Largest identification file read (os-release, fstab).
const MAX_FILE: u64 = 64 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OsInfo {
    /// `linux` or `windows`.
    pub kind: String,
    /// The volume holding the system root, as in the guest tree: `disk0/p2`.
    pub root: String,
    /// `PRETTY_NAME` (Linux) or the product name when known.
    pub name: Option<String>,
    /// `ID` (Linux: `debian`, `rhel`...).
    pub id: Option<String>,
    pub version: Option<String>,
    /// Linux: `/etc/fstab` entries (device, mount point, type).
    pub fstab: Vec<(String, String, String)>,
    /// Windows: the system root directory, e.g. `/Windows`.
    pub system_root: Option<String>,
}

fn read_small(tree: &GuestTree, path: &str) -> Option<Vec<u8>> {
    let node = tree.resolve(path, true).ok()?;
    let st = tree.stat(node).ok()?;
    if st.kind != FileKind::File {
        return None;
    }
    let mut buf = vec![0u8; st.size.min(MAX_FILE) as usize];
    let mut done = 0;
    while done < buf.len() {
        match tree.read(node, done as u64, &mut buf[done..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    buf.truncate(done);
    Some(buf)
}

fn is_dir(tree: &GuestTree, path: &str) -> bool {
    tree.resolve(path, true).ok().and_then(|n| tree.stat(n).ok()).is_some_and(|s| s.kind == FileKind::Dir)
}

/// `KEY="value"` lines of os-release(5).
fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').trim_matches('\'').to_owned())
    })
}

/// Every OS found on the tree's volumes.
pub fn detect(tree: &GuestTree) -> Vec<OsInfo> {
    let mut found = Vec::new();
    for (d, disk) in tree.disks.iter().enumerate() {
        for (v, vol) in disk.volumes.iter().enumerate() {
            if tree.fs(d, v).is_err() {
                continue;
            }
            let root = format!("/{}/{}", disk.name, vol.volume.id);
            let name = tree.volume_name(d, v);
            if let Some(bytes) = read_small(tree, &format!("{root}/etc/os-release")).or_else(|| read_small(tree, &format!("{root}/usr/lib/os-release"))) {
                let text = String::from_utf8_lossy(&bytes);
                let fstab = read_small(tree, &format!("{root}/etc/fstab"))
                    .map(|b| {
                        String::from_utf8_lossy(&b)
                            .lines()
                            .filter(|l| !l.trim_start().starts_with('#'))
                            .filter_map(|l| {
                                let mut w = l.split_whitespace();
                                Some((w.next()?.to_owned(), w.next()?.to_owned(), w.next()?.to_owned()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                found.push(OsInfo {
                    kind: "linux".into(),
                    root: name,
                    name: os_release_field(&text, "PRETTY_NAME").or_else(|| os_release_field(&text, "NAME")),
                    id: os_release_field(&text, "ID"),
                    version: os_release_field(&text, "VERSION_ID"),
                    fstab,
                    system_root: None,
                });
                continue;
            }
            for sysroot in ["Windows", "WINDOWS", "WINNT"] {
                if is_dir(tree, &format!("{root}/{sysroot}/System32")) {
                    found.push(OsInfo {
                        kind: "windows".into(),
                        root: name.clone(),
                        system_root: Some(format!("/{sysroot}")),
                        ..Default::default()
                    });
                    break;
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #[test]
    fn os_release_fields_parse() {
        let t = "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n";
        assert_eq!(super::os_release_field(t, "ID").as_deref(), Some("debian"));
        assert_eq!(super::os_release_field(t, "VERSION_ID").as_deref(), Some("12"));
        assert_eq!(super::os_release_field(t, "NAME").as_deref(), Some("Debian GNU/Linux"));
    }
}

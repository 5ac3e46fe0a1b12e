//! Reparse points and Interix special files, presented the way ntfs-3g
//! presents them.
//!
//! - IO_REPARSE_TAG_SYMLINK with the relative flag: the substitute name
//!   with `\` turned into `/` (`..\a.txt` -> `../a.txt`).
//! - IO_REPARSE_TAG_SYMLINK absolute, and IO_REPARSE_TAG_MOUNT_POINT
//!   (junctions): `\??\C:\dir` becomes `/.NTFS-3G/C:/dir`. ntfs-3g puts its
//!   mount point in front (`<mnt>/.NTFS-3G/C:/dir`, where an admin may place
//!   a `C:` symlink); we have no mount point, so the target starts at `/`.
//! - Interix files (ntfs-3g's own symlinks, devices, FIFOs, sockets): a
//!   file with the SYSTEM attribute whose content is `IntxLNK\1` + UTF-16
//!   target (symlink), `IntxCHR\0`/`IntxBLK\0` + major + minor (devices),
//!   or empty (FIFO) or one byte long (socket).

use super::record::utf16_name;
use crate::le::{u16le, u32le, u64le};

pub const TAG_MOUNT_POINT: u32 = 0xA000_0003;
pub const TAG_SYMLINK: u32 = 0xA000_000C;
pub const TAG_WOF: u32 = 0x8000_0017;
pub const TAG_DEDUP: u32 = 0x8000_0013;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reparse {
    Symlink(Vec<u8>),
    /// Any other tag: the file is listed but its content is refused.
    Other(u32),
}

pub fn parse(buf: &[u8]) -> Result<Reparse, String> {
    if buf.len() < 8 {
        return Err("reparse point shorter than its header".into());
    }
    let tag = u32le(buf, 0);
    let len = usize::from(u16le(buf, 4));
    let data = buf.get(8..8 + len).ok_or("reparse data longer than the attribute")?;
    let path_start = match tag {
        TAG_SYMLINK => 12,
        TAG_MOUNT_POINT => 8,
        _ => return Ok(Reparse::Other(tag)),
    };
    if data.len() < path_start {
        return Err("reparse data too short for a link".into());
    }
    let (sub_off, sub_len) = (usize::from(u16le(data, 0)), usize::from(u16le(data, 2)));
    let relative = tag == TAG_SYMLINK && u32le(data, 8) & 1 != 0;
    let path = data
        .get(path_start + sub_off..path_start + sub_off + sub_len)
        .ok_or("link substitute name lies outside the reparse data")?;
    let units: Vec<u16> = path.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let mut target = String::from_utf8_lossy(&utf16_name(&units)).replace('\\', "/");
    if !relative {
        // `\??\C:\x` (NT namespace) -> `/.NTFS-3G/C:/x`.
        let rest = target.strip_prefix("/??/").unwrap_or(&target).to_string();
        target = format!("/.NTFS-3G/{rest}");
    }
    Ok(Reparse::Symlink(target.into_bytes()))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interix {
    Symlink(Vec<u8>),
    Char(u64),
    Block(u64),
    Fifo,
    Socket,
}

/// Linux `makedev`.
pub fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xFFFF_F000) << 32) | ((major & 0xFFF) << 8) | ((minor & 0xFFFF_FF00) << 12) | (minor & 0xFF)
}

/// Classifies a SYSTEM file from its size and (for sizes that can be
/// Interix) its content; `None` for an ordinary file.
pub fn interix(size: u64, content: &[u8]) -> Option<Interix> {
    match size {
        0 => return Some(Interix::Fifo),
        1 => return Some(Interix::Socket),
        _ => {}
    }
    let magic = content.get(0..8)?;
    match magic {
        b"IntxLNK\x01" => {
            let units: Vec<u16> = content[8..].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            Some(Interix::Symlink(utf16_name(&units)))
        }
        b"IntxCHR\0" | b"IntxBLK\0" if content.len() == 24 => {
            let dev = makedev(u64le(content, 8), u64le(content, 16));
            Some(if magic == b"IntxCHR\0" { Interix::Char(dev) } else { Interix::Block(dev) })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(tag: u32, subst: &str, flags: Option<u32>) -> Vec<u8> {
        let s: Vec<u8> = subst.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let mut d = Vec::new();
        d.extend_from_slice(&0u16.to_le_bytes());
        d.extend_from_slice(&(s.len() as u16).to_le_bytes());
        d.extend_from_slice(&(s.len() as u16).to_le_bytes());
        d.extend_from_slice(&0u16.to_le_bytes());
        if let Some(f) = flags {
            d.extend_from_slice(&f.to_le_bytes());
        }
        d.extend_from_slice(&s);
        let mut b = tag.to_le_bytes().to_vec();
        b.extend_from_slice(&(d.len() as u16).to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&d);
        b
    }

    #[test]
    fn links_map_like_ntfs3g() {
        assert_eq!(parse(&link(TAG_SYMLINK, r"..\a.txt", Some(1))), Ok(Reparse::Symlink(b"../a.txt".to_vec())));
        assert_eq!(parse(&link(TAG_SYMLINK, r"\??\C:\Windows", Some(0))), Ok(Reparse::Symlink(b"/.NTFS-3G/C:/Windows".to_vec())));
        assert_eq!(parse(&link(TAG_MOUNT_POINT, r"\??\D:\x", None)), Ok(Reparse::Symlink(b"/.NTFS-3G/D:/x".to_vec())));
        assert_eq!(parse(&[0x17, 0, 0, 0x80, 0, 0, 0, 0]), Ok(Reparse::Other(TAG_WOF)));
        let mut short = link(TAG_SYMLINK, "abc", Some(1));
        short.truncate(14);
        assert!(parse(&short).is_err());
    }

    #[test]
    fn interix_kinds() {
        let mut l = b"IntxLNK\x01".to_vec();
        l.extend("a/b".encode_utf16().flat_map(|u| u.to_le_bytes()));
        assert_eq!(interix(l.len() as u64, &l), Some(Interix::Symlink(b"a/b".to_vec())));
        assert_eq!(interix(0, &[]), Some(Interix::Fifo));
        assert_eq!(interix(5, b"hello"), None);
        assert_eq!(makedev(8, 1), 0x801);
    }
}

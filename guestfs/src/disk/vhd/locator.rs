//! Parent locators of differencing disks: where the parent was when the
//! snapshot was taken, in up to eight platform-specific spellings, plus
//! the parent's file name in the dynamic disk header.
//!
//! The disk files have usually moved since (a backup proxy reads them on
//! another host), so every spelling becomes candidate paths relative to
//! the child's directory, tried in order of how likely they are to still
//! be right: a relative path first, then the file name of an absolute one.

use super::dynamic_header::{DynamicHeader, LocatorEntry};
use crate::block::ImageFile;
use crate::namespace::resolve_relative;
use crate::Result;
use std::path::PathBuf;

/// Windows paths are at most 32767 UTF-16 units; URLs no longer in
/// practice. A longer locator is corrupt, and refusing it bounds the read.
const MAX_LOCATOR_BYTES: u32 = 65536;

pub const W2RU: u32 = u32::from_be_bytes(*b"W2ru");
pub const W2KU: u32 = u32::from_be_bytes(*b"W2ku");
pub const WI2R: u32 = u32::from_be_bytes(*b"Wi2r");
pub const WI2K: u32 = u32::from_be_bytes(*b"Wi2k");
pub const MACX: u32 = u32::from_be_bytes(*b"MacX");
/// A classic Mac OS alias record: opaque, cannot be turned into a path.
pub const MAC_ALIAS: u32 = u32::from_be_bytes(*b"Mac ");

/// One decoded locator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locator {
    pub code: u32,
    pub text: String,
}

fn code_name(code: u32) -> String {
    code.to_be_bytes().iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '?' }).collect()
}

/// Reads and decodes every locator the header lists. Offsets and lengths
/// are checked against the file; an undecodable text is corrupt, an
/// unknown platform code is skipped (another spelling may still work).
pub fn read_locators(file: &ImageFile, header: &DynamicHeader) -> Result<Vec<Locator>> {
    let mut out = Vec::new();
    for entry in &header.locators {
        if let Some(text) = read_one(file, header, entry)? {
            out.push(Locator { code: entry.platform_code, text });
        }
    }
    Ok(out)
}

fn read_one(file: &ImageFile, header: &DynamicHeader, e: &LocatorEntry) -> Result<Option<String>> {
    let structure = format!("parent locator {} ({})", e.index, code_name(e.platform_code));
    let known = [W2RU, W2KU, WI2R, WI2K, MACX].contains(&e.platform_code);
    if !known {
        if e.platform_code != MAC_ALIAS {
            tracing::warn!(path = %file.path.display(), "{structure}: unknown platform code ignored");
        }
        return Ok(None);
    }
    if e.data_length > MAX_LOCATOR_BYTES {
        return Err(file.corrupt(&structure, header.offset, format!("data length {} exceeds {MAX_LOCATOR_BYTES} bytes", e.data_length)));
    }
    let data = file.read_vec(&structure, e.data_offset, u64::from(e.data_length))?;
    let text = match e.platform_code {
        W2RU | W2KU => {
            if data.len() % 2 != 0 {
                return Err(file.corrupt(&structure, e.data_offset, format!("UTF-16 path of odd length {}", data.len())));
            }
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c.first().copied().unwrap_or(0), c.get(1).copied().unwrap_or(0)]))
                .collect();
            String::from_utf16(&units).map_err(|_| file.corrupt(&structure, e.data_offset, "path is not valid UTF-16"))?
        }
        // Deprecated ANSI paths: the code page is unknown; ASCII is what
        // matters for file names and anything else is kept as Latin-1.
        WI2R | WI2K => data.iter().map(|&b| char::from(b)).collect(),
        _ => String::from_utf8(data).map_err(|_| file.corrupt(&structure, e.data_offset, "file URL is not valid UTF-8"))?,
    };
    let text = text.trim_end_matches('\0').to_owned();
    Ok((!text.is_empty()).then_some(text))
}

/// Whether a Windows path is absolute (`C:\...`, `\\server\share`, `\x`).
fn is_windows_absolute(p: &str) -> bool {
    let b = p.as_bytes();
    matches!(b, [d, b':', ..] if d.is_ascii_alphabetic()) || p.starts_with('\\') || p.starts_with('/')
}

/// The last component of a Windows or POSIX path.
fn file_name(p: &str) -> &str {
    p.rsplit(['\\', '/']).next().unwrap_or(p)
}

/// Decodes `%XX` escapes of a file URL; malformed escapes stay as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (c, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path of a MacX `file://` URL (`file:///abs`, `file://localhost/abs`,
/// `file://./rel` as blktap writes it).
fn url_path(url: &str) -> String {
    let rest = url.strip_prefix("file://").unwrap_or(url);
    let rest = rest.strip_prefix("localhost").filter(|r| r.starts_with('/')).unwrap_or(rest);
    percent_decode(rest)
}

/// Strips a leading `.\` or `./`, which adds nothing to a path.
fn strip_dot(p: &str) -> &str {
    p.strip_prefix(".\\").or_else(|| p.strip_prefix("./")).unwrap_or(p)
}

/// Candidate parent paths in preference order, and the hint shown when
/// none exists.
pub fn candidates(child: &std::path::Path, locators: &[Locator], parent_name: &str) -> (Vec<PathBuf>, String) {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    let of = |code: u32| locators.iter().filter(move |l| l.code == code).map(|l| l.text.as_str());
    // Relative Windows paths, Unicode then ANSI.
    for rel in of(W2RU).chain(of(WI2R)) {
        push(resolve_relative(child, strip_dot(rel)));
    }
    // Absolute Windows paths name a drive of another host: only their file
    // name is meaningful here, looked for beside the child. A POSIX
    // absolute path (written by Linux tools) is also tried as is.
    for abs in of(W2KU).chain(of(WI2K)) {
        if abs.starts_with('/') {
            push(PathBuf::from(abs));
        }
        if is_windows_absolute(abs) {
            push(resolve_relative(child, file_name(abs)));
        } else {
            push(resolve_relative(child, strip_dot(abs)));
        }
    }
    for url in of(MACX) {
        let p = url_path(url);
        push(resolve_relative(child, strip_dot(&p)));
        if p.starts_with('/') {
            push(resolve_relative(child, file_name(&p)));
        }
    }
    if !parent_name.is_empty() {
        push(resolve_relative(child, strip_dot(parent_name)));
    }
    let hint = [W2KU, W2RU, MACX, WI2K, WI2R]
        .iter()
        .find_map(|&c| of(c).next())
        .unwrap_or(parent_name)
        .to_owned();
    (out, hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn loc(code: u32, text: &str) -> Locator {
        Locator { code, text: text.into() }
    }

    #[test]
    fn candidate_order() {
        let child = Path::new("/ds/vm/snap.vhd");
        let (c, hint) = candidates(
            child,
            &[loc(W2KU, "C:\\VMs\\x\\base.vhd"), loc(W2RU, ".\\sub\\base.vhd"), loc(MACX, "file:///srv/vm%20a/base.vhd")],
            "base-name.vhd",
        );
        let c: Vec<_> = c.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            c,
            ["/ds/vm/sub/base.vhd", "/ds/vm/base.vhd", "/srv/vm a/base.vhd", "/ds/vm/base-name.vhd"]
        );
        assert_eq!(hint, "C:\\VMs\\x\\base.vhd");
    }

    #[test]
    fn unc_and_relative_urls() {
        let child = Path::new("/ds/snap.vhd");
        let (c, _) = candidates(child, &[loc(W2KU, "\\\\srv\\share\\p.vhd"), loc(MACX, "file://./q.vhd")], "");
        assert_eq!(c, [PathBuf::from("/ds/p.vhd"), PathBuf::from("/ds/q.vhd")]);
        let (c, hint) = candidates(child, &[], "parent.vhd");
        assert_eq!((c, hint.as_str()), (vec![PathBuf::from("/ds/parent.vhd")], "parent.vhd"));
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
        assert_eq!(url_path("file://localhost/x/y.vhd"), "/x/y.vhd");
    }
}

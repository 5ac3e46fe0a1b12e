//! A POSIX.1-2001 (PAX) tar writer, as GNU tar reads it: ustar headers,
//! PAX extended headers where a field does not fit (long or non-ASCII
//! names, large sizes and ids, sub-second mtimes), xattrs as
//! `SCHILY.xattr.*` records, hard links, and sparse files in GNU sparse
//! format 1.0 so holes stay holes on extraction.

use std::io::{self, Write};

const BLOCK: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink(Vec<u8>),
    /// A further name of a file already in the archive under this path.
    HardLink(Vec<u8>),
    CharDevice(u32, u32),
    BlockDevice(u32, u32),
    Fifo,
}

#[derive(Clone, Debug)]
pub struct Entry {
    /// Path inside the archive (relative, `/`-separated; directories
    /// without a trailing slash: one is added).
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Content length for files (the real, expanded size for sparse files).
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Data ranges `(offset, len)` of a sparse file; `None` = all data.
    pub sparse: Option<Vec<(u64, u64)>>,
}

pub struct TarWriter<W: Write> {
    out: W,
}

/// Writes `value` as zero-padded octal into `field`, leaving the last byte
/// NUL. Returns false when it does not fit (the caller uses a PAX record).
fn octal(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    if s.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    true
}

/// One PAX record: "<len> <key>=<value>\n", where len counts itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn fits_ustar_name(p: &[u8]) -> bool {
    p.len() <= 100 && p.is_ascii()
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    fn header(&mut self, name: &[u8], typeflag: u8, size: u64, e: &Entry, link: &[u8], dev: (u32, u32)) -> io::Result<()> {
        let mut h = [0u8; BLOCK];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        octal(&mut h[100..108], u64::from(e.mode & 0o7777));
        if !octal(&mut h[108..116], u64::from(e.uid)) {
            octal(&mut h[108..116], 0);
        }
        if !octal(&mut h[116..124], u64::from(e.gid)) {
            octal(&mut h[116..124], 0);
        }
        if !octal(&mut h[124..136], size) {
            octal(&mut h[124..136], 0); // real size in the PAX header
        }
        octal(&mut h[136..148], e.mtime_secs.max(0) as u64);
        h[156] = typeflag;
        let l = link.len().min(100);
        h[157..157 + l].copy_from_slice(&link[..l]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        if matches!(typeflag, b'3' | b'4') {
            octal(&mut h[329..337], u64::from(dev.0));
            octal(&mut h[337..345], u64::from(dev.1));
        }
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.out.write_all(&h)
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes one entry. For files, `content` is called with
    /// `(offset, buf)` for each data range in order and must fill `buf`
    /// completely (the archive's sizes are already written).
    pub fn append(&mut self, e: &Entry, mut content: impl FnMut(u64, &mut [u8]) -> io::Result<()>) -> io::Result<()> {
        let mut path = e.path.clone();
        if e.kind == EntryKind::Dir && !path.ends_with(b"/") {
            path.push(b'/');
        }
        let (typeflag, link, dev): (u8, &[u8], (u32, u32)) = match &e.kind {
            EntryKind::File => (b'0', b"", (0, 0)),
            EntryKind::Dir => (b'5', b"", (0, 0)),
            EntryKind::Symlink(t) => (b'2', t, (0, 0)),
            EntryKind::HardLink(t) => (b'1', t, (0, 0)),
            EntryKind::CharDevice(a, b) => (b'3', b"", (*a, *b)),
            EntryKind::BlockDevice(a, b) => (b'4', b"", (*a, *b)),
            EntryKind::Fifo => (b'6', b"", (0, 0)),
        };
        let is_file = e.kind == EntryKind::File;
        let sparse = match (&e.sparse, is_file) {
            (Some(ranges), true) if ranges.iter().map(|r| r.1).sum::<u64>() < e.size => Some(ranges.clone()),
            _ => None,
        };
        // The sparse map GNU format 1.0 puts before the data.
        let mut map = Vec::new();
        if let Some(ranges) = &sparse {
            let ends_in_hole = ranges.last().map_or(0, |r| r.0 + r.1) < e.size;
            let mut text = format!("{}\n", ranges.len() + usize::from(ends_in_hole));
            for (off, len) in ranges {
                text.push_str(&format!("{off}\n{len}\n"));
            }
            // A file ending in a hole gets a final empty range at its end.
            let end = ranges.last().map_or(0, |r| r.0 + r.1);
            if end < e.size {
                text.push_str(&format!("{}\n0\n", e.size));
            }
            map = text.into_bytes();
            let rem = map.len() % BLOCK;
            if rem != 0 {
                map.resize(map.len() + BLOCK - rem, 0);
            }
        }
        let stored: u64 = match &sparse {
            Some(r) => map.len() as u64 + r.iter().map(|x| x.1).sum::<u64>(),
            None if is_file => e.size,
            None => 0,
        };

        let mut pax = Vec::new();
        let mut ustar_name = path.clone();
        if let Some(_) = &sparse {
            pax_record(&mut pax, b"GNU.sparse.major", b"1");
            pax_record(&mut pax, b"GNU.sparse.minor", b"0");
            pax_record(&mut pax, b"GNU.sparse.name", &path);
            pax_record(&mut pax, b"GNU.sparse.realsize", e.size.to_string().as_bytes());
            // GNU tar names the stored member <dir>/GNUSparseFile.0/<name>.
            let (dir, base) = match path.iter().rposition(|&b| b == b'/') {
                Some(i) => (&path[..=i], &path[i + 1..]),
                None => (&b""[..], &path[..]),
            };
            ustar_name = [dir, b"GNUSparseFile.0/", base].concat();
        }
        if !fits_ustar_name(&ustar_name) {
            if sparse.is_none() {
                pax_record(&mut pax, b"path", &path);
            }
            ustar_name.truncate(100);
        }
        if !link.is_empty() && !fits_ustar_name(link) {
            pax_record(&mut pax, b"linkpath", link);
        }
        if stored >= 1 << 33 {
            pax_record(&mut pax, b"size", stored.to_string().as_bytes());
        }
        if e.uid >= 1 << 21 {
            pax_record(&mut pax, b"uid", e.uid.to_string().as_bytes());
        }
        if e.gid >= 1 << 21 {
            pax_record(&mut pax, b"gid", e.gid.to_string().as_bytes());
        }
        if e.mtime_nanos != 0 || e.mtime_secs < 0 {
            let t = if e.mtime_secs < 0 && e.mtime_nanos != 0 {
                // -1.25 s is secs -2 + 0.75 s: PAX wants a decimal value.
                format!("-{}.{:09}", -(e.mtime_secs + 1), 1_000_000_000 - e.mtime_nanos)
            } else {
                format!("{}.{:09}", e.mtime_secs, e.mtime_nanos)
            };
            pax_record(&mut pax, b"mtime", t.trim_end_matches('0').trim_end_matches('.').as_bytes());
        }
        for (k, v) in &e.xattrs {
            pax_record(&mut pax, &[&b"SCHILY.xattr."[..], k].concat(), v);
        }
        if !path.is_ascii() || !link.is_ascii() {
            // Names are bytes, not necessarily UTF-8: say so (POSIX hdrcharset).
            if std::str::from_utf8(&path).is_err() || std::str::from_utf8(link).is_err() {
                let mut with_charset = Vec::new();
                pax_record(&mut with_charset, b"hdrcharset", b"BINARY");
                with_charset.extend_from_slice(&pax);
                pax = with_charset;
            }
        }
        if !pax.is_empty() {
            let mut pname = b"PaxHeaders/".to_vec();
            let base = ustar_name.rsplit(|&b| b == b'/').find(|s| !s.is_empty()).unwrap_or(b"entry");
            pname.extend_from_slice(&base[..base.len().min(80)]);
            let pe = Entry { mode: 0o644, uid: 0, gid: 0, ..e.clone() };
            self.header(&pname, b'x', pax.len() as u64, &pe, b"", (0, 0))?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        self.header(&ustar_name, typeflag, stored, e, link, dev)?;
        if !is_file {
            return Ok(());
        }
        self.out.write_all(&map)?;
        let ranges = sparse.unwrap_or_else(|| if e.size > 0 { vec![(0, e.size)] } else { Vec::new() });
        let mut buf = vec![0u8; 1 << 20];
        for (off, len) in ranges {
            let mut done = 0;
            while done < len {
                let n = (len - done).min(buf.len() as u64) as usize;
                content(off + done, &mut buf[..n])?;
                self.out.write_all(&buf[..n])?;
                done += n as u64;
            }
        }
        self.pad(stored)
    }

    /// Ends the archive (two zero blocks) and flushes.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", b"a");
        assert_eq!(v, b"9 path=a\n");
        let mut v = Vec::new();
        pax_record(&mut v, b"k", &[b'x'; 94]);
        // 1 + 94 + 3 = 98 body; with "100" prefix: 101? body+3 = 101 -> "101 " ...
        let text = String::from_utf8(v.clone()).unwrap();
        let len: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(len, v.len());
    }

    #[test]
    fn octal_refuses_what_does_not_fit() {
        let mut f = [0u8; 12];
        assert!(octal(&mut f, 0o77777777777));
        assert!(!octal(&mut f, 1 << 33));
    }
}

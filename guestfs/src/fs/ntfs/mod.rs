//! NTFS reader (own parser; see `docs` in the report for why not the `ntfs`
//! crate: it needs `&mut Read + Seek` per call, ties files to borrows so
//! nothing can be cached, and follows index sub-node pointers without a
//! bound).
//!
//! What is handled: MFT records with fixups, attribute lists (extension
//! records), data runs and sparse runs, LZNT1-compressed attributes,
//! directories from $INDEX_ROOT plus every in-use $INDEX_ALLOCATION block
//! (read linearly, so a sub-node cycle cannot loop), hard links (one MFT
//! record under several names), alternate data streams (as `user.<name>`
//! xattrs, like ntfs-3g's `streams_interface=xattr`), symlink and junction
//! reparse points, Interix symlinks/devices/FIFOs/sockets (what ntfs-3g
//! itself creates).
//!
//! What is refused with an error for that file (it is still listed): EFS
//! encrypted files, WOF/CompactOS (reparse tag 0x80000017), dedup and any
//! other reparse tag.
//!
//! Metadata mapping (matches `ntfs-3g -o ro` without the `permissions`
//! option, mounted by root): uid 0, gid 0, mode 0777 for everything (the
//! READONLY attribute too: ntfs-3g ignores it).
//! mtime/atime/btime from $STANDARD_INFORMATION, ctime = its MFT-change
//! time. nlink = number of names other than DOS 8.3 aliases. Directory
//! entries for MFT records below 16 (the metafiles) are hidden, as ntfs-3g
//! hides them.
//!
//! A dirty volume (unreplayed $LogFile) is read as it is on disk, as
//! `ntfs-3g -o ro` does; we never replay the log.
//!
//! Names: UTF-16 is converted to UTF-8; unpaired surrogates become U+FFFD.

mod lznt1;
mod node;
mod record;
mod reparse;

use super::{DirEntry, FileId, FileKind, Filesystem, FsInfo, Stat, Xattr};
use crate::block::{ImageFile, ReadAt};
use crate::cache::BoundedCache;
use crate::le::{u16le, u32le};
use crate::{Error, Result};
use node::{Node, Stream, StreamData};
use record::{Run, BootSector};
use std::sync::Arc;

const ROOT_RECORD: u64 = 5;
const FIRST_USER_RECORD: u64 = 16;
/// Extension records one file may have: far above real files (a heavily
/// fragmented file has dozens), low enough to bound the work.
const MAX_EXTENSION_RECORDS: usize = 4096;
/// A directory listing larger than this many entries is refused.
const MAX_DIR_ENTRIES: usize = 10_000_000;

/// `Ok(None)` when `src` does not carry NTFS.
pub fn probe(src: Arc<dyn ReadAt>, name: &str) -> Result<Option<Box<dyn Filesystem>>> {
    Ok(Ntfs::open(src, name)?.map(|f| Box::new(f) as Box<dyn Filesystem>))
}

pub struct Ntfs {
    file: ImageFile,
    boot: BootSector,
    /// The runs of $MFT's unnamed $DATA: where every record lives.
    mft_runs: Vec<Run>,
    mft_size: u64,
    label: Option<String>,
    nodes: BoundedCache<u64, Node>,
    dirs: BoundedCache<u64, Vec<DirEntry>>,
    /// Decompressed compression units keyed by (record, unit number).
    units: BoundedCache<(u64, u64), Vec<u8>>,
}

impl Ntfs {
    pub fn open(src: Arc<dyn ReadAt>, name: &str) -> Result<Option<Ntfs>> {
        let file = ImageFile::new(src, name);
        let Some(boot) = record::parse_boot(&file)? else { return Ok(None) };
        // Record 0 ($MFT) is at the MFT's first cluster; it describes where
        // the rest of the MFT is.
        let off = boot.mft_lcn * boot.cluster_size;
        let buf = file.read_vec("MFT record 0 ($MFT)", off, boot.mft_record_size)?;
        let rec0 = record::parse_record(&file, buf, 0, off, boot.cluster_size)?;
        let mut fs = Ntfs {
            file,
            boot,
            mft_runs: Vec::new(),
            mft_size: 0,
            label: None,
            nodes: BoundedCache::new(4096),
            dirs: BoundedCache::new(256),
            units: BoundedCache::new(64),
        };
        // $MFT may itself need an attribute list; build it with a bootstrap
        // MFT made of record 0's own $DATA extent first.
        let first = rec0
            .attributes
            .iter()
            .find(|a| a.ty == record::ATTR_DATA && a.name.is_empty())
            .ok_or_else(|| fs.file.corrupt("MFT record 0 ($MFT)", off, "no $DATA attribute"))?;
        if let record::AttrBody::NonResident { runs, data_size, .. } = &first.body {
            fs.mft_runs = runs.clone();
            fs.mft_size = *data_size;
        } else {
            return Err(fs.file.corrupt("MFT record 0 ($MFT)", off, "$DATA is resident"));
        }
        let mft = fs.load_node(0)?;
        let data = mft.main_stream().ok_or_else(|| fs.file.corrupt("MFT record 0 ($MFT)", off, "no $DATA"))?;
        if let StreamData::NonResident { runs, data_size, .. } = &data.data {
            fs.mft_runs = runs.clone();
            fs.mft_size = *data_size;
        }
        fs.label = fs.volume_label().ok().flatten();
        // The root must be a readable directory, or nothing is.
        let root = fs.node(ROOT_RECORD)?;
        if root.index_root.is_none() {
            return Err(fs.file.corrupt("MFT record 5 (root directory)", 0, "the root directory has no $I30 index"));
        }
        Ok(Some(fs))
    }

    fn volume_label(&self) -> Result<Option<String>> {
        // $VOLUME_NAME (0x60) lives in $Volume's base record.
        let rec = self.read_record(3)?;
        Ok(rec.attributes.iter().find(|a| a.ty == 0x60).and_then(|a| match &a.body {
            record::AttrBody::Resident(v) => {
                let units: Vec<u16> = v.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                Some(String::from_utf8_lossy(&record::utf16_name(&units)).into_owned())
            }
            _ => None,
        }))
    }

    /// Volume offset of MFT record `n`.
    fn record_offset(&self, n: u64) -> Result<u64> {
        let rs = self.boot.mft_record_size;
        let cs = self.boot.cluster_size;
        let byte = n.checked_mul(rs).filter(|b| b.checked_add(rs).is_some_and(|e| e <= self.mft_size)).ok_or_else(|| {
            self.file.corrupt(&format!("MFT record {n}"), 0, format!("record number beyond the MFT ({} bytes)", self.mft_size))
        })?;
        let vcn = byte / cs;
        let run = find_run(&self.mft_runs, vcn)
            .and_then(|r| r.lcn.map(|l| (l, r.vcn)))
            .ok_or_else(|| self.file.corrupt(&format!("MFT record {n}"), 0, "the MFT has no cluster for this record"))?;
        // Records are never split across runs when record size <= cluster
        // size; for larger records, check the record is contiguous.
        let off = run
            .0
            .checked_add(vcn - run.1)
            .and_then(|c| c.checked_mul(cs))
            .and_then(|o| o.checked_add(byte % cs))
            .ok_or_else(|| self.file.corrupt(&format!("MFT record {n}"), 0, "MFT cluster number overflows"))?;
        if rs > cs {
            let last = find_run(&self.mft_runs, (byte + rs - 1) / cs);
            let contiguous = last.and_then(|r| {
                r.lcn.and_then(|l| l.checked_add((byte + rs - 1) / cs - r.vcn)?.checked_mul(cs)?.checked_add((byte + rs - 1) % cs))
            });
            if contiguous != Some(off + rs - 1) {
                return Err(self.file.unsupported(&format!("MFT record {n}"), off, "record split across MFT fragments"));
            }
        }
        Ok(off)
    }

    fn read_record(&self, n: u64) -> Result<record::MftRecord> {
        let off = self.record_offset(n)?;
        let buf = self.file.read_vec(&format!("MFT record {n}"), off, self.boot.mft_record_size)?;
        record::parse_record(&self.file, buf, n, off, self.boot.cluster_size)
    }

    /// Loads and decodes a file (uncached).
    fn load_node(&self, n: u64) -> Result<Node> {
        let base = self.read_record(n)?;
        let what = format!("MFT record {n}");
        let off = self.record_offset(n)?;
        if base.flags & record::RECORD_IN_USE == 0 {
            return Err(self.file.corrupt(&what, off, "record is not in use (deleted file)"));
        }
        if base.base_record != 0 {
            return Err(self.file.corrupt(&what, off, format!("record is an extension of record {}, not a file", base.base_record)));
        }
        let mut attrs = base.attributes.clone();
        if let Some(list) = base.attributes.iter().find(|a| a.ty == record::ATTR_ATTRIBUTE_LIST) {
            let value = match &list.body {
                record::AttrBody::Resident(v) => v.clone(),
                record::AttrBody::NonResident { .. } => {
                    let stream = attr_as_stream(list).map_err(|(o, e)| self.file.corrupt(&what, o, e))?;
                    let size = stream.size();
                    if size > 16 * 1024 * 1024 {
                        return Err(self.file.corrupt(&what, list.offset, "attribute list larger than 16 MiB"));
                    }
                    let mut v = vec![0u8; size as usize];
                    self.read_stream(n, &stream, 0, &mut v)?;
                    v
                }
            };
            let records = node::attribute_list_records(&value).map_err(|e| self.file.corrupt(&what, list.offset, e))?;
            if records.len() > MAX_EXTENSION_RECORDS {
                return Err(self.file.corrupt(&what, list.offset, "attribute list names too many records"));
            }
            for r in records.into_iter().filter(|&r| r != n) {
                let ext = self.read_record(r)?;
                if ext.base_record != n {
                    return Err(self.file.corrupt(
                        &format!("MFT record {r}"),
                        self.record_offset(r)?,
                        format!("extension record of file {n} belongs to record {}", ext.base_record),
                    ));
                }
                attrs.extend(ext.attributes);
            }
        }
        Node::build(&base, attrs).map_err(|(o, e)| self.file.corrupt(&what, o, e))
    }

    fn node(&self, n: u64) -> Result<Arc<Node>> {
        self.nodes.get_or_load(n, || self.load_node(n))
    }

    /// Reads `buf.len()` bytes of a stream at `offset` (caller clips to the
    /// stream size). `record` keys the decompression cache.
    fn read_stream(&self, record: u64, s: &Stream, offset: u64, buf: &mut [u8]) -> Result<()> {
        match &s.data {
            StreamData::Resident(v) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let src = start.checked_add(buf.len()).and_then(|e| v.get(start..e));
                let src = src.ok_or_else(|| self.file.corrupt("resident attribute", s.offset, "read past its value"))?;
                buf.copy_from_slice(src);
                Ok(())
            }
            StreamData::NonResident { runs, initialized_size, compression_unit, .. } => {
                if *compression_unit > 0 && s.flags & record::ATTR_FLAG_COMPRESSED != 0 {
                    return self.read_compressed(record, s, runs, *compression_unit, *initialized_size, offset, buf);
                }
                let cs = self.boot.cluster_size;
                let mut done = 0usize;
                while done < buf.len() {
                    let pos = offset + done as u64;
                    let rest = &mut buf[done..];
                    if pos >= *initialized_size {
                        // Past the initialized size, NTFS reads zeros.
                        rest.fill(0);
                        break;
                    }
                    let vcn = pos / cs;
                    let run = find_run(runs, vcn).ok_or_else(|| {
                        self.file.corrupt(&format!("data runs of MFT record {record}"), s.offset, format!("no run maps cluster {vcn}"))
                    })?;
                    let run_end = run.vcn.saturating_add(run.len).saturating_mul(cs);
                    let n = (run_end.min(*initialized_size) - pos).min(rest.len() as u64) as usize;
                    match run.lcn {
                        None => rest[..n].fill(0),
                        Some(lcn) => {
                            let at = (lcn + (vcn - run.vcn)).checked_mul(cs).and_then(|b| b.checked_add(pos % cs));
                            let at = at.ok_or_else(|| self.file.corrupt("data run", s.offset, "cluster number overflows"))?;
                            self.file.read(&format!("data of MFT record {record}"), at, &mut rest[..n])?;
                        }
                    }
                    done += n;
                }
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read_compressed(&self, record: u64, s: &Stream, runs: &[Run], cu: u8, init: u64, offset: u64, buf: &mut [u8]) -> Result<()> {
        let cs = self.boot.cluster_size;
        let unit_clusters = 1u64 << cu;
        let unit_size = cs * unit_clusters;
        if unit_size > 4 * 1024 * 1024 {
            return Err(self.file.unsupported("compressed attribute", s.offset, "compression unit larger than 4 MiB"));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let unit = pos / unit_size;
            let data = self.units.get_or_load((record, unit), || self.decode_unit(record, s, runs, unit, unit_clusters))?;
            let in_unit = (pos % unit_size) as usize;
            let n = (data.len() - in_unit).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&data[in_unit..in_unit + n]);
            // Bytes past the initialized size read as zeros.
            for (i, b) in buf[done..done + n].iter_mut().enumerate() {
                if pos + i as u64 >= init {
                    *b = 0;
                }
            }
            done += n;
        }
        Ok(())
    }

    /// One compression unit: all clusters sparse -> zeros; all allocated ->
    /// stored as is; allocated clusters followed by sparse ones -> LZNT1.
    fn decode_unit(&self, record: u64, s: &Stream, runs: &[Run], unit: u64, k: u64) -> Result<Vec<u8>> {
        let cs = self.boot.cluster_size;
        let what = format!("compression unit {unit} of MFT record {record}");
        let first_vcn = unit * k;
        let mut raw = Vec::new();
        let mut allocated = 0u64;
        let mut vcn = first_vcn;
        let mut seen_hole = false;
        while vcn < first_vcn + k {
            let run = find_run(runs, vcn).ok_or_else(|| self.file.corrupt(&what, s.offset, format!("no run maps cluster {vcn}")))?;
            let n = run.vcn.saturating_add(run.len).min(first_vcn + k) - vcn;
            match run.lcn {
                None => seen_hole = true,
                Some(lcn) => {
                    if seen_hole {
                        return Err(self.file.corrupt(&what, s.offset, "allocated clusters after the sparse tail of a compression unit"));
                    }
                    let at = lcn.checked_add(vcn - run.vcn).and_then(|c| c.checked_mul(cs));
                    let at = at.ok_or_else(|| self.file.corrupt(&what, s.offset, "cluster number overflows"))?;
                    let mut part = self.file.read_vec(&what, at, n * cs)?;
                    raw.append(&mut part);
                    allocated += n;
                }
            }
            vcn += n;
        }
        let mut out = vec![0u8; (k * cs) as usize];
        if allocated == 0 {
            return Ok(out);
        }
        if allocated == k {
            return Ok(raw);
        }
        lznt1::decompress(&raw, &mut out).map_err(|e| self.file.corrupt(&what, s.offset, format!("LZNT1 data is corrupt: {e}")))?;
        Ok(out)
    }

    /// Reads a whole small stream (reparse data, Interix headers).
    fn read_small(&self, record: u64, s: &Stream, max: u64) -> Result<Vec<u8>> {
        let size = s.size();
        if size > max {
            return Err(self.file.corrupt("attribute", s.offset, format!("value of {size} bytes is larger than {max}")));
        }
        let mut v = vec![0u8; size as usize];
        self.read_stream(record, s, 0, &mut v)?;
        Ok(v)
    }

    /// What kind of file `node` is, and for links their target, for
    /// devices their number.
    fn classify(&self, node: &Node) -> Result<(FileKind, Option<Vec<u8>>, u64)> {
        if let Some(rp) = &node.reparse {
            let buf = self.read_small(node.record, rp, 64 * 1024)?;
            match reparse::parse(&buf).map_err(|e| self.file.corrupt(&format!("reparse point of MFT record {}", node.record), rp.offset, e))? {
                reparse::Reparse::Symlink(t) => return Ok((FileKind::Symlink, Some(t), 0)),
                reparse::Reparse::Other(_) => {}
            }
        }
        if node.is_dir {
            return Ok((FileKind::Dir, None, 0));
        }
        if node.std_info.attributes & node::FILE_ATTR_SYSTEM != 0 && node.reparse.is_none() {
            if let Some(s) = node.main_stream() {
                let size = s.size();
                if size <= 2 + 8 + 2 * 4096 {
                    let content = self.read_small(node.record, s, size)?;
                    if let Some(x) = reparse::interix(size, &content) {
                        return Ok(match x {
                            reparse::Interix::Symlink(t) => (FileKind::Symlink, Some(t), 0),
                            reparse::Interix::Char(d) => (FileKind::CharDevice, None, d),
                            reparse::Interix::Block(d) => (FileKind::BlockDevice, None, d),
                            reparse::Interix::Fifo => (FileKind::Fifo, None, 0),
                            reparse::Interix::Socket => (FileKind::Socket, None, 0),
                        });
                    }
                }
            }
        }
        Ok((FileKind::File, None, 0))
    }

    fn list_dir(&self, id: u64) -> Result<Vec<DirEntry>> {
        let node = self.node(id)?;
        let what = format!("directory index of MFT record {id}");
        let root = node.index_root.as_ref().ok_or_else(|| self.file.corrupt(&what, 0, "not a directory (no $I30 index root)"))?;
        let mut raw: Vec<(u64, node::FileName)> = Vec::new();
        if root.len() < 32 {
            return Err(self.file.corrupt(&what, 0, "index root too short"));
        }
        parse_index_node(root, 16).map_err(|e| self.file.corrupt(&what, 0, format!("index root: {e}")))?.into_iter().for_each(|e| raw.push(e));
        let block_size = u64::from(u32le(root, 8));
        if let Some(alloc) = &node.index_allocation {
            if block_size < 512 || block_size > 64 * 1024 || !block_size.is_power_of_two() {
                return Err(self.file.corrupt(&what, alloc.offset, format!("index block size {block_size} is invalid")));
            }
            let bitmap = match &node.index_bitmap {
                Some(b) => self.read_small(id, b, 1 << 24)?,
                None => return Err(self.file.corrupt(&what, alloc.offset, "index allocation without a $BITMAP")),
            };
            let blocks = alloc.size() / block_size;
            let mut buf = vec![0u8; block_size as usize];
            for i in 0..blocks {
                let in_use = bitmap.get((i / 8) as usize).is_some_and(|b| b & (1 << (i % 8)) != 0);
                if !in_use {
                    continue;
                }
                self.read_stream(id, alloc, i * block_size, &mut buf)?;
                let label = format!("index block {i} of MFT record {id}");
                record::apply_fixups(&self.file, &mut buf, b"INDX", &label, alloc.offset)?;
                let entries = parse_index_node(&buf, 0x18).map_err(|e| self.file.corrupt(&label, alloc.offset, e))?;
                raw.extend(entries);
                if raw.len() > MAX_DIR_ENTRIES {
                    return Err(self.file.corrupt(&what, alloc.offset, "too many directory entries"));
                }
            }
        }
        let mut out: Vec<DirEntry> = Vec::with_capacity(raw.len());
        let mut seen = std::collections::HashSet::new();
        for (rec, f) in raw {
            if f.namespace == node::NAMESPACE_DOS || rec < FIRST_USER_RECORD {
                continue;
            }
            let name = record::utf16_name(&f.name);
            if !seen.insert((rec, name.clone())) {
                continue;
            }
            let kind = if f.flags & node::FILE_NAME_IS_DIRECTORY != 0 && f.flags & node::FILE_ATTR_REPARSE_POINT == 0 {
                FileKind::Dir
            } else if f.flags & (node::FILE_ATTR_REPARSE_POINT | node::FILE_ATTR_SYSTEM) != 0 {
                // Could be a link or an Interix special file: look.
                match self.node(rec).and_then(|n| self.classify(&n)) {
                    Ok((k, _, _)) => k,
                    Err(_) => FileKind::File,
                }
            } else {
                FileKind::File
            };
            out.push(DirEntry { name, id: rec, kind });
        }
        Ok(out)
    }

    /// `disk0/p1:/dir/file` for errors about file `id` (best effort: the
    /// first non-DOS name chain up to the root, bounded).
    fn path_of(&self, id: u64) -> String {
        let mut parts = Vec::new();
        let mut cur = id;
        for _ in 0..256 {
            if cur == ROOT_RECORD {
                parts.reverse();
                return format!("/{}", parts.join("/"));
            }
            let Ok(n) = self.node(cur) else { break };
            let Some(f) = n.visible_names().next() else { break };
            parts.push(String::from_utf8_lossy(&record::utf16_name(&f.name)).into_owned());
            cur = f.parent;
        }
        format!("MFT record {id}")
    }

    /// Rewrites errors about this volume to name the file too.
    fn at(&self, id: u64, e: Error) -> Error {
        let mut e = e;
        let file_path = format!("{}:{}", self.file.path.display(), self.path_of(id));
        match &mut e {
            Error::Corrupt { path, .. } | Error::Unsupported { path, .. } | Error::Truncated { path, .. } | Error::Io { path, .. }
                if *path == self.file.path =>
            {
                *path = file_path.into();
            }
            _ => {}
        }
        e
    }

    fn stat_inner(&self, id: u64) -> Result<Stat> {
        let node = self.node(id)?;
        let (kind, target, rdev) = self.classify(&node)?;
        let size = match kind {
            FileKind::Symlink => target.as_ref().map_or(0, |t| t.len() as u64),
            FileKind::Dir => 0,
            FileKind::File => node.main_stream().map_or(0, |s| s.size()),
            _ => 0,
        };
        // As ntfs-3g shows it without the `permissions` option; it ignores
        // the READONLY attribute too.
        let mode = 0o777;
        let si = &node.std_info;
        Ok(Stat {
            id,
            kind,
            size,
            mode,
            uid: 0,
            gid: 0,
            nlink: node.visible_names().count().max(1) as u32,
            atime: si.accessed,
            mtime: si.modified,
            ctime: si.mft_changed,
            btime: Some(si.created),
            rdev,
        })
    }

    /// Refuses content this reader cannot decode, with the reason.
    fn check_readable(&self, node: &Node) -> Result<()> {
        let what = format!("MFT record {}", node.record);
        if node.efs || node.std_info.attributes & node::FILE_ATTR_ENCRYPTED != 0 {
            return Err(self.file.unsupported(&what, 0, "the file is EFS-encrypted; its content cannot be read without the user's key"));
        }
        if let Some(s) = node.main_stream() {
            if s.flags & record::ATTR_FLAG_ENCRYPTED != 0 {
                return Err(self.file.unsupported(&what, s.offset, "the $DATA attribute is encrypted"));
            }
            if s.flags & record::ATTR_FLAG_COMPRESSED != 0 {
                if let StreamData::NonResident { compression_unit: 0, .. } = s.data {
                    return Err(self.file.unsupported(&what, s.offset, "compressed attribute without a compression unit"));
                }
            }
        }
        if let Some(rp) = &node.reparse {
            let buf = self.read_small(node.record, rp, 64 * 1024)?;
            if let Ok(reparse::Reparse::Other(tag)) = reparse::parse(&buf) {
                let reason = match tag {
                    reparse::TAG_WOF => "WOF/CompactOS-compressed file (reparse tag 0x80000017): decoding is not supported".to_string(),
                    reparse::TAG_DEDUP => "data-deduplicated file (reparse tag 0x80000013): its content lives in the dedup chunk store".to_string(),
                    t => format!("unsupported reparse tag {t:#010x}"),
                };
                return Err(self.file.unsupported(&what, rp.offset, reason));
            }
        }
        Ok(())
    }
}

/// Builds a stream from a single attribute (for a non-resident attribute list).
fn attr_as_stream(a: &record::Attribute) -> std::result::Result<Stream, (u64, String)> {
    match &a.body {
        record::AttrBody::Resident(v) => Ok(Stream { name: Vec::new(), flags: a.flags, data: StreamData::Resident(v.clone()), offset: a.offset }),
        record::AttrBody::NonResident { start_vcn: 0, runs, data_size, initialized_size, .. } => Ok(Stream {
            name: Vec::new(),
            flags: 0,
            data: StreamData::NonResident { runs: runs.clone(), data_size: *data_size, initialized_size: *initialized_size, compression_unit: 0 },
            offset: a.offset,
        }),
        _ => Err((a.offset, "attribute list does not start at VCN 0".into())),
    }
}

fn find_run(runs: &[Run], vcn: u64) -> Option<&Run> {
    let i = runs.partition_point(|r| r.vcn.saturating_add(r.len) <= vcn);
    runs.get(i).filter(|r| r.vcn <= vcn)
}

/// The entries of one index node whose header starts at `hdr` in `buf`.
fn parse_index_node(buf: &[u8], hdr: usize) -> std::result::Result<Vec<(u64, node::FileName)>, String> {
    if buf.len() < hdr + 16 {
        return Err("index node header truncated".into());
    }
    let start = hdr + u32le(buf, hdr) as usize;
    let end = (hdr + u32le(buf, hdr + 4) as usize).min(buf.len());
    let mut out = Vec::new();
    let mut pos = start;
    while pos + 16 <= end {
        let len = usize::from(u16le(buf, pos + 8));
        let key_len = usize::from(u16le(buf, pos + 10));
        let flags = u16le(buf, pos + 12);
        if flags & 2 != 0 {
            return Ok(out);
        }
        if len < 16 || pos + len > end || 16 + key_len > len {
            return Err(format!("index entry at {pos} has invalid length {len}"));
        }
        let rec = crate::le::u64le(buf, pos) & 0x0000_FFFF_FFFF_FFFF;
        let f = node::parse_file_name(&buf[pos + 16..pos + 16 + key_len]).ok_or_else(|| format!("index entry at {pos}: bad file name key"))?;
        out.push((rec, f));
        pos += len;
    }
    Err("index node has no last entry".into())
}

impl Filesystem for Ntfs {
    fn info(&self) -> FsInfo {
        FsInfo {
            kind: "ntfs".into(),
            label: self.label.clone(),
            uuid: Some(format!("{:016X}", self.boot.serial)),
            block_size: self.boot.cluster_size as u32,
            total_bytes: self.boot.total_bytes,
            used_bytes: None,
        }
    }

    fn root(&self) -> FileId {
        ROOT_RECORD
    }

    fn stat(&self, id: FileId) -> Result<Stat> {
        self.stat_inner(id).map_err(|e| self.at(id, e))
    }

    fn read_dir(&self, id: FileId) -> Result<Vec<DirEntry>> {
        self.dirs.get_or_load(id, || self.list_dir(id)).map(|v| (*v).clone()).map_err(|e| self.at(id, e))
    }

    fn lookup(&self, dir: FileId, name: &[u8]) -> Result<Option<FileId>> {
        // Searches the cached listing without copying it (the default
        // clones the whole directory per lookup).
        let entries = self.dirs.get_or_load(dir, || self.list_dir(dir)).map_err(|e| self.at(dir, e))?;
        Ok(entries.iter().find(|e| e.name == name).map(|e| e.id))
    }

    fn read(&self, id: FileId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut go = || -> Result<usize> {
            let node = self.node(id)?;
            if node.is_dir {
                return Err(self.file.corrupt(&format!("MFT record {id}"), 0, "is a directory"));
            }
            self.check_readable(&node)?;
            let Some(s) = node.main_stream() else { return Ok(0) };
            let size = s.size();
            if offset >= size {
                return Ok(0);
            }
            let n = (size - offset).min(buf.len() as u64) as usize;
            self.read_stream(id, s, offset, &mut buf[..n])?;
            Ok(n)
        };
        go().map_err(|e| self.at(id, e))
    }

    fn readlink(&self, id: FileId) -> Result<Vec<u8>> {
        let go = || -> Result<Vec<u8>> {
            let node = self.node(id)?;
            match self.classify(&node)? {
                (FileKind::Symlink, Some(t), _) => Ok(t),
                _ => Err(self.file.corrupt(&format!("MFT record {id}"), 0, "not a symbolic link")),
            }
        };
        go().map_err(|e| self.at(id, e))
    }

    fn xattrs(&self, id: FileId) -> Result<Vec<Xattr>> {
        let go = || -> Result<Vec<Xattr>> {
            let node = self.node(id)?;
            let mut out = Vec::new();
            for s in node.data.iter().filter(|s| !s.name.is_empty()) {
                let mut name = b"user.".to_vec();
                name.extend(record::utf16_name(&s.name));
                // xattr values are capped at 64 KiB by Linux; larger streams
                // are not representable as xattrs.
                let value = self.read_small(id, s, 64 * 1024)?;
                out.push(Xattr { name, value });
            }
            Ok(out)
        };
        go().map_err(|e| self.at(id, e))
    }

    fn data_ranges(&self, id: FileId) -> Result<Vec<(u64, u64)>> {
        let go = || -> Result<Vec<(u64, u64)>> {
            let node = self.node(id)?;
            let Some(s) = node.main_stream() else { return Ok(Vec::new()) };
            let size = s.size();
            let StreamData::NonResident { runs, initialized_size, compression_unit, .. } = &s.data else {
                return Ok(if size == 0 { Vec::new() } else { vec![(0, size)] });
            };
            let cs = self.boot.cluster_size;
            // For compressed files a unit with any allocated cluster is data.
            let gran = if *compression_unit > 0 { cs << compression_unit } else { cs };
            let mut out: Vec<(u64, u64)> = Vec::new();
            for r in runs.iter().filter(|r| r.lcn.is_some()) {
                let start = r.vcn.saturating_mul(cs) / gran * gran;
                let end = r.vcn.saturating_add(r.len).saturating_mul(cs).div_ceil(gran).saturating_mul(gran);
                let end = end.min(*initialized_size).min(size);
                if start >= end {
                    continue;
                }
                match out.last_mut() {
                    Some(l) if l.0 + l.1 >= start => l.1 = l.1.max(end - l.0),
                    _ => out.push((start, end - start)),
                }
            }
            Ok(out)
        };
        go().map_err(|e| self.at(id, e))
    }
}

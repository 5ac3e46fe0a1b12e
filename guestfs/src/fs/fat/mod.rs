//! FAT12/16/32 reader with long (VFAT) names.
//!
//! Why not the `fatfs` crate (reviewed at 0.3.6) behind a read-only
//! adapter: its `FileSystem` needs `Read + Write + Seek` storage and keeps
//! its state in `Cell`/`RefCell`, so it is not `Sync` and every call would
//! serialise behind one lock; its `File` borrows the filesystem and only
//! reads sequentially, so a positional read must walk the cluster chain
//! from the start again (quadratic for large files); its directory entries
//! expose no stable position to use as a file id; and it writes on its own
//! (access dates, the FSInfo sector and the volume dirty flag on unmount),
//! which an adapter could only refuse by failing its operations. A direct
//! reader of this small format is simpler to make correct, and it has no
//! write path at all.
//!
//! What the kernel's `vfat` driver shows with default options, and so what
//! this reader shows:
//! - names: the long name when its entries are complete and their checksum
//!   matches the short entry, else the short name (lower-cased where the
//!   NT "lowercase" flags say so, bytes above 0x7F decoded as code page
//!   437). Unpaired UTF-16 surrogates in long names become U+FFFD.
//! - modes: 0777 minus a 022 umask (the kernel uses the mounting process's
//!   umask; 022 is the usual one): directories 0755, files 0755, files with
//!   the read-only attribute 0555. Owner 0:0.
//! - times: DOS times are local time without a zone; like the kernel with
//!   no `tz=`/`time_offset=` option (and the usual zero kernel timezone) we
//!   read them as UTC. mtime has 2-second resolution, atime is a date,
//!   creation time has 10 ms resolution. ctime is the mtime, as in Linux.
//! - ids: the root is 1; every other file is the byte offset of its short
//!   directory entry in the volume, stable and unique (no hard links).
//!
//! Hostile input: cluster chains are followed at most as far as the file
//! size needs (directories: 2 MiB, the kernel's limit), every cluster once
//! (a repeat is a loop: an error for that file), and every FAT value is
//! checked (free, bad or out-of-range clusters inside a chain are errors).

use super::{DirEntry, FileId, FileKind, Filesystem, FsInfo, Stat, Timestamp};
use crate::block::{ImageFile, ReadAt};
use crate::cache::BoundedCache;
use crate::le::{u16le, u32le};
use crate::{Error, Result};
use std::collections::HashSet;
use std::sync::Arc;

const ROOT_ID: FileId = 1;
const FAT_CHUNK: u64 = 64 * 1024;
/// The kernel refuses directories larger than this (`FAT_MAX_DIR_SIZE`).
const MAX_DIR_BYTES: u64 = 2 << 20;
const ATTR_RO: u8 = 0x01;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const ATTR_LFN: u8 = 0x0F;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

/// A directory entry's facts (from its short 8.3 entry).
#[derive(Clone, Debug)]
struct Entry {
    attr: u8,
    first_cluster: u32,
    size: u32,
    mtime: Timestamp,
    atime: Timestamp,
    btime: Timestamp,
}

pub struct FatFs {
    file: ImageFile,
    fat_type: FatType,
    cluster_size: u64,
    fat_offset: u64,
    root_offset: u64,
    root_bytes: u64,
    root_cluster: u32,
    data_offset: u64,
    /// Clusters 2..cluster_count+2 exist.
    cluster_count: u32,
    total_bytes: u64,
    label: Option<String>,
    serial: u32,
    fat_cache: BoundedCache<u64, Vec<u8>>,
    chains: BoundedCache<(u32, u64), Vec<(u32, u32)>>,
    dirs: BoundedCache<FileId, Vec<DirEntry>>,
}

/// `Ok(None)` when `src` has no FAT boot sector.
pub fn probe(src: Arc<dyn ReadAt>, name: &str) -> Result<Option<Box<dyn Filesystem>>> {
    if src.size() < 512 {
        return Ok(None);
    }
    let file = ImageFile::new(src, name);
    let mut bs = vec![0u8; 512];
    file.read("FAT boot sector", 0, &mut bs)?;
    if !looks_like_fat(&bs) {
        return Ok(None);
    }
    Ok(Some(Box::new(FatFs::open_with(file, &bs)?)))
}

/// A FAT boot sector: jump, signature and a sane BPB, and not NTFS/exFAT
/// (which share the signature).
fn looks_like_fat(bs: &[u8]) -> bool {
    let bps = u16le(bs, 11);
    let spc = bs.get(13).copied().unwrap_or(0);
    matches!(bs.first(), Some(0xEB | 0xE9))
        && u16le(bs, 510) == 0xAA55
        && matches!(bps, 512 | 1024 | 2048 | 4096)
        && spc.is_power_of_two()
        && u16le(bs, 14) >= 1
        && bs.get(16).copied().unwrap_or(0) >= 1
        && bs.get(3..11) != Some(b"NTFS    ")
        && bs.get(3..11) != Some(b"EXFAT   ")
}

impl FatFs {
    pub fn open(src: Arc<dyn ReadAt>, name: &str) -> Result<FatFs> {
        let file = ImageFile::new(src, name);
        let mut bs = vec![0u8; 512];
        file.read("FAT boot sector", 0, &mut bs)?;
        if !looks_like_fat(&bs) {
            return Err(file.corrupt("FAT boot sector", 0, "not a FAT boot sector"));
        }
        FatFs::open_with(file, &bs)
    }

    fn open_with(file: ImageFile, bs: &[u8]) -> Result<FatFs> {
        let bad = |reason: String| file.corrupt("FAT boot sector", 0, reason);
        let bps = u64::from(u16le(bs, 11));
        let spc = u64::from(bs[13]);
        let reserved = u64::from(u16le(bs, 14));
        let num_fats = u64::from(bs[16]);
        let root_entries = u64::from(u16le(bs, 17));
        let total = match u16le(bs, 19) {
            0 => u64::from(u32le(bs, 32)),
            n => u64::from(n),
        };
        let fat_sectors = match u16le(bs, 22) {
            0 => u64::from(u32le(bs, 36)),
            n => u64::from(n),
        };
        if fat_sectors == 0 {
            return Err(bad("FAT size is zero".into()));
        }
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let first_data = reserved + num_fats * fat_sectors + root_sectors;
        if first_data >= total {
            return Err(bad(format!("data area starts at sector {first_data}, past the {total} sectors of the volume")));
        }
        let total_bytes = total * bps;
        if total_bytes > file.size() {
            return Err(Error::Truncated {
                path: file.path.clone(),
                structure: "FAT volume (total sectors in the boot sector)".into(),
                offset: 0,
                len: total_bytes,
                file_size: file.size(),
            });
        }
        let clusters = (total - first_data) / spc;
        let cluster_count = u32::try_from(clusters).ok().filter(|&c| c <= 0x0FFF_FFF5).ok_or_else(|| bad(format!("{clusters} clusters")))?;
        let fat_type = if cluster_count < 4085 {
            FatType::Fat12
        } else if cluster_count < 65525 {
            FatType::Fat16
        } else {
            FatType::Fat32
        };
        let entry_bits: u64 = match fat_type {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        };
        if (u64::from(cluster_count) + 2) * entry_bits > fat_sectors * bps * 8 {
            return Err(bad(format!("the FAT ({fat_sectors} sectors) is too small for {cluster_count} clusters")));
        }
        let (root_cluster, label_at, serial_at) = if fat_type == FatType::Fat32 {
            (u32le(bs, 44) & 0x0FFF_FFFF, 71, 67)
        } else {
            (0, 43, 39)
        };
        if fat_type == FatType::Fat32 && (root_cluster < 2 || root_cluster >= cluster_count + 2) {
            return Err(bad(format!("root directory cluster {root_cluster} is out of range")));
        }
        // An extended boot signature (0x29) says label and serial are valid.
        let ext_sig = bs.get(serial_at - 1).copied() == Some(0x29);
        let label = bs
            .get(label_at..label_at + 11)
            .filter(|_| ext_sig)
            .map(|l| String::from_utf8_lossy(l).trim_end().to_string())
            .filter(|l| !l.is_empty() && l != "NO NAME");
        Ok(FatFs {
            fat_type,
            cluster_size: bps * spc,
            fat_offset: reserved * bps,
            root_offset: (reserved + num_fats * fat_sectors) * bps,
            root_bytes: root_entries * 32,
            root_cluster,
            data_offset: first_data * bps,
            cluster_count,
            total_bytes,
            label,
            serial: if ext_sig { u32le(bs, serial_at) } else { 0 },
            fat_cache: BoundedCache::new(256),
            chains: BoundedCache::new(64),
            dirs: BoundedCache::new(32),
            file,
        })
    }

    fn fat_chunk(&self, index: u64) -> Result<Arc<Vec<u8>>> {
        self.fat_cache.get_or_load(index, || {
            let at = self.fat_offset + index * FAT_CHUNK;
            let len = FAT_CHUNK.min(self.data_offset.saturating_sub(at)).max(4);
            self.file.read_vec("FAT", at, len)
        })
    }

    fn fat_byte(&self, off: u64) -> Result<u8> {
        let chunk = self.fat_chunk(off / FAT_CHUNK)?;
        Ok(chunk.get((off % FAT_CHUNK) as usize).copied().unwrap_or(0))
    }

    /// The FAT value of `cluster` (masked to its width).
    fn fat_entry(&self, cluster: u32) -> Result<u32> {
        let c = u64::from(cluster);
        Ok(match self.fat_type {
            FatType::Fat12 => {
                let off = c + c / 2;
                let v = u16::from(self.fat_byte(off)?) | (u16::from(self.fat_byte(off + 1)?) << 8);
                u32::from(if c % 2 == 0 { v & 0xFFF } else { v >> 4 })
            }
            FatType::Fat16 => {
                let off = c * 2;
                let chunk = self.fat_chunk(off / FAT_CHUNK)?;
                u32::from(u16le(&chunk, (off % FAT_CHUNK) as usize))
            }
            FatType::Fat32 => {
                let off = c * 4;
                let chunk = self.fat_chunk(off / FAT_CHUNK)?;
                u32le(&chunk, (off % FAT_CHUNK) as usize) & 0x0FFF_FFFF
            }
        })
    }

    fn is_end(&self, v: u32) -> bool {
        v >= match self.fat_type {
            FatType::Fat12 => 0xFF8,
            FatType::Fat16 => 0xFFF8,
            FatType::Fat32 => 0x0FFF_FFF8,
        }
    }

    /// The clusters of the chain from `first`, as runs `(start, count)`:
    /// exactly `need` clusters, or (`need` = None, directories) up to the
    /// end-of-chain mark.
    fn chain(&self, what: &str, first: u32, need: Option<u64>) -> Result<Arc<Vec<(u32, u32)>>> {
        self.chains.get_or_load((first, need.unwrap_or(u64::MAX)), || {
            let at = self.fat_offset + u64::from(first) * 4;
            let err = |reason: String| self.file.corrupt(&format!("{what} cluster chain"), at, reason);
            let limit = need.unwrap_or(MAX_DIR_BYTES / self.cluster_size + 1);
            let mut runs: Vec<(u32, u32)> = Vec::new();
            let mut seen = HashSet::new();
            let mut c = first;
            let mut n = 0u64;
            loop {
                if c < 2 || c >= self.cluster_count + 2 {
                    return Err(err(format!("cluster {c} (after {n} clusters) is out of range")));
                }
                if !seen.insert(c) {
                    return Err(err(format!("cluster chain loops back to cluster {c} after {n} clusters")));
                }
                match runs.last_mut() {
                    Some(last) if last.0 + last.1 == c => last.1 += 1,
                    _ => runs.push((c, 1)),
                }
                n += 1;
                if need == Some(n) {
                    return Ok(runs);
                }
                if n >= limit {
                    return Err(err(format!("chain is longer than {limit} clusters")));
                }
                let next = self.fat_entry(c)?;
                if self.is_end(next) {
                    return match need {
                        Some(want) => Err(err(format!("chain ends after {n} clusters; the size needs {want}"))),
                        None => Ok(runs),
                    };
                }
                if next == 0 {
                    return Err(err(format!("chain runs into free cluster after cluster {c}")));
                }
                c = next;
            }
        })
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset + u64::from(c - 2) * self.cluster_size
    }

    /// Reads `buf.len()` bytes at `offset` of the chain `runs`.
    fn read_runs(&self, what: &str, runs: &[(u32, u32)], offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut pos = offset;
        let mut done = 0usize;
        let mut run_start = 0u64; // byte offset in the file of the current run
        for &(c, n) in runs {
            let run_len = u64::from(n) * self.cluster_size;
            if done < buf.len() && pos < run_start + run_len {
                let within = pos - run_start;
                let len = ((run_len - within) as usize).min(buf.len() - done);
                self.file.read(what, self.cluster_offset(c) + within, &mut buf[done..done + len])?;
                done += len;
                pos += len as u64;
            }
            run_start += run_len;
        }
        Ok(())
    }

    /// The short entry at volume offset `id`, checked to lie in a
    /// directory area.
    fn entry_at(&self, id: FileId) -> Result<Entry> {
        let in_root = id >= self.root_offset && id < self.root_offset + self.root_bytes;
        let in_data = id >= self.data_offset && id < self.total_bytes;
        if id % 32 != 0 || !(in_root || in_data) {
            return Err(self.file.corrupt("FAT directory entry", id, "not a directory entry position (bad file id)"));
        }
        let mut e = [0u8; 32];
        self.file.read("FAT directory entry", id, &mut e)?;
        Ok(parse_short(&e, self.fat_type))
    }

    /// The raw bytes of a directory (`None` = the root).
    fn dir_bytes(&self, dir: Option<&Entry>, id: FileId) -> Result<(Vec<u8>, Vec<u64>)> {
        // Returns the bytes and the volume offset of each 32-byte slot.
        let what = format!("FAT directory (entry at {id})");
        let first = match dir {
            None if self.fat_type != FatType::Fat32 => {
                let data = self.file.read_vec("FAT root directory", self.root_offset, self.root_bytes)?;
                let offs = (0..self.root_bytes / 32).map(|i| self.root_offset + i * 32).collect();
                return Ok((data, offs));
            }
            None => self.root_cluster,
            Some(e) => e.first_cluster,
        };
        let runs = self.chain(&what, first, None)?;
        let mut data = Vec::new();
        let mut offs = Vec::new();
        for &(c, n) in runs.iter() {
            let at = self.cluster_offset(c);
            let len = u64::from(n) * self.cluster_size;
            data.extend(self.file.read_vec(&what, at, len)?);
            offs.extend((0..len / 32).map(|i| at + i * 32));
        }
        Ok((data, offs))
    }

    fn first_cluster_of(&self, id: FileId) -> Result<u32> {
        if id == ROOT_ID {
            return Ok(if self.fat_type == FatType::Fat32 { self.root_cluster } else { 0 });
        }
        Ok(self.entry_at(id)?.first_cluster)
    }

    fn list_dir(&self, id: FileId) -> Result<Vec<DirEntry>> {
        let entry = if id == ROOT_ID { None } else { Some(self.entry_at(id)?) };
        if entry.as_ref().is_some_and(|e| e.attr & ATTR_DIR == 0) {
            return Err(self.file.corrupt("FAT directory entry", id, "not a directory"));
        }
        let this_cluster = self.first_cluster_of(id)?;
        let (data, offs) = self.dir_bytes(entry.as_ref(), id)?;
        let mut out = Vec::new();
        let mut lfn = Lfn::default();
        for (slot, &at) in data.chunks_exact(32).zip(&offs) {
            let attr = slot[11];
            match slot[0] {
                0 => break,
                0xE5 => {
                    lfn = Lfn::default();
                    continue;
                }
                _ => {}
            }
            if attr & 0x3F == ATTR_LFN {
                lfn.add(slot);
                continue;
            }
            let long = std::mem::take(&mut lfn).finish(&slot[0..11]);
            if attr & ATTR_VOLUME != 0 || slot[0] == b'.' {
                continue;
            }
            let e = parse_short(slot, self.fat_type);
            let name = long.unwrap_or_else(|| short_name(slot));
            let kind = if attr & ATTR_DIR != 0 { FileKind::Dir } else { FileKind::File };
            if kind == FileKind::Dir {
                self.check_subdir(at, &e, this_cluster, &name)?;
            }
            out.push(DirEntry { name, id: at, kind });
        }
        Ok(out)
    }

    /// A subdirectory must have its own clusters and a `..` pointing back
    /// here; anything else is a cycle (or a cross-link) in the tree.
    fn check_subdir(&self, at: u64, e: &Entry, parent_cluster: u32, name: &[u8]) -> Result<()> {
        let bad = |why: &str| {
            self.file.corrupt(
                "FAT directory entry",
                at,
                format!("subdirectory {:?} {why} (directory cycle or cross-link)", String::from_utf8_lossy(name)),
            )
        };
        if e.first_cluster == 0 || e.first_cluster == parent_cluster || (self.fat_type == FatType::Fat32 && e.first_cluster == self.root_cluster) {
            return Err(bad(&format!("starts at cluster {}", e.first_cluster)));
        }
        if e.first_cluster >= self.cluster_count + 2 {
            return Err(bad(&format!("starts at cluster {} (out of range)", e.first_cluster)));
        }
        let mut dotdot = [0u8; 32];
        self.file.read("FAT directory entry", self.cluster_offset(e.first_cluster) + 32, &mut dotdot)?;
        if &dotdot[0..11] == b"..         " {
            let mut up = parse_short(&dotdot, self.fat_type).first_cluster;
            if self.fat_type == FatType::Fat32 && up == self.root_cluster {
                up = 0;
            }
            let expect = if self.fat_type == FatType::Fat32 && parent_cluster == self.root_cluster { 0 } else { parent_cluster };
            if up != expect {
                return Err(bad(&format!("has '..' pointing at cluster {up}, not at its parent (cluster {expect})")));
            }
        }
        Ok(())
    }
}

/// Long-name entries collected before a short entry.
#[derive(Default)]
struct Lfn {
    parts: Vec<[u16; 13]>,
    checksum: u8,
    next: u8,
    broken: bool,
}

impl Lfn {
    fn add(&mut self, slot: &[u8]) {
        let ord = slot[0] & 0x1F;
        let mut units = [0u16; 13];
        for (i, off) in [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30].iter().enumerate() {
            units[i] = u16le(slot, *off);
        }
        if slot[0] & 0x40 != 0 {
            *self = Lfn { parts: vec![units], checksum: slot[13], next: ord.wrapping_sub(1), broken: ord == 0 };
        } else if !self.parts.is_empty() && ord == self.next && ord != 0 && slot[13] == self.checksum {
            self.parts.push(units);
            self.next -= 1;
        } else {
            self.broken = true;
        }
    }

    /// The long name if it is complete and belongs to `short` (11 bytes).
    fn finish(self, short: &[u8]) -> Option<Vec<u8>> {
        if self.parts.is_empty() || self.broken || self.next != 0 {
            return None;
        }
        let sum = short.iter().fold(0u8, |s, &b| (s >> 1 | s << 7).wrapping_add(b));
        if sum != self.checksum {
            return None;
        }
        let units: Vec<u16> = self.parts.iter().rev().flatten().copied().take_while(|&u| u != 0).collect();
        let name: String = char::decode_utf16(units).map(|r| r.unwrap_or('\u{FFFD}')).collect();
        (!name.is_empty()).then(|| name.into_bytes())
    }
}

/// Code page 437, bytes 0x80..=0xFF (the kernel's default codepage).
const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";

/// The 8.3 name as Linux shows it (`shortname=mixed`).
fn short_name(slot: &[u8]) -> Vec<u8> {
    let ntres = slot[12];
    let conv = |bytes: &[u8], lower: bool| -> String {
        let trimmed = &bytes[..bytes.iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1)];
        trimmed
            .iter()
            .map(|&b| match b {
                0x80..=0xFF => CP437_HIGH.chars().nth(usize::from(b - 0x80)).unwrap_or('\u{FFFD}'),
                _ if lower => char::from(b.to_ascii_lowercase()),
                _ => char::from(b),
            })
            .collect()
    };
    let mut base = slot[0..8].to_vec();
    if base[0] == 0x05 {
        base[0] = 0xE5;
    }
    let mut name = conv(&base, ntres & 0x08 != 0);
    let ext = conv(&slot[8..11], ntres & 0x10 != 0);
    if !ext.is_empty() {
        name.push('.');
        name.push_str(&ext);
    }
    name.into_bytes()
}

fn parse_short(e: &[u8], fat_type: FatType) -> Entry {
    let hi = if fat_type == FatType::Fat32 { u32::from(u16le(e, 20)) << 16 } else { 0 };
    let cs = u32::from(e[13]);
    let mut btime = dos_time(u16le(e, 16), u16le(e, 14));
    btime.secs += i64::from(cs / 100);
    btime.nanos = (cs % 100) * 10_000_000;
    Entry {
        attr: e[11],
        first_cluster: hi | u32::from(u16le(e, 26)),
        size: u32le(e, 28),
        mtime: dos_time(u16le(e, 24), u16le(e, 22)),
        atime: dos_time(u16le(e, 18), 0),
        btime,
    }
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A DOS date and time, read as UTC. Like the kernel, month 0 counts as
/// January and day 0 as the 1st; hours and minutes are added as stored.
fn dos_time(date: u16, time: u16) -> Timestamp {
    let year = 1980 + i64::from(date >> 9);
    let month = i64::from((date >> 5) & 0xF).clamp(1, 12);
    let day = i64::from(date & 0x1F).max(1);
    let secs = i64::from(time & 0x1F) * 2 + i64::from((time >> 5) & 0x3F) * 60 + i64::from(time >> 11) * 3600;
    Timestamp { secs: days_from_civil(year, month, day) * 86_400 + secs, nanos: 0 }
}

impl Filesystem for FatFs {
    fn info(&self) -> FsInfo {
        FsInfo {
            kind: "vfat".into(),
            label: self.label.clone(),
            uuid: Some(format!("{:04X}-{:04X}", self.serial >> 16, self.serial & 0xFFFF)),
            block_size: u32::try_from(self.cluster_size).unwrap_or(0),
            total_bytes: self.total_bytes,
            used_bytes: None,
        }
    }

    fn root(&self) -> FileId {
        ROOT_ID
    }

    fn stat(&self, id: FileId) -> Result<Stat> {
        if id == ROOT_ID {
            // FAT stores no metadata for the root directory.
            return Ok(Stat::synthetic_dir(id, 0o755));
        }
        let e = self.entry_at(id)?;
        let dir = e.attr & ATTR_DIR != 0;
        let mode = if !dir && e.attr & ATTR_RO != 0 { 0o555 } else { 0o755 };
        Ok(Stat {
            id,
            kind: if dir { FileKind::Dir } else { FileKind::File },
            size: if dir { 0 } else { u64::from(e.size) },
            mode,
            uid: 0,
            gid: 0,
            nlink: if dir { 2 } else { 1 },
            atime: e.atime,
            mtime: e.mtime,
            ctime: e.mtime,
            btime: Some(e.btime),
            rdev: 0,
        })
    }

    fn read_dir(&self, id: FileId) -> Result<Vec<DirEntry>> {
        Ok((*self.dirs.get_or_load(id, || self.list_dir(id))?).clone())
    }

    fn lookup(&self, dir: FileId, name: &[u8]) -> Result<Option<FileId>> {
        let list = self.dirs.get_or_load(dir, || self.list_dir(dir))?;
        Ok(list.iter().find(|e| e.name == name).map(|e| e.id))
    }

    fn read(&self, id: FileId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let e = self.entry_at(id)?;
        if e.attr & ATTR_DIR != 0 {
            return Err(self.file.corrupt("FAT directory entry", id, "not a regular file"));
        }
        let size = u64::from(e.size);
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from((size - offset).min(buf.len() as u64)).unwrap_or(buf.len());
        let what = format!("FAT file (entry at {id})");
        let runs = self.chain(&what, e.first_cluster, Some(size.div_ceil(self.cluster_size)))?;
        self.read_runs(&what, &runs, offset, &mut buf[..n])?;
        Ok(n)
    }

    fn readlink(&self, id: FileId) -> Result<Vec<u8>> {
        Err(self.file.unsupported("FAT directory entry", id, "FAT has no symbolic links"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp437_table_is_complete() {
        assert_eq!(CP437_HIGH.chars().count(), 128);
    }

    #[test]
    fn dos_times() {
        // 2001-02-03 04:05:06
        let date = ((2001 - 1980) << 9) | (2 << 5) | 3;
        let time = (4 << 11) | (5 << 5) | 3;
        assert_eq!(dos_time(date, time).secs, 981_173_106);
        assert_eq!(dos_time(0, 0).secs, 315_532_800); // month/day 0 -> 1980-01-01
    }

    #[test]
    fn short_names() {
        let mut slot = [0u8; 32];
        slot[0..11].copy_from_slice(b"README  TXT");
        assert_eq!(short_name(&slot), b"README.TXT");
        slot[12] = 0x18;
        assert_eq!(short_name(&slot), b"readme.txt");
        slot[0..11].copy_from_slice(b"\x05BC        ");
        slot[12] = 0;
        assert_eq!(short_name(&slot), "σBC".as_bytes());
    }

    #[test]
    fn long_name_checksum_must_match() {
        let short = b"LONGNA~1TXT";
        let sum = short.iter().fold(0u8, |s, &b| (s >> 1 | s << 7).wrapping_add(b));
        let mut slot = [0xFFu8; 32];
        slot[0] = 0x41;
        slot[11] = ATTR_LFN;
        slot[13] = sum;
        let name: Vec<u16> = "ab\u{1F600}".encode_utf16().chain([0]).collect();
        for (i, off) in [1, 3, 5, 7, 9].iter().enumerate() {
            slot[*off..*off + 2].copy_from_slice(&name.get(i).copied().unwrap_or(0xFFFF).to_le_bytes());
        }
        let mut l = Lfn::default();
        l.add(&slot);
        assert_eq!(l.finish(short).unwrap(), "ab\u{1F600}".as_bytes());
        let mut l = Lfn::default();
        l.add(&slot);
        assert_eq!(l.finish(b"OTHER   TXT"), None);
    }

    #[test]
    fn not_fat_is_not_detected() {
        let src: Arc<dyn ReadAt> = Arc::new(crate::block::MemSource(vec![0u8; 4096]));
        assert!(probe(src, "mem").unwrap().is_none());
    }
}

//! The metadata log (MS-VHDX 2.3). A file whose header carries a non-zero
//! LogGuid was not closed cleanly: metadata updates (BAT, region table,
//! metadata) may sit only in the log. A writer would replay the log into
//! the file; we never write, so the replay goes into an in-memory
//! [`Overlay`] through which every structure and payload is then read.
//!
//! Finding the active sequence: every 4 KiB slot of the circular log may
//! start an entry. An entry is valid when its signature, LogGuid,
//! CRC-32C, descriptors and data sectors all check. Entries that follow each
//! other in the log with consecutive sequence numbers form a sequence; a
//! sequence is complete when the Tail of its last (head) entry points at
//! its first entry. The active sequence is the complete one with the highest
//! head sequence number.
//!
//! A writer only updates the file after the log entry describing the update
//! is durable, so a torn (invalid) entry *after* the active sequence never
//! reached the file and may be ignored in principle. We still refuse an
//! entry that carries this file's LogGuid, is damaged and claims a sequence
//! number above the active head: we cannot tell a torn write from a damaged
//! committed entry, and guessing could hand out stale metadata.

use super::guid::Guid;
use super::header::Header;
use crate::block::{ImageFile, ReadAt};
use crate::le::{bytes, u32le, u64le};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;

const SECTOR: u64 = 4096;
/// Largest log replayed. Hyper-V and qemu create 1 MiB logs; the cap bounds
/// the scan time and the memory an overlay can take.
pub const MAX_LOG: u64 = 256 << 20;
/// Structures before this offset (file identifier, headers) are never
/// written through the log.
const FIRST_LOGGABLE: u64 = 192 * 1024;
/// Bound on file offsets and lengths a log entry may name (4 PiB): keeps all
/// arithmetic far from overflow.
const MAX_FILE_OFFSET: u64 = 1 << 52;

#[derive(Clone, Debug)]
enum Descriptor {
    Zero { offset: u64, length: u64 },
    /// `sector`: index (0-based, from the entry start) of its data sector.
    Data { offset: u64, leading: [u8; 8], trailing: [u8; 4], sector: u64 },
}

#[derive(Clone, Debug)]
struct Entry {
    /// Offset of the entry inside the log.
    pos: u64,
    length: u64,
    tail: u64,
    sequence: u64,
    flushed_file_offset: u64,
    last_file_offset: u64,
    descriptors: Vec<Descriptor>,
}

/// What a replay produced: the pages written and the file length after it.
pub struct Overlay {
    base: Arc<dyn ReadAt>,
    pieces: BTreeMap<u64, Piece>,
    len: u64,
}

#[derive(Clone, Debug)]
enum Piece {
    Data(Vec<u8>),
    Zero(u64),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Data(d) => d.len() as u64,
            Piece::Zero(n) => *n,
        }
    }

    /// The part of the piece from `from` bytes in, `len` bytes long.
    fn slice(&self, from: u64, len: u64) -> Piece {
        match self {
            Piece::Data(d) => Piece::Data(d.get(from as usize..(from + len) as usize).unwrap_or(&[]).to_vec()),
            Piece::Zero(_) => Piece::Zero(len),
        }
    }
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Overlay({} pieces, {} bytes)", self.pieces.len(), self.len)
    }
}

impl Overlay {
    fn new(base: Arc<dyn ReadAt>) -> Overlay {
        let len = base.size();
        Overlay { base, pieces: BTreeMap::new(), len }
    }

    /// Records that `[start, start + piece.len())` now holds `piece`.
    fn put(&mut self, start: u64, piece: Piece) {
        let end = start + piece.len();
        // Trim or drop every piece overlapping the new one.
        let overlapping: Vec<u64> = self
            .pieces
            .range(..end)
            .rev()
            .take_while(|(s, p)| *s + p.len() > start)
            .map(|(s, _)| *s)
            .collect();
        for s in overlapping {
            let Some(old) = self.pieces.remove(&s) else { continue };
            let old_end = s + old.len();
            if s < start {
                self.pieces.insert(s, old.slice(0, start - s));
            }
            if old_end > end {
                self.pieces.insert(end, old.slice(end - s, old_end - end));
            }
        }
        self.len = self.len.max(end);
        self.pieces.insert(start, piece);
    }

    /// Number of bytes the overlay holds in memory.
    pub fn memory(&self) -> u64 {
        self.pieces.values().map(|p| if let Piece::Data(d) = p { d.len() as u64 } else { 0 }).sum()
    }
}

impl ReadAt for Overlay {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or(io::ErrorKind::UnexpectedEof)?;
        if end > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut pos = offset;
        while pos < end {
            let out = buf.get_mut((pos - offset) as usize..).ok_or(io::ErrorKind::InvalidInput)?;
            let covering = self.pieces.range(..=pos).next_back().filter(|(s, p)| *s + p.len() > pos);
            if let Some((&s, piece)) = covering {
                let n = (s + piece.len() - pos).min(end - pos) as usize;
                let dst = out.get_mut(..n).ok_or(io::ErrorKind::InvalidInput)?;
                match piece {
                    Piece::Data(d) => dst.copy_from_slice(d.get((pos - s) as usize..(pos - s) as usize + n).ok_or(io::ErrorKind::InvalidInput)?),
                    Piece::Zero(_) => dst.fill(0),
                }
                pos += n as u64;
                continue;
            }
            let next = self.pieces.range(pos..).next().map_or(end, |(s, _)| (*s).min(end));
            let n = (next - pos) as usize;
            let dst = out.get_mut(..n).ok_or(io::ErrorKind::InvalidInput)?;
            // Past the end of the real file (the log extended it) reads zeros.
            let base_size = self.base.size();
            let from_base = base_size.saturating_sub(pos).min(n as u64) as usize;
            let (real, beyond) = dst.split_at_mut(from_base);
            if !real.is_empty() {
                self.base.read_exact_at(real, pos)?;
            }
            beyond.fill(0);
            pos += n as u64;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.len
    }
}

/// The log region and how to read its sectors (the log is circular).
struct Log<'a> {
    file: &'a ImageFile,
    offset: u64,
    length: u64,
    guid: Guid,
}

impl Log<'_> {
    fn sector(&self, pos: u64) -> Result<Vec<u8>> {
        let at = self.offset + pos % self.length;
        self.file.read_vec("log sector", at, SECTOR)
    }

    fn file_offset(&self, pos: u64) -> u64 {
        self.offset + pos % self.length
    }

    /// Parses and fully validates the entry starting at `pos`. `Ok(None)`:
    /// nothing of ours starts here. `Err(reason)`: an entry of this log
    /// starts here but is damaged; the sequence number it claims is returned
    /// for the staleness check.
    fn entry(&self, pos: u64) -> Result<Option<std::result::Result<Entry, (u64, String)>>> {
        let first = self.sector(pos)?;
        if first.get(0..4) != Some(b"loge") || Guid(bytes::<16>(&first, 32)) != self.guid {
            return Ok(None);
        }
        let sequence = u64le(&first, 16);
        let bad = |reason: String| Ok(Some(Err((sequence, reason))));
        let length = u64::from(u32le(&first, 8));
        let tail = u64::from(u32le(&first, 12));
        let count = u64::from(u32le(&first, 24));
        if length == 0 || length % SECTOR != 0 || length > self.length {
            return bad(format!("entry length {length} is not a multiple of 4 KiB inside the log"));
        }
        if tail % SECTOR != 0 || tail >= self.length {
            return bad(format!("tail {tail} is not a 4 KiB aligned offset inside the log"));
        }
        let descriptor_sectors = (64 + 32 * count).div_ceil(SECTOR);
        if descriptor_sectors > length / SECTOR {
            return bad(format!("{count} descriptors do not fit in an entry of {length} bytes"));
        }
        // Checksum over the whole entry with the checksum field zeroed.
        let stored = u32le(&first, 4);
        let mut crc = 0u32;
        let mut head_sectors = Vec::with_capacity(descriptor_sectors as usize);
        for i in 0..length / SECTOR {
            let mut s = if i == 0 { first.clone() } else { self.sector(pos + i * SECTOR)? };
            if i < descriptor_sectors {
                head_sectors.push(s.clone());
            }
            if i == 0 {
                if let Some(c) = s.get_mut(4..8) {
                    c.fill(0);
                }
            }
            crc = crc32c::crc32c_append(crc, &s);
        }
        if crc != stored {
            return bad(format!("CRC-32C {crc:#010x} does not match the stored {stored:#010x}"));
        }
        let head: Vec<u8> = head_sectors.concat();
        let mut descriptors = Vec::new();
        let mut data_sector = descriptor_sectors;
        for d in 0..count as usize {
            let at = 64 + d * 32;
            let seq = u64le(&head, at + 24);
            if seq != sequence {
                return bad(format!("descriptor {d} has sequence number {seq}, the entry {sequence}"));
            }
            let offset = u64le(&head, at + 16);
            let descriptor = match head.get(at..at + 4) {
                Some(b"zero") => {
                    let length = u64le(&head, at + 8);
                    if offset % SECTOR != 0 || length % SECTOR != 0 || length > MAX_FILE_OFFSET {
                        return bad(format!("zero descriptor {d}: offset {offset} length {length} not 4 KiB aligned"));
                    }
                    Descriptor::Zero { offset, length }
                }
                Some(b"desc") => {
                    if offset % SECTOR != 0 {
                        return bad(format!("data descriptor {d}: offset {offset} not 4 KiB aligned"));
                    }
                    if data_sector >= length / SECTOR {
                        return bad(format!("data descriptor {d} has no data sector inside the entry"));
                    }
                    let s = self.sector(pos + data_sector * SECTOR)?;
                    let (high, low) = (u64::from(u32le(&s, 4)), u64::from(u32le(&s, 4092)));
                    if s.get(0..4) != Some(b"data") || (high << 32 | low) != sequence {
                        return bad(format!("data sector {data_sector} has a wrong signature or sequence number"));
                    }
                    let d = Descriptor::Data {
                        offset,
                        leading: bytes::<8>(&head, at + 8),
                        trailing: bytes::<4>(&head, at + 4),
                        sector: data_sector,
                    };
                    data_sector += 1;
                    d
                }
                _ => return bad(format!("descriptor {d} has an unknown signature")),
            };
            let (start, len) = match descriptor {
                Descriptor::Zero { offset, length } => (offset, length),
                Descriptor::Data { offset, .. } => (offset, SECTOR),
            };
            if start < FIRST_LOGGABLE || start.saturating_add(len) > MAX_FILE_OFFSET {
                return bad(format!("descriptor {d} writes to file offset {start}, where the log may not write"));
            }
            descriptors.push(descriptor);
        }
        Ok(Some(Ok(Entry {
            pos,
            length,
            tail,
            sequence,
            flushed_file_offset: u64le(&first, 48),
            last_file_offset: u64le(&first, 56),
            descriptors,
        })))
    }
}

/// Replays the log of `file` when its header says it is in use. `None`:
/// the file was closed cleanly (or the log holds no entry of this session),
/// read the file as it is.
pub fn replay(file: &ImageFile, header: &Header) -> Result<Option<Overlay>> {
    if header.log_guid.is_zero() {
        return Ok(None);
    }
    let length = u64::from(header.log_length);
    if length > MAX_LOG {
        return Err(file.unsupported("log", header.log_offset, format!("log of {length} bytes is larger than the {MAX_LOG} replayed")));
    }
    let end = header.log_offset.checked_add(length).unwrap_or(u64::MAX);
    if end > file.size() {
        return Err(Error::Truncated {
            path: file.path.clone(),
            structure: "log".into(),
            offset: header.log_offset,
            len: length,
            file_size: file.size(),
        });
    }
    let log = Log { file, offset: header.log_offset, length, guid: header.log_guid };

    let mut entries: HashMap<u64, Entry> = HashMap::new();
    let mut damaged: Vec<(u64, u64, String)> = Vec::new(); // pos, claimed sequence, reason
    for slot in 0..length / SECTOR {
        let pos = slot * SECTOR;
        match log.entry(pos)? {
            None => {}
            Some(Ok(e)) => {
                entries.insert(pos, e);
            }
            Some(Err((seq, reason))) => damaged.push((pos, seq, reason)),
        }
    }

    // For each entry, the head of the run of consecutive entries starting
    // there and the run's total length. Processing by decreasing sequence
    // number means the successor (sequence + 1) is always done first.
    let mut order: Vec<u64> = entries.keys().copied().collect();
    order.sort_by_key(|p| std::cmp::Reverse(entries.get(p).map_or(0, |e| e.sequence)));
    let mut head_of: HashMap<u64, (u64, u64)> = HashMap::new(); // pos -> (head pos, run length)
    for pos in &order {
        let Some(e) = entries.get(pos) else { continue };
        let next = (e.pos + e.length) % length;
        let follows = entries.get(&next).filter(|n| Some(n.sequence) == e.sequence.checked_add(1));
        let (head, run) = match follows.and_then(|n| head_of.get(&n.pos)) {
            Some(&(h, r)) => (h, r.saturating_add(e.length)),
            None => (*pos, e.length),
        };
        head_of.insert(*pos, (head, run));
    }
    let mut active: Option<(u64, u64)> = None; // (tail pos, head pos)
    for (&start, &(head, run)) in &head_of {
        let Some(h) = entries.get(&head) else { continue };
        if h.tail != start || run > length {
            continue;
        }
        let better = active.and_then(|(_, ah)| entries.get(&ah)).is_none_or(|a| h.sequence > a.sequence);
        if better {
            active = Some((start, head));
        }
    }

    let head_sequence = active.and_then(|(_, h)| entries.get(&h)).map(|h| h.sequence);
    if let Some((pos, seq, reason)) = damaged.iter().find(|(_, seq, _)| head_sequence.is_none_or(|h| *seq > h)) {
        return Err(file.corrupt(
            &format!("log entry (sequence number {seq})"),
            log.file_offset(*pos),
            format!("{reason}; the log is in use (the file was not closed cleanly) and cannot be replayed"),
        ));
    }
    let Some((tail, head)) = active else {
        tracing::debug!(path = %file.path.display(), "log guid set but no entry of this log: nothing to replay");
        return Ok(None);
    };

    let mut overlay = Overlay::new(file.src.clone());
    let mut pos = tail;
    for _ in 0..=entries.len() {
        let Some(e) = entries.get(&pos) else { break };
        for d in &e.descriptors {
            match d {
                Descriptor::Zero { offset, length } => overlay.put(*offset, Piece::Zero(*length)),
                Descriptor::Data { offset, leading, trailing, sector } => {
                    let s = log.sector(e.pos + sector * SECTOR)?;
                    let mut page = Vec::with_capacity(SECTOR as usize);
                    page.extend_from_slice(leading);
                    page.extend_from_slice(s.get(8..4092).unwrap_or(&[]));
                    page.extend_from_slice(trailing);
                    overlay.put(*offset, Piece::Data(page));
                }
            }
        }
        if pos == head {
            let size = file.size();
            if size < e.flushed_file_offset {
                return Err(file.corrupt(
                    &format!("log entry (sequence number {})", e.sequence),
                    log.file_offset(e.pos),
                    format!("the file ({size} bytes) is shorter than the {} bytes the log recorded as flushed: it was truncated", e.flushed_file_offset),
                ));
            }
            // The file extends to the last offset the log recorded (zeros
            // where the host file is shorter).
            overlay.len = overlay.len.max(e.last_file_offset.min(MAX_FILE_OFFSET));
            tracing::debug!(path = %file.path.display(), head = e.sequence, bytes = overlay.memory(), "replayed log in memory");
            return Ok(Some(overlay));
        }
        pos = (e.pos + e.length) % length;
    }
    Err(file.corrupt("log", header.log_offset, "active log sequence does not reach its head (internal error)"))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::block::MemSource;

    pub const GUID: Guid = Guid([0x11; 16]);

    /// Builds a log entry: `(file offset, Some(page) | None = zero 4 KiB)`.
    pub fn make_entry(seq: u64, tail: u32, guid: Guid, writes: &[(u64, Option<Vec<u8>>)], flushed: u64, last: u64) -> Vec<u8> {
        let count = writes.len() as u64;
        let desc_sectors = (64 + 32 * count).div_ceil(SECTOR) as usize;
        let data: Vec<&Vec<u8>> = writes.iter().filter_map(|(_, p)| p.as_ref()).collect();
        let mut e = vec![0u8; (desc_sectors + data.len()) * SECTOR as usize];
        e[0..4].copy_from_slice(b"loge");
        let total = e.len() as u32;
        e[8..12].copy_from_slice(&total.to_le_bytes());
        e[12..16].copy_from_slice(&tail.to_le_bytes());
        e[16..24].copy_from_slice(&seq.to_le_bytes());
        e[24..28].copy_from_slice(&(count as u32).to_le_bytes());
        e[32..48].copy_from_slice(&guid.0);
        e[48..56].copy_from_slice(&flushed.to_le_bytes());
        e[56..64].copy_from_slice(&last.to_le_bytes());
        let mut ds = desc_sectors;
        for (i, (off, page)) in writes.iter().enumerate() {
            let at = 64 + i * 32;
            match page {
                None => {
                    e[at..at + 4].copy_from_slice(b"zero");
                    e[at + 8..at + 16].copy_from_slice(&SECTOR.to_le_bytes());
                }
                Some(p) => {
                    e[at..at + 4].copy_from_slice(b"desc");
                    let (lead, trail) = (p[0..8].to_vec(), p[4092..4096].to_vec());
                    e[at + 4..at + 8].copy_from_slice(&trail);
                    e[at + 8..at + 16].copy_from_slice(&lead);
                    let s = ds * SECTOR as usize;
                    e[s..s + 4].copy_from_slice(b"data");
                    e[s + 4..s + 8].copy_from_slice(&((seq >> 32) as u32).to_le_bytes());
                    e[s + 8..s + 4092].copy_from_slice(&p[8..4092]);
                    e[s + 4092..s + 4096].copy_from_slice(&(seq as u32).to_le_bytes());
                    ds += 1;
                }
            }
            e[at + 16..at + 24].copy_from_slice(&off.to_le_bytes());
            e[at + 24..at + 32].copy_from_slice(&seq.to_le_bytes());
        }
        let crc = crc32c::crc32c(&e);
        e[4..8].copy_from_slice(&crc.to_le_bytes());
        e
    }

    const LOG_AT: u64 = 1 << 20;
    const LOG_LEN: u64 = 1 << 20;

    fn file_with_log(entries: &[(u64, Vec<u8>)]) -> ImageFile {
        let mut f = vec![0xEEu8; 4 << 20];
        f[LOG_AT as usize..(LOG_AT + LOG_LEN) as usize].fill(0);
        for (pos, e) in entries {
            for (i, b) in e.iter().enumerate() {
                f[(LOG_AT + (pos + i as u64) % LOG_LEN) as usize] = *b;
            }
        }
        ImageFile::new(Arc::new(MemSource(f)), "t.vhdx")
    }

    fn header() -> Header {
        Header {
            offset: 65536,
            sequence: 1,
            data_write_guid: Guid::default(),
            log_guid: GUID,
            log_version: 0,
            version: 1,
            log_length: LOG_LEN as u32,
            log_offset: LOG_AT,
        }
    }

    fn page(b: u8) -> Vec<u8> {
        (0..4096).map(|i| b.wrapping_add(i as u8)).collect()
    }

    fn read(o: &Overlay, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        o.read_exact_at(&mut b, off).unwrap();
        b
    }

    #[test]
    fn sequence_replayed_in_order_with_zero_descriptors() {
        let e1 = make_entry(7, 0, GUID, &[(3 << 20, Some(page(1))), (3 << 20 | 8192, Some(page(2)))], 4 << 20, 4 << 20);
        let e2 = make_entry(8, 0, GUID, &[(3 << 20, Some(page(3))), (3 << 20 | 8192, None)], 4 << 20, 5 << 20);
        let l1 = e1.len() as u64;
        let f = file_with_log(&[(0, e1), (l1, e2)]);
        let o = replay(&f, &header()).unwrap().unwrap();
        assert_eq!(read(&o, 3 << 20, 4096), page(3));
        assert_eq!(read(&o, (3 << 20) + 8192, 4096), vec![0u8; 4096]);
        assert_eq!(read(&o, (3 << 20) + 4096, 4), vec![0xEE; 4]);
        // Extended to LastFileOffset with zeros.
        assert_eq!(o.size(), 5 << 20);
        assert_eq!(read(&o, (4 << 20) + 10, 4), vec![0; 4]);
    }

    #[test]
    fn wrapped_sequence_and_stale_entries() {
        // An old entry of another session and an older sequence of ours
        // that the active one (tail at the wrap) supersedes.
        let other = make_entry(100, 0, Guid([9; 16]), &[(3 << 20, Some(page(9)))], 0, 0);
        let old = make_entry(3, 8192, GUID, &[(3 << 20, Some(page(4)))], 0, 0);
        let a = make_entry(10, (LOG_LEN - 8192) as u32, GUID, &[(3 << 20, Some(page(5)))], 0, 0);
        let b = make_entry(11, (LOG_LEN - 8192) as u32, GUID, &[(3 << 20 | 4096, Some(page(6)))], 0, 0);
        let f = file_with_log(&[(0, b.clone()), (8192, old), (65536, other), (LOG_LEN - 8192, a)]);
        let o = replay(&f, &header()).unwrap().unwrap();
        assert_eq!(read(&o, 3 << 20, 4096), page(5));
        assert_eq!(read(&o, (3 << 20) + 4096, 4096), page(6));
    }

    #[test]
    fn sequence_without_its_tail_is_not_active() {
        // Head says the sequence starts at 0, but the entry there is of
        // another log: incomplete, so only the older complete one counts.
        let lone = make_entry(5, 0, GUID, &[(3 << 20, Some(page(1)))], 0, 0);
        let orphan = make_entry(9, 0, GUID, &[(3 << 20, Some(page(2)))], 0, 0);
        let f = file_with_log(&[(65536, lone.clone()), (131072, orphan)]);
        // Neither has its tail at its own position except none: nothing to replay.
        assert!(replay(&f, &header()).unwrap().is_none());
        let lone = make_entry(5, 65536, GUID, &[(3 << 20, Some(page(1)))], 0, 0);
        let f = file_with_log(&[(65536, lone)]);
        let o = replay(&f, &header()).unwrap().unwrap();
        assert_eq!(read(&o, 3 << 20, 4096), page(1));
    }

    #[test]
    fn damaged_newest_entry_refused() {
        let mut e = make_entry(5, 0, GUID, &[(3 << 20, Some(page(1)))], 0, 0);
        e[4096 + 100] ^= 1;
        let err = replay(&file_with_log(&[(0, e)]), &header()).unwrap_err().to_string();
        assert!(err.contains("CRC-32C") && err.contains("log entry"), "{err}");
    }

    #[test]
    fn damaged_older_entry_ignored() {
        let mut old = make_entry(2, 65536, GUID, &[(3 << 20, Some(page(1)))], 0, 0);
        old[4096 + 100] ^= 1;
        let new = make_entry(5, 0, GUID, &[(3 << 20, Some(page(2)))], 0, 0);
        let o = replay(&file_with_log(&[(0, new), (65536, old)]), &header()).unwrap().unwrap();
        assert_eq!(read(&o, 3 << 20, 4096), page(2));
    }

    #[test]
    fn header_area_and_truncation_refused() {
        let e = make_entry(5, 0, GUID, &[(65536, Some(page(1)))], 0, 0);
        assert!(replay(&file_with_log(&[(0, e)]), &header()).unwrap_err().to_string().contains("may not write"));
        let e = make_entry(5, 0, GUID, &[(3 << 20, Some(page(1)))], 64 << 20, 64 << 20);
        assert!(replay(&file_with_log(&[(0, e)]), &header()).unwrap_err().to_string().contains("truncated"));
    }

    #[test]
    fn overlay_put_trims() {
        let mut o = Overlay::new(Arc::new(MemSource(vec![7u8; 1 << 20])));
        o.put(4096, Piece::Zero(16384));
        o.put(8192, Piece::Data(page(1)));
        assert_eq!(read(&o, 4096, 4096), vec![0; 4096]);
        assert_eq!(read(&o, 8192, 4096), page(1));
        assert_eq!(read(&o, 12288, 8192), vec![0; 8192]);
        assert_eq!(read(&o, 20480, 4), vec![7; 4]);
        o.put(0, Piece::Zero(1 << 21));
        assert_eq!(o.pieces.len(), 1);
        assert_eq!(o.size(), 1 << 21);
    }
}

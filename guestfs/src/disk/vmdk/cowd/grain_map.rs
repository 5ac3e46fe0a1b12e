//! The two-level grain map both ESX delta formats share (vmfsSparse here,
//! SEsparse in `super::super::sesparse`): a grain directory names grain
//! tables of a fixed number of entries, and each entry says what one grain
//! of the virtual disk is. Each format decodes its own directory and table
//! entries into [`Grain`]s; this module turns grains into allocation runs
//! and reads, so the run-merging and read-coalescing logic exists once.

use crate::block::ImageFile;
use crate::cache::BoundedCache;
use crate::disk::Allocation;
use crate::{Error, Result};
use std::sync::Arc;

/// Grain tables kept decoded in memory. A decoded table of 4096 grains is
/// 64 KiB, so the cache stays under 2 MiB whatever the image says.
const CACHED_TABLES: usize = 32;

/// A `status` call extends its run over at most this many grain tables that
/// must be loaded, and looks at most at this many directory entries: long
/// runs are an optimisation, and one call must stay cheap on a huge disk.
const MAX_TABLES_LOADED_PER_RUN: u32 = 16;
const MAX_TABLES_SEEN_PER_RUN: u32 = 4096;

/// What one grain of the virtual disk is, in this file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grain {
    /// Not in this file: the parent supplies it.
    Unallocated,
    /// Reads as zeros, whatever the parent holds.
    Zero,
    /// Stored in this file at this byte offset (already checked to lie,
    /// as far as the virtual disk needs it, inside the file).
    Data(u64),
}

impl Grain {
    fn allocation(self) -> Allocation {
        match self {
            Grain::Unallocated => Allocation::Unallocated,
            Grain::Zero => Allocation::Zero,
            Grain::Data(_) => Allocation::Data,
        }
    }
}

/// A format's grain directory and grain tables.
pub trait GrainTables: Send + Sync {
    /// Where grain table `table` is: `None` when the directory has no table
    /// for it (every grain it would cover is unallocated), otherwise a
    /// location that [`GrainTables::load`] understands.
    fn locate(&self, table: u64) -> Result<Option<u64>>;

    /// Reads and decodes grain table `table` found at `location`: exactly
    /// one [`Grain`] per table entry.
    fn load(&self, table: u64, location: u64) -> Result<Vec<Grain>>;
}

/// The bytes of grain `grain` that lie inside a virtual disk of `size`
/// bytes: a whole grain, except for a last grain the capacity cuts short.
pub fn grain_len_within(size: u64, grain_bytes: u64, grain: u64) -> u64 {
    let start = grain.saturating_mul(grain_bytes);
    size.saturating_sub(start).min(grain_bytes)
}

pub struct GrainMap<T> {
    pub tables: T,
    file: ImageFile,
    size: u64,
    grain_bytes: u64,
    grains_per_table: u64,
    cache: BoundedCache<u64, Vec<Grain>>,
}

impl<T: GrainTables> GrainMap<T> {
    /// `grain_bytes` and `grains_per_table` are non-zero and small (the
    /// formats check them against their own limits before calling this).
    pub fn new(tables: T, file: ImageFile, size: u64, grain_bytes: u64, grains_per_table: u64) -> GrainMap<T> {
        GrainMap {
            tables,
            file,
            size,
            grain_bytes: grain_bytes.max(1),
            grains_per_table: grains_per_table.max(1),
            cache: BoundedCache::new(CACHED_TABLES),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn table(&self, table: u64) -> Result<Option<Arc<Vec<Grain>>>> {
        match self.tables.locate(table)? {
            None => Ok(None),
            Some(location) => self.cache.get_or_load(table, || self.tables.load(table, location)).map(Some),
        }
    }

    /// The entry for `grain` in its (loaded) table.
    fn entry(&self, table: &[Grain], grain: u64) -> Result<Grain> {
        let index = usize::try_from(grain % self.grains_per_table).ok();
        match index.and_then(|i| table.get(i)) {
            Some(g) => Ok(*g),
            // Loaders return a full table; anything else is a bug, reported
            // rather than read as a hole.
            None => Err(self.file.corrupt("grain table", 0, format!("decoded table lacks the entry for grain {grain}"))),
        }
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<u64> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size && len > 0 => Ok(end),
            _ => Err(Error::OutOfRange { offset, len, size: self.size }),
        }
    }

    /// The allocation at `offset` and how many bytes from there share it,
    /// merging adjacent grains and whole absent tables.
    pub fn status(&self, offset: u64, max_len: u64) -> Result<(Allocation, u64)> {
        let end = self.check_range(offset, max_len)?;
        let span = self.grain_bytes.saturating_mul(self.grains_per_table);
        let mut pos = offset;
        let mut run: Option<Allocation> = None;
        let (mut seen, mut loaded) = (0u32, 0u32);
        'tables: while pos < end {
            let t = pos / span;
            let table_end = t.saturating_add(1).saturating_mul(span).min(end);
            seen += 1;
            match self.tables.locate(t)? {
                None => {
                    if run.is_some_and(|a| a != Allocation::Unallocated) {
                        break;
                    }
                    run = Some(Allocation::Unallocated);
                    pos = table_end;
                }
                Some(location) => {
                    if run.is_some() && loaded >= MAX_TABLES_LOADED_PER_RUN {
                        break;
                    }
                    loaded += 1;
                    let table = self.cache.get_or_load(t, || self.tables.load(t, location))?;
                    while pos < table_end {
                        let g = pos / self.grain_bytes;
                        let a = self.entry(&table, g)?.allocation();
                        if run.is_some_and(|r| r != a) {
                            break 'tables;
                        }
                        run = Some(a);
                        pos = g.saturating_add(1).saturating_mul(self.grain_bytes).min(end);
                    }
                }
            }
            if seen >= MAX_TABLES_SEEN_PER_RUN {
                break;
            }
        }
        match run {
            Some(a) if pos > offset => Ok((a, pos - offset)),
            _ => Err(Error::OutOfRange { offset, len: max_len, size: self.size }),
        }
    }

    /// Reads `buf.len()` bytes at virtual `offset`. Grains that lie next to
    /// each other in the file are read with one I/O (ESX's 512-byte COWD
    /// grains would otherwise cost one read per sector).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        // (file offset, start in buf, length) of the read being gathered.
        let mut pending: Option<(u64, usize, usize)> = None;
        let mut current: Option<(u64, Option<Arc<Vec<Grain>>>)> = None;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let g = pos / self.grain_bytes;
            let within = pos % self.grain_bytes;
            let n = usize::try_from((self.grain_bytes - within).min((buf.len() - done) as u64)).unwrap_or(usize::MAX);
            let n = n.min(buf.len() - done);
            let t = g / self.grains_per_table;
            let table = match &current {
                Some((ct, table)) if *ct == t => table.clone(),
                _ => {
                    let table = self.table(t)?;
                    current = Some((t, table.clone()));
                    table
                }
            };
            let grain = match &table {
                None => Grain::Unallocated,
                Some(table) => self.entry(table, g)?,
            };
            match grain {
                Grain::Data(grain_offset) => {
                    let at = grain_offset.saturating_add(within);
                    match pending {
                        Some((p_at, p_start, p_len)) if p_at.checked_add(p_len as u64) == Some(at) => {
                            pending = Some((p_at, p_start, p_len + n));
                        }
                        _ => {
                            self.flush(buf, pending.take())?;
                            pending = Some((at, done, n));
                        }
                    }
                }
                Grain::Zero => {
                    self.flush(buf, pending.take())?;
                    if let Some(part) = buf.get_mut(done..done + n) {
                        part.fill(0);
                    }
                }
                Grain::Unallocated => {
                    // The chain only reads ranges status called Data; never
                    // hand out zeros for a grain the parent should supply.
                    return Err(self.file.corrupt(
                        &format!("grain {g}"),
                        0,
                        format!("read of virtual offset {pos}, which this file does not hold (the parent does)"),
                    ));
                }
            }
            done += n;
        }
        self.flush(buf, pending)
    }

    fn flush(&self, buf: &mut [u8], pending: Option<(u64, usize, usize)>) -> Result<()> {
        let Some((at, start, len)) = pending else { return Ok(()) };
        match buf.get_mut(start..start + len) {
            Some(part) => self.file.read("grain data", at, part),
            None => Err(self.file.corrupt("grain data", at, "read outside the caller's buffer")),
        }
    }
}

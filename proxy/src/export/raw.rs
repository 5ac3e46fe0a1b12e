//! Raw output: to a file (zeros written out, or left as holes) or as a
//! stream to standard output (zeros written out, in order).

use super::{Granule, ImageWriter};
use anyhow::Result;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

pub struct RawWriter {
    file: File,
    sparse: bool,
    flusher: super::flush::Flusher,
}

impl RawWriter {
    pub fn new(file: File, size: u64, sparse: bool) -> Result<RawWriter> {
        // Setting the length first makes every range not written a hole
        // that reads as zeros.
        file.set_len(size)?;
        let flusher = super::flush::Flusher::new(&file);
        Ok(RawWriter { file, sparse, flusher })
    }
}

impl ImageWriter for RawWriter {
    fn takes_runs(&self) -> bool {
        true
    }

    fn granularity(&self) -> u64 {
        64 << 10
    }

    fn skips_zeros(&self) -> bool {
        self.sparse
    }

    fn write(&mut self, g: Granule<'_>) -> Result<()> {
        self.file.write_all_at(g.data, g.offset)?;
        self.flusher.wrote(g.data.len() as u64);
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.file.sync_all()?;
        Ok(())
    }
}

pub struct RawStreamWriter {
    out: Box<dyn Write>,
    pos: u64,
    size: u64,
}

impl RawStreamWriter {
    pub fn new(out: Box<dyn Write>, size: u64) -> RawStreamWriter {
        RawStreamWriter { out, pos: 0, size }
    }

    fn zeros_to(&mut self, end: u64) -> Result<()> {
        let zeros = [0u8; 64 << 10];
        while self.pos < end {
            let n = (end - self.pos).min(zeros.len() as u64) as usize;
            self.out.write_all(&zeros[..n])?;
            self.pos += n as u64;
        }
        Ok(())
    }
}

impl ImageWriter for RawStreamWriter {
    fn takes_runs(&self) -> bool {
        true
    }

    fn granularity(&self) -> u64 {
        64 << 10
    }

    fn write(&mut self, g: Granule<'_>) -> Result<()> {
        self.zeros_to(g.offset)?;
        self.out.write_all(g.data)?;
        self.pos += g.data.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.zeros_to(self.size)?;
        self.out.flush()?;
        Ok(())
    }
}

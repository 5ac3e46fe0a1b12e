//! `vbproxy export`: a disk's content, through its whole chain, to an image.
//!
//! Output goes to `OUT.partial` and is renamed when complete, so an
//! interrupted export never leaves a file that looks complete.

use crate::source;
use anyhow::{Context, Result};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ExportFormat {
    /// Every byte of the virtual disk.
    Raw,
    /// Like raw, but zero ranges are left as holes.
    RawSparse,
}

const CHUNK: u64 = 4 << 20;

pub fn run(src: &Path, format: ExportFormat, output: &Path) -> Result<()> {
    let disk = source::open(src)?;
    let size = disk.virtual_size();
    if output == Path::new("-") {
        return stream_raw(&disk, &mut std::io::stdout().lock());
    }
    let partial = output.with_file_name(format!(
        "{}.partial",
        output.file_name().context("output has no file name")?.to_string_lossy()
    ));
    let file = File::create(&partial).with_context(|| format!("{}: cannot create", partial.display()))?;
    let result = (|| -> Result<()> {
        file.set_len(size)?;
        let sparse = matches!(format, ExportFormat::RawSparse);
        let mut buf = vec![0u8; CHUNK as usize];
        for run in disk.map()? {
            if !run.data && sparse {
                continue;
            }
            let mut off = run.start;
            let end = run.start + run.length;
            while off < end {
                let n = (end - off).min(CHUNK) as usize;
                let chunk = &mut buf[..n];
                disk.read_at(chunk, off)?;
                // A zero run in raw needs no write: set_len already made it zeros.
                if run.data && !(sparse && chunk.iter().all(|&b| b == 0)) {
                    file.write_all_at(chunk, off)?;
                }
                off += n as u64;
            }
        }
        file.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e.context(format!("export to {} failed; partial output removed", output.display())));
    }
    std::fs::rename(&partial, output).with_context(|| format!("renaming {} to {}", partial.display(), output.display()))?;
    Ok(())
}

fn stream_raw(disk: &guestfs::disk::Disk, out: &mut impl Write) -> Result<()> {
    let size = disk.virtual_size();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(CHUNK) as usize;
        disk.read_at(&mut buf[..n], off)?;
        out.write_all(&buf[..n])?;
        off += n as u64;
    }
    out.flush()?;
    Ok(())
}

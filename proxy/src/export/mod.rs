//! `vbproxy export` and `vbproxy verify`: a disk's content, read through its
//! whole chain, to an image in the format the backup target wants.
//!
//! The driver walks the allocation map in 4 MiB batches, only those that
//! hold data (so the cost follows allocated bytes, not virtual size), reads
//! and hashes them, drops all-zero granules where the output format can
//! leave them out, lets the writer compress in parallel (`--jobs`), and
//! hands granules to the writer in disk order.
use std::io::Write;

pub mod digest;
mod flush;
mod output;
mod progress;
mod qcow2;
mod raw;
mod vhd;
mod vhdx;
mod vmdk;

use crate::source;
use anyhow::{bail, Context, Result};
use digest::{HashList, LEAF};
use guestfs::disk::Disk;
use output::OutputSet;
use progress::{Progress, RateLimit};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use progress::parse_rate;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Every byte of the virtual disk (zeros written out).
    Raw,
    /// Raw, with zero ranges left as holes.
    RawSparse,
    /// VMDK descriptor plus a `-flat.vmdk` extent, as ESX lays them out.
    VmdkFlat,
    /// Hosted monolithicSparse VMDK.
    VmdkSparse,
    /// streamOptimized VMDK (compressed grains), as carried in an OVA.
    VmdkStream,
    /// qcow2 version 3.
    Qcow2,
    /// Dynamic VHD.
    Vhd,
    /// Dynamic VHDX.
    Vhdx,
}

impl ExportFormat {
    fn can_stream(self) -> bool {
        matches!(self, ExportFormat::Raw | ExportFormat::VmdkStream)
    }

    /// The name `qemu-img info` reports for the output.
    pub fn qemu_name(self) -> &'static str {
        match self {
            ExportFormat::Raw | ExportFormat::RawSparse => "raw",
            ExportFormat::VmdkFlat | ExportFormat::VmdkSparse | ExportFormat::VmdkStream => "vmdk",
            ExportFormat::Qcow2 => "qcow2",
            ExportFormat::Vhd => "vpc",
            ExportFormat::Vhdx => "vhdx",
        }
    }
}

/// One granule handed to a writer: its disk offset, its bytes, and the
/// writer's prepared form of them (compressed), when it prepares.
pub struct Granule<'a> {
    pub offset: u64,
    pub data: &'a [u8],
    pub prepared: Option<Vec<u8>>,
}

/// An output image format.
pub trait ImageWriter {
    /// Granules are aligned to and this long (but the last, at the end of
    /// the disk); a power of two dividing 4 MiB.
    fn granularity(&self) -> u64;

    /// Whether all-zero granules may be left out (they read as zeros).
    fn skips_zeros(&self) -> bool {
        true
    }

    /// CPU-heavy preparation run in parallel before `write` (compression).
    fn preparer(&self) -> Option<fn(&[u8]) -> Result<Vec<u8>>> {
        None
    }

    /// Writes one granule; offsets strictly increase.
    fn write(&mut self, g: Granule<'_>) -> Result<()>;

    /// Whether `write` takes any run of adjacent granules at once (formats
    /// where disk offsets map linearly to the output: raw, flat). The
    /// driver then joins adjacent granules into one write.
    fn takes_runs(&self) -> bool {
        false
    }

    /// Writes the metadata that can only be known at the end.
    fn finish(&mut self) -> Result<()>;
}

pub struct ExportArgs {
    pub format: ExportFormat,
    pub output: PathBuf,
    pub quiet: bool,
    pub rate_limit: Option<u64>,
    pub jobs: usize,
    /// Export the disk as it was below the top `n` snapshot layers.
    pub below: usize,
    pub manifest: bool,
}

const BATCH: u64 = 4 << 20;

/// Indices of the BATCH-sized blocks that hold data (all of them when
/// `all`), in order.
fn data_batches(disk: &Disk, all: bool) -> Result<Vec<u64>> {
    let size = disk.virtual_size();
    let count = size.div_ceil(BATCH);
    if all {
        return Ok((0..count).collect());
    }
    let mut out: Vec<u64> = Vec::new();
    for run in disk.map()?.into_iter().filter(|r| r.data) {
        let first = run.start / BATCH;
        let last = (run.start + run.length - 1) / BATCH;
        for b in first..=last {
            if out.last() != Some(&b) {
                out.push(b);
            }
        }
    }
    Ok(out)
}

/// What a worker makes of one batch.
struct Batch {
    offset: u64,
    buf: Vec<u8>,
    leaves: Vec<[u8; 32]>,
    /// (offset in buf, len, prepared)
    granules: Vec<(usize, usize, Option<Vec<u8>>)>,
}

/// What every worker needs to know about the export.
#[derive(Clone, Copy)]
struct Plan {
    gran: u64,
    skip_zeros: bool,
    prep: Option<fn(&[u8]) -> Result<Vec<u8>>>,
    hash: bool,
}

fn process_batch(disk: &Disk, index: u64, plan: Plan) -> Result<Batch> {
    let Plan { gran, skip_zeros, prep, hash } = plan;
    let size = disk.virtual_size();
    let offset = index * BATCH;
    let len = BATCH.min(size - offset) as usize;
    let mut buf = vec![0u8; len];
    disk.read_at(&mut buf, offset)?;
    let leaves = if hash { buf.chunks(LEAF as usize).map(HashList::leaf).collect() } else { Vec::new() };
    let mut granules = Vec::new();
    for (i, g) in buf.chunks(gran as usize).enumerate() {
        if skip_zeros && g.iter().all(|&b| b == 0) {
            continue;
        }
        let prepared = match prep {
            Some(f) => Some(f(g)?),
            None => None,
        };
        granules.push((i * gran as usize, g.len(), prepared));
    }
    Ok(Batch { offset, buf, leaves, granules })
}

pub fn run(src: &Path, args: &ExportArgs) -> Result<()> {
    let full = source::open(src)?;
    let below = if args.below == usize::MAX { full.layers().len() - 1 } else { args.below };
    let disk = full.below(below).with_context(|| {
        format!("--below {}: the chain of {} has only {} layers", args.below, src.display(), full.layers().len())
    })?;
    // `-`, a character device (`/dev/null`) or a FIFO is a stream: written
    // in place, with no `.partial`, rename or manifest beside it (a rename
    // would replace the device node with a regular file).
    let special = output::open_special(&args.output)?;
    let to_stdout = args.output == Path::new("-") || special.is_some();
    if !to_stdout {
        refuse_output_over_source(&full, &args.output)?;
    }
    if to_stdout && !args.format.can_stream() {
        let what = if args.output == Path::new("-") { "standard output".to_owned() } else { format!("a stream such as {}", args.output.display()) };
        bail!("--format {:?} cannot be written to {what} (raw and vmdk-stream can)", args.format);
    }
    let mut special = special;
    let mut sink = move || -> Box<dyn std::io::Write> {
        match special.take() {
            Some(f) => Box::new(std::io::BufWriter::with_capacity(1 << 20, f)),
            None => Box::new(std::io::stdout().lock()),
        }
    };
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, term.clone()).context("installing signal handlers")?;
    }
    let size = disk.virtual_size();
    let mut outputs = OutputSet::default();
    let mut writer: Box<dyn ImageWriter> = match args.format {
        ExportFormat::Raw if to_stdout => Box::new(raw::RawStreamWriter::new(sink(), size)),
        ExportFormat::Raw => Box::new(raw::RawWriter::new(outputs.create(&args.output)?, size, false)?),
        ExportFormat::RawSparse => Box::new(raw::RawWriter::new(outputs.create(&args.output)?, size, true)?),
        ExportFormat::Qcow2 => Box::new(qcow2::Qcow2Writer::new(outputs.create(&args.output)?, size)?),
        ExportFormat::Vhd => Box::new(vhd::VhdWriter::new(outputs.create(&args.output)?, size)?),
        ExportFormat::Vhdx => Box::new(vhdx::VhdxWriter::new(outputs.create(&args.output)?, size)?),
        ExportFormat::VmdkStream if to_stdout => {
            Box::new(vmdk::StreamWriter::new(sink(), size, "disk.vmdk")?)
        }
        ExportFormat::VmdkStream => {
            let name = file_name(&args.output);
            Box::new(vmdk::StreamWriter::new(Box::new(std::io::BufWriter::new(outputs.create(&args.output)?)), size, &name)?)
        }
        ExportFormat::VmdkSparse => Box::new(vmdk::SparseWriter::new(outputs.create(&args.output)?, size, &file_name(&args.output))?),
        ExportFormat::VmdkFlat => {
            let flat_name = vmdk::flat_extent_name(&args.output);
            let desc = outputs.create(&args.output)?;
            let flat = outputs.create(&args.output.with_file_name(&flat_name))?;
            Box::new(vmdk::FlatWriter::new(desc, flat, size, &flat_name)?)
        }
    };
    let result = drive(&disk, &mut *writer, args, &term, args.manifest);
    drop(writer);
    let content = match result {
        Ok(c) => c,
        Err(e) => {
            outputs.abort();
            let what = if to_stdout { "standard output".to_owned() } else { args.output.display().to_string() };
            return Err(e.context(format!("export to {what} failed; nothing complete-looking was left behind")));
        }
    };
    if !to_stdout {
        if args.manifest {
            write_manifest(&mut outputs, src, &disk, args, &content)?;
        }
        outputs.commit()?;
    }
    Ok(())
}

/// Nothing ever writes to a source: an output (or its partial file or
/// manifest) that is one of the chain's files is refused.
fn refuse_output_over_source(disk: &Disk, output: &Path) -> Result<()> {
    let canon = |p: &Path| -> Option<PathBuf> {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(std::fs::canonicalize(dir).ok()?.join(p.file_name()?))
    };
    let mut outs = vec![output.to_owned(), output::partial_path(output), manifest_path(output)];
    let flat = output.with_file_name(vmdk::flat_extent_name(output));
    outs.push(output::partial_path(&flat));
    outs.push(flat);
    let outs: Vec<PathBuf> = outs.iter().filter_map(|p| canon(p)).collect();
    for layer in disk.layers() {
        for f in layer.files() {
            if let Some(src) = canon(&f) {
                if outs.contains(&src) {
                    bail!("{}: is a source file of this disk; refusing to write to it", output.display());
                }
            }
        }
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "disk.vmdk".into())
}

/// Runs the export; returns the content digest of the logical disk (when
/// `hash`; empty otherwise).
///
/// `jobs` workers each take every `jobs`-th batch and send results through
/// their own bounded channel; this thread receives them round-robin, so
/// batches reach the writer in disk order while reading, hashing and
/// compressing run ahead of writing. Memory stays bounded: each worker has
/// at most two batches waiting.
fn drive(disk: &Disk, writer: &mut dyn ImageWriter, args: &ExportArgs, term: &AtomicBool, hash: bool) -> Result<String> {
    let size = disk.virtual_size();
    let plan = Plan { gran: writer.granularity(), skip_zeros: writer.skips_zeros(), prep: writer.preparer(), hash };
    let runs = writer.takes_runs();
    let batches = data_batches(disk, !plan.skip_zeros)?;
    let total: u64 = batches.iter().map(|b| BATCH.min(size - b * BATCH)).sum();
    let mut progress = Progress::new(total, args.quiet);
    let mut limit = args.rate_limit.map(RateLimit::new);
    let mut digest = HashList::default();
    let jobs = args.jobs.clamp(1, 64).min(batches.len().max(1));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<()> {
        let mut inboxes = Vec::new();
        for w in 0..jobs {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch>>(2);
            inboxes.push(rx);
            let mine: Vec<u64> = batches.iter().copied().skip(w).step_by(jobs).collect();
            let stop = &stop;
            s.spawn(move || {
                for b in mine {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = process_batch(disk, b, plan);
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        break;
                    }
                }
            });
        }
        let result = (|| -> Result<()> {
            for k in 0..batches.len() {
                if term.load(Ordering::Relaxed) {
                    bail!("interrupted");
                }
                let mut batch = inboxes[k % jobs].recv().map_err(|_| anyhow::anyhow!("export worker stopped"))??;
                if let Some(l) = limit.as_mut() {
                    l.take(batch.buf.len() as u64);
                }
                if hash {
                    digest.push_zero_blocks((batch.offset - digest.covered) / LEAF);
                    let mut left = batch.buf.len() as u64;
                    for leaf in &batch.leaves {
                        let n = left.min(LEAF);
                        digest.push_leaf(leaf, n);
                        left -= n;
                    }
                }
                write_batch(writer, &mut batch, runs)?;
                progress.advance(batch.buf.len() as u64);
            }
            Ok(())
        })();
        // Unblock and stop the workers whatever happened.
        stop.store(true, Ordering::Relaxed);
        drop(inboxes);
        result
    })?;
    if term.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    writer.finish()?;
    progress.finish();
    if !hash {
        return Ok(String::new());
    }
    let full_end = size / LEAF * LEAF;
    if digest.covered < full_end {
        digest.push_zero_blocks((full_end - digest.covered) / LEAF);
    }
    if digest.covered < size {
        digest.push_zero_tail(size - digest.covered);
    }
    Ok(digest.finish())
}

/// Hands a batch's granules to the writer, joining adjacent ones into a
/// single write where the writer takes runs.
fn write_batch(writer: &mut dyn ImageWriter, batch: &mut Batch, runs: bool) -> Result<()> {
    if !runs {
        for (off, len, prepared) in &mut batch.granules {
            let data = &batch.buf[*off..*off + *len];
            writer.write(Granule { offset: batch.offset + *off as u64, data, prepared: prepared.take() })?;
        }
        return Ok(());
    }
    let mut i = 0;
    while i < batch.granules.len() {
        let start = batch.granules[i].0;
        let mut end = start + batch.granules[i].1;
        i += 1;
        while i < batch.granules.len() && batch.granules[i].0 == end {
            end += batch.granules[i].1;
            i += 1;
        }
        writer.write(Granule { offset: batch.offset + start as u64, data: &batch.buf[start..end], prepared: None })?;
    }
    Ok(())
}

/// The content digest of a disk, as the manifest records it.
pub fn content_digest(disk: &Disk) -> Result<String> {
    struct NullWriter;
    impl ImageWriter for NullWriter {
        fn granularity(&self) -> u64 {
            BATCH
        }
        fn write(&mut self, _: Granule<'_>) -> Result<()> {
            Ok(())
        }
        fn finish(&mut self) -> Result<()> {
            Ok(())
        }
    }
    let args = ExportArgs {
        format: ExportFormat::RawSparse,
        output: PathBuf::new(),
        quiet: true,
        rate_limit: None,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        below: 0,
        manifest: false,
    };
    drive(disk, &mut NullWriter, &args, &AtomicBool::new(false), true)
}

fn manifest_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".manifest.json");
    output.with_file_name(name)
}

fn write_manifest(outputs: &mut OutputSet, src: &Path, disk: &Disk, args: &ExportArgs, content: &str) -> Result<()> {
    // The file that holds the disk's bytes as they are (raw outputs, the
    // flat extent) has the content digest by construction: hashing it
    // again would re-read gigabytes from the page cache and prove nothing.
    let plain_content = match args.format {
        ExportFormat::Raw | ExportFormat::RawSparse => Some(0),
        ExportFormat::VmdkFlat => Some(1),
        _ => None,
    };
    let mut files = Vec::new();
    for (i, (fin, partial)) in outputs.finals().into_iter().zip(outputs.partials()).enumerate() {
        let (size, digest) = if plain_content == Some(i) {
            (disk.virtual_size(), content.to_owned())
        } else {
            digest::file_digest(&partial).with_context(|| format!("hashing {}", partial.display()))?
        };
        files.push(serde_json::json!({ "name": file_name(&fin), "size": size, "digest": digest }));
    }
    let m = serde_json::json!({
        "vbproxy_manifest": 1,
        "algorithm": digest::ALGORITHM,
        "format": args.format.qemu_name(),
        "export_format": format!("{:?}", args.format),
        "source": {
            "path": src,
            "chain": disk.layers().iter().map(|l| l.path().to_owned()).collect::<Vec<_>>(),
            "virtual_size": disk.virtual_size(),
            "content_digest": content,
        },
        "files": files,
    });
    let path = manifest_path(&args.output);
    let f = outputs.create(&path)?;
    serde_json::to_writer_pretty(&f, &m)?;
    f.sync_all()?;
    Ok(())
}

/// `vbproxy verify OUT [--source SOURCE]`.
pub fn verify(output: &Path, source: Option<&Path>) -> Result<()> {
    let mpath = manifest_path(output);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).with_context(|| format!("{}: cannot read", mpath.display()))?)
        .with_context(|| format!("{}: not a manifest", mpath.display()))?;
    if m["algorithm"] != digest::ALGORITHM {
        bail!("{}: unknown digest algorithm {}", mpath.display(), m["algorithm"]);
    }
    let mut bad = Vec::new();
    let dir = output.parent().unwrap_or(Path::new("."));
    for f in m["files"].as_array().context("manifest has no files")? {
        let name = f["name"].as_str().context("file without name")?;
        let (size, d) = digest::file_digest(&dir.join(name)).with_context(|| format!("{name}: cannot read"))?;
        if Some(size) != f["size"].as_u64() || Some(d.as_str()) != f["digest"].as_str() {
            bad.push(format!("{name}: file differs from the manifest"));
        } else {
            writeln!(std::io::stdout().lock(), "{name}: file OK")?;
        }
    }
    let want = m["source"]["content_digest"].as_str().context("manifest has no content digest")?;
    let exported = source::open(output)?;
    if content_digest(&exported)? == want {
        writeln!(std::io::stdout().lock(), "{}: content OK (read as {})", output.display(), exported.top().format().name())?;
    } else {
        bad.push(format!("{}: disk content differs from the manifest", output.display()));
    }
    if let Some(s) = source {
        let d = source::open(s)?;
        if content_digest(&d)? == want {
            writeln!(std::io::stdout().lock(), "{}: source content matches", s.display())?;
        } else {
            bad.push(format!("{}: source content differs from the export (changed since?)", s.display()));
        }
    }
    if !bad.is_empty() {
        bail!("verification failed:\n  {}", bad.join("\n  "));
    }
    Ok(())
}

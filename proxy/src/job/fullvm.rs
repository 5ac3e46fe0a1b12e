//! Full-VM jobs: every chosen disk exported to `TARGET/<slot>.<ext>` (with
//! the export's own checksum manifest beside it), the VM's configuration
//! files (`.vmx`, `.nvram`, `.vmsd`...) copied byte for byte, and
//! `TARGET/MANIFEST.json` tying them together. Everything is written as
//! `NAME.partial` and renamed when complete; the journal names each file
//! before it is created.

use super::prepare::{is_plain_name, JobCtx};
use super::PrepareArgs;
use crate::export::{self, ExportArgs, ExportFormat};
use crate::vm::VmConfig;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "MANIFEST.json";
/// Largest configuration file copied (`.nvram` files are a few hundred KiB).
const MAX_CONFIG_FILE: u64 = 64 << 20;

/// File name extension of an export format.
pub fn extension(f: ExportFormat) -> &'static str {
    match f {
        ExportFormat::Raw | ExportFormat::RawSparse => "raw",
        ExportFormat::VmdkFlat | ExportFormat::VmdkSparse | ExportFormat::VmdkStream => "vmdk",
        ExportFormat::Qcow2 => "qcow2",
        ExportFormat::Vhd => "vhd",
        ExportFormat::Vhdx => "vhdx",
    }
}

fn format_name(f: ExportFormat) -> String {
    use clap::ValueEnum;
    f.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
}

pub struct ExportedDisk {
    pub slot: String,
    pub spec: String,
    pub file: String,
    pub format: String,
    /// The export's own manifest (`<file>.manifest.json`), as written.
    pub manifest: serde_json::Value,
}

impl ExportedDisk {
    pub fn to_json(&self, dir: &Path) -> serde_json::Value {
        let m = &self.manifest;
        serde_json::json!({
            "slot": self.slot,
            "source": self.spec,
            "chain": m["source"]["chain"],
            "file": self.file,
            "path": dir.join(&self.file),
            "format": self.format,
            "virtual_size": m["source"]["virtual_size"],
            "manifest": format!("{}.manifest.json", self.file),
            "algorithm": m["algorithm"],
            "content_digest": m["source"]["content_digest"],
            "files": m["files"],
        })
    }
}

pub struct CopiedFile {
    pub name: String,
    pub spec: String,
    pub size: u64,
    pub sha256: String,
}

impl CopiedFile {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"name": self.name, "source": self.spec, "size": self.size, "sha256": self.sha256})
    }
}

pub struct Exported {
    pub disks: Vec<ExportedDisk>,
    pub files: Vec<CopiedFile>,
}

pub fn export(ctx: &mut JobCtx, vm: &VmConfig, a: &PrepareArgs) -> Result<Exported> {
    let dir = ctx.job.target.clone();
    let ext = extension(a.format);
    let mut disks = Vec::new();
    let records = ctx.job.disks.clone();
    for (i, d) in records.iter().enumerate() {
        let file = format!("{}.{ext}", d.slot);
        if let Some(r) = ctx.job.disks.get_mut(i) {
            r.name = file.clone();
        }
        let out = dir.join(&file);
        let manifest = dir.join(format!("{file}.manifest.json"));
        let mut claim = vec![out.clone(), manifest.clone()];
        if a.format == ExportFormat::VmdkFlat {
            claim.push(dir.join(format!("{}-flat.vmdk", d.slot)));
        }
        let partials: Vec<PathBuf> = claim.iter().map(|p| partial(p)).collect();
        claim.extend(partials);
        ctx.claim(&claim)?;
        eprintln!("vbproxy: exporting {} ({}) to {}", d.slot, d.spec, out.display());
        let args = ExportArgs {
            format: a.format,
            output: out.clone(),
            quiet: a.json,
            rate_limit: a.rate_limit,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            below: 0,
            manifest: true,
        };
        export::run(Path::new(&d.spec), &args).with_context(|| format!("exporting disk {} of VM {}", d.slot, vm.name))?;
        let m = read_json(&manifest)?;
        disks.push(ExportedDisk { slot: d.slot.clone(), spec: d.spec.clone(), file, format: format_name(a.format), manifest: m });
    }
    let mut files = Vec::new();
    for f in &vm.files {
        if !is_plain_name(&f.name) {
            bail!("VM {}: configuration file name {:?} is not a plain file name; refusing to write it", vm.name, f.name);
        }
        let dest = dir.join(&f.name);
        ctx.claim(&[dest.clone(), partial(&dest)])?;
        files.push(copy_file(&f.spec, &dest).with_context(|| format!("copying {} of VM {}", f.name, vm.name))?);
        if let Some(c) = files.last_mut() {
            c.name = f.name.clone();
        }
    }
    let m = serde_json::json!({
        "vbproxy_backup_manifest": 1,
        "job_id": ctx.job.id,
        "vm": vm.name,
        "vmx": vm.vmx,
        "snapshot": ctx.job.snapshot,
        "created": ctx.job.created,
        "format": format_name(a.format),
        "disks": disks.iter().map(|d| d.to_json(&dir)).map(|mut v| { if let Some(o) = v.as_object_mut() { o.remove("path"); } v }).collect::<Vec<_>>(),
        "files": files.iter().map(CopiedFile::to_json).collect::<Vec<_>>(),
        "skipped": vm.skipped.iter().map(|(s, r)| serde_json::json!({"slot": s, "reason": r})).collect::<Vec<_>>(),
    });
    let path = dir.join(MANIFEST);
    ctx.claim(&[path.clone(), partial(&path)])?;
    let mut text = serde_json::to_vec_pretty(&m)?;
    text.push(b'\n');
    write_new(&path, &text)?;
    ctx.save()?;
    Ok(Exported { disks, files })
}

pub fn partial(p: &Path) -> PathBuf {
    let mut n = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    n.push(".partial");
    p.with_file_name(n)
}

fn read_json(p: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: not JSON", p.display()))
}

/// Reads a whole (small) file through the source layer: a local path, or
/// a file inside a datastore (`SOURCE#/dir/name`).
pub fn read_spec(spec: &str, max: u64) -> Result<Vec<u8>> {
    crate::source::locate(spec)?.read_small(usize::try_from(max).unwrap_or(usize::MAX))
}

fn copy_file(spec: &str, dest: &Path) -> Result<CopiedFile> {
    let bytes = read_spec(spec, MAX_CONFIG_FILE)?;
    write_new(dest, &bytes)?;
    Ok(CopiedFile { name: String::new(), spec: spec.to_owned(), size: bytes.len() as u64, sha256: format!("{:x}", Sha256::digest(&bytes)) })
}

/// Writes `DEST.partial` (created exclusively: never a file prepare did
/// not make), syncs it, and links it into place without replacing
/// anything already at `dest`.
fn write_new(dest: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = partial(dest);
    let mut f = std::fs::File::options().write(true).create_new(true).open(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    f.write_all(bytes).with_context(|| format!("{}: write failed", tmp.display()))?;
    f.sync_all()?;
    drop(f);
    std::fs::hard_link(&tmp, dest).with_context(|| format!("{}: cannot create (exists already?)", dest.display()))?;
    std::fs::remove_file(&tmp).with_context(|| format!("{}: cannot remove", tmp.display()))?;
    if let Some(d) = dest.parent() {
        super::journal::sync_dir(d)?;
    }
    Ok(())
}

//! The files an export creates. Each is written as `NAME.partial` and
//! renamed only when the whole export succeeded (the main output last), so
//! an interrupted or failed export never leaves anything that looks
//! complete; on failure every partial file is removed.

use anyhow::{Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// An output that is not a regular file: a character device such as
/// `/dev/null` or a FIFO is opened to be written in place (`Some`); a block
/// device is refused, since vbproxy writes to no device; anything else
/// (absent, a regular file) is `None` and gets the `.partial` treatment.
pub fn open_special(path: &Path) -> Result<Option<File>> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::metadata(path) else { return Ok(None) };
    let t = meta.file_type();
    if t.is_block_device() {
        anyhow::bail!("{}: is a block device; vbproxy never writes to devices (export to a file)", path.display());
    }
    if t.is_char_device() || t.is_fifo() {
        let f = File::options().write(true).open(path).with_context(|| format!("{}: cannot open for writing", path.display()))?;
        return Ok(Some(f));
    }
    if t.is_dir() {
        anyhow::bail!("{}: is a directory", path.display());
    }
    Ok(None)
}

#[derive(Default)]
pub struct OutputSet {
    /// (final path, partial path), in creation order.
    files: Vec<(PathBuf, PathBuf)>,
}

pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

impl OutputSet {
    /// Creates `path.partial`. An existing file at `path` is replaced only
    /// when the export completes (atomic rename), so until then the previous
    /// export stays intact. The caller has checked `path` is not a source.
    pub fn create(&mut self, path: &Path) -> Result<File> {
        let partial = partial_path(path);
        let f = File::options()
            .write(true)
            .read(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .with_context(|| format!("{}: cannot create", partial.display()))?;
        self.files.push((path.to_owned(), partial));
        Ok(f)
    }

    pub fn partials(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.1.clone()).collect()
    }

    pub fn finals(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.0.clone()).collect()
    }

    /// Renames every partial file into place; the first created (the main
    /// output, e.g. a VMDK descriptor) last.
    pub fn commit(&mut self) -> Result<()> {
        for (fin, partial) in self.files.iter().rev() {
            std::fs::rename(partial, fin).with_context(|| format!("renaming {} to {}", partial.display(), fin.display()))?;
        }
        self.files.clear();
        Ok(())
    }

    pub fn abort(&mut self) {
        for (_, partial) in self.files.drain(..) {
            let _ = std::fs::remove_file(partial);
        }
    }
}

impl Drop for OutputSet {
    fn drop(&mut self) {
        self.abort();
    }
}

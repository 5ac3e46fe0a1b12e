//! The files an export creates. Each is written as `NAME.partial` and
//! renamed only when the whole export succeeded (the main output last), so
//! an interrupted or failed export never leaves anything that looks
//! complete; on failure every partial file is removed.

use anyhow::{Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

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

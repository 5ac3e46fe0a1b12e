//! One error type for the whole library. Every variant that concerns an
//! on-disk structure names the file, the structure and the byte offset, so
//! an administrator can tell which file is damaged and where.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened at all.
    #[error("{path}: cannot open: {source}")]
    Open { path: PathBuf, source: std::io::Error },

    /// An I/O error while reading a structure.
    #[error("{path}: reading {structure} at offset {offset}: {source}")]
    Io { path: PathBuf, structure: String, offset: u64, source: std::io::Error },

    /// A structure lies (partly) past the end of its file.
    #[error("{path}: {structure} at offset {offset} ({len} bytes) lies beyond the end of the file ({file_size} bytes); the file is truncated or the structure is corrupt")]
    Truncated { path: PathBuf, structure: String, offset: u64, len: u64, file_size: u64 },

    /// A structure is present but its content is invalid.
    #[error("{path}: {structure} at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, structure: String, offset: u64, reason: String },

    /// A valid structure that uses a feature this reader does not implement.
    /// Refusing is correct: guessing would return wrong data.
    #[error("{path}: {structure} at offset {offset}: unsupported: {reason}")]
    Unsupported { path: PathBuf, structure: String, offset: u64, reason: String },

    /// A differencing disk whose parent cannot be found.
    #[error("{child}: parent disk {hint:?} not found (tried: {tried})")]
    MissingParent { child: PathBuf, hint: String, tried: String },

    /// A parent was found but is not the one the child was made from.
    #[error("{child}: parent {parent} does not match: {reason}")]
    ParentMismatch { child: PathBuf, parent: PathBuf, reason: String },

    /// The parent chain comes back to a file it already contains.
    #[error("snapshot chain loops: {}", fmt_chain(.chain))]
    ChainLoop { chain: Vec<PathBuf> },

    /// The parent chain is longer than any real one.
    #[error("{path}: snapshot chain deeper than {max} disks")]
    ChainTooDeep { path: PathBuf, max: usize },

    /// A read outside the virtual disk.
    #[error("read of {len} bytes at offset {offset} is outside the virtual disk ({size} bytes)")]
    OutOfRange { offset: u64, len: u64, size: u64 },
}

fn fmt_chain(chain: &[PathBuf]) -> String {
    chain.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" -> ")
}

impl Error {
    /// Errors that mean "refused for safety" (exit code 3 in the CLI): using
    /// the disk anyway could hand out data from the wrong disk or zeros in
    /// place of missing data.
    pub fn is_safety_refusal(&self) -> bool {
        matches!(
            self,
            Error::MissingParent { .. } | Error::ParentMismatch { .. } | Error::ChainLoop { .. }
        )
    }

    pub fn corrupt(path: &std::path::Path, structure: impl Into<String>, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt { path: path.to_owned(), structure: structure.into(), offset, reason: reason.into() }
    }

    pub fn unsupported(path: &std::path::Path, structure: impl Into<String>, offset: u64, reason: impl Into<String>) -> Error {
        Error::Unsupported { path: path.to_owned(), structure: structure.into(), offset, reason: reason.into() }
    }
}

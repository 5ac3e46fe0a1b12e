//! Turning a SOURCE argument into an open disk.
//!
//! A SOURCE is an image file, a block device, an `iscsi://` LUN, a VM
//! configuration (`.vmx`, see `vm.rs`), or `STORE#/path`: a file inside the
//! datastore that STORE holds. Each kind is opened by its own module; this
//! one dispatches, and keeps the datastores opened in this process so the
//! disks of one VM share one open datastore.

use anyhow::{bail, Context, Result};
use guestfs::block::{FileSource, ReadAt};
use guestfs::datastore::{open_datastore, Datastore, FsNamespace};
use guestfs::disk::{open_disk, Disk, OpenOptions};
use guestfs::namespace::{LocalFs, Namespace, SingleSource};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// `--no-parent`: read delta extents given without their descriptor alone.
static NO_PARENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_no_parent(on: bool) {
    NO_PARENT.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub fn open_options() -> OpenOptions {
    OpenOptions { allow_unknown_parent: NO_PARENT.load(std::sync::atomic::Ordering::Relaxed), ..Default::default() }
}

/// Opens the bytes a SOURCE names, before any disk format is read: an image
/// file, a block device (through the LUN layer, the only module that opens
/// devices) or an iSCSI LUN (through the built-in read-only initiator).
pub fn open_block(spec: &str) -> Result<Arc<dyn ReadAt>> {
    if spec.starts_with("iscsi://") {
        return crate::iscsi_source::open(spec);
    }
    let path = Path::new(spec);
    if crate::lun::device::is_block_device(path) {
        return crate::lun::device::open_read_only(path);
    }
    Ok(Arc::new(FileSource::open(path)?))
}

/// Whether a SOURCE names a VM configuration rather than a disk.
pub fn is_vmx(spec: &Path) -> bool {
    spec.extension().is_some_and(|e| e.eq_ignore_ascii_case("vmx"))
}

/// Opens a SOURCE and its whole snapshot chain. A `.vmx` with exactly one
/// disk opens that disk; with several, the caller must open them all
/// (`guest::open_disks`).
pub fn open(source: &Path) -> Result<Disk> {
    let opts = open_options();
    let spec = source.to_string_lossy();
    if is_vmx(source) {
        let vm = crate::vm::load_vm(&spec)?;
        return match vm.disks.as_slice() {
            [one] => open(Path::new(&one.spec)),
            [] => bail!("{spec}: the VM has no disk to back up"),
            many => bail!(
                "{spec}: the VM has {} disks ({}); this command reads one disk: name it (e.g. {})",
                many.len(),
                many.iter().map(|d| d.slot.as_str()).collect::<Vec<_>>().join(", "),
                many.first().map(|d| d.spec.as_str()).unwrap_or_default()
            ),
        };
    }
    // A path that exists as a whole on the local filesystem is always a
    // plain file (DESIGN.md), even with '#' or "iscsi:" in its name.
    if !source.exists() && spec.starts_with("iscsi://") && split_store(&spec).is_none() {
        let src = open_block(&spec)?;
        // The disk's name appears in every message: never with a secret.
        let name = std::path::PathBuf::from(redact(&spec));
        return Ok(open_disk(&SingleSource { name: name.clone(), source: src }, &name, &opts)?);
    }
    if crate::lun::device::is_block_device(source) {
        let src = open_block(&spec)?;
        return Ok(open_disk(&SingleSource { name: source.to_owned(), source: src }, source, &opts)?);
    }
    match locate(&spec)? {
        Located::Local(p) => Ok(open_disk(&LocalFs, &p, &opts)?),
        Located::Store { store, inner } => {
            let ns = store.namespace();
            Ok(open_disk(&ns, &ns.name_of(&inner), &opts)?)
        }
    }
}

/// A SOURCE as messages show it: an `iscsi://user%secret@…` URL loses its
/// CHAP secret (`iscsi://user@…`); anything else is unchanged.
pub fn redact(spec: &str) -> String {
    let Some(rest) = spec.strip_prefix("iscsi://") else { return spec.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find('%') {
            Some(pct) => format!("iscsi://{}{}", &rest[..pct], &rest[at..]),
            None => spec.to_owned(),
        },
        None => spec.to_owned(),
    }
}

// ------------------------------------------------------------ datastores

/// A datastore opened in this process, under the key a SOURCE names it
/// by (`/dev/sdc`, `iscsi://…`, an image path, or `[name]` for an
/// inventory datastore reached by its LUN identifier).
pub struct OpenStore {
    pub key: String,
    pub ds: Datastore,
    /// Other names (`/vmfs/volumes/<alias>/…`): the inventory name.
    pub aliases: Vec<String>,
}

impl OpenStore {
    /// The datastore's files, named `KEY#/dir/file`.
    pub fn namespace(&self) -> FsNamespace {
        self.ds.namespace(&format!("{}#", redact(&self.key)), &self.aliases)
    }

    /// Whether ESX paths `/vmfs/volumes/<name>/…` mean this datastore.
    pub fn answers_to(&self, name: &str) -> bool {
        self.ds.label.as_deref() == Some(name) || self.ds.uuid.as_deref() == Some(name) || self.aliases.iter().any(|a| a == name)
    }
}

static STORES: Mutex<Vec<Arc<OpenStore>>> = Mutex::new(Vec::new());

fn stores() -> std::sync::MutexGuard<'static, Vec<Arc<OpenStore>>> {
    STORES.lock().unwrap_or_else(|e| e.into_inner())
}

fn cached_store(key: &str) -> Option<Arc<OpenStore>> {
    stores().iter().find(|s| s.key == key).cloned()
}

/// Keeps an opened datastore for the rest of the process under `key`.
pub fn register_store(key: &str, ds: Datastore, aliases: Vec<String>) -> Arc<OpenStore> {
    let mut all = stores();
    if let Some(s) = all.iter().find(|s| s.key == key) {
        return s.clone();
    }
    let s = Arc::new(OpenStore { key: key.to_owned(), ds, aliases });
    all.push(s.clone());
    s
}

/// The open datastore that ESX calls `/vmfs/volumes/<name>`.
pub fn store_by_alias(name: &str) -> Option<Arc<OpenStore>> {
    stores().iter().find(|s| s.answers_to(name)).cloned()
}

/// Opens (once per process) the datastore a STORE spec names.
pub fn open_store(key: &str) -> Result<Arc<OpenStore>> {
    if let Some(s) = cached_store(key) {
        return Ok(s);
    }
    let shown = redact(key);
    let src = open_block(key).with_context(|| format!("datastore {shown}"))?;
    let ds = open_datastore(vec![src], &shown)?;
    Ok(register_store(key, ds, Vec::new()))
}

/// Where a file SOURCE spec points.
#[derive(Clone)]
pub enum Located {
    Local(PathBuf),
    /// `inner` is the path inside the datastore, starting with `/`.
    Store { store: Arc<OpenStore>, inner: String },
}

/// Splits `STORE#/path` at the last `#/` whose left part is something
/// that can be opened (an existing local path, an `iscsi://` URL, a
/// datastore already open in this process).
pub fn split_store(spec: &str) -> Option<(&str, &str)> {
    let mut end = spec.len();
    while let Some(i) = spec.get(..end).and_then(|s| s.rfind("#/")) {
        let (left, right) = (spec.get(..i)?, spec.get(i + 1..)?);
        if !left.is_empty() && (left.starts_with("iscsi://") || Path::new(left).exists() || cached_store(left).is_some()) {
            return Some((left, right));
        }
        end = i;
    }
    None
}

/// Resolves a file SOURCE spec: a local path, `DIR#/path` (a datastore
/// mounted by the OS: just a local path), or `STORE#/path`.
pub fn locate(spec: &str) -> Result<Located> {
    if Path::new(spec).exists() {
        return Ok(Located::Local(PathBuf::from(spec)));
    }
    let Some((left, inner)) = split_store(spec) else {
        return Ok(Located::Local(PathBuf::from(spec)));
    };
    if Path::new(left).is_dir() {
        return Ok(Located::Local(Path::new(left).join(inner.trim_start_matches('/'))));
    }
    Ok(Located::Store { store: open_store(left)?, inner: inner.to_owned() })
}

impl Located {
    /// The SOURCE spec that names this file again.
    pub fn spec(&self) -> String {
        match self {
            Located::Local(p) => p.display().to_string(),
            Located::Store { store, inner } => format!("{}#{inner}", redact(&store.key)),
        }
    }

    fn namespace(&self) -> (Box<dyn Namespace>, PathBuf) {
        match self {
            Located::Local(p) => (Box::new(LocalFs), p.clone()),
            Located::Store { store, inner } => {
                let ns = store.namespace();
                let name = ns.name_of(inner);
                (Box::new(ns), name)
            }
        }
    }

    pub fn exists(&self) -> bool {
        let (ns, p) = self.namespace();
        ns.exists(&p)
    }

    /// Opens the file's bytes.
    pub fn open(&self) -> Result<Arc<dyn ReadAt>> {
        let (ns, p) = self.namespace();
        Ok(ns.open(&p)?)
    }

    /// Reads a small file whole (configuration files), refusing one larger
    /// than `max` bytes before reading it.
    pub fn read_small(&self, max: usize) -> Result<Vec<u8>> {
        let src = self.open()?;
        let size = src.size();
        let len = usize::try_from(size).ok().filter(|&l| l <= max);
        let Some(len) = len else {
            bail!("{}: {size} bytes, larger than the {max} bytes a configuration file may have", self.spec());
        };
        let mut buf = vec![0u8; len];
        src.read_exact_at(&mut buf, 0).with_context(|| format!("reading {}", self.spec()))?;
        Ok(buf)
    }

    /// The file `name` (relative, `/`-separated) in this file's directory.
    pub fn sibling(&self, name: &str) -> Located {
        match self {
            Located::Local(p) => Located::Local(guestfs::namespace::resolve_relative(p, name)),
            Located::Store { store, inner } => {
                let dir = inner.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                Located::Store { store: store.clone(), inner: format!("{dir}/{}", name.trim_start_matches('/')) }
            }
        }
    }

    /// The file name without its directory.
    pub fn file_name(&self) -> String {
        let s = match self {
            Located::Local(p) => p.display().to_string(),
            Located::Store { inner, .. } => inner.clone(),
        };
        s.rsplit('/').next().unwrap_or("").to_owned()
    }
}

#[cfg(test)]
mod redact_tests {
    #[test]
    fn secrets_never_reach_messages() {
        assert_eq!(super::redact("iscsi://alice%s3cret@10.0.0.5:3261/iqn.x:t/7#/vm/a.vmx"), "iscsi://alice@10.0.0.5:3261/iqn.x:t/7#/vm/a.vmx");
        assert_eq!(super::redact("iscsi://10.0.0.5/iqn.x:t/7"), "iscsi://10.0.0.5/iqn.x:t/7");
        assert_eq!(super::redact("/dev/sdc#/a%b@c"), "/dev/sdc#/a%b@c");
    }
}

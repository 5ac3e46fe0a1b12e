//! Virtual machines: a `.vmx` (and its `.vmsd`) resolved to the SOURCE
//! specs of its disks and configuration files, as jobs open them; VM
//! discovery on the inventory's datastores; `vbproxy vm list`.

use crate::inventory::Inventory;
use crate::source::{self, Located};
use anyhow::{anyhow, bail, Context, Result};
use guestfs::vm::vmsd::Vmsd;
use guestfs::vm::vmx::{DiskUse, Vmx, RDM_REASON};
use guestfs::vm::MAX_CONFIG_BYTES;
use std::sync::Arc;

/// A VM as a job opens it.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// `displayName` from the `.vmx` (its file stem when absent).
    pub name: String,
    /// SOURCE spec of the `.vmx` (a local path or `STORE#/dir/name.vmx`).
    pub vmx: String,
    /// Disks to back up, in controller-slot order.
    pub disks: Vec<VmDiskRef>,
    /// Disks not backed up, with the reason (RDM, independent, absent).
    pub skipped: Vec<(String, String)>,
    /// `.vmx`, `.nvram`, `.vmsd` and other small files a full-VM backup keeps.
    pub files: Vec<VmFileRef>,
    pub guest_os: Option<String>,
    pub uuid_bios: Option<String>,
    /// The snapshot tree, when the VM has a `.vmsd`.
    pub vmsd: Option<Vmsd>,
    /// Why the `.vmsd` could not be read (the disks are still usable: the
    /// `.vmx` names each disk's current descriptor).
    pub vmsd_error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct VmDiskRef {
    /// Controller slot: `scsi0-0`, `ide0-1`, `sata0-0`, `nvme0-0` (the guest tree's disk name).
    pub slot: String,
    /// SOURCE spec of the disk's current (top) descriptor.
    pub spec: String,
    /// `fileName` as the `.vmx` writes it.
    pub file_name: String,
}

#[derive(Debug, Clone)]
pub struct VmFileRef {
    /// File name as in the VM directory (`web01.vmx`).
    pub name: String,
    #[allow(dead_code)] // read by full-VM backups (jobs)
    pub spec: String,
}

/// createTypes of raw device mappings: the data is on another LUN.
const RDM_CREATE_TYPES: [&str; 5] = ["vmfsRawDeviceMap", "vmfsPassthroughRawDeviceMap", "vmfsRDM", "vmfsRDMP", "vmfsRaw"];

/// Where a disk `fileName` of a `.vmx` at `vmx` lives: relative names in
/// the `.vmx` directory; `/vmfs/volumes/<datastore>/…` on the open
/// datastore of that name or UUID; other absolute names on the local
/// filesystem.
fn resolve_disk_file(vmx: &Located, file_name: &str) -> Result<Located> {
    let name = file_name.replace('\\', "/");
    if !name.starts_with('/') {
        return Ok(vmx.sibling(&name));
    }
    if let Some(rest) = name.strip_prefix("/vmfs/volumes/") {
        let (vol, inner) = rest.split_once('/').ok_or_else(|| anyhow!("{file_name:?}: no file after the datastore name"))?;
        if let Located::Store { store, .. } = vmx {
            if store.answers_to(vol) {
                return Ok(Located::Store { store: store.clone(), inner: format!("/{inner}") });
            }
        }
        if let Some(store) = source::store_by_alias(vol) {
            return Ok(Located::Store { store, inner: format!("/{inner}") });
        }
        if std::path::Path::new(&name).exists() {
            return Ok(Located::Local(name.into()));
        }
        bail!("{file_name:?}: datastore {vol:?} is not open here (list it in the inventory, or open the VM from that datastore)");
    }
    Ok(Located::Local(name.into()))
}

/// The descriptor's createType when the file is a VMDK text descriptor of
/// a raw device mapping.
fn rdm_create_type(file: &Located) -> Result<Option<String>> {
    let src = file.open()?;
    let size = src.size();
    if size > guestfs::disk::vmdk::descriptor::MAX_DESCRIPTOR_BYTES as u64 || size == 0 {
        return Ok(None);
    }
    let mut text = vec![0u8; usize::try_from(size)?];
    src.read_exact_at(&mut text, 0).with_context(|| format!("reading {}", file.spec()))?;
    if !guestfs::disk::vmdk::descriptor::looks_like_descriptor(&text) {
        return Ok(None);
    }
    let Ok(d) = guestfs::disk::vmdk::descriptor::parse(&text) else { return Ok(None) };
    Ok(RDM_CREATE_TYPES.contains(&d.create_type.as_str()).then_some(d.create_type))
}

/// Reads a VM's configuration from its `.vmx` SOURCE spec.
pub fn load_vm(vmx_spec: &str) -> Result<VmConfig> {
    let loc = source::locate(vmx_spec)?;
    let spec = loc.spec();
    let bytes = loc.read_small(MAX_CONFIG_BYTES).with_context(|| format!("VM configuration {spec}"))?;
    let vmx = Vmx::parse(&bytes).map_err(|e| anyhow!("{spec}: not a usable .vmx: {e}"))?;
    let file = loc.file_name();
    let stem = file.rsplit_once('.').map(|(s, _)| s).unwrap_or(&file).to_owned();
    let mut vm = VmConfig {
        name: vmx.display_name().map(str::to_owned).unwrap_or_else(|| stem.clone()),
        vmx: spec.clone(),
        disks: Vec::new(),
        skipped: Vec::new(),
        files: vec![VmFileRef { name: file.clone(), spec: spec.clone() }],
        guest_os: vmx.guest_os().map(str::to_owned),
        uuid_bios: vmx.uuid_bios().map(str::to_owned),
        vmsd: None,
        vmsd_error: None,
    };
    for d in vmx.disks() {
        let slot = d.slot();
        match d.use_ {
            DiskUse::CdRom => continue,
            DiskUse::Skip(reason) => vm.skipped.push((slot, reason)),
            DiskUse::Backup => {
                let node = d.node();
                let f = resolve_disk_file(&loc, &d.file_name).with_context(|| format!("{spec}: {node}.fileName"))?;
                if !f.exists() {
                    bail!("{spec}: {node}.fileName {:?}: disk file {} not found", d.file_name, f.spec());
                }
                if let Some(ct) = rdm_create_type(&f).with_context(|| format!("{spec}: {node}"))? {
                    vm.skipped.push((slot, format!("{RDM_REASON}; descriptor {} has createType {ct}", f.spec())));
                    continue;
                }
                vm.disks.push(VmDiskRef { slot, spec: f.spec(), file_name: d.file_name.clone() });
            }
        }
    }
    let extra = [vmx.nvram().map(str::to_owned), Some(format!("{stem}.vmsd")), Some(format!("{stem}.vmxf"))];
    for name in extra.into_iter().flatten() {
        if name.contains('/') || name.contains('\\') {
            continue;
        }
        let f = loc.sibling(&name);
        if f.exists() && !vm.files.iter().any(|x| x.name == name) {
            vm.files.push(VmFileRef { name: name.clone(), spec: f.spec() });
        }
    }
    let vmsd = loc.sibling(&format!("{stem}.vmsd"));
    if vmsd.exists() {
        match vmsd.read_small(MAX_CONFIG_BYTES).map_err(|e| format!("{e:#}")).and_then(|b| Vmsd::parse(&b).map_err(|e| e.to_string())) {
            Ok(v) => vm.vmsd = Some(v),
            Err(e) => {
                tracing::warn!("{}: {e}", vmsd.spec());
                vm.vmsd_error = Some(format!("{}: {e}", vmsd.spec()));
            }
        }
    }
    Ok(vm)
}

/// A `.vmx` found on a datastore, loaded or not.
pub struct FoundVm {
    pub datastore: String,
    pub vmx: String,
    pub vm: Result<VmConfig>,
}

/// What scanning the inventory's datastores found.
#[derive(Default)]
pub struct Scan {
    pub vms: Vec<FoundVm>,
    /// Datastores that could not be opened or listed, and why.
    pub errors: Vec<(String, anyhow::Error)>,
}

/// Most `.vmx` files looked at per datastore (a hostile or damaged
/// directory tree cannot make a scan endless).
const MAX_VMX_PER_DATASTORE: usize = 10_000;

/// Opens every datastore of the inventory and loads every `.vmx` in its
/// top-level directories (where vSphere keeps them).
pub fn scan(inv: &Inventory) -> Result<Scan> {
    let mut out = Scan::default();
    let opened = crate::lun::open_datastores(inv)?;
    for od in opened {
        let entry = inv.datastores.iter().find(|d| d.name == od.name);
        let key = entry.and_then(|d| d.source.clone()).unwrap_or_else(|| format!("[{}]", od.name));
        let store = match guestfs::datastore::open_datastore(od.extents, &od.name) {
            Ok(ds) => source::register_store(&key, ds, vec![od.name.clone()]),
            Err(e) => {
                out.errors.push((od.name.clone(), anyhow::Error::new(e).context(format!("datastore {}", od.name))));
                continue;
            }
        };
        match vmx_files(&store) {
            Ok(files) => {
                for inner in files {
                    let spec = format!("{key}#{inner}");
                    out.vms.push(FoundVm { datastore: od.name.clone(), vm: load_vm(&spec), vmx: spec });
                }
            }
            Err(e) => out.errors.push((od.name.clone(), e)),
        }
    }
    Ok(out)
}

/// `*.vmx` files in the top-level directories of a datastore (and its root).
fn vmx_files(store: &Arc<source::OpenStore>) -> Result<Vec<String>> {
    use guestfs::fs::FileKind;
    let fs = &store.ds.fs;
    let ctx = || format!("listing datastore {}", store.key);
    let is_vmx = |n: &[u8]| n.len() > 4 && n.get(n.len() - 4..).is_some_and(|e| e.eq_ignore_ascii_case(b".vmx"));
    let mut out = Vec::new();
    let mut root = fs.read_dir(fs.root()).with_context(ctx)?;
    root.sort_by(|a, b| a.name.cmp(&b.name));
    for e in &root {
        let Ok(name) = std::str::from_utf8(&e.name) else { continue };
        if e.kind == FileKind::File && is_vmx(&e.name) {
            out.push(format!("/{name}"));
        }
        if e.kind != FileKind::Dir || name.starts_with('.') {
            continue;
        }
        let mut inner = match fs.read_dir(e.id) {
            Ok(v) => v,
            Err(err) => {
                tracing::warn!("{}#/{name}: {err}", store.key);
                continue;
            }
        };
        inner.sort_by(|a, b| a.name.cmp(&b.name));
        for f in inner {
            if f.kind == FileKind::File && is_vmx(&f.name) {
                if let Ok(fname) = std::str::from_utf8(&f.name) {
                    out.push(format!("/{name}/{fname}"));
                }
            }
        }
        if out.len() > MAX_VMX_PER_DATASTORE {
            bail!("datastore {}: more than {MAX_VMX_PER_DATASTORE} .vmx files", store.key);
        }
    }
    Ok(out)
}

/// Finds a VM by display name (or `.vmx` file stem) on the inventory's datastores.
#[allow(dead_code)] // the entry point of `backup prepare` (jobs)
pub fn find_vm(inv: &Inventory, name: &str) -> Result<VmConfig> {
    let scan = scan(inv)?;
    let stem_of = |spec: &str| spec.rsplit('/').next().and_then(|f| f.rsplit_once('.')).map(|(s, _)| s.to_owned()).unwrap_or_default();
    let mut found: Vec<VmConfig> = Vec::new();
    let mut broken = Vec::new();
    for f in scan.vms {
        match f.vm {
            Ok(vm) if vm.name == name || stem_of(&vm.vmx) == name => found.push(vm),
            Ok(_) => {}
            Err(e) if stem_of(&f.vmx) == name => return Err(e),
            Err(e) => broken.push(format!("{}: {e:#}", f.vmx)),
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => {
            let mut msg = format!("VM {name:?} not found on the inventory's datastores");
            for (ds, e) in &scan.errors {
                msg.push_str(&format!("\n  datastore {ds} not searched: {e:#}"));
            }
            for b in &broken {
                msg.push_str(&format!("\n  unreadable: {b}"));
            }
            bail!(msg)
        }
        _ => bail!("VM {name:?} is ambiguous: {}", found.iter().map(|v| v.vmx.as_str()).collect::<Vec<_>>().join(", ")),
    }
}

// ------------------------------------------------------------ vm list

fn snapshot_json(v: &Vmsd) -> serde_json::Value {
    let tree: Vec<_> = v
        .tree()
        .into_iter()
        .map(|(depth, s)| {
            serde_json::json!({
                "uid": s.uid,
                "name": s.name,
                "parent": s.parent,
                "depth": depth,
                "create_time": s.create_time_us.map(|us| us.div_euclid(1_000_000)),
                "current": v.current == Some(s.uid),
                "disks": s.disks.iter().map(|d| serde_json::json!({"slot": d.node.replace(':', "-"), "file": d.file_name})).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "count": v.snapshots.len(),
        "current": v.current_snapshot().map(|s| s.name.clone()),
        "current_uid": v.current,
        "tree": tree,
    })
}

/// One VM for `vm list`: its disks opened to tell size and chain depth.
fn vm_json(f: &FoundVm, problems: &mut usize) -> serde_json::Value {
    let vm = match &f.vm {
        Ok(vm) => vm,
        Err(e) => {
            *problems += 1;
            return serde_json::json!({"name": null, "datastore": f.datastore, "vmx": f.vmx, "error": format!("{e:#}")});
        }
    };
    let disks: Vec<_> = vm
        .disks
        .iter()
        .map(|d| {
            let mut j = serde_json::json!({"slot": d.slot, "file": d.file_name, "spec": d.spec,
                "format": null, "virtual_size": null, "chain_depth": null, "error": null});
            match source::open(std::path::Path::new(&d.spec)) {
                Ok(disk) => {
                    j["format"] = disk.top().format().name().into();
                    j["virtual_size"] = disk.virtual_size().into();
                    j["chain_depth"] = disk.layers().len().into();
                }
                Err(e) => {
                    *problems += 1;
                    j["error"] = format!("{e:#}").into();
                }
            }
            j
        })
        .collect();
    serde_json::json!({
        "name": vm.name,
        "datastore": f.datastore,
        "vmx": vm.vmx,
        "guest_os": vm.guest_os,
        "uuid_bios": vm.uuid_bios,
        "disks": disks,
        "skipped": vm.skipped.iter().map(|(s, r)| serde_json::json!({"slot": s, "reason": r})).collect::<Vec<_>>(),
        "snapshots": vm.vmsd.as_ref().map(snapshot_json),
        "snapshot_error": vm.vmsd_error,
        "files": vm.files.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
        "error": null,
    })
}

/// `vbproxy vm list --inventory FILE [--json]`.
pub fn list(inventory: &std::path::Path, json: bool) -> Result<()> {
    use std::io::Write;
    let inv = Inventory::load(inventory)?;
    let scan = scan(&inv)?;
    let mut problems = scan.errors.len();
    let vms: Vec<_> = scan.vms.iter().map(|f| vm_json(f, &mut problems)).collect();
    let mut out = std::io::stdout().lock();
    if json {
        let errors: Vec<_> = scan.errors.iter().map(|(d, e)| serde_json::json!({"datastore": d, "error": format!("{e:#}")})).collect();
        serde_json::to_writer_pretty(&mut out, &serde_json::json!({"vms": vms, "errors": errors}))?;
        writeln!(out)?;
    } else {
        for (d, e) in &scan.errors {
            eprintln!("vbproxy: datastore {d}: {e:#}");
        }
        for v in &vms {
            write_vm_text(&mut out, v)?;
        }
    }
    out.flush()?;
    if problems > 0 {
        bail!("vm list: {problems} problem(s) (shown above)");
    }
    Ok(())
}

fn write_vm_text(out: &mut impl std::io::Write, v: &serde_json::Value) -> Result<()> {
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("-").to_owned();
    if !v["error"].is_null() {
        writeln!(out, "{}  (datastore {})\n  error: {}", s(&v["vmx"]), s(&v["datastore"]), s(&v["error"]))?;
        return Ok(());
    }
    writeln!(out, "{}  (datastore {}, {})", s(&v["name"]), s(&v["datastore"]), s(&v["vmx"]))?;
    writeln!(out, "  guest {}, uuid.bios {}", s(&v["guest_os"]), s(&v["uuid_bios"]))?;
    match &v["snapshots"] {
        serde_json::Value::Null => writeln!(out, "  snapshots: none")?,
        snap => {
            writeln!(out, "  snapshots: {}, current {}", snap["count"], s(&snap["current"]))?;
            for t in snap["tree"].as_array().into_iter().flatten() {
                let depth = t["depth"].as_u64().unwrap_or(0).min(64) as usize;
                let mark = if t["current"].as_bool() == Some(true) { "  <- current" } else { "" };
                writeln!(out, "    {}{} (uid {}){mark}", "  ".repeat(depth), s(&t["name"]), t["uid"])?;
            }
        }
    }
    for d in v["disks"].as_array().into_iter().flatten() {
        if d["error"].is_null() {
            let size = d["virtual_size"].as_u64().map(crate::human_size).unwrap_or_default();
            writeln!(out, "  {:<9} {}  {} {}, chain depth {}", s(&d["slot"]), s(&d["file"]), s(&d["format"]), size, d["chain_depth"])?;
        } else {
            writeln!(out, "  {:<9} {}  error: {}", s(&d["slot"]), s(&d["file"]), s(&d["error"]))?;
        }
    }
    for k in v["skipped"].as_array().into_iter().flatten() {
        writeln!(out, "  {:<9} skipped: {}", s(&k["slot"]), s(&k["reason"]))?;
    }
    Ok(())
}

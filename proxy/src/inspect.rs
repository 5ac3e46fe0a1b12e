//! `vbproxy inspect`: what each disk is.
use std::io::Write;

use crate::human_size;
use guestfs::tree::GuestTree;
use anyhow::Result;
use serde_json::json;
use std::path::PathBuf;

pub fn run(sources: &[PathBuf], as_json: bool) -> Result<()> {
    let mut disks = Vec::new();
    let mut opened = Vec::new();
    // A .vmx source stands for all its disks, named by controller slot.
    for (name, disk) in crate::guest::open_disks(sources)? {
        let src = disk.top().path().to_owned();
        opened.push((name.clone(), std::sync::Arc::new(guestfs::volume::DiskSource(disk.clone())) as std::sync::Arc<dyn guestfs::block::ReadAt>));
        let mut chain = Vec::new();
        for (depth, layer) in disk.layers().iter().enumerate() {
            chain.push(json!({
                "path": layer.path(),
                "format": layer.format().name(),
                "variant": layer.variant(),
                "virtual_size": layer.virtual_size(),
                "allocated": disk.layer_allocated(depth)?,
                "files": layer.files(),
            }));
        }
        let top = disk.top();
        disks.push(json!({
            "name": name,
            "path": src,
            "format": top.format().name(),
            "variant": top.variant(),
            "virtual_size": disk.virtual_size(),
            "chain": chain,
            "volumes": [],
        }));
    }
    // Volumes and filesystems: one tree over all disks, since an LVM volume
    // group may span several disks of a VM.
    let tree = GuestTree::open(opened)?;
    for (d, td) in tree.disks.iter().enumerate() {
        let mut vols = Vec::new();
        for (v, tv) in td.volumes.iter().enumerate() {
            let vol = &tv.volume;
            let mut j = json!({
                "id": vol.id, "start": vol.start, "size": vol.size,
                "type": vol.part_type, "name": vol.name,
                "filesystem": null, "label": null, "uuid": null, "fs_size": null, "used": null, "error": null,
            });
            match &tv.fs {
                Ok(Some(_)) => {
                    if let Some(info) = tree.fs_info(d, v) {
                        j["filesystem"] = json!(info.kind);
                        j["label"] = json!(info.label);
                        j["uuid"] = json!(info.uuid);
                        j["fs_size"] = json!(info.total_bytes);
                        j["used"] = json!(info.used_bytes);
                    }
                }
                Ok(None) => {}
                Err(e) => j["error"] = json!(e.to_string()),
            }
            vols.push(j);
        }
        for (id, e) in &td.errors {
            vols.push(json!({ "id": id, "error": e.to_string() }));
        }
        disks[d]["volumes"] = json!(vols);
    }
    let systems = guestfs::os::detect(&tree);
    let os_json = |o: &guestfs::os::OsInfo| {
        json!({
            "kind": o.kind, "root": o.root, "name": o.name, "id": o.id, "version": o.version,
            "system_root": o.system_root,
            "fstab": o.fstab.iter().map(|(dev, mnt, ty)| json!({"device": dev, "mountpoint": mnt, "type": ty})).collect::<Vec<_>>(),
        })
    };
    if as_json {
        let os = systems.first().map(os_json).unwrap_or(serde_json::Value::Null);
        let all: Vec<_> = systems.iter().map(os_json).collect();
        writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(&json!({ "disks": disks, "os": os, "systems": all }))?)?;
        return Ok(());
    }
    for o in &systems {
        let what = o.name.clone().or_else(|| o.system_root.clone().map(|r| format!("Windows (system root {r}; version not read yet)"))).unwrap_or_else(|| o.kind.clone());
        writeln!(std::io::stdout().lock(), "guest OS: {what} on {}", o.root)?;
    }
    for d in &disks {
        writeln!(std::io::stdout().lock(), "{}: {}", d["name"].as_str().unwrap_or(""), d["path"].as_str().unwrap_or(""))?;
        let size = d["virtual_size"].as_u64().unwrap_or(0);
        writeln!(std::io::stdout().lock(), 
            "  format {} ({}), virtual size {} ({size} bytes)",
            d["format"].as_str().unwrap_or(""),
            d["variant"].as_str().unwrap_or(""),
            human_size(size)
        )?;
        let chain = d["chain"].as_array().cloned().unwrap_or_default();
        writeln!(std::io::stdout().lock(), "  chain ({} {}):", chain.len(), if chain.len() == 1 { "layer" } else { "layers" })?;
        for (depth, c) in chain.iter().enumerate() {
            writeln!(std::io::stdout().lock(), 
                "    {depth}: {} [{} {}] {} allocated",
                c["path"].as_str().unwrap_or(""),
                c["format"].as_str().unwrap_or(""),
                c["variant"].as_str().unwrap_or(""),
                human_size(c["allocated"].as_u64().unwrap_or(0))
            )?;
        }
        for v in d["volumes"].as_array().cloned().unwrap_or_default() {
            let id = v["id"].as_str().unwrap_or("");
            if let Some(err) = v["error"].as_str() {
                writeln!(std::io::stdout().lock(), "  volume {id}: ERROR {err}")?;
                continue;
            }
            let fs = v["filesystem"].as_str().unwrap_or("no known filesystem");
            let label = v["label"].as_str().map(|l| format!(" label {l:?}")).unwrap_or_default();
            writeln!(std::io::stdout().lock(), 
                "  volume {id}: {} at {}, {fs}{label} [type {}]",
                human_size(v["size"].as_u64().unwrap_or(0)),
                v["start"].as_u64().unwrap_or(0),
                v["type"].as_str().unwrap_or("")
            )?;
        }
    }
    Ok(())
}

//! `vbproxy inspect`: what each disk is.

use crate::{human_size, source};
use anyhow::Result;
use serde_json::json;
use std::path::PathBuf;

pub fn run(sources: &[PathBuf], as_json: bool) -> Result<()> {
    let mut disks = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let disk = source::open(src)?;
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
            "name": format!("disk{i}"),
            "path": src,
            "format": top.format().name(),
            "variant": top.variant(),
            "virtual_size": disk.virtual_size(),
            "chain": chain,
            "volumes": [],
        }));
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json!({ "disks": disks, "os": null }))?);
        return Ok(());
    }
    for d in &disks {
        println!("{}: {}", d["name"].as_str().unwrap_or(""), d["path"].as_str().unwrap_or(""));
        let size = d["virtual_size"].as_u64().unwrap_or(0);
        println!(
            "  format {} ({}), virtual size {} ({size} bytes)",
            d["format"].as_str().unwrap_or(""),
            d["variant"].as_str().unwrap_or(""),
            human_size(size)
        );
        let chain = d["chain"].as_array().cloned().unwrap_or_default();
        println!("  chain ({} {}):", chain.len(), if chain.len() == 1 { "layer" } else { "layers" });
        for (depth, c) in chain.iter().enumerate() {
            println!(
                "    {depth}: {} [{} {}] {} allocated",
                c["path"].as_str().unwrap_or(""),
                c["format"].as_str().unwrap_or(""),
                c["variant"].as_str().unwrap_or(""),
                human_size(c["allocated"].as_u64().unwrap_or(0))
            );
        }
    }
    Ok(())
}

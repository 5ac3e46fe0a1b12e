//! `vbproxy map`: the allocation map, comparable to `qemu-img map`.

use crate::source;
use anyhow::Result;
use std::io::Write;
use std::path::Path;

pub fn run(src: &Path, as_json: bool) -> Result<()> {
    let disk = source::open(src)?;
    let map = disk.map()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if as_json {
        let entries: Vec<_> = map
            .iter()
            .map(|e| {
                serde_json::json!({
                    "start": e.start, "length": e.length, "depth": e.depth,
                    "data": e.data, "zero": e.zero,
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &entries)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{:<20} {:<20} {:<6} File", "Offset", "Length", "Kind")?;
        for e in &map {
            let (kind, file) = if e.data {
                ("data", disk.layers()[e.depth].path().display().to_string())
            } else {
                ("zero", String::new())
            };
            writeln!(out, "{:<#20x} {:<#20x} {kind:<6} {file}", e.start, e.length)?;
        }
    }
    out.flush()?;
    Ok(())
}

//! Building an inventory from saved ESXi command output:
//! `esxcli storage core device list` (blocks: a device identifier line,
//! then indented `Key: value` lines), `esxcli storage vmfs extent list`
//! (a table: Volume Name, VMFS UUID, Extent Number, Device Name,
//! Partition) and, for LUN numbers, `esxcli storage core path list`
//! (blocks with `Device: naa.…` and `LUN: 3`).

use crate::inventory::{DatastoreEntry, ExtentEntry, Inventory};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;

/// One device block of `esxcli storage core device list`.
#[derive(Debug, Clone, Default)]
pub struct EsxDevice {
    pub id: String,
    pub fields: BTreeMap<String, String>,
}

impl EsxDevice {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

/// Parses the indented block format shared by `device list` and
/// `path list`: an unindented header line, then `   Key: value` lines.
fn blocks(text: &str) -> Vec<EsxDevice> {
    let mut out: Vec<EsxDevice> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') && !line.starts_with('\t') {
            out.push(EsxDevice { id: line.trim().to_string(), fields: BTreeMap::new() });
        } else if let (Some(cur), Some((k, v))) = (out.last_mut(), line.trim().split_once(':')) {
            cur.fields.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

pub fn parse_devices(text: &str) -> Vec<EsxDevice> {
    blocks(text)
}

/// Device identifier to LUN number, from `path list`; a device whose paths
/// disagree on the number is left out (with a warning).
pub fn parse_paths(text: &str, warnings: &mut Vec<String>) -> BTreeMap<String, u64> {
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for b in blocks(text) {
        if let (Some(dev), Some(lun)) = (b.get("Device"), b.get("LUN").and_then(|l| l.parse::<u64>().ok())) {
            seen.entry(dev.to_string()).or_default().push(lun);
        }
    }
    let mut out = BTreeMap::new();
    for (dev, luns) in seen {
        let first = luns[0];
        if luns.iter().all(|&l| l == first) {
            out.insert(dev, first);
        } else {
            warnings.push(format!("{dev}: paths disagree on the LUN number ({luns:?}); left unset"));
        }
    }
    out
}

/// One row of `esxcli storage vmfs extent list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsxExtent {
    pub volume: String,
    pub uuid: String,
    pub extent: u32,
    pub device: String,
    pub partition: Option<u32>,
}

/// Parses the extent table. Columns are found from the dashed underline
/// (volume names may contain spaces).
pub fn parse_extents(text: &str) -> Result<Vec<EsxExtent>> {
    let lines: Vec<&str> = text.lines().collect();
    let dash = lines.iter().position(|l| l.trim_start().starts_with("---")).context("no dashed header underline in the extent list")?;
    let mut cols = Vec::new();
    let under = lines[dash];
    let mut start = None;
    for (i, c) in under.char_indices().chain(std::iter::once((under.len(), ' '))) {
        match (c == '-', start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                cols.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if cols.len() < 5 {
        bail!("extent list: expected 5 columns (Volume Name, VMFS UUID, Extent Number, Device Name, Partition), found {}", cols.len());
    }
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate().skip(dash + 1) {
        if line.trim().is_empty() {
            continue;
        }
        // Each column runs to the start of the next one (values may be
        // right-aligned past their underline).
        let cell = |i: usize| -> String {
            let s = if i == 0 { 0 } else { cols[i].0.min(line.len()) };
            let e = if i + 1 < cols.len() { cols[i + 1].0.min(line.len()) } else { line.len() };
            let s = s.min(e);
            line.get(s..e).unwrap_or("").trim().to_string()
        };
        let extent = cell(2).parse().with_context(|| format!("extent list line {}: extent number {:?}", n + 1, cell(2)))?;
        out.push(EsxExtent { volume: cell(0), uuid: cell(1), extent, device: cell(3), partition: cell(4).parse().ok() });
    }
    Ok(out)
}

/// Builds the inventory; `warnings` lists what the admin must complete.
pub fn build(devices: &[EsxDevice], extents: &[EsxExtent], luns: Option<&BTreeMap<String, u64>>, warnings: &mut Vec<String>) -> Inventory {
    let mut inv = Inventory::default();
    let mut vols: BTreeMap<&str, Vec<&EsxExtent>> = BTreeMap::new();
    for e in extents {
        vols.entry(e.volume.as_str()).or_default().push(e);
    }
    let lun_of = |dev: &str, warnings: &mut Vec<String>| -> Option<u64> {
        match luns {
            Some(m) => {
                let l = m.get(dev).copied();
                if l.is_none() {
                    warnings.push(format!("{dev}: no path in the path list gives its LUN number; set `lun` by hand"));
                }
                l
            }
            None => {
                warnings.push(format!("{dev}: LUN number unknown (give --paths with `esxcli storage core path list`); set `lun` by hand"));
                None
            }
        }
    };
    for (name, mut exts) in vols {
        exts.sort_by_key(|e| e.extent);
        let head = exts[0];
        // A host-local disk (the ESXi boot disk's datastore1) is never
        // zoned to the proxy: no SAN LUN to validate.
        if exts.iter().any(|e| devices.iter().any(|d| d.id.eq_ignore_ascii_case(&e.device) && d.get("Is Local") == Some("true"))) {
            warnings.push(format!("datastore {name}: on a host-local disk ({}); not a SAN datastore, left out", head.device));
            continue;
        }
        if head.extent != 0 {
            warnings.push(format!("datastore {name}: no extent 0 in the extent list; using extent {}", head.extent));
        }
        for e in &exts {
            match devices.iter().find(|d| d.id.eq_ignore_ascii_case(&e.device)) {
                None => warnings.push(format!("datastore {name}: device {} is not in the device list", e.device)),
                Some(d) if d.get("Is Snapshot") == Some("true") => warnings.push(format!(
                    "datastore {name}: device {} is a snapshot LUN (Is Snapshot: true); check it is the datastore itself, or declare it as a [[snapshot]]",
                    e.device
                )),
                Some(_) => {}
            }
        }
        let extents = exts[1..]
            .iter()
            .map(|e| ExtentEntry { lun: lun_of(&e.device, warnings), device: e.device.clone(), partition: e.partition, source: None })
            .collect();
        inv.datastores.push(DatastoreEntry {
            name: name.to_string(),
            lun: lun_of(&head.device, warnings),
            device: head.device.clone(),
            kind: Some("vmfs".into()),
            uuid: Some(head.uuid.clone()),
            label: Some(name.to_string()),
            partition: head.partition,
            source: None,
            extents,
        });
    }
    for d in devices {
        if d.get("Is Snapshot") == Some("true") && !extents.iter().any(|e| e.device.eq_ignore_ascii_case(&d.id)) {
            warnings.push(format!("{}: snapshot LUN not mounted on the hosts; declare it as a [[snapshot]] (of = the datastore it copies) to use it", d.id));
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_table_with_spaces_in_names() {
        let t = "Volume Name  VMFS UUID                            Extent Number  Device Name                           Partition\n\
                 -----------  -----------------------------------  -------------  ------------------------------------  ---------\n\
                 my store     4d8008a2-9940968c-04df-001e4f1fbf2a              0  naa.60014051234567890000000000000001          1\n";
        let e = parse_extents(t).unwrap();
        assert_eq!(e, vec![EsxExtent { volume: "my store".into(), uuid: "4d8008a2-9940968c-04df-001e4f1fbf2a".into(), extent: 0, device: "naa.60014051234567890000000000000001".into(), partition: Some(1) }]);
    }
}

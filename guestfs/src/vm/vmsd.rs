//! The `.vmsd`: a VM's snapshot tree. Each snapshot records its parent,
//! name, time and, per disk, the descriptor the disk was at when the
//! snapshot was taken; `snapshot.current` is the snapshot the running state
//! descends from.

use super::dict::{self, Dict, DictError};

/// Most snapshots read (ESXi allows 32 per VM; margin for hosted products).
pub const MAX_SNAPSHOTS: usize = 1000;
/// Most disks per snapshot.
const MAX_DISKS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDisk {
    /// `scsi0:0` as the `.vmsd` writes it.
    pub node: String,
    /// The descriptor the disk was at when the snapshot was taken.
    pub file_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub uid: u64,
    pub name: String,
    pub description: Option<String>,
    pub parent: Option<u64>,
    /// Microseconds since the Unix epoch (`createTimeHigh << 32 | createTimeLow`).
    pub create_time_us: Option<i64>,
    pub disks: Vec<SnapshotDisk>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vmsd {
    pub current: Option<u64>,
    /// In `snapshotN` order.
    pub snapshots: Vec<Snapshot>,
}

impl Vmsd {
    pub fn parse(bytes: &[u8]) -> Result<Vmsd, DictError> {
        from_dict(&dict::parse(bytes, ".vmsd")?)
    }

    pub fn get(&self, uid: u64) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.uid == uid)
    }

    pub fn current_snapshot(&self) -> Option<&Snapshot> {
        self.get(self.current?)
    }

    /// Depth of a snapshot in the tree (roots are 0); `None` when its
    /// parents loop or name a snapshot that is not there.
    pub fn depth(&self, uid: u64) -> Option<usize> {
        let mut depth = 0;
        let mut at = self.get(uid)?;
        while let Some(p) = at.parent {
            depth += 1;
            if depth > self.snapshots.len() {
                return None;
            }
            at = self.get(p)?;
        }
        Some(depth)
    }

    /// The snapshots in tree order (depth-first, children in file order)
    /// with their depth. Snapshots whose parents loop or are missing are
    /// listed last at depth 0, so none is hidden.
    pub fn tree(&self) -> Vec<(usize, &Snapshot)> {
        let mut out: Vec<(usize, &Snapshot)> = Vec::new();
        let mut stack: Vec<(usize, &Snapshot)> =
            self.snapshots.iter().filter(|s| s.parent.is_none()).rev().map(|s| (0, s)).collect();
        while let Some((d, s)) = stack.pop() {
            if out.iter().any(|(_, o)| o.uid == s.uid) {
                continue;
            }
            out.push((d, s));
            stack.extend(self.snapshots.iter().filter(|c| c.parent == Some(s.uid)).rev().map(|c| (d + 1, c)));
        }
        for s in &self.snapshots {
            if !out.iter().any(|(_, o)| o.uid == s.uid) {
                out.push((0, s));
            }
        }
        out
    }
}

fn bad(reason: String) -> DictError {
    DictError { line: 0, reason }
}

fn num<T: std::str::FromStr>(d: &Dict, key: &str) -> Result<Option<T>, DictError> {
    match d.get(key) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| bad(format!("{key} = {v:?} is not a number"))),
    }
}

fn from_dict(d: &Dict) -> Result<Vmsd, DictError> {
    let mut indices: Vec<u32> = Vec::new();
    for (key, _) in d.iter() {
        let Some(rest) = key.strip_prefix("snapshot") else { continue };
        let Some((n, _)) = rest.split_once('.') else { continue };
        if n.is_empty() || n.len() > 4 || !n.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(n) = n.parse::<u32>() else { continue };
        if !indices.contains(&n) {
            if indices.len() >= MAX_SNAPSHOTS {
                return Err(bad(format!("more than {MAX_SNAPSHOTS} snapshots")));
            }
            indices.push(n);
        }
    }
    indices.sort_unstable();
    let mut snapshots = Vec::with_capacity(indices.len());
    for n in indices {
        let p = format!("snapshot{n}");
        let Some(uid) = num::<u64>(d, &format!("{p}.uid"))? else {
            return Err(bad(format!("{p} has no uid")));
        };
        if snapshots.iter().any(|s: &Snapshot| s.uid == uid) {
            return Err(bad(format!("{p}.uid {uid} is used by two snapshots")));
        }
        let high = num::<i64>(d, &format!("{p}.createTimeHigh"))?;
        let low = num::<i64>(d, &format!("{p}.createTimeLow"))?;
        // Low is written as a signed 32-bit number; only its bits count.
        let create_time_us = match (high, low) {
            (Some(h), Some(l)) => h.checked_mul(1 << 32).and_then(|h| h.checked_add(l & 0xffff_ffff)),
            _ => None,
        };
        let num_disks = num::<usize>(d, &format!("{p}.numDisks"))?.unwrap_or(0);
        if num_disks > MAX_DISKS {
            return Err(bad(format!("{p}.numDisks {num_disks}: more than {MAX_DISKS}")));
        }
        let mut disks = Vec::new();
        for i in 0..num_disks {
            let file_name = d.get(&format!("{p}.disk{i}.fileName")).unwrap_or("").to_owned();
            let node = d.get(&format!("{p}.disk{i}.node")).unwrap_or("").to_owned();
            if file_name.is_empty() || node.is_empty() {
                return Err(bad(format!("{p}.disk{i}: fileName or node missing")));
            }
            disks.push(SnapshotDisk { node, file_name });
        }
        snapshots.push(Snapshot {
            uid,
            name: d.get(&format!("{p}.displayName")).unwrap_or("").to_owned(),
            description: d.get(&format!("{p}.description")).map(str::to_owned),
            parent: num(d, &format!("{p}.parent"))?,
            create_time_us,
            disks,
        });
    }
    if let Some(count) = num::<usize>(d, "snapshot.numSnapshots")? {
        if count != snapshots.len() {
            return Err(bad(format!("snapshot.numSnapshots says {count}, the file describes {}", snapshots.len())));
        }
    }
    let current = num(d, "snapshot.current")?;
    if let Some(c) = current {
        if !snapshots.iter().any(|s| s.uid == c) {
            return Err(bad(format!("snapshot.current {c} names no snapshot in the file")));
        }
    }
    Ok(Vmsd { current, snapshots })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMSD: &str = r#".encoding = "UTF-8"
snapshot.lastUID = "3"
snapshot.current = "3"
snapshot0.uid = "1"
snapshot0.filename = "web01-Snapshot1.vmsn"
snapshot0.displayName = "before patch"
snapshot0.createTimeHigh = "390318"
snapshot0.createTimeLow = "-1371094437"
snapshot0.numDisks = "1"
snapshot0.disk0.fileName = "web01.vmdk"
snapshot0.disk0.node = "scsi0:0"
snapshot1.uid = "3"
snapshot1.parent = "1"
snapshot1.displayName = "veeam |22backup|22"
snapshot1.numDisks = "1"
snapshot1.disk0.fileName = "web01-000001.vmdk"
snapshot1.disk0.node = "scsi0:0"
snapshot.numSnapshots = "2"
"#;

    #[test]
    fn tree_and_current() {
        let v = Vmsd::parse(VMSD.as_bytes()).unwrap();
        assert_eq!(v.snapshots.len(), 2);
        assert_eq!(v.current_snapshot().unwrap().name, "veeam \"backup\"");
        assert_eq!(v.depth(3), Some(1));
        let t: Vec<_> = v.tree().iter().map(|(d, s)| (*d, s.uid)).collect();
        assert_eq!(t, [(0, 1), (1, 3)]);
        assert_eq!(v.snapshots[0].disks[0].file_name, "web01.vmdk");
        // 390318 << 32 | (-1371094437 as u32)
        assert_eq!(v.snapshots[0].create_time_us, Some(390318 * (1i64 << 32) + 2_923_872_859));
    }

    #[test]
    fn loops_and_inconsistencies() {
        let looped = "snapshot0.uid = \"1\"\nsnapshot0.parent = \"2\"\nsnapshot1.uid = \"2\"\nsnapshot1.parent = \"1\"\n";
        let v = Vmsd::parse(looped.as_bytes()).unwrap();
        assert_eq!(v.depth(1), None);
        assert_eq!(v.tree().len(), 2);
        assert!(Vmsd::parse(b"snapshot.numSnapshots = \"3\"\nsnapshot0.uid = \"1\"\n").is_err());
        assert!(Vmsd::parse(b"snapshot.current = \"9\"\nsnapshot0.uid = \"1\"\n").is_err());
        assert!(Vmsd::parse(b"snapshot0.uid = \"x\"\n").is_err());
        assert!(Vmsd::parse(b"snapshot0.uid = \"1\"\nsnapshot0.numDisks = \"99999999\"\n").is_err());
        assert_eq!(Vmsd::parse(b"").unwrap(), Vmsd::default());
    }
}

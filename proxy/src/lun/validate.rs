//! LUN identity validation (DESIGN.md non-negotiable 2): a LUN is used
//! only when its LUN number, its device identifier and what is on it
//! (kind, VMFS UUID/label or filesystem UUID) all match the inventory.
//! A snapshot LUN (own identifier, source datastore's signature) is
//! accepted only when the inventory declares it; a LUN that carries an
//! inventory datastore's VMFS UUID under another identifier is an
//! undeclared snapshot or copy, and refused. Every refusal carries both
//! views: what the inventory says and what the LUN shows.

use super::info::LunInfo;
use super::{device, LunPool, Resolved};
use crate::inventory::{DatastoreEntry, Inventory};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Everything matched.
    Ok,
    /// An image file or non-SCSI device: nothing to verify (warned).
    Unverified,
    /// Refused (exit 3).
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Datastore,
    Extent,
    Snapshot,
    UndeclaredSnapshot,
}

/// One side's view of a LUN.
#[derive(Debug, Clone, Default, Serialize)]
pub struct View {
    pub lun: Option<u64>,
    pub device: Option<String>,
    /// Where the LUN was found (`/dev/sdb`, `iscsi://…`, a file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub kind: Option<String>,
    pub uuid: Option<String>,
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// One disagreement.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `missing`, `lun`, `device`, `kind`, `uuid`, `label`, `partition`,
    /// `signature`, `writable`, `undeclared-snapshot`.
    pub field: String,
    pub inventory: String,
    pub lun: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The inventory entry (datastore or snapshot name); for an undeclared
    /// snapshot, the LUN's device path.
    pub name: String,
    /// The datastore concerned.
    pub datastore: String,
    pub role: Role,
    pub status: Status,
    pub inventory: View,
    /// `null` when the LUN was not found.
    pub found: Option<View>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No check refused.
    pub ok: bool,
    pub checks: Vec<Check>,
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "(none)".into())
}

fn opt_n(n: Option<u64>) -> String {
    n.map_or_else(|| "(not set)".into(), |n| n.to_string())
}

fn lun_view(l: &LunInfo) -> View {
    View {
        lun: Some(l.lun),
        device: l.id.clone(),
        path: Some(l.device.clone()),
        kind: Some(l.content.effective_kind().to_string()),
        uuid: l.content.uuid.clone(),
        label: l.content.label.clone(),
        read_only: l.read_only,
    }
}

impl Check {
    #[allow(dead_code)] // used by lun::open_datastores
    pub fn is_missing(&self) -> bool {
        self.problems.iter().any(|p| p.field == "missing")
    }

    /// Both views, for messages.
    pub fn describe(&self) -> String {
        let role = match self.role {
            Role::Datastore => "datastore",
            Role::Extent => "datastore extent",
            Role::Snapshot => "snapshot",
            Role::UndeclaredSnapshot => "undeclared snapshot of datastore",
        };
        let name = if self.role == Role::UndeclaredSnapshot { &self.datastore } else { &self.name };
        let mut s = format!(
            "{role} {name}: inventory says LUN {} {}; LUN shows {}",
            opt_n(self.inventory.lun),
            opt(&self.inventory.device),
            match &self.found {
                Some(f) => format!("LUN {} {} at {}", opt_n(f.lun), opt(&f.device), opt(&f.path)),
                None => "nothing".into(),
            }
        );
        for p in &self.problems {
            s.push_str(&format!("\n    {}: inventory says {}; LUN shows {}", p.field, p.inventory, p.lun));
        }
        s
    }
}

struct Builder {
    check: Check,
}

impl Builder {
    fn new(name: &str, datastore: &str, role: Role, inventory: View) -> Builder {
        Builder { check: Check { name: name.into(), datastore: datastore.into(), role, status: Status::Ok, inventory, found: None, problems: Vec::new() } }
    }

    fn problem(&mut self, field: &str, inventory: impl Into<String>, lun: impl Into<String>) {
        self.check.problems.push(Problem { field: field.into(), inventory: inventory.into(), lun: lun.into() });
    }

    /// LUN number, identifier and read-only flag.
    fn identity(&mut self, lun: Option<u64>, id: &str, l: &LunInfo) {
        match lun {
            None => self.problem("lun", "(not set: add `lun = N` to the inventory)", l.lun.to_string()),
            Some(n) if n != l.lun => self.problem("lun", n.to_string(), l.lun.to_string()),
            _ => {}
        }
        if !l.has_id(id) {
            self.problem("device", id, opt(&l.id));
        }
        if l.read_only == Some(false) {
            self.problem("writable", "read-only (kernel flag set)", "writable: run `vbproxy guard apply`");
        }
    }

    /// Kind, UUID, label (and partition) against the datastore entry.
    fn signature(&mut self, ds: &DatastoreEntry, l: &LunInfo) {
        let c = &l.content;
        if ds.kind.is_none() && ds.uuid.is_none() && ds.label.is_none() {
            self.problem("signature", "(no kind, uuid or label given: add them to the inventory)", format!("{} {}", c.effective_kind(), opt(&c.uuid)));
        }
        if let Some(k) = &ds.kind {
            if !k.eq_ignore_ascii_case(c.effective_kind()) {
                self.problem("kind", k.clone(), c.effective_kind().to_string());
            }
        }
        if let Some(u) = &ds.uuid {
            if !c.uuid.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(u)) {
                self.problem("uuid", u.clone(), opt(&c.uuid));
            }
        }
        if let Some(lb) = &ds.label {
            if c.label.as_deref() != Some(lb.as_str()) {
                self.problem("label", lb.clone(), opt(&c.label));
            }
        }
        if let (Some(p), Some(q)) = (ds.partition, c.partition_number) {
            if p != q {
                self.problem("partition", p.to_string(), q.to_string());
            }
        }
    }

    /// Resolves and applies `f` to a found LUN; handles the other cases.
    fn resolved(&mut self, r: Resolved, f: impl FnOnce(&mut Builder, &LunInfo)) {
        match r {
            Resolved::Lun(l) => {
                self.check.found = Some(lun_view(&l));
                f(self, &l);
            }
            Resolved::Unverified(p) => {
                self.check.status = Status::Unverified;
                self.check.found = Some(View { path: Some(p.display().to_string()), ..Default::default() });
                tracing::warn!("{}: not a SCSI LUN (image file or non-SCSI device): identity not verified", p.display());
                if device::is_block_device(&p) {
                    match device::read_only_flag(&p) {
                        Ok(false) => self.problem("writable", "read-only (kernel flag set)", "writable: run `vbproxy guard apply`"),
                        Ok(true) => {}
                        Err(e) => self.problem("writable", "read-only (kernel flag set)", format!("cannot read the flag: {e:#}")),
                    }
                }
            }
            Resolved::Missing(why) => self.problem("missing", "present", why),
        }
    }

    fn finish(mut self) -> Check {
        if !self.check.problems.is_empty() {
            self.check.status = Status::Refused;
        }
        self.check
    }
}

fn inv_view(lun: Option<u64>, device: &str, ds: Option<&DatastoreEntry>) -> View {
    View {
        lun,
        device: Some(device.to_string()),
        path: None,
        kind: ds.and_then(|d| d.kind.clone()),
        uuid: ds.and_then(|d| d.uuid.clone()),
        label: ds.and_then(|d| d.label.clone()),
        read_only: Some(true),
    }
}

/// Checks every entry of the inventory against the LUNs in `pool`.
pub fn validate(inv: &Inventory, pool: &mut LunPool) -> Report {
    let mut checks = Vec::new();
    for ds in &inv.datastores {
        let mut b = Builder::new(&ds.name, &ds.name, Role::Datastore, inv_view(ds.lun, &ds.device, Some(ds)));
        let r = pool.resolve(&ds.device, ds.source.as_deref());
        b.resolved(r, |b, l| {
            b.identity(ds.lun, &ds.device, l);
            b.signature(ds, l);
        });
        checks.push(b.finish());
        for (i, e) in ds.extents.iter().enumerate() {
            let mut view = inv_view(e.lun, &e.device, None);
            view.kind = Some("vmfs".into());
            let mut b = Builder::new(&format!("{}#extent{}", ds.name, i + 1), &ds.name, Role::Extent, view);
            let r = pool.resolve(&e.device, e.source.as_deref());
            b.resolved(r, |b, l| {
                b.identity(e.lun, &e.device, l);
                if l.content.effective_kind() != "vmfs" {
                    b.problem("kind", "vmfs (an extent of a spanned datastore)", l.content.effective_kind().to_string());
                }
            });
            checks.push(b.finish());
        }
    }
    for s in &inv.snapshots {
        let of = inv.datastore(&s.of);
        let mut b = Builder::new(&s.name, &s.of, Role::Snapshot, inv_view(s.lun, &s.device, of));
        let r = pool.resolve(&s.device, s.source.as_deref());
        b.resolved(r, |b, l| {
            b.identity(s.lun, &s.device, l);
            match of {
                Some(ds) => b.signature(ds, l),
                None => b.problem("signature", format!("snapshot of {} (no such datastore)", s.of), l.content.effective_kind().to_string()),
            }
        });
        checks.push(b.finish());
    }
    checks.extend(undeclared_snapshots(inv, pool));
    Report { ok: checks.iter().all(|c| c.status != Status::Refused), checks }
}

/// LUNs carrying an inventory datastore's VMFS UUID under an identifier the
/// inventory does not give for that datastore or a declared snapshot: local
/// disks and every LUN of the iSCSI portals the inventory's sources name
/// (an ESXi host logged in to that portal sees them all).
fn undeclared_snapshots(inv: &Inventory, pool: &mut LunPool) -> Vec<Check> {
    pool.probe_remote_contents();
    let mut out = Vec::new();
    let declared = |l: &LunInfo| {
        inv.datastores.iter().any(|d| l.has_id(&d.device) || d.extents.iter().any(|e| l.has_id(&e.device)))
            || inv.snapshots.iter().any(|s| l.has_id(&s.device))
    };
    for l in pool.all() {
        let Some(u) = &l.content.uuid else { continue };
        let Some(ds) = inv.datastores.iter().find(|d| d.uuid.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(u))) else { continue };
        // An image-file source has no identity to tell copies apart.
        if ds.source.as_deref().is_some_and(|s| Path::new(s).is_file() && !pool.local.iter().any(|x| x.device == s)) {
            continue;
        }
        if declared(l) {
            continue;
        }
        let mut b = Builder::new(&l.device, &ds.name, Role::UndeclaredSnapshot, inv_view(ds.lun, &ds.device, Some(ds)));
        b.check.found = Some(lun_view(l));
        b.problem(
            "undeclared-snapshot",
            format!("datastore {} (VMFS UUID {u}) is on {} only; no [[snapshot]] declares {}", ds.name, ds.device, opt(&l.id)),
            format!("LUN {} {} at {} carries VMFS UUID {u}", l.lun, opt(&l.id), l.device),
        );
        out.push(b.finish());
    }
    out
}

/// The human table: one line per check, problems indented below.
pub fn print_table(report: &Report) {
    println!("{:<24} {:<20} {:<10} {:<6} {:<40} DEVICE", "NAME", "ROLE", "STATUS", "LUN", "IDENTIFIER");
    for c in &report.checks {
        let role = serde_json::to_value(c.role).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let status = serde_json::to_value(c.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let f = c.found.clone().unwrap_or_default();
        println!(
            "{:<24} {:<20} {:<10} {:<6} {:<40} {}",
            c.name,
            role,
            status,
            opt_n(f.lun.or(c.inventory.lun)),
            opt(&f.device.clone().or(c.inventory.device.clone())),
            opt(&f.path)
        );
        for p in &c.problems {
            println!("    {}: inventory says {}; LUN shows {}", p.field, p.inventory, p.lun);
        }
    }
}

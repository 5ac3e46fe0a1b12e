//! `vbproxy backup prepare`: validate, resolve the VM, choose its disks'
//! state, record the job, make the target, run the hooks.

use super::journal::{DiskRecord, JobRecord, JobState, Journal, ProcessId, VERSION};
use super::snapshot::{self, SnapshotInfo, SnapshotTree, Want};
use super::{cleanup, filemode, fullvm, hooks, limits, target, Mode, PrepareArgs};
use crate::inventory::Inventory;
use crate::vm::VmConfig;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::PathBuf;

/// A job being prepared: its journal entry, rewritten as it grows.
pub struct JobCtx<'a> {
    pub journal: &'a Journal,
    pub job: JobRecord,
}

impl JobCtx<'_> {
    /// Records files about to be created (before creating them).
    pub fn claim(&mut self, paths: &[PathBuf]) -> Result<()> {
        for p in paths {
            if !self.job.files.contains(p) {
                self.job.files.push(p.clone());
            }
        }
        self.save()
    }

    pub fn save(&self) -> Result<()> {
        self.journal.write(&self.job)
    }
}

pub fn run(a: &PrepareArgs) -> Result<()> {
    let target = target::resolve(&a.target)?;
    let inv = a.inventory.as_deref().map(Inventory::load).transpose()?;
    // Safety first: nothing is opened while an inventory LUN is writable.
    if let Some(inv) = &inv {
        crate::lun::require_read_only(inv)?;
    }
    let vm = match (&a.vm, &a.vmx, &inv) {
        (Some(name), _, Some(inv)) => crate::vm::find_vm(inv, name)?,
        (None, Some(vmx), _) => {
            if let Some(inv) = &inv {
                // Refuses (exit 3) when the SAN and the inventory disagree.
                crate::lun::open_datastores(inv)?;
            }
            crate::vm::load_vm(vmx)?
        }
        _ => bail!("give --inventory FILE --vm NAME, or --vmx SOURCE"),
    };
    if vm.disks.is_empty() {
        let why: Vec<String> = vm.skipped.iter().map(|(s, r)| format!("{s}: {r}")).collect();
        bail!("VM {}: no disk to back up{}", vm.name, if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) });
    }
    for (slot, reason) in &vm.skipped {
        eprintln!("vbproxy: warning: VM {}: disk {slot} {reason}", vm.name);
    }
    let top: Vec<(String, String)> = vm.disks.iter().map(|d| (d.slot.clone(), d.spec.clone())).collect();
    let want = Want::parse(a.snapshot.as_deref());
    let chosen = snapshot::choose(&want, &snapshot_tree(&vm, &want)?, &top, &vm.vmx)?;
    for w in &chosen.warnings {
        eprintln!("vbproxy: warning: VM {}: {w}", vm.name);
    }
    for (slot, spec) in &chosen.disks {
        if !is_plain_name(slot) || !slot.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            bail!("VM {}: unexpected disk slot name {slot:?}", vm.name);
        }
        // Open every chain now, so a missing parent (exit 3) or an
        // unreadable descriptor stops the job before it makes anything.
        crate::source::open(std::path::Path::new(spec)).with_context(|| format!("VM {}: disk {slot} ({spec})", vm.name))?;
    }

    let journal = Journal::open()?;
    let mut ctx = {
        let _lock = journal.lock()?;
        let entries = journal.entries()?;
        let max = a.max_jobs.map_or_else(|| limits::default_max(a.mode), |n| usize::try_from(n).unwrap_or(usize::MAX));
        limits::check(&entries, a.mode, max)?;
        if let Some(other) = entries.iter().find(|j| j.target == target) {
            bail!(
                "{}: is the target of job {} already ({}); run `vbproxy backup cleanup {}` first",
                target.display(),
                other.id,
                if other.is_live() { "running" } else { "stale" },
                target.display()
            );
        }
        let absent = !target.exists();
        if !absent {
            target::prepare(&target)?;
        }
        let names: Vec<String> = chosen.disks.iter().map(|(slot, _)| slot.clone()).collect();
        let job = JobRecord {
            version: VERSION,
            id: super::new_job_id(),
            mode: a.mode.name().into(),
            vm: vm.name.clone(),
            vmx: vm.vmx.clone(),
            snapshot: chosen.label.clone(),
            target: target.clone(),
            target_created: absent,
            state: JobState::Preparing,
            owner: ProcessId::current()?,
            created: super::now(),
            disks: chosen.disks.iter().zip(names).map(|((slot, spec), name)| DiskRecord { slot: slot.clone(), spec: spec.clone(), name }).collect(),
            mount: None,
            files: Vec::new(),
        };
        // The entry exists before the first side effect (the mkdir).
        journal.write(&job)?;
        JobCtx { journal: &journal, job }
    };
    let result = make(&mut ctx, a, &vm, &chosen.disks);
    let out = match result {
        Ok(out) => out,
        Err(e) => return Err(undo(&ctx, e)),
    };
    let env = hook_env(&ctx.job);
    if let Some(cmd) = &a.post_command {
        if let Err(e) = hooks::run("post-command", cmd, &env, a.json) {
            return Err(undo(&ctx, e));
        }
    }
    if a.oneshot {
        cleanup::teardown(&journal, &ctx.job, cleanup::Kind::Full)?;
        journal.remove(&ctx.job.id)?;
    }
    report(&ctx.job, &vm, &out, &chosen.warnings, a.json, a.oneshot)
}

/// What `make` presented, for the report.
pub enum Made {
    File,
    Fullvm(fullvm::Exported),
}

/// Makes the target, runs the pre-command, then mounts or exports.
fn make(ctx: &mut JobCtx, a: &PrepareArgs, vm: &VmConfig, disks: &[(String, String)]) -> Result<Made> {
    if ctx.job.target_created {
        if let Err(e) = std::fs::create_dir(&ctx.job.target) {
            // Not ours after all (it appeared since the check): keep it.
            ctx.job.target_created = false;
            ctx.save()?;
            return Err(e).with_context(|| format!("{}: cannot create the target directory", ctx.job.target.display()));
        }
    }
    if let Some(cmd) = &a.pre_command {
        hooks::run("pre-command", cmd, &hook_env(&ctx.job), a.json)?;
    }
    let made = match a.mode {
        Mode::File => {
            filemode::mount(ctx, disks)?;
            Made::File
        }
        Mode::Fullvm => Made::Fullvm(fullvm::export(ctx, vm, a)?),
    };
    ctx.job.state = JobState::Ready;
    ctx.save()?;
    Ok(made)
}

/// Removes whatever the failed job made, then returns its error.
fn undo(ctx: &JobCtx, e: anyhow::Error) -> anyhow::Error {
    match cleanup::teardown(ctx.journal, &ctx.job, cleanup::Kind::Full) {
        Ok(_) => {
            if let Err(r) = ctx.journal.remove(&ctx.job.id) {
                return e.context(format!("removing the journal entry also failed: {r:#}"));
            }
            e
        }
        Err(t) => e.context(format!("undoing job {} also failed ({t:#}); run `vbproxy backup cleanup --stale`", ctx.job.id)),
    }
}

pub fn hook_env(job: &JobRecord) -> hooks::HookEnv {
    hooks::HookEnv {
        job_id: job.id.clone(),
        vm: job.vm.clone(),
        mode: job.mode.clone(),
        target: job.target.to_string_lossy().into_owned(),
        disks: job.disks.iter().map(|d| d.slot.as_str()).collect::<Vec<_>>().join(" "),
        snapshot: job.snapshot.clone(),
    }
}

/// A single file name: no directory parts, not `.`/`..`, no NUL.
pub fn is_plain_name(n: &str) -> bool {
    !n.is_empty() && n != "." && n != ".." && !n.contains('/') && !n.contains('\0') && n.len() <= 255
}

/// The VM's snapshot tree from its `.vmsd`, if it has one. A `.vmsd`
/// that cannot be read stops the job unless the running disks were asked
/// for: guessing which state the disks are in is not an option.
fn snapshot_tree(vm: &VmConfig, want: &Want) -> Result<SnapshotTree> {
    if let (Some(e), false) = (&vm.vmsd_error, *want == Want::Running) {
        bail!("VM {}: its snapshot file cannot be read ({e}); fix it or choose --snapshot running", vm.name);
    }
    let Some(vmsd) = &vm.vmsd else {
        return Ok(SnapshotTree::default());
    };
    Ok(SnapshotTree {
        current: vmsd.current,
        snapshots: vmsd
            .snapshots
            .iter()
            .map(|s| SnapshotInfo { uid: s.uid, name: s.name.clone(), disks: s.disks.iter().map(|d| (d.node.clone(), d.file_name.clone())).collect() })
            .collect(),
    })
}

fn report(job: &JobRecord, vm: &VmConfig, made: &Made, warnings: &[String], json: bool, oneshot: bool) -> Result<()> {
    let skipped: Vec<serde_json::Value> = vm.skipped.iter().map(|(s, r)| serde_json::json!({"slot": s, "reason": r})).collect();
    let disks: Vec<serde_json::Value> = match made {
        Made::File => job
            .disks
            .iter()
            .map(|d| serde_json::json!({"slot": d.slot, "source": d.spec, "path": job.target.join(&d.name)}))
            .collect(),
        Made::Fullvm(x) => x.disks.iter().map(|d| d.to_json(&job.target)).collect(),
    };
    let mut out = std::io::stdout().lock();
    if json {
        let mut v = serde_json::json!({
            "job_id": job.id,
            "vm": job.vm,
            "vmx": job.vmx,
            "mode": job.mode,
            "snapshot": job.snapshot,
            "target": job.target,
            "state": if oneshot { "cleaned" } else { "ready" },
            "disks": disks,
            "skipped": skipped,
            "warnings": warnings,
        });
        if let Made::Fullvm(x) = made {
            v["files"] = x.files.iter().map(|f| f.to_json()).collect();
            v["manifest"] = serde_json::json!(job.target.join(fullvm::MANIFEST));
        }
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    let what = match made {
        Made::File => "guest file tree mounted",
        Made::Fullvm(_) => "disk images exported",
    };
    writeln!(out, "job {}: VM {} ({}), {what} at {}", job.id, job.vm, describe_snapshot(&job.snapshot), job.target.display())?;
    for d in &disks {
        let at = d.get("path").or_else(|| d.get("file")).and_then(|p| p.as_str()).unwrap_or_default();
        writeln!(out, "  {}  {}  <- {}", d["slot"].as_str().unwrap_or_default(), at, d["source"].as_str().unwrap_or_default())?;
    }
    if let Made::Fullvm(x) = made {
        for f in &x.files {
            writeln!(out, "  {}", f.name)?;
        }
        writeln!(out, "  {}", fullvm::MANIFEST)?;
    }
    if oneshot {
        writeln!(out, "job {}: cleaned up after the post-command", job.id)?;
    }
    Ok(())
}

fn describe_snapshot(s: &str) -> String {
    if s == "running" {
        "running disks".into()
    } else {
        format!("snapshot {s:?}")
    }
}

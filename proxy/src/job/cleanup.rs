//! `vbproxy backup cleanup DIR` and `vbproxy backup cleanup --stale`:
//! remove what a job made, exactly what its journal entry names.

use super::journal::{JobRecord, JobState, Journal, ProcessId};
use super::{filemode, target};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

/// How much of a job to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The job is over: unmount, remove every file it made, its target
    /// directory if it made it and it is empty.
    Full,
    /// A ready job whose process is gone or that predates this boot:
    /// detach its mount, remove its unfinished (`.partial`) files and its
    /// target if it made it and it is empty. Finished exports stay (they
    /// may be what a backup already read).
    Stale,
}

/// Removes what `job` made; returns what was done, for the report.
pub fn teardown(_journal: &Journal, job: &JobRecord, kind: Kind) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if let Some(m) = &job.mount {
        if m.started {
            let server_dead = m.server.as_ref().is_some_and(|s| !s.is_alive());
            if let Some(how) = filemode::unmount(&m.dir, server_dead)? {
                done.push(format!("{}: {how}", m.dir.display()));
            }
            let _ = std::fs::remove_file(&m.pid_file);
        }
    }
    for f in &job.files {
        let unfinished = f.extension().is_some_and(|e| e == "partial");
        if kind == Kind::Stale && !unfinished {
            continue;
        }
        match std::fs::symlink_metadata(f) {
            Ok(md) if md.is_file() => {
                std::fs::remove_file(f).with_context(|| format!("{}: cannot remove", f.display()))?;
                done.push(format!("{}: removed", f.display()));
            }
            Ok(_) => tracing::warn!("{}: not a regular file; left alone", f.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("{}: cannot examine", f.display())),
        }
    }
    if job.target_created && !target::is_mountpoint(&job.target) {
        match std::fs::remove_dir(&job.target) {
            Ok(()) => done.push(format!("{}: removed (made by prepare)", job.target.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                tracing::info!("{}: kept: holds files this job did not make (or finished exports)", job.target.display());
            }
            Err(e) => tracing::warn!("{}: cannot remove: {e}", job.target.display()),
        }
    }
    Ok(done)
}

/// `cleanup DIR`: the job whose target is DIR. Safe to run twice.
pub fn target(dir: &Path, json: bool) -> Result<()> {
    let resolved = target::resolve(dir)?;
    let journal = Journal::open()?;
    let _lock = journal.lock()?;
    let Some(mut job) = journal.entries()?.into_iter().find(|j| j.target == resolved) else {
        return say(json, None, &[], &format!("nothing to clean: {} is not the target of a vbproxy job", resolved.display()));
    };
    if job.state == JobState::Preparing && job.owner.is_alive() {
        bail!(
            "{}: job {} is still being prepared (pid {}); wait for it, or stop it and run `vbproxy backup cleanup --stale`",
            resolved.display(),
            job.id,
            job.owner.pid
        );
    }
    let before = (job.state, job.owner.clone());
    job.state = JobState::Cleaning;
    job.owner = ProcessId::current()?;
    journal.write(&job)?;
    match teardown(&journal, &job, Kind::Full) {
        Ok(done) => {
            journal.remove(&job.id)?;
            say(json, Some(&job), &done, &format!("job {}: cleaned", job.id))
        }
        Err(e) => {
            // Leave the entry as it was, so a retry (or --stale) finds it.
            (job.state, job.owner) = before;
            let _ = journal.write(&job);
            Err(e.context(format!("cleaning job {}", job.id)))
        }
    }
}

/// `cleanup --stale`: every job whose process is gone or that predates
/// this boot. Live jobs are not touched.
pub fn stale(json: bool) -> Result<()> {
    let journal = Journal::open()?;
    let _lock = journal.lock()?;
    journal.remove_temporaries();
    let mut report = Vec::new();
    let mut failed = Vec::new();
    for job in journal.entries()? {
        if job.is_live() {
            continue;
        }
        // A job that never became ready handed nothing to a backup tool:
        // all it made goes. A ready one keeps its finished exports.
        let kind = if job.state == JobState::Preparing { Kind::Full } else { Kind::Stale };
        match teardown(&journal, &job, kind).and_then(|done| journal.remove(&job.id).map(|()| done)) {
            Ok(done) => report.push((job, done)),
            Err(e) => failed.push(format!("job {}: {e:#}", job.id)),
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        let v: Vec<serde_json::Value> = report.iter().map(|(j, d)| job_json(j, d)).collect();
        serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "cleaned": v, "failed": failed }))?;
        writeln!(out)?;
    } else if report.is_empty() && failed.is_empty() {
        writeln!(out, "nothing to clean: no stale job")?;
    } else {
        for (j, done) in &report {
            writeln!(out, "job {} ({} of VM {} at {}): stale, cleaned", j.id, j.mode, j.vm, j.target.display())?;
            for d in done {
                writeln!(out, "  {d}")?;
            }
        }
    }
    if !failed.is_empty() {
        bail!("some stale jobs could not be cleaned:\n  {}", failed.join("\n  "));
    }
    Ok(())
}

fn job_json(j: &JobRecord, done: &[String]) -> serde_json::Value {
    serde_json::json!({"job_id": j.id, "vm": j.vm, "mode": j.mode, "target": j.target, "actions": done})
}

fn say(json: bool, job: Option<&JobRecord>, done: &[String], text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let v = match job {
            Some(j) => serde_json::json!({"cleaned": [job_json(j, done)]}),
            None => serde_json::json!({"cleaned": []}),
        };
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{text}")?;
        for d in done {
            writeln!(out, "  {d}")?;
        }
    }
    Ok(())
}

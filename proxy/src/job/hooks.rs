//! `--pre-command` / `--post-command`: shell commands run by `prepare` with
//! the job described in the environment (docs/BACKUP.md, "Hooks").
//!
//! - the pre-command runs after validation and the concurrency check,
//!   before anything is mounted or exported (quiesce, notify, take an array
//!   snapshot). If it fails nothing is made.
//! - the post-command runs once the target is ready: the backup tool can
//!   run from it (`--post-command 'restic backup "$VBPROXY_TARGET"'`).
//!   If it fails, prepare undoes the job and fails.

use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};

/// What a hook is told about the job.
pub struct HookEnv {
    pub job_id: String,
    pub vm: String,
    pub mode: String,
    pub target: String,
    /// Controller slots, space-separated (`scsi0-0 scsi0-1`).
    pub disks: String,
    pub snapshot: String,
}

impl HookEnv {
    pub fn vars(&self) -> [(&'static str, &str); 6] {
        [
            ("VBPROXY_JOB_ID", &self.job_id),
            ("VBPROXY_VM", &self.vm),
            ("VBPROXY_MODE", &self.mode),
            ("VBPROXY_TARGET", &self.target),
            ("VBPROXY_DISKS", &self.disks),
            ("VBPROXY_SNAPSHOT", &self.snapshot),
        ]
    }
}

/// Runs `sh -c CMD` with the job's variables; its standard output goes to
/// our standard error when ours carries JSON. Fails with the command's
/// exit status (or the signal that ended it).
pub fn run(which: &str, cmd: &str, env: &HookEnv, json: bool) -> Result<()> {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(cmd).stdin(Stdio::null());
    for (k, v) in env.vars() {
        c.env(k, v);
    }
    if json {
        c.stdout(std::io::stderr());
    }
    tracing::info!("running {which}: {cmd}");
    let status = c.status().with_context(|| format!("{which}: cannot run /bin/sh"))?;
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => bail!("{which} failed with exit status {code}: {cmd}"),
            (None, Some(sig)) => bail!("{which} was killed by signal {sig}: {cmd}"),
            _ => bail!("{which} failed ({status}): {cmd}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HookEnv {
        HookEnv {
            job_id: "J1".into(),
            vm: "web 01".into(),
            mode: "file".into(),
            target: "/b/t".into(),
            disks: "scsi0-0 scsi0-1".into(),
            snapshot: "current".into(),
        }
    }

    #[test]
    fn hooks_see_the_job_and_report_their_status() {
        run("pre-command", r#"test "$VBPROXY_JOB_ID/$VBPROXY_VM/$VBPROXY_MODE/$VBPROXY_TARGET/$VBPROXY_DISKS/$VBPROXY_SNAPSHOT" = "J1/web 01/file//b/t/scsi0-0 scsi0-1/current""#, &env(), true).unwrap();
        let e = run("post-command", "exit 7", &env(), true).unwrap_err();
        assert_eq!(e.to_string(), "post-command failed with exit status 7: exit 7");
        let e = run("post-command", "kill -9 $$", &env(), true).unwrap_err();
        assert!(e.to_string().contains("killed by signal 9"), "{e}");
    }
}

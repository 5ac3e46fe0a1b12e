//! How many jobs may run at once. Full-VM exports read whole disks and
//! saturate the SAN path and the proxy's disks, so few run together; file
//! jobs mostly wait on the backup tool, so more may.

use super::journal::JobRecord;
use super::Mode;

pub const DEFAULT_MAX_FULLVM: usize = 4;
pub const DEFAULT_MAX_FILE: usize = 16;

/// The limit for `mode` when `--max-jobs` is not given.
pub fn default_max(mode: Mode) -> usize {
    match mode {
        Mode::File => DEFAULT_MAX_FILE,
        Mode::Fullvm => DEFAULT_MAX_FULLVM,
    }
}

/// A prepare refused because `max` jobs of its mode already run (exit 4).
#[derive(Debug)]
pub struct Busy {
    pub mode: Mode,
    pub running: Vec<String>,
    pub max: usize,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "busy: {} {} jobs running (max {}); retry later (running: {})",
            self.running.len(),
            self.mode.name(),
            self.max,
            self.running.join(", ")
        )
    }
}

impl std::error::Error for Busy {}

/// Refuses when `max` live jobs of `mode` are in the journal already. The
/// caller holds the journal lock.
pub fn check(entries: &[JobRecord], mode: Mode, max: usize) -> Result<(), Busy> {
    let running: Vec<String> = entries.iter().filter(|j| j.mode == mode.name() && j.is_live()).map(|j| j.id.clone()).collect();
    if running.len() >= max {
        return Err(Busy { mode, running, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::journal::{JobState, ProcessId, VERSION};

    fn job(id: &str, mode: &str, owner: ProcessId) -> JobRecord {
        JobRecord {
            version: VERSION,
            id: id.into(),
            mode: mode.into(),
            vm: "vm".into(),
            vmx: "vm.vmx".into(),
            snapshot: "running".into(),
            target: "/t".into(),
            target_created: false,
            state: JobState::Preparing,
            owner,
            created: 0,
            disks: vec![],
            mount: None,
            files: vec![],
        }
    }

    #[test]
    fn counts_only_live_jobs_of_the_same_mode() {
        let me = ProcessId::current().unwrap();
        let dead = ProcessId { start_time: me.start_time + 1, ..me.clone() };
        let e = vec![job("a", "fullvm", me.clone()), job("b", "fullvm", dead), job("c", "file", me)];
        assert!(check(&e, Mode::Fullvm, 2).is_ok());
        let busy = check(&e, Mode::Fullvm, 1).unwrap_err();
        assert_eq!(busy.to_string(), "busy: 1 fullvm jobs running (max 1); retry later (running: a)");
        assert!(check(&e, Mode::File, 2).is_ok());
        assert!(check(&e, Mode::File, 1).is_err());
    }
}

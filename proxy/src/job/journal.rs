//! The job journal: one JSON file per backup job under
//! `/var/lib/vbproxy/jobs` (`$VBPROXY_STATE_DIR/jobs`).
//!
//! A job's entry is written before any side effect and rewritten as each
//! mount or file comes into being, every time atomically (temporary file,
//! fsync, rename, directory fsync). So whenever the job dies (SIGKILL,
//! power loss) the entry names everything it may have left behind, and
//! `backup cleanup --stale` can remove exactly that and nothing else.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Current journal entry format.
pub const VERSION: u32 = 1;
/// Largest journal entry read (real ones are a few KiB).
const MAX_ENTRY: u64 = 1 << 20;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// `prepare` is running (owner: the prepare process).
    Preparing,
    /// The target is ready; for a file job the owner is now the FUSE server.
    Ready,
    /// `cleanup` is removing it.
    Cleaning,
}

/// A process, named so that a recycled pid is not mistaken for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`: clock ticks since boot.
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` when it was recorded.
    pub boot_id: String,
}

impl ProcessId {
    /// This process.
    pub fn current() -> Result<ProcessId> {
        let pid = std::process::id();
        ProcessId::of(pid).with_context(|| format!("reading /proc/{pid}/stat"))
    }

    /// A running process, or `None` when there is none with that pid.
    pub fn of(pid: u32) -> Option<ProcessId> {
        Some(ProcessId { pid, start_time: start_time(pid)?, boot_id: boot_id().ok()? })
    }

    /// Whether the very process recorded still runs: same boot, same pid,
    /// same start time (a pid reused since has another start time).
    pub fn is_alive(&self) -> bool {
        match boot_id() {
            Ok(b) if b == self.boot_id => start_time(self.pid) == Some(self.start_time),
            _ => false,
        }
    }
}

/// The start time of process `pid` in clock ticks since boot, from
/// `/proc/PID/stat` (field 22, counted after the `)` that ends the command
/// name, which may itself hold spaces and parentheses).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    // After the name: field 3 (state) is the first; field 22 is the 20th.
    // A zombie (Z) or dead (X) process has stopped working for its job.
    let mut fields = after.split_whitespace();
    if matches!(fields.next()?, "Z" | "X") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// This boot's identifier.
pub fn boot_id() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id").context("reading /proc/sys/kernel/random/boot_id")?.trim().to_owned())
}

/// The FUSE mount of a file-mode job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MountRecord {
    pub dir: PathBuf,
    /// The mount may exist (recorded before `vbproxy mount` starts).
    pub started: bool,
    /// The FUSE server, once the mount is live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ProcessId>,
    /// Where `vbproxy mount --pid-file` writes the server's pid.
    pub pid_file: PathBuf,
}

/// One disk of the job, as chosen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskRecord {
    pub slot: String,
    /// The SOURCE spec opened (the descriptor of the chosen state).
    pub spec: String,
    /// Name under the mount (`disk0`...) or export file (`scsi0-0.raw`).
    pub name: String,
}

/// A job as the journal records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub version: u32,
    pub id: String,
    /// `file` or `fullvm`.
    pub mode: String,
    pub vm: String,
    pub vmx: String,
    /// `current` snapshot name, another snapshot's name, or `running`.
    pub snapshot: String,
    pub target: PathBuf,
    /// Prepare made the target directory (cleanup removes it when empty).
    pub target_created: bool,
    pub state: JobState,
    /// The prepare process (for a running prepare: the owner).
    pub owner: ProcessId,
    /// Unix seconds.
    pub created: u64,
    pub disks: Vec<DiskRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<MountRecord>,
    /// Every file prepare created or is creating, recorded before it is
    /// created; a file still being written is `NAME.partial`.
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

impl JobRecord {
    /// Whether the job is still being worked on or served by a process
    /// that runs. A ready full-VM job has no process: it lives until its
    /// cleanup or the next boot.
    pub fn is_live(&self) -> bool {
        match (self.state, self.mode.as_str()) {
            (JobState::Ready, "file") => self.mount.as_ref().and_then(|m| m.server.as_ref()).is_some_and(ProcessId::is_alive),
            (JobState::Ready, _) => boot_id().is_ok_and(|b| b == self.owner.boot_id),
            (JobState::Preparing | JobState::Cleaning, _) => self.owner.is_alive(),
        }
    }
}

/// The journal directory.
pub struct Journal {
    pub dir: PathBuf,
}

/// Files in the journal directory that are not entries.
const LOCK_FILE: &str = "jobs.lock";

impl Journal {
    /// `$VBPROXY_STATE_DIR/jobs`, else `/var/lib/vbproxy/jobs`; created
    /// (mode 0700) when absent.
    pub fn open() -> Result<Journal> {
        let base = std::env::var_os("VBPROXY_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/lib/vbproxy"));
        let dir = base.join("jobs");
        std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create the job journal directory", dir.display()))?;
        Ok(Journal { dir })
    }

    /// Takes the journal lock (flock, released when the guard drops):
    /// counting jobs and adding one happen under it, so two prepares cannot
    /// both take the last slot.
    pub fn lock(&self) -> Result<JournalLock> {
        let path = self.dir.join(LOCK_FILE);
        let f = File::options().create(true).truncate(false).write(true).open(&path).with_context(|| format!("{}: cannot open", path.display()))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).with_context(|| format!("{}: cannot lock", path.display()))?;
        Ok(JournalLock { _file: f })
    }

    pub fn entry_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes a job's entry atomically: a reader (or a crash) sees the old
    /// entry or the new one, never a torn one.
    pub fn write(&self, job: &JobRecord) -> Result<()> {
        let path = self.entry_path(&job.id);
        let tmp = self.dir.join(format!(".{}.json.tmp", job.id));
        let mut f = File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        serde_json::to_writer_pretty(&mut f, job)?;
        f.write_all(b"\n")?;
        f.sync_all().with_context(|| format!("{}: fsync", tmp.display()))?;
        drop(f);
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        sync_dir(&self.dir)
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        let path = self.entry_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("{}: cannot remove", path.display())),
        }
    }

    /// Every readable entry. An unreadable one is reported and skipped:
    /// one bad file must not stop the cleanup of the others.
    pub fn entries(&self) -> Result<Vec<JobRecord>> {
        let mut out = Vec::new();
        let rd = std::fs::read_dir(&self.dir).with_context(|| format!("{}: cannot list", self.dir.display()))?;
        for e in rd {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            match read_entry(&e.path()) {
                Ok(j) => out.push(j),
                Err(err) => tracing::warn!("skipping journal entry: {err:#}"),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Leftover temporary files of writes that died before their rename.
    pub fn remove_temporaries(&self) {
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                if n.starts_with('.') && n.ends_with(".json.tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

fn read_entry(path: &Path) -> Result<JobRecord> {
    let f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    if f.metadata()?.len() > MAX_ENTRY {
        bail!("{}: larger than {MAX_ENTRY} bytes, not a journal entry", path.display());
    }
    let job: JobRecord = serde_json::from_reader(std::io::BufReader::new(f)).with_context(|| format!("{}: not a job journal entry", path.display()))?;
    if job.version != VERSION {
        bail!("{}: journal entry version {} (this vbproxy writes {VERSION})", path.display(), job.version);
    }
    Ok(job)
}

/// Makes a directory's entries (a rename, a removal) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("{}: fsync", dir.display()))
}

pub struct JournalLock {
    _file: File,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("1 (x) S 1"), None);
        assert_eq!(parse_start_time(&stat.replace(") S ", ") Z ")), None, "a zombie is not alive");
        assert_eq!(parse_start_time("no paren"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessId::current().unwrap();
        assert!(me.is_alive());
        assert!(!ProcessId { start_time: me.start_time + 1, ..me.clone() }.is_alive());
        assert!(!ProcessId { boot_id: "another-boot".into(), ..me }.is_alive());
    }

    fn record(id: &str, state: JobState, owner: ProcessId) -> JobRecord {
        JobRecord {
            version: VERSION,
            id: id.into(),
            mode: "fullvm".into(),
            vm: "web01".into(),
            vmx: "/x/web01.vmx".into(),
            snapshot: "running".into(),
            target: "/t".into(),
            target_created: true,
            state,
            owner,
            created: 0,
            disks: vec![],
            mount: None,
            files: vec![],
        }
    }

    #[test]
    fn entries_round_trip_and_liveness_follows_the_owner() {
        let dir = std::env::temp_dir().join(format!("vbproxy-journal-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let j = Journal { dir: dir.clone() };
        std::fs::create_dir_all(&dir).unwrap();
        let me = ProcessId::current().unwrap();
        let dead = ProcessId { start_time: me.start_time + 7, ..me.clone() };
        j.write(&record("a", JobState::Preparing, me.clone())).unwrap();
        j.write(&record("b", JobState::Preparing, dead.clone())).unwrap();
        j.write(&record("c", JobState::Ready, dead)).unwrap();
        std::fs::write(dir.join("garbage.json"), b"{").unwrap();
        let e = j.entries().unwrap();
        assert_eq!(e.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(e.iter().map(JobRecord::is_live).collect::<Vec<_>>(), [true, false, true]);
        j.remove("a").unwrap();
        j.remove("a").unwrap();
        assert_eq!(j.entries().unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Backup jobs, as a backup product's pre/post commands drive them
//! (DESIGN.md "Who uses it", docs/BACKUP.md):
//! `vbproxy backup prepare` presents a VM's disks in a directory, either
//! as the guest file tree (FUSE mount) or as exported images; the backup
//! tool backs that directory up; `vbproxy backup cleanup` removes what
//! prepare made. Every job is recorded in the journal before it does
//! anything, so a crashed job is cleaned by `backup cleanup --stale`.

pub mod cleanup;
mod filemode;
mod fullvm;
pub mod hooks;
pub mod journal;
pub mod limits;
pub mod prepare;
pub mod snapshot;
pub mod target;

pub use limits::Busy;

use crate::export::ExportFormat;
use std::path::PathBuf;

/// Exit code of a prepare refused because the concurrency limit is reached
/// (an addition to DESIGN.md's 0/1/2/3; docs/BACKUP.md).
pub const EXIT_BUSY: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The guest file tree, mounted read-only (FUSE) on the target.
    File,
    /// Every disk exported as an image, plus the VM's configuration files.
    Fullvm,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::File => "file",
            Mode::Fullvm => "fullvm",
        }
    }
}

/// `vbproxy backup prepare`.
#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// The cluster inventory (LUNs are validated against it first).
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// The VM, by display name, on the inventory's datastores.
    #[arg(long, value_name = "NAME", requires = "inventory", conflicts_with = "vmx", required_unless_present = "vmx")]
    pub vm: Option<String>,
    /// The VM by its configuration file instead: a local `.vmx` (NFS
    /// datastore) or a SOURCE spec (`/dev/sdc#/web01/web01.vmx`).
    #[arg(long, value_name = "SOURCE")]
    pub vmx: Option<String>,
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// The directory to present the VM in: absent or empty.
    #[arg(long, value_name = "DIR")]
    pub target: PathBuf,
    /// Image format of a full-VM export.
    #[arg(long, value_enum, default_value = "raw-sparse")]
    pub format: ExportFormat,
    /// Disk state: `current` (the .vmsd's current snapshot, default), a
    /// snapshot name, or `running` (the VM's top disks: only consistent on
    /// an array snapshot LUN).
    #[arg(long, value_name = "NAME")]
    pub snapshot: Option<String>,
    /// Refuse (exit 4) when this many jobs of the mode run already
    /// (default 4 fullvm, 16 file).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_jobs: Option<u32>,
    /// Shell command run before anything is mounted or exported.
    #[arg(long, value_name = "CMD")]
    pub pre_command: Option<String>,
    /// Shell command run once the target is ready (the backup itself).
    #[arg(long, value_name = "CMD")]
    pub post_command: Option<String>,
    /// Clean the job up right after the post-command (one-shot job).
    #[arg(long, requires = "post_command")]
    pub oneshot: bool,
    /// Hold each export's read rate to this many bytes per second.
    #[arg(long, value_parser = crate::export::parse_rate)]
    pub rate_limit: Option<u64>,
    /// Print the result as JSON (docs/JSON.md).
    #[arg(long)]
    pub json: bool,
}

/// `vbproxy backup cleanup`.
#[derive(Debug, clap::Args)]
pub struct CleanupArgs {
    /// Clean every job whose process is gone or that predates this boot.
    #[arg(long, conflicts_with = "target", required_unless_present = "target")]
    pub stale: bool,
    /// Print what was cleaned as JSON (docs/JSON.md).
    #[arg(long)]
    pub json: bool,
    /// The target directory a prepare was given.
    pub target: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// Present a VM in a directory for a backup tool (run by its pre-job command).
    Prepare(PrepareArgs),
    /// Remove what prepare made (run by the backup tool's post-job command).
    Cleanup(CleanupArgs),
}

pub fn run(cmd: BackupCommand) -> anyhow::Result<()> {
    match cmd {
        BackupCommand::Prepare(a) => prepare::run(&a),
        BackupCommand::Cleanup(a) => match (&a.target, a.stale) {
            (_, true) => cleanup::stale(a.json),
            (Some(t), false) => cleanup::target(t, a.json),
            (None, false) => anyhow::bail!("give the target DIR or --stale"),
        },
    }
}

/// The job-specific exit code of an error, if it has one.
pub fn exit_code(cause: &(dyn std::error::Error + 'static)) -> Option<u8> {
    cause.downcast_ref::<Busy>().map(|_| EXIT_BUSY)
}

/// Unix seconds now.
fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A job id: UTC time, pid and a few bits of the clock's nanoseconds, so
/// ids sort by start time and never collide on one proxy.
fn new_job_id() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(t.as_secs()).unwrap_or(0);
    let stamp: String = crate::guest::utc_time(secs).chars().filter(char::is_ascii_digit).collect();
    format!("{}T{}-{}-{:04x}", stamp.get(..8).unwrap_or("0"), stamp.get(8..).unwrap_or("0"), std::process::id(), t.subsec_nanos() & 0xffff)
}

#[cfg(test)]
mod tests {
    #[test]
    fn job_ids_sort_and_are_names() {
        let id = super::new_job_id();
        assert_eq!(id.len(), "20261123T215500-".len() + id.split('-').nth(1).unwrap().len() + 5);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{id}");
    }
}

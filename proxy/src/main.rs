//! `vbproxy`: a thin command line over the `guestfs` library.
// `deny`, not `forbid`: `sys` (the block ioctls and SG_IO) is the one
// module allowed unsafe code (docs/DECISIONS.md).
#![deny(unsafe_code)]

mod datastore;
mod export;
mod files;
mod fuse;
mod guest;
mod inspect;
mod inventory;
mod job;
mod iscsi_source;
mod lun;
mod map;
mod mount;
mod mountinfo;
mod restore;
mod source;
#[allow(unsafe_code)]
mod sys;
mod tar;
mod vm;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes (DESIGN.md): scripts depend on them.
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_REFUSED: u8 = 3;

#[derive(Parser)]
#[command(name = "vbproxy", version, about = "Backup proxy: reads VM disks read-only and hands them to backup software")]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Read an ESX delta extent (COWD, SEsparse) given without its
    /// descriptor as if it had no parent. Without this such a file is
    /// refused, since ranges it does not hold would read as zeros.
    #[arg(long, global = true)]
    no_parent: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show disks: format, variant, size, snapshot chain and allocation.
    Inspect {
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        sources: Vec<PathBuf>,
    },
    /// Show the allocation map of a disk (like `qemu-img map`).
    Map {
        #[arg(long)]
        json: bool,
        source: PathBuf,
    },
    /// List files: `ls [-l] [-R] [--json] SOURCE... PATH` (guest tree
    /// `/<disk>/<volume>/<path>`; with one disk `/<volume>/<path>`).
    Ls {
        #[arg(short, long)]
        long: bool,
        #[arg(short = 'R', long)]
        recursive: bool,
        #[arg(long)]
        json: bool,
        /// SOURCE... PATH
        #[arg(required = true, num_args = 2..)]
        args: Vec<String>,
    },
    /// Write a guest file's bytes to standard output: `cat SOURCE... PATH`.
    Cat {
        #[arg(required = true, num_args = 2..)]
        args: Vec<String>,
    },
    /// Restore a file or directory: `cp SOURCE... PATH DEST` (mode and
    /// times kept; nothing is written outside DEST).
    Cp {
        #[arg(required = true, num_args = 3..)]
        args: Vec<String>,
    },
    /// Stream the guest tree as a PAX tar archive to standard output.
    Tar {
        /// Guest path to archive (default: the whole tree).
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(required = true)]
        sources: Vec<PathBuf>,
    },
    /// Export a disk's content (through its whole chain) to an image file,
    /// with a manifest (OUT.manifest.json) beside it.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value = "raw")]
        format: export::ExportFormat,
        /// Output file, or `-` for standard output (raw and vmdk-stream).
        #[arg(short, long)]
        output: PathBuf,
        /// No progress bar.
        #[arg(short, long)]
        quiet: bool,
        /// Hold the read rate to this many bytes per second (`200M`, `1G`).
        #[arg(long, value_parser = export::parse_rate)]
        rate_limit: Option<u64>,
        /// Batches read and compressed in parallel (default: every core).
        #[arg(short, long)]
        jobs: Option<usize>,
        /// Export the disk as it was before its top N snapshots.
        #[arg(long, default_value_t = 0, conflicts_with = "base")]
        below: usize,
        /// Export the base disk of the chain alone (the state before any snapshot).
        #[arg(long)]
        base: bool,
        /// Do not write OUT.manifest.json.
        #[arg(long)]
        no_manifest: bool,
        source: PathBuf,
    },
    /// Serve the guest tree read-only over FUSE: `mount [--foreground]
    /// [--allow-other] [--direct-io] [--pid-file FILE] SOURCE... MOUNTPOINT`. Returns once
    /// the mount is live; the server runs on in the background.
    Mount {
        /// Serve in this process instead of starting a background server.
        #[arg(long)]
        foreground: bool,
        /// Let users other than root in (modes are still checked).
        #[arg(long)]
        allow_other: bool,
        /// Reads bypass the mount's page cache: faster for readers of
        /// large blocks (1 MiB), slower for small ones (docs/MOUNT.md).
        #[arg(long)]
        direct_io: bool,
        /// Write the server's pid to FILE (removed when it exits).
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// Append the server's log (read errors name the file) to FILE.
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
        /// Internal: the server started by `mount` without --foreground.
        #[arg(long, hide = true)]
        daemon_child: bool,
        /// Name the sources' disks in the tree (`scsi0-0,scsi0-1`) instead
        /// of `disk0,disk1`: one name per SOURCE.
        #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
        disk_names: Vec<String>,
        /// SOURCE... MOUNTPOINT
        #[arg(required = true, num_args = 2..)]
        args: Vec<PathBuf>,
    },
    /// Backup jobs driven by a backup product's pre/post commands (docs/BACKUP.md).
    Backup {
        #[command(subcommand)]
        command: job::BackupCommand,
    },
    /// Unmount a `vbproxy mount` and wait for its server to exit.
    Umount {
        /// Detach now even if busy; the mount goes away when the last
        /// open file is closed.
        #[arg(short = 'l', long)]
        lazy: bool,
        mountpoint: PathBuf,
    },
    /// Datastores: `datastore ls [-l] [--json] SOURCE [PATH]`.
    Datastore {
        #[command(subcommand)]
        command: DatastoreCommand,
    },
    /// Virtual machines on the inventory's datastores.
    Vm {
        #[command(subcommand)]
        command: VmCommand,
    },
    /// List the LUNs an iSCSI portal offers, with their identifiers
    /// (alias of `lun list --iscsi PORTAL`).
    #[command(hide = true)]
    IscsiLs {
        /// `HOST[:PORT]` or `[IPv6]:PORT`.
        portal: String,
        #[arg(long)]
        json: bool,
        /// CHAP user (secret from --chap-secret-file or VBPROXY_ISCSI_SECRET).
        #[arg(long)]
        user: Option<String>,
        /// File whose first line is the CHAP secret.
        #[arg(long)]
        chap_secret_file: Option<PathBuf>,
    },
    /// Check an export against its manifest (and against its source, if given).
    Verify {
        /// The exported image (its manifest is OUT.manifest.json).
        output: PathBuf,
        /// The source disk it was exported from.
        #[arg(long)]
        source: Option<PathBuf>,
    },
    /// SAN LUNs: list them, validate them against the cluster inventory.
    Lun {
        #[command(subcommand)]
        command: LunCommand,
    },
    /// The cluster inventory (docs/INVENTORY.md).
    Inventory {
        #[command(subcommand)]
        command: InventoryCommand,
    },
    /// Read-only enforcement (kernel BLKROSET) on SAN LUNs.
    Guard {
        #[command(subcommand)]
        command: GuardCommand,
    },
}

#[derive(Subcommand)]
enum LunCommand {
    /// Every SCSI disk: H:C:T:L, LUN, identity (VPD 0x80/0x83), size, ro flag, content.
    List {
        #[arg(long)]
        json: bool,
        /// List the LUNs an iSCSI portal presents instead (built-in initiator).
        #[arg(long, value_name = "PORTAL")]
        iscsi: Option<String>,
    },
    /// Check every inventory LUN: LUN number, identifier and signature (exit 3 on mismatch).
    Validate {
        #[arg(long)]
        inventory: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum InventoryCommand {
    /// Build an inventory from saved `esxcli storage core device list`,
    /// `esxcli storage vmfs extent list` (and `esxcli storage core path list`) output.
    ImportEsxcli {
        #[arg(long)]
        devices: PathBuf,
        #[arg(long)]
        extents: PathBuf,
        /// `esxcli storage core path list` output: gives the LUN numbers.
        #[arg(long)]
        paths: Option<PathBuf>,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum GuardCommand {
    /// Set the kernel read-only flag and prove it (BLKROGET and sysfs ro).
    Apply(GuardArgs),
    /// Show read-only state; exit 3 listing any writable LUN as a hazard.
    Status(GuardArgs),
}

/// Which LUNs `guard apply|status` covers.
#[derive(clap::Args)]
struct GuardArgs {
    /// Every LUN of this inventory.
    #[arg(long)]
    inventory: Option<PathBuf>,
    /// Every SCSI disk except the appliance's own (holding / or any mount).
    #[arg(long)]
    all_san: bool,
    /// These devices (repeatable).
    #[arg(long = "device", value_name = "DEV")]
    devices: Vec<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum DatastoreCommand {
    /// List the files of a datastore (VMFS, NTFS or ext4 on a device, LUN
    /// or image; or a local directory).
    Ls {
        #[arg(short, long)]
        long: bool,
        #[arg(long)]
        json: bool,
        source: String,
        /// Directory or file inside the datastore (default `/`).
        path: Option<String>,
    },
}

#[derive(Subcommand)]
enum VmCommand {
    /// VMs on the inventory's datastores: disks, skipped disks, snapshots.
    List {
        #[arg(long)]
        inventory: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    init_logging(cli.verbose);
    source::set_no_parent(cli.no_parent);
    let result = match cli.command {
        Command::Inspect { json, sources } => inspect::run(&sources, json),
        Command::Map { json, source } => map::run(&source, json),
        Command::Export { format, output, quiet, rate_limit, jobs, below, base, no_manifest, source } => {
            let below = if base { usize::MAX } else { below };
            let args = export::ExportArgs {
                format,
                output,
                quiet,
                rate_limit,
                jobs: jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                below,
                manifest: !no_manifest,
            };
            export::run(&source, &args)
        }
        Command::Datastore { command: DatastoreCommand::Ls { long, json, source, path } } => datastore::ls(&source, path.as_deref(), long, json),
        Command::Vm { command: VmCommand::List { inventory, json } } => vm::list(&inventory, json),
        Command::IscsiLs { portal, json, user, chap_secret_file } => {
            iscsi_source::ls(&portal, json, user.as_deref(), chap_secret_file.as_deref())
        }
        Command::Verify { output, source } => export::verify(&output, source.as_deref()),
        Command::Ls { long, recursive, json, args } => {
            with_tail(args, 1, |s, t| files::ls(s, &t[0], long, recursive, json))
        }
        Command::Cat { args } => with_tail(args, 1, |s, t| files::cat(s, &t[0])),
        Command::Cp { args } => with_tail(args, 2, |s, t| files::cp(s, &t[0], std::path::Path::new(&t[1]))),
        Command::Tar { path, sources } => files::tar(&sources, &path),
        Command::Lun { command: LunCommand::List { json, iscsi } } => lun::cli::list(json, iscsi.as_deref()),
        Command::Lun { command: LunCommand::Validate { inventory, json } } => lun::cli::validate(&inventory, json),
        Command::Inventory { command: InventoryCommand::ImportEsxcli { devices, extents, paths, output } } => {
            lun::cli::import_esxcli(&devices, &extents, paths.as_deref(), output.as_deref())
        }
        Command::Guard { command } => {
            let (apply, g) = match command {
                GuardCommand::Apply(g) => (true, g),
                GuardCommand::Status(g) => (false, g),
            };
            lun::cli::guard(apply, g.inventory.as_deref(), g.all_san, &g.devices, g.json)
        }
        Command::Mount { foreground, allow_other, direct_io, pid_file, log, daemon_child, disk_names, mut args } => {
            let mount_point = args.pop().unwrap_or_default();
            mount::mount(mount::MountArgs { foreground, allow_other, direct_io, pid_file, log, daemon_child, sources: args, disk_names, mount_point })
        }
        Command::Umount { lazy, mountpoint } => mount::umount(&mountpoint, lazy),
        Command::Backup { command } => job::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = exit_code(&e);
            if !is_broken_pipe(&e) {
                eprintln!("vbproxy: {e:#}");
            }
            ExitCode::from(code)
        }
    }
}

/// Runs `f` with `SOURCE...` and the last `tail` positional arguments.
fn with_tail(args: Vec<String>, tail: usize, f: impl FnOnce(&[PathBuf], &[String]) -> anyhow::Result<()>) -> anyhow::Result<()> {
    match guest::split_args(args, tail) {
        Ok((sources, rest)) => f(&sources, &rest),
        Err(msg) => {
            eprintln!("vbproxy: {msg}");
            std::process::exit(EXIT_USAGE.into());
        }
    }
}

/// Maps an error to the documented exit code: safety refusals are 3.
fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(code) = job::exit_code(cause) {
            return code;
        }
        if cause.downcast_ref::<lun::Refused>().is_some() {
            return EXIT_REFUSED;
        }
        if let Some(g) = cause.downcast_ref::<guestfs::Error>() {
            if g.is_safety_refusal() {
                return EXIT_REFUSED;
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            // A closed pipe (`vbproxy cat ... | head`) is the reader's choice.
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return 0;
            }
        }
    }
    EXIT_FAILURE
}

/// A reader that closed its end of the pipe (`vbproxy ... | head`) is not
/// an error worth a message.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Formats a byte count for humans: `2.5 GiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

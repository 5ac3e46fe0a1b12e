//! `vbproxy`: a thin command line over the `guestfs` library.
#![forbid(unsafe_code)]

mod export;
mod inspect;
mod map;
mod source;

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
    /// Export a disk's content (through its whole chain) to an image file.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value = "raw")]
        format: export::ExportFormat,
        /// Output file, or `-` for standard output (raw only).
        #[arg(short, long)]
        output: PathBuf,
        source: PathBuf,
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
    let result = match cli.command {
        Command::Inspect { json, sources } => inspect::run(&sources, json),
        Command::Map { json, source } => map::run(&source, json),
        Command::Export { format, output, source } => export::run(&source, format, &output),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vbproxy: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Maps an error to the documented exit code: safety refusals are 3.
fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
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
